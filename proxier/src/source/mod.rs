//! Where cluster objects come from: a [`Source`] is polled by the runtime and applies what
//! changed to a [`ClusterState`]. Here: YAML documents (`kubectl get -o yaml` output, files of a
//! directory, followed by [`DirectoryWatch`]) and, with the `kube` feature, the Kubernetes API
//! (`kube::KubeSource`); an embedder with its own watch sends objects through a [`Feed`].
//! Every snapshot-shaped source goes through one [`SnapshotSync`].

mod directory;
mod feed;
#[cfg(feature = "kube")]
pub mod kube;
mod snapshot;
mod yaml;

pub use directory::{DirectorySource, DirectoryWatch, FileChange, FileDocument, Poll};
pub use feed::{Feed, FeedSender, FeedUpdate};
pub use snapshot::{SnapshotReport, SnapshotSync};

pub use yaml::{load_cluster, parse_documents, KubeObject};

use std::time::SystemTime;

use crate::error::Error;
use crate::model::ClusterState;

/// Where cluster changes come from, polled by [`crate::runtime::run`] without blocking.
pub trait Source {
    /// Applies whatever changed since the last call to `cluster` (marking those Services
    /// dirty) and reports it.
    fn poll_changes(&mut self, cluster: &mut ClusterState) -> Result<SourcePoll, Error>;
}

/// What one poll of a [`Source`] found: plain data, metered by whoever wraps the source
/// (`observability::ObservedSource`), never by the source itself.
#[derive(Debug, Default)]
pub struct SourcePoll {
    /// Whether any Service or EndpointSlice changed.
    pub changed: bool,
    /// Objects skipped (invalid ones keep their last good version), for logs and metrics.
    pub skipped: Vec<Error>,
    /// `endpoints.kubernetes.io/last-change-trigger-time`s of the EndpointSlices that changed
    /// (the start of kube-proxy's network programming latency).
    pub triggers: Vec<SystemTime>,
    /// Whether the local Node may take load-balancer traffic (false while it is being
    /// deleted), when the source knows the Node.
    pub node_eligible: Option<bool>,
}

/// Whether an object whose new version was rejected keeps its last good version in the
/// cluster: yes when it is invalid (a typo must not take a Service down), no when it is valid
/// but not proxied (headless, another proxy's), which removes it. The one rule of every source.
pub(crate) fn keeps_last_good(error: &Error) -> bool {
    match error {
        Error::Rejected { reason, .. } => reason.is_invalid(),
        _ => true,
    }
}
