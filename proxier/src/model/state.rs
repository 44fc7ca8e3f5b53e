//! [`ClusterState`]: every proxied Service and its EndpointSlices, with the set of Services
//! changed since the last plan.

use std::collections::{BTreeMap, BTreeSet};

use super::{EndpointSlice, Node, Service, ServiceName};

/// What the sources know about the cluster, in model form.
///
/// Every mutation records the Service it affects in the dirty set, which
/// [`crate::plan::Planner::replan`] drains.
#[derive(Debug, Clone, Default)]
pub struct ClusterState {
    services: BTreeMap<ServiceName, Service>,
    slices: BTreeMap<ServiceName, BTreeMap<String, EndpointSlice>>,
    /// (namespace, slice name) → the Service the slice currently belongs to.
    slice_owner: BTreeMap<(String, String), ServiceName>,
    nodes: BTreeMap<String, Node>,
    dirty: BTreeSet<ServiceName>,
}

impl ClusterState {
    /// An empty cluster.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a Service.
    pub fn upsert_service(&mut self, service: Service) {
        self.dirty.insert(service.name.clone());
        self.services.insert(service.name.clone(), service);
    }

    /// Removes a Service (its slices stay until they are deleted, as in the API).
    pub fn remove_service(&mut self, name: &ServiceName) {
        if self.services.remove(name).is_some() {
            self.dirty.insert(name.clone());
        }
    }

    /// Adds or replaces an EndpointSlice (by namespace and slice name).
    pub fn upsert_slice(&mut self, slice: EndpointSlice) {
        // A slice may be relabelled to another Service: drop it from its old one first.
        let key = (slice.service.namespace.clone(), slice.name.clone());
        if let Some(old) = self.slice_owner.get(&key).cloned() {
            if old != slice.service {
                self.remove_slice(&old, &slice.name);
            }
        }
        self.slice_owner.insert(key, slice.service.clone());
        self.dirty.insert(slice.service.clone());
        self.slices
            .entry(slice.service.clone())
            .or_default()
            .insert(slice.name.clone(), slice);
    }

    /// Removes an EndpointSlice.
    pub fn remove_slice(&mut self, service: &ServiceName, slice_name: &str) {
        if let Some(slices) = self.slices.get_mut(service) {
            if slices.remove(slice_name).is_some() {
                self.slice_owner
                    .remove(&(service.namespace.clone(), slice_name.to_owned()));
                self.dirty.insert(service.clone());
            }
            if slices.is_empty() {
                self.slices.remove(service);
            }
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

    /// All Services, by name.
    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.services.values()
    }

    /// The EndpointSlices of a Service, by slice name.
    pub fn slices(&self, name: &ServiceName) -> impl Iterator<Item = &EndpointSlice> + Clone {
        self.slices.get(name).into_iter().flat_map(|s| s.values())
    }

    /// Takes the set of Services changed since the last call.
    pub fn take_dirty(&mut self) -> BTreeSet<ServiceName> {
        std::mem::take(&mut self.dirty)
    }
}
