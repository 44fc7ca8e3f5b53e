//! `k8s-openapi` objects → model, rejecting bad objects with a [`RejectReason`].
//!
//! Every check here is one kube-proxy (or the API server's validation) makes; an object that
//! fails one is rejected whole, so its Service keeps its previous state and no other is touched.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use netlink_ipvs::{Family, Protocol};

use super::{
    Endpoint, EndpointPort, EndpointSlice, Node, ObjectRef, Service, ServiceName, ServicePort,
    ServicePortName, SessionAffinity, TrafficPolicy,
};
use crate::error::{Error, RejectReason};

/// Label naming the proxy that owns a Service; kube-proxy skips such Services.
pub const LABEL_SERVICE_PROXY_NAME: &str = "service.kubernetes.io/service-proxy-name";
/// Label the EndpointSlice controller puts on headless Services' slices; kube-proxy skips them.
pub const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";
/// Label linking an EndpointSlice to its Service.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
/// The Node label holding its zone.
pub const LABEL_ZONE: &str = "topology.kubernetes.io/zone";
/// Default `sessionAffinityConfig.clientIP.timeoutSeconds` (3 hours).
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10_800;
/// Longest session affinity timeout the API accepts (1 day).
const MAX_AFFINITY_TIMEOUT: i32 = 86_400;

fn object_ref(kind: &str, meta: &ObjectMeta, namespaced: bool) -> ObjectRef {
    ObjectRef {
        kind: kind.to_owned(),
        namespace: if namespaced {
            meta.namespace
                .clone()
                .unwrap_or_else(|| "default".to_owned())
        } else {
            String::new()
        },
        name: meta.name.clone().unwrap_or_default(),
    }
}

/// A CIDR such as `10.0.0.0/8` (a bare address means a host route).
fn parse_cidr(field: &'static str, text: &str) -> Result<(IpAddr, u8), RejectReason> {
    let invalid = || RejectReason::InvalidIp {
        field,
        value: text.to_owned(),
    };
    let (ip, prefix) = match text.trim().split_once('/') {
        Some((ip, prefix)) => (ip, Some(prefix)),
        None => (text.trim(), None),
    };
    let ip: IpAddr = ip.parse().map_err(|_| invalid())?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        Some(p) => p
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(invalid)?,
        None => max,
    };
    Ok((ip, prefix))
}

fn parse_ip(field: &'static str, text: &str) -> Result<IpAddr, RejectReason> {
    text.trim().parse().map_err(|_| RejectReason::InvalidIp {
        field,
        value: text.to_owned(),
    })
}

fn parse_port(field: &'static str, value: i32) -> Result<u16, RejectReason> {
    match u16::try_from(value) {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(RejectReason::PortOutOfRange { field, value }),
    }
}

fn parse_protocol(text: Option<&str>) -> Result<Protocol, RejectReason> {
    match text.unwrap_or("TCP") {
        "TCP" => Ok(Protocol::Tcp),
        "UDP" => Ok(Protocol::Udp),
        "SCTP" => Ok(Protocol::Sctp),
        other => Err(RejectReason::UnknownProtocol(other.to_owned())),
    }
}

/// Labels that make kube-proxy ignore a Service or EndpointSlice (its informers' selector).
fn check_proxy_labels(labels: Option<&BTreeMap<String, String>>) -> Result<(), RejectReason> {
    let Some(labels) = labels else { return Ok(()) };
    if let Some(name) = labels.get(LABEL_SERVICE_PROXY_NAME) {
        return Err(RejectReason::ServiceProxyName(name.clone()));
    }
    if labels.contains_key(LABEL_HEADLESS) {
        return Err(RejectReason::HeadlessLabel);
    }
    Ok(())
}

/// Converts a Service; rejects it when it is not proxied or invalid.
pub fn service_from_k8s(service: &core::Service) -> Result<Service, Error> {
    let object = object_ref("Service", &service.metadata, true);
    convert_service(service, &object).map_err(|reason| Error::Rejected { object, reason })
}

