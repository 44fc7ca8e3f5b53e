//! Which endpoints a virtual server sends new connections to: kube-proxy's
//! `CategorizeEndpoints` (pkg/proxy/topology.go) with KEP-1669 terminating-endpoint fallback.

use std::collections::BTreeMap;

use netlink_ipvs::{Family, RealServerKey};

use crate::model::{Endpoint, EndpointSlice, EndpointState, ServicePort};

/// An endpoint of one Service port with its resolved target port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortEndpoint {
    /// Address and target port.
    pub key: RealServerKey,
    /// The endpoint.
    pub endpoint: Endpoint,
}

/// The endpoints of `port` in `family`: target ports resolved through the slices' port names
/// (name and protocol must match, as kube-proxy's EndpointSliceCache keys them), deduplicated
/// across slices by address:port; addresses that are not [`super::routable`] are skipped. A
/// duplicate keeps the better state (ready over terminating
/// over not ready); on a tie the first slice by name wins.
pub fn port_endpoints<'a>(
    port: &ServicePort,
    family: Family,
    slices: impl Iterator<Item = &'a EndpointSlice>,
) -> Vec<PortEndpoint> {
    let mut by_key: BTreeMap<RealServerKey, Endpoint> = BTreeMap::new();
    for slice in slices.filter(|s| s.family == family) {
        let Some(target) = slice
            .ports
            .iter()
            .find(|p| p.name == port.name.port && p.protocol == port.name.protocol)
        else {
            continue;
        };
        for endpoint in slice
            .endpoints
            .iter()
            .filter(|e| super::routable(&e.address))
        {
            let key = RealServerKey {
                address: endpoint.address,
                port: target.port,
            };
            match by_key.get(&key) {
                Some(existing) if existing.state() <= endpoint.state() => {}
                _ => {
                    by_key.insert(key, endpoint.clone());
                }
            }
        }
    }
    by_key
        .into_iter()
        .map(|(key, endpoint)| PortEndpoint { key, endpoint })
        .collect()
}

/// Where this node is, for locality and topology decisions.
#[derive(Debug, Clone, Copy)]
pub struct Locality<'a> {
    /// The node's name.
    pub node: &'a str,
    /// The node's zone, if labelled.
    pub zone: Option<&'a str>,
}

impl Locality<'_> {
    /// Whether `endpoint` runs on this node.
    pub fn is_local(&self, endpoint: &Endpoint) -> bool {
        endpoint.node.as_deref() == Some(self.node)
    }
}

/// The endpoints chosen for new connections, as flags parallel to the input slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Categorized {
    /// For traffic under the Cluster policy (`None` when no traffic uses it).
    pub cluster: Option<Vec<bool>>,
    /// For traffic under the Local policy (`None` when no traffic uses it).
    pub local: Option<Vec<bool>>,
}

/// KEP-1669 choice within a candidate set: ready endpoints; if there are none, the serving
/// terminating ones (kube-proxy `CategorizeEndpoints`, ProxyTerminatingEndpoints).
fn ready_else_serving_terminating(
    endpoints: &[PortEndpoint],
    candidate: impl Fn(&Endpoint) -> bool,
) -> Vec<bool> {
    let ready: Vec<bool> = endpoints
        .iter()
        .map(|e| candidate(&e.endpoint) && e.endpoint.state() == EndpointState::Ready)
        .collect();
    if ready.contains(&true) {
        return ready;
    }
    endpoints
        .iter()
        .map(|e| {
            candidate(&e.endpoint)
                && e.endpoint.state() == EndpointState::Terminating { serving: true }
        })
        .collect()
}

/// kube-proxy `canUseTopology`: hints are used only when every ready endpoint has them and at
/// least one is for us; node hints (PreferSameNode) win over zone hints.
enum Topology {
    None,
    Node,
    Zone,
}

fn topology(endpoints: &[PortEndpoint], here: Locality<'_>) -> Topology {
    let ready = || {
        endpoints
            .iter()
            .map(|e| &e.endpoint)
            .filter(|e| e.state() == EndpointState::Ready)
    };
    if ready().next().is_none() {
        return Topology::None;
    }
    let all_node_hints = ready().all(|e| !e.node_hints().is_empty());
    if all_node_hints && ready().any(|e| e.node_hints().contains(here.node)) {
        return Topology::Node;
    }
    let Some(zone) = here.zone else {
        return Topology::None;
    };
    let all_zone_hints = ready().all(|e| !e.zone_hints().is_empty());
    if all_zone_hints && ready().any(|e| e.zone_hints().contains(zone)) {
        return Topology::Zone;
    }
    Topology::None
}

/// Chooses the endpoints for the Cluster and the Local traffic policy of `port`.
///
/// `uses_cluster` / `uses_local` say which policies any of the port's virtual servers use.
pub fn categorize(
    endpoints: &[PortEndpoint],
    here: Locality<'_>,
    uses_cluster: bool,
    uses_local: bool,
) -> Categorized {
    let cluster = uses_cluster.then(|| {
        let mode = topology(endpoints, here);
        ready_else_serving_terminating(endpoints, |e| match mode {
            Topology::None => true,
            Topology::Node => e.node_hints().contains(here.node),
            Topology::Zone => here.zone.is_some_and(|z| e.zone_hints().contains(z)),
        })
    });
    let local = uses_local.then(|| ready_else_serving_terminating(endpoints, |e| here.is_local(e)));
    Categorized { cluster, local }
}
