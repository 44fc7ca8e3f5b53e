//! [`Proxier`]: plan → reconcile → apply against a [`Dataplane`], keeping a mirror of the
//! kernel so that an incremental sync costs what changed, not what exists.

use std::time::{Duration, Instant};

use crate::dataplane::Dataplane;
use crate::error::Error;
use crate::model::ClusterState;
use crate::plan::{DesiredState, Planner, RealServerCounts};
use crate::reconcile::{reconcile, reconcile_changes, Observed, Op, Terminations};

/// What failed in a sync (retried by the next full resync).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncFailure {
    /// The kernel could not be read: nothing was planned against it or applied.
    #[error("kernel state unreadable: {0}")]
    KernelUnreadable(#[source] Error),
    /// The packet rules could not be written.
    #[error("packet rules: {0}")]
    PacketRules(#[source] Error),
    /// An operation failed.
    #[error("{op}: {error}")]
    Operation {
        /// The operation.
        op: Op,
        /// Why it failed.
        #[source]
        error: Error,
    },
}

impl SyncFailure {
    /// A stable metric label for what failed (`proxier_sync_failures_total{operation}`).
    pub fn operation(&self) -> &'static str {
        match self {
            SyncFailure::KernelUnreadable(_) => "read_kernel",
            SyncFailure::PacketRules(_) => "packet_rules",
            SyncFailure::Operation { op, .. } => op.kind(),
        }
    }
}

/// What one sync did.
#[derive(Debug, Default)]
pub struct SyncOutcome {
    /// Operations sent to the kernel.
    pub operations: usize,
    /// Writes that are in place after this sync: operations the kernel accepted, plus the
    /// packet rules when they were written or found already in line.
    pub applied: usize,
    /// Of which failed (retried by the next full resync).
    pub failed: usize,
    /// What failed, with the errors.
    pub failures: Vec<SyncFailure>,
    /// Wall time from plan to the last answer.
    pub elapsed: Duration,
    /// The planned real servers, when this sync brought the packet rules in line with the
    /// plan (every full sync, and incremental syncs that changed virtual servers or
    /// addresses).
    pub real_servers: Option<RealServerCounts>,
}

impl SyncOutcome {
    /// The outcome of a resync that could not read the kernel.
    pub fn kernel_unreadable(error: Error, elapsed: Duration) -> Self {
        Self {
            failed: 1,
            failures: vec![SyncFailure::KernelUnreadable(error)],
            elapsed,
            ..Self::default()
        }
    }

    /// Whether this counts as a sync for health (see `observability::health`): it applied
    /// what it could. Only a sync that applied nothing while something failed does not count.
    pub fn counts_as_sync(&self) -> bool {
        self.failed == 0 || self.applied > 0
    }
}

/// The node's proxy: cluster state, plan, kernel mirror and dataplane.
pub struct Proxier<D> {
    planner: Planner,
    cluster: ClusterState,
    dataplane: D,
    mirror: Observed,
    terminations: Terminations,
}

impl<D: Dataplane> Proxier<D> {
    /// A proxy with an empty cluster; call [`Proxier::full_sync`] to adopt the kernel state.
    pub fn new(planner: Planner, dataplane: D) -> Self {
        Self {
            planner,
            cluster: ClusterState::new(),
            dataplane,
            mirror: Observed::default(),
            terminations: Terminations::new(),
        }
    }

    /// The cluster objects; changes made here are synced by [`Proxier::incremental_sync`].
    pub fn cluster_mut(&mut self) -> &mut ClusterState {
        &mut self.cluster
    }

    /// The current plan.
    pub fn desired(&self) -> &DesiredState {
        self.planner.desired()
    }

    /// Our mirror of the kernel.
    pub fn observed(&self) -> &Observed {
        &self.mirror
    }

    /// The dataplane (for tests and start-up work outside the engine's operations).
    pub fn dataplane_mut(&mut self) -> &mut D {
        &mut self.dataplane
    }

    /// Start-up and periodic resync: re-reads the kernel (repairing drift someone else caused
    /// in our objects), plans everything and applies the difference. On a restart over
    /// matching state this makes no write at all.
    pub fn full_sync(&mut self) -> Result<SyncOutcome, Error> {
        let started = Instant::now();
        self.mirror = self.dataplane.observe()?;
        self.planner.plan_all(&mut self.cluster);
        let ops = reconcile(self.planner.desired(), &self.mirror, &self.terminations);
        Ok(self.apply(&ops, true, started))
    }

    /// After source changes: re-plans only the dirty Services and reconciles only what their
    /// plan changed.
    pub fn incremental_sync(&mut self) -> SyncOutcome {
        let started = Instant::now();
        let changes = self.planner.replan(&mut self.cluster);
        let ops = reconcile_changes(
            self.planner.desired(),
            &self.mirror,
            &self.terminations,
            &changes,
        );
        // Packet rules follow addresses and virtual servers: a re-plan that changed neither
        // (an unchanged object re-sent) does not rebuild them.
        let rules_may_change = !changes.services.is_empty() || !changes.addresses.is_empty();
        self.apply(&ops, rules_may_change, started)
    }

    fn apply(&mut self, ops: &[Op], packet_rules: bool, started: Instant) -> SyncOutcome {
        let mut failures = Vec::new();
        let mut applied = 0;
        let mut real_servers = None;
        // Packet rules first: a new VIP is masqueraded from its first packet.
        if packet_rules {
            real_servers = Some(self.planner.desired().real_server_counts());
            let rules = self.planner.packet_rules();
            match self.dataplane.program_packet_rules(&rules) {
                Ok(_) => applied += 1,
                Err(error) => {
                    tracing::warn!(error = %error.report(), "packet rules not written; retried at the next resync");
                    failures.push(SyncFailure::PacketRules(error));
                }
            }
        }
        if ops.is_empty() {
            return SyncOutcome {
                failed: failures.len(),
                applied,
                failures,
                elapsed: started.elapsed(),
                real_servers,
                ..SyncOutcome::default()
            };
        }
        let report = self.dataplane.apply(ops);
        self.terminations.record(ops, &report.results);
        for (op, result) in ops.iter().zip(report.results) {
            match result {
                Ok(()) => {
                    applied += 1;
                    // The kernel accepted it, so the mirror follows; a disagreement here
                    // only means the mirror was stale, which the next resync repairs.
                    let _ = self.mirror.apply(op);
                    tracing::debug!(%op, "applied");
                }
                Err(error) => {
                    tracing::warn!(%op, error = %error.report(), "operation failed; retried at the next resync");
                    failures.push(SyncFailure::Operation {
                        op: op.clone(),
                        error,
                    });
                }
            }
        }
        SyncOutcome {
            operations: ops.len(),
            applied,
            failed: failures.len(),
            failures,
            elapsed: started.elapsed(),
            real_servers,
        }
    }
}
