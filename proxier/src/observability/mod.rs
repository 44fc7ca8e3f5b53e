//! Health, metrics and Events, with kube-proxy's names and semantics so that whatever watched
//! kube-proxy (liveness probes, load balancer health checks on :10256, Prometheus on :10249)
//! keeps working.
//!
//! [`Observer`] is the one place that meters: it wraps the [`Source`] (to learn when updates
//! are queued, which objects are skipped, EndpointSlice trigger times and the Node's
//! eligibility), takes the sync hook of [`crate::runtime::run`] (sync latency, planned real
//! servers), and serves `/healthz`, `/livez`, `/metrics`, `/proxyMode` and `/configz`.

pub mod configz;
pub mod events;
mod exposition;
mod health;
pub mod http;
#[cfg(test)]
mod leftover_tests;
mod metrics;
#[cfg(test)]
mod parity_tests;
mod process;
mod service_health;
#[cfg(test)]
mod tests;

pub use events::EventPublisher;
pub use health::{Health, HealthStatus};
pub use metrics::{Metrics, Probe};
pub use process::ProcessStats;
pub use service_health::ServiceHealthServer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::error::{Error, RejectReason};
use crate::model::ClusterState;
use crate::runtime::{SyncKind, SyncOutcome};
use crate::source::{Source, SourcePoll};

/// A stable metric label for why an object was skipped.
pub fn skip_reason(error: &Error) -> &'static str {
    match error {
        Error::Rejected { reason, .. } | Error::FieldSkipped { reason, .. } => match reason {
            RejectReason::MissingName => "missing_name",
            RejectReason::MissingSpec => "missing_spec",
            RejectReason::MissingServiceNameLabel => "missing_service_name_label",
            RejectReason::InvalidIp { .. } => "invalid_ip",
            RejectReason::PortOutOfRange { .. } => "port_out_of_range",
            RejectReason::UnknownProtocol(_) => "unknown_protocol",
            RejectReason::UnsupportedAddressType(_) => "unsupported_address_type",
            RejectReason::FamilyMismatch(_) => "family_mismatch",
            RejectReason::InvalidAffinityTimeout(_) => "invalid_affinity_timeout",
            RejectReason::Headless => "headless",
            RejectReason::ExternalName => "external_name",
            RejectReason::NoClusterIp => "no_cluster_ip",
            RejectReason::ServiceProxyName(_) => "service_proxy_name",
            RejectReason::HeadlessLabel => "headless_label",
        },
        Error::Yaml { .. } => "unreadable",
        _ => "other",
    }
}

/// Metrics, health and Events of one proxier process.
#[derive(Debug, Clone)]
pub struct Observer {
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// The health state.
    pub health: Arc<Health>,
    /// The Event publisher.
    pub events: Arc<EventPublisher>,
    /// The health checks of `externalTrafficPolicy: Local` LoadBalancer Services.
    pub service_health: Arc<std::sync::Mutex<ServiceHealthServer>>,
}

impl Observer {
    /// An observer for a proxy resyncing every `sync_period`.
    pub fn new(metrics: Metrics, sync_period: Duration, events: EventPublisher) -> Self {
        let health = Arc::new(Health::new(sync_period));
        Self {
            metrics: Arc::new(metrics),
            service_health: Arc::new(std::sync::Mutex::new(ServiceHealthServer::new(
                health.clone(),
            ))),
            health,
            events: Arc::new(events),
        }
    }

    /// The hook for [`crate::runtime::run`]: records the sync (and the planned real servers)
    /// in the metrics, its failures by operation (metric, Event), and in the health state as
    /// done when it counts as a sync (the rule in `health`'s module docs); a sync that applied
    /// nothing while something failed leaves the update pending. The service health checks
    /// follow the plan the sync carried.
    pub fn on_sync(&self, kind: SyncKind, outcome: &SyncOutcome) {
        let now = SystemTime::now();
        let full = kind != SyncKind::Incremental;
        for failure in &outcome.failures {
            let operation = failure.operation();
            self.metrics.count_sync_failure(operation);
            let note = crate::Report::new(failure).to_string();
            self.events.sync_failed(operation, &note);
        }
        if full {
            self.metrics.set_failing_operations(outcome.failed as u64);
        }
        if let Some(checks) = &outcome.health_checks {
            self.service_health
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .sync(checks);
        }
        self.metrics
            .set_flushes(outcome.flushes_owed, outcome.flushes_dropped);
        if let Some(report) = &outcome.leftovers {
            self.record_leftovers(report);
        }
        if !outcome.counts_as_sync() {
            self.queued(now);
            return;
        }
        self.metrics.record_sync(full, outcome.elapsed, now);
        if let Some(counts) = outcome.real_servers {
            self.metrics
                .set_real_servers(&[("serving", counts.serving), ("draining", counts.draining)]);
        }
        if let Some(counts) = &outcome.no_local_endpoints {
            self.metrics.set_no_local_endpoints(counts);
        }
        self.health.updated(Instant::now(), now);
    }