fn convert_service(service: &core::Service, object: &ObjectRef) -> Result<Service, RejectReason> {
    if object.name.is_empty() {
        return Err(RejectReason::MissingName);
    }
    check_proxy_labels(service.metadata.labels.as_ref())?;
    let spec = service.spec.as_ref().ok_or(RejectReason::MissingSpec)?;
    let service_type = spec.type_.as_deref().unwrap_or("ClusterIP");
    if service_type == "ExternalName" {
        return Err(RejectReason::ExternalName);
    }
    let cluster_ip_texts: Vec<&str> = match (&spec.cluster_ips, &spec.cluster_ip) {
        (Some(ips), _) if !ips.is_empty() => ips.iter().map(String::as_str).collect(),
        (_, Some(ip)) if !ip.is_empty() => vec![ip.as_str()],
        _ => return Err(RejectReason::NoClusterIp),
    };
    if cluster_ip_texts.contains(&"None") {
        return Err(RejectReason::Headless);
    }
    let cluster_ips = cluster_ip_texts
        .iter()
        .map(|ip| parse_ip("spec.clusterIPs", ip))
        .collect::<Result<Vec<_>, _>>()?;
    let external_ips = spec
        .external_ips
        .iter()
        .flatten()
        .map(|ip| parse_ip("spec.externalIPs", ip))
        .collect::<Result<Vec<_>, _>>()?;
    let load_balancer_source_ranges = spec
        .load_balancer_source_ranges
        .iter()
        .flatten()
        .map(|cidr| parse_cidr("spec.loadBalancerSourceRanges", cidr))
        .collect::<Result<Vec<_>, _>>()?;
    let mut load_balancer_ips = Vec::new();
    let ingress = service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref());
    for entry in ingress.into_iter().flatten() {
        // ipMode Proxy: the load balancer proxies to the node, the VIP must not be local.
        if entry.ip_mode.as_deref() == Some("Proxy") {
            continue;
        }
        if let Some(ip) = &entry.ip {
            load_balancer_ips.push(parse_ip("status.loadBalancer.ingress.ip", ip)?);
        }
    }
    let affinity = match spec.session_affinity.as_deref() {
        Some("ClientIP") => {
            let timeout = spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds);
            let timeout_seconds = match timeout {
                None => DEFAULT_AFFINITY_TIMEOUT,
                Some(t @ 1..=MAX_AFFINITY_TIMEOUT) => t.unsigned_abs(),
                Some(t) => return Err(RejectReason::InvalidAffinityTimeout(t)),
            };
            SessionAffinity::ClientIp { timeout_seconds }
        }
        _ => SessionAffinity::None,
    };
    let policy = |p: Option<&str>| match p {
        Some("Local") => TrafficPolicy::Local,
        _ => TrafficPolicy::Cluster,
    };
    let internal_policy = policy(spec.internal_traffic_policy.as_deref());
    let external_policy = policy(spec.external_traffic_policy.as_deref());
    // `spec.trafficDistribution` is not read: as in kube-proxy (pkg/proxy/topology.go,
    // `topologyModeFromHints`), topology follows the EndpointSlice hints alone, which the
    // EndpointSlice controller derives from it.
    let has_node_ports = matches!(service_type, "NodePort" | "LoadBalancer");
    let name = ServiceName {
        namespace: object.namespace.clone(),
        name: object.name.clone(),
    };
    let mut ports = Vec::new();
    for port in spec.ports.iter().flatten() {
        let node_port = match port.node_port {
            Some(0) | None => None,
            Some(n) if has_node_ports => Some(parse_port("spec.ports.nodePort", n)?),
            Some(_) => None,
        };
        ports.push(ServicePort {
            name: ServicePortName {
                service: name.clone(),
                port: port.name.clone().unwrap_or_default(),
                protocol: parse_protocol(port.protocol.as_deref())?,
            },
            port: parse_port("spec.ports.port", port.port)?,
            node_port,
            cluster_ips: cluster_ips.clone(),
            external_ips: external_ips.clone(),
            load_balancer_ips: load_balancer_ips.clone(),
            load_balancer_source_ranges: load_balancer_source_ranges.clone(),
            affinity,
            internal_policy,
            external_policy,
        });
    }
    // kube-proxy's `NeedsHealthCheck`: LoadBalancer with externalTrafficPolicy Local.
    let health_check_node_port = match spec.health_check_node_port {
        Some(n)
            if n != 0
                && service_type == "LoadBalancer"
                && external_policy == TrafficPolicy::Local =>
        {
            Some(parse_port("spec.healthCheckNodePort", n)?)
        }
        _ => None,
    };
    Ok(Service {
        name,
        ports,
        health_check_node_port,
    })
}

