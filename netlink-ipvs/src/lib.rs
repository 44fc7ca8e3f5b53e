#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

#[cfg(feature = "netlink")]
mod attr;
#[cfg(feature = "netlink")]
mod batch;
#[cfg(feature = "netlink")]
mod convert;
#[cfg(feature = "netlink")]
mod error;
#[cfg(feature = "netlink")]
mod handle;
pub mod ipvsadm;
#[cfg(feature = "netlink")]
mod message;
mod operation;
mod scheduler;
mod types;

#[cfg(feature = "netlink")]
pub use attr::{
    DestinationAttribute, IpvsAttribute, ServiceAttribute, Stats, StatsAttribute, StatsCounter,
};
#[cfg(feature = "netlink")]
pub use batch::{encode_request, encode_window, Window, WindowLimits};
#[cfg(feature = "netlink")]
pub use convert::{
    destination_attributes, destination_entry, destination_key_attributes, service_attributes,
    service_entry, service_key_attributes, DestinationEntry, ServiceEntry,
};
#[cfg(feature = "netlink")]
pub use error::{EntryError, IpvsError};
#[cfg(feature = "netlink")]
pub use handle::{IpvsHandle, IpvsInfo, IpvsStateReport, SkippedService};
#[cfg(feature = "netlink")]
pub use message::{decode_message, IpvsCommand, IpvsMessage, IPVS_FAMILY_NAME, IPVS_GENL_VERSION};
pub use operation::IpvsOperation;
pub use scheduler::Scheduler;
pub use types::{
    Family, ForwardMethod, IpvsState, Protocol, RealServer, RealServerKey, ServiceFlags,
    ServiceKey, ServiceState, Timeouts, TunnelKind, VirtualServer,
};
