//! The sync loop: coalesce source changes, respect `minSyncPeriod`, re-read the kernel and
//! repair drift every `syncPeriod`, retry failed operations with backoff without blocking the
//! rest.
//!
//! [`Proxier`] is the synchronous core (plan → reconcile → apply, with the kernel mirror);
//! [`run_directory`] drives it from a [`DirectorySource`] on a tokio timer.

mod engine;

pub use engine::{Proxier, SyncOutcome};

use std::future::Future;
use std::time::{Duration, Instant};

use crate::dataplane::Dataplane;
use crate::error::Error;
use crate::source::{DirectorySource, SnapshotSync};

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

/// Loads the directory, adopts the kernel state, then follows the files until `shutdown`
/// resolves. Kernel state is left as it is when the loop ends.
pub async fn run_directory<D: Dataplane>(
    proxier: &mut Proxier<D>,
    mut source: DirectorySource,
    timing: SyncTiming,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let mut snapshot = SnapshotSync::new();
    let mut load =
        |source: &mut DirectorySource, proxier: &mut Proxier<D>| -> Result<bool, Error> {
            let poll = source.poll()?;
            for problem in &poll.problems {
                tracing::warn!(%problem, "unreadable input kept its previous objects");
            }
            if !poll.changed {
                return Ok(false);
            }
            let report = snapshot.apply(&source.objects(), proxier.cluster_mut());
            for skipped in &report.skipped {
                tracing::warn!(%skipped, "object skipped");
            }
            proxier.count_skipped(&report.skipped);
            Ok(report.upserted + report.removed > 0)
        };
    load(&mut source, proxier)?;
    let outcome = proxier.full_sync()?;
    tracing::info!(?outcome, "initial sync (kernel state adopted)");
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
        pending |= load(&mut source, proxier)?;
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
                }
                Err(error) => {
                    tracing::error!(%error, "resync could not read the kernel; nothing changed");
                    backoff.failed(now);
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
            last_sync = now;
            pending = false;
        }
    }
    Ok(())
}
