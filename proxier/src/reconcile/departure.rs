//! What happens to a real server whose endpoint left its EndpointSlice (issue 13 item 6).
//!
//! kube-proxy drains every TCP real server that leaves (weight 0, deleted once its
//! connections end: pkg/proxy/ipvs/graceful_termination.go), and deletes UDP/SCTP ones at
//! once. proxier tells two departures apart:
//!
//! - **terminated**: the endpoint was terminating before it left (its pod is going away):
//!   deleted at once, whatever the protocol (incident I3: a dead pod's real server must not
//!   linger);
//! - **unselected while alive** (a selector switch, a relabel, a targetPort change): a TCP real
//!   server drains at weight 0 for at most the drain bound, so established connections
//!   survive; UDP/SCTP ones are deleted at once and their flows flushed, as kube-proxy does.
//!
//! Both facts live in the kernel, on the real server itself, so a restart recognises a
//! draining real server and finishes it (never re-adds or cuts it early): the plan gives a
//! terminating endpoint's real server both connection thresholds [`TERMINATING_MARK`] (2^30),
//! and a draining one gets both thresholds = the drain's start in seconds since
//! [`DRAIN_EPOCH_SECS`] (2025-01-01; below 2^30 until 2059). Equal thresholds this high are
//! never reached by a connection count, so they change no scheduling (and a drained real
//! server has weight 0 anyway); `ipvsadm -Ln --thresholds` shows them.

use netlink_ipvs::{Protocol, RealServer};

pub use crate::plan::TERMINATING_MARK;

/// Drain starts are counted in seconds from 2025-01-01T00:00:00Z (Unix time 1735689600), so
/// they stay below [`TERMINATING_MARK`] (and `INT_MAX`, which the kernel insists on).
pub const DRAIN_EPOCH_SECS: u64 = 1_735_689_600;

/// What a real server carries in its thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DepartureMark {
    /// None of ours: serving, planned weight 0, or created by someone else.
    None,
    /// Its endpoint was terminating.
    Terminating,
    /// Draining since this time (seconds since [`DRAIN_EPOCH_SECS`]).
    DrainingSince(u32),
}

impl DepartureMark {
    /// Reads the mark off a real server as the kernel reports it.
    pub fn of(real_server: &RealServer) -> Self {
        let (upper, lower) = (real_server.upper_threshold, real_server.lower_threshold);
        if upper != lower || lower == 0 {
            DepartureMark::None
        } else if lower == TERMINATING_MARK {
            DepartureMark::Terminating
        } else if real_server.weight == 0 {
            DepartureMark::DrainingSince(lower)
        } else {
            DepartureMark::None
        }
    }
}

/// The decision for a real server whose endpoint is gone from the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Departure {
    /// Delete it now (and flush its UDP/SCTP flows through this virtual server).
    Delete,
    /// Set weight 0 and mark the drain's start (`since`).
    StartDrain {
        /// Now, seconds since [`DRAIN_EPOCH_SECS`].
        since: u32,
    },
    /// Draining and within the bound: leave it.
    Draining,
}

/// The decision table (pure; `now` in seconds since [`DRAIN_EPOCH_SECS`]):
///
/// | protocol  | mark on the real server            | decision     |
/// |-----------|------------------------------------|--------------|
/// | UDP, SCTP | any                                | `Delete`     |
/// | TCP       | `Terminating`                      | `Delete`     |
/// | TCP       | `DrainingSince(t)`, now − t > bound | `Delete`     |
/// | TCP       | `DrainingSince(t)`, now − t ≤ bound | `Draining`   |
/// | TCP       | `None`                             | `StartDrain` |
///
/// Times are whole seconds, so a drain is over only when more than `bound` whole seconds have
/// passed: it then never ends before the bound (at most a second and a resync after it). A
/// drain start more than one bound in the future (the clock went back) counts as over.
pub fn departure(protocol: Protocol, current: &RealServer, now: u32, bound: u32) -> Departure {
    if protocol != Protocol::Tcp {
        return Departure::Delete;
    }
    match DepartureMark::of(current) {
        DepartureMark::Terminating => Departure::Delete,
        DepartureMark::DrainingSince(since) => {
            let over = now.saturating_sub(since) > bound || since > now.saturating_add(bound);
            if over {
                Departure::Delete
            } else {
                Departure::Draining
            }
        }
        DepartureMark::None => Departure::StartDrain {
            // 0 is "no mark" and TERMINATING_MARK is taken: keep the start between them.
            since: now.clamp(1, TERMINATING_MARK - 1),
        },
    }
}

/// `real_server` draining since `since`: weight 0, both thresholds the start.
pub fn draining(real_server: &RealServer, since: u32) -> RealServer {
    RealServer {
        weight: 0,
        upper_threshold: since,
        lower_threshold: since,
        ..*real_server
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rs(weight: u32, thresholds: u32) -> RealServer {
        RealServer {
            weight,
            upper_threshold: thresholds,
            lower_threshold: thresholds,
            ..RealServer::masq("10.244.1.5".parse().unwrap(), 8080)
        }
    }

    #[test]
    fn decision_table() {
        let (now, bound) = (30_000_000, 900);
        let table = [
            // (protocol, real server in the kernel, decision)
            (Protocol::Udp, rs(1, 0), Departure::Delete),
            (Protocol::Sctp, rs(0, 0), Departure::Delete),
            (Protocol::Udp, rs(0, now - 10), Departure::Delete),
            (Protocol::Tcp, rs(1, TERMINATING_MARK), Departure::Delete),
            (Protocol::Tcp, rs(0, TERMINATING_MARK), Departure::Delete),
            (
                Protocol::Tcp,
                rs(1, 0),
                Departure::StartDrain { since: now },
            ),
            (
                Protocol::Tcp,
                rs(0, 0),
                Departure::StartDrain { since: now },
            ),
            (Protocol::Tcp, rs(0, now - 10), Departure::Draining),
            // Whole seconds: exactly `bound` may be up to a second short of it.
            (Protocol::Tcp, rs(0, now - bound), Departure::Draining),
            (Protocol::Tcp, rs(0, now - bound - 1), Departure::Delete),
            (Protocol::Tcp, rs(0, now + 10), Departure::Draining),
            (Protocol::Tcp, rs(0, now + bound + 1), Departure::Delete),
            // Weight back above 0 with thresholds: not a drain of ours; start one.
            (
                Protocol::Tcp,
                rs(1, now - 10),
                Departure::StartDrain { since: now },
            ),
        ];
        for (protocol, current, want) in table {
            assert_eq!(
                departure(protocol, &current, now, bound),
                want,
                "{protocol:?} {current:?}"
            );
        }
        // Unequal thresholds are someone else's setting, not a mark.
        let foreign = RealServer {
            upper_threshold: 100,
            lower_threshold: 50,
            weight: 0,
            ..rs(0, 0)
        };
        assert_eq!(DepartureMark::of(&foreign), DepartureMark::None);
        assert_eq!(
            departure(Protocol::Tcp, &rs(1, 0), 0, bound),
            Departure::StartDrain { since: 1 },
            "a start is never 0 (no mark)"
        );
    }

    #[test]
    fn a_drain_mark_reads_back_as_draining() {
        let marked = draining(&rs(1, 0), 1234);
        assert_eq!(marked.weight, 0);
        assert_eq!(
            DepartureMark::of(&marked),
            DepartureMark::DrainingSince(1234)
        );
        assert_eq!(
            departure(Protocol::Tcp, &marked, 1300, 900),
            Departure::Draining
        );
    }
}
