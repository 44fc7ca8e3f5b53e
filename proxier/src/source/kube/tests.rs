use ::kube::runtime::watcher::Event;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;

use super::*;
use crate::model::ServiceName;

fn service(name: &str, cluster_ip: &str) -> core::Service {
    serde_saphyr::from_str(&format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: default\n  \
         resourceVersion: \"10\"\nspec:\n  type: ClusterIP\n  clusterIP: {cluster_ip}\n  \
         clusterIPs: [{cluster_ip}]\n  ports:\n  - name: http\n    port: 80\n    \
         protocol: TCP\n    targetPort: 8080\n"
    ))
    .unwrap()
}

fn slice(name: &str, service: &str, ip: &str, trigger: Option<&str>) -> discovery::EndpointSlice {
    let annotations = trigger
        .map(|t| {
            format!(
                "  annotations:\n    endpoints.kubernetes.io/last-change-trigger-time: \"{t}\"\n"
            )
        })
        .unwrap_or_default();
    serde_saphyr::from_str(&format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\naddressType: IPv4\nmetadata:\n  \
         name: {name}\n  namespace: default\n{annotations}  labels:\n    \
         kubernetes.io/service-name: {service}\nendpoints:\n- addresses: [\"{ip}\"]\n  \
         conditions: {{ready: true, serving: true, terminating: false}}\n  nodeName: node-a\n\
         ports:\n- name: http\n  port: 8080\n  protocol: TCP\n"
    ))
    .unwrap()
}

fn node(name: &str, ip: &str) -> core::Node {
    serde_saphyr::from_str(&format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  labels:\n    \
         topology.kubernetes.io/zone: z1\nstatus:\n  addresses:\n  - type: InternalIP\n    \
         address: {ip}\n"
    ))
    .unwrap()
}

fn name(n: &str) -> ServiceName {
    ServiceName {
        namespace: "default".into(),
        name: n.into(),
    }
}

/// The initial list: Services web (10.96.0.10) and db (10.96.0.11), slice web-1 (10.244.1.5),
/// node-a (192.168.1.10), each kind framed by Init and InitDone.
fn initial_list() -> Vec<WatchEvent> {
    let services = [service("web", "10.96.0.10"), service("db", "10.96.0.11")];
    let mut events = vec![WatchEvent::Service(Event::Init)];
    events.extend(services.map(|s| WatchEvent::Service(Event::InitApply(s))));
    events.extend([
        WatchEvent::Service(Event::InitDone),
        WatchEvent::EndpointSlice(Event::Init),
        WatchEvent::EndpointSlice(Event::InitApply(slice("web-1", "web", "10.244.1.5", None))),
        WatchEvent::EndpointSlice(Event::InitDone),
        WatchEvent::Node(Event::Init),
        WatchEvent::Node(Event::InitApply(node("node-a", "192.168.1.10"))),
        WatchEvent::Node(Event::InitDone),
    ]);
    events
}

/// A source fed through a channel, and the cluster it applies to.
struct Feed {
    sender: mpsc::Sender<WatchEvent>,
    source: KubeSource,
    cluster: ClusterState,
}

impl Feed {
    /// A fresh source (`configure` may add to it) and an empty cluster.
    fn new(configure: impl FnOnce(KubeSource) -> KubeSource) -> Self {
        let (sender, receiver) = mpsc::channel(super::WATCH_QUEUE);
        Self {
            sender,
            source: configure(KubeSource::from_channel(receiver)),
            cluster: ClusterState::new(),
        }
    }

    /// Sends `events` without polling.
    fn send(&self, events: impl IntoIterator<Item = WatchEvent>) {
        events
            .into_iter()
            .for_each(|e| self.sender.try_send(e).unwrap());
    }

    /// Sends `event` and polls the source once.
    fn deliver(&mut self, event: WatchEvent) -> SourcePoll {
        self.send([event]);
        self.poll()
    }

    /// Polls the source once.
    fn poll(&mut self) -> SourcePoll {
        self.source.poll_changes(&mut self.cluster).unwrap()
    }

