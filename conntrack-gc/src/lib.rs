//! conntrack over ctnetlink (flush by filter) and conntrack sizing that never lowers a host limit.
//!
//! - [`Conntrack::flush`] deletes the entries matching any of many [`ConntrackFilter`]s in one
//!   streamed pass over the table, with batched deletes, and returns a [`FlushReport`].
//! - [`sizing::apply_sizing`] sizes `nf_conntrack_max`, the hash size and the timeouts from
//!   kube-proxy's `conntrack` configuration without ever lowering a host value unless allowed,
//!   and returns a [`SizingReport`].
//!
//! No external binary is executed: everything goes over ctnetlink sockets and procfs/sysfs files.
#![forbid(unsafe_code)]

pub mod ctnetlink;
mod error;
mod filter;
mod handle;
pub mod sizing;

pub use error::Error;
pub use filter::{ConntrackFilter, Family, FilterSet, Protocol, Selector};
pub use handle::{Conntrack, FlushOptions, FlushReport, KernelFiltering, DEFAULT_BATCH};
pub use sizing::{apply_sizing, ConntrackConfig, FillLevel, FsRoot, HostFiles, Knob, SizingReport};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
