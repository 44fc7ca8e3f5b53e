//! Our view of Services, EndpointSlices and Nodes: only what a service proxy needs, validated.
//!
//! Conversions from `k8s-openapi` are [`service_from_k8s`], [`endpoint_slice_from_k8s`] and
//! [`node_from_k8s`]; the cluster-wide collection with change tracking is [`ClusterState`].

mod convert;
mod names;
mod state;

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

pub use convert::{endpoint_slice_from_k8s, node_from_k8s, service_from_k8s};
/// The transport protocol and address family of ports and slices (the one vocabulary of the
/// workspace, `netlink_base`'s), re-exported so that model objects can be built from here.
pub use netlink_ipvs::{Family, Protocol};
pub use state::{ChangeTally, ClusterState};

/// Defined with the errors (it names objects in messages and Events); part of the model's
/// vocabulary too.
pub use crate::error::ObjectRef;

/// A Service's namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceName {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One port of a Service, as kube-proxy names it: `namespace/name:port-name`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePortName {
    /// The Service.
    pub service: ServiceName,
    /// The port's name (empty for a single unnamed port).
    pub port: String,
    /// The port's protocol (a name may be used once per protocol).
    pub protocol: Protocol,
}

impl fmt::Display for ServicePortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.service, self.port, self.protocol)
    }
}

/// `internalTrafficPolicy` / `externalTrafficPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TrafficPolicy {
    /// Any endpoint in the cluster.
    #[default]
    Cluster,
    /// Only endpoints on this node.
    Local,
}

/// `sessionAffinity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SessionAffinity {
    /// No stickiness.
    #[default]
    None,
    /// Sticky per client IP for `timeout_seconds` (IPVS persistence).
    ClientIp {
        /// `sessionAffinityConfig.clientIP.timeoutSeconds` (default 10800).
        timeout_seconds: u32,
    },
}

/// A Service port with everything that decides its virtual servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// Its name.
    pub name: ServicePortName,
    /// The Service port (`port`).
    pub port: u16,
    /// `nodePort`, if allocated.
    pub node_port: Option<u16>,
    /// `clusterIPs` (one per family).
    pub cluster_ips: Vec<IpAddr>,
    /// `externalIPs`.
    pub external_ips: Vec<IpAddr>,
    /// `status.loadBalancer.ingress[].ip` that are not `ipMode: Proxy`.
    pub load_balancer_ips: Vec<IpAddr>,
    /// `spec.loadBalancerSourceRanges` as (network, prefix length); empty = any source.
    pub load_balancer_source_ranges: Vec<(IpAddr, u8)>,
    /// Session affinity.
    pub affinity: SessionAffinity,
    /// `internalTrafficPolicy`.
    pub internal_policy: TrafficPolicy,
    /// `externalTrafficPolicy`.
    pub external_policy: TrafficPolicy,
}

impl ServicePort {
    /// Whether the port is reachable from outside the cluster (ETP applies).
    pub fn is_external(&self) -> bool {
        self.node_port.is_some()
            || !self.external_ips.is_empty()
            || !self.load_balancer_ips.is_empty()
    }
}

/// A proxied Service: its ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// Namespace and name.
    pub name: ServiceName,
    /// Its ports.
    pub ports: Vec<ServicePort>,
    /// `spec.healthCheckNodePort` of a LoadBalancer Service with `externalTrafficPolicy:
    /// Local` (kube-proxy serves a health check there; `None` otherwise).
    pub health_check_node_port: Option<u16>,
}

/// A port of an EndpointSlice: the target port for the Service port of the same name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointPort {
    /// The Service port's name ("" for unnamed).
    pub name: String,
    /// Protocol.
    pub protocol: Protocol,
    /// The port on the endpoints.
    pub port: u16,
}

/// What an endpoint's conditions say, in the order KEP-1669 uses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum EndpointState {
    /// Ready (and so serving and not terminating).
    Ready,
    /// Terminating; `serving` tells whether it still passes readiness.
    Terminating {
        /// `conditions.serving`.
        serving: bool,
    },
    /// Neither ready nor terminating (starting, or failing readiness).
    NotReady,
}

/// One endpoint of a slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `addresses[0]` (kube-proxy uses only the first).
    pub address: IpAddr,
    /// `conditions.ready` (unset = true).
    pub ready: bool,
    /// `conditions.serving` (unset = true).
    pub serving: bool,
    /// `conditions.terminating` (unset = false).
    pub terminating: bool,
    /// `nodeName` (shared: [`ClusterState`] keeps one copy of each name for all its endpoints).
    pub node: Option<Arc<str>>,
    /// `zone` (shared like `node`).
    pub zone: Option<Arc<str>>,
    /// `hints` (`None`: no hints; boxed, as almost no endpoint has any: 8 bytes a hintless
    /// endpoint instead of two empty sets' 48).
    pub hints: Option<Box<Hints>>,
}

/// The topology hints of an endpoint: `hints.forZones` and `hints.forNodes` names.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Hints {
    /// `hints.forZones` names.
    pub zones: BTreeSet<String>,
    /// `hints.forNodes` names.
    pub nodes: BTreeSet<String>,
}

impl Hints {
    /// The hints of an endpoint with these names: `None` when both are empty, so that an
    /// endpoint without hints has one form.
    pub fn boxed(zones: BTreeSet<String>, nodes: BTreeSet<String>) -> Option<Box<Self>> {
        (!zones.is_empty() || !nodes.is_empty()).then(|| Box::new(Self { zones, nodes }))
    }
}

/// The hint names of an endpoint without hints.
static NO_HINTS: BTreeSet<String> = BTreeSet::new();

impl Endpoint {
    /// A ready endpoint with no topology, for tests and benches.
    pub fn ready(address: IpAddr) -> Self {
        Self {
            address,
            ready: true,
            serving: true,
            terminating: false,
            node: None,
            zone: None,
            hints: None,
        }
    }

    /// `hints.forZones` names (empty = no hints).
    pub fn zone_hints(&self) -> &BTreeSet<String> {
        self.hints.as_ref().map_or(&NO_HINTS, |h| &h.zones)
    }

    /// `hints.forNodes` names (empty = no hints).
    pub fn node_hints(&self) -> &BTreeSet<String> {
        self.hints.as_ref().map_or(&NO_HINTS, |h| &h.nodes)
    }

    /// The KEP-1669 state.
    pub fn state(&self) -> EndpointState {
        if self.ready && !self.terminating {
            EndpointState::Ready
        } else if self.terminating {
            EndpointState::Terminating {
                serving: self.serving,
            }
        } else {
            EndpointState::NotReady
        }
    }
}

/// An EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSlice {
    /// The slice's own name.
    pub name: String,
    /// The Service it belongs to (`kubernetes.io/service-name`).
    pub service: ServiceName,
    /// `addressType`.
    pub family: Family,
    /// Ports (unnamed/portless entries dropped).
    pub ports: Vec<EndpointPort>,
    /// Endpoints.
    pub endpoints: Vec<Endpoint>,
}

/// A Node: the parts a proxy needs of the local one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Name.
    pub name: String,
    /// `status.addresses` of type InternalIP, in order.
    pub internal_ips: Vec<IpAddr>,
    /// `topology.kubernetes.io/zone`.
    pub zone: Option<String>,
}
