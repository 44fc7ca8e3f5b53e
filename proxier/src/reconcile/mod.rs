//! [`DesiredState`] × [`Observed`] × [`Terminations`] → ordered `Vec<Op>`. Pure and minimal:
//! an unchanged real server produces no operation.
//!
//! Order: addresses are bound first (so a virtual server is owned from the moment it exists),
//! then per virtual server (by key) its creation or update followed by its real servers
//! (additions and updates before deletions, so it never runs empty during a rollout), then
//! conntrack flushes (after the real servers are gone, so no new flow lands on them), then
//! deletions of our stale virtual servers (the kernel drops their real servers with them),
//! then unbinding. Only owned virtual servers are deleted (ARCHITECTURE.md rule 2).

pub mod departure;
mod observed;
mod op;
mod terminations;

use std::collections::BTreeSet;
use std::net::IpAddr;

use netlink_ipvs::{Protocol, RealServer, RealServerKey, ServiceKey, ServiceState};

pub use conntrack_gc::ConntrackFilter;
pub use observed::Observed;
pub use op::Op;
pub use terminations::Terminations;

use crate::plan::{Changes, DesiredState, DesiredVirtualServer, KernelView, RealServerIntent};

/// Reconciles everything: every desired and every observed virtual server and address.
pub fn reconcile(
    desired: &DesiredState,
    observed: &Observed,
    terminations: &Terminations,
) -> Vec<Op> {
    let keys: BTreeSet<&ServiceKey> = desired
        .virtual_servers
        .keys()
        .chain(observed.ipvs.services.keys())
        .collect();
    let addresses: BTreeSet<&IpAddr> = desired
        .addresses
        .keys()
        .chain(observed.addresses.iter())
        .collect();
    reconcile_scope(desired, observed, terminations, keys, addresses)
}

/// Reconciles only what a re-plan changed (invariant 4: cost proportional to the change).
pub fn reconcile_changes(
    desired: &DesiredState,
    observed: &Observed,
    terminations: &Terminations,
    changes: &Changes,
) -> Vec<Op> {
    reconcile_scope(
        desired,
        observed,
        terminations,
        changes.services.iter().collect(),
        changes.addresses.iter().collect(),
    )
}

/// An endpoint's flows through one address virtual server (UDP and SCTP: TCP flows end by
/// themselves with RST): only flows sent to the virtual server's address:port and answered
/// by the endpoint, so its direct pod-to-pod flows survive (kube-proxy's cleanup.go scope).
fn endpoint_flush(key: &ServiceKey, endpoint: &RealServerKey) -> Option<ConntrackFilter> {
    flushable(key).map(|(protocol, address, port)| {
        ConntrackFilter::service_endpoint(
            protocol,
            (address, port),
            (endpoint.address, endpoint.port),
        )
    })
}

/// The conntrack protocol of an address virtual server whose flows need flushing (UDP and
/// SCTP: TCP flows end by themselves with RST).
fn flushable(key: &ServiceKey) -> Option<(conntrack_gc::Protocol, IpAddr, u16)> {
    match *key {
        ServiceKey::Address {
            protocol: Protocol::Udp,
            address,
            port,
        } => Some((conntrack_gc::Protocol::Udp, address, port)),
        ServiceKey::Address {
            protocol: Protocol::Sctp,
            address,
            port,
        } => Some((conntrack_gc::Protocol::Sctp, address, port)),
        _ => None,
    }
}

/// Ownership (ARCHITECTURE.md rule 2) of an observed virtual server that the plan does not
/// want: [`crate::plan::Ownership`]'s rule against the kernel mirror (addresses bound in the
/// kernel, or bound by this reconcile before any deletion; never a shared VIP).
pub fn owned(desired: &DesiredState, observed: &Observed, key: &ServiceKey) -> bool {
    let kernel = KernelView {
        bound: &observed.addresses,
        plan: Some(desired),
        ipvs: &observed.ipvs,
    };
    desired.ownership.owns(key, &kernel)
}

