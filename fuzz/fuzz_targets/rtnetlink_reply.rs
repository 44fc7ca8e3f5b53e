#![no_main]
//! Arbitrary datagrams into proxier's rtnetlink answer reader (`RouteAnswer`, what the link and
//! address requests of `InterfaceHandle` parse with netlink-packet-route): errors are fine,
//! panics are not. A complete answer is read for the link index and the addresses on it as
//! the interface code does; none of those is IPv6 link-local.

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use proxier::dataplane::kernel::{RouteAnswer, RouteReply};

#[derive(Debug, Arbitrary)]
struct Answer {
    sequence: u32,
    index: u32,
    datagrams: Vec<Vec<u8>>,
}

fuzz_target!(|input: Answer| {
    let mut answer = RouteAnswer::new(input.sequence);
    for datagram in &input.datagrams {
        match answer.feed(datagram, "fuzz") {
            Ok(Some(reply)) => {
                let _ = reply.link_index();
                for ip in reply.addresses_on(input.index) {
                    if let std::net::IpAddr::V6(v6) = ip {
                        assert_ne!(v6.segments()[0] & 0xffc0, 0xfe80, "link-local left out");
                    }
                }
                if let RouteReply::Errno(errno) = reply {
                    assert!(reply.addresses_on(input.index).is_empty(), "errno {errno}");
                }
                return;
            }
            Ok(None) => {}
            Err(_) => return,
        }
    }
});
