//! Watcher events → [`ClusterState`] changes, without I/O: only objects whose model changed
//! mark their Service dirty; an object that turns invalid keeps its last good version; after a
//! relist (`Init` … `InitDone`, e.g. after 410 Gone) objects that vanished are removed, and
//! only once the relist is complete, so a relist never empties the cluster on the way.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use ::kube::runtime::watcher::Event;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::error::Error;
use crate::model::{
    endpoint_slice_from_k8s, node_from_k8s, service_from_k8s, ClusterState, EndpointSlice, Node,
    Service,
};

/// The annotation the EndpointSlice controller sets to when the change behind a slice update
/// happened (the start of kube-proxy's network programming latency).
pub const LAST_CHANGE_TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// One event of one of the three watches.
#[derive(Debug, Clone)]
#[expect(
    clippy::large_enum_variant,
    reason = "each event is moved once through the channel; boxing would only add allocations"
)]
pub enum WatchEvent {
    /// Services.
    Service(Event<core::Service>),
    /// EndpointSlices.
    EndpointSlice(Event<discovery::EndpointSlice>),
    /// The local Node.
    Node(Event<core::Node>),
}

/// (namespace, name).
type Key = (String, String);

fn key(meta: &ObjectMeta) -> Key {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// What applying events did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Whether a Service or EndpointSlice changed in the cluster.
    pub changed: bool,
    /// Objects skipped (invalid ones keep their last good version).
    pub skipped: Vec<Error>,
    /// `last-change-trigger-time`s of the slices that changed.
    pub triggers: Vec<SystemTime>,
}

/// The state of one kind's watch: last good models and the keys seen by a running relist.
#[derive(Debug)]
struct Tracked<T> {
    objects: BTreeMap<Key, T>,
    relist: Option<BTreeSet<Key>>,
    synced: bool,
}

impl<T> Default for Tracked<T> {
    fn default() -> Self {
        Self {
            objects: BTreeMap::new(),
            relist: None,
            synced: false,
        }
    }
}

/// Applies watcher events of Services, EndpointSlices and the local Node to a cluster.
#[derive(Debug, Default)]
pub struct KubeApplier {
    services: Tracked<Service>,
    slices: Tracked<EndpointSlice>,
    node: Tracked<Node>,
    node_deleting: bool,
}

fn trigger_time(meta: &ObjectMeta) -> Option<SystemTime> {
    let text = meta.annotations.as_ref()?.get(LAST_CHANGE_TRIGGER_TIME)?;
    let ts: k8s_openapi::jiff::Timestamp = text.parse().ok()?;
    Some(SystemTime::from(ts))
}

impl KubeApplier {
    /// An applier that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether each of the three watches has completed its first list (kube-proxy's
    /// "services synced", "endpoint slices synced", and the node).
    pub fn is_synced(&self) -> bool {
        self.services.synced && self.slices.synced && self.node.synced
    }

    /// The local Node, if the API has it.
    pub fn local_node(&self) -> Option<&Node> {
        self.node.objects.values().next()
    }

    /// Whether the local Node is being deleted (its `/healthz` then fails, as kube-proxy's).
    pub fn node_deleting(&self) -> bool {
        self.node_deleting
    }

    /// Applies one event.
    pub fn apply(&mut self, event: WatchEvent, cluster: &mut ClusterState, out: &mut Applied) {
        match event {
            WatchEvent::Service(event) => self.service_event(event, cluster, out),
            WatchEvent::EndpointSlice(event) => self.slice_event(event, cluster, out),
            WatchEvent::Node(event) => self.node_event(event, cluster),
        }
    }

