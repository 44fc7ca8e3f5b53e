//! Flush against the host kernel's conntrack, inside a fresh network namespace per test, with
//! `conntrack -L` as the outside witness.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests panic on failure"
)]

use std::collections::BTreeSet;
use std::net::IpAddr;

use conntrack_gc::ctnetlink::{DumpFilter, NewEntry, Tuple};
use conntrack_gc::{Conntrack, ConntrackFilter, FlushOptions, KernelFiltering, Protocol};
use proxier_test_support::witness::conntrack_source_ports as witness;
use proxier_test_support::NetNs;

const UDP: u8 = 17;
const TCP: u8 = 6;
const SCTP: u8 = 132;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A NAT'ed-looking entry: client:sport → vip:vport, replied by endpoint:eport.
fn nat_entry(
    (protocol, client, sport, vip, vport, endpoint, eport): (u8, &str, u16, &str, u16, &str, u16),
) -> NewEntry {
    let orig = Tuple {
        src: ip(client),
        dst: ip(vip),
        protocol,
        src_port: Some(sport),
        dst_port: Some(vport),
    };
    let reply = Tuple {
        src: ip(endpoint),
        dst: ip(client),
        protocol,
        src_port: Some(eport),
        dst_port: Some(sport),
    };
    NewEntry {
        orig,
        reply,
        timeout: 600,
        zone: 0,
    }
}

/// The table every shape test starts from, as (protocol, client, sport, vip, vport, endpoint,
/// eport); each entry's client source port names it.
#[rustfmt::skip]
const TABLE: [(u8, &str, u16, &str, u16, &str, u16); 12] = [
    // Service VIP 10.96.0.10:53/UDP, two clients, two endpoints.
    (UDP, "10.0.0.1", 1001, "10.96.0.10", 53, "10.244.1.5", 5353),
    (UDP, "10.0.0.2", 1002, "10.96.0.10", 53, "10.244.1.6", 5353),
    // Same VIP, other port; and the same VIP:port over TCP: both must stay for the UDP filter.
    (UDP, "10.0.0.1", 1003, "10.96.0.10", 54, "10.244.1.5", 5354),
    (TCP, "10.0.0.1", 1004, "10.96.0.10", 53, "10.244.1.5", 5353),
    // NodePort 30080 on two node IPs, and NodePort 30081.
    (UDP, "10.0.0.3", 1005, "192.168.1.1", 30080, "10.244.2.7", 8080),
    (UDP, "10.0.0.4", 1006, "192.168.1.2", 30080, "10.244.2.8", 8080),
    (UDP, "10.0.0.3", 1007, "192.168.1.1", 30081, "10.244.2.7", 8081),
    // IPv6 service [fd00:96::10]:53 and another v6 service.
    (UDP, "fd00::1", 1008, "fd00:96::10", 53, "fd00:244::5", 5353),
    (UDP, "fd00::1", 1009, "fd00:96::11", 53, "fd00:244::5", 5353),
    // SCTP service.
    (SCTP, "10.0.0.5", 1010, "10.96.0.20", 9000, "10.244.4.1", 9000),
    // The same VIP in zone 7 (1011) and in zone 0 (1012).
    (UDP, "10.0.0.9", 1011, "10.96.0.30", 53, "10.244.3.1", 53),
    (UDP, "10.0.0.9", 1012, "10.96.0.30", 53, "10.244.3.1", 53),
];

/// [`TABLE`] as entries, 1011 in zone 7.
fn table() -> Vec<NewEntry> {
    let mut entries: Vec<NewEntry> = TABLE.into_iter().map(nat_entry).collect();
    entries[10].zone = 7;
    entries
}

fn all_ports() -> BTreeSet<u16> {
    (1001..=1012).collect()
}

fn without(gone: &[u16]) -> BTreeSet<u16> {
    all_ports()
        .into_iter()
        .filter(|p| !gone.contains(p))
        .collect()
}

/// Fresh namespace with the table loaded; returns the guard and the handle.
fn loaded() -> (NetNs, Conntrack) {
    let ns = NetNs::fresh();
    let mut ct = Conntrack::open().unwrap();
    let entries = table();
    let created = ct.create(&entries).unwrap();
    assert_eq!(created, entries.len() as u64, "every entry created");
    assert_eq!(witness("before"), all_ports());
    (ns, ct)
}

fn flush_and_check(filters: &[ConntrackFilter], gone: &[u16]) {
    let (_ns, mut ct) = loaded();
    let report = ct.flush(filters).unwrap();
    println!("filters {filters:?}\nreport {report:?}");
    let after = witness("after");
    assert_eq!(
        after,
        without(gone),
        "exactly the matching entries are gone"
    );
    assert_eq!(report.deleted, gone.len() as u64);
    assert_eq!(report.matched, gone.len() as u64);
    assert_eq!(report.failed, 0);
}

#[test]
fn udp_service_vip_port() {
    flush_and_check(
        &[ConntrackFilter::service_ip(
            Protocol::Udp,
            ip("10.96.0.10"),
            53,
        )],
        &[1001, 1002],
    );
}

#[test]
fn sctp_service_vip_port() {
    flush_and_check(
        &[ConntrackFilter::service_ip(
            Protocol::Sctp,
            ip("10.96.0.20"),
            9000,
        )],
        &[1010],
    );
}

