//! [`Observed`]: our mirror of the kernel (IPVS table + addresses on our dummy interface), and
//! how one [`Op`] changes it, with the kernel's errnos.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use netlink_ipvs::{IpvsState, ServiceState};

use super::Op;
use crate::error::Errno;

/// What the kernel has, as far as reconcile cares.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Observed {
    /// The whole IPVS table (foreign services included: ownership is decided per key).
    pub ipvs: IpvsState,
    /// Addresses bound on our dummy interface.
    pub addresses: BTreeSet<IpAddr>,
}

impl Observed {
    /// Applies one operation with the kernel's semantics: EEXIST for a duplicate virtual
    /// server, real server or address, ESRCH for a missing virtual server, ENOENT for a
    /// missing real server, EADDRNOTAVAIL for a missing address. A conntrack flush changes
    /// nothing here.
    pub fn apply(&mut self, op: &Op) -> Result<(), Errno> {
        let services = &mut self.ipvs.services;
        match op {
            Op::BindAddress(ip) => {
                if !self.addresses.insert(*ip) {
                    return Err(Errno::EEXIST);
                }
            }
            Op::UnbindAddress(ip) => {
                if !self.addresses.remove(ip) {
                    return Err(Errno::EADDRNOTAVAIL);
                }
            }
            Op::AddVirtualServer(vs) => {
                if services.contains_key(&vs.key) {
                    return Err(Errno::EEXIST);
                }
                let state = ServiceState {
                    service: vs.clone(),
                    real_servers: BTreeMap::new(),
                };
                services.insert(vs.key, state);
            }
            Op::UpdateVirtualServer(vs) => {
                services.get_mut(&vs.key).ok_or(Errno::ESRCH)?.service = vs.clone();
            }
            Op::DeleteVirtualServer(key) => {
                services.remove(key).ok_or(Errno::ESRCH)?;
            }
            Op::AddRealServer {
                service,
                real_server,
            } => {
                let real_servers = &mut services.get_mut(service).ok_or(Errno::ESRCH)?.real_servers;
                if real_servers.contains_key(&real_server.key) {
                    return Err(Errno::EEXIST);
                }
                real_servers.insert(real_server.key, *real_server);
            }
            Op::UpdateRealServer {
                service,
                real_server,
            } => {
                let real_servers = &mut services.get_mut(service).ok_or(Errno::ESRCH)?.real_servers;
                *real_servers
                    .get_mut(&real_server.key)
                    .ok_or(Errno::ENOENT)? = *real_server;
            }
            Op::DeleteRealServer {
                service,
                real_server,
            } => {
                let real_servers = &mut services.get_mut(service).ok_or(Errno::ESRCH)?.real_servers;
                real_servers.remove(real_server).ok_or(Errno::ENOENT)?;
            }
            Op::FlushConntrack(_) => {}
        }
        Ok(())
    }

    /// Updates the mirror with the operations the kernel accepted (`results` parallel to
    /// `ops`), so that the next sync need not dump the kernel.
    pub fn record<E>(&mut self, ops: &[Op], results: &[Result<(), E>]) {
        for (op, result) in ops.iter().zip(results) {
            if result.is_ok() {
                // The kernel accepted it, so the mirror accepts it too unless it has drifted;
                // drift is repaired by the next full resync.
                let _ = self.apply(op);
            }
        }
    }
}
