//! [`Feed`]: the source of an embedder that already watches the cluster its own way (a CNI
//! agent, a bare-metal load balancer). It sends objects through a [`FeedSender`] from any
//! thread; the sync loop applies them at its next poll.

use std::sync::mpsc::{channel, Receiver, Sender, TryRecvError};

use crate::error::Error;
use crate::model::{ClusterState, EndpointSlice, Node, Service, ServiceName};
use crate::source::{KubeObject, SnapshotSync, Source, SourcePoll};

/// One update handed to a [`Feed`]: Kubernetes objects (k8s-openapi types) or the model's own
/// plain types.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum FeedUpdate {
    /// Every object the embedder knows now, as k8s-openapi objects: the cluster is made to hold
    /// exactly the valid ones (what disappeared is removed; an object that turned invalid keeps
    /// its last good version, see [`SnapshotSync::apply`]).
    Snapshot(Vec<KubeObject>),
    /// Add or replace a Service (model type).
    UpsertService(Service),
    /// Remove a Service.
    RemoveService(ServiceName),
    /// Add or replace an EndpointSlice (model type).
    UpsertSlice(EndpointSlice),
    /// Remove an EndpointSlice of a Service.
    RemoveSlice {
        /// The Service it belongs to.
        service: ServiceName,
        /// The slice's name.
        name: String,
    },
    /// Add or replace a Node (the local node's zone drives topology hints).
    UpsertNode(Node),
}

/// The sending half of a [`Feed`]: cheap to clone, usable from any thread.
#[derive(Debug, Clone)]
pub struct FeedSender {
    updates: Sender<FeedUpdate>,
}

impl FeedSender {
    /// Queues `update` for the next poll; [`Error::FeedClosed`] once the [`Feed`] is dropped
    /// (the sync loop has ended).
    pub fn send(&self, update: FeedUpdate) -> Result<(), Error> {
        self.updates.send(update).map_err(|_| Error::FeedClosed)
    }
}

/// A [`Source`] fed by the embedder through [`FeedSender`]s (see [`Feed::new`]).
///
/// ```
/// use proxier::model::ClusterState;
/// use proxier::source::{parse_documents, Feed, FeedUpdate, Source};
///
/// let (sender, mut feed) = Feed::new();
/// let (objects, problems) = parse_documents("example", "
/// apiVersion: v1
/// kind: Service
/// metadata: {name: web, namespace: default}
/// spec: {clusterIP: 10.96.0.10, ports: [{port: 80}]}
/// ");
/// assert!(problems.is_empty());
/// sender.send(FeedUpdate::Snapshot(objects))?;
/// let mut cluster = ClusterState::new();
/// let poll = feed.poll_changes(&mut cluster)?;
/// assert!(poll.changed);
/// assert_eq!(cluster.services().count(), 1);
/// # Ok::<(), proxier::Error>(())
/// ```
#[derive(Debug)]
pub struct Feed {
    updates: Receiver<FeedUpdate>,
    snapshot: SnapshotSync,
}

impl Feed {
    /// A feed and its first sender.
    pub fn new() -> (FeedSender, Feed) {
        let (updates, receiver) = channel();
        (
            FeedSender { updates },
            Feed {
                updates: receiver,
                snapshot: SnapshotSync::new(),
            },
        )
    }

    fn apply(&mut self, update: FeedUpdate, cluster: &mut ClusterState, poll: &mut SourcePoll) {
        match update {
            FeedUpdate::Snapshot(objects) => {
                let report = self.snapshot.apply(&objects, cluster);
                poll.changed |= report.upserted + report.removed > 0;
                poll.skipped.extend(report.skipped);
            }
            FeedUpdate::UpsertService(service) => {
                cluster.upsert_service(service);
                poll.changed = true;
            }
            FeedUpdate::RemoveService(name) => {
                cluster.remove_service(&name);
                poll.changed = true;
            }
            FeedUpdate::UpsertSlice(slice) => {
                cluster.upsert_slice(slice);
                poll.changed = true;
            }
            FeedUpdate::RemoveSlice { service, name } => {
                cluster.remove_slice(&service, &name);
                poll.changed = true;
            }
            FeedUpdate::UpsertNode(node) => cluster.upsert_node(node),
        }
    }
}

impl Source for Feed {
    /// Applies every update queued since the last poll, in order. A feed whose senders are all
    /// gone keeps what it applied (the cluster does not empty).
    fn poll_changes(&mut self, cluster: &mut ClusterState) -> Result<SourcePoll, Error> {
        let mut poll = SourcePoll::default();
        loop {
            match self.updates.try_recv() {
                Ok(update) => self.apply(update, cluster, &mut poll),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return Ok(poll),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use netlink_ipvs::Protocol;

    use super::*;
    use crate::fixtures::{ep, service, slice};

    #[test]
    fn model_updates_reach_the_cluster_in_order_and_a_closed_feed_is_an_error() {
        let (sender, mut feed) = Feed::new();
        let mut cluster = ClusterState::new();
        assert!(!feed.poll_changes(&mut cluster).unwrap().changed);
        let web = service("web", &["10.96.0.10"], &[("", Protocol::Tcp, 80)]);
        let name = web.name.clone();
        sender.send(FeedUpdate::UpsertService(web)).unwrap();
        sender
            .send(FeedUpdate::UpsertSlice(slice(
                "web",
                "web-1",
                &[("", Protocol::Tcp, 8080)],
                vec![ep("10.244.1.5", "node-a")],
            )))
            .unwrap();
        let poll = feed.poll_changes(&mut cluster).unwrap();
        assert!(poll.changed);
        assert_eq!(cluster.services().count(), 1);
        assert_eq!(cluster.slices(&name).count(), 1);
        sender
            .send(FeedUpdate::RemoveService(name.clone()))
            .unwrap();
        assert!(feed.poll_changes(&mut cluster).unwrap().changed);
        assert!(cluster.service(&name).is_none());
        drop(feed);
        assert!(matches!(
            sender.send(FeedUpdate::RemoveService(name)),
            Err(Error::FeedClosed)
        ));
    }
}
