//! IPVS (IP Virtual Server) over generic netlink.
//!
//! Two layers: plain data ([`VirtualServer`], [`RealServer`], [`IpvsState`], ...) that compiles
//! without any socket code, and, behind the default `netlink` feature, the message layer and an
//! [`IpvsHandle`] that dumps and applies batches of operations.
#![forbid(unsafe_code)]

#[cfg(feature = "netlink")]
mod error;
#[cfg(feature = "netlink")]
mod handle;
mod types;

#[cfg(feature = "netlink")]
pub use error::IpvsError;
#[cfg(feature = "netlink")]
pub use handle::IpvsHandle;
pub use types::{
    Family, ForwardMethod, IpvsState, Protocol, RealServer, RealServerKey, ServiceFlags,
    ServiceKey, ServiceState, Timeouts, VirtualServer,
};
