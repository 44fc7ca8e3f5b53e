//! `ClusterState` + [`NodeContext`] + [`Config`] → [`DesiredState`]: the virtual servers,
//! real servers and weights, addresses to bind and packet-rule intents of this node. Pure.
//!
//! [`Planner`] keeps what each Service contributed so that a change re-plans only the Services
//! it touched (ARCHITECTURE.md rule 4) and reports which keys changed, for
//! [`crate::reconcile::reconcile_changes`].

mod endpoints;
mod health_check;
pub mod kube_proxy_leftovers;
mod node_addresses;
mod ownership;
mod packet_rules;
mod service;
mod tally;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use netlink_ipvs::{
    Family, IpvsState, Protocol, RealServer, RealServerKey, ServiceKey, ServiceState, VirtualServer,
};

pub use endpoints::{categorize, port_endpoints, Categorized, Locality, PortEndpoint};
pub use health_check::{HealthChecks, ServiceHealthCheck};
pub use node_addresses::{health_check_addresses, is_ipv6_link_local, node_port_ips};
pub use ownership::{cidr_contains, KernelView, Ownership};
pub use packet_rules::{
    packet_rules, Destination, ExternalLocalMark, LoadBalancerSourceRange, PacketRules,
    PacketSettings, DEFAULT_MASQUERADE_MARK, DEFAULT_TABLE,
};
use service::{plan_service, PlanContext, ServicePlan};
use tally::{RuleFootprint, ServiceTally};

use crate::config::{Config, FWMARK_COUNT};
use crate::model::{ClusterState, Node, ServiceName, ServicePort, ServicePortName};

/// The node the plan is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeContext {
    /// Node name (locality of endpoints).
    pub name: String,
    /// The node's IPs: its primary IPs (`nodePortAddresses: [primary]`), and where NodePorts
    /// open while the node's local addresses are not known (`--node-ip`, `proxier plan`; see
    /// [`Planner::set_local_addresses`]).
    pub node_ips: Vec<IpAddr>,
    /// Zone (`topology.kubernetes.io/zone`), for topology hints.
    pub zone: Option<String>,
}

impl NodeContext {
    /// The node-address resolution of every command: the IPs given on the command line
    /// (`--node-ip`) when there are any; otherwise the node's primary IP (`bindAddress`, when
    /// it names one) followed by the Node object's InternalIPs, without duplicates. The zone
    /// comes from the Node object.
    pub fn resolve(
        name: String,
        given_ips: Vec<IpAddr>,
        primary_ip: Option<IpAddr>,
        node: Option<&Node>,
    ) -> Self {
        let mut node_ips = given_ips;
        if node_ips.is_empty() {
            node_ips.extend(primary_ip);
            for ip in node.iter().flat_map(|n| n.internal_ips.iter()) {
                if !node_ips.contains(ip) {
                    node_ips.push(*ip);
                }
            }
        }
        Self {
            name,
            node_ips,
            zone: node.and_then(|n| n.zone.clone()),
        }
    }
}

/// What the plan wants of a real server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RealServerIntent {
    /// Present with its weight: takes new connections.
    Serve,
    /// The endpoint is still in its EndpointSlice but must take no new connections
    /// (terminating while others are ready, or filtered out by policy), and its existing
    /// connections may go on: weight 0 if its real server exists, never created just to sit
    /// at weight 0.
    Drain,
    /// The endpoint is still in its EndpointSlice, takes no new flows and does not serve
    /// (`serving: false`), and its protocol pins flows to it (UDP, SCTP: a stable 5-tuple
    /// would keep hitting it at weight 0): its real server is deleted and its flows through
    /// this virtual server flushed now.
    Remove,
}

