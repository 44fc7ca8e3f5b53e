//! `nodePortAddresses` over the node's local addresses, case by case against kube-proxy
//! (pkg/proxy/util/nodeport_addresses.go `NewNodePortAddresses`/`GetNodeIPs`, the IPVS
//! proxier's `GetAllLocalAddressesExcept(kube-ipvs0)` for "match all", server.go for
//! `primary`).

use std::net::IpAddr;

use super::{health_check_addresses, node_port_ips};
use crate::config::NodePortAddress;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| ip(s)).collect()
}

fn entries(list: &[&str]) -> Vec<NodePortAddress> {
    list.iter()
        .map(|s| NodePortAddress::parse(s).unwrap())
        .collect()
}

/// A node with an eth0, a second NIC, a keepalived VIP, loopback, an IPv4 link-local and
/// IPv6 global and link-local addresses (our dummy interface's are never in the input).
const LOCAL: &[&str] = &[
    "10.0.1.1",
    "192.168.50.1",
    "192.168.50.100",
    "127.0.0.1",
    "169.254.3.3",
    "fd00::1",
    "fe80::1",
    "::1",
];

#[test]
fn node_port_addresses_select_local_addresses_as_kube_proxy() {
    let primary = ips(&["10.0.1.1"]);
    let cases: &[(&str, &[&str], &[&str])] = &[
        (
            "unset: every local address but loopback and IPv6 link-local (IPv4 link-local \
             stays, as in kube-proxy)",
            &[],
            &[
                "10.0.1.1",
                "192.168.50.1",
                "192.168.50.100",
                "169.254.3.3",
                "fd00::1",
            ],
        ),
        (
            "an IPv4 CIDR: IPv4 addresses inside it; IPv6 has no CIDR so it matches all",
            &["192.168.50.0/24"],
            &["192.168.50.1", "192.168.50.100", "fd00::1"],
        ),
        (
            "CIDRs of both families",
            &["10.0.0.0/8", "fd00::/64"],
            &["10.0.1.1", "fd00::1"],
        ),
        (
            "0.0.0.0/0 matches all, as unset",
            &["0.0.0.0/0", "fd00::/64"],
            &[
                "10.0.1.1",
                "192.168.50.1",
                "192.168.50.100",
                "169.254.3.3",
                "fd00::1",
            ],
        ),
        (
            "a CIDR holding loopback: loopback is still never a NodePort address",
            &["127.0.0.0/8", "fd00::/64"],
            &["fd00::1"],
        ),
        (
            "primary: the node's primary IPv4 as /32; no IPv6 primary, so IPv6 matches all",
            &["primary"],
            &["10.0.1.1", "fd00::1"],
        ),
        (
            "a CIDR no local address is in: none of that family",
            &["203.0.113.0/24", "fd00::/64"],
            &["fd00::1"],
        ),
    ];
    for (case, config, want) in cases {
        let got = node_port_ips(&entries(config), &primary, &ips(LOCAL));
        assert_eq!(got, ips(want), "{case}");
    }
}

#[test]
fn primary_takes_the_first_ip_of_each_family_and_only_if_it_is_local() {
    let primary = ips(&["192.168.50.1", "10.0.1.1", "fd00::1"]);
    assert_eq!(
        node_port_ips(&entries(&["primary"]), &primary, &ips(LOCAL)),
        ips(&["192.168.50.1", "fd00::1"])
    );
    // A primary IP that is not (or no longer) local opens nothing.
    let gone = ips(&["10.9.9.9"]);
    assert_eq!(
        node_port_ips(&entries(&["primary"]), &gone, &ips(&["10.0.1.1"])),
        ips(&[])
    );
}

#[test]
fn health_checks_listen_everywhere_unless_the_primary_family_is_restricted() {
    let primary = ips(&["10.0.1.1"]);
    let local = ips(LOCAL);
    assert_eq!(health_check_addresses(&[], &primary, &local), None);
    assert_eq!(
        health_check_addresses(&entries(&["fd00::/64"]), &primary, &local),
        None,
        "only IPv6 restricted: the IPv4 primary family matches all"
    );
    assert_eq!(
        health_check_addresses(&entries(&["192.168.50.0/24"]), &primary, &local),
        Some(ips(&["192.168.50.1", "192.168.50.100"]))
    );
    assert_eq!(
        health_check_addresses(&entries(&["primary"]), &primary, &local),
        Some(ips(&["10.0.1.1"]))
    );
}
