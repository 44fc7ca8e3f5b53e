//! Where cluster objects come from. Here: YAML documents (`kubectl get -o yaml` output, files
//! of a directory); the kube-rs reflectors come with the runtime.

mod directory;
#[cfg(feature = "kernel")]
pub mod kube;
mod snapshot;
mod yaml;

pub use directory::{DirectorySource, Poll};
pub use snapshot::{SnapshotReport, SnapshotSync};

pub use yaml::{load_cluster, parse_documents, KubeObject};
