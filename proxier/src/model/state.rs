//! [`ClusterState`]: every proxied Service and its EndpointSlices, with the set of Services
//! changed since the last plan, and the tally of changes kube-proxy's change metrics count.

use std::collections::{BTreeMap, BTreeSet};

use netlink_ipvs::Family;

use super::names::SharedNames;
use super::{EndpointSlice, Node, Service, ServiceName};

/// What changed in a [`ClusterState`], per address family (kube-proxy keeps one change
/// tracker per family: a dual-stack Service counts in both).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeTally {
    /// Service changes since the tally was last taken ([`ClusterState::take_changes`]).
    pub service_changes: BTreeMap<Family, u64>,
    /// EndpointSlice changes since the tally was last taken.
    pub endpoint_changes: BTreeMap<Family, u64>,
    /// Services whose Service object changed since the last plan, per family.
    pub services_pending: BTreeMap<Family, u64>,
    /// Services whose EndpointSlices changed since the last plan, per family.
    pub endpoints_pending: BTreeMap<Family, u64>,
}

/// Changes since the last plan (pending) and since the last [`ClusterState::take_changes`].
#[derive(Debug, Clone, Default)]
struct Changes {
    services: BTreeMap<Family, u64>,
    endpoints: BTreeMap<Family, u64>,
    services_pending: BTreeSet<(Family, ServiceName)>,
    endpoints_pending: BTreeSet<(Family, ServiceName)>,
}

impl Changes {
    fn service(&mut self, service: &Service) {
        let mut families: Vec<Family> = service
            .ports
            .iter()
            .flat_map(|p| p.cluster_ips.iter().map(Family::of))
            .collect();
        families.sort_unstable();
        families.dedup();
        for family in families {
            *self.services.entry(family).or_default() += 1;
            self.services_pending.insert((family, service.name.clone()));
        }
    }

    fn slice(&mut self, family: Family, service: &ServiceName) {
        *self.endpoints.entry(family).or_default() += 1;
        self.endpoints_pending.insert((family, service.clone()));
    }
}

fn per_family<'a>(
    pending: impl Iterator<Item = &'a (Family, ServiceName)>,
) -> BTreeMap<Family, u64> {
    let mut counts = BTreeMap::new();
    for (family, _) in pending {
        *counts.entry(*family).or_default() += 1;
    }
    counts
}

/// What the sources know about the cluster, in model form.
///
/// Every mutation records the Service it affects in the dirty set, which
/// [`crate::plan::Planner::replan`] drains.
#[derive(Debug, Clone, Default)]
pub struct ClusterState {
    services: BTreeMap<ServiceName, Service>,
    /// The slices of each Service, sorted by name: a Service has a few, and a B-tree node per
    /// Service would hold room for eleven.
    slices: BTreeMap<ServiceName, Vec<EndpointSlice>>,
    /// (namespace, slice name) → the Service the slice currently belongs to.
    slice_owner: BTreeMap<(String, String), ServiceName>,
    nodes: BTreeMap<String, Node>,
    dirty: BTreeSet<ServiceName>,
    changes: Changes,
    /// The endpoints' node and zone names, one copy each.
    names: SharedNames,
}

impl ClusterState {
    /// An empty cluster.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a Service.
    pub fn upsert_service(&mut self, service: Service) {
        self.changes.service(&service);
        self.dirty.insert(service.name.clone());
        self.services.insert(service.name.clone(), service);
    }

    /// Removes a Service (its slices stay until they are deleted, as in the API).
    pub fn remove_service(&mut self, name: &ServiceName) {
        if let Some(service) = self.services.remove(name) {
            self.changes.service(&service);
            self.dirty.insert(name.clone());
        }
    }

