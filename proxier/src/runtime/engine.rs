//! [`Proxier`]: plan → reconcile → apply against a [`Dataplane`], keeping a mirror of the
//! kernel so that an incremental sync costs what changed, not what exists.

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime};

use netlink_ipvs::{IpvsState, ServiceKey};

use crate::dataplane::{Dataplane, LeftoverReport, TableRead};
use crate::error::Error;
use crate::model::ClusterState;
use crate::plan::{DesiredState, HealthChecks, NoLocalEndpoints, Planner, RealServerCounts};
use crate::reconcile::{owned, reconcile, reconcile_changes, Observed, Op, Terminations};

use super::Preview;

mod repair;

use repair::Repair;

/// What failed in a sync (retried by the next full resync). `Display` names what failed; the
/// cause is the `source` (print the chain with [`crate::Report`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncFailure {
    /// The kernel could not be read: nothing was planned against it or applied.
    #[error("kernel state unreadable")]
    KernelUnreadable(#[source] Error),
    /// The packet rules could not be written.
    #[error("packet rules not written")]
    PacketRules(#[source] Error),
    /// An operation failed.
    #[error("{op}")]
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
    /// The planned real servers (every sync that planned).
    pub real_servers: Option<RealServerCounts>,
    /// The health checks to serve, when this sync brought the packet rules in line with the
    /// plan (every full sync, and incremental syncs that changed what the packet rules or
    /// health checks are made of); the service health server follows them.
    pub health_checks: Option<HealthChecks>,
    /// Service ports with a `Local` policy and no local endpoint (every sync that planned).
    pub no_local_endpoints: Option<NoLocalEndpoints>,
    /// Conntrack flushes still owed after this sync (retried by the next one).
    pub flushes_owed: usize,
    /// Failed conntrack flushes dropped so far because too many were owed (cumulative).
    pub flushes_dropped: u64,
    /// kube-proxy's leftovers removed by this sync (the first full sync that put our packet
    /// rules in place, when removal is on: [`Proxier::with_kube_proxy_leftovers_removed`]).
    pub leftovers: Option<LeftoverReport>,
    /// Where this sync's time went.
    pub parts: SyncParts,
}

/// Where one sync's time went (logged with its outcome; the resync's figures in issue 15).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SyncParts {
    /// Adopting the kernel read and re-planning.
    pub plan: Duration,
    /// Reconciling the plan against the mirror.
    pub reconcile: Duration,
    /// Building and writing the packet rules.
    pub packet_rules: Duration,
    /// Sending the operations and following them in the mirror.
    pub operations: Duration,
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
    /// The node's addresses changed where NodePorts open: the next sync re-plans everything.
    replan_all: bool,
    /// While a resync's table read runs off the loop ([`Proxier::begin_resync`]): the virtual
    /// servers written since it began, whose mirror entries are newer than what it may read.
    written_during_read: Option<BTreeSet<ServiceKey>>,
    /// kube-proxy's leftovers are still to be removed (after a full sync that put our packet
    /// rules in place).
    leftovers_pending: bool,
    /// The resync's repair in progress ([`Proxier::repair_slice`]).
    repair: Option<Repair>,
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
            replan_all: false,
            written_during_read: None,
            leftovers_pending: false,
            repair: None,
        }
    }

    /// Removes kube-proxy's leftover chains, rules and ipsets once (ARCHITECTURE.md rule 2):
    /// after the first full sync whose packet rules are in place, and again after the next
    /// full sync if a step failed. Off by default (an embedder opts in; the binary has
    /// `--keep-kube-proxy-rules`).
    pub fn with_kube_proxy_leftovers_removed(mut self, remove: bool) -> Self {
        self.leftovers_pending = remove;
        self
    }

    /// Unselected TCP real servers drain for at most `bound` (see
    /// [`crate::reconcile::departure`]).
    pub fn with_drain_bound(mut self, bound: Duration) -> Self {
        self.terminations = self.terminations.with_drain_bound(bound);
        self
    }

    /// Takes the node's local addresses from the dataplane when they changed (rtnetlink
    /// notifications on the kernel's side); returns whether that changed where NodePorts
    /// open, which the next sync then carries out. A failed read changes nothing.
    pub fn poll_node_addresses(&mut self) -> bool {
        match self.dataplane.local_addresses() {
            Ok(Some(local)) => self.set_local_addresses(local),
            Ok(None) => false,
            Err(error) => {
                tracing::warn!(error = %error.report(), "node addresses not read; NodePorts stay where they are");
                false
            }
        }
    }

    /// Sets the node's local addresses (see [`Planner::set_local_addresses`]); returns whether
    /// NodePorts move, which the next sync carries out.
    pub fn set_local_addresses(&mut self, local: Vec<std::net::IpAddr>) -> bool {
        let changed = self.planner.set_local_addresses(local);
        if changed {
            tracing::info!(node_port_ips = ?self.planner.desired().node_port_ips, "NodePort addresses changed");
            self.replan_all = true;
        }
        changed
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

    /// The dataplane, to read.
    pub fn dataplane(&self) -> &D {
        &self.dataplane
    }

    /// The dataplane (for tests and start-up work outside the engine's operations).
    pub fn dataplane_mut(&mut self) -> &mut D {
        &mut self.dataplane
    }

    /// Start-up (and the periodic resync of a dataplane read only on the loop): re-reads the
    /// kernel (repairing drift someone else caused in our objects), plans everything and
    /// applies the difference. On a restart over matching state this makes no write at all.
    pub fn full_sync(&mut self) -> Result<SyncOutcome, Error> {
        let started = Instant::now();
        self.observe_and_plan_all()?;
        // Everything is reconciled here: a repair in slices in progress has nothing left.
        self.repair = None;
        Ok(self.repair_all(started, started.elapsed()))
    }

    /// Re-reads the kernel into the mirror and plans every Service (the start of a full sync
    /// and of its preview).
    fn observe_and_plan_all(&mut self) -> Result<(), Error> {
        self.mirror = self.dataplane.observe()?;
        self.planner.follow_node(&mut self.cluster);
        self.replan_all = false;
        self.planner.plan_all(&mut self.cluster);
        Ok(())
    }

    /// Everything the plan wants against the mirror, as of now.
    fn reconcile_all(&mut self) -> Vec<Op> {
        self.terminations.set_now(SystemTime::now());
        reconcile(self.planner.desired(), &self.mirror, &self.terminations)
    }

    /// Starts a periodic resync whose IPVS dump runs off the loop: returns the read to run on
    /// another thread (`None`: this dataplane is read on the loop only; call
    /// [`Proxier::full_sync`] instead). Syncs may run meanwhile; hand the read's answer to
    /// [`Proxier::finish_resync`].
    pub fn begin_resync(&mut self) -> Result<Option<TableRead>, Error> {
        let read = self.dataplane.table_read()?;
        self.written_during_read = read.as_ref().map(|_| BTreeSet::new());
        Ok(read)
    }

    /// Completes the read of the resync [`Proxier::begin_resync`] started (at `started`) with
    /// its table: the table becomes the mirror, except for the virtual servers written since
    /// the read began (the mirror knows those better: the read may have missed the writes;
    /// drift in them is repaired by the next resync); the rest of the kernel is read, the
    /// Services changed since the last sync are re-planned and applied, and the packet rules
    /// are rewritten. The repair of the IPVS table then runs in slices
    /// ([`Proxier::repair_slice`]), so that no step holds a change back for long.
    pub fn finish_resync(
        &mut self,
        table: Result<IpvsState, Error>,
        started: Instant,
    ) -> Result<(), Error> {
        let written = self.written_during_read.take().unwrap_or_default();
        let mut table = table?;
        let adopting = Instant::now();
        let addresses = self.dataplane.observe_addresses()?;
        for key in written {
            match self.mirror.ipvs.services.remove(&key) {
                Some(state) => table.services.insert(key, state),
                None => table.services.remove(&key),
            };
        }
        // The old mirror is dropped here: one copy of the table at rest.
        self.mirror.ipvs = table;
        self.mirror.addresses = addresses;
        let (ops, changed_rules, parts) = self.plan_changes(adopting);
        // The packet rules are rebuilt and rewritten whole (repairing drift in them), unless
        // the dataplane knows them intact and no change since touched them (at 10,000
        // Services the rebuild alone takes ~5-10 ms on the host, the replace seconds in a VM).
        let rules = changed_rules || !self.dataplane.packet_rules_intact();
        let mut outcome = self.apply(&ops, rules, started);
        outcome.parts.plan = parts.plan;
        outcome.parts.reconcile = parts.reconcile;
        self.repair = Some(Repair {
            done_through: None,
            outcome,
            started,
        });
        Ok(())
    }

    /// Reconciles everything against the mirror and applies the difference.
    fn repair_all(&mut self, started: Instant, plan: Duration) -> SyncOutcome {
        let reconciling = Instant::now();
        let ops = self.reconcile_all();
        let reconcile = reconciling.elapsed();
        let mut outcome = self.apply(&ops, true, started);
        outcome.parts.plan = plan;
        outcome.parts.reconcile = reconcile;
        self.remove_leftovers_after(&mut outcome);
        outcome
    }

    /// Removes kube-proxy's leftovers after a full sync whose packet rules are in place, while
    /// that is still pending.
    fn remove_leftovers_after(&mut self, outcome: &mut SyncOutcome) {
        let rules_in_place = !outcome
            .failures
            .iter()
            .any(|f| matches!(f, SyncFailure::PacketRules(_)));
        if self.leftovers_pending && rules_in_place {
            let report = self.dataplane.remove_kube_proxy_leftovers();
            for failure in &report.failures {
                tracing::warn!(step = %failure.step, error = %failure.error.report(), "kube-proxy leftover not removed; retried after the next resync");
            }
            tracing::info!(summary = %report.summary(), "kube-proxy leftovers");
            self.leftovers_pending = !report.failures.is_empty();
            outcome.leftovers = Some(report);
        }
    }

    /// What [`Proxier::full_sync`] would do now, applying nothing: the kernel read, everything
    /// planned and reconciled as the sync does, and the observed virtual servers it would leave
    /// alone because they are not ours (`proxier plan --diff`).
    pub fn preview(&mut self) -> Result<Preview, Error> {
        self.observe_and_plan_all()?;
        let ops = self.reconcile_all();
        let desired = self.planner.desired();
        let foreign = self
            .mirror
            .ipvs
            .services
            .iter()
            .filter(|(key, _)| {
                !desired.virtual_servers.contains_key(key) && !owned(desired, &self.mirror, key)
            })
            .map(|(_, state)| state.service.clone())
            .collect();
        let leftovers = self.dataplane.preview_kube_proxy_leftovers();
        Ok(Preview {
            ops,
            foreign,
            leftovers,
        })
    }

    /// After source changes: re-plans only the dirty Services and reconciles only what their
    /// plan changed.
    pub fn incremental_sync(&mut self) -> SyncOutcome {
        let started = Instant::now();
        let (ops, changed_rules, parts) = self.plan_changes(started);
        // Packet rules follow what Services put into them: a re-plan that changed none of it
        // (a weight flip, an unchanged object re-sent) does not rebuild them.
        let mut outcome = self.apply(&ops, changed_rules, started);
        outcome.parts.plan = parts.plan;
        outcome.parts.reconcile = parts.reconcile;
        outcome
    }

    /// Re-plans the Services changed since the last sync (everything when the node's
    /// addresses moved) and reconciles what their plan changed: the operations, whether the
    /// packet rules may differ, and the time both took (planning counted from `planning`).
    fn plan_changes(&mut self, planning: Instant) -> (Vec<Op>, bool, SyncParts) {
        self.planner.follow_node(&mut self.cluster);
        let changes = if std::mem::take(&mut self.replan_all) {
            self.planner.plan_all(&mut self.cluster)
        } else {
            self.planner.replan(&mut self.cluster)
        };
        let plan = planning.elapsed();
        self.terminations.set_now(SystemTime::now());
        let reconciling = Instant::now();
        let ops = reconcile_changes(
            self.planner.desired(),
            &self.mirror,
            &self.terminations,
            &changes,
        );
        let parts = SyncParts {
            plan,
            reconcile: reconciling.elapsed(),
            ..SyncParts::default()
        };
        (ops, changes.packet_rules, parts)
    }

    fn apply(&mut self, ops: &[Op], packet_rules: bool, started: Instant) -> SyncOutcome {
        let mut failures = Vec::new();
        let mut applied = 0;
        let mut health_checks = None;
        // Kept by the planner as Services are re-planned: no walk of the plan per change.
        let real_servers = Some(self.planner.real_server_counts());
        let no_local_endpoints = Some(self.planner.no_local_endpoints());
        let mut parts = SyncParts::default();
        // Packet rules first: a new VIP is masqueraded from its first packet.
        let writing = Instant::now();
        if packet_rules {
            health_checks = Some(self.planner.health_checks());
            let rules = self.planner.packet_rules();
            match self.dataplane.program_packet_rules(&rules) {
                Ok(_) => applied += 1,
                Err(error) => {
                    tracing::warn!(error = %error.report(), "packet rules not written; retried at the next resync");
                    failures.push(SyncFailure::PacketRules(error));
                }
            }
        }
        parts.packet_rules = writing.elapsed();
        if ops.is_empty() {
            return SyncOutcome {
                failed: failures.len(),
                applied,
                failures,
                elapsed: started.elapsed(),
                real_servers,
                health_checks,
                no_local_endpoints,
                flushes_owed: self.terminations.owed().count(),
                flushes_dropped: self.terminations.dropped(),
                parts,
                ..SyncOutcome::default()
            };
        }
        let sending = Instant::now();
        let report = self.dataplane.apply(ops);
        self.terminations.record(ops, &report.results);
        for (op, result) in ops.iter().zip(report.results) {
            match result {
                Ok(()) => {
                    applied += 1;
                    // The kernel accepted it, so the mirror follows; a disagreement here
                    // only means the mirror was stale, which the next resync repairs.
                    let _ = self.mirror.apply(op);
                    if let (Some(written), Some(key)) =
                        (&mut self.written_during_read, op.virtual_server())
                    {
                        written.insert(key);
                    }
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
            health_checks,
            no_local_endpoints,
            flushes_owed: self.terminations.owed().count(),
            flushes_dropped: self.terminations.dropped(),
            leftovers: None,
            parts: SyncParts {
                operations: sending.elapsed(),
                ..parts
            },
        }
    }
}
