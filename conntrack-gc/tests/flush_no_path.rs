//! Incident I1: the flush works with `PATH` empty, so nothing can be exec'd by name. Its own
//! test binary, so changing the environment races with no other test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests panic on failure"
)]

mod common;

use std::process::Command;

use common::*;
use conntrack_gc::{Conntrack, ConntrackFilter, Protocol};

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
        nat_entry(17, "10.0.0.1", 2001, "10.96.0.10", 53, "10.244.1.5", 5353),
        nat_entry(17, "10.0.0.2", 2002, "10.96.0.10", 53, "10.244.1.6", 5353),
        nat_entry(17, "10.0.0.3", 2003, "10.96.0.11", 53, "10.244.1.7", 5353),
        nat_entry(17, "fd00::3", 2004, "fd00:96::11", 53, "fd00:244::7", 5353),
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