#[test]
fn node_port_any_address() {
    flush_and_check(
        &[ConntrackFilter::node_port(Protocol::Udp, 30080)],
        &[1005, 1006],
    );
}

#[test]
fn endpoint_reply_source() {
    // 10.244.1.5:5353 is the endpoint of 1001 only (1003 uses port 5354, 1004 is TCP).
    flush_and_check(
        &[ConntrackFilter::endpoint(
            Protocol::Udp,
            ip("10.244.1.5"),
            5353,
        )],
        &[1001],
    );
}

#[test]
fn ipv6_service() {
    flush_and_check(
        &[ConntrackFilter::service_ip(
            Protocol::Udp,
            ip("fd00:96::10"),
            53,
        )],
        &[1008],
    );
}

#[test]
fn zone_only() {
    flush_and_check(
        &[ConntrackFilter::service_ip(Protocol::Udp, ip("10.96.0.30"), 53).in_zone(7)],
        &[1011],
    );
}

#[test]
fn many_filters_one_pass_mixed_families() {
    let filters = [
        ConntrackFilter::service_ip(Protocol::Udp, ip("10.96.0.10"), 53),
        ConntrackFilter::node_port(Protocol::Udp, 30080),
        ConntrackFilter::endpoint(Protocol::Udp, ip("fd00:244::5"), 5353),
        ConntrackFilter::service_ip(Protocol::Sctp, ip("10.96.0.20"), 9000),
        // Matches nothing: absent VIP.
        ConntrackFilter::service_ip(Protocol::Udp, ip("10.96.9.9"), 53),
    ];
    let (_ns, mut ct) = loaded();
    let report = ct.flush(&filters).unwrap();
    println!("report {report:?}");
    assert_eq!(report.examined, 12, "one pass over the whole table");
    assert_eq!(report.kernel_filtering, KernelFiltering::NotRequested);
    let gone = [1001, 1002, 1005, 1006, 1008, 1009, 1010];
    assert_eq!(witness("after"), without(&gone));
    assert_eq!(report.deleted, gone.len() as u64);
}

#[test]
fn kernel_side_filter_is_used_and_agrees_with_user_space() {
    // All filters IPv4 UDP: the kernel is asked to send only UDP/IPv4 entries.
    let filters = [
        ConntrackFilter::service_ip(Protocol::Udp, ip("10.96.0.10"), 53),
        ConntrackFilter::endpoint(Protocol::Udp, ip("10.244.2.7"), 8080),
    ];
    let (_ns, mut ct) = loaded();
    let report = ct.flush(&filters).unwrap();
    println!("report {report:?}");
    // This kernel (>= 5.8) honours CTA_FILTER: TCP, SCTP and IPv6 entries are not sent.
    assert_eq!(report.kernel_filtering, KernelFiltering::Applied);
    assert_eq!(
        report.examined, 8,
        "4 TCP/SCTP/IPv6 entries filtered by the kernel"
    );
    assert_eq!(witness("after"), without(&[1001, 1002, 1005]));

    // The same flush with kernel filtering off examines everything and deletes the same.
    let (_ns2, mut ct) = loaded();
    let options = FlushOptions {
        kernel_filter: false,
        ..FlushOptions::default()
    };
    let report = ct.flush_with(&filters, options).unwrap();
    assert_eq!(report.kernel_filtering, KernelFiltering::NotRequested);
    assert_eq!(
        report.examined, 10,
        "family still filtered: the IPv4 entries"
    );
    assert_eq!(
        witness("after, no CTA_FILTER"),
        without(&[1001, 1002, 1005])
    );
}

#[test]
fn single_filter_dump_is_narrowed_to_the_tuple() {
    let (_ns, mut ct) = loaded();
    let filter = ConntrackFilter::service_ip(Protocol::Udp, ip("10.96.0.10"), 53);
    let set = conntrack_gc::FilterSet::new(&[filter]);
    let mut seen = Vec::new();
    let n = ct
        .dump(&set.dump_filter(), |e| {
            seen.push(e.orig.src_port);
            Ok(())
        })
        .unwrap();
    assert_eq!(n, 2, "kernel sent only the two matching entries: {seen:?}");
    let all = ct.dump(&DumpFilter::default(), |_| Ok(())).unwrap();
    assert_eq!(all, 12);
}

#[test]
fn batches_smaller_than_matches_and_already_gone() {
    let (_ns, mut ct) = loaded();
    let options = FlushOptions {
        kernel_filter: true,
        batch: 1,
    };
    let report = ct
        .flush_with(&[ConntrackFilter::node_port(Protocol::Udp, 30080)], options)
        .unwrap();
    assert_eq!(report.deleted, 2);
    // A second flush finds nothing left to delete.
    let again = ct
        .flush(&[ConntrackFilter::node_port(Protocol::Udp, 30080)])
        .unwrap();
    assert_eq!((again.matched, again.deleted), (0, 0));
    assert_eq!(witness("after"), without(&[1005, 1006]));
}

#[test]
fn empty_filter_list_deletes_nothing() {
    let (_ns, mut ct) = loaded();
    let report = ct.flush(&[]).unwrap();
    assert_eq!((report.examined, report.deleted), (0, 0));
    assert_eq!(witness("after"), all_ports());
}
