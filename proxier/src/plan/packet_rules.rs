//! Packet-rule intent: what our own nftables table must contain for a plan (masquerade,
//! NodePorts, `externalTrafficPolicy: Local` marks, LoadBalancer source ranges, the filter of
//! unknown ports on service IPs). Plain data,
//! derived from the [`DesiredState`] and the settings that do not come from cluster objects;
//! the dataplane turns it into a table (`dataplane::nftables`), the fake records it.

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::{DesiredState, VirtualServerRole};

/// The default table name.
pub const DEFAULT_TABLE: &str = "proxier";
/// kube-proxy's default masquerade bit (`--iptables-masquerade-bit=14`).
pub const DEFAULT_MASQUERADE_MARK: u32 = 0x4000;

/// A service destination: (address, protocol, port).
pub type Destination = (IpAddr, netlink_ipvs::Protocol, u16);

/// What our table must contain: plain data derived from the engine's desired state and config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketRules {
    /// Table name (family `inet`: one table for IPv4 and IPv6).
    pub table: String,
    /// The cluster CIDR(s), IPv4 and/or IPv6; empty = unknown.
    pub cluster_cidrs: Vec<(IpAddr, u8)>,
    /// Masquerade all traffic to service IPs, whatever its source.
    pub masquerade_all: bool,
    /// The mark bit(s) that request masquerade.
    pub masquerade_mark: u32,
    /// ClusterIPs, ExternalIPs and LoadBalancer ingress IPs bound on the dummy interface.
    pub service_ips: BTreeSet<IpAddr>,
    /// Every ClusterIP, ExternalIP and LoadBalancer IP:port a virtual server serves: the only
    /// new connections to a `service_ips` address the input filter lets through (kube-proxy's
    /// `KUBE-IPVS-FILTER`, kubernetes#72236).
    pub service_ports: BTreeSet<Destination>,
    /// ExternalIP and LoadBalancer IP:ports of `externalTrafficPolicy: Cluster`: masqueraded
    /// whatever the source and whether or not a cluster CIDR is known (kube-proxy's
    /// `KUBE-EXTERNAL-IP` and `KUBE-LOAD-BALANCER` → `KUBE-MARK-MASQ`).
    pub masquerade_destinations: BTreeSet<Destination>,
    /// TCP ports of `healthCheckNodePort`s: let through the input filter on any address (as
    /// kube-proxy's `KUBE-HEALTH-CHECK-NODE-PORT` set).
    pub health_check_node_ports: BTreeSet<u16>,
    /// The addresses where NodePorts open.
    pub node_ips: BTreeSet<IpAddr>,
    /// The NodePorts.
    pub node_ports: BTreeSet<(netlink_ipvs::Protocol, u16)>,
    /// `externalTrafficPolicy: Local` destinations and the fwmark of their local-only virtual
    /// server.
    pub external_local: Vec<ExternalLocalMark>,
    /// LoadBalancer destinations that accept only some sources.
    pub load_balancer_source_ranges: Vec<LoadBalancerSourceRange>,
    /// Endpoints on this node: a packet from one of them to itself (a pod reaching itself
    /// through a Service, after IPVS) is masqueraded so the reply comes back through IPVS.
    pub hairpin_endpoints: BTreeSet<IpAddr>,
}

impl Default for PacketRules {
    fn default() -> Self {
        Self {
            table: DEFAULT_TABLE.to_owned(),
            cluster_cidrs: Vec::new(),
            masquerade_all: false,
            masquerade_mark: DEFAULT_MASQUERADE_MARK,
            service_ips: BTreeSet::new(),
            service_ports: BTreeSet::new(),
            masquerade_destinations: BTreeSet::new(),
            health_check_node_ports: BTreeSet::new(),
            node_ips: BTreeSet::new(),
            node_ports: BTreeSet::new(),
            external_local: Vec::new(),
            load_balancer_source_ranges: Vec::new(),
            hairpin_endpoints: BTreeSet::new(),
        }
    }
}

