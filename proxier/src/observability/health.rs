//! Health: what `/healthz` and `/livez` answer.
//!
//! The rule (kube-proxy's `proxier_health.go`, with what counts as a sync made explicit):
//!
//! - **A sync that applied what it could is a sync.** A sync in which some operations failed
//!   (one virtual server the kernel keeps refusing, one real server that cannot be added) but
//!   the rest was applied counts as a sync, as kube-proxy counts a sync with per-Service
//!   errors. The failures are retried with backoff and named by the metric
//!   `proxier_sync_failures_total{operation}`, the gauge `proxier_sync_failing_operations`
//!   (failures of the last full resync) and a Warning Event `SyncFailed` on the Node, once per
//!   distinct failure.
//! - **Health turns 503 only when the loop is stuck or nothing could be applied for
//!   2 × syncPeriod**: an update (source change, failed operation) has waited longer than the
//!   timeout without a sync, or no sync has completed for longer than the timeout since the
//!   last one (the loop is stuck; a full resync runs every syncPeriod). A sync that applied
//!   nothing while something failed (the kernel unreadable, every write refused) does not
//!   count.
//! - `/healthz` is additionally unhealthy while the node is being deleted or carries the
//!   cluster autoscaler's `ToBeDeletedByClusterAutoscaler` taint (KEP-3836; the source
//!   decides, `source::kube::node_eligible`), so that load balancers drain it; `/livez` is not.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

#[derive(Debug)]
struct State {
    last_updated: Option<SystemTime>,
    last_synced: Option<Instant>,
    oldest_pending: Option<Instant>,
    node_eligible: bool,
}

/// The proxy's health as `/healthz` and `/livez` report it.
#[derive(Debug)]
pub struct Health {
    timeout: Duration,
    state: Mutex<State>,
}

/// One answer of the health endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthStatus {
    /// No update has waited longer than the timeout.
    pub healthy: bool,
    /// The node is not being deleted.
    pub node_eligible: bool,
    /// Time of the last sync.
    pub last_updated: Option<SystemTime>,
    /// Now.
    pub current_time: SystemTime,
}

impl Health {
    /// Health with kube-proxy's timeout for `sync_period`: twice the period.
    pub fn new(sync_period: Duration) -> Self {
        Self {
            timeout: sync_period * 2,
            state: Mutex::new(State {
                last_updated: None,
                last_synced: None,
                oldest_pending: None,
                node_eligible: true,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Three plain fields: still consistent after a panic elsewhere.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Something needs syncing (a source change, a failed operation, start-up); the oldest
    /// pending time is kept until [`Health::updated`].
    pub fn queued(&self, now: Instant) {
        self.state().oldest_pending.get_or_insert(now);
    }

    /// A sync completed at `now` (`wall`: the same moment on the clock); everything queued
    /// before it is done.
    pub fn updated(&self, now: Instant, wall: SystemTime) {
        let mut state = self.state();
        state.last_updated = Some(wall);
        state.last_synced = Some(now);
        state.oldest_pending = None;
    }

    /// Whether this node may receive load-balancer traffic (false while it is being deleted).
    pub fn set_node_eligible(&self, eligible: bool) {
        self.state().node_eligible = eligible;
    }

    /// The status at `now`.
    pub fn status(&self, now: Instant, current_time: SystemTime) -> HealthStatus {
        let state = self.state();
        let young = |since: Option<Instant>| {
            since.is_none_or(|since| now.saturating_duration_since(since) < self.timeout)
        };
        // Nothing has waited too long, and the loop is not stuck.
        let healthy = young(state.oldest_pending) && young(state.last_synced);
        HealthStatus {
            healthy,
            node_eligible: state.node_eligible,
            last_updated: state.last_updated,
            current_time,
        }
    }
}

/// Go's `time.Time.String()` layout, as kube-proxy prints it: `2006-01-02 15:04:05.999 +0000 UTC`.
fn go_time(time: Option<SystemTime>) -> String {
    let Some(time) = time else {
        return "0001-01-01 00:00:00 +0000 UTC".to_owned();
    };
    match k8s_openapi::jiff::Timestamp::try_from(time) {
        Ok(ts) => format!("{} +0000 UTC", ts.strftime("%Y-%m-%d %H:%M:%S%.f")),
        Err(_) => "0001-01-01 00:00:00 +0000 UTC".to_owned(),
    }
}

impl HealthStatus {
    /// `/healthz`: status code and kube-proxy's JSON body.
    pub fn healthz(&self) -> (u16, String) {
        let ok = self.healthy && self.node_eligible;
        (
            if ok { 200 } else { 503 },
            format!(
                "{{\"lastUpdated\": \"{}\",\"currentTime\": \"{}\", \"nodeEligible\": {}}}",
                go_time(self.last_updated),
                go_time(Some(self.current_time)),
                self.node_eligible
            ),
        )
    }

    /// `/livez`: status code and body (the node's deletion does not matter here).
    pub fn livez(&self) -> (u16, String) {
        (
            if self.healthy { 200 } else { 503 },
            format!(
                "{{\"lastUpdated\": \"{}\",\"currentTime\": \"{}\"}}",
                go_time(self.last_updated),
                go_time(Some(self.current_time))
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_until_an_update_waits_longer_than_twice_the_sync_period() {
        let health = Health::new(Duration::from_secs(30));
        let t0 = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        // Starting up, nothing queued: healthy (as kube-proxy).
        assert!(health.status(t0, wall).healthy);
        health.queued(t0);
        assert!(health.status(t0 + Duration::from_secs(59), wall).healthy);
        let late = health.status(t0 + Duration::from_secs(60), wall);
        assert!(!late.healthy);
        assert_eq!(late.healthz().0, 503);
        assert_eq!(late.livez().0, 503);
        // A later queue does not reset the oldest pending time.
        health.queued(t0 + Duration::from_secs(50));
        assert!(!health.status(t0 + Duration::from_secs(61), wall).healthy);
        // A sync clears it.
        health.updated(t0 + Duration::from_secs(62), wall);
        let synced = health.status(t0 + Duration::from_secs(62), wall);
        assert!(synced.healthy);
        assert_eq!(synced.last_updated, Some(wall));
        assert_eq!(synced.healthz().0, 200);
    }

    #[test]
    fn a_loop_that_stops_syncing_turns_unhealthy_after_twice_the_sync_period() {
        let health = Health::new(Duration::from_secs(30));
        let t0 = Instant::now();
        let wall = SystemTime::UNIX_EPOCH;
        health.updated(t0, wall);
        // Nothing queued, but no sync since t0: the loop is stuck.
        assert!(health.status(t0 + Duration::from_secs(59), wall).healthy);
        assert!(!health.status(t0 + Duration::from_secs(60), wall).healthy);
        health.updated(t0 + Duration::from_secs(61), wall);
        assert!(health.status(t0 + Duration::from_secs(61), wall).healthy);
    }

    #[test]
    fn node_deletion_fails_healthz_but_not_livez() {
        let health = Health::new(Duration::from_secs(30));
        let now = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_250);
        health.updated(now, wall);
        health.set_node_eligible(false);
        let status = health.status(now, wall);
        let (code, body) = status.healthz();
        assert_eq!(code, 503);
        assert_eq!(
            body,
            "{\"lastUpdated\": \"2023-11-14 22:13:20.25 +0000 UTC\",\
             \"currentTime\": \"2023-11-14 22:13:20.25 +0000 UTC\", \"nodeEligible\": false}"
        );
        assert_eq!(status.livez().0, 200);
    }
}
