//! Watcher events → [`ClusterState`] changes, without I/O: only objects whose model changed
//! mark their Service dirty; an object that turns invalid keeps its last good version; after a
//! relist (`Init` … `InitDone`, e.g. after 410 Gone) objects that vanished are removed, and
//! only once the relist is complete, so a relist never empties the cluster on the way.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::SystemTime;

use ::kube::runtime::watcher::Event;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::error::Error;
use crate::model::{
    endpoint_slice_from_k8s, node_from_k8s, service_from_k8s, ClusterState, EndpointSlice, Node,
    Service, ServiceName,
};
use crate::source::keeps_last_good;

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
    /// The local Node's InternalIPs changed (old, new): the process must restart.
    pub node_addresses_changed: Option<(Vec<IpAddr>, Vec<IpAddr>)>,
}

/// The state of one kind's watch: the keys seen by a running relist. The objects it put
/// into the cluster are the cluster's objects of its kind (their last good models live there,
/// once, with their names: no second copy of 20,000 keys here).
#[derive(Debug, Default)]
struct Tracked {
    relist: Option<BTreeSet<Key>>,
    synced: bool,
}

/// The local Node's watch: the Node itself is small and read by [`KubeApplier::local_node`].
#[derive(Debug, Default)]
struct TrackedNode {
    object: Option<(Key, Node)>,
    relist: Option<BTreeSet<Key>>,
    synced: bool,
}

/// Applies watcher events of Services, EndpointSlices and the local Node to a cluster.
#[derive(Debug, Default)]
pub struct KubeApplier {
    services: Tracked,
    slices: Tracked,
    node: TrackedNode,
    node_deleting: bool,
}

/// The taint the cluster autoscaler puts on a Node it is about to delete (KEP-3836).
pub const TO_BE_DELETED_TAINT: &str = "ToBeDeletedByClusterAutoscaler";

