//! Prometheus metrics: kube-proxy's `kubeproxy_*` set with its names, types, buckets and labels
//! (`ip_family` on what kube-proxy counts per family), so existing dashboards and alerts keep
//! working; the `process_*` metrics and a build-info metric; and proxier's own `proxier_*`.
//! Exposed with `prometheus-client` in the Prometheus text format (version 0.0.4).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use netlink_ipvs::Family;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family as Labelled;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use super::exposition::{
    network_programming_histogram, sync_duration_histogram, ByCode, ByFamily, ByLeftoverKind,
    ByOperation, ByPolicy, ByReason, BySizing, ByState, ConstCounterCell, FloatGauge, Histograms,
    IpFamily, Readings,
};
use super::process::ProcessCollector;
use crate::dataplane::kernel::KernelCounters;
use crate::model::ChangeTally;
use crate::plan::{NoLocalEndpoints, TrafficScope};

/// The `/healthz` or `/livez` endpoint, for `kubeproxy_proxy_{healthz,livez}_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// `/healthz`.
    Healthz,
    /// `/livez`.
    Livez,
}

/// Every metric proxier exports, updated from the sync hook, the sources, the health
/// endpoints and the periodic conntrack check; read by the `/metrics` handler.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    families: Mutex<Vec<IpFamily>>,
    syncs: AtomicU64,
    sync_duration: Histograms,
    full_sync_duration: Histograms,
    partial_sync_duration: Histograms,
    network_programming: Histograms,
    last_sync: Labelled<ByFamily, FloatGauge>,
    last_queued: Labelled<ByFamily, FloatGauge>,
    endpoint_changes: Labelled<ByFamily, Counter>,
    endpoint_changes_pending: Labelled<ByFamily, Gauge>,
    service_changes: Labelled<ByFamily, Counter>,
    service_changes_pending: Labelled<ByFamily, Gauge>,
    no_local_endpoints: Labelled<ByPolicy, Gauge>,
    iptables_restore_failures: Labelled<ByFamily, Counter>,
    healthz: Labelled<ByCode, Counter>,
    livez: Labelled<ByCode, Counter>,
    /// EndpointSlice change trigger times not yet covered by a sync.
    pending_triggers: Mutex<Vec<SystemTime>>,
    readings: Arc<Readings>,
    real_servers: Labelled<ByState, Gauge>,
    skipped: Labelled<ByReason, Counter>,
    sizing: Labelled<BySizing, Gauge>,
    sizing_taken: Mutex<BTreeMap<String, String>>,
    sync_failures: Labelled<ByOperation, Counter>,
    leftovers_removed: Labelled<ByLeftoverKind, Counter>,
    failing_operations: Gauge,
    flushes_owed: Gauge,
    flushes_dropped: Gauge,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a metrics lock leaves plain values behind: still usable.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn seconds_since_epoch(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Default for Metrics {
    fn default() -> Self {
        let histograms = |make: fn() -> Histogram| Histograms::new_with_constructor(make);
        let readings = Arc::new(Readings {
            conntrack_fill_ratio: AtomicU64::new(f64::NAN.to_bits()),
            kernel: OnceLock::new(),
        });
        let metrics = Self {
            registry: Registry::default(),
            families: Mutex::new(Vec::new()),
            syncs: AtomicU64::new(0),
            sync_duration: histograms(sync_duration_histogram),
            full_sync_duration: histograms(sync_duration_histogram),
            partial_sync_duration: histograms(sync_duration_histogram),
            network_programming: histograms(network_programming_histogram),
            last_sync: Labelled::default(),
            last_queued: Labelled::default(),
            endpoint_changes: Labelled::default(),
            endpoint_changes_pending: Labelled::default(),
            service_changes: Labelled::default(),
            service_changes_pending: Labelled::default(),
            no_local_endpoints: Labelled::default(),
            iptables_restore_failures: Labelled::default(),
            healthz: Labelled::default(),
            livez: Labelled::default(),
            pending_triggers: Mutex::new(Vec::new()),
            readings,
            real_servers: Labelled::default(),
            skipped: Labelled::default(),
            sizing: Labelled::default(),
            sizing_taken: Mutex::new(BTreeMap::new()),
            sync_failures: Labelled::default(),
            leftovers_removed: Labelled::default(),
            failing_operations: Gauge::default(),
            flushes_owed: Gauge::default(),
            flushes_dropped: Gauge::default(),
        };
        metrics.register()
    }
}

impl Metrics {
    /// Empty metrics for an IPv4 node (see [`Metrics::set_families`]).
    pub fn new() -> Self {
        let metrics = Self::default();
        metrics.set_families(&[Family::V4]);
        metrics
    }

    fn register(mut self) -> Self {
        let r = &mut self.registry;
        r.register(
            "kubeproxy_sync_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds",
            self.sync_duration.clone(),
        );
        r.register(
            "kubeproxy_sync_full_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for full resyncs",
            self.full_sync_duration.clone(),
        );
        r.register(
            "kubeproxy_sync_partial_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for partial resyncs",
            self.partial_sync_duration.clone(),
        );
        r.register(
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "The last time proxy rules were successfully synced",
            self.last_sync.clone(),
        );
        r.register(
            "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
            "The last time a sync of proxy rules was queued",
            self.last_queued.clone(),
        );
        r.register(
            "kubeproxy_network_programming_duration_seconds",
            "In Cluster Network Programming Latency in seconds",
            self.network_programming.clone(),
        );
        r.register(
            "kubeproxy_sync_proxy_rules_endpoint_changes_pending",
            "Pending proxy rules Endpoint changes",
            self.endpoint_changes_pending.clone(),
        );
        r.register(
            "kubeproxy_sync_proxy_rules_endpoint_changes",
            "Cumulative proxy rules Endpoint changes",
            self.endpoint_changes.clone(),
        );
        r.register(
            "kubeproxy_sync_proxy_rules_service_changes_pending",
            "Pending proxy rules Service changes",
            self.service_changes_pending.clone(),
        );
        r.register(
            "kubeproxy_sync_proxy_rules_service_changes",
            "Cumulative proxy rules Service changes",
            self.service_changes.clone(),
        );
        r.register(
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total",
            "Number of services with a Local traffic policy and no endpoints",
            self.no_local_endpoints.clone(),
        );
        // Registered in IPVS mode by kube-proxy; proxier runs no iptables-restore, so it stays 0.
        r.register(
            "kubeproxy_sync_proxy_rules_iptables_restore_failures",
            "Cumulative proxy iptables restore failures",
            self.iptables_restore_failures.clone(),
        );
        r.register(
            "kubeproxy_proxy_healthz",
            "Cumulative proxy healthz HTTP status",
            self.healthz.clone(),
        );
        r.register(
            "kubeproxy_proxy_livez",
            "Cumulative proxy livez HTTP status",
            self.livez.clone(),
        );
        r.register(
            "proxier_build",
            "proxier's version, as a label of a metric of value 1",
            Info::new(vec![
                ("version", env!("CARGO_PKG_VERSION")),
                ("arch", std::env::consts::ARCH),
            ]),
        );
        r.register_collector(Box::new(ProcessCollector::default()));
        r.register_collector(Box::new(self.readings.clone()));
        r.register(
            "proxier_real_servers",
            "Planned IPVS real servers by state",
            self.real_servers.clone(),
        );
        r.register(
            "proxier_skipped_objects",
            "Kubernetes objects not proxied, by reason",
            self.skipped.clone(),
        );
        r.register(
            "proxier_sync_failures",
            "Writes a sync could not apply (retried), by operation",
            self.sync_failures.clone(),
        );
        r.register(
            "proxier_kube_proxy_leftovers_removed",
            "kube-proxy's leftover iptables rules, chains and ipsets removed at takeover, by kind",
            self.leftovers_removed.clone(),
        );
        r.register(
            "proxier_sync_failing_operations",
            "Writes the last full resync could not apply",
            self.failing_operations.clone(),
        );
        r.register(
            "proxier_conntrack_sizing",
            "Conntrack sizing decision per knob (1 = the decision taken)",
            self.sizing.clone(),
        );
        r.register(
            "proxier_conntrack_flushes_owed",
            "Conntrack flushes that failed and are retried by the next sync",
            self.flushes_owed.clone(),
        );
        r.register(
            "proxier_conntrack_flushes_dropped",
            "Failed conntrack flushes given up because too many were owed (entries expire by timeout)",
            ConstCounterCell(self.flushes_dropped.clone()),
        );
        self
    }

    /// Reads the kernel dataplane's counters at every scrape
    /// (`proxier_conntrack_entries_flushed_total`, `proxier_ipvs_dump_skipped_virtual_servers_total`).
    pub fn with_kernel_counters(self, counters: Arc<KernelCounters>) -> Self {
        // Set once, at start-up; a second call keeps the first.
        let _ = self.readings.kernel.set(counters);
        self
    }

    /// The families this node proxies (kube-proxy runs one proxier per family): every
    /// `ip_family` series is shown for them from the start. Sync durations and timestamps are
    /// recorded for each (proxier syncs both families in one pass).
    pub fn set_families(&self, families: &[Family]) {
        let mut labels: Vec<IpFamily> = families.iter().map(|f| IpFamily::from(*f)).collect();
        labels.sort_unstable();
        labels.dedup();
        if labels.is_empty() {
            labels.push(IpFamily::IPv4);
        }
        for &ip_family in &labels {
            let by = ByFamily { ip_family };
            // Creating the series is the point; the guards are released at once.
            drop(self.sync_duration.get_or_create(&by));
            drop(self.network_programming.get_or_create(&by));
            drop(self.last_sync.get_or_create(&by));
            drop(self.last_queued.get_or_create(&by));
            drop(self.iptables_restore_failures.get_or_create(&by));
            for family in [&self.endpoint_changes, &self.service_changes] {
                drop(family.get_or_create(&by));
            }
            for family in [
                &self.endpoint_changes_pending,
                &self.service_changes_pending,
            ] {
                drop(family.get_or_create(&by));
            }
            for traffic_policy in ["internal", "external"] {
                drop(self.no_local_endpoints.get_or_create(&ByPolicy {
                    traffic_policy,
                    ip_family,
                }));
            }
        }
        *lock(&self.families) = labels;
    }

    fn families(&self) -> Vec<IpFamily> {
        lock(&self.families).clone()
    }

    /// Records a finished sync: durations, the timestamp, and the network programming
    /// latency of every EndpointSlice change it covered (under the first family: trigger
    /// times carry none). Pending changes are settled.
    pub fn record_sync(&self, full: bool, elapsed: Duration, finished: SystemTime) {
        let seconds = elapsed.as_secs_f64();
        let by_kind = if full {
            &self.full_sync_duration
        } else {
            &self.partial_sync_duration
        };
        let families = self.families();
        for &ip_family in &families {
            let by = ByFamily { ip_family };
            self.sync_duration.get_or_create(&by).observe(seconds);
            by_kind.get_or_create(&by).observe(seconds);
            self.last_sync
                .get_or_create(&by)
                .set(seconds_since_epoch(finished));
            self.endpoint_changes_pending.get_or_create(&by).set(0);
            self.service_changes_pending.get_or_create(&by).set(0);
        }
        self.syncs.fetch_add(1, Ordering::Relaxed);
        let triggers = std::mem::take(&mut *lock(&self.pending_triggers));
        let Some(&first) = families.first() else {
            return;
        };
        let histogram = self
            .network_programming
            .get_or_create(&ByFamily { ip_family: first });
        for trigger in triggers {
            if let Ok(latency) = finished.duration_since(trigger) {
                histogram.observe(latency.as_secs_f64());
            }
        }
    }

    /// A sync was queued at `at` (a source change, a failed operation, start-up).
    pub fn record_queued(&self, at: SystemTime) {
        for ip_family in self.families() {
            self.last_queued
                .get_or_create(&ByFamily { ip_family })
                .set(seconds_since_epoch(at));
        }
    }

    /// Counts the Service and EndpointSlice changes a poll brought and sets how many are
    /// pending (not planned yet).
    pub fn record_changes(&self, tally: &ChangeTally) {
        let count = |family: &Labelled<ByFamily, Counter>, changes: &BTreeMap<Family, u64>| {
            for (f, n) in changes {
                family
                    .get_or_create(&ByFamily {
                        ip_family: (*f).into(),
                    })
                    .inc_by(*n);
            }
        };
        count(&self.service_changes, &tally.service_changes);
        count(&self.endpoint_changes, &tally.endpoint_changes);
        for (gauge, pending) in [
            (&self.service_changes_pending, &tally.services_pending),
            (&self.endpoint_changes_pending, &tally.endpoints_pending),
        ] {
            for ip_family in self.families() {
                let n = pending.get(&ip_family.into()).copied().unwrap_or(0);
                gauge
                    .get_or_create(&ByFamily { ip_family })
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
    }

    /// Sets the Service ports with a `Local` policy and no local endpoint.
    pub fn set_no_local_endpoints(&self, counts: &NoLocalEndpoints) {
        for ip_family in self.families() {
            for (scope, traffic_policy) in [
                (TrafficScope::Internal, "internal"),
                (TrafficScope::External, "external"),
            ] {
                let n = counts.get(&(scope, ip_family.into())).copied().unwrap_or(0);
                self.no_local_endpoints
                    .get_or_create(&ByPolicy {
                        traffic_policy,
                        ip_family,
                    })
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
    }

    /// Counts one answer of `/healthz` or `/livez`.
    pub fn count_probe(&self, probe: Probe, code: u16) {
        let family = match probe {
            Probe::Healthz => &self.healthz,
            Probe::Livez => &self.livez,
        };
        family
            .get_or_create(&ByCode {
                code: code.to_string(),
            })
            .inc();
    }

    /// Notes an EndpointSlice's `endpoints.kubernetes.io/last-change-trigger-time`; the next
    /// sync observes `now - trigger` in `kubeproxy_network_programming_duration_seconds`.
    pub fn record_change_trigger(&self, trigger: SystemTime) {
        lock(&self.pending_triggers).push(trigger);
    }

    /// Sets the conntrack table fill ratio (count / max).
    pub fn set_conntrack_fill_ratio(&self, ratio: f64) {
        self.readings
            .conntrack_fill_ratio
            .store(ratio.to_bits(), Ordering::Relaxed);
    }

    /// Sets the number of planned real servers in each state (`serving`, `draining`).
    pub fn set_real_servers(&self, counts: &[(&'static str, u64)]) {
        for (state, count) in counts {
            self.real_servers
                .get_or_create(&ByState { state })
                .set(i64::try_from(*count).unwrap_or(i64::MAX));
        }
    }

    /// Counts one skipped object.
    pub fn count_skipped(&self, reason: &str) {
        self.skipped
            .get_or_create(&ByReason {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Records a conntrack sizing decision for one knob (the gauge is 1 for the decision
    /// taken, replacing any earlier decision for that knob).
    pub fn set_sizing(&self, knob: &str, decision: &str) {
        let mut taken = lock(&self.sizing_taken);
        if let Some(old) = taken.insert(knob.to_owned(), decision.to_owned()) {
            self.sizing.remove(&BySizing {
                knob: knob.to_owned(),
                decision: old,
            });
        }
        self.sizing
            .get_or_create(&BySizing {
                knob: knob.to_owned(),
                decision: decision.to_owned(),
            })
            .set(1);
    }

    /// Counts one failed write of a sync, by operation kind ([`crate::runtime::SyncFailure::operation`]).
    pub fn count_sync_failure(&self, operation: &'static str) {
        self.sync_failures
            .get_or_create(&ByOperation { operation })
            .inc();
    }

    /// Counts kube-proxy's leftovers removed: `kind` is `rule`, `chain` or `ipset`.
    pub fn count_leftovers_removed(&self, kind: &'static str, count: usize) {
        self.leftovers_removed
            .get_or_create(&ByLeftoverKind { kind })
            .inc_by(count as u64);
    }

    /// Sets how many writes the last full resync could not apply.
    pub fn set_failing_operations(&self, count: u64) {
        self.failing_operations
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Sets the conntrack flushes owed and the cumulative count of dropped ones.
    pub fn set_flushes(&self, owed: usize, dropped: u64) {
        self.flushes_owed
            .set(i64::try_from(owed).unwrap_or(i64::MAX));
        self.flushes_dropped
            .set(i64::try_from(dropped).unwrap_or(i64::MAX));
    }

    /// Number of syncs recorded.
    pub fn sync_count(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// The text exposition (Prometheus format 0.0.4) of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail; an encoder error would only cut the text short.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}
