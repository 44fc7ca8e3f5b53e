//! Applying a full snapshot of objects (a file of YAML, a relist) to a [`ClusterState`]
//! so that only what changed is marked dirty, and bad input never removes applied state.
//!
//! A sync keeps only the identities of what its snapshot contributed: the models themselves
//! live once, in the cluster, and each new object is compared with the cluster's copy.

use std::collections::BTreeSet;

use crate::error::Error;
use crate::model::{
    endpoint_slice_from_k8s, node_from_k8s, service_from_k8s, ClusterState, ObjectRef, ServiceName,
};
use crate::source::{keeps_last_good, KubeObject, SourcePoll};

/// An EndpointSlice's identity: (namespace, name).
pub(crate) type SliceKey = (String, String);

/// An object a snapshot stopped holding (see [`SnapshotReport`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Withdrawn {
    Service(ServiceName),
    Slice(SliceKey),
}

/// What the last snapshot contributed, by object identity.
#[derive(Debug, Default)]
pub struct SnapshotSync {
    services: BTreeSet<ServiceName>,
    slices: BTreeSet<SliceKey>,
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
    /// The objects removed, for a caller that merges several snapshots (the file source).
    pub(crate) withdrawn: Vec<Withdrawn>,
}

impl SnapshotSync {
    /// A sync that has seen nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes `cluster` hold exactly the valid objects of `objects`. An object that is now
    /// invalid keeps its last good version (a typo must not take a Service down); an object
    /// that is absent, or valid but not proxied (headless, another proxy's), is removed.
    /// Only objects that differ from the cluster's copy are written (and so marked dirty).
    pub fn apply(&mut self, objects: &[KubeObject], cluster: &mut ClusterState) -> SnapshotReport {
        let mut report = SnapshotReport::default();
        let mut services = BTreeSet::new();
        let mut slices = BTreeSet::new();
        for object in objects {
            match object {
                KubeObject::Service(raw) => match service_from_k8s(raw, &mut report.skipped) {
                    Ok(service) => {
                        services.insert(service.name.clone());
                        if cluster.service(&service.name) != Some(&service) {
                            cluster.upsert_service(service);
                            report.upserted += 1;
                        }
                    }
                    Err(error) => {
                        if let Some(name) = self.kept_service(&error) {
                            services.insert(name);
                        }
                        report.skipped.push(error);
                    }
                },
                KubeObject::EndpointSlice(raw) => match endpoint_slice_from_k8s(raw) {
                    Ok(slice) => {
                        let key = (slice.service.namespace.clone(), slice.name.clone());
                        if cluster.slice(&key.0, &key.1) != Some(&slice) {
                            cluster.upsert_slice(slice);
                            report.upserted += 1;
                        }
                        slices.insert(key);
                    }
                    Err(error) => {
                        if let Some(key) = self.kept_slice(&error) {
                            slices.insert(key);
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
        for name in self.services.difference(&services) {
            if cluster.service(name).is_some() {
                cluster.remove_service(name);
                report.removed += 1;
            }
            report.withdrawn.push(Withdrawn::Service(name.clone()));
        }
        for key in self.slices.difference(&slices) {
            if cluster.slice(&key.0, &key.1).is_some() {
                cluster.remove_slice_named(&key.0, &key.1);
                report.removed += 1;
            }
            report.withdrawn.push(Withdrawn::Slice(key.clone()));
        }
        self.services = services;
        self.slices = slices;
        report
    }

    /// Whether the last snapshot held `object`.
    pub(crate) fn holds(&self, object: &Withdrawn) -> bool {
        match object {
            Withdrawn::Service(name) => self.services.contains(name),
            Withdrawn::Slice(key) => self.slices.contains(key),
        }
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

    fn kept_service(&self, error: &Error) -> Option<ServiceName> {
        let object = Self::rejected_ref(error)?;
        let name = ServiceName {
            namespace: object.namespace.clone(),
            name: object.name.clone(),
        };
        self.services.contains(&name).then_some(name)
    }

    fn kept_slice(&self, error: &Error) -> Option<SliceKey> {
        let object = Self::rejected_ref(error)?;
        let key = (object.namespace.clone(), object.name.clone());
        self.slices.contains(&key).then_some(key)
    }
}
