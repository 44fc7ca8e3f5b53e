//! Incident I4: with `net.ipv4.vs.conn_reuse_mode=0`, short-lived client connections reusing
//! a source port were sent to the old, weight-0 real server of a pod that was shutting down:
//! timeouts during every rollout.
//!
//! Many short TCP connections from 24 source ports (bound explicitly, reused as soon as they
//! are free) run while a 3-backend service is rolled: per pod, the old one becomes terminating
//! (weight 0) while its replacement is added, then the old pod exits and leaves the slice.
//! With `proxier run` and the sysctls it sets: 0 failed connections. The same rollout with
//! kube-proxy's old settings simulated through netlink-ipvs (conn_reuse_mode=0, weight-0 real
//! servers kept while they have connections) is reported next to it and must show failures.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code panics on failure"
)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use netlink_ipvs::{Protocol, RealServer};
use proxier_kernel_tests::lab::PodNetwork;
use proxier_kernel_tests::sysctl::ipvs_knob;
use proxier_kernel_tests::{
    service_yaml, slice_yaml, source_dir, tcp_port_load, tcp_responder, wait_for_ipvs,
    write_atomically, Endpoint, KubeProxyIpvs, NetNs, ProxierProcess, TcpStats,
};

const NAMES: [&str; 6] = ["a", "b", "c", "d", "e", "f"];
const WARM: Duration = Duration::from_millis(600);
const DRAIN: Duration = Duration::from_millis(400);
const SETTLE: Duration = Duration::from_millis(400);
const PORTS: &[(&str, &str, u16)] = &[("web", "TCP", 8080)];

fn ip(i: usize) -> String {
    PodNetwork::pod_ip(i)
}

struct Topology {
    _network: PodNetwork,
    client: String,
    stops: Vec<Arc<AtomicBool>>,
    servers: Vec<std::thread::JoinHandle<()>>,
}

fn topology(tag: &str) -> Topology {
    let network = PodNetwork::new(tag, NAMES.len());
    let mut stops = Vec::new();
    let mut servers = Vec::new();
    for (netns, name) in network.pods.iter().zip(NAMES) {
        let stop = Arc::new(AtomicBool::new(false));
        servers.push(tcp_responder(netns, 8080, name, stop.clone()));
        stops.push(stop);
    }
    Topology {
        client: network.client.clone(),
        _network: network,
        stops,
        servers,
    }
}

fn start_load(client: &str, stop: &Arc<AtomicBool>) -> std::thread::JoinHandle<TcpStats> {
    tcp_port_load(
        client,
        "10.96.0.80:80".parse().unwrap(),
        43000..43024,
        4,
        stop.clone(),
    )
}

fn finish(topo: Topology, load: std::thread::JoinHandle<TcpStats>, stop: &AtomicBool) -> TcpStats {
    stop.store(true, Ordering::Relaxed);
    let stats = load.join().unwrap();
    for s in &topo.stops {
        s.store(true, Ordering::Relaxed);
    }
    for s in topo.servers {
        s.join().unwrap();
    }
    stats
}

fn with_proxier() -> (TcpStats, String) {
    let _ns = NetNs::fresh();
    let topo = topology("i4p");
    let source = source_dir("i4");
    write_atomically(
        &source.join("service.yaml"),
        &service_yaml("web", "10.96.0.80", &[("web", "TCP", 80, 8080, None)]),
    );
    let slice = source.join("slice.yaml");
    let mut live: Vec<Endpoint> = (0..3).map(|i| Endpoint::ready(&ip(i))).collect();
    write_atomically(&slice, &slice_yaml("web", PORTS, &live));
    let mut proxier = ProxierProcess::run(&source, &["--cluster-cidr", "10.0.0.0/8"]);
    wait_for_ipvs("three real servers", Duration::from_secs(20), |l| {
        (0..3).all(|i| l.contains(&format!("{}:8080", ip(i))))
    });
    let sysctls: Vec<String> = [
        "conn_reuse_mode",
        "expire_nodest_conn",
        "expire_quiescent_template",
    ]
    .iter()
    .map(|n| {
        let v = std::fs::read_to_string(ipvs_knob(n)).unwrap();
        format!("{n}={}", v.trim())
    })
    .collect();

    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(&topo.client, &stop);
    std::thread::sleep(WARM);
    for old in 0..3 {
        let new = old + 3;
        // The old pod is terminating (still serving), its replacement is ready.
        live[0] = Endpoint::terminating(&ip(old));
        live.push(Endpoint::ready(&ip(new)));
        write_atomically(&slice, &slice_yaml("web", PORTS, &live));
        let old_ip = format!("{}:8080", ip(old));
        let new_ip = format!("{}:8080", ip(new));
        wait_for_ipvs("old at weight 0, new added", Duration::from_secs(10), |l| {
            l.contains(&new_ip)
                && l.lines()
                    .any(|x| x.contains(&old_ip) && x.contains("Masq    0"))
        });
        std::thread::sleep(DRAIN);
        // The old pod exits, then leaves the slice.
        topo.stops[old].store(true, Ordering::Relaxed);
        live.remove(0);
        write_atomically(&slice, &slice_yaml("web", PORTS, &live));
        wait_for_ipvs("old deleted", Duration::from_secs(10), |l| {
            !l.contains(&old_ip)
        });
        std::thread::sleep(SETTLE);
    }
    proxier.assert_running();
    let stats = finish(topo, load, &stop);
    let _ = proxier.stop();
    (stats, sysctls.join(" "))
}

