//! The sync loop: coalesce source changes, respect `minSyncPeriod`, re-read the kernel and
//! repair drift every `syncPeriod`, retry failed operations with backoff without blocking the
//! rest.
//!
//! [`Proxier`] is the synchronous core (plan → reconcile → apply, with the kernel mirror);
//! [`run`] drives it from a [`Source`] (a directory of YAML, the Kubernetes API) on a tokio
//! timer.

mod engine;
#[cfg(test)]
mod leftover_tests;
mod preview;
#[cfg(test)]
mod tests;

pub use engine::{Proxier, SyncFailure, SyncOutcome};
pub use preview::Preview;

use std::future::Future;
use std::time::{Duration, Instant};

use crate::dataplane::Dataplane;
use crate::error::Error;
use crate::source::Source;

/// How often things happen.
#[derive(Debug, Clone, Copy)]
pub struct SyncTiming {
    /// Least time between two syncs (kube-proxy's `minSyncPeriod`, default 1 s; 0 = at once).
    pub min_sync_period: Duration,
    /// Full resync period (kube-proxy's `syncPeriod`, default 30 s).
    pub sync_period: Duration,
    /// How often the source is polled for changes.
    pub poll_period: Duration,
}

impl Default for SyncTiming {
    fn default() -> Self {
        Self {
            min_sync_period: Duration::from_secs(1),
            sync_period: Duration::from_secs(30),
            poll_period: Duration::from_millis(200),
        }
    }
}

/// Exponential backoff for retrying failed operations: 1 s doubling up to 30 s.
#[derive(Debug, Default)]
struct Backoff {
    next_delay: Option<Duration>,
    due: Option<Instant>,
}

impl Backoff {
    fn failed(&mut self, now: Instant) {
        let delay = self.next_delay.map_or(Duration::from_secs(1), |d| {
            (d * 2).min(Duration::from_secs(30))
        });
        self.next_delay = Some(delay);
        self.due = Some(now + delay);
    }

    fn succeeded(&mut self) {
        *self = Backoff::default();
    }

    fn is_due(&self, now: Instant) -> bool {
        self.due.is_some_and(|due| now >= due)
    }
}

/// Which kind of sync ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SyncKind {
    /// Start-up: the kernel state was adopted.
    Initial,
    /// After source changes.
    Incremental,
    /// Periodic or retry: kernel re-read, drift repaired.
    Full,
}

/// Loads the source, adopts the kernel state, then follows the source until `shutdown`
/// resolves, calling `on_sync` after every sync (metrics, health). The kernel state is left as
/// it is when the loop ends, and when the source fails.
pub async fn run<D: Dataplane, S: Source>(
    proxier: &mut Proxier<D>,
    source: &mut S,
    timing: SyncTiming,
    mut on_sync: impl FnMut(SyncKind, &SyncOutcome),
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let poll = |source: &mut S, proxier: &mut Proxier<D>| -> Result<bool, Error> {
        match source.poll_changes(proxier.cluster_mut()) {
            Ok(found) => {
                for skipped in &found.skipped {
                    tracing::warn!(%skipped, "object skipped");
                }
                Ok(found.changed)
            }
            // Not a failure of the source: the process must restart (kube-proxy exits too).
            Err(error @ Error::NodeAddressesChanged { .. }) => Err(error),
            Err(error) => {
                tracing::error!(error = %error.report(), "source unavailable; kernel state kept as it is");
                Ok(false)
            }
        }
    };
    poll(source, proxier)?;
    proxier.poll_node_addresses();
    let outcome = proxier.full_sync()?;
    tracing::info!(?outcome, "initial sync (kernel state adopted)");
    on_sync(SyncKind::Initial, &outcome);
    let mut backoff = Backoff::default();
    if outcome.failed > 0 {
        backoff.failed(Instant::now());
    }
    let mut last_sync = Instant::now();
    let mut next_resync = last_sync + timing.sync_period;
    let mut pending = false;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            () = tokio::time::sleep(timing.poll_period) => {}
        }
        pending |= poll(source, proxier)?;
        pending |= proxier.poll_node_addresses();
        let now = Instant::now();
        if now >= next_resync || backoff.is_due(now) {
            match proxier.full_sync() {
                Ok(outcome) => {
                    tracing::info!(?outcome, "full resync");
                    if outcome.failed > 0 {
                        backoff.failed(now);
                    } else {
                        backoff.succeeded();
                    }
                    on_sync(SyncKind::Full, &outcome);
                }
                Err(error) => {
                    tracing::error!(error = %error.report(), "resync could not read the kernel; nothing changed");
                    backoff.failed(now);
                    on_sync(
                        SyncKind::Full,
                        &SyncOutcome::kernel_unreadable(error, now.elapsed()),
                    );
                }
            }
            next_resync = now + timing.sync_period;
            last_sync = now;
            pending = false;
        } else if pending && now >= last_sync + timing.min_sync_period {
            let outcome = proxier.incremental_sync();
            tracing::info!(?outcome, "sync");
            if outcome.failed > 0 {
                backoff.failed(now);
            }
            on_sync(SyncKind::Incremental, &outcome);
            last_sync = now;
            pending = false;
        }
    }
    Ok(())
}
