#![no_main]
//! Arbitrary bytes into the ctnetlink reply parser (what `recvmsg` hands the flush): errors are
//! fine, panics are not. Every parsed entry is also run through the filter index and re-encoded
//! as a delete, whose tuple must be the bytes the entry was parsed from.

use conntrack_gc::ctnetlink::{encode_delete, Replies, Reply};
use conntrack_gc::{ConntrackFilter, FilterSet, Protocol};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let filters = [
        ConntrackFilter::service_ip(Protocol::Udp, [10, 96, 0, 10].into(), 53),
        ConntrackFilter::node_port(Protocol::Udp, 30080),
        ConntrackFilter::endpoint(Protocol::Sctp, [10, 244, 1, 5].into(), 9000).in_zone(7),
    ];
    let set = FilterSet::new(&filters);
    for reply in Replies::new(data) {
        if let Ok(Reply::Entry(entry)) = reply {
            let _ = set.matches(&entry);
            let _ = set.dump_filter().matches(&entry);
            let mut out = Vec::new();
            encode_delete(&mut out, 1, &entry);
            assert_eq!(&out[24..24 + entry.orig_raw.len()], entry.orig_raw);
        }
    }
});
