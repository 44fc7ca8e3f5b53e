//! One Service → its virtual servers, addresses and packet-rule intents.

use std::collections::BTreeMap;
use std::net::IpAddr;

use netlink_ipvs::{
    Family, Protocol, RealServer, Scheduler, ServiceFlags, ServiceKey, VirtualServer,
};

use super::endpoints::{categorize, port_endpoints, Categorized, Locality, PortEndpoint};
use super::{
    real_server_intent, DesiredRealServer, DesiredVirtualServer, ExternalLocalRule,
    VirtualServerRole, TERMINATING_MARK,
};
use crate::config::Config;
use crate::model::{EndpointSlice, Service, ServicePort, SessionAffinity, TrafficPolicy};

/// What one Service contributes to the desired state.
#[derive(Debug, Clone, Default)]
pub struct ServicePlan {
    /// Its virtual servers.
    pub virtual_servers: Vec<(ServiceKey, DesiredVirtualServer)>,
    /// Addresses to bind on the dummy interface.
    pub addresses: Vec<IpAddr>,
    /// ETP=Local external-traffic marks it needs.
    pub external_local: Vec<ExternalLocalRule>,
    /// Its endpoints on this node (a pod reaching itself through the Service is masqueraded).
    pub local_endpoints: Vec<IpAddr>,
}

/// The inputs that do not change per Service.
pub struct PlanContext<'a> {
    /// Configuration.
    pub config: &'a Config,
    /// Where this node is.
    pub here: Locality<'a>,
    /// The IPs NodePorts open on.
    pub node_port_ips: &'a [IpAddr],
}

/// The virtual server settings every virtual server of `port` shares.
fn virtual_server(key: ServiceKey, port: &ServicePort, config: &Config) -> VirtualServer {
    let mut vs = VirtualServer::new(key);
    vs.scheduler.clone_from(&config.scheduler);
    if let SessionAffinity::ClientIp { timeout_seconds } = port.affinity {
        vs.flags = vs.flags | ServiceFlags::PERSISTENT;
        vs.timeout = timeout_seconds;
    }
    // kube-proxy (pkg/proxy/ipvs/proxier.go): "Set the source hash flag needed for the
    // distribution method mh" = IP_VS_SVC_F_SCHED2 (mh-port).
    if config.scheduler == Scheduler::Mh {
        vs.flags = vs.flags | ServiceFlags::SCHED2;
    }
    vs
}

/// Real servers for one virtual server: the chosen endpoints serve, every other endpoint
/// still in the slices drains or, when it pins flows without serving, is removed
/// ([`real_server_intent`]).
fn real_servers(
    endpoints: &[PortEndpoint],
    chosen: &[bool],
    protocol: Protocol,
) -> BTreeMap<netlink_ipvs::RealServerKey, DesiredRealServer> {
    endpoints
        .iter()
        .zip(chosen)
        .map(|(e, &serve)| {
            let intent = real_server_intent(protocol, serve, e.endpoint.serving);
            let mut real_server = RealServer::masq(e.key.address, e.key.port);
            if e.endpoint.terminating {
                real_server.upper_threshold = TERMINATING_MARK;
                real_server.lower_threshold = TERMINATING_MARK;
            }
            (
                e.key,
                DesiredRealServer {
                    real_server,
                    intent,
                },
            )
        })
        .collect()
}

/// Plans every port of `service` in every family it has a cluster IP of.
pub fn plan_service<'a>(
    service: &Service,
    slices: impl Iterator<Item = &'a EndpointSlice> + Clone,
    ctx: &PlanContext<'_>,
    mut mark_for: impl FnMut(&ServicePort, Family) -> u32,
) -> ServicePlan {
    let mut plan = ServicePlan::default();
    for port in &service.ports {
        let mut families: Vec<Family> = port.cluster_ips.iter().map(Family::of).collect();
        families.dedup();
        for family in families {
            plan_port(port, family, slices.clone(), ctx, &mut mark_for, &mut plan);
        }
    }
    plan.addresses.sort_unstable();
    plan.addresses.dedup();
    plan.local_endpoints.sort_unstable();
    plan.local_endpoints.dedup();
    plan
}

