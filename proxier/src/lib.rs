//! proxier: a kube-proxy IPVS-mode replacement.
//!
//! Sources → model → plan → reconcile → dataplane; see DESIGN.md. Everything up to
//! [`reconcile`] is pure: plain functions over plain data.
#![forbid(unsafe_code)]

pub mod config;
pub mod dataplane;
mod error;
#[cfg(test)]
mod fixtures;
pub mod model;
#[cfg(feature = "kernel")]
pub mod observability;
pub mod plan;
pub mod reconcile;
pub mod runtime;
pub mod source;

pub use error::{Errno, Error, RejectReason};
