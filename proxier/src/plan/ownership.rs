//! Which kernel objects are proxier's: [`Ownership`], the one rule the sync, a restart and
//! `proxier cleanup` decide by (ARCHITECTURE.md rule 2).

use std::collections::BTreeSet;
use std::net::IpAddr;

use netlink_ipvs::{IpvsState, Protocol, RealServerKey, ServiceKey};

use super::{DesiredState, VirtualServerRole};

/// What the kernel shows, as ownership is decided against it: the addresses bound on our
/// dummy interface (in the kernel, not merely wanted) and the IPVS table.
#[derive(Debug, Clone, Copy)]
pub struct KernelView<'a> {
    /// Addresses on the dummy interface (`kube-ipvs0`).
    pub bound: &'a BTreeSet<IpAddr>,
    /// The plan the same list of operations carries out, in reconcile (`None` in cleanup):
    /// its addresses are bound and its real servers added before any deletion runs, so they
    /// count as in the kernel.
    pub plan: Option<&'a DesiredState>,
    /// The IPVS table.
    pub ipvs: &'a IpvsState,
}

/// Which kernel objects are proxier's (ARCHITECTURE.md rule 2). IPVS services carry no owner
/// field, so ownership is derived, and the same rule serves the sync (deleting stale virtual
/// servers), a restart (adopting what a previous run, or kube-proxy, left) and `proxier
/// cleanup`.
///
/// **The rule.** A virtual server is ours iff it is not inside `excludeCIDRs` (never touched,
/// as kube-proxy) and one of:
/// 1. its key is one the plan wants (then it is managed whoever created it: this is how
///    kube-proxy's virtual servers for the same Services are adopted, without a flap), or was
///    planned earlier in this run on a *shared* VIP (below);
/// 2. its VIP is bound on our dummy interface *in the kernel* (an address we merely want
///    counts only when the same sync binds it before it deletes anything) and is not a shared
///    VIP: an address planned in this run as an `externalIPs`
///    or LoadBalancer IP is shared with the host (keepalived may hold the same VIP), so on it
///    only the exact keys of rule 1 are ours;
/// 3. its VIP is one of the node IPs NodePorts open on (now or earlier in this run: an address
///    that went away takes its NodePorts with it), its port is in the NodePort range, and
///    either its (protocol, port) is a NodePort of one of our Services (planned now or earlier
///    in this run), or it forwards to a real server (address, port) of a virtual server that is
///    ours by rule 2 with the same protocol (a NodePort shares its Service's endpoints with the
///    ClusterIP: this is the evidence that survives a restart and serves `cleanup`). A port in
///    the NodePort range on a node IP alone is not ownership;
/// 4. it is a firewall-mark virtual server with a mark in our range.
///
/// Consequences, decided on purpose: after a restart, a NodePort virtual server of a Service
/// deleted while proxier was down is still cleaned when its ClusterIP virtual server (bound
/// VIP) shares a real server with it; one with no real server left proves nothing and is left
/// in place (reported as foreign), as is anything on a shared VIP that this run did not plan:
/// a leak is visible and harmless next to deleting another owner's service.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ownership {
    /// Node IPs NodePorts open on, now or earlier in this run.
    pub node_ips: BTreeSet<IpAddr>,
    /// The NodePort range.
    pub node_port_range: (u16, u16),
    /// Firewall marks `[first, first + count)` are ours.
    pub fwmarks: (u32, u32),
    /// `ipvs.excludeCIDRs`: virtual servers on these addresses are never ours.
    pub exclude_cidrs: Vec<(IpAddr, u8)>,
    /// NodePorts (protocol, port) of our Services, planned now or earlier in this run (at
    /// most 3 × 65,536 entries).
    pub node_ports: BTreeSet<(Protocol, u16)>,
    /// VIPs planned in this run as an external or LoadBalancer IP: shared with the host.
    pub shared_vips: BTreeSet<IpAddr>,
    /// Keys planned in this run on shared VIPs.
    pub shared_keys: BTreeSet<ServiceKey>,
}

/// Whether `ip` is inside `network/prefix`.
pub fn cidr_contains((network, prefix): (IpAddr, u8), ip: IpAddr) -> bool {
    match (network, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

impl Ownership {
    /// Whether `ip` is inside `excludeCIDRs`.
    pub fn excluded(&self, ip: IpAddr) -> bool {
        self.exclude_cidrs.iter().any(|c| cidr_contains(*c, ip))
    }

    /// Rule 2: a VIP that is bound in the kernel and not shared.
    fn bound_vip(&self, ip: &IpAddr, kernel: &KernelView<'_>) -> bool {
        (kernel.bound.contains(ip) || kernel.plan.is_some_and(|p| p.addresses.contains_key(ip)))
            && !self.shared_vips.contains(ip)
            && !self.excluded(*ip)
    }

    /// Whether a virtual server that the plan does not want is ours (the rule in the type's
    /// docs; a wanted one is managed anyway).
    pub fn owns(&self, key: &ServiceKey, kernel: &KernelView<'_>) -> bool {
        match *key {
            ServiceKey::Address {
                protocol,
                address,
                port,
            } => {
                if self.excluded(address) {
                    return false;
                }
                if self.shared_keys.contains(key) || self.bound_vip(&address, kernel) {
                    return true;
                }
                let node_port = self.node_ips.contains(&address)
                    && (self.node_port_range.0..=self.node_port_range.1).contains(&port);
                node_port
                    && (self.node_ports.contains(&(protocol, port))
                        || self.shares_real_server_with_ours(key, protocol, kernel))
            }
            ServiceKey::FwMark { mark, .. } => {
                mark >= self.fwmarks.0 && mark - self.fwmarks.0 < self.fwmarks.1
            }
        }
    }

    /// Rule 3's restart evidence: `key` forwards to a real server of a virtual server on a
    /// VIP that is ours by rule 2, with the same protocol.
    fn shares_real_server_with_ours(
        &self,
        key: &ServiceKey,
        protocol: Protocol,
        kernel: &KernelView<'_>,
    ) -> bool {
        let Some(candidate) = kernel.ipvs.services.get(key) else {
            return false;
        };
        if candidate.real_servers.is_empty() {
            return false;
        }
        let sibling = |other: &ServiceKey| match *other {
            ServiceKey::Address {
                protocol: p,
                address,
                ..
            } => p == protocol && other != key && self.bound_vip(&address, kernel),
            ServiceKey::FwMark { .. } => false,
        };
        let shared = |rs: &RealServerKey| candidate.real_servers.contains_key(rs);
        kernel
            .ipvs
            .services
            .iter()
            .any(|(other, state)| sibling(other) && state.real_servers.keys().any(shared))
            || kernel.plan.is_some_and(|plan| {
                plan.virtual_servers
                    .iter()
                    .any(|(other, vs)| sibling(other) && vs.real_servers.keys().any(shared))
            })
    }

    /// Records what a Service's plan put on the node, so that it stays recognisable after the
    /// Service is gone (rules 1 and 3).
    pub(super) fn remember(&mut self, key: ServiceKey, role: VirtualServerRole) {
        if let ServiceKey::Address {
            protocol,
            address,
            port,
        } = key
        {
            match role {
                VirtualServerRole::NodePort => {
                    self.node_ports.insert((protocol, port));
                }
                VirtualServerRole::ExternalIp | VirtualServerRole::LoadBalancer => {
                    self.shared_vips.insert(address);
                    self.shared_keys.insert(key);
                }
                VirtualServerRole::ClusterIp | VirtualServerRole::ExternalLocal => {}
            }
        }
    }
}