    /// Meters kube-proxy's leftovers removed (by kind) and reports them in an Event on the
    /// Node when anything was removed or kept back.
    pub fn record_leftovers(&self, report: &crate::dataplane::LeftoverReport) {
        self.metrics
            .count_leftovers_removed("rule", report.rules_removed());
        self.metrics
            .count_leftovers_removed("chain", report.chains_removed());
        self.metrics
            .count_leftovers_removed("ipset", report.sets_destroyed.len());
        let warning = !report.failures.is_empty() || !report.sets_in_use.is_empty();
        if report.removed_anything() || warning {
            self.events.leftovers(warning, &report.summary());
        }
    }

    /// Records what one poll of a source found: an update queued when something changed,
    /// skipped objects, EndpointSlice trigger times and the Node's eligibility.
    pub fn record_poll(&self, poll: &SourcePoll) {
        if poll.changed {
            self.queued(SystemTime::now());
        }
        self.record_skipped(&poll.skipped);
        for trigger in &poll.triggers {
            self.metrics.record_change_trigger(*trigger);
        }
        if let Some(eligible) = poll.node_eligible {
            self.health.set_node_eligible(eligible);
        }
    }

    /// A sync is queued at `at`: health waits for it, and
    /// `kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds` says when.
    pub fn queued(&self, at: SystemTime) {
        self.health.queued(Instant::now());
        self.metrics.record_queued(at);
    }

    /// Counts and reports skipped objects: a metric for each (labelled by [`skip_reason`]),
    /// an Event for invalid ones.
    pub fn record_skipped(&self, skipped: &[Error]) {
        for error in skipped {
            let reason = skip_reason(error);
            self.metrics.count_skipped(reason);
            match error {
                Error::Rejected {
                    object,
                    reason: why,
                } if why.is_invalid() => {
                    self.events.skipped(object, reason, &error.to_string());
                }
                Error::FieldSkipped { object, .. } => {
                    self.events.skipped(object, reason, &error.to_string());
                }
                _ => {}
            }
        }
    }

    /// Wraps a source so that every poll is recorded ([`Observer::record_poll`]).
    pub fn watch_source<S: Source>(&self, source: S) -> ObservedSource<S> {
        ObservedSource {
            inner: source,
            observer: self.clone(),
        }
    }

    /// Records conntrack sizing decisions as metrics, logs and Events on the node.
    pub fn record_sizing(&self, node: &str, report: &conntrack_gc::SizingReport) {
        for entry in &report.entries {
            let knob = entry.knob.to_string().replace(' ', "_");
            let decision = sizing_decision(&entry.reason);
            self.metrics.set_sizing(&knob, decision);
            if entry.is_failure() {
                tracing::warn!(%entry, "conntrack sizing");
            } else {
                tracing::info!(%entry, "conntrack sizing");
            }
            if entry.applied || entry.is_failure() {
                self.events
                    .sizing(node, &knob, entry.is_failure(), &entry.to_string());
            }
        }
    }

    /// Serves `/healthz` and `/livez` on `address`, retrying the bind every 5 s.
    pub fn spawn_health_server(&self, address: SocketAddr) {
        spawn_server(address, self.health_handler(), "health");
    }