    /// Adds or replaces an EndpointSlice (by namespace and slice name).
    pub fn upsert_slice(&mut self, slice: EndpointSlice) {
        let mut slice = slice;
        self.names.share(&mut slice);
        // A slice may be relabelled to another Service: drop it from its old one first.
        let key = (slice.service.namespace.clone(), slice.name.clone());
        if let Some(old) = self.slice_owner.get(&key).cloned() {
            if old != slice.service {
                self.remove_slice(&old, &slice.name);
            }
        }
        self.slice_owner.insert(key, slice.service.clone());
        self.changes.slice(slice.family, &slice.service);
        self.dirty.insert(slice.service.clone());
        let slices = self.slices.entry(slice.service.clone()).or_default();
        match slices.binary_search_by(|s| s.name.as_str().cmp(&slice.name)) {
            Ok(at) => slices[at] = slice,
            Err(at) => {
                slices.insert(at, slice);
                // Most Services have one slice: no growth slack kept per Service.
                slices.shrink_to_fit();
            }
        }
    }

    /// Removes an EndpointSlice.
    pub fn remove_slice(&mut self, service: &ServiceName, slice_name: &str) {
        if let Some(slices) = self.slices.get_mut(service) {
            if let Ok(at) = slices.binary_search_by(|s| s.name.as_str().cmp(slice_name)) {
                let slice = slices.remove(at);
                self.changes.slice(slice.family, service);
                self.slice_owner
                    .remove(&(service.namespace.clone(), slice_name.to_owned()));
                self.dirty.insert(service.clone());
            }
            if slices.is_empty() {
                self.slices.remove(service);
            }
        }
    }

    /// Removes the EndpointSlice `name` of `namespace`, whichever Service it belongs to.
    pub fn remove_slice_named(&mut self, namespace: &str, name: &str) {
        if let Some(service) = self
            .slice_owner
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
        {
            self.remove_slice(&service, name);
        }
    }

    /// Adds or replaces a Node. Node changes do not dirty Services: the caller re-plans
    /// everything when the local node's zone or addresses change.
    pub fn upsert_node(&mut self, node: Node) {
        self.nodes.insert(node.name.clone(), node);
    }

    /// Marks every Service changed (the local node's zone changed: every plan may differ).
    pub fn mark_all_dirty(&mut self) {
        self.dirty.extend(self.services.keys().cloned());
    }

    /// A Node by name.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.get(name)
    }

    /// A Service by name.
    pub fn service(&self, name: &ServiceName) -> Option<&Service> {
        self.services.get(name)
    }

    /// The EndpointSlice `name` of `namespace`, whichever Service it belongs to.
    pub fn slice(&self, namespace: &str, name: &str) -> Option<&EndpointSlice> {
        let service = self
            .slice_owner
            .get(&(namespace.to_owned(), name.to_owned()))?;
        self.slices.get(service)?.iter().find(|s| s.name == name)
    }

    /// All Services, by name.
    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.services.values()
    }

    /// The (namespace, name) of every EndpointSlice, in that order.
    pub fn slice_names(&self) -> impl Iterator<Item = (&str, &str)> {
        self.slice_owner
            .keys()
            .map(|(namespace, name)| (namespace.as_str(), name.as_str()))
    }

    /// The EndpointSlices of a Service, by slice name.
    pub fn slices(&self, name: &ServiceName) -> impl Iterator<Item = &EndpointSlice> + Clone {
        self.slices.get(name).into_iter().flatten()
    }

    /// Takes the set of Services changed since the last call.
    /// Planning it also settles the pending changes of `ClusterState::changes`.
    pub fn take_dirty(&mut self) -> BTreeSet<ServiceName> {
        self.changes.services_pending.clear();
        self.changes.endpoints_pending.clear();
        std::mem::take(&mut self.dirty)
    }

    /// The changes counted since the last call, and those not planned yet (kube-proxy's
    /// `sync_proxy_rules_{service,endpoint}_changes_{total,pending}`).
    pub fn take_changes(&mut self) -> ChangeTally {
        ChangeTally {
            service_changes: std::mem::take(&mut self.changes.services),
            endpoint_changes: std::mem::take(&mut self.changes.endpoints),
            services_pending: per_family(self.changes.services_pending.iter()),
            endpoints_pending: per_family(self.changes.endpoints_pending.iter()),
        }
    }
}
