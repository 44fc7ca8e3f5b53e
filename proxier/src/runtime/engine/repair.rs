//! A periodic resync's repair of the IPVS table in slices of virtual servers (issue 15): the
//! loop runs incremental syncs between slices, so a change waits for one slice at most, not
//! for the reconcile of the whole table. Each slice reconciles against the plan and the
//! mirror as they are when it runs, so a change applied between slices is neither lost nor
//! undone.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::ops::Bound;
use std::time::{Instant, SystemTime};

use netlink_ipvs::ServiceKey;

use super::{Proxier, SyncOutcome};
use crate::dataplane::Dataplane;
use crate::reconcile::reconcile_scope;

/// A resync's repair in progress.
pub(super) struct Repair {
    /// The last virtual server key reconciled (`None`: none yet).
    pub(super) done_through: Option<ServiceKey>,
    /// What the resync did so far.
    pub(super) outcome: SyncOutcome,
    /// When the resync began.
    pub(super) started: Instant,
}

impl<D: Dataplane> Proxier<D> {
    /// Whether a resync's repair is in progress: call [`Proxier::repair_slice`] until it
    /// answers.
    pub fn repairing(&self) -> bool {
        self.repair.is_some()
    }

    /// Reconciles and applies the next `budget` virtual servers (in key order, wanted or in
    /// the mirror) of the repair [`Proxier::finish_resync`] began. Missing addresses are
    /// bound by the first slice, stale ones unbound by the last (after every stale virtual
    /// server is gone, as in a whole reconcile). Returns the resync's outcome once the last
    /// slice is done; `None` while slices remain, or when no repair is in progress.
    pub fn repair_slice(&mut self, budget: usize) -> Option<SyncOutcome> {
        let repair = self.repair.as_ref()?;
        let first = repair.done_through.is_none();
        let from = repair
            .done_through
            .map_or(Bound::Unbounded, Bound::Excluded);
        let started = Instant::now();
        self.terminations.set_now(SystemTime::now());
        let desired = self.planner.desired();
        let budget = budget.max(1);
        // The first `budget` keys of the union are among the first `budget` of each side.
        let mut keys: BTreeSet<&ServiceKey> = desired
            .virtual_servers
            .range((from, Bound::Unbounded))
            .map(|(key, _)| key)
            .take(budget)
            .collect();
        keys.extend(
            self.mirror
                .ipvs
                .services
                .range((from, Bound::Unbounded))
                .map(|(key, _)| key)
                .take(budget),
        );
        let keys: BTreeSet<&ServiceKey> = keys.into_iter().take(budget).collect();
        let last = keys.len() < budget;
        let done_through = keys.last().map(|key| **key);
        let mut addresses: BTreeSet<&IpAddr> = BTreeSet::new();
        if first {
            addresses.extend(
                desired
                    .addresses
                    .keys()
                    .filter(|ip| !self.mirror.addresses.contains(ip)),
            );
        }
        if last {
            addresses.extend(
                self.mirror
                    .addresses
                    .iter()
                    .filter(|ip| !desired.addresses.contains_key(ip)),
            );
        }
        let ops = reconcile_scope(desired, &self.mirror, &self.terminations, keys, addresses);
        let reconcile = started.elapsed();
        let mut slice = self.apply(&ops, false, started);
        slice.parts.reconcile = reconcile;
        let repair = self.repair.as_mut()?;
        repair.done_through = done_through.or(repair.done_through);
        repair.outcome.absorb(slice);
        if !last {
            return None;
        }
        let Repair {
            mut outcome,
            started,
            ..
        } = self.repair.take()?;
        outcome.elapsed = started.elapsed();
        self.remove_leftovers_after(&mut outcome);
        Some(outcome)
    }
}

impl SyncOutcome {
    /// Adds what a later step of the same sync did.
    fn absorb(&mut self, later: SyncOutcome) {
        self.operations += later.operations;
        self.applied += later.applied;
        self.failed += later.failed;
        self.failures.extend(later.failures);
        self.real_servers = later.real_servers.or(self.real_servers.take());
        self.health_checks = later.health_checks.or(self.health_checks.take());
        self.no_local_endpoints = later.no_local_endpoints.or(self.no_local_endpoints.take());
        self.flushes_owed = later.flushes_owed;
        self.flushes_dropped = later.flushes_dropped;
        self.parts.plan += later.parts.plan;
        self.parts.reconcile += later.parts.reconcile;
        self.parts.packet_rules += later.parts.packet_rules;
        self.parts.operations += later.parts.operations;
    }
}
