//! proxier: a kube-proxy IPVS-mode replacement.
//!
//! Sources → model → plan → reconcile → dataplane; see ARCHITECTURE.md in the repository. Everything up to
//! [`reconcile`] is pure: plain functions over plain data.
#![forbid(unsafe_code)]

pub mod config;
pub mod dataplane;
mod error;
/// One-line builders of model objects, clusters and plans, shared by the engine's unit tests
/// and the benches (feature `fixtures`; never part of a normal build).
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
pub mod model;
#[cfg(feature = "kernel")]
pub mod observability;
pub mod plan;
pub mod reconcile;
pub mod runtime;
pub mod source;
pub mod yaml;

pub use error::{Errno, Error, InputRefusal, RejectReason, Report};
