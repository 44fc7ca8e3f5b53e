//! Sans-io request bookkeeping: sequence numbers, and the answers to a window of requests.
//!
//! A window is a run of requests sent together in which only the last asks for an ACK
//! (`NLM_F_ACK`). The kernel processes the messages of one `sendmsg` in order and reports every
//! error whether or not it was asked to, so once the last request is answered every earlier one
//! without an error message succeeded. A window thus costs one ACK however many requests it
//! carries, and the receive buffer holds at most one answer per failed request.

/// Hands out request sequence numbers (wrapping).
#[derive(Debug, Clone)]
pub struct Sequence {
    last: u32,
}

impl Sequence {
    /// The first number handed out is `last + 1`.
    pub fn new(last: u32) -> Self {
        Self { last }
    }

    /// Starts from the clock (seconds since the epoch), so that a stale answer to an earlier
    /// process on a reused port id is not taken for ours.
    pub fn from_clock() -> Self {
        let seconds = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs() as u32);
        Self::new(seconds)
    }

    /// The next number.
    pub fn allocate(&mut self) -> u32 {
        self.reserve(1)
    }

    /// The number [`Sequence::allocate`] would hand out, without taking it.
    pub fn upcoming(&self) -> u32 {
        self.last.wrapping_add(1)
    }

    /// Reserves `count` consecutive numbers and returns the first.
    pub fn reserve(&mut self, count: u32) -> u32 {
        let first = self.last.wrapping_add(1);
        self.last = self.last.wrapping_add(count);
        first
    }
}

/// Collects the answers to one window: error messages for failed requests, and the ACK (or
/// error) of the last request, which closes the window.
#[derive(Debug)]
pub struct AckTracker {
    first_sequence: u32,
    errors: Vec<Option<i32>>,
    closed: bool,
}

impl AckTracker {
    /// Expects answers for `count` requests with sequence numbers from `first_sequence`.
    pub fn new(first_sequence: u32, count: usize) -> Self {
        Self {
            first_sequence,
            errors: vec![None; count],
            closed: count == 0,
        }
    }

    /// Records an answer: errno 0 (an ACK) or a positive errno for `sequence`. Returns false for
    /// a sequence number outside the window (ignored).
    pub fn record(&mut self, sequence: u32, errno: i32) -> bool {
        let index = sequence.wrapping_sub(self.first_sequence) as usize;
        let Some(slot) = self.errors.get_mut(index) else {
            return false;
        };
        if errno != 0 {
            *slot = Some(errno);
        }
        if index + 1 == self.errors.len() {
            self.closed = true;
        }
        true
    }

    /// Whether the last request has been answered (so every request has its result).
    pub fn complete(&self) -> bool {
        self.closed
    }

    /// The result of each request in order: `Some(0)` success, `Some(errno)` failure, `None`
    /// unknown (the window never closed: a socket error cut it short).
    pub fn into_errnos(self) -> Vec<Option<i32>> {
        let closed = self.closed;
        self.errors
            .into_iter()
            .map(|error| match error {
                Some(errno) => Some(errno),
                None if closed => Some(0),
                None => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_closes_on_the_last_answer_and_keeps_errors() {
        let mut t = AckTracker::new(u32::MAX - 1, 3); // wraps around
        assert!(t.record(u32::MAX, 17), "an error for the second request");
        assert!(!t.record(5, 0), "outside the window");
        assert!(!t.complete());
        assert!(t.record(0, 0), "the ACK of the last request");
        assert!(t.complete());
        assert_eq!(t.into_errnos(), vec![Some(0), Some(17), Some(0)]);
    }

    #[test]
    fn an_unclosed_window_reports_unknown_results() {
        let mut t = AckTracker::new(10, 3);
        assert!(t.record(10, 2));
        assert_eq!(t.into_errnos(), vec![Some(2), None, None]);
    }

    #[test]
    fn an_empty_window_is_complete() {
        assert!(AckTracker::new(1, 0).complete());
    }

    #[test]
    fn sequences_are_consecutive_and_wrap() {
        let mut s = Sequence::new(u32::MAX - 1);
        assert_eq!(s.reserve(3), u32::MAX);
        assert_eq!(s.upcoming(), 2);
        assert_eq!(s.allocate(), 2);
        assert_eq!(Sequence::new(0).allocate(), 1);
    }
}
