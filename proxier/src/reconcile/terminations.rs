//! [`Terminations`]: the conntrack flushes still owed for endpoints that are gone, and the
//! clock and bound of TCP drains.
//!
//! Everything else about termination is derived from the kernel and the EndpointSlices, so a
//! restart loses nothing: a real server whose endpoint is in its slice but terminating is
//! drained to weight 0 (derived from the plan), one whose endpoint left is deleted at once
//! when it was terminating or is UDP/SCTP, or drained for at most the drain bound when it was
//! unselected while alive (derived from its absence and the marks on the real server, see
//! [`super::departure`]). What the kernel cannot tell after the deletion is whether the
//! endpoint's UDP/SCTP conntrack entries were flushed; a failed flush is remembered here and
//! retried by every reconcile until it succeeds. Owed flushes are coalesced per filter (one
//! entry however often it failed) and capped at [`MAX_OWED_FLUSHES`]: past the cap a failed
//! flush is dropped, counted and logged (its entries then expire by their own timeout); all
//! owed filters are retried together in the one pass over the table of the next sync.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::departure::DRAIN_EPOCH_SECS;
use super::{ConntrackFilter, Op};
use crate::config::DEFAULT_DRAIN_BOUND;

/// How many distinct flushes may be owed at once (each is matched against every entry of
/// the conntrack table in the retry pass).
pub const MAX_OWED_FLUSHES: usize = 4096;

/// Flushes owed from earlier syncs; the time and bound drains are measured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terminations {
    owed: BTreeSet<ConntrackFilter>,
    dropped: u64,
    now: u32,
    drain_bound: u32,
}

impl Default for Terminations {
    fn default() -> Self {
        Self {
            owed: BTreeSet::new(),
            dropped: 0,
            now: 0,
            drain_bound: u32::try_from(DEFAULT_DRAIN_BOUND.as_secs()).unwrap_or(u32::MAX),
        }
    }
}

impl Terminations {
    /// Nothing owed; the default drain bound; the clock at 0 until [`Terminations::set_now`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Drains last at most `bound` (whole seconds).
    pub fn with_drain_bound(mut self, bound: Duration) -> Self {
        self.drain_bound = u32::try_from(bound.as_secs()).unwrap_or(u32::MAX);
        self
    }

    /// Sets the time reconcile decides drains at (the runtime calls this before each sync).
    pub fn set_now(&mut self, now: SystemTime) {
        let secs = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .saturating_sub(DRAIN_EPOCH_SECS);
        self.now = u32::try_from(secs).unwrap_or(u32::MAX);
    }

    /// The time drains are measured at, seconds since [`DRAIN_EPOCH_SECS`].
    pub fn now(&self) -> u32 {
        self.now
    }

    /// How long an unselected TCP real server drains at most, seconds.
    pub fn drain_bound(&self) -> u32 {
        self.drain_bound
    }

    /// Flushes still to do.
    pub fn owed(&self) -> impl Iterator<Item = &ConntrackFilter> {
        self.owed.iter()
    }

    /// Failed flushes dropped so far because `MAX_OWED_FLUSHES` were already owed.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Records the outcome of applied operations: a failed flush is owed, a successful one
    /// is settled.
    pub fn record<E>(&mut self, ops: &[Op], results: &[Result<(), E>]) {
        for (op, result) in ops.iter().zip(results) {
            if let Op::FlushConntrack(filter) = op {
                if result.is_ok() {
                    self.owed.remove(filter);
                } else if self.owed.len() < MAX_OWED_FLUSHES || self.owed.contains(filter) {
                    self.owed.insert(*filter);
                } else {
                    self.dropped += 1;
                    tracing::warn!(
                        ?filter,
                        owed = self.owed.len(),
                        dropped = self.dropped,
                        "too many conntrack flushes owed; this one is dropped (its entries expire \
                         by their timeout)"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flush(i: u16) -> Op {
        Op::FlushConntrack(ConntrackFilter::node_port(conntrack_gc::Protocol::Udp, i))
    }

    #[test]
    fn owed_flushes_are_coalesced_and_capped() {
        let mut terminations = Terminations::new();
        let failed: Result<(), ()> = Err(());
        // The same filter failing again and again is owed once.
        for _ in 0..10 {
            terminations.record(&[flush(1)], std::slice::from_ref(&failed));
        }
        assert_eq!(terminations.owed().count(), 1);
        let ops: Vec<Op> = (0..u16::try_from(MAX_OWED_FLUSHES + 10).unwrap())
            .map(flush)
            .collect();
        let results = vec![failed; ops.len()];
        terminations.record(&ops, &results);
        assert_eq!(terminations.owed().count(), MAX_OWED_FLUSHES);
        assert_eq!(terminations.dropped(), 10);
        // A success settles its filter and makes room.
        terminations.record(&[flush(1)], &[Ok::<(), ()>(())]);
        assert_eq!(terminations.owed().count(), MAX_OWED_FLUSHES - 1);
    }
}