    /// What the health server answers: `/healthz` and `/livez`, each answer counted in
    /// `kubeproxy_proxy_{healthz,livez}_total{code}`.
    pub fn health_handler(&self) -> http::Handler {
        let (health, metrics) = (self.health.clone(), self.metrics.clone());
        Arc::new(move |path| {
            let status = health.status(Instant::now(), SystemTime::now());
            let (probe, (code, body)) = match path {
                "/healthz" => (Probe::Healthz, status.healthz()),
                "/livez" => (Probe::Livez, status.livez()),
                _ => return None,
            };
            metrics.count_probe(probe, code);
            Some(http::Response::new(code, "application/json", body))
        })
    }

    /// Serves the metrics server's endpoints on `address` ([`Observer::metrics_handler`]),
    /// retrying the bind every 5 s.
    pub fn spawn_metrics_server(&self, address: SocketAddr, configz: String) {
        spawn_server(address, self.metrics_handler(configz), "metrics");
    }

    /// What the metrics server answers: `/metrics`, `/healthz` (`ok`), `/proxyMode`
    /// (`ipvs`) and `/configz` (`configz`, the effective configuration:
    /// [`configz::configz`]).
    pub fn metrics_handler(&self, configz: String) -> http::Handler {
        let metrics = self.metrics.clone();
        Arc::new(move |path| match path {
            "/metrics" => Some(http::Response::new(
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                metrics.render(),
            )),
            "/healthz" => Some(http::Response::new(200, "text/plain; charset=utf-8", "ok")),
            "/proxyMode" => Some(http::Response::new(
                200,
                "text/plain; charset=utf-8",
                configz::PROXY_MODE,
            )),
            "/configz" => Some(http::Response::new(
                200,
                "application/json",
                configz.clone(),
            )),
            _ => None,
        })
    }

    /// Reads the conntrack fill level every `period`: exported as a ratio, with a warning log
    /// at 90 % and above.
    pub fn spawn_conntrack_watch(&self, root: conntrack_gc::FsRoot, period: Duration) {
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(period);
            loop {
                interval.tick().await;
                match conntrack_gc::FillLevel::read(&root) {
                    Ok(level) => {
                        metrics.set_conntrack_fill_ratio(level.ratio());
                        if level.needs_warning() {
                            tracing::warn!(
                                count = level.count,
                                max = level.max,
                                "conntrack table is {:.0}% full: new connections will be \
                                 dropped when it is full (raise conntrack.maxPerCore)",
                                level.ratio() * 100.0
                            );
                        }
                    }
                    Err(error) => tracing::debug!(%error, "conntrack fill level unreadable"),
                }
            }
        });
    }
}

fn sizing_decision(reason: &conntrack_gc::sizing::SizingReason) -> &'static str {
    use conntrack_gc::sizing::SizingReason;
    match reason {
        SizingReason::AlreadySet => "already_set",
        SizingReason::HostLarger => "kept_host_larger",
        SizingReason::NeverLowered => "kept_never_lowered",
        SizingReason::Raised => "raised",
        SizingReason::Lowered => "lowered",
        SizingReason::LoweredAsConfigured => "lowered_as_configured",
        SizingReason::Missing => "missing",
        SizingReason::ReadOnly => "read_only",
        SizingReason::WriteFailed(_) => "write_failed",
        SizingReason::NotEffective { .. } => "not_effective",
    }
}

fn spawn_server(address: SocketAddr, handler: http::Handler, what: &'static str) {
    tokio::spawn(async move {
        loop {
            match http::bind(address).await {
                Ok(listener) => {
                    tracing::info!(%address, "{what} server listening");
                    http::serve(listener, handler).await;
                    return;
                }
                Err(error) => {
                    tracing::error!(error = %error.report(), "{what} server: retrying in 5s");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        }
    });
}

/// A [`Source`] whose changes and skipped objects are observed.
pub struct ObservedSource<S> {
    inner: S,
    observer: Observer,
}

impl<S> ObservedSource<S> {
    /// The wrapped source.
    pub fn inner_mut(&mut self) -> &mut S {
        &mut self.inner
    }
}

impl<S: Source> Source for ObservedSource<S> {
    fn poll_changes(&mut self, cluster: &mut ClusterState) -> Result<SourcePoll, Error> {
        let poll = self.inner.poll_changes(cluster)?;
        self.observer
            .metrics
            .record_changes(&cluster.take_changes());
        self.observer.record_poll(&poll);
        Ok(poll)
    }
}