    fn service_event(
        &mut self,
        event: Event<core::Service>,
        cluster: &mut ClusterState,
        out: &mut Applied,
    ) {
        let tracked = &mut self.services;
        match event {
            Event::Init => tracked.relist = Some(BTreeSet::new()),
            Event::InitApply(raw) | Event::Apply(raw) => {
                let key = key(&raw.metadata);
                if let Some(seen) = tracked.relist.as_mut() {
                    seen.insert(key.clone());
                }
                match service_from_k8s(&raw) {
                    Ok(service) => {
                        if tracked.objects.get(&key) != Some(&service) {
                            cluster.upsert_service(service.clone());
                            tracked.objects.insert(key, service);
                            out.changed = true;
                        }
                    }
                    Err(error) => {
                        if !is_invalid(&error) {
                            if let Some(old) = tracked.objects.remove(&key) {
                                cluster.remove_service(&old.name);
                                out.changed = true;
                            }
                        }
                        out.skipped.push(error);
                    }
                }
            }
            Event::Delete(raw) => {
                if let Some(old) = tracked.objects.remove(&key(&raw.metadata)) {
                    cluster.remove_service(&old.name);
                    out.changed = true;
                }
            }
            Event::InitDone => {
                let seen = tracked.relist.take().unwrap_or_default();
                let gone: Vec<Key> = tracked
                    .objects
                    .keys()
                    .filter(|k| !seen.contains(*k))
                    .cloned()
                    .collect();
                for key in gone {
                    if let Some(old) = tracked.objects.remove(&key) {
                        cluster.remove_service(&old.name);
                        out.changed = true;
                    }
                }
                tracked.synced = true;
            }
        }
    }

    fn slice_event(
        &mut self,
        event: Event<discovery::EndpointSlice>,
        cluster: &mut ClusterState,
        out: &mut Applied,
    ) {
        let tracked = &mut self.slices;
        match event {
            Event::Init => tracked.relist = Some(BTreeSet::new()),
            Event::InitApply(raw) | Event::Apply(raw) => {
                let key = key(&raw.metadata);
                if let Some(seen) = tracked.relist.as_mut() {
                    seen.insert(key.clone());
                }
                match endpoint_slice_from_k8s(&raw) {
                    Ok(slice) => {
                        if tracked.objects.get(&key) != Some(&slice) {
                            cluster.upsert_slice(slice.clone());
                            tracked.objects.insert(key, slice);
                            out.changed = true;
                            out.triggers.extend(trigger_time(&raw.metadata));
                        }
                    }
                    Err(error) => {
                        if !is_invalid(&error) {
                            if let Some(old) = tracked.objects.remove(&key) {
                                cluster.remove_slice(&old.service, &old.name);
                                out.changed = true;
                            }
                        }
                        out.skipped.push(error);
                    }
                }
            }
            Event::Delete(raw) => {
                if let Some(old) = tracked.objects.remove(&key(&raw.metadata)) {
                    cluster.remove_slice(&old.service, &old.name);
                    out.changed = true;
                }
            }
            Event::InitDone => {
                let seen = tracked.relist.take().unwrap_or_default();
                let gone: Vec<Key> = tracked
                    .objects
                    .keys()
                    .filter(|k| !seen.contains(*k))
                    .cloned()
                    .collect();
                for key in gone {
                    if let Some(old) = tracked.objects.remove(&key) {
                        cluster.remove_slice(&old.service, &old.name);
                        out.changed = true;
                    }
                }
                tracked.synced = true;
            }
        }
    }

    fn node_event(&mut self, event: Event<core::Node>, cluster: &mut ClusterState) {
        let tracked = &mut self.node;
        match event {
            Event::Init => tracked.relist = Some(BTreeSet::new()),
            Event::InitApply(raw) | Event::Apply(raw) => {
                let key = key(&raw.metadata);
                if let Some(seen) = tracked.relist.as_mut() {
                    seen.insert(key.clone());
                }
                self.node_deleting = raw.metadata.deletion_timestamp.is_some();
                match node_from_k8s(&raw) {
                    Ok(node) => {
                        if let Some(old) = tracked.objects.get(&key) {
                            if old.internal_ips != node.internal_ips || old.zone != node.zone {
                                tracing::warn!(
                                    node = %node.name,
                                    "the node's addresses or zone changed: restart proxier to \
                                     plan for them (kube-proxy restarts too)"
                                );
                            }
                        }
                        cluster.upsert_node(node.clone());
                        tracked.objects.insert(key, node);
                    }
                    Err(error) => tracing::warn!(%error, "local Node unreadable; kept as it was"),
                }
            }
            Event::Delete(_) => self.node_deleting = true,
            Event::InitDone => {
                tracked.relist = None;
                tracked.synced = true;
            }
        }
    }
}

fn is_invalid(error: &Error) -> bool {
    match error {
        Error::Rejected { reason, .. } => reason.is_invalid(),
        _ => true,
    }
}
