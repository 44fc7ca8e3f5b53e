//! Issue 14: proxier takes over a node that kube-proxy's IPVS mode programmed, under load.
//!
//! The node state kube-proxy leaves for a small cluster (IPVS virtual servers, `kube-ipvs0`,
//! its 17 ipsets and its `nat`/`filter` rules, written with `iptables-nft-restore` in one test
//! and `iptables-legacy-restore` in the other: `proxier_test_support::kube_proxy`) carries TCP
//! and UDP load; `proxier plan --diff` is asked first, then `proxier run` starts on the same
//! Services and EndpointSlices. It must show: no failed TCP connection and no lost UDP query
//! across the takeover; no real-server flap (every real server's `ipvsadm --stats` counters
//! keep growing, none reset, and the initial sync applies 0 operations); then a Service
//! created after the takeover on a recycled ClusterIP is reachable (kube-proxy's frozen
//! KUBE-IPVS-FILTER REJECTs it: the address is in the frozen KUBE-IPVS-IPS, the port is not in
//! KUBE-CLUSTER-IP), and a changed `loadBalancerSourceRanges` is honoured (kube-proxy's frozen
//! KUBE-SOURCE-RANGES-FIREWALL drops the newly allowed source).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code panics on failure"
)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proxier_kernel_tests::kube_proxy::{leftovers, write_ipvs_mode_state, Iptables, ServicePort};
use proxier_kernel_tests::lab::PodNetwork;
use proxier_kernel_tests::{
    service_yaml, slice_yaml, source_dir, tally, tcp_port_load, tcp_reads, tcp_responder, udp_echo,
    udp_load, witness, write_atomically, Endpoint, NetNs, ProxierProcess, IPVSADM,
};

const POD_A: &str = "10.0.2.2";
const POD_B: &str = "10.0.3.2";
const CLIENT: &str = "10.0.1.2";
const CLIENT2: &str = "10.0.9.2";
const INGRESS: &str = "203.0.113.10";

/// The cluster as kube-proxy saw it: `web` (TCP), `dns` (UDP), `old` (TCP, deleted after the
/// takeover so that its ClusterIP is recycled) and `lb` (a LoadBalancer open to `client`).
fn kube_proxy_view() -> Vec<ServicePort> {
    let port = |protocol, cluster_ip, port, target_port, endpoints: &[&'static str]| ServicePort {
        protocol,
        cluster_ip,
        port,
        target_port,
        endpoints: endpoints.to_vec(),
        load_balancer: None,
    };
    vec![
        port("tcp", "10.96.0.80", 80, 8080, &[POD_A, POD_B]),
        port("udp", "10.96.0.10", 53, 5353, &[POD_A, POD_B]),
        port("tcp", "10.96.0.70", 80, 8080, &[POD_A]),
        ServicePort {
            load_balancer: Some((INGRESS, vec!["10.0.1.2/32"])),
            ..port("tcp", "10.96.0.90", 80, 8080, &[POD_A, POD_B])
        },
    ]
}

/// The LoadBalancer Service `lb` (no NodePorts) open to `source`.
fn lb_yaml(source: &str) -> String {
    let service = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: lb, namespace: default}}\nspec:\n  \
         type: LoadBalancer\n  allocateLoadBalancerNodePorts: false\n  clusterIP: 10.96.0.90\n  \
         clusterIPs: [10.96.0.90]\n  loadBalancerSourceRanges: [{source}/32]\n  ports:\n  \
         - {{name: http, port: 80, protocol: TCP, targetPort: 8080}}\n\
         status:\n  loadBalancer:\n    ingress: [{{ip: {INGRESS}}}]\n"
    );
    let both = [Endpoint::ready(POD_A), Endpoint::ready(POD_B)];
    let slice = slice_yaml("lb", &[("http", "TCP", 8080)], &both);
    format!("{service}---\n{slice}")
}

/// The same cluster for proxier's `--source` directory.
fn write_sources(dir: &Path) {
    let both = [Endpoint::ready(POD_A), Endpoint::ready(POD_B)];
    let tcp = [("http", "TCP", 8080)];
    let web = service_yaml("web", "10.96.0.80", &[("http", "TCP", 80, 8080, None)]);
    let web_slice = slice_yaml("web", &tcp, &both);
    write_atomically(&dir.join("web.yaml"), &format!("{web}---\n{web_slice}"));
    let dns = service_yaml("dns", "10.96.0.10", &[("dns", "UDP", 53, 5353, None)]);
    let dns_slice = slice_yaml("dns", &[("dns", "UDP", 5353)], &both);
    write_atomically(&dir.join("dns.yaml"), &format!("{dns}---\n{dns_slice}"));
    write_atomically(&dir.join("recycled.yaml"), &recycled_yaml("old", 80));
    write_atomically(&dir.join("lb.yaml"), &lb_yaml(CLIENT));
}

