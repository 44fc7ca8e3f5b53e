//! Real UDP traffic through a DNAT rule in a fresh namespace: a backend is removed, its stale
//! conntrack entry keeps steering the client to it until our flush deletes it (incident I1).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests panic on failure"
)]

use std::net::UdpSocket;
use std::time::Duration;

use conntrack_gc::{Conntrack, ConntrackFilter, Protocol};
use proxier_test_support::witness::{
    conntrack_source_ports as witness, nft_script as nft, witness as run, IP,
};
use proxier_test_support::NetNs;

fn dnat_to(backend: &str) {
    nft(&format!(
        "flush chain ip proxier_test out\n\
         add rule ip proxier_test out ip daddr 10.96.0.10 udp dport 53 dnat to {backend}\n"
    ));
}

fn bound(addr: &str) -> UdpSocket {
    let s = UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    s
}

/// Receives one datagram or `None` on timeout.
fn recv(socket: &UdpSocket) -> Option<String> {
    let mut buf = [0u8; 64];
    match socket.recv_from(&mut buf) {
        Ok((n, _)) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(_) => None,
    }
}

#[test]
fn stale_udp_flow_to_removed_backend_is_flushed_and_next_datagram_reaches_live_backend() {
    let _ns = NetNs::fresh();
    for addr in [
        "10.96.0.10/32",
        "10.244.1.5/32",
        "10.244.1.6/32",
        "10.244.1.9/32",
    ] {
        run(IP, &["addr", "add", addr, "dev", "lo"]);
    }
    nft("add table ip proxier_test\n\
         add chain ip proxier_test out { type nat hook output priority -100 ; }\n");
    dnat_to("10.244.1.5:5353");

    let backend_a = bound("10.244.1.5:5353");
    let backend_b = bound("10.244.1.6:5353");
    let client = bound("10.244.1.9:41000");
    let other = bound("10.244.1.9:41001");

    client.send_to(b"ping1", "10.96.0.10:53").unwrap();
    assert_eq!(recv(&backend_a).as_deref(), Some("ping1"));
    // An unrelated flow straight to backend B: must survive the flush.
    other.send_to(b"direct", "10.244.1.6:5353").unwrap();
    assert_eq!(recv(&backend_b).as_deref(), Some("direct"));

    // Backend A goes away: the service now DNATs to B, but the conntrack entry still says A.
    dnat_to("10.244.1.6:5353");
    client.send_to(b"ping2", "10.96.0.10:53").unwrap();
    assert_eq!(
        recv(&backend_a).as_deref(),
        Some("ping2"),
        "stale entry steers to A"
    );
    assert_eq!(recv(&backend_b), None);

    let before = witness("before flush (real traffic)");
    assert!(
        before.contains(&41000) && before.contains(&41001),
        "{before:?}"
    );

    let mut ct = Conntrack::open().unwrap();
    let report = ct
        .flush(&[ConntrackFilter::endpoint(
            Protocol::Udp,
            "10.244.1.5".parse().unwrap(),
            5353,
        )])
        .unwrap();
    println!("report {report:?}");
    assert_eq!(report.deleted, 1);

    let after = witness("after flush (real traffic)");
    assert!(
        !after.contains(&41000),
        "the flow to the removed backend is gone: {after:?}"
    );
    assert!(
        after.contains(&41001),
        "the unrelated flow remains: {after:?}"
    );

    client.send_to(b"ping3", "10.96.0.10:53").unwrap();
    assert_eq!(
        recv(&backend_b).as_deref(),
        Some("ping3"),
        "next datagram reaches live B"
    );
    assert_eq!(recv(&backend_a), None, "and not the removed A");
}
