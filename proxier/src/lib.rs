#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod config;
pub mod dataplane;
mod error;
/// One-line builders of model objects, clusters and plans, shared by the engine's unit tests
/// and the benches (feature `fixtures`; never part of a normal build).
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
pub mod model;
#[cfg(feature = "kube")]
pub mod observability;
pub mod plan;
pub mod reconcile;
pub mod runtime;
pub mod source;
pub mod yaml;

/// The k8s-openapi crate the [`model`] converts from, re-exported so that an embedder builds
/// objects with the exact version proxier reads.
pub use k8s_openapi;

pub use error::{Errno, Error, InputRefusal, RejectReason, Report, YamlError};
