#![no_main]
//! Arbitrary bytes as one received datagram into `netlink_base::split_messages`, `Ack::parse`
//! and the `AckTracker` of a window: errors are dropped, panics are not allowed. Every message
//! cut out must lie inside the datagram and be at least a header long; `ack_last_only` on the
//! same bytes must leave exactly the last message cut out asking for an ACK.

use libfuzzer_sys::fuzz_target;
use netlink_base::{ack_last_only, split_messages, Ack, AckTracker};

/// `NLM_F_ACK`.
const NLM_F_ACK: u16 = 4;

fuzz_target!(|data: &[u8]| {
    let Some((&window, datagram)) = data.split_first() else {
        return;
    };
    let mut tracker = AckTracker::new(1, usize::from(window));
    let mut cut = 0;
    for message in split_messages(datagram) {
        assert!(message.len() >= 16 && message.len() <= datagram.len());
        cut += 1;
        if let Some(ack) = Ack::parse(message) {
            tracker.record(ack.sequence, ack.errno);
        }
    }
    let complete = tracker.complete();
    let errnos = tracker.into_errnos();
    assert_eq!(errnos.len(), usize::from(window));
    if complete {
        assert!(errnos.iter().all(Option::is_some), "a closed window has every result");
    }

    let mut requests = datagram.to_vec();
    ack_last_only(&mut requests);
    let flags: Vec<u16> = split_messages(&requests)
        .map(|m| u16::from_ne_bytes([m[6], m[7]]))
        .collect();
    assert_eq!(flags.len(), cut, "setting flags does not change the cut");
    if let Some((last, rest)) = flags.split_last() {
        assert_ne!(last & NLM_F_ACK, 0);
        assert!(rest.iter().all(|f| f & NLM_F_ACK == 0));
    }
});