fn plan_port<'a>(
    port: &ServicePort,
    family: Family,
    slices: impl Iterator<Item = &'a EndpointSlice>,
    ctx: &PlanContext<'_>,
    mark_for: &mut impl FnMut(&ServicePort, Family) -> u32,
    plan: &mut ServicePlan,
) {
    let endpoints = port_endpoints(port, family, slices);
    plan.local_endpoints.extend(
        endpoints
            .iter()
            .filter(|e| ctx.here.is_local(&e.endpoint))
            .map(|e| e.key.address),
    );
    let external = port.is_external();
    let external_local = external && port.external_policy == TrafficPolicy::Local;
    let internal_local = port.internal_policy == TrafficPolicy::Local;
    let uses_cluster = !internal_local || (external && !external_local);
    let uses_local = internal_local || external_local;
    let Categorized { cluster, local } = categorize(&endpoints, ctx.here, uses_cluster, uses_local);
    let none = vec![false; endpoints.len()];
    let cluster_or_local = cluster.as_ref().or(local.as_ref()).unwrap_or(&none);
    // ClusterIP: ITP. External destinations' address:port virtual servers carry traffic from
    // pods and the node itself: cluster endpoints when any policy uses them (iptables mode's
    // short-circuit for ETP=Local), else local.
    let internal_chosen = if internal_local {
        local.as_ref().unwrap_or(&none)
    } else {
        cluster_or_local
    };
    let of_family = |ips: &[IpAddr]| -> Vec<IpAddr> {
        ips.iter()
            .copied()
            .filter(|ip| Family::of(ip) == family && super::routable(ip))
            .collect()
    };
    let protocol = port.name.protocol;
    let add = |role, address: IpAddr, vport: u16, chosen: &[bool], plan: &mut ServicePlan| {
        let key = ServiceKey::Address {
            protocol,
            address,
            port: vport,
        };
        plan.virtual_servers.push((
            key,
            DesiredVirtualServer {
                service: virtual_server(key, port, ctx.config),
                real_servers: real_servers(&endpoints, chosen, protocol),
                owner: port.name.clone(),
                role,
                local_only: role == VirtualServerRole::ClusterIp && internal_local,
                allowed_sources: if role == VirtualServerRole::LoadBalancer {
                    port.load_balancer_source_ranges.clone()
                } else {
                    Vec::new()
                },
            },
        ));
    };
    for ip in of_family(&port.cluster_ips) {
        add(
            VirtualServerRole::ClusterIp,
            ip,
            port.port,
            internal_chosen,
            plan,
        );
        plan.addresses.push(ip);
    }
    let mut external_destinations = Vec::new();
    for ip in of_family(&port.external_ips) {
        add(
            VirtualServerRole::ExternalIp,
            ip,
            port.port,
            cluster_or_local,
            plan,
        );
        external_destinations.push((ip, port.port));
        if !ctx.node_port_ips.contains(&ip) {
            plan.addresses.push(ip);
        }
    }
    for ip in of_family(&port.load_balancer_ips) {
        add(
            VirtualServerRole::LoadBalancer,
            ip,
            port.port,
            cluster_or_local,
            plan,
        );
        external_destinations.push((ip, port.port));
        if !ctx.node_port_ips.contains(&ip) {
            plan.addresses.push(ip);
        }
    }
    if let Some(node_port) = port.node_port {
        for ip in of_family(ctx.node_port_ips) {
            add(
                VirtualServerRole::NodePort,
                ip,
                node_port,
                cluster_or_local,
                plan,
            );
            external_destinations.push((ip, node_port));
        }
    }
    if external_local {
        let mark = mark_for(port, family);
        let key = ServiceKey::FwMark { mark, family };
        plan.virtual_servers.push((
            key,
            DesiredVirtualServer {
                service: virtual_server(key, port, ctx.config),
                real_servers: real_servers(&endpoints, local.as_ref().unwrap_or(&none), protocol),
                owner: port.name.clone(),
                role: VirtualServerRole::ExternalLocal,
                local_only: true,
                allowed_sources: Vec::new(),
            },
        ));
        plan.external_local.push(ExternalLocalRule {
            mark,
            family,
            protocol,
            destinations: external_destinations,
            owner: port.name.clone(),
        });
    }
}
