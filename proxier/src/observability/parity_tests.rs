//! Issue 16 item 3: kube-proxy's full `kubeproxy_*` set with its labels, each wired to where
//! its event happens, plus the process and build-info metrics, `/proxyMode` and `/configz`.

use std::time::Duration;

use netlink_ipvs::{Family, Protocol};

use proxier_test_support::scrape::{assert_kube_proxy_set, sample};

use super::*;
use crate::config::Config;
use crate::dataplane::FakeDataplane;
use crate::fixtures::{ep, http_backend, node_a, service, slice};
use crate::model::TrafficPolicy;
use crate::plan::Planner;
use crate::runtime::Proxier;

fn observer() -> Observer {
    Observer::new(
        Metrics::new(),
        Duration::from_secs(30),
        EventPublisher::disabled(),
    )
}

#[test]
fn every_kube_proxy_series_is_exposed_with_its_labels_after_a_sync_and_a_probe() {
    let observer = observer();
    observer.metrics.set_families(&[Family::V4, Family::V6]);
    observer.on_sync(SyncKind::Initial, &SyncOutcome::default());
    let health = observer.health_handler();
    assert_eq!(health("/healthz").map(|r| r.status), Some(200));
    assert_eq!(health("/livez").map(|r| r.status), Some(200));
    let text = observer.metrics.render();
    assert_kube_proxy_set(&text, &["IPv4", "IPv6"]);
    assert!(sample(&text, "process_resident_memory_bytes").unwrap() > 0.0);
    assert!(text.contains(&format!(
        "proxier_build_info{{version=\"{}\",",
        env!("CARGO_PKG_VERSION")
    )));
    assert_eq!(
        sample(&text, "kubeproxy_proxy_healthz_total{code=\"200\"}"),
        Some(1.0)
    );
}

#[test]
fn service_and_endpoint_changes_are_counted_per_family_and_settled_by_a_sync() {
    let observer = observer();
    observer.metrics.set_families(&[Family::V4, Family::V6]);
    /// A source whose changes were made to the cluster directly: it reports a change.
    struct Changed;
    impl Source for Changed {
        fn poll_changes(
            &mut self,
            _: &mut crate::model::ClusterState,
        ) -> Result<SourcePoll, Error> {
            Ok(SourcePoll {
                changed: true,
                ..SourcePoll::default()
            })
        }
    }
    let mut source = observer.watch_source(Changed);
    let mut cluster = crate::model::ClusterState::new();
    // A dual-stack Service counts in both families; a slice in its own.
    cluster.upsert_service(service(
        "web",
        &["10.96.0.1", "fd00::1"],
        &[("http", Protocol::Tcp, 80)],
    ));
    cluster.upsert_slice(http_backend("web", "10.244.1.5"));
    cluster.upsert_slice(http_backend("web", "10.244.1.6"));
    source.poll_changes(&mut cluster).unwrap();
    let text = observer.metrics.render();
    let value = |series: &str| sample(&text, series).unwrap_or_else(|| panic!("{series}\n{text}"));
    let v4 = "{ip_family=\"IPv4\"}";
    let v6 = "{ip_family=\"IPv6\"}";
    assert_eq!(
        value(&format!(
            "kubeproxy_sync_proxy_rules_service_changes_total{v4}"
        )),
        1.0
    );
    assert_eq!(
        value(&format!(
            "kubeproxy_sync_proxy_rules_service_changes_total{v6}"
        )),
        1.0
    );
    assert_eq!(
        value(&format!(
            "kubeproxy_sync_proxy_rules_endpoint_changes_total{v4}"
        )),
        2.0
    );
    assert_eq!(
        value(&format!(
            "kubeproxy_sync_proxy_rules_endpoint_changes_total{v6}"
        )),
        0.0
    );
    // Pending: distinct Services (one Service, two slice changes).
    assert_eq!(
        value(&format!(
            "kubeproxy_sync_proxy_rules_endpoint_changes_pending{v4}"
        )),
        1.0
    );
    assert_eq!(
        value(&format!(
            "kubeproxy_sync_proxy_rules_service_changes_pending{v6}"
        )),
        1.0
    );
    // Planning takes the dirty set; the sync settles the pending gauges, the totals stay.
    cluster.take_dirty();
    assert_eq!(cluster.take_changes(), crate::model::ChangeTally::default());
    observer.on_sync(SyncKind::Incremental, &SyncOutcome::default());
    let text = observer.metrics.render();
    let value = |series: &str| sample(&text, series).unwrap_or_else(|| panic!("{series}\n{text}"));
    assert_eq!(
        value(&format!(
            "kubeproxy_sync_proxy_rules_endpoint_changes_pending{v4}"
        )),
        0.0
    );
    assert_eq!(
        value(&format!(
            "kubeproxy_sync_proxy_rules_service_changes_total{v4}"
        )),
        1.0
    );
    // The change queued a sync: its time is the last-queued timestamp.
    assert!(
        value(&format!(
            "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds{v4}"
        )) > 1.7e9
    );
}

