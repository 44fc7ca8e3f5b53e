//! `proxier cleanup`: remove exactly what proxier created (its IPVS virtual servers, its dummy
//! interface with the addresses on it, its nftables table) and nothing else (incident I2).

use netlink_ipvs::{IpvsHandle, ServiceKey};

use super::{ipvs_error, InterfaceHandle};
use crate::error::Error;
use crate::plan::Ownership;
use netlink_nftables::NftablesHandle;

/// What cleanup removed and what it left alone.
#[derive(Debug, Default)]
pub struct CleanupReport {
    /// Our virtual servers, deleted.
    pub deleted_services: Vec<ServiceKey>,
    /// Virtual servers that are not ours, left untouched.
    pub foreign_services: Vec<ServiceKey>,
    /// Whether our nftables table existed and was deleted.
    pub table_deleted: bool,
    /// Whether our dummy interface existed and was deleted.
    pub interface_deleted: bool,
}

/// Removes proxier's objects from the network namespace of the calling thread. A virtual
/// server is ours by the same rule the engine uses (ARCHITECTURE.md rule 2): its address is on
/// our dummy interface, or it is one of `ownership`'s node IPs with a NodePort-range port, or
/// its firewall mark is in our range.
pub fn cleanup(
    interface: &str,
    table: &str,
    ownership: &Ownership,
) -> Result<CleanupReport, Error> {
    let mut report = CleanupReport::default();
    let mut links = InterfaceHandle::connect()?;
    let bound = match links.link_index(interface)? {
        Some(index) => links.addresses(index)?,
        None => Default::default(),
    };
    let mut ipvs = IpvsHandle::connect().map_err(|e| ipvs_error("connect to IPVS", e))?;
    let services = ipvs.services().map_err(|e| ipvs_error("dump IPVS", e))?;
    for entry in services {
        let key = entry.service.key;
        if ownership.owns(&key, |ip| bound.contains(ip)) {
            ipvs.delete_virtual_server(&key)
                .map_err(|e| ipvs_error(&format!("delete {key}"), e))?;
            report.deleted_services.push(key);
        } else {
            report.foreign_services.push(key);
        }
    }
    report.table_deleted = NftablesHandle::connect()?.delete_table(table)?;
    report.interface_deleted = links.delete_link(interface)?;
    Ok(report)
}