/// Whether a Node may take load-balancer traffic, as kube-proxy's health server decides
/// (`ProxyHealthServer.SyncNode`): not being deleted, and without the
/// [`TO_BE_DELETED_TAINT`] (of any effect). It becomes eligible again when the taint goes.
pub fn node_eligible(node: &core::Node) -> bool {
    let tainted = node
        .spec
        .as_ref()
        .and_then(|spec| spec.taints.as_ref())
        .is_some_and(|taints| taints.iter().any(|t| t.key == TO_BE_DELETED_TAINT));
    node.metadata.deletion_timestamp.is_none() && !tainted
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
        self.node.object.as_ref().map(|(_, node)| node)
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
            WatchEvent::Node(event) => self.node_event(event, cluster, out),
        }
    }

    fn service_event(
        &mut self,
        event: Event<core::Service>,
        cluster: &mut ClusterState,
        out: &mut Applied,
    ) {
        apply_event::<Service>(&mut self.services, event, cluster, out);
    }

    fn slice_event(
        &mut self,
        event: Event<discovery::EndpointSlice>,
        cluster: &mut ClusterState,
        out: &mut Applied,
    ) {
        apply_event::<EndpointSlice>(&mut self.slices, event, cluster, out);
    }

    fn node_event(
        &mut self,
        event: Event<core::Node>,
        cluster: &mut ClusterState,
        out: &mut Applied,
    ) {
        let tracked = &mut self.node;
        match event {
            Event::Init => tracked.relist = Some(BTreeSet::new()),
            Event::InitApply(raw) | Event::Apply(raw) => {
                let key = key(&raw.metadata);
                if let Some(seen) = tracked.relist.as_mut() {
                    seen.insert(key.clone());
                }
                self.node_deleting = !node_eligible(&raw);
                match node_from_k8s(&raw) {
                    Ok(node) => {
                        let old = tracked
                            .object
                            .as_ref()
                            .filter(|(k, _)| *k == key)
                            .map(|(_, node)| node);
                        if let Some(old) = old.filter(|o| o.internal_ips != node.internal_ips) {
                            // kube-proxy exits so that its DaemonSet restarts it.
                            out.node_addresses_changed =
                                Some((old.internal_ips.clone(), node.internal_ips.clone()));
                        }
                        // A zone (label) change re-plans every Service (the engine follows
                        // the Node, as kube-proxy resyncs on a Node update).
                        out.changed |= old != Some(&node);
                        cluster.upsert_node(node.clone());
                        tracked.object = Some((key, node));
                    }
                    Err(error) => {
                        tracing::warn!(error = %error.report(), "local Node unreadable; kept as it was")
                    }
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

/// A proxied kind: how its API object becomes a model and how the model enters the cluster.
trait Proxied: Sized + PartialEq {
    /// The API object.
    type Raw;
    /// Its metadata.
    fn meta(raw: &Self::Raw) -> &ObjectMeta;
    /// The model, or why the object is skipped; entries of it left out alone go to `skipped`.
    fn convert(raw: &Self::Raw, skipped: &mut Vec<Error>) -> Result<Self, Error>;
    /// The cluster's copy of the object `key` (the last good model).
    fn current<'a>(cluster: &'a ClusterState, key: &Key) -> Option<&'a Self>;
    /// The keys of the cluster's objects of this kind.
    fn keys(cluster: &ClusterState) -> impl Iterator<Item = (&str, &str)>;
    /// Puts the model into the cluster.
    fn upsert(self, cluster: &mut ClusterState);
    /// Takes the object `key` out again.
    fn remove(key: &Key, cluster: &mut ClusterState);
    /// Records what an accepted change says beyond the model (EndpointSlice trigger times).
    fn note_change(_raw: &Self::Raw, _out: &mut Applied) {}
}

impl Proxied for Service {
    type Raw = core::Service;
    fn meta(raw: &Self::Raw) -> &ObjectMeta {
        &raw.metadata
    }
    fn convert(raw: &Self::Raw, skipped: &mut Vec<Error>) -> Result<Self, Error> {
        service_from_k8s(raw, skipped)
    }
    fn current<'a>(cluster: &'a ClusterState, key: &Key) -> Option<&'a Self> {
        cluster.service(&ServiceName {
            namespace: key.0.clone(),
            name: key.1.clone(),
        })
    }
    fn keys(cluster: &ClusterState) -> impl Iterator<Item = (&str, &str)> {
        cluster
            .services()
            .map(|s| (s.name.namespace.as_str(), s.name.name.as_str()))
    }
    fn upsert(self, cluster: &mut ClusterState) {
        cluster.upsert_service(self);
    }
    fn remove(key: &Key, cluster: &mut ClusterState) {
        cluster.remove_service(&ServiceName {
            namespace: key.0.clone(),
            name: key.1.clone(),
        });
    }
}

impl Proxied for EndpointSlice {
    type Raw = discovery::EndpointSlice;
    fn meta(raw: &Self::Raw) -> &ObjectMeta {
        &raw.metadata
    }
    fn convert(raw: &Self::Raw, _skipped: &mut Vec<Error>) -> Result<Self, Error> {
        endpoint_slice_from_k8s(raw)
    }
    fn current<'a>(cluster: &'a ClusterState, key: &Key) -> Option<&'a Self> {
        cluster.slice(&key.0, &key.1)
    }
    fn keys(cluster: &ClusterState) -> impl Iterator<Item = (&str, &str)> {
        cluster.slice_names()
    }
    fn upsert(self, cluster: &mut ClusterState) {
        cluster.upsert_slice(self);
    }
    fn remove(key: &Key, cluster: &mut ClusterState) {
        cluster.remove_slice_named(&key.0, &key.1);
    }
    fn note_change(raw: &Self::Raw, out: &mut Applied) {
        out.triggers.extend(trigger_time(&raw.metadata));
    }
}

/// One watcher event of a proxied kind: changed models go in, invalid objects keep their last
/// good version, objects not proxied (headless, another proxy's) and deleted ones go out, and
/// a relist removes what vanished only once it is complete.
fn apply_event<T: Proxied>(
    tracked: &mut Tracked,
    event: Event<T::Raw>,
    cluster: &mut ClusterState,
    out: &mut Applied,
) {
    let mut remove = |key: &Key, cluster: &mut ClusterState| {
        if T::current(cluster, key).is_some() {
            T::remove(key, cluster);
            out.changed = true;
        }
    };
    match event {
        Event::Init => tracked.relist = Some(BTreeSet::new()),
        Event::InitApply(raw) | Event::Apply(raw) => {
            let key = key(T::meta(&raw));
            if let Some(seen) = tracked.relist.as_mut() {
                seen.insert(key.clone());
            }
            match T::convert(&raw, &mut out.skipped) {
                Ok(model) => {
                    if T::current(cluster, &key) != Some(&model) {
                        model.upsert(cluster);
                        out.changed = true;
                        T::note_change(&raw, out);
                    }
                }
                Err(error) => {
                    if !keeps_last_good(&error) {
                        remove(&key, cluster);
                    }
                    out.skipped.push(error);
                }
            }
        }
        Event::Delete(raw) => remove(&key(T::meta(&raw)), cluster),
        Event::InitDone => {
            let seen = tracked.relist.take().unwrap_or_default();
            let gone: Vec<Key> = T::keys(cluster)
                .filter(|(namespace, name)| {
                    !seen.contains(&((*namespace).to_owned(), (*name).to_owned()))
                })
                .map(|(namespace, name)| (namespace.to_owned(), name.to_owned()))
                .collect();
            for key in gone {
                remove(&key, cluster);
            }
            tracked.synced = true;
        }
    }
}
