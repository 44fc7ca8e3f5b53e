#![doc = include_str!("../README.md")]
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