/// External traffic to `address:port` (`externalTrafficPolicy: Local`) gets `mark`, the fwmark
/// of the virtual server whose real servers are the node's local endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExternalLocalMark {
    /// Destination address (LoadBalancer IP, ExternalIP or node IP).
    pub address: IpAddr,
    /// Transport protocol.
    pub protocol: netlink_ipvs::Protocol,
    /// Destination port.
    pub port: u16,
    /// The fwmark to set.
    pub mark: u32,
}

/// Traffic to the LoadBalancer `address:port` from outside `allowed` is dropped. An entry whose
/// `allowed` has no range of the address's family filters nothing (Kubernetes: empty = all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadBalancerSourceRange {
    /// The LoadBalancer ingress IP.
    pub address: IpAddr,
    /// Transport protocol.
    pub protocol: netlink_ipvs::Protocol,
    /// Service port.
    pub port: u16,
    /// `loadBalancerSourceRanges` as (network, prefix length).
    pub allowed: Vec<(IpAddr, u8)>,
}

/// Settings of the packet rules that do not come from the cluster objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketSettings {
    /// Our nftables table (family inet).
    pub table: String,
    /// `clusterCIDR` (IPv4 and/or IPv6): traffic from outside it to a service is masqueraded.
    pub cluster_cidrs: Vec<(IpAddr, u8)>,
    /// `masqueradeAll`.
    pub masquerade_all: bool,
}

impl Default for PacketSettings {
    fn default() -> Self {
        Self {
            table: DEFAULT_TABLE.to_owned(),
            cluster_cidrs: Vec::new(),
            masquerade_all: false,
        }
    }
}

/// The packet rules `desired` needs under `settings`.
pub fn packet_rules(desired: &DesiredState, settings: &PacketSettings) -> PacketRules {
    let mut rules = PacketRules {
        table: settings.table.clone(),
        cluster_cidrs: settings.cluster_cidrs.clone(),
        masquerade_all: settings.masquerade_all,
        service_ips: desired.addresses.keys().copied().collect(),
        node_ips: desired.node_port_ips.clone(),
        hairpin_endpoints: desired.local_endpoints.keys().copied().collect(),
        health_check_node_ports: desired
            .health_checks
            .values()
            .map(|c| c.node_port)
            .collect(),
        ..PacketRules::default()
    };
    let external_local: BTreeSet<Destination> = desired
        .external_local
        .values()
        .flat_map(|rule| {
            rule.destinations
                .iter()
                .map(|(address, port)| (*address, rule.protocol, *port))
        })
        .collect();
    for (key, vs) in &desired.virtual_servers {
        let netlink_ipvs::ServiceKey::Address {
            protocol,
            address,
            port,
        } = *key
        else {
            continue;
        };
        let destination = (address, protocol, port);
        match vs.role {
            VirtualServerRole::NodePort => {
                rules.node_ports.insert((protocol, port));
            }
            VirtualServerRole::ClusterIp => {
                rules.service_ports.insert(destination);
            }
            VirtualServerRole::ExternalIp | VirtualServerRole::LoadBalancer => {
                rules.service_ports.insert(destination);
                if !external_local.contains(&destination) {
                    rules.masquerade_destinations.insert(destination);
                }
            }
            VirtualServerRole::ExternalLocal => {}
        }
        if vs.role == VirtualServerRole::LoadBalancer && !vs.allowed_sources.is_empty() {
            rules
                .load_balancer_source_ranges
                .push(LoadBalancerSourceRange {
                    address,
                    protocol,
                    port,
                    allowed: vs.allowed_sources.clone(),
                });
        }
    }
    for rule in desired.external_local.values() {
        rules
            .external_local
            .extend(
                rule.destinations
                    .iter()
                    .map(|(address, port)| ExternalLocalMark {
                        address: *address,
                        protocol: rule.protocol,
                        port: *port,
                        mark: rule.mark,
                    }),
            );
    }
    rules
}

#[cfg(test)]
mod tests {
    use netlink_ipvs::Protocol;

    use super::{packet_rules, PacketSettings};
    use crate::fixtures::{cluster, http_backend, ip, plan, service, with_ports};

