//! The Kubernetes source over real HTTP: a tiny fake API server (list, chunked watch streams
//! with resourceVersions, 410 Gone, Events POSTs) drives `KubeSource` → `runtime::run` →
//! `FakeDataplane`, and the dataplane follows watch events, keeps the last good version of an
//! invalid object, relists after 410 Gone, and is left alone when the API server goes away.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code panics on failure"
)]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use netlink_ipvs::ServiceState;
use proxier::config::Config;
use proxier::dataplane::{ApplyReport, Dataplane, FakeDataplane};
use proxier::observability::{EventPublisher, Metrics, Observer};
use proxier::plan::{NodeContext, PacketRules, Planner};
use proxier::reconcile::{ConntrackFilter, Observed, Op};
use proxier::runtime::{run, Proxier, SyncKind, SyncOutcome, SyncTiming};
use proxier::source::kube::{KubeSource, PROXY_LABEL_SELECTOR};

use proxier_test_support::fake_api::{node, param, service, slice, FakeApi};

/// The fake dataplane, shared so that the test can look at it while `run` owns the proxier.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<FakeDataplane>>);

impl Dataplane for Shared {
    fn observe(&mut self) -> Result<Observed, proxier::Error> {
        self.0.lock().unwrap().observe()
    }
    fn apply(&mut self, ops: &[Op]) -> ApplyReport {
        self.0.lock().unwrap().apply(ops)
    }
    fn program_packet_rules(&mut self, rules: &PacketRules) -> Result<bool, proxier::Error> {
        self.0.lock().unwrap().program_packet_rules(rules)
    }
}

type Table = BTreeMap<String, Vec<String>>;

/// Real servers by virtual server (`UDP  10.96.0.10:53` → `["10.244.1.5:53"]`).
fn table(fake: &Shared) -> Table {
    let fake = fake.0.lock().unwrap();
    let services = fake.state.ipvs.services.iter();
    let real_servers = |s: &ServiceState| s.real_servers.keys().map(|k| k.to_string()).collect();
    services
        .map(|(key, s)| (key.to_string(), real_servers(s)))
        .collect()
}

