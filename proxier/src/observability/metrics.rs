//! Prometheus metrics with kube-proxy's names (so existing dashboards and alerts keep working)
//! plus proxier's own, rendered in the text exposition format (version 0.0.4).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A cumulative histogram with fixed upper bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    bounds: Vec<f64>,
    /// Observations per bucket (not cumulative); the last one is `+Inf`.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    /// A histogram with these upper bounds (sorted ascending).
    pub fn new(bounds: Vec<f64>) -> Self {
        let counts = vec![0; bounds.len() + 1];
        Self {
            bounds,
            counts,
            sum: 0.0,
            count: 0,
        }
    }

    /// kube-proxy's sync duration buckets: `ExponentialBuckets(0.001, 2, 15)`.
    pub fn sync_duration() -> Self {
        Self::new((0..15).map(|i| 0.001 * f64::from(1u32 << i)).collect())
    }

    /// kube-proxy's network programming buckets: 0.25 s .. 5 min.
    pub fn network_programming() -> Self {
        let mut bounds = vec![0.25, 0.5];
        bounds.extend((1..=59).map(f64::from));
        bounds.extend((0..12).map(|i| 60.0 + 5.0 * f64::from(i)));
        bounds.extend((0..7).map(|i| 120.0 + 30.0 * f64::from(i)));
        bounds.sort_by(f64::total_cmp);
        bounds.dedup();
        Self::new(bounds)
    }

    /// Records one value.
    pub fn observe(&mut self, value: f64) {
        let bucket = self
            .bounds
            .iter()
            .position(|bound| value <= *bound)
            .unwrap_or(self.bounds.len());
        self.counts[bucket] += 1;
        self.sum += value;
        self.count += 1;
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count
    }

    #[cfg(test)]
    pub(super) fn render_for_test(&self, out: &mut String) {
        self.render(out, "h", "test");
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            cumulative += count;
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}\n{name}_count {}", self.sum, self.count);
    }
}

