//! `k8s-openapi` objects → model, rejecting bad objects with a [`RejectReason`].
//!
//! Every check here is one kube-proxy (or the API server's validation) makes; an object that
//! fails one is rejected whole, so its Service keeps its previous state and no other is touched.
//! The exceptions are kube-proxy's too: a bad `externalIPs` entry, LoadBalancer ingress IP or
//! `loadBalancerSourceRanges` entry is skipped alone ([`Error::FieldSkipped`], reported) and the
//! rest of the Service, ClusterIP included, is kept (pkg/proxy/util `MapIPsByIPFamily`,
//! `MapCIDRsByIPFamily`: "Skipping invalid IP").

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use netlink_ipvs::{Family, Protocol};

use super::{
    Endpoint, EndpointPort, EndpointSlice, Hints, Node, ObjectRef, Service, ServiceName,
    ServicePort, ServicePortName, SessionAffinity, TrafficPolicy,
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
    let ip = parse_ip_sloppy(ip).ok_or_else(invalid)?;
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
    parse_ip_sloppy(text).ok_or_else(|| RejectReason::InvalidIp {
        field,
        value: text.to_owned(),
    })
}

/// An IP as kube-proxy reads one (`netutils.ParseIPSloppy`, Go 1.15's `net.ParseIP`): an IPv4
/// part with leading zeros is decimal (`192.168.001.010` is 192.168.1.10), as objects stored
/// before the API server's stricter validation may still hold.
fn parse_ip_sloppy(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    if let Ok(ip) = text.parse() {
        return Some(ip);
    }
    let parts: Vec<&str> = text.split('.').collect();
    if parts.len() != 4 {
        return None;
    }
    let mut octets = [0u8; 4];
    for (octet, part) in octets.iter_mut().zip(&parts) {
        if part.is_empty() || part.len() > 3 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *octet = part.parse().ok()?;
    }
    Some(IpAddr::from(octets))
}

/// The entries of a list field that parse; each one that does not is reported in `skipped`
/// as [`Error::FieldSkipped`] (kube-proxy logs "Skipping invalid IP" and goes on; the runtime
/// logs and the observer counts what is reported here).
fn lenient<'a, T>(
    object: &ObjectRef,
    texts: impl IntoIterator<Item = &'a String>,
    parse: impl Fn(&str) -> Result<T, RejectReason>,
    skipped: &mut Vec<Error>,
) -> Vec<T> {
    let mut out = Vec::new();
    for text in texts {
        match parse(text) {
            Ok(value) => out.push(value),
            Err(reason) => skipped.push(Error::FieldSkipped {
                object: object.clone(),
                reason,
            }),
        }
    }
    out
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

/// Converts a Service; rejects it when it is not proxied or invalid. A bad entry of
/// `externalIPs`, `loadBalancerSourceRanges` or the LoadBalancer ingress IPs is left out alone
/// and reported in `skipped` (as kube-proxy); the rest of the Service is kept.
pub fn service_from_k8s(
    service: &core::Service,
    skipped: &mut Vec<Error>,
) -> Result<Service, Error> {
    let object = object_ref("Service", &service.metadata, true);
    let mut fields = Vec::new();
    match convert_service(service, &object, &mut fields) {
        Ok(converted) => {
            skipped.append(&mut fields);
            Ok(converted)
        }
        Err(reason) => Err(Error::Rejected { object, reason }),
    }
}

fn convert_service(
    service: &core::Service,
    object: &ObjectRef,
    skipped: &mut Vec<Error>,
) -> Result<Service, RejectReason> {
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
    // kube-proxy ignores empty entries without a word (MapIPsByIPFamily).
    let listed = |list: &Option<Vec<String>>| -> Vec<String> {
        list.iter()
            .flatten()
            .filter(|t| !t.trim().is_empty())
            .cloned()
            .collect()
    };
    let external_ips = lenient(
        object,
        &listed(&spec.external_ips),
        |t| parse_ip("spec.externalIPs", t),
        skipped,
    );
    let range_texts = listed(&spec.load_balancer_source_ranges);
    let parse_range = |t: &str| parse_cidr("spec.loadBalancerSourceRanges", t);
    let load_balancer_source_ranges = lenient(object, &range_texts, parse_range, skipped);
    if load_balancer_source_ranges.is_empty() {
        // Every entry bad: leaving them all out would open the firewall to every source (an
        // empty list allows all), so the Service is rejected and keeps its last good version
        // (stricter than kube-proxy, which would allow all).
        if let Some(Err(reason)) = range_texts.first().map(|t| parse_range(t)) {
            return Err(reason);
        }
    }
    let mut ingress_ips = Vec::new();
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
        if let Some(ip) = entry.ip.as_ref().filter(|ip| !ip.is_empty()) {
            ingress_ips.push(ip.clone());
        }
    }
    let load_balancer_ips = lenient(
        object,
        &ingress_ips,
        |t| parse_ip("status.loadBalancer.ingress.ip", t),
        skipped,
    );
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
    // Kept for the Service's lifetime (10,000s of them): no growth slack (a pushed `Vec`
    // starts with room for four ports).
    ports.shrink_to_fit();
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
            // Unset means serving (kube-proxy's endpointslicecache: `Serving == nil ||
            // *Serving`), whatever `ready` says.
            serving: conditions.and_then(|c| c.serving).unwrap_or(true),
            terminating: conditions.and_then(|c| c.terminating).unwrap_or(false),
            node: endpoint.node_name.as_deref().map(Arc::from),
            zone: endpoint.zone.as_deref().map(Arc::from),
            hints: Hints::boxed(
                hints
                    .and_then(|h| h.for_zones.as_ref())
                    .map(|z| z.iter().map(|z| z.name.clone()).collect())
                    .unwrap_or_else(BTreeSet::new),
                hints
                    .and_then(|h| h.for_nodes.as_ref())
                    .map(|n| n.iter().map(|n| n.name.clone()).collect())
                    .unwrap_or_else(BTreeSet::new),
            ),
        });
    }
    // Kept for the slice's lifetime (10,000s of them): no growth slack.
    ports.shrink_to_fit();
    endpoints.shrink_to_fit();
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