/// Reconciles the given virtual servers and addresses only (a slice of a resync's repair,
/// a re-plan's changes): per key its creation, update or (when owned) deletion, per address
/// its binding or unbinding, in the order of the module's documentation, and the owed
/// conntrack flushes.
pub fn reconcile_scope(
    desired: &DesiredState,
    observed: &Observed,
    terminations: &Terminations,
    keys: BTreeSet<&ServiceKey>,
    addresses: BTreeSet<&IpAddr>,
) -> Vec<Op> {
    let mut ops = Vec::new();
    let mut unbind = Vec::new();
    for ip in addresses {
        match (
            desired.addresses.contains_key(ip),
            observed.addresses.contains(ip),
        ) {
            (true, false) => ops.push(Op::BindAddress(*ip)),
            (false, true) => unbind.push(Op::UnbindAddress(*ip)),
            _ => {}
        }
    }
    let mut flushes: BTreeSet<ConntrackFilter> = terminations.owed().copied().collect();
    let mut deletions = Vec::new();
    for key in keys {
        match (
            desired.virtual_servers.get(key),
            observed.ipvs.services.get(key),
        ) {
            (Some(want), None) => {
                ops.push(Op::AddVirtualServer(want.service.clone()));
                for rs in want.real_servers.values() {
                    if rs.intent == RealServerIntent::Serve {
                        ops.push(Op::AddRealServer {
                            service: *key,
                            real_server: rs.real_server,
                        });
                    }
                }
            }
            (Some(want), Some(have)) => {
                reconcile_virtual_server(key, want, have, terminations, &mut ops, &mut flushes);
            }
            (None, Some(_)) if owned(desired, observed, key) => {
                deletions.push(Op::DeleteVirtualServer(*key));
                if let Some((protocol, address, port)) = flushable(key) {
                    flushes.insert(ConntrackFilter::service_ip(protocol, address, port));
                }
            }
            _ => {}
        }
    }
    ops.extend(flushes.into_iter().map(Op::FlushConntrack));
    ops.extend(deletions);
    ops.extend(unbind);
    ops
}

fn reconcile_virtual_server(
    key: &ServiceKey,
    want: &DesiredVirtualServer,
    have: &ServiceState,
    terminations: &Terminations,
    ops: &mut Vec<Op>,
    flushes: &mut BTreeSet<ConntrackFilter>,
) {
    if have.service.normalized() != want.service {
        ops.push(Op::UpdateVirtualServer(want.service.clone()));
    }
    let serving = |rs: &RealServer| rs.weight > 0;
    let had_serving = have.real_servers.values().any(serving);
    let mut wants_serving = false;
    let mut deleted = Vec::new();
    for (rs_key, rs) in &want.real_servers {
        let target = match rs.intent {
            RealServerIntent::Serve => rs.real_server,
            RealServerIntent::Drain | RealServerIntent::Remove => RealServer {
                weight: 0,
                ..rs.real_server
            },
        };
        wants_serving |= rs.intent == RealServerIntent::Serve && serving(&target);
        match (have.real_servers.get(rs_key), rs.intent) {
            (None, RealServerIntent::Serve) => ops.push(Op::AddRealServer {
                service: *key,
                real_server: target,
            }),
            // Draining or removed and absent: never created just to sit at weight 0.
            (None, RealServerIntent::Drain | RealServerIntent::Remove) => {}
            // Not serving and pinning flows (UDP/SCTP): gone now, flows included.
            (Some(_), RealServerIntent::Remove) => deleted.push(*rs_key),
            (Some(current), _) if *current != target => ops.push(Op::UpdateRealServer {
                service: *key,
                real_server: target,
            }),
            (Some(_), _) => {}
        }
    }
    let gone = have
        .real_servers
        .iter()
        .filter(|(k, _)| !want.real_servers.contains_key(k));
    for (rs_key, current) in gone {
        // The Service port's protocol (a firewall-mark key does not carry one).
        let protocol = want.owner.protocol;
        match departure::departure(
            protocol,
            current,
            terminations.now(),
            terminations.drain_bound(),
        ) {
            departure::Departure::Delete => deleted.push(*rs_key),
            departure::Departure::StartDrain { since } => ops.push(Op::UpdateRealServer {
                service: *key,
                real_server: departure::draining(current, since),
            }),
            departure::Departure::Draining => {}
        }
    }
    for rs_key in deleted {
        ops.push(Op::DeleteRealServer {
            service: *key,
            real_server: rs_key,
        });
        flushes.extend(endpoint_flush(key, &rs_key));
    }
    // kube-proxy flushes a UDP service's flows when it goes from no endpoint to some: flows
    // created while it had none would otherwise stick to nothing.
    if !had_serving && wants_serving {
        if let Some((protocol, address, port)) = flushable(key) {
            flushes.insert(ConntrackFilter::service_ip(protocol, address, port));
        }
    }
}

#[cfg(test)]
mod tests;