/// Waits (at most 10 s) until `done` holds of the table; prints the latency since `since`.
async fn wait_for(fake: &Shared, what: &str, since: Instant, done: impl Fn(&Table) -> bool) {
    let waited = tokio::time::timeout(Duration::from_secs(10), async {
        while !done(&table(fake)) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "timed out: {what}; {:#?}", table(fake));
    println!(
        "{what}: injected event -> dataplane in {:?}",
        since.elapsed()
    );
}

/// Waits (at most 10 s) until a list and a watch of `path` were requested with `key=value`.
async fn sent(api: &FakeApi, path: &str, key: &str, value: &str) {
    let seen = |watch: bool| {
        let requests = api.with(|s| s.requests.clone());
        let mut queries = requests
            .iter()
            .filter_map(|r| r.strip_prefix(path)?.strip_prefix('?'));
        queries.any(|q| {
            param(q, key).as_deref() == Some(value) && param(q, "watch").is_some() == watch
        })
    };
    let waited = tokio::time::timeout(Duration::from_secs(10), async {
        while !(seen(false) && seen(true)) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let requests = api.with(|s| s.requests.clone());
    assert!(
        waited.await.is_ok(),
        "{path}: {key}={value} not sent: {requests:#?}"
    );
}

const SVC: &str = "services";
const EPS: &str = "endpointslices";
const DNS: &str = "UDP  10.96.0.10:53";
const WEB: &str = "TCP  10.96.0.20:80";
const OLD: &str = "TCP  10.96.0.30:80";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_source_over_http_drives_the_dataplane() {
    let api = FakeApi::new();
    let dns_slice = |ips: &[&str]| slice("dns-1", "", ("UDP", 53), ips);
    // "web-x" is excluded by kube-proxy's label selector (and the model): no 10.244.9.9.
    let headless = r#""service.kubernetes.io/headless":"","#;
    let objects = [
        (SVC, "dns", service("dns", "10.96.0.10", "UDP", 53)),
        (SVC, "web", service("web", "10.96.0.20", "TCP", 80)),
        (SVC, "old", service("old", "10.96.0.30", "TCP", 80)),
        (EPS, "dns-1", dns_slice(&["10.244.1.5", "10.244.2.6"])),
        (
            EPS,
            "web-1",
            slice("web-1", "", ("TCP", 80), &["10.244.1.7"]),
        ),
        (
            EPS,
            "web-x",
            slice("web-x", headless, ("TCP", 80), &["10.244.9.9"]),
        ),
        ("nodes", "node-a", node("node-a", "192.168.1.10")),
        ("nodes", "node-b", node("node-b", "192.168.1.11")),
    ];
    for (kind, name, object) in &objects {
        api.put(kind, name, object);
    }
    let (address, acceptor) = api.clone().serve().await;

    let start = Instant::now();
    let config = kube::Config::new(format!("http://{address}").parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    let observer = Observer::new(
        Metrics::new(),
        Duration::from_secs(30),
        EventPublisher::start(client.clone(), "node-a"),
    );
    let mut source = KubeSource::start(client, "node-a");
    let mut cluster = proxier::model::ClusterState::new();
    let synced = tokio::time::timeout(
        Duration::from_secs(10),
        source.wait_until_synced(&mut cluster, Duration::from_secs(1)),
    );
    observer.record_poll(&synced.await.expect("initial lists timed out").unwrap());
    let local = source.local_node().cloned().expect("node-a listed");
    let node_ip: IpAddr = "192.168.1.10".parse().unwrap();
    assert_eq!(local.internal_ips, [node_ip]);
    let context = NodeContext {
        name: "node-a".to_owned(),
        node_ips: local.internal_ips,
        zone: local.zone,
    };
    let fake = Shared::default();
    let mut proxier = Proxier::new(Planner::new(context, Config::default()), fake.clone());
    *proxier.cluster_mut() = cluster;
    let mut source = observer.watch_source(source);
    let timing = SyncTiming {
        min_sync_period: Duration::ZERO,
        sync_period: Duration::from_secs(300),
        poll_period: Duration::from_millis(10),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let runner = run(
        &mut proxier,
        &mut source,
        timing,
        |_: SyncKind, _: &SyncOutcome| {},
        async {
            let _ = stopped.await;
        },
    );

    let script = async {
        let what = "initial lists (from KubeSource::start)";
        wait_for(&fake, what, start, |t| t.len() == 3).await;
        // The selectors are sent on the lists and on the watches.
        sent(
            &api,
            "/api/v1/services",
            "labelSelector",
            PROXY_LABEL_SELECTOR,
        )
        .await;
        let eps_path = "/apis/discovery.k8s.io/v1/endpointslices";
        sent(&api, eps_path, "labelSelector", PROXY_LABEL_SELECTOR).await;
        sent(
            &api,
            "/api/v1/nodes",
            "fieldSelector",
            "metadata.name=node-a",
        )
        .await;
        let initial = table(&fake);
        assert_eq!(initial[DNS], ["10.244.1.5:53", "10.244.2.6:53"]);
        assert_eq!(initial[WEB], ["10.244.1.7:80"]); // not 10.244.9.9 (headless)
        assert!(initial[OLD].is_empty());

        // MODIFIED slice without 10.244.2.6: its real server goes, its UDP flows through the
        // Service are flushed.
        let since = Instant::now();
        api.put(EPS, "dns-1", &dns_slice(&["10.244.1.5"]));
        let one_left = |t: &Table| t[DNS] == ["10.244.1.5:53"];
        wait_for(&fake, "endpoint removed", since, one_left).await;
        let flushed = fake.0.lock().unwrap().flushed.clone();
        let gone = ConntrackFilter::service_endpoint(
            conntrack_gc::Protocol::Udp,
            ("10.96.0.10".parse().unwrap(), 53),
            ("10.244.2.6".parse().unwrap(), 53),
        );
        assert!(flushed.contains(&gone), "no flush of {gone:?}: {flushed:?}");

        // DELETED Service: its virtual server goes.
        let since = Instant::now();
        api.change(SVC, "web", None);
        wait_for(&fake, "service deleted", since, |t| !t.contains_key(WEB)).await;

        // An invalid MODIFIED Service is skipped (Event posted) and the last good one kept.
        let before = table(&fake);
        let ops_before = fake.0.lock().unwrap().log.len();
        api.put(SVC, "dns", &service("dns", "10.96.0.999", "UDP", 53));
        let posted = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(event) = api.with(|s| s.events.first().cloned()) {
                    return event;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        let (path, body) = posted.await.expect("no Event for the invalid Service");
        assert!(path.ends_with("/namespaces/default/events"), "{path}");
        let invalid_dns = body.contains("InvalidObjectSkipped") && body.contains("\"dns\"");
        assert!(invalid_dns, "{body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(table(&fake), before, "invalid object applied");
        assert_eq!(fake.0.lock().unwrap().log.len(), ops_before);

        // 410 Gone: the watcher relists; "old" vanished meanwhile and is removed, "dns" (still
        // invalid in the list) keeps its last good version.
        let since = Instant::now();
        api.with(|s| {
            let services = s.collections.get_mut(SVC).unwrap();
            services.objects.remove("old"); // gone without a watch event
            services.expire = true;
        });
        let what = "relist after 410 Gone";
        wait_for(&fake, what, since, |t| !t.contains_key(OLD)).await;
        assert_eq!(table(&fake)[DNS], ["10.244.1.5:53"]);

        // The API server goes away: watches cut, connections refused; nothing changes.
        let before = table(&fake);
        let ops_before = fake.0.lock().unwrap().log.len();
        api.with(|s| s.down = true); // watch streams cut, kept-alive connections closed
        acceptor.abort();
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(table(&fake), before, "API server gone: dataplane changed");
        assert_eq!(fake.0.lock().unwrap().log.len(), ops_before);
        stop.send(()).unwrap();
    };
    let (result, ()) = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(runner, script)
    })
    .await
    .expect("test hung");
    result.unwrap();
}
