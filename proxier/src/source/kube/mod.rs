//! The Kubernetes API as a [`Source`]: watches of Services and EndpointSlices (with
//! kube-proxy's label selector) and of the local Node (field selector), each restarted by the
//! watcher's backoff on errors (410 Gone → relist, disconnects → re-watch) without any effect
//! on the kernel. Events are queued by background tasks and applied by
//! [`KubeSource::poll_changes`] without blocking.
//!
//! No reflector store is kept: [`KubeApplier`] already holds the last good model of every
//! object, and readiness ("services synced", "endpoint slices synced") is the first `InitDone`
//! of each watch, which is what a store's `wait_until_ready` means.

mod apply;
#[cfg(test)]
mod tests;

pub use apply::{
    node_eligible, Applied, KubeApplier, WatchEvent, LAST_CHANGE_TRIGGER_TIME, TO_BE_DELETED_TAINT,
};

use std::time::Duration;

use ::kube::runtime::{watcher, WatchStreamExt};
use ::kube::{Api, Client};
use futures::StreamExt;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use tokio::sync::mpsc;

use crate::error::Error;
use crate::model::{ClusterState, Node};
use crate::source::{Source, SourcePoll};

/// kube-proxy's selector for Services and EndpointSlices: not headless, not another proxy's.
pub const PROXY_LABEL_SELECTOR: &str =
    "!service.kubernetes.io/headless,!service.kubernetes.io/service-proxy-name";

/// How many watch events may wait for [`KubeSource::poll_changes`]; a watch that gets
/// further ahead waits (its stream is not read), so a burst of API events costs bounded
/// memory. Two pages of the initial list (the watcher lists 500 objects a page): the events
/// hold whole API objects, decoded on the runtime's workers: with the old bound (4,096) filled
/// during the lists, RSS after the start of 10,000 Services was about 5 MB higher (host).
pub const WATCH_QUEUE: usize = 1024;

/// Watches of the API server, applied to a [`ClusterState`] when polled.
#[derive(Debug)]
pub struct KubeSource {
    receiver: mpsc::Receiver<WatchEvent>,
    applier: KubeApplier,
}

fn forward<K, F>(
    api: Api<K>,
    config: watcher::Config,
    sender: mpsc::Sender<WatchEvent>,
    wrap: F,
    what: &'static str,
) where
    K: ::kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    F: Fn(watcher::Event<K>) -> WatchEvent + Send + 'static,
{
    tokio::spawn(async move {
        let stream = watcher(api, config).default_backoff();
        futures::pin_mut!(stream);
        while let Some(item) = stream.next().await {
            match item {
                Ok(event) => {
                    if sender.send(wrap(event)).await.is_err() {
                        return; // the source is gone
                    }
                }
                // The backoff retries; the kernel keeps its state meanwhile.
                Err(error) => tracing::warn!(%error, watch = what, "watch failed; retrying"),
            }
        }
    });
}

impl KubeSource {
    /// Starts the three watches for node `node`. Must be called inside a tokio runtime.
    pub fn start(client: Client, node: &str) -> Self {
        let (sender, receiver) = mpsc::channel(WATCH_QUEUE);
        let selected = watcher::Config::default().labels(PROXY_LABEL_SELECTOR);
        forward(
            Api::<core::Service>::all(client.clone()),
            selected.clone(),
            sender.clone(),
            WatchEvent::Service,
            "services",
        );
        forward(
            Api::<discovery::EndpointSlice>::all(client.clone()),
            selected,
            sender.clone(),
            WatchEvent::EndpointSlice,
            "endpointslices",
        );
        forward(
            Api::<core::Node>::all(client),
            watcher::Config::default().fields(&format!("metadata.name={node}")),
            sender,
            WatchEvent::Node,
            "node",
        );
        Self::from_channel(receiver)
    }

    /// A source fed by `receiver` (tests feed synthetic watcher events here).
    pub fn from_channel(receiver: mpsc::Receiver<WatchEvent>) -> Self {
        Self {
            receiver,
            applier: KubeApplier::new(),
        }
    }

    /// Applies events to `cluster` until every watch has completed its first list; logs
    /// what it waits for every `progress` period.
    pub async fn wait_until_synced(
        &mut self,
        cluster: &mut ClusterState,
        progress: Duration,
    ) -> Result<SourcePoll, Error> {
        let mut applied = Applied::default();
        while !self.applier.is_synced() {
            match tokio::time::timeout(progress, self.receiver.recv()).await {
                Ok(Some(event)) => self.applier.apply(event, cluster, &mut applied),
                Ok(None) => return Err(closed()),
                Err(_) => tracing::info!(
                    "waiting for the API server: services, endpoint slices and node not synced yet"
                ),
            }
        }
        if let Some((old, new)) = applied.node_addresses_changed.take() {
            return Err(Error::NodeAddressesChanged { old, new });
        }
        Ok(self.finish(applied))
    }

    /// The local Node, once synced (None if the API has no such Node).
    pub fn local_node(&self) -> Option<&Node> {
        self.applier.local_node()
    }

    fn finish(&mut self, applied: Applied) -> SourcePoll {
        SourcePoll {
            changed: applied.changed,
            skipped: applied.skipped,
            triggers: applied.triggers,
            node_eligible: Some(!self.applier.node_deleting()),
        }
    }
}

fn closed() -> Error {
    Error::Config {
        field: "source",
        reason: "the Kubernetes watches stopped".to_owned(),
    }
}

impl Source for KubeSource {
    fn poll_changes(&mut self, cluster: &mut ClusterState) -> Result<SourcePoll, Error> {
        let mut applied = Applied::default();
        loop {
            match self.receiver.try_recv() {
                Ok(event) => self.applier.apply(event, cluster, &mut applied),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    if applied.changed {
                        break;
                    }
                    return Err(closed());
                }
            }
        }
        if let Some((old, new)) = applied.node_addresses_changed.take() {
            return Err(Error::NodeAddressesChanged { old, new });
        }
        Ok(self.finish(applied))
    }
}