/// Service `name` on ClusterIP 10.96.0.70 at `port`/TCP with endpoint pod a.
fn recycled_yaml(name: &str, port: u16) -> String {
    let service = service_yaml(name, "10.96.0.70", &[("http", "TCP", port, 8080, None)]);
    let slice = slice_yaml(name, &[("http", "TCP", 8080)], &[Endpoint::ready(POD_A)]);
    format!("{service}---\n{slice}")
}

/// Each real server's `Conns` counter in `ipvsadm -Ln --stats --exact`, by
/// "virtual server -> real server".
fn connection_counters() -> BTreeMap<String, u64> {
    let listing = witness(IPVSADM, &["-Ln", "--stats", "--exact"]);
    let mut counters = BTreeMap::new();
    let mut service = String::new();
    for line in listing.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [protocol @ ("TCP" | "UDP"), address, ..] => {
                service = format!("{protocol} {address}");
            }
            // The header line ("-> RemoteAddress:Port Conns …") has no number there.
            ["->", real, conns, ..] => {
                if let Ok(conns) = conns.parse() {
                    counters.insert(format!("{service} -> {real}"), conns);
                }
            }
            _ => {}
        }
    }
    counters
}

/// One TCP connection from `netns` to `target` (2 s timeouts): the answer or `failed: …`.
fn one(netns: &str, target: &str) -> String {
    tcp_reads(netns, target, 1).remove(0)
}

