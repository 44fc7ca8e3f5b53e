//! [`Terminations`]: the conntrack flushes still owed for endpoints that are gone.
//!
//! Everything else about termination is derived from the kernel and the EndpointSlices, so a
//! restart loses nothing: a real server whose endpoint is in its slice but terminating is
//! drained to weight 0 (derived from the plan), one whose endpoint left is deleted at once
//! (derived from its absence). What the kernel cannot tell after the deletion is whether the
//! endpoint's UDP/SCTP conntrack entries were flushed; a failed flush is remembered here and
//! retried by every reconcile until it succeeds.

use std::collections::BTreeSet;

use super::{ConntrackFilter, Op};

/// Flushes owed from earlier syncs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Terminations {
    owed: BTreeSet<ConntrackFilter>,
}

impl Terminations {
    /// Nothing owed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Flushes still to do.
    pub fn owed(&self) -> impl Iterator<Item = &ConntrackFilter> {
        self.owed.iter()
    }

    /// Records the outcome of applied operations: a failed flush is owed, a successful one
    /// is settled.
    pub fn record<E>(&mut self, ops: &[Op], results: &[Result<(), E>]) {
        for (op, result) in ops.iter().zip(results) {
            if let Op::FlushConntrack(filter) = op {
                if result.is_ok() {
                    self.owed.remove(filter);
                } else {
                    self.owed.insert(*filter);
                }
            }
        }
    }
}