/// The decision table for one endpoint of one virtual server (issue 13 item 5):
///
/// | chosen for new connections | protocol  | `serving` | intent   |
/// |----------------------------|-----------|-----------|----------|
/// | yes                        | any       | any       | `Serve`  |
/// | no                         | TCP       | any       | `Drain`  |
/// | no                         | UDP, SCTP | true      | `Drain`  |
/// | no                         | UDP, SCTP | false     | `Remove` |
///
/// kube-proxy deletes every unselected UDP/SCTP real server at once
/// (pkg/proxy/ipvs/graceful_termination.go) and flushes UDP flows whose reply source is not
/// a serving endpoint (pkg/proxy/conntrack/cleanup.go); proxier removes exactly the
/// not-serving ones, and keeps a serving endpoint's existing flows at weight 0 (its flows
/// are answered; cleanup.go leaves them too), so a topology or policy change never cuts them.
pub fn real_server_intent(protocol: Protocol, chosen: bool, serving: bool) -> RealServerIntent {
    match (chosen, protocol, serving) {
        (true, _, _) => RealServerIntent::Serve,
        (false, Protocol::Tcp, _) | (false, Protocol::Udp | Protocol::Sctp, true) => {
            RealServerIntent::Drain
        }
        (false, Protocol::Udp | Protocol::Sctp, false) => RealServerIntent::Remove,
    }
}

/// Both connection thresholds of a terminating endpoint's real server: the kernel-side record
/// that it was terminating, so that when it leaves its slice it is deleted at once, after a
/// restart too (see `reconcile::departure`). 2^30: never reached by a connection count, and
/// below `INT_MAX` (the VM's 6.18 kernel answers `EINVAL` to a threshold of `u32::MAX`).
pub const TERMINATING_MARK: u32 = 1 << 30;

/// A real server as planned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DesiredRealServer {
    /// The real server (weight as when serving).
    pub real_server: RealServer,
    /// Serve or drain.
    pub intent: RealServerIntent,
}

/// Why a virtual server exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum VirtualServerRole {
    /// A cluster IP.
    ClusterIp,
    /// An `externalIPs` entry.
    ExternalIp,
    /// A load balancer ingress IP.
    LoadBalancer,
    /// A node IP + NodePort.
    NodePort,
    /// The firewall-mark virtual server for external traffic of an ETP=Local Service.
    ExternalLocal,
}

/// A virtual server as planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredVirtualServer {
    /// Its settings.
    pub service: VirtualServer,
    /// Its real servers.
    pub real_servers: BTreeMap<RealServerKey, DesiredRealServer>,
    /// The Service port it serves.
    pub owner: ServicePortName,
    /// Why it exists.
    pub role: VirtualServerRole,
    /// Whether it serves only this node's endpoints (a `Local` traffic policy).
    pub local_only: bool,
    /// For a LoadBalancer IP: the only sources allowed (`loadBalancerSourceRanges`; empty =
    /// any), enforced by the packet rules.
    pub allowed_sources: Vec<(IpAddr, u8)>,
}

/// Intent for the packet rules (nftables): external traffic to these destinations gets
/// `mark`, so IPVS (which looks firewall-mark services up first) sends it to the
/// local-endpoints-only firewall-mark virtual server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalLocalRule {
    /// The mark.
    pub mark: u32,
    /// Family of the destinations.
    pub family: Family,
    /// Protocol of the destinations.
    pub protocol: Protocol,
    /// Address:port destinations (node IP:NodePort, external IP:port, LB IP:port).
    pub destinations: Vec<(IpAddr, u16)>,
    /// The Service port.
    pub owner: ServicePortName,
}

/// Whether `ip` can be a virtual or real server address: not unspecified (0.0.0.0, ::),
/// loopback, multicast or the IPv4 broadcast address (kube-proxy skips such IPs; IPVS would
/// capture the node's own or all traffic to them).
pub fn routable(ip: &IpAddr) -> bool {
    let broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    !(ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() || broadcast)
}