/// Every metric proxier exports, updated from the sync hook, the sources and the periodic
/// conntrack check; read by the `/metrics` handler.
#[derive(Debug)]
pub struct Metrics {
    sync_duration: Mutex<Histogram>,
    full_sync_duration: Mutex<Histogram>,
    partial_sync_duration: Mutex<Histogram>,
    network_programming: Mutex<Histogram>,
    /// Seconds since the epoch of the last sync, as f64 bits (0 = never).
    last_sync: AtomicU64,
    /// EndpointSlice change trigger times not yet covered by a sync.
    pending_triggers: Mutex<Vec<SystemTime>>,
    /// Conntrack fill ratio as f64 bits (NaN = never read).
    conntrack_fill_ratio: AtomicU64,
    conntrack_flushed: Arc<AtomicU64>,
    real_servers: Mutex<BTreeMap<&'static str, u64>>,
    skipped: Mutex<BTreeMap<String, u64>>,
    sizing: Mutex<BTreeMap<(String, String), u64>>,
    sync_failures: Mutex<BTreeMap<&'static str, u64>>,
    failing_operations: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a metrics lock leaves plain counters behind: still usable.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn seconds_since_epoch(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Escapes a label value for the text format.
/// One metric family with one label: `# HELP`, `# TYPE`, then a sample per `(value, count)`.
fn write_labelled<K: AsRef<str>, V: std::fmt::Display>(
    out: &mut String,
    (name, kind, label): (&str, &str, &str),
    help: &str,
    samples: impl Iterator<Item = (K, V)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (value, count) in samples {
        let value = escape(value.as_ref());
        let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {count}");
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            sync_duration: Mutex::new(Histogram::sync_duration()),
            full_sync_duration: Mutex::new(Histogram::sync_duration()),
            partial_sync_duration: Mutex::new(Histogram::sync_duration()),
            network_programming: Mutex::new(Histogram::network_programming()),
            last_sync: AtomicU64::new(0f64.to_bits()),
            pending_triggers: Mutex::new(Vec::new()),
            conntrack_fill_ratio: AtomicU64::new(f64::NAN.to_bits()),
            conntrack_flushed: Arc::new(AtomicU64::new(0)),
            real_servers: Mutex::new(BTreeMap::new()),
            skipped: Mutex::new(BTreeMap::new()),
            sizing: Mutex::new(BTreeMap::new()),
            sync_failures: Mutex::new(BTreeMap::new()),
            failing_operations: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// Empty metrics.
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses `counter` (the dataplane's count of flushed conntrack entries) for
    /// `proxier_conntrack_entries_flushed_total`.
    pub fn with_conntrack_flushed(mut self, counter: Arc<AtomicU64>) -> Self {
        self.conntrack_flushed = counter;
        self
    }

    /// Records a finished sync: durations, the timestamp, and the network programming
    /// latency of every EndpointSlice change it covered.
    pub fn record_sync(&self, full: bool, elapsed: Duration, finished: SystemTime) {
        let seconds = elapsed.as_secs_f64();
        lock(&self.sync_duration).observe(seconds);
        let by_kind = if full {
            &self.full_sync_duration
        } else {
            &self.partial_sync_duration
        };
        lock(by_kind).observe(seconds);
        self.last_sync
            .store(seconds_since_epoch(finished).to_bits(), Ordering::Relaxed);
        let triggers = std::mem::take(&mut *lock(&self.pending_triggers));
        let mut histogram = lock(&self.network_programming);
        for trigger in triggers {
            if let Ok(latency) = finished.duration_since(trigger) {
                histogram.observe(latency.as_secs_f64());
            }
        }
    }

    /// Notes an EndpointSlice's `endpoints.kubernetes.io/last-change-trigger-time`; the next
    /// sync observes `now - trigger` in `kubeproxy_network_programming_duration_seconds`.
    pub fn record_change_trigger(&self, trigger: SystemTime) {
        lock(&self.pending_triggers).push(trigger);
    }

    /// Sets the conntrack table fill ratio (count / max).
    pub fn set_conntrack_fill_ratio(&self, ratio: f64) {
        self.conntrack_fill_ratio
            .store(ratio.to_bits(), Ordering::Relaxed);
    }

    /// Sets the number of planned real servers in each state (`serving`, `draining`).
    pub fn set_real_servers(&self, counts: &[(&'static str, u64)]) {
        let mut map = lock(&self.real_servers);
        for (state, count) in counts {
            map.insert(state, *count);
        }
    }

    /// Counts one skipped object.
    pub fn count_skipped(&self, reason: &str) {
        *lock(&self.skipped).entry(reason.to_owned()).or_default() += 1;
    }

    /// Records a conntrack sizing decision for one knob (the gauge is 1 for the decision
    /// taken, replacing any earlier decision for that knob).
    pub fn set_sizing(&self, knob: &str, decision: &str) {
        let mut map = lock(&self.sizing);
        map.retain(|(k, _), _| k != knob);
        map.insert((knob.to_owned(), decision.to_owned()), 1);
    }

    /// Counts one failed write of a sync, by operation kind ([`crate::runtime::SyncFailure::operation`]).
    pub fn count_sync_failure(&self, operation: &'static str) {
        *lock(&self.sync_failures).entry(operation).or_default() += 1;
    }

    /// Sets how many writes the last full resync could not apply.
    pub fn set_failing_operations(&self, count: u64) {
        self.failing_operations.store(count, Ordering::Relaxed);
    }

    /// Number of syncs recorded.
    pub fn sync_count(&self) -> u64 {
        lock(&self.sync_duration).count()
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        lock(&self.sync_duration).render(
            &mut out,
            "kubeproxy_sync_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds",
        );
        lock(&self.full_sync_duration).render(
            &mut out,
            "kubeproxy_sync_full_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for full resyncs",
        );
        lock(&self.partial_sync_duration).render(
            &mut out,
            "kubeproxy_sync_partial_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for partial resyncs",
        );
        let last = f64::from_bits(self.last_sync.load(Ordering::Relaxed));
        let _ = writeln!(
            out,
            "# HELP kubeproxy_sync_proxy_rules_last_timestamp_seconds The last time proxy rules were successfully synced\n\
             # TYPE kubeproxy_sync_proxy_rules_last_timestamp_seconds gauge\n\
             kubeproxy_sync_proxy_rules_last_timestamp_seconds {last}"
        );
        lock(&self.network_programming).render(
            &mut out,
            "kubeproxy_network_programming_duration_seconds",
            "In Cluster Network Programming Latency in seconds",
        );
        let ratio = f64::from_bits(self.conntrack_fill_ratio.load(Ordering::Relaxed));
        if !ratio.is_nan() {
            let _ = writeln!(
                out,
                "# HELP proxier_conntrack_fill_ratio nf_conntrack_count / nf_conntrack_max\n\
                 # TYPE proxier_conntrack_fill_ratio gauge\nproxier_conntrack_fill_ratio {ratio}"
            );
        }
        let flushed = self.conntrack_flushed.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP proxier_conntrack_entries_flushed_total Conntrack entries deleted for removed endpoints and services\n\
             # TYPE proxier_conntrack_entries_flushed_total counter\n\
             proxier_conntrack_entries_flushed_total {flushed}"
        );
        write_labelled(
            &mut out,
            ("proxier_real_servers", "gauge", "state"),
            "Planned IPVS real servers by state",
            lock(&self.real_servers).iter(),
        );
        write_labelled(
            &mut out,
            ("proxier_skipped_objects_total", "counter", "reason"),
            "Kubernetes objects not proxied, by reason",
            lock(&self.skipped).iter(),
        );
        write_labelled(
            &mut out,
            ("proxier_sync_failures_total", "counter", "operation"),
            "Writes a sync could not apply (retried), by operation",
            lock(&self.sync_failures).iter(),
        );
        let failing = self.failing_operations.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP proxier_sync_failing_operations Writes the last full resync could not apply\n\
             # TYPE proxier_sync_failing_operations gauge\n\
             proxier_sync_failing_operations {failing}"
        );
        let _ = writeln!(
            out,
            "# HELP proxier_conntrack_sizing Conntrack sizing decision per knob (1 = the decision taken)\n\
             # TYPE proxier_conntrack_sizing gauge"
        );
        for ((knob, decision), value) in lock(&self.sizing).iter() {
            let (knob, decision) = (escape(knob), escape(decision));
            let _ = writeln!(
                out,
                "proxier_conntrack_sizing{{knob=\"{knob}\",decision=\"{decision}\"}} {value}"
            );
        }
        out
    }
}
