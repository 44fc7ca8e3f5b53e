//! Issue 13 item 1, through the binary (`proxier run --source DIR`, no `--node-ip`, no Node
//! object) with real TCP from a client namespace: NodePorts open on every local address but
//! the dummy interface's and loopback, as kube-proxy's (`nodePortAddresses` unset), including a
//! second NIC's address, an address added while proxier runs (and closed when it is removed:
//! rtnetlink address notifications, not a restart); kube-proxy's NodePort virtual server on
//! the second address is adopted (its connection counters survive, its real servers follow
//! the EndpointSlice) and a foreign one in the NodePort range is left alone. With
//! `nodePortAddresses: [10.0.1.0/24]` only the address inside opens.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code panics on failure"
)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proxier_kernel_tests::lab::PodNetwork;
use proxier_kernel_tests::wait_for_ipvs;
use proxier_kernel_tests::yaml::kube_proxy_config;
use proxier_kernel_tests::{
    service_yaml, slice_yaml, source_dir, tcp_reads, tcp_responder, wait_for, witness,
    write_atomically, Endpoint, NetNs, ProxierProcess, IP, IPVSADM,
};

const SECOND_NIC: &str = "192.168.77.1";
const ADDED: &str = "192.168.88.1";

/// Pods `a` (10.0.2.2) and `b` (10.0.3.2) answering their name on 8080, a client at
/// 10.0.1.2, and a second "NIC" (a dummy interface, up) holding [`SECOND_NIC`].
struct Node {
    network: PodNetwork,
    stop: Arc<AtomicBool>,
}

impl Node {
    fn new(tag: &str) -> Self {
        let network = PodNetwork::new(tag, 2);
        let stop = Arc::new(AtomicBool::new(false));
        tcp_responder(&network.pods[0], 8080, "pod-a", stop.clone());
        tcp_responder(&network.pods[1], 8080, "pod-b", stop.clone());
        witness(IP, &["link", "add", "eth1", "type", "dummy"]);
        witness(
            IP,
            &["addr", "add", &format!("{SECOND_NIC}/32"), "dev", "eth1"],
        );
        witness(IP, &["link", "set", "eth1", "up"]);
        Self { network, stop }
    }

    /// Writes Service `web` (NodePort 30080) with its endpoint on pod `pod` (0 or 1).
    fn write_source(&self, source: &std::path::Path, pod: usize) {
        let service = service_yaml(
            "web",
            "10.96.0.90",
            &[("http", "TCP", 80, 8080, Some(30080))],
        );
        let endpoint = Endpoint::ready(&PodNetwork::pod_ip(pod));
        let slice = slice_yaml("web", &[("http", "TCP", 8080)], &[endpoint]);
        write_atomically(&source.join("web.yaml"), &format!("{service}---\n{slice}"));
    }

