//! Incident I1: the flush works with `PATH` empty, so nothing can be exec'd by name. Its own
//! test binary, so changing the environment races with no other test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests panic on failure"
)]

use std::net::IpAddr;
use std::process::Command;

use conntrack_gc::ctnetlink::{NewEntry, Tuple};
use conntrack_gc::{Conntrack, ConntrackFilter, Protocol};
use proxier_test_support::witness::conntrack_source_ports as witness;
use proxier_test_support::NetNs;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A UDP entry client:sport → vip:53 whose reply comes from endpoint:5353 (DNAT).
fn dnat_udp(client: &str, sport: u16, vip: &str, endpoint: &str) -> NewEntry {
    let orig = Tuple {
        src: ip(client),
        dst: ip(vip),
        protocol: 17,
        src_port: Some(sport),
        dst_port: Some(53),
    };
    let mut entry = NewEntry::plain(orig, 600);
    entry.reply.src = ip(endpoint);
    entry.reply.src_port = Some(5353);
    entry
}

#[test]
fn flush_with_empty_path() {
    std::env::set_var("PATH", "");
    assert_eq!(std::env::var("PATH").as_deref(), Ok(""));
    let lookup = Command::new("conntrack").arg("-L").output();
    assert_eq!(
        lookup.map_err(|e| e.kind()).err(),
        Some(std::io::ErrorKind::NotFound),
        "with PATH empty a binary cannot be found by name"
    );

    let _ns = NetNs::fresh();
    let mut ct = Conntrack::open().unwrap();
    let entries = [
        dnat_udp("10.0.0.1", 2001, "10.96.0.10", "10.244.1.5"),
        dnat_udp("10.0.0.2", 2002, "10.96.0.10", "10.244.1.6"),
        dnat_udp("10.0.0.3", 2003, "10.96.0.11", "10.244.1.7"),
        dnat_udp("fd00::3", 2004, "fd00:96::11", "fd00:244::7"),
    ];
    assert_eq!(ct.create(&entries).unwrap(), 4);
    let before = witness("before (PATH empty; witness by absolute path)");
    assert_eq!(before, [2001, 2002, 2003, 2004].into());

    let report = ct
        .flush(&[
            ConntrackFilter::service_ip(Protocol::Udp, ip("10.96.0.10"), 53),
            ConntrackFilter::endpoint(Protocol::Udp, ip("fd00:244::7"), 5353),
        ])
        .unwrap();
    println!(
        "PATH={:?} report {report:?}",
        std::env::var("PATH").unwrap()
    );
    assert_eq!(report.deleted, 3);
    assert_eq!(witness("after (PATH empty)"), [2003].into());
}