/// The scenario; with `keep`, proxier runs with `--keep-kube-proxy-rules` (kube-proxy's rules
/// left in place: the behaviour before issue 14, whose failures the scenario must show).
fn takeover(flavour: Iptables, tag: &str, keep: bool) {
    let _ns = NetNs::fresh();
    let mut network = PodNetwork::new(tag, 2);
    let client2 = network.lab.host("client2", CLIENT2, "10.0.9.1");
    let client = network.client.clone();
    let stop_servers = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let mut servers = Vec::new();
    for (netns, name) in network.pods.iter().zip(["a", "b"]) {
        servers.push(tcp_responder(netns, 8080, name, stop_servers.clone()));
        servers.push(udp_echo(
            netns,
            5353,
            name,
            stop_servers.clone(),
            answered.clone(),
        ));
    }
    std::thread::sleep(Duration::from_millis(200));

    // kube-proxy's state, and its rules in force (the writer is kube-proxy's behaviour).
    write_ipvs_mode_state(&kube_proxy_view(), "10.0.0.0/8", flavour);
    let kube_proxy_leftovers = leftovers(flavour);
    let before_lb = (
        one(&client, &format!("{INGRESS}:80")),
        one(&client2, &format!("{INGRESS}:80")),
    );
    assert!(
        !before_lb.0.starts_with("failed") && before_lb.1.starts_with("failed"),
        "kube-proxy's source ranges in force before the takeover: {before_lb:?}"
    );
    let probe_port = one(&client, "10.96.0.70:443");
    assert!(
        probe_port.contains("refused"),
        "kube-proxy's KUBE-IPVS-FILTER rejects a port that is not a Service's: {probe_port}"
    );

    // Load through kube-proxy's state.
    let stop_load = Arc::new(AtomicBool::new(false));
    let tcp = tcp_port_load(
        &client,
        "10.96.0.80:80".parse().unwrap(),
        40000..41024,
        4,
        stop_load.clone(),
    );
    let udp = udp_load(
        &client,
        "10.96.0.10:53".parse().unwrap(),
        4,
        None,
        Duration::from_millis(5),
        Duration::from_millis(500),
        stop_load.clone(),
    );
    let load_started = Instant::now();
    std::thread::sleep(Duration::from_secs(2));

    // What proxier would do, asked first.
    let source = source_dir(tag);
    write_sources(&source);
    let source_arg = source.to_str().unwrap();
    let (ok, diff) = ProxierProcess::oneshot(&[
        "plan",
        "--diff",
        "-f",
        source_arg,
        "--node",
        "node-a",
        "--node-ip",
        "10.0.1.1",
    ]);
    assert!(ok, "plan --diff failed:\n{diff}");
    let before = connection_counters();

    let mut args = vec!["--cluster-cidr", "10.0.0.0/8", "--node-ip", "10.0.1.1"];
    if keep {
        args.push("--keep-kube-proxy-rules");
    }
    let mut proxier = ProxierProcess::run(&source, &args);
    let log = proxier.wait_for_log("initial sync");
    let initial = log
        .lines()
        .find(|l| l.contains("initial sync"))
        .unwrap()
        .to_owned();
    std::thread::sleep(Duration::from_secs(3));
    let after = connection_counters();
    stop_load.store(true, Ordering::Relaxed);
    let tcp = tcp.join().unwrap();
    let queries = udp.join().unwrap();
    let (sent, by_backend, lost) = tally(&queries, load_started);
    let after_takeover_leftovers = leftovers(flavour);

    // A Service created after the takeover, on the ClusterIP of one deleted with it.
    let _ = std::fs::remove_file(source.join("recycled.yaml"));
    write_atomically(&source.join("recycled.yaml"), &recycled_yaml("new", 443));
    proxier.wait_for_ipvs("the new Service", Duration::from_secs(10), |l| {
        l.contains("10.96.0.70:443") && !l.contains("10.96.0.70:80 ")
    });
    let new_service = tcp_reads(&client, "10.96.0.70:443", 3);

    // loadBalancerSourceRanges changed from client to client2.
    write_atomically(&source.join("lb.yaml"), &lb_yaml(CLIENT2));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut newly_allowed = one(&client2, &format!("{INGRESS}:80"));
    while newly_allowed.starts_with("failed") && Instant::now() < deadline {
        newly_allowed = one(&client2, &format!("{INGRESS}:80"));
    }
    let removed = one(&client, &format!("{INGRESS}:80"));
    proxier.assert_running();
    let (_, log) = proxier.stop();
    stop_servers.store(true, Ordering::Relaxed);
    for s in servers {
        s.join().unwrap();
    }

    let flaps: Vec<String> = before
        .iter()
        .filter(|(key, conns)| after.get(*key).is_none_or(|now| now < conns))
        .map(|(key, conns)| format!("{key}: {conns} -> {:?}", after.get(key)))
        .collect();
    let grown: Vec<String> = before
        .iter()
        .map(|(key, conns)| format!("{key} {conns}->{}", after.get(key).copied().unwrap_or(0)))
        .collect();
    println!(
        "takeover ({flavour:?}): TCP {} connections, {} failed (slow {}, by backend {:?}); \
         UDP {sent} queries, {lost} lost (by backend {by_backend:?}); real servers flapped: {}; \
         counters {grown:?}",
        tcp.attempts,
        tcp.failed,
        tcp.slow,
        tcp.answered,
        flaps.len()
    );
    println!("takeover ({flavour:?}): plan --diff before the start:\n{diff}");
    println!("takeover ({flavour:?}): {initial}");
    println!(
        "takeover ({flavour:?}): kube-proxy's leftovers before {} after {}: {after_takeover_leftovers:?}",
        kube_proxy_leftovers.len(),
        after_takeover_leftovers.len()
    );
    println!(
        "takeover ({flavour:?}): new Service on recycled 10.96.0.70:443 -> {new_service:?}; \
         source range moved to {CLIENT2}: newly allowed -> {newly_allowed:?}, removed {CLIENT} -> {removed:?}"
    );

    assert!(
        tcp.attempts > 200,
        "the TCP load kept going: {}",
        tcp.attempts
    );
    assert!(sent > 200, "the UDP load kept going: {sent}");
    assert_eq!(
        tcp.failed, 0,
        "no failed TCP connection: {:?}",
        tcp.examples
    );
    assert_eq!(lost, 0, "no lost UDP query");
    assert!(flaps.is_empty(), "no real-server counter reset: {flaps:?}");
    assert_eq!(
        before.len(),
        9,
        "kube-proxy's 9 real servers counted: {before:?}"
    );
    assert!(
        initial.contains("operations: 0,"),
        "the initial sync applies no operation to kube-proxy's correct objects: {initial}"
    );
    assert!(diff.contains("0 IPVS operations"), "plan --diff: {diff}");
    assert!(
        diff.contains("KUBE-IPVS-FILTER") && diff.contains("  ipset KUBE-IPVS-IPS\n"),
        "plan --diff lists kube-proxy's leftovers it would remove: {diff}"
    );
    if keep {
        // kube-proxy's frozen rules: what issue 14 is about, shown here so that the
        // assertions below could fail.
        assert_eq!(after_takeover_leftovers, kube_proxy_leftovers, "kept");
        assert!(
            new_service.iter().all(|a| a.starts_with("failed")),
            "kube-proxy's frozen KUBE-IPVS-FILTER rejects the new Service: {new_service:?}"
        );
        assert!(
            newly_allowed.starts_with("failed"),
            "kube-proxy's frozen source-range sets drop the newly allowed source: {newly_allowed}"
        );
        return;
    }
    assert_eq!(
        after_takeover_leftovers,
        Vec::<String>::new(),
        "kube-proxy's chains and ipsets removed after proxier's table is in place"
    );
    assert_eq!(
        new_service,
        ["a", "a", "a"],
        "the Service created after the takeover is reachable\nproxier log:\n{log}"
    );
    assert!(
        !newly_allowed.starts_with("failed"),
        "the newly allowed source gets through: {newly_allowed}"
    );
    assert!(
        removed.starts_with("failed"),
        "the removed source is refused: {removed}"
    );
}

#[test]
fn takeover_from_kube_proxy_with_iptables_nft() {
    takeover(Iptables::Nft, "kpn", false);
}

/// The same with `--keep-kube-proxy-rules`: the old behaviour, whose failures the assertions
/// of the two takeover tests exclude.
#[test]
fn kept_kube_proxy_rules_reject_a_new_service_and_a_newly_allowed_source() {
    takeover(Iptables::Nft, "kpk", true);
}

#[test]
fn takeover_from_kube_proxy_with_iptables_legacy() {
    takeover(Iptables::Legacy, "kpl", false);
}