#[test]
fn local_policies_without_local_endpoints_are_counted_after_a_sync() {
    let mut internal = service("internal", &["10.96.0.10"], &[("http", Protocol::Tcp, 80)]);
    internal.ports[0].internal_policy = TrafficPolicy::Local;
    let mut external = service("external", &["10.96.0.11"], &[("http", Protocol::Tcp, 80)]);
    external.ports[0].external_policy = TrafficPolicy::Local;
    external.ports[0].node_port = Some(30080);
    let mut local = service("local", &["10.96.0.12"], &[("http", Protocol::Tcp, 80)]);
    local.ports[0].internal_policy = TrafficPolicy::Local;
    let elsewhere = |svc: &str| {
        slice(
            svc,
            &format!("{svc}-1"),
            &[("http", Protocol::Tcp, 8080)],
            vec![ep("10.244.2.5", "node-b")],
        )
    };
    let state = crate::fixtures::cluster(
        vec![internal, external, local],
        vec![
            elsewhere("internal"),
            elsewhere("external"),
            http_backend("local", "10.244.1.7"),
        ],
    );
    let mut proxier = Proxier::new(
        Planner::new(node_a(), Config::default()),
        FakeDataplane::default(),
    );
    *proxier.cluster_mut() = state;
    let outcome = proxier.full_sync().unwrap();
    let counts = outcome.no_local_endpoints.clone().unwrap();
    assert_eq!(
        counts.get(&(crate::plan::TrafficScope::Internal, Family::V4)),
        Some(&1)
    );
    assert_eq!(
        counts.get(&(crate::plan::TrafficScope::External, Family::V4)),
        Some(&1)
    );
    let observer = observer();
    observer.on_sync(SyncKind::Full, &outcome);
    let text = observer.metrics.render();
    for policy in ["internal", "external"] {
        let series = format!(
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total{{traffic_policy=\"{policy}\",ip_family=\"IPv4\"}}"
        );
        assert_eq!(sample(&text, &series), Some(1.0), "{series}\n{text}");
    }
}

#[test]
fn owed_and_dropped_conntrack_flushes_are_metrics() {
    let observer = observer();
    let outcome = SyncOutcome {
        flushes_owed: 3,
        flushes_dropped: 7,
        ..SyncOutcome::default()
    };
    observer.on_sync(SyncKind::Full, &outcome);
    let text = observer.metrics.render();
    assert_eq!(sample(&text, "proxier_conntrack_flushes_owed"), Some(3.0));
    assert_eq!(
        sample(&text, "proxier_conntrack_flushes_dropped_total"),
        Some(7.0)
    );
    let counters = std::sync::Arc::new(crate::dataplane::kernel::KernelCounters::default());
    counters
        .ipvs_dump_skipped
        .fetch_add(2, std::sync::atomic::Ordering::Relaxed);
    let metrics = Metrics::new().with_kernel_counters(counters);
    assert_eq!(
        sample(
            &metrics.render(),
            "proxier_ipvs_dump_skipped_virtual_servers_total"
        ),
        Some(2.0)
    );
}

#[test]
fn the_metrics_server_answers_proxy_mode_and_configz() {
    let observer = observer();
    let settings = crate::config::ProxySettings::default();
    let handler = observer.metrics_handler(configz::configz(&settings));
    let mode = handler("/proxyMode").unwrap();
    assert_eq!((mode.status, mode.body.as_str()), (200, "ipvs"));
    let configz = handler("/configz").unwrap();
    assert_eq!(configz.content_type, "application/json");
    let body: serde_json::Value = serde_json::from_str(&configz.body).unwrap();
    assert_eq!(body["kubeproxy.config.k8s.io"]["mode"], "ipvs");
    assert!(handler("/metrics").unwrap().body.contains("kubeproxy_"));
}
