//! Builders for engine tests and benches: model objects in one line each. Addresses are
//! literals, parsed with a panic on a typo.
#![allow(
    clippy::unwrap_used,
    reason = "fixtures parse literal addresses; a typo should panic at once"
)]

use std::collections::BTreeSet;
use std::net::IpAddr;

use netlink_ipvs::{Family, Protocol, ServiceKey};

use crate::config::Config;
use crate::model::{
    ClusterState, Endpoint, EndpointPort, EndpointSlice, Service, ServiceName, ServicePort,
    ServicePortName, SessionAffinity, TrafficPolicy,
};
use crate::plan::{DesiredState, NodeContext, Planner, RealServerIntent};

/// The address `text`.
pub fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// Service `service` in namespace `default`.
pub fn name(service: &str) -> ServiceName {
    ServiceName {
        namespace: "default".into(),
        name: service.into(),
    }
}

/// A ClusterIP Service with ports `(name, protocol, port)`.
pub fn service(svc: &str, cluster_ips: &[&str], ports: &[(&str, Protocol, u16)]) -> Service {
    Service {
        name: name(svc),
        ports: ports
            .iter()
            .map(|(port_name, protocol, port)| ServicePort {
                name: ServicePortName {
                    service: name(svc),
                    port: (*port_name).into(),
                    protocol: *protocol,
                },
                port: *port,
                node_port: None,
                cluster_ips: cluster_ips.iter().map(|s| ip(s)).collect(),
                external_ips: vec![],
                load_balancer_ips: vec![],
                load_balancer_source_ranges: vec![],
                affinity: SessionAffinity::None,
                internal_policy: TrafficPolicy::Cluster,
                external_policy: TrafficPolicy::Cluster,
            })
            .collect(),
        health_check_node_port: None,
    }
}

/// Applies `f` to every port of `svc`.
pub fn with_ports(mut svc: Service, f: impl Fn(&mut ServicePort)) -> Service {
    svc.ports.iter_mut().for_each(f);
    svc
}

/// An endpoint on `node` in state "ready".
pub fn ep(address: &str, node: &str) -> Endpoint {
    Endpoint {
        node: Some(node.into()),
        ..Endpoint::ready(ip(address))
    }
}

/// A serving, terminating endpoint.
pub fn terminating(address: &str, node: &str, serving: bool) -> Endpoint {
    Endpoint {
        ready: false,
        serving,
        terminating: true,
        ..ep(address, node)
    }
}

/// A slice for `svc` with ports `(name, protocol, port)`.
pub fn slice(
    svc: &str,
    slice_name: &str,
    ports: &[(&str, Protocol, u16)],
    endpoints: Vec<Endpoint>,
) -> EndpointSlice {
    let family = endpoints
        .first()
        .map(|e| Family::of(&e.address))
        .unwrap_or(Family::V4);
    EndpointSlice {
        name: slice_name.into(),
        service: name(svc),
        family,
        ports: ports
            .iter()
            .map(|(n, protocol, port)| EndpointPort {
                name: (*n).into(),
                protocol: *protocol,
                port: *port,
            })
            .collect(),
        endpoints,
    }
}

/// The slice `SVC-1` of Service `svc`: port `http` 8080/TCP, one ready endpoint on node-a.
pub fn http_backend(svc: &str, address: &str) -> EndpointSlice {
    slice(
        svc,
        &format!("{svc}-1"),
        &[("http", Protocol::Tcp, 8080)],
        vec![ep(address, "node-a")],
    )
}

/// A cluster holding `services` and `slices`.
pub fn cluster(services: Vec<Service>, slices: Vec<EndpointSlice>) -> ClusterState {
    let mut cluster = ClusterState::new();
    services.into_iter().for_each(|s| cluster.upsert_service(s));
    slices.into_iter().for_each(|s| cluster.upsert_slice(s));
    cluster
}

/// The node all engine tests plan for: node-a, 192.168.1.10 and fd00:192::10, zone-a.
pub fn node_a() -> NodeContext {
    NodeContext {
        name: "node-a".into(),
        node_ips: vec![ip("192.168.1.10"), ip("fd00:192::10")],
        zone: Some("zone-a".into()),
    }
}

/// The desired state of `cluster` on [`node_a`] under `config`.
pub fn plan_with(mut cluster: ClusterState, config: Config) -> DesiredState {
    let mut planner = Planner::new(node_a(), config);
    planner.plan_all(&mut cluster);
    planner.desired().clone()
}

/// The desired state of `cluster` on [`node_a`] under the default config.
pub fn plan(cluster: ClusterState) -> DesiredState {
    plan_with(cluster, Config::default())
}

/// The TCP virtual server `address`:`port`.
pub fn tcp(address: &str, port: u16) -> ServiceKey {
    ServiceKey::Address {
        protocol: Protocol::Tcp,
        address: ip(address),
        port,
    }
}

/// The UDP virtual server `address`:`port`.
pub fn udp(address: &str, port: u16) -> ServiceKey {
    ServiceKey::Address {
        protocol: Protocol::Udp,
        address: ip(address),
        port,
    }
}

/// The real servers of `key` as `ip:port` → serving?, sorted.
pub fn real_servers(desired: &DesiredState, key: &ServiceKey) -> Vec<(String, bool)> {
    desired.virtual_servers[key]
        .real_servers
        .iter()
        .map(|(k, rs)| (k.to_string(), rs.intent == RealServerIntent::Serve))
        .collect()
}

/// Only the serving real servers of `key`.
pub fn serving(desired: &DesiredState, key: &ServiceKey) -> BTreeSet<String> {
    real_servers(desired, key)
        .into_iter()
        .filter(|(_, s)| *s)
        .map(|(k, _)| k)
        .collect()
}

/// `items` as a set of owned strings.
pub fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}