    #[test]
    fn packet_rules_follow_the_plan() {
        let web = with_ports(
            service("web", &["10.96.0.80"], &[("http", Protocol::Tcp, 80)]),
            |p| {
                p.node_port = Some(30080);
                p.load_balancer_ips = vec![ip("203.0.113.7")];
                p.load_balancer_source_ranges = vec![(ip("198.51.100.0"), 24)];
            },
        );
        let open = with_ports(
            service("open", &["10.96.0.81"], &[("http", Protocol::Tcp, 80)]),
            |p| p.load_balancer_ips = vec![ip("203.0.113.8")],
        );
        let slices = vec![
            http_backend("web", "10.244.1.5"),
            http_backend("open", "10.244.1.6"),
        ];
        let desired = plan(cluster(vec![web, open], slices));
        let settings = PacketSettings {
            cluster_cidrs: vec![(ip("10.244.0.0"), 16)],
            ..PacketSettings::default()
        };
        let rules = packet_rules(&desired, &settings);
        assert!(rules.service_ips.contains(&ip("10.96.0.80")));
        assert!(rules.service_ips.contains(&ip("203.0.113.7")));
        assert!(rules.node_ports.contains(&(Protocol::Tcp, 30080)));
        assert_eq!(rules.cluster_cidrs, settings.cluster_cidrs);
        // Only the LoadBalancer with ranges is filtered; the other LB and the ClusterIP are not.
        assert_eq!(rules.load_balancer_source_ranges.len(), 1);
        let range = &rules.load_balancer_source_ranges[0];
        assert_eq!((range.address, range.port), (ip("203.0.113.7"), 80));
        assert_eq!(range.allowed, vec![(ip("198.51.100.0"), 24)]);
    }

    /// kube-proxy (pkg/proxy/ipvs/proxier.go `writeIptablesRules`): traffic to ExternalIPs
    /// (`KUBE-EXTERNAL-IP`) and LoadBalancer IPs (`KUBE-LOAD-BALANCER`) of ETP=Cluster Services
    /// is marked for masquerade whatever its source and whatever `clusterCIDR` is (kubeadm
    /// writes `clusterCIDR: ""` without a pod subnet); ETP=Local ones are not. The filter of
    /// `KUBE-IPVS-FILTER` lets through exactly the ClusterIP, ExternalIP and LB IP:ports.
    #[test]
    fn external_destinations_are_masqueraded_without_a_cluster_cidr() {
        let web = with_ports(
            service("web", &["10.96.0.80"], &[("http", Protocol::Tcp, 80)]),
            |p| {
                p.node_port = Some(30080);
                p.external_ips = vec![ip("198.51.100.9")];
                p.load_balancer_ips = vec![ip("203.0.113.7")];
            },
        );
        let local = with_ports(
            service("local", &["10.96.0.81"], &[("http", Protocol::Tcp, 81)]),
            |p| {
                p.node_port = Some(30081);
                p.load_balancer_ips = vec![ip("203.0.113.8")];
                p.external_policy = crate::model::TrafficPolicy::Local;
            },
        );
        let slices = vec![
            http_backend("web", "10.244.1.5"),
            http_backend("local", "10.244.1.6"),
        ];
        let desired = plan(cluster(vec![web, local], slices));
        let rules = packet_rules(&desired, &PacketSettings::default());
        assert!(rules.cluster_cidrs.is_empty());
        let tcp = Protocol::Tcp;
        assert_eq!(
            rules.masquerade_destinations,
            [(ip("198.51.100.9"), tcp, 80), (ip("203.0.113.7"), tcp, 80)]
                .into_iter()
                .collect(),
            "ETP=Cluster ExternalIP and LB IP only: not ClusterIPs, not ETP=Local"
        );
        assert_eq!(
            rules.service_ports,
            [
                (ip("10.96.0.80"), tcp, 80),
                (ip("10.96.0.81"), tcp, 81),
                (ip("198.51.100.9"), tcp, 80),
                (ip("203.0.113.7"), tcp, 80),
                (ip("203.0.113.8"), tcp, 81),
            ]
            .into_iter()
            .collect()
        );
    }
}
