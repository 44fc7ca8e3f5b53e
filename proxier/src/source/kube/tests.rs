use ::kube::runtime::watcher::Event;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;

use super::*;
use crate::model::ServiceName;

fn service(name: &str, cluster_ip: &str) -> core::Service {
    serde_yaml::from_str(&format!(
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
    serde_yaml::from_str(&format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\naddressType: IPv4\nmetadata:\n  \
         name: {name}\n  namespace: default\n{annotations}  labels:\n    \
         kubernetes.io/service-name: {service}\nendpoints:\n- addresses: [\"{ip}\"]\n  \
         conditions: {{ready: true, serving: true, terminating: false}}\n  nodeName: node-a\n\
         ports:\n- name: http\n  port: 8080\n  protocol: TCP\n"
    ))
    .unwrap()
}

fn node(name: &str, ip: &str) -> core::Node {
    serde_yaml::from_str(&format!(
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

fn initial_list(sender: &mpsc::UnboundedSender<WatchEvent>) {
    let send = |e| sender.send(e).unwrap();
    send(WatchEvent::Service(Event::Init));
    send(WatchEvent::Service(Event::InitApply(service(
        "web",
        "10.96.0.10",
    ))));
    send(WatchEvent::Service(Event::InitApply(service(
        "db",
        "10.96.0.11",
    ))));
    send(WatchEvent::Service(Event::InitDone));
    send(WatchEvent::EndpointSlice(Event::Init));
    send(WatchEvent::EndpointSlice(Event::InitApply(slice(
        "web-1",
        "web",
        "10.244.1.5",
        None,
    ))));
    send(WatchEvent::EndpointSlice(Event::InitDone));
    send(WatchEvent::Node(Event::Init));
    send(WatchEvent::Node(Event::InitApply(node(
        "node-a",
        "192.168.1.10",
    ))));
    send(WatchEvent::Node(Event::InitDone));
}

#[tokio::test]
async fn waits_for_every_watch_then_applies_only_changes() {
    let (sender, receiver) = mpsc::unbounded_channel();
    let mut source = KubeSource::from_channel(receiver);
    let mut cluster = ClusterState::new();
    // Only services listed: not synced yet.
    sender.send(WatchEvent::Service(Event::Init)).unwrap();
    sender.send(WatchEvent::Service(Event::InitDone)).unwrap();
    let poll = source.poll_changes(&mut cluster).unwrap();
    assert!(!poll.changed);
    assert!(!source.applier.is_synced());
    initial_list(&sender);
    let synced = source
        .wait_until_synced(&mut cluster, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(synced.changed);
    assert!(cluster.service(&name("web")).is_some());
    assert_eq!(cluster.slices(&name("web")).count(), 1);
    assert_eq!(
        source.local_node().map(|n| n.internal_ips.clone()),
        Some(vec!["192.168.1.10".parse().unwrap()])
    );
    let dirty = cluster.take_dirty();
    assert!(dirty.contains(&name("web")) && dirty.contains(&name("db")));

    // Re-sending an identical object (a watch restart's InitApply) changes nothing.
    sender
        .send(WatchEvent::Service(Event::Apply(service(
            "web",
            "10.96.0.10",
        ))))
        .unwrap();
    let poll = source.poll_changes(&mut cluster).unwrap();
    assert!(!poll.changed);
    assert!(cluster.take_dirty().is_empty());

    // A slice update dirties only its Service.
    sender
        .send(WatchEvent::EndpointSlice(Event::Apply(slice(
            "web-1",
            "web",
            "10.244.1.6",
            None,
        ))))
        .unwrap();
    assert!(source.poll_changes(&mut cluster).unwrap().changed);
    assert_eq!(
        cluster.take_dirty().into_iter().collect::<Vec<_>>(),
        vec![name("web")]
    );
}

#[tokio::test]
async fn invalid_update_keeps_last_good_and_relist_removes_vanished_only_at_init_done() {
    let (sender, receiver) = mpsc::unbounded_channel();
    let mut source = KubeSource::from_channel(receiver);
    let mut cluster = ClusterState::new();
    initial_list(&sender);
    source
        .wait_until_synced(&mut cluster, Duration::from_secs(5))
        .await
        .unwrap();
    cluster.take_dirty();

    // An invalid update: skipped, the last good version stays.
    sender
        .send(WatchEvent::Service(Event::Apply(service(
            "web",
            "10.96.0.x",
        ))))
        .unwrap();
    let poll = source.poll_changes(&mut cluster).unwrap();
    assert!(!poll.changed);
    assert_eq!(poll.skipped.len(), 1);
    assert!(cluster.service(&name("web")).is_some());
    assert!(cluster.take_dirty().is_empty());

    // A relist (after 410 Gone) that no longer has `db`: nothing removed before InitDone.
    sender.send(WatchEvent::Service(Event::Init)).unwrap();
    sender
        .send(WatchEvent::Service(Event::InitApply(service(
            "web",
            "10.96.0.10",
        ))))
        .unwrap();
    let poll = source.poll_changes(&mut cluster).unwrap();
    assert!(!poll.changed, "unchanged web, db not yet judged");
    assert!(cluster.service(&name("db")).is_some());
    sender.send(WatchEvent::Service(Event::InitDone)).unwrap();
    assert!(source.poll_changes(&mut cluster).unwrap().changed);
    assert!(cluster.service(&name("db")).is_none());
    assert!(cluster.service(&name("web")).is_some());
    assert_eq!(
        cluster.take_dirty().into_iter().collect::<Vec<_>>(),
        vec![name("db")]
    );

    // A Service that becomes headless is removed (valid, but not proxied).
    let mut headless = service("web", "None");
    headless.spec.as_mut().unwrap().cluster_ips = Some(vec!["None".into()]);
    sender
        .send(WatchEvent::Service(Event::Apply(headless)))
        .unwrap();
    assert!(source.poll_changes(&mut cluster).unwrap().changed);
    assert!(cluster.service(&name("web")).is_none());

    // A deleted slice leaves its Service; a closed channel is an error.
    sender
        .send(WatchEvent::EndpointSlice(Event::Delete(slice(
            "web-1",
            "web",
            "10.244.1.5",
            None,
        ))))
        .unwrap();
    assert!(source.poll_changes(&mut cluster).unwrap().changed);
    assert_eq!(cluster.slices(&name("web")).count(), 0);
    drop(sender);
    assert!(source.poll_changes(&mut cluster).is_err());
}

#[tokio::test]
async fn trigger_times_and_node_deletion_reach_the_observer() {
    use crate::observability::{EventPublisher, Metrics, Observer};
    let observer = Observer::new(
        Metrics::new(),
        Duration::from_secs(30),
        EventPublisher::disabled(),
    );
    let (sender, receiver) = mpsc::unbounded_channel();
    let source = KubeSource::from_channel(receiver);
    let mut source = observer.watch_source(source);
    let mut cluster = ClusterState::new();
    initial_list(&sender);
    let synced = source
        .inner_mut()
        .wait_until_synced(&mut cluster, Duration::from_secs(5))
        .await
        .unwrap();
    observer.record_poll(&synced);
    sender
        .send(WatchEvent::EndpointSlice(Event::Apply(slice(
            "web-1",
            "web",
            "10.244.1.9",
            Some("2024-05-01T10:00:00Z"),
        ))))
        .unwrap();
    source.poll_changes(&mut cluster).unwrap();
    let synced_at = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_714_557_603);
    observer
        .metrics
        .record_sync(false, Duration::from_millis(1), synced_at);
    let text = observer.metrics.render();
    assert!(
        text.contains("kubeproxy_network_programming_duration_seconds_sum 3\n"),
        "{text}"
    );
    let mut deleting = node("node-a", "192.168.1.10");
    deleting.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()),
    );
    sender
        .send(WatchEvent::Node(Event::Apply(deleting)))
        .unwrap();
    source.poll_changes(&mut cluster).unwrap();
    let status = observer
        .health
        .status(std::time::Instant::now(), std::time::SystemTime::now());
    assert!(!status.node_eligible);
}