/// Converts an EndpointSlice; rejects it when it is not proxied or invalid.
pub fn endpoint_slice_from_k8s(slice: &discovery::EndpointSlice) -> Result<EndpointSlice, Error> {
    let object = object_ref("EndpointSlice", &slice.metadata, true);
    convert_slice(slice, &object).map_err(|reason| Error::Rejected { object, reason })
}

fn convert_slice(
    slice: &discovery::EndpointSlice,
    object: &ObjectRef,
) -> Result<EndpointSlice, RejectReason> {
    if object.name.is_empty() {
        return Err(RejectReason::MissingName);
    }
    let labels = slice.metadata.labels.as_ref();
    let service = labels
        .and_then(|l| l.get(LABEL_SERVICE_NAME))
        .filter(|s| !s.is_empty())
        .ok_or(RejectReason::MissingServiceNameLabel)?;
    check_proxy_labels(labels)?;
    let family = match slice.address_type.as_str() {
        "IPv4" => Family::V4,
        "IPv6" => Family::V6,
        other => return Err(RejectReason::UnsupportedAddressType(other.to_owned())),
    };
    let mut ports = Vec::new();
    for port in slice.ports.iter().flatten() {
        // A port without a number carries no target (kube-proxy skips it too).
        let Some(number) = port.port else { continue };
        ports.push(EndpointPort {
            name: port.name.clone().unwrap_or_default(),
            protocol: parse_protocol(port.protocol.as_deref())?,
            port: parse_port("ports.port", number)?,
        });
    }
    let mut endpoints = Vec::new();
    for endpoint in slice.endpoints.iter().flatten() {
        let Some(first) = endpoint.addresses.first() else {
            continue;
        };
        let address = parse_ip("endpoints.addresses", first)?;
        if Family::of(&address) != family {
            return Err(RejectReason::FamilyMismatch(first.clone()));
        }
        let conditions = endpoint.conditions.as_ref();
        let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
        let hints = endpoint.hints.as_ref();
        endpoints.push(Endpoint {
            address,
            ready,
            serving: conditions.and_then(|c| c.serving).unwrap_or(ready),
            terminating: conditions.and_then(|c| c.terminating).unwrap_or(false),
            node: endpoint.node_name.clone(),
            zone: endpoint.zone.clone(),
            zone_hints: hints
                .and_then(|h| h.for_zones.as_ref())
                .map(|z| z.iter().map(|z| z.name.clone()).collect())
                .unwrap_or_else(BTreeSet::new),
            node_hints: hints
                .and_then(|h| h.for_nodes.as_ref())
                .map(|n| n.iter().map(|n| n.name.clone()).collect())
                .unwrap_or_else(BTreeSet::new),
        });
    }
    Ok(EndpointSlice {
        name: object.name.clone(),
        service: ServiceName {
            namespace: object.namespace.clone(),
            name: service.clone(),
        },
        family,
        ports,
        endpoints,
    })
}

/// Converts a Node.
pub fn node_from_k8s(node: &core::Node) -> Result<Node, Error> {
    let object = object_ref("Node", &node.metadata, false);
    if object.name.is_empty() {
        return Err(Error::Rejected {
            object,
            reason: RejectReason::MissingName,
        });
    }
    let addresses = node.status.as_ref().and_then(|s| s.addresses.as_ref());
    let mut internal_ips = Vec::new();
    for address in addresses.into_iter().flatten() {
        if address.type_ == "InternalIP" {
            match parse_ip("status.addresses", &address.address) {
                Ok(ip) => internal_ips.push(ip),
                Err(reason) => return Err(Error::Rejected { object, reason }),
            }
        }
    }
    let zone = node
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_ZONE))
        .cloned();
    Ok(Node {
        name: object.name,
        internal_ips,
        zone,
    })
}

#[cfg(test)]
mod tests;