/// Everything this node should have.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DesiredState {
    /// Virtual servers by key.
    pub virtual_servers: BTreeMap<ServiceKey, DesiredVirtualServer>,
    /// Addresses to bind on the dummy interface, with how many Services use each.
    pub addresses: BTreeMap<IpAddr, u32>,
    /// ETP=Local external-traffic marks, by mark.
    pub external_local: BTreeMap<u32, ExternalLocalRule>,
    /// Endpoints on this node, with how many Services use each: a pod that reaches itself
    /// through a Service is masqueraded (hairpin), or its reply would bypass IPVS.
    pub local_endpoints: BTreeMap<IpAddr, u32>,
    /// Which kernel objects are ours.
    pub ownership: Ownership,
    /// The addresses NodePorts open on now (`nodePortAddresses` over the local addresses).
    pub node_port_ips: BTreeSet<IpAddr>,
    /// The health checks of `externalTrafficPolicy: Local` LoadBalancer Services
    /// (`healthCheckNodePort`), by Service.
    pub health_checks: BTreeMap<ServiceName, ServiceHealthCheck>,
}

/// Which traffic a `Local` policy applies to (the label `traffic_policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TrafficScope {
    /// `internalTrafficPolicy` (cluster IPs).
    Internal,
    /// `externalTrafficPolicy` (NodePorts, external and load-balancer IPs).
    External,
}

/// Counts by (policy, family) of [`DesiredState::no_local_endpoints`].
pub type NoLocalEndpoints = BTreeMap<(TrafficScope, Family), u64>;

/// Planned real servers by intent (the metric `proxier_real_servers`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RealServerCounts {
    /// Taking new connections.
    pub serving: u64,
    /// Weight 0, kept for established connections.
    pub draining: u64,
}

impl DesiredState {
    /// Counts the planned real servers by intent.
    /// (A walk of the whole plan: the sync loop reads [`Planner::real_server_counts`].)
    pub fn real_server_counts(&self) -> RealServerCounts {
        tally::count_real_servers(self.virtual_servers.values())
    }

    /// Service ports with a `Local` traffic policy and no endpoint on this node, by policy
    /// (`internal`, `external`) and family: kube-proxy's
    /// `sync_proxy_rules_no_local_endpoints_total`.
    /// (A walk of the whole plan: the sync loop reads [`Planner::no_local_endpoints`].)
    pub fn no_local_endpoints(&self) -> NoLocalEndpoints {
        tally::count_no_local_endpoints(self.virtual_servers.iter())
    }

    /// The IPVS table this plan programs on a node that has none: serving real servers only
    /// (a draining one is never created).
    pub fn to_ipvs_state(&self) -> IpvsState {
        let services = self
            .virtual_servers
            .iter()
            .map(|(key, vs)| {
                let real_servers = vs
                    .real_servers
                    .iter()
                    .filter(|(_, rs)| rs.intent == RealServerIntent::Serve)
                    .map(|(k, rs)| (*k, rs.real_server))
                    .collect();
                let state = ServiceState {
                    service: vs.service.clone(),
                    real_servers,
                };
                (*key, state)
            })
            .collect();
        IpvsState { services }
    }
}

/// What a (re)plan changed: the keys reconcile must look at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Virtual servers added, removed or possibly modified.
    pub services: BTreeSet<ServiceKey>,
    /// Addresses whose binding may have changed.
    pub addresses: BTreeSet<IpAddr>,
    /// Whether the packet rules may differ: a re-planned Service changed its virtual servers'
    /// keys or roles, addresses, local endpoints, external-local marks or health check (a
    /// weight flip does not), or everything was planned.
    pub packet_rules: bool,
}

/// Two Services asked for the same virtual server; the first one planned keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The contested virtual server.
    pub key: ServiceKey,
    /// Who has it.
    pub holder: ServicePortName,
    /// Who was refused.
    pub refused: ServicePortName,
}

