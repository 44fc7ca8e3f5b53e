//! `proxier cleanup`: remove exactly what proxier created (its IPVS virtual servers, its dummy
//! interface with the addresses on it, its nftables table) and nothing else (incident I2).

use netlink_ipvs::{IpvsHandle, ServiceKey};

use super::{ipvs_error, InterfaceHandle};
use crate::error::Error;
use crate::plan::{node_port_ips, KernelView, Ownership};
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
/// server is ours by the one rule the engine uses ([`Ownership::owns`], ARCHITECTURE.md rule
/// 2) against the kernel as it is: cleanup plans nothing, so a NodePort virtual server is
/// recognised by the real servers it shares with a virtual server on a bound VIP, and
/// nothing inside `excludeCIDRs` is touched. With no node IP given, NodePorts are looked for on
/// every local address, where `run` opens them with `nodePortAddresses` unset.
pub fn cleanup(
    interface: &str,
    table: &str,
    ownership: &Ownership,
) -> Result<CleanupReport, Error> {
    let mut report = CleanupReport::default();
    let mut links = InterfaceHandle::connect()?;
    let index = links.link_index(interface)?;
    let bound = match index {
        Some(index) => links.addresses(index)?,
        None => Default::default(),
    };
    let mut ownership = ownership.clone();
    if ownership.node_ips.is_empty() {
        // No interface has index 0: without our interface, every address counts.
        let local = links.addresses_outside(index.unwrap_or(0))?;
        ownership.node_ips = node_port_ips(&[], &[], &local).into_iter().collect();
    }
    let mut ipvs = IpvsHandle::connect().map_err(|e| ipvs_error("connect to IPVS", e))?;
    let state = ipvs.state().map_err(|e| ipvs_error("dump IPVS", e))?;
    let kernel = KernelView {
        bound: &bound,
        plan: None,
        ipvs: &state,
    };
    // Decided against the table as dumped, before any deletion changes it.
    let (ours, foreign): (Vec<ServiceKey>, Vec<ServiceKey>) = state
        .services
        .keys()
        .copied()
        .partition(|key| ownership.owns(key, &kernel));
    report.foreign_services = foreign;
    for key in ours {
        ipvs.delete_virtual_server(&key)
            .map_err(|e| ipvs_error(&format!("delete {key}"), e))?;
        report.deleted_services.push(key);
    }
    report.table_deleted = NftablesHandle::connect()?.delete_table(table)?;
    report.interface_deleted = links.delete_link(interface)?;
    Ok(report)
}
