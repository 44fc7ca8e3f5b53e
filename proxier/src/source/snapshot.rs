//! Applying a full snapshot of objects (a file of YAML, a relist) to a [`ClusterState`]
//! so that only what changed is marked dirty, and bad input never removes applied state.
//!
//! A sync keeps only the identities of what its snapshot contributed: the models themselves
//! live once, in the cluster, and each new object is compared with the cluster's copy. Each
//! identity remembers the digest of the document it came from, so that the file source can
//! hand over only a file's changed documents and name the unchanged ones
//! ([`SnapshotSync::apply_documents`]).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use crate::error::Error;
use crate::model::{
    endpoint_slice_from_k8s, node_from_k8s, service_from_k8s, ClusterState, ObjectRef, ServiceName,
};
use crate::source::{keeps_last_good, KubeObject, SourcePoll};

/// An EndpointSlice's identity: (namespace, name).
pub(crate) type SliceKey = (String, String);

/// An object's identity in a snapshot; in [`SnapshotReport`], one the snapshot stopped holding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Withdrawn {
    Service(ServiceName),
    Slice(SliceKey),
}

/// The digest of the document an object came from ([`crate::yaml::split::digest`]; 0 for a
/// snapshot handed over whole).
pub(crate) type Digest = u64;

/// What the last snapshot contributed, by object identity, with the document each came from.
#[derive(Debug, Default)]
pub struct SnapshotSync {
    services: BTreeMap<ServiceName, Digest>,
    slices: BTreeMap<SliceKey, Digest>,
}

/// One document of a snapshot handed over by parts ([`SnapshotSync::apply_documents`]).
#[derive(Debug)]
pub(crate) enum DocumentPart<'a> {
    /// A document the last snapshot held with the same bytes: its objects stay as they are.
    Unchanged(Digest),
    /// A new or changed document and its objects.
    Parsed(Digest, &'a [KubeObject]),
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
    /// Whether two different documents hold the same object: which version wins depends on
    /// their order, which only a snapshot handed over whole keeps.
    pub(crate) duplicated: bool,
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
        self.apply_documents(&[DocumentPart::Parsed(0, objects)], cluster)
    }

    /// [`SnapshotSync::apply`] of a snapshot handed over by documents: the objects of
    /// [`DocumentPart::Unchanged`] documents are neither read nor compared, they stay (with
    /// their last good version when they were invalid); everything else is as `apply`.
    pub(crate) fn apply_documents(
        &mut self,
        parts: &[DocumentPart<'_>],
        cluster: &mut ClusterState,
    ) -> SnapshotReport {
        let mut report = SnapshotReport::default();
        let mut unchanged = HashSet::new();
        let mut parsed = HashSet::new();
        for part in parts {
            match part {
                DocumentPart::Unchanged(digest) => unchanged.insert(*digest),
                DocumentPart::Parsed(digest, _) => parsed.insert(*digest),
            };
        }
        // What came from documents that changed or went: withdrawn unless held again. The
        // rest stays as it is, neither copied nor compared.
        let mut gone_services: BTreeSet<ServiceName> = (self.services.iter())
            .filter(|(_, digest)| !unchanged.contains(*digest))
            .map(|(name, _)| name.clone())
            .collect();
        let mut gone_slices: BTreeSet<SliceKey> = (self.slices.iter())
            .filter(|(_, digest)| !unchanged.contains(*digest))
            .map(|(key, _)| key.clone())
            .collect();
        for part in parts {
            let DocumentPart::Parsed(digest, objects) = part else {
                continue;
            };
            for object in *objects {
                let previous = match self.upsert(object, cluster, &mut report) {
                    Some(Withdrawn::Service(name)) => {
                        gone_services.remove(&name);
                        self.services.insert(name, *digest)
                    }
                    Some(Withdrawn::Slice(key)) => {
                        gone_slices.remove(&key);
                        self.slices.insert(key, *digest)
                    }
                    None => None,
                };
                // Held by another document of this snapshot too.
                report.duplicated |= previous.is_some_and(|d| {
                    d != *digest && (unchanged.contains(&d) || parsed.contains(&d))
                });
            }
        }
        for name in gone_services {
            self.services.remove(&name);
            if cluster.service(&name).is_some() {
                cluster.remove_service(&name);
                report.removed += 1;
            }
            report.withdrawn.push(Withdrawn::Service(name));
        }
        for key in gone_slices {
            self.slices.remove(&key);
            if cluster.slice(&key.0, &key.1).is_some() {
                cluster.remove_slice_named(&key.0, &key.1);
                report.removed += 1;
            }
            report.withdrawn.push(Withdrawn::Slice(key));
        }
        report
    }

    /// Writes `object` to `cluster` if it is valid and differs from the cluster's copy, and
    /// returns the identity it holds in the new snapshot: its own, or for an invalid object
    /// the one of its last good version, if the last snapshot held it.
    fn upsert(
        &self,
        object: &KubeObject,
        cluster: &mut ClusterState,
        report: &mut SnapshotReport,
    ) -> Option<Withdrawn> {
        match object {
            KubeObject::Service(raw) => match service_from_k8s(raw, &mut report.skipped) {
                Ok(service) => {
                    let name = service.name.clone();
                    if cluster.service(&service.name) != Some(&service) {
                        cluster.upsert_service(service);
                        report.upserted += 1;
                    }
                    Some(Withdrawn::Service(name))
                }
                Err(error) => {
                    let kept = self.kept_service(&error).map(Withdrawn::Service);
                    report.skipped.push(error);
                    kept
                }
            },
            KubeObject::EndpointSlice(raw) => match endpoint_slice_from_k8s(raw) {
                Ok(slice) => {
                    let key = (slice.service.namespace.clone(), slice.name.clone());
                    if cluster.slice(&key.0, &key.1) != Some(&slice) {
                        cluster.upsert_slice(slice);
                        report.upserted += 1;
                    }
                    Some(Withdrawn::Slice(key))
                }
                Err(error) => {
                    let kept = self.kept_slice(&error).map(Withdrawn::Slice);
                    report.skipped.push(error);
                    kept
                }
            },
            KubeObject::Node(raw) => {
                match node_from_k8s(raw) {
                    // A changed Node is a change: its zone may change every plan.
                    Ok(node) if cluster.node(&node.name) != Some(&node) => {
                        cluster.upsert_node(node);
                        report.upserted += 1;
                    }
                    Ok(_) => {}
                    Err(error) => report.skipped.push(error),
                }
                None
            }
        }
    }

    /// Whether the last snapshot held `object`.
    pub(crate) fn holds(&self, object: &Withdrawn) -> bool {
        match object {
            Withdrawn::Service(name) => self.services.contains_key(name),
            Withdrawn::Slice(key) => self.slices.contains_key(key),
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
        self.services.contains_key(&name).then_some(name)
    }

    fn kept_slice(&self, error: &Error) -> Option<SliceKey> {
        let object = Self::rejected_ref(error)?;
        let key = (object.namespace.clone(), object.name.clone());
        self.slices.contains_key(&key).then_some(key)
    }
}