    /// Sends the [`initial_list`] and waits until the source is synced.
    async fn sync(&mut self) -> SourcePoll {
        self.send(initial_list());
        self.source
            .wait_until_synced(&mut self.cluster, Duration::from_secs(5))
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn waits_for_every_watch_then_applies_only_changes() {
    let mut feed = Feed::new(|s| s);
    // Only services listed: not synced yet.
    feed.send([
        WatchEvent::Service(Event::Init),
        WatchEvent::Service(Event::InitDone),
    ]);
    assert!(!feed.poll().changed);
    assert!(!feed.source.applier.is_synced());
    let synced = feed.sync().await;
    assert!(synced.changed);
    assert!(feed.cluster.service(&name("web")).is_some());
    assert_eq!(feed.cluster.slices(&name("web")).count(), 1);
    assert_eq!(
        feed.source.local_node().map(|n| n.internal_ips.clone()),
        Some(vec!["192.168.1.10".parse().unwrap()])
    );
    let dirty = feed.cluster.take_dirty();
    assert!(dirty.contains(&name("web")) && dirty.contains(&name("db")));

    // Re-sending an identical object (a watch restart's InitApply) changes nothing.
    let same = service("web", "10.96.0.10");
    assert!(
        !feed
            .deliver(WatchEvent::Service(Event::Apply(same)))
            .changed
    );
    assert!(feed.cluster.take_dirty().is_empty());

    // A slice update dirties only its Service.
    let moved = slice("web-1", "web", "10.244.1.6", None);
    assert!(
        feed.deliver(WatchEvent::EndpointSlice(Event::Apply(moved)))
            .changed
    );
    assert_eq!(
        feed.cluster.take_dirty().into_iter().collect::<Vec<_>>(),
        vec![name("web")]
    );
}

#[tokio::test]
async fn invalid_update_keeps_last_good_and_relist_removes_vanished_only_at_init_done() {
    let mut feed = Feed::new(|s| s);
    feed.sync().await;
    feed.cluster.take_dirty();

    // An invalid update: skipped, the last good version stays.
    let invalid = service("web", "10.96.0.x");
    let poll = feed.deliver(WatchEvent::Service(Event::Apply(invalid)));
    assert!(!poll.changed);
    assert_eq!(poll.skipped.len(), 1);
    assert!(feed.cluster.service(&name("web")).is_some());
    assert!(feed.cluster.take_dirty().is_empty());

    // A relist (after 410 Gone) that no longer has `db`: nothing removed before InitDone.
    feed.send([
        WatchEvent::Service(Event::Init),
        WatchEvent::Service(Event::InitApply(service("web", "10.96.0.10"))),
    ]);
    assert!(!feed.poll().changed, "unchanged web, db not yet judged");
    assert!(feed.cluster.service(&name("db")).is_some());
    assert!(feed.deliver(WatchEvent::Service(Event::InitDone)).changed);
    assert!(feed.cluster.service(&name("db")).is_none());
    assert!(feed.cluster.service(&name("web")).is_some());
    assert_eq!(
        feed.cluster.take_dirty().into_iter().collect::<Vec<_>>(),
        vec![name("db")]
    );

    // A Service that becomes headless is removed (valid, but not proxied).
    let mut headless = service("web", "None");
    headless.spec.as_mut().unwrap().cluster_ips = Some(vec!["None".into()]);
    assert!(
        feed.deliver(WatchEvent::Service(Event::Apply(headless)))
            .changed
    );
    assert!(feed.cluster.service(&name("web")).is_none());

    // A deleted slice leaves its Service; a closed channel is an error.
    let gone = slice("web-1", "web", "10.244.1.5", None);
    assert!(
        feed.deliver(WatchEvent::EndpointSlice(Event::Delete(gone)))
            .changed
    );
    assert_eq!(feed.cluster.slices(&name("web")).count(), 0);
    let Feed {
        sender,
        mut source,
        mut cluster,
    } = feed;
    drop(sender);
    assert!(source.poll_changes(&mut cluster).is_err());
}

/// An observer of a proxy resyncing every 30 s, without Events.
fn observer() -> crate::observability::Observer {
    use crate::observability::{EventPublisher, Metrics, Observer};
    Observer::new(
        Metrics::new(),
        Duration::from_secs(30),
        EventPublisher::disabled(),
    )
}

#[tokio::test]
async fn trigger_times_and_node_deletion_reach_the_observer() {
    let observer = observer();
    let mut feed = Feed::new(|s| s);
    observer.record_poll(&feed.sync().await);
    let triggered = slice("web-1", "web", "10.244.1.9", Some("2024-05-01T10:00:00Z"));
    observer.record_poll(&feed.deliver(WatchEvent::EndpointSlice(Event::Apply(triggered))));
    let synced_at = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_714_557_603);
    observer
        .metrics
        .record_sync(false, Duration::from_millis(1), synced_at);
    let text = observer.metrics.render();
    assert!(
        text.contains(
            "kubeproxy_network_programming_duration_seconds_sum{ip_family=\"IPv4\"} 3.0\n"
        ),
        "{text}"
    );
    let mut deleting = node("node-a", "192.168.1.10");
    deleting.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()),
    );
    observer.record_poll(&feed.deliver(WatchEvent::Node(Event::Apply(deleting))));
    let status = observer
        .health
        .status(std::time::Instant::now(), std::time::SystemTime::now());
    assert!(!status.node_eligible);
}

