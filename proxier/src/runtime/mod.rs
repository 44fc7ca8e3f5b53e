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
mod repair_tests;
#[cfg(test)]
mod resync_tests;
#[cfg(test)]
mod tests;

pub use engine::{Proxier, SyncFailure, SyncOutcome, SyncParts};
pub use preview::Preview;

use std::future::Future;
use std::time::{Duration, Instant};

use netlink_ipvs::IpvsState;
use tokio::task::JoinHandle;

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

/// Virtual servers a resync's repair reconciles per turn of the loop: at 10,000 virtual
/// servers the whole reconcile takes ~20 ms on the host and seconds in an emulated VM; a
/// slice of 500 holds a change back ~1 ms on the host (issue 15).
const REPAIR_SLICE: usize = 500;

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
    // The resync's table read in flight off the loop, with when it began.
    let mut reading: Option<(Instant, JoinHandle<Result<IpvsState, Error>>)> = None;
    tokio::pin!(shutdown);
    loop {
        // While a repair runs in slices, the loop turns at once between them.
        let wait = if proxier.repairing() {
            Duration::ZERO
        } else {
            timing.poll_period
        };
        let table = tokio::select! {
            () = &mut shutdown => break,
            () = tokio::time::sleep(wait) => None,
            table = table_read(&mut reading) => Some(table),
        };
        pending |= poll(source, proxier)?;
        pending |= proxier.poll_node_addresses();
        let now = Instant::now();
        if let Some((started, table)) = table {
            // Changes polled so far are planned and applied as the repair begins.
            match proxier.finish_resync(table, started) {
                Ok(()) => {
                    pending = false;
                    last_sync = now;
                }
                // A resync that could not read the kernel planned and wrote nothing: what
                // was polled meanwhile stays pending, and minSyncPeriod still counts from the
                // last sync that wrote.
                Err(error) => {
                    resynced(Err(error), started, &mut backoff, &mut on_sync);
                }
            }
            reading = None;
        } else if proxier.repairing() {
            // One slice per turn: changes are synced between slices.
            if let Some(outcome) = proxier.repair_slice(REPAIR_SLICE) {
                resynced(Ok(outcome), now, &mut backoff, &mut on_sync);
            }
        } else if reading.is_none() && (now >= next_resync || backoff.is_due(now)) {
            next_resync = now + timing.sync_period;
            match proxier.begin_resync() {
                Ok(Some(read)) => {
                    reading = Some((now, tokio::task::spawn_blocking(read)));
                }
                Ok(None) => {
                    if resynced(proxier.full_sync(), now, &mut backoff, &mut on_sync) {
                        pending = false;
                        last_sync = now;
                    }
                }
                Err(error) => {
                    resynced(Err(error), now, &mut backoff, &mut on_sync);
                }
            }
        }
        // A change never waits for a resync's read: only for minSyncPeriod.
        if pending && now >= last_sync + timing.min_sync_period {
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

/// The answer of the table read in flight (with when it began); pending while there is none.
async fn table_read(
    reading: &mut Option<(Instant, JoinHandle<Result<IpvsState, Error>>)>,
) -> (Instant, Result<IpvsState, Error>) {
    let Some((started, handle)) = reading else {
        return std::future::pending().await;
    };
    match handle.await {
        Ok(table) => (*started, table),
        // The read panicked (a bug): the loop goes down with it, as if it had run here. The
        // task is never cancelled: the runtime outlives the loop.
        Err(join) => std::panic::resume_unwind(join.into_panic()),
    }
}

/// Logs and reports a full resync's outcome, and schedules the retry of what failed. Returns
/// whether the resync read the kernel (and so planned and applied everything pending).
fn resynced(
    outcome: Result<SyncOutcome, Error>,
    started: Instant,
    backoff: &mut Backoff,
    on_sync: &mut impl FnMut(SyncKind, &SyncOutcome),
) -> bool {
    let now = Instant::now();
    match outcome {
        Ok(outcome) => {
            tracing::info!(?outcome, "full resync");
            if outcome.failed > 0 {
                backoff.failed(now);
            } else {
                backoff.succeeded();
            }
            on_sync(SyncKind::Full, &outcome);
            true
        }
        Err(error) => {
            tracing::error!(error = %error.report(), "resync could not read the kernel; nothing changed");
            backoff.failed(now);
            on_sync(
                SyncKind::Full,
                &SyncOutcome::kernel_unreadable(error, started.elapsed()),
            );
            false
        }
    }
}
