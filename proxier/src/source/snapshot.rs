//! Applying a full snapshot of objects (a directory of YAML, a relist) to a [`ClusterState`]
//! so that only what changed is marked dirty, and bad input never removes applied state.

use std::collections::BTreeMap;

use crate::error::Error;
use crate::model::{
    endpoint_slice_from_k8s, node_from_k8s, service_from_k8s, ClusterState, EndpointSlice,
    ObjectRef, Service, ServiceName,
};
use crate::source::{keeps_last_good, KubeObject, SourcePoll};

/// What the last snapshot contributed, by object identity.
#[derive(Debug, Default)]
pub struct SnapshotSync {
    services: BTreeMap<ServiceName, Service>,
    /// Slices by (namespace, name).
    slices: BTreeMap<(String, String), EndpointSlice>,
}

/// Counts of one snapshot, for logs and metrics.
#[derive(Debug, Default)]
pub struct SnapshotReport {
    /// Services and slices added or changed.
    pub upserted: usize,
    /// Services and slices that disappeared.
    pub removed: usize,
    /// Objects skipped: invalid (their last good version, if any, is kept) or not proxied.
    pub skipped: Vec<Error>,
}

impl SnapshotSync {
    /// A sync that has seen nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes `cluster` hold exactly the valid objects of `objects`. An object that is now
    /// invalid keeps its last good version (a typo must not take a Service down); an object
    /// that is absent, or valid but not proxied (headless, another proxy's), is removed.
    pub fn apply(&mut self, objects: &[KubeObject], cluster: &mut ClusterState) -> SnapshotReport {
        let mut report = SnapshotReport::default();
        let mut services = BTreeMap::new();
        let mut slices = BTreeMap::new();
        for object in objects {
            match object {
                KubeObject::Service(raw) => match service_from_k8s(raw, &mut report.skipped) {
                    Ok(service) => {
                        services.insert(service.name.clone(), service);
                    }
                    Err(error) => {
                        if let Some((key, old)) = self.keep_service(&error) {
                            services.insert(key, old);
                        }
                        report.skipped.push(error);
                    }
                },
                KubeObject::EndpointSlice(raw) => match endpoint_slice_from_k8s(raw) {
                    Ok(slice) => {
                        slices.insert((slice.service.namespace.clone(), slice.name.clone()), slice);
                    }
                    Err(error) => {
                        if let Some((key, old)) = self.keep_slice(&error) {
                            slices.insert(key, old);
                        }
                        report.skipped.push(error);
                    }
                },
                KubeObject::Node(raw) => match node_from_k8s(raw) {
                    // A changed Node is a change: its zone may change every plan.
                    Ok(node) if cluster.node(&node.name) != Some(&node) => {
                        cluster.upsert_node(node);
                        report.upserted += 1;
                    }
                    Ok(_) => {}
                    Err(error) => report.skipped.push(error),
                },
            }
        }
        for (name, old) in &self.services {
            if !services.contains_key(name) {
                cluster.remove_service(&old.name);
                report.removed += 1;
            }
        }
        for (key, old) in &self.slices {
            if slices.get(key).is_none_or(|new| new.service != old.service) {
                cluster.remove_slice(&old.service, &old.name);
                report.removed += 1;
            }
        }
        for (name, service) in &services {
            if self.services.get(name) != Some(service) {
                cluster.upsert_service(service.clone());
                report.upserted += 1;
            }
        }
        for (key, slice) in &slices {
            if self.slices.get(key) != Some(slice) {
                cluster.upsert_slice(slice.clone());
                report.upserted += 1;
            }
        }
        self.services = services;
        self.slices = slices;
        report
    }

    /// The snapshot → [`SourcePoll`] adapter of every snapshot-shaped source: applies
    /// `objects` (see [`SnapshotSync::apply`]) and reports them with the `problems` met while
    /// reading them (unparseable documents).
    pub fn poll(
        &mut self,
        objects: &[KubeObject],
        mut problems: Vec<Error>,
        cluster: &mut ClusterState,
    ) -> SourcePoll {
        let report = self.apply(objects, cluster);
        problems.extend(report.skipped);
        SourcePoll {
            changed: report.upserted + report.removed > 0,
            skipped: problems,
            ..SourcePoll::default()
        }
    }

    fn rejected_ref(error: &Error) -> Option<&ObjectRef> {
        match error {
            Error::Rejected { object, .. } if keeps_last_good(error) => Some(object),
            _ => None,
        }
    }

    fn keep_service(&self, error: &Error) -> Option<(ServiceName, Service)> {
        let object = Self::rejected_ref(error)?;
        self.services
            .iter()
            .find(|(name, _)| name.namespace == object.namespace && name.name == object.name)
            .map(|(name, service)| (name.clone(), service.clone()))
    }

    fn keep_slice(&self, error: &Error) -> Option<((String, String), EndpointSlice)> {
        let object = Self::rejected_ref(error)?;
        let key = (object.namespace.clone(), object.name.clone());
        self.slices.get(&key).map(|slice| (key, slice.clone()))
    }
}