/// Issue 13 item 12. kube-proxy (pkg/proxy/node.go, `NodeManager.OnNodeChange`) exits when the
/// node's IPs change, so that its DaemonSet restarts it with them; a label (zone) change is a
/// change to sync (kube-proxy's proxiers resync on `OnNodeUpdate`). proxier's source does the
/// same: a zone change is reported as a change, an InternalIP change as
/// `Error::NodeAddressesChanged`, which ends `runtime::run`.
#[tokio::test]
async fn a_node_zone_change_is_a_change_and_an_address_change_asks_for_a_restart() {
    let mut feed = Feed::new(|s| s);
    feed.sync().await;
    let same = feed.deliver(WatchEvent::Node(Event::Apply(node(
        "node-a",
        "192.168.1.10",
    ))));
    assert!(!same.changed, "an unchanged Node is no change");
    let mut moved = node("node-a", "192.168.1.10");
    moved
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("topology.kubernetes.io/zone".into(), "z2".into());
    let poll = feed.deliver(WatchEvent::Node(Event::Apply(moved)));
    assert!(poll.changed, "a zone change is a change");
    assert_eq!(
        feed.cluster.node("node-a").and_then(|n| n.zone.as_deref()),
        Some("z2")
    );
    feed.send([WatchEvent::Node(Event::Apply(node(
        "node-a",
        "192.168.1.99",
    )))]);
    match feed.source.poll_changes(&mut feed.cluster) {
        Err(Error::NodeAddressesChanged { old, new }) => {
            assert_eq!(
                old,
                vec!["192.168.1.10".parse::<std::net::IpAddr>().unwrap()]
            );
            assert_eq!(
                new,
                vec!["192.168.1.99".parse::<std::net::IpAddr>().unwrap()]
            );
        }
        other => panic!("expected NodeAddressesChanged, got {other:?}"),
    }
}

/// KEP-3836: the cluster autoscaler's `ToBeDeletedByClusterAutoscaler` taint (any effect)
/// turns `/healthz` 503 while `/livez` stays 200, as kube-proxy's health server does; the
/// node is eligible again once the taint is removed.
#[tokio::test]
async fn the_autoscaler_taint_fails_healthz_not_livez_until_it_goes() {
    let observer = observer();
    let mut feed = Feed::new(|s| s);
    observer.record_poll(&feed.sync().await);
    let status = |observer: &crate::observability::Observer| {
        observer
            .health
            .status(std::time::Instant::now(), std::time::SystemTime::now())
    };
    assert_eq!(status(&observer).healthz().0, 200);
    let mut tainted = node("node-a", "192.168.1.10");
    tainted.spec = Some(core::NodeSpec {
        taints: Some(vec![core::Taint {
            key: super::TO_BE_DELETED_TAINT.to_owned(),
            value: Some("1700000000".to_owned()),
            effect: "NoSchedule".to_owned(),
            ..core::Taint::default()
        }]),
        ..core::NodeSpec::default()
    });
    observer.record_poll(&feed.deliver(WatchEvent::Node(Event::Apply(tainted))));
    let now = status(&observer);
    assert_eq!((now.healthz().0, now.livez().0), (503, 200));
    assert!(now.healthz().1.contains("\"nodeEligible\": false"));
    let mut other_taint = node("node-a", "192.168.1.10");
    other_taint.spec = Some(core::NodeSpec {
        taints: Some(vec![core::Taint {
            key: "node.kubernetes.io/unschedulable".to_owned(),
            effect: "NoSchedule".to_owned(),
            ..core::Taint::default()
        }]),
        ..core::NodeSpec::default()
    });
    observer.record_poll(&feed.deliver(WatchEvent::Node(Event::Apply(other_taint))));
    assert_eq!(
        status(&observer).healthz().0,
        200,
        "another taint is not the autoscaler's"
    );
}