    fn answers(&self, target: &str) -> Vec<String> {
        tcp_reads(&self.network.client, target, 3)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Waits until the `Conns` counter of virtual server `target` (`ipvsadm -Ln --stats -t`;
/// the kernel folds its per-CPU counters in every 2 s) reaches `at_least`.
fn wait_for_connections(target: &str, at_least: u64, what: &str) {
    wait_for(what, Duration::from_secs(10), || {
        let stats = witness(IPVSADM, &["-Ln", "--stats", "-t", target]);
        let conns: u64 = stats
            .lines()
            .find(|l| l.contains(target))
            .and_then(|l| l.split_whitespace().nth(2))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        if conns >= at_least {
            Ok(())
        } else {
            Err(stats)
        }
    });
}

#[test]
fn node_ports_open_on_every_local_address_and_follow_addresses_added_and_removed() {
    let _ns = NetNs::fresh();
    let node = Node::new("npa");
    // What kube-proxy left on the second NIC: its NodePort for `web` (one connection served
    // through it already), and someone else's virtual server in the NodePort range.
    let kube_proxys = format!("{SECOND_NIC}:30080");
    let foreign = format!("{SECOND_NIC}:30999");
    witness(IPVSADM, &["-A", "-t", &kube_proxys, "-s", "rr"]);
    witness(
        IPVSADM,
        &["-a", "-t", &kube_proxys, "-r", "10.0.2.2:8080", "-m"],
    );
    witness(IPVSADM, &["-A", "-t", &foreign, "-s", "rr"]);
    witness(IPVSADM, &["-a", "-t", &foreign, "-r", "10.0.9.9:80", "-m"]);
    assert_eq!(
        node.answers(&kube_proxys),
        ["pod-a"; 3],
        "kube-proxy's NodePort served"
    );
    wait_for_connections(&kube_proxys, 3, "kube-proxy's 3 connections counted");

    let source = source_dir("npa");
    node.write_source(&source, 0);
    let mut proxier = ProxierProcess::run(&source, &["--cluster-cidr", "10.0.0.0/8"]);
    let listing = wait_for_ipvs(
        "NodePorts on the node's addresses",
        Duration::from_secs(20),
        |l| l.contains("TCP  10.0.1.1:30080") && l.contains("TCP  10.0.2.1:30080"),
    );
    println!("with proxier running:\n{listing}");
    for absent in ["127.0.0.1:30080", "10.96.0.90:30080"] {
        assert!(
            !listing.contains(absent),
            "no NodePort on loopback or on the dummy interface's addresses ({absent}):\n{listing}"
        );
    }
    assert_eq!(node.answers("10.0.1.1:30080"), ["pod-a"; 3]);
    assert_eq!(
        node.answers(&kube_proxys),
        ["pod-a"; 3],
        "second NIC keeps its NodePort"
    );
    // A recreated virtual server would count from 0 again: 3 at most.
    wait_for_connections(
        &kube_proxys,
        6,
        "kube-proxy's virtual server adopted in place, not recreated (its counters kept)",
    );
    assert!(
        witness(IPVSADM, &["-Ln", "-t", &foreign]).contains("10.0.9.9:80"),
        "the foreign virtual server is left alone"
    );

    // An address added while proxier runs opens the NodePort, through a notification.
    let added = Instant::now();
    witness(IP, &["addr", "add", &format!("{ADDED}/32"), "dev", "eth1"]);
    wait_for_ipvs(
        "the NodePort on the added address",
        Duration::from_secs(10),
        |l| l.contains(&format!("TCP  {ADDED}:30080")),
    );
    let opened = added.elapsed();
    assert_eq!(node.answers(&format!("{ADDED}:30080")), ["pod-a"; 3]);

    // The endpoint moves to pod b: every NodePort follows, the adopted one too. Pod a left
    // its slice while alive (no terminating phase), so it drains at weight 0 (issue 13 item
    // 6) and takes no new connection.
    node.write_source(&source, 1);
    wait_for_ipvs("the NodePorts on pod b", Duration::from_secs(10), |l| {
        l.contains("10.0.3.2:8080")
            && l.lines()
                .filter(|line| line.contains("10.0.2.2:8080"))
                .all(|line| line.contains("Masq    0"))
    });
    for target in ["10.0.1.1:30080", &kube_proxys, &format!("{ADDED}:30080")] {
        assert_eq!(node.answers(target), ["pod-b"; 3], "{target}");
    }

    // The address goes: so does its NodePort; the foreign virtual server stays.
    let removed = Instant::now();
    witness(IP, &["addr", "del", &format!("{ADDED}/32"), "dev", "eth1"]);
    let listing = wait_for_ipvs(
        "the NodePort of the removed address gone",
        Duration::from_secs(10),
        |l| !l.contains(ADDED),
    );
    let closed = removed.elapsed();
    assert!(listing.contains(&format!("TCP  {foreign}")), "{listing}");
    assert!(
        listing.contains(&format!("TCP  {kube_proxys}")),
        "{listing}"
    );
    proxier.assert_running();
    println!(
        "NodePort opened on {ADDED} {:.2} s after `ip addr add`, closed {:.2} s after `ip addr del`",
        opened.as_secs_f64(),
        closed.as_secs_f64()
    );
}

#[test]
fn node_port_addresses_cidrs_restrict_where_node_ports_open() {
    let _ns = NetNs::fresh();
    let node = Node::new("npc");
    let source = source_dir("npc");
    node.write_source(&source, 0);
    let config = kube_proxy_config("npc", "nodePortAddresses: [\"10.0.1.0/24\"]\n");
    let mut proxier = ProxierProcess::run(
        &source,
        &["--cluster-cidr", "10.0.0.0/8", "--config", &config],
    );
    let listing = wait_for_ipvs(
        "the NodePort inside the CIDR",
        Duration::from_secs(20),
        |l| l.contains("TCP  10.0.1.1:30080"),
    );
    assert_eq!(node.answers("10.0.1.1:30080"), ["pod-a"; 3]);
    // Give a later (wrong) sync the chance to add more, then look again.
    std::thread::sleep(Duration::from_secs(2));
    let listing_later = witness(IPVSADM, &["-Ln"]);
    for outside in ["10.0.2.1:30080", "10.0.3.1:30080", "192.168.77.1:30080"] {
        assert!(
            !listing.contains(outside) && !listing_later.contains(outside),
            "{outside} is outside nodePortAddresses:\n{listing_later}"
        );
    }
    proxier.assert_running();
}