/// What one Service put into the desired state, so that it can be taken out again.
#[derive(Debug, Clone, Default)]
struct Contribution {
    virtual_servers: Vec<ServiceKey>,
    addresses: Vec<IpAddr>,
    external_local: Vec<(ServicePortName, Family, u32)>,
    local_endpoints: Vec<IpAddr>,
    tally: ServiceTally,
}

/// Incremental planner.
#[derive(Debug, Clone)]
pub struct Planner {
    node: NodeContext,
    config: Config,
    packet_settings: PacketSettings,
    node_port_ips: Vec<IpAddr>,
    /// The node's local addresses outside our dummy interface, once known.
    local_addresses: Option<Vec<IpAddr>>,
    desired: DesiredState,
    contributions: BTreeMap<ServiceName, Contribution>,
    marks: BTreeMap<(ServicePortName, Family), u32>,
    used_marks: BTreeSet<u32>,
    conflicts: Vec<Conflict>,
    /// The sum of every Service's [`ServiceTally`].
    tally: ServiceTally,
}

/// FNV-1a: a stable hash, so a Service gets the same firewall mark after a restart.
fn stable_hash(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

impl Planner {
    /// A planner for one node.
    pub fn new(node: NodeContext, config: Config) -> Self {
        let node_port_ips =
            node_port_ips(&config.node_port_addresses, &node.node_ips, &node.node_ips);
        let desired = DesiredState {
            ownership: Ownership {
                node_ips: node_port_ips.iter().copied().collect(),
                node_port_range: config.node_port_range,
                fwmarks: (config.fwmark_base, FWMARK_COUNT),
                exclude_cidrs: config.exclude_cidrs.clone(),
                ..Ownership::default()
            },
            node_port_ips: node_port_ips.iter().copied().collect(),
            ..DesiredState::default()
        };
        Self {
            node,
            config,
            packet_settings: PacketSettings::default(),
            node_port_ips,
            local_addresses: None,
            desired,
            contributions: BTreeMap::new(),
            marks: BTreeMap::new(),
            used_marks: BTreeSet::new(),
            conflicts: Vec::new(),
            tally: ServiceTally::default(),
        }
    }

    /// Plans packet rules with `settings` (cluster CIDRs, masqueradeAll, table).
    pub fn with_packet_settings(mut self, settings: PacketSettings) -> Self {
        self.packet_settings = settings;
        self
    }

    /// Sets the node's local addresses (every interface but our dummy one): NodePorts then open
    /// on those `nodePortAddresses` selects, as kube-proxy's. Returns whether that changed
    /// where NodePorts open; then every Service must be re-planned ([`Planner::plan_all`]).
    /// Addresses that carried NodePorts earlier in this run stay recognisable as ours
    /// ([`Ownership`] rule 3), so their virtual servers are deleted when the address goes.
    pub fn set_local_addresses(&mut self, mut local: Vec<IpAddr>) -> bool {
        local.sort_unstable();
        local.dedup();
        let ips = node_port_ips(
            &self.config.node_port_addresses,
            &self.node.node_ips,
            &local,
        );
        self.local_addresses = Some(local);
        if ips == self.node_port_ips {
            return false;
        }
        self.desired.ownership.node_ips.extend(ips.iter().copied());
        self.desired.node_port_ips = ips.iter().copied().collect();
        self.node_port_ips = ips;
        true
    }

    /// The health checks to serve and where they listen.
    pub fn health_checks(&self) -> HealthChecks {
        let addresses = match &self.local_addresses {
            Some(local) => {
                health_check_addresses(&self.config.node_port_addresses, &self.node.node_ips, local)
            }
            None => Some(self.node_port_ips.clone()),
        };
        HealthChecks {
            services: self.desired.health_checks.clone(),
            addresses,
        }
    }

    /// The current desired state.
    pub fn desired(&self) -> &DesiredState {
        &self.desired
    }

    /// The planned real servers by intent, kept as Services are re-planned (the same figure
    /// as [`DesiredState::real_server_counts`], without walking the plan).
    pub fn real_server_counts(&self) -> RealServerCounts {
        self.tally.real_servers
    }

    /// [`DesiredState::no_local_endpoints`], kept as Services are re-planned.
    pub fn no_local_endpoints(&self) -> NoLocalEndpoints {
        self.tally.no_local_endpoints.clone()
    }

    /// The packet-rule intent of the current desired state.
    pub fn packet_rules(&self) -> PacketRules {
        packet_rules(&self.desired, &self.packet_settings)
    }

    /// Virtual servers refused because another Service holds them.
    pub fn conflicts(&self) -> &[Conflict] {
        &self.conflicts
    }

    /// Plans every Service from scratch (start-up, node or config change).
    pub fn plan_all(&mut self, cluster: &mut ClusterState) -> Changes {
        cluster.take_dirty();
        let mut names: BTreeSet<ServiceName> = self.contributions.keys().cloned().collect();
        names.extend(cluster.services().map(|s| s.name.clone()));
        self.conflicts.clear();
        let mut changes = Changes::default();
        for name in &names {
            self.replan_service(cluster, name, &mut changes);
        }
        changes.packet_rules = true;
        changes
    }

    /// Follows the local Node object's zone (`topology.kubernetes.io/zone`): kube-proxy
    /// resyncs on a Node update, reading topology hints against the node's labels. When the
    /// Node in `cluster` names another zone than the plan's, every Service is marked for
    /// re-planning; returns whether the zone changed. (A Node no longer in `cluster` changes
    /// nothing; node *addresses* are not followed: kube-proxy exits on their change so that
    /// its DaemonSet restarts it, and so does proxier's Kubernetes source.)
    pub fn follow_node(&mut self, cluster: &mut ClusterState) -> bool {
        let Some(node) = cluster.node(&self.node.name) else {
            return false;
        };
        if node.zone == self.node.zone {
            return false;
        }
        self.node.zone = node.zone.clone();
        cluster.mark_all_dirty();
        true
    }

    /// Re-plans only the Services changed since the last plan.
    pub fn replan(&mut self, cluster: &mut ClusterState) -> Changes {
        let mut changes = Changes::default();
        for name in cluster.take_dirty() {
            self.replan_service(cluster, &name, &mut changes);
        }
        changes
    }

    fn mark_for(
        marks: &mut BTreeMap<(ServicePortName, Family), u32>,
        used: &mut BTreeSet<u32>,
        base: u32,
        port: &ServicePort,
        family: Family,
    ) -> u32 {
        let owner = (port.name.clone(), family);
        if let Some(mark) = marks.get(&owner) {
            return *mark;
        }
        let start = stable_hash(&format!("{}/{family:?}", port.name)) % FWMARK_COUNT;
        // Linear probing; FWMARK_COUNT marks are far more than ETP=Local service ports.
        let mark = (0..FWMARK_COUNT)
            .map(|i| base + (start + i) % FWMARK_COUNT)
            .find(|m| !used.contains(m))
            .unwrap_or(base);
        used.insert(mark);
        marks.insert(owner, mark);
        mark
    }

    fn replan_service(&mut self, cluster: &ClusterState, name: &ServiceName, out: &mut Changes) {
        let old = self.contributions.remove(name).unwrap_or_default();
        let before = RuleFootprint::of(
            &self.desired,
            name,
            &old.virtual_servers,
            &old.addresses,
            &old.local_endpoints,
            old.external_local.iter().map(|(_, _, mark)| *mark),
        );
        old.tally.add_to(&mut self.tally, false);
        for key in &old.virtual_servers {
            if self
                .desired
                .virtual_servers
                .get(key)
                .map(|d| &d.owner.service)
                == Some(name)
            {
                self.desired.virtual_servers.remove(key);
            }
            out.services.insert(*key);
        }
        for ip in &old.addresses {
            if let Some(count) = self.desired.addresses.get_mut(ip) {
                *count -= 1;
                if *count == 0 {
                    self.desired.addresses.remove(ip);
                }
            }
            out.addresses.insert(*ip);
        }
        for (_, _, mark) in &old.external_local {
            self.desired.external_local.remove(mark);
        }
        for ip in &old.local_endpoints {
            if let Some(count) = self.desired.local_endpoints.get_mut(ip) {
                *count -= 1;
                if *count == 0 {
                    self.desired.local_endpoints.remove(ip);
                }
            }
        }
        self.desired.health_checks.remove(name);
        if let Some(check) = cluster
            .service(name)
            .and_then(|s| ServiceHealthCheck::of(s, cluster.slices(name), &self.node.name))
        {
            self.desired.health_checks.insert(name.clone(), check);
        }
        let new = match cluster.service(name) {
            Some(service) => {
                let ctx = PlanContext {
                    config: &self.config,
                    here: Locality {
                        node: &self.node.name,
                        zone: self.node.zone.as_deref(),
                    },
                    node_port_ips: &self.node_port_ips,
                };
                let (marks, used, base) = (
                    &mut self.marks,
                    &mut self.used_marks,
                    self.config.fwmark_base,
                );
                plan_service(service, cluster.slices(name), &ctx, |port, family| {
                    Self::mark_for(marks, used, base, port, family)
                })
            }
            None => ServicePlan::default(),
        };
        // Release the marks of ports that no longer need one.
        let kept: BTreeSet<(ServicePortName, Family)> = new
            .external_local
            .iter()
            .map(|r| (r.owner.clone(), r.family))
            .collect();
        for (port, family, mark) in old.external_local {
            let owner = (port, family);
            if !kept.contains(&owner) {
                self.marks.remove(&owner);
                self.used_marks.remove(&mark);
            }
        }
        let mut accepted = Contribution {
            virtual_servers: Vec::with_capacity(new.virtual_servers.len()),
            addresses: new.addresses,
            external_local: Vec::new(),
            local_endpoints: new.local_endpoints,
            tally: ServiceTally::default(),
        };
        for (key, vs) in new.virtual_servers {
            out.services.insert(key);
            match self.desired.virtual_servers.get(&key) {
                Some(holder) if holder.owner.service != *name => {
                    self.conflicts.push(Conflict {
                        key,
                        holder: holder.owner.clone(),
                        refused: vs.owner.clone(),
                    });
                }
                _ => {
                    self.desired.ownership.remember(key, vs.role);
                    self.desired.virtual_servers.insert(key, vs);
                    accepted.virtual_servers.push(key);
                }
            }
        }
        for ip in &accepted.addresses {
            *self.desired.addresses.entry(*ip).or_insert(0) += 1;
            out.addresses.insert(*ip);
        }
        for ip in &accepted.local_endpoints {
            *self.desired.local_endpoints.entry(*ip).or_insert(0) += 1;
        }
        for rule in new.external_local {
            accepted
                .external_local
                .push((rule.owner.clone(), rule.family, rule.mark));
            self.desired.external_local.insert(rule.mark, rule);
        }
        accepted.tally = ServiceTally::of(&self.desired, &accepted.virtual_servers);
        accepted.tally.add_to(&mut self.tally, true);
        let after = RuleFootprint::of(
            &self.desired,
            name,
            &accepted.virtual_servers,
            &accepted.addresses,
            &accepted.local_endpoints,
            accepted.external_local.iter().map(|(_, _, mark)| *mark),
        );
        out.packet_rules |= before != after;
        if !accepted.virtual_servers.is_empty()
            || !accepted.addresses.is_empty()
            || !accepted.local_endpoints.is_empty()
        {
            self.contributions.insert(name.clone(), accepted);
        }
    }
}

#[cfg(test)]
mod tests;