/// kube-proxy's old behaviour: conn_reuse_mode=0, and a removed endpoint's real server kept
/// at weight 0 while ActiveConn+InActConn > 0 (TIME_WAIT connections count).
fn with_kube_proxy_settings(tag: &str, expire_nodest_conn: &str) -> (TcpStats, String) {
    let _ns = NetNs::fresh();
    let topo = topology(tag);
    let rs = |i: usize| RealServer::masq(ip(i).parse().unwrap(), 8080);
    let mut kube_proxy = KubeProxyIpvs::start(
        "10.96.0.80",
        Protocol::Tcp,
        80,
        &[
            ("conn_reuse_mode", "0"),
            ("expire_nodest_conn", expire_nodest_conn),
        ],
        &[rs(0), rs(1), rs(2)],
    );
    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(&topo.client, &stop);
    std::thread::sleep(WARM);
    let mut kept = Vec::new();
    for old in 0..3 {
        kube_proxy.set_weight_zero(&rs(old));
        kube_proxy.add(&rs(old + 3));
        std::thread::sleep(DRAIN);
        topo.stops[old].store(true, Ordering::Relaxed);
        kept.push(old);
        // kube-proxy's graceful termination check.
        let deadline = std::time::Instant::now() + SETTLE;
        while std::time::Instant::now() < deadline {
            kept.retain(|&k| !kube_proxy.delete_if_drained(&rs(k).key));
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let stats = finish(topo, load, &stop);
    (
        stats,
        format!(
            "conn_reuse_mode=0 expire_nodest_conn={expire_nodest_conn}, {} weight-0 real servers still kept at the end",
            kept.len()
        ),
    )
}

#[test]
fn short_connections_from_reused_ports_survive_a_rollout() {
    let (proxier, proxier_settings) = with_proxier();
    // kube-proxy's settings at the time of the incident.
    let (kube_proxy, kube_proxy_settings) = with_kube_proxy_settings("i4k", "1");
    // The same without expire_nodest_conn (the kernel default, and what older kernels
    // effectively did with conn_reuse_mode=0: since Linux 5.16 the kernel reschedules a
    // reused connection whose real server has weight 0 when expire_nodest_conn=1, whatever
    // conn_reuse_mode says).
    let (reuse, reuse_settings) = with_kube_proxy_settings("i4r", "0");
    let line = |stats: &TcpStats, settings: &str| {
        format!(
            "{} failed of {} (slow {}, port clashes retried {}; {settings}; by backend {:?}; examples {:?})",
            stats.failed, stats.attempts, stats.slow, stats.port_busy, stats.answered, &stats.examples[..stats.examples.len().min(3)]
        )
    };
    println!(
        "I4 result: connections failed during a 3-pod rollout from 24 reused source ports: \
         proxier: {}; kube-proxy (incident settings): {}; conn_reuse_mode=0 without expire_nodest_conn: {}",
        line(&proxier, &proxier_settings),
        line(&kube_proxy, &kube_proxy_settings),
        line(&reuse, &reuse_settings),
    );
    assert!(proxier.attempts > 200, "the load kept going");
    assert_eq!(
        proxier.failed, 0,
        "proxier: no failed connection: {:?}",
        proxier.examples
    );
    for new in ["d", "e", "f"] {
        assert!(proxier.answered.contains_key(new), "{new} served");
    }
    assert!(
        reuse.failed > 0,
        "conn_reuse_mode=0 must show the failures, or the scenario proves nothing"
    );
}
