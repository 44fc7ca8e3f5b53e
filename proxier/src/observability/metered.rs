//! [`MeteredDataplane`]: a [`Dataplane`] wrapper that exports what the plan asks of the kernel
//! (real servers by state) without touching the engine.

use std::sync::Arc;

use super::Metrics;
use crate::dataplane::{ApplyReport, Dataplane};
use crate::error::Error;
use crate::plan::{DesiredState, RealServerIntent};
use crate::reconcile::{Observed, Op};

/// Counts planned real servers by state whenever packet rules are brought in line with a
/// plan (once per sync), then delegates everything to the wrapped dataplane.
pub struct MeteredDataplane<D> {
    inner: D,
    metrics: Arc<Metrics>,
}

impl<D> MeteredDataplane<D> {
    /// Wraps `inner`.
    pub fn new(inner: D, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }

    /// The wrapped dataplane.
    pub fn inner_mut(&mut self) -> &mut D {
        &mut self.inner
    }
}

/// Planned real servers as (`serving`, `draining`).
pub fn real_server_counts(desired: &DesiredState) -> (u64, u64) {
    let (mut serving, mut draining) = (0, 0);
    for vs in desired.virtual_servers.values() {
        for rs in vs.real_servers.values() {
            match rs.intent {
                RealServerIntent::Serve => serving += 1,
                RealServerIntent::Drain => draining += 1,
            }
        }
    }
    (serving, draining)
}

impl<D: Dataplane> Dataplane for MeteredDataplane<D> {
    fn observe(&mut self) -> Result<Observed, Error> {
        self.inner.observe()
    }

    fn apply(&mut self, ops: &[Op]) -> ApplyReport {
        self.inner.apply(ops)
    }

    fn program_packet_rules(&mut self, desired: &DesiredState) -> Result<bool, Error> {
        let (serving, draining) = real_server_counts(desired);
        self.metrics
            .set_real_servers(&[("serving", serving), ("draining", draining)]);
        self.inner.program_packet_rules(desired)
    }
}
