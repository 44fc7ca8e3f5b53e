//! Incident I3: draining a node evicted a CoreDNS pod; kube-proxy set its real server's weight
//! to 0 and kept it until ActiveConn+InActConn reached 0, which UDP "connections" kept from
//! happening for minutes: DNS queries went into a black hole.
//!
//! DNS-like UDP load (queries every 5 ms, 200 ms timeout; long-lived resolver sockets that
//! keep their source port, plus one-shot sockets) goes through a ClusterIP with two backends.
//! Backend b first becomes terminating-but-serving (weight 0, its flows finish), then its pod
//! exits and it leaves the EndpointSlice. With `proxier run`, queries sent after the deletion
//! was applied (real server gone and its conntrack entries flushed, by the witnesses) must all
//! be answered, by a. The same load against kube-proxy's algorithm, simulated with netlink-ipvs
//! (weight 0, real server kept while its connection counts are above 0), is reported side by
//! side and must lose queries, or the scenario would not tell the two apart.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code panics on failure"
)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use netlink_ipvs::{Protocol, RealServer};
use proxier_kernel_tests::lab::PodNetwork;
use proxier_kernel_tests::{
    run_two_backend_dns, slice_yaml, tally, udp_echo, udp_load, wait_for, wait_for_ipvs, witness,
    write_atomically, Endpoint, KubeProxyIpvs, NetNs, Query, CONNTRACK,
};

use proxier_kernel_tests::DNS_PORTS as PORTS;
const WARM: Duration = Duration::from_millis(700);
const TERMINATING: Duration = Duration::from_millis(800);
const AFTER: Duration = Duration::from_millis(2000);

struct Topology {
    _network: PodNetwork,
    client: String,
    stop_a: Arc<AtomicBool>,
    stop_b: Arc<AtomicBool>,
    answered_b: Arc<AtomicU64>,
    servers: Vec<std::thread::JoinHandle<()>>,
}

fn topology(tag: &str) -> Topology {
    let network = PodNetwork::new(tag, 2);
    let stop_a = Arc::new(AtomicBool::new(false));
    let stop_b = Arc::new(AtomicBool::new(false));
    let answered_b = Arc::new(AtomicU64::new(0));
    let servers = vec![
        udp_echo(&network.pods[0], 5353, "a", stop_a.clone(), Arc::default()),
        udp_echo(
            &network.pods[1],
            5353,
            "b",
            stop_b.clone(),
            answered_b.clone(),
        ),
    ];
    Topology {
        client: network.client.clone(),
        _network: network,
        stop_a,
        stop_b,
        answered_b,
        servers,
    }
}

/// Starts the load: 4 long-lived sockets (source ports 42000..42003) and 4 one-shot ones.
fn start_load(client: &str, stop: &Arc<AtomicBool>) -> [std::thread::JoinHandle<Vec<Query>>; 2] {
    let target = "10.96.0.10:53".parse().unwrap();
    let every = Duration::from_millis(5);
    let timeout = Duration::from_millis(200);
    [
        udp_load(client, target, 4, Some(42000), every, timeout, stop.clone()),
        udp_load(client, target, 4, None, every, timeout, stop.clone()),
    ]
}

fn finish_load(load: [std::thread::JoinHandle<Vec<Query>>; 2]) -> Vec<Query> {
    let mut all: Vec<Query> = load.into_iter().flat_map(|l| l.join().unwrap()).collect();
    all.sort_by_key(|q| q.sent);
    all
}

fn b_conntrack_entries() -> usize {
    witness(CONNTRACK, &["-L", "-p", "udp", "--reply-src", "10.0.3.2"])
        .lines()
        .filter(|l| l.contains("10.96.0.10"))
        .count()
}

/// Loss figures of one run: queries sent after the deletion was applied.
struct Outcome {
    sent_after: usize,
    lost_after: usize,
    answered_by_b_after: usize,
    total: usize,
    lost_total: usize,
    pinned_flows: usize,
    note: String,
}

fn with_proxier() -> Outcome {
    let _ns = NetNs::fresh();
    let topo = topology("i3p");
    let (slice, mut proxier) = run_two_backend_dns("i3", "10.96.0.10");

    let stop_load = Arc::new(AtomicBool::new(false));
    let load = start_load(&topo.client, &stop_load);
    std::thread::sleep(WARM);
    assert!(topo.answered_b.load(Ordering::Relaxed) > 0, "b serves");
    let pinned_flows = b_conntrack_entries();

    // The pod is terminating but still serving: weight 0, its flows finish.
    write_atomically(
        &slice,
        &slice_yaml(
            "dns",
            PORTS,
            &[
                Endpoint::ready("10.0.2.2"),
                Endpoint::terminating("10.0.3.2"),
            ],
        ),
    );
    wait_for_ipvs("b at weight 0", Duration::from_secs(10), |l| {
        l.lines()
            .any(|line| line.contains("10.0.3.2:5353") && line.contains("Masq    0"))
    });
    std::thread::sleep(TERMINATING);

    // The pod exits, then the endpoint leaves the slice.
    topo.stop_b.store(true, Ordering::Relaxed);
    write_atomically(
        &slice,
        &slice_yaml("dns", PORTS, &[Endpoint::ready("10.0.2.2")]),
    );
    wait_for_ipvs("b deleted", Duration::from_secs(10), |l| {
        !l.contains("10.0.3.2")
    });
    wait_for(
        "b's conntrack entries flushed",
        Duration::from_secs(2),
        || match b_conntrack_entries() {
            0 => Ok(()),
            n => Err(format!("{n} entries left")),
        },
    );
    let applied = Instant::now();
    std::thread::sleep(AFTER);
    stop_load.store(true, Ordering::Relaxed);
    let queries = finish_load(load);
    proxier.assert_running();
    let _ = proxier.stop();
    topo.stop_a.store(true, Ordering::Relaxed);
    for s in topo.servers {
        s.join().unwrap();
    }
    outcome(&queries, applied, pinned_flows, String::new())
}

fn outcome(queries: &[Query], applied: Instant, pinned_flows: usize, note: String) -> Outcome {
    let (sent_after, by, lost_after) = tally(queries, applied);
    let (total, _, lost_total) = tally(queries, queries[0].sent);
    Outcome {
        sent_after,
        lost_after,
        answered_by_b_after: by.get("b").copied().unwrap_or(0),
        total,
        lost_total,
        pinned_flows,
        note,
    }
}

/// kube-proxy's graceful termination as the incident saw it, driven straight through
/// netlink-ipvs: weight 0 on removal, and the real server deleted only once ActiveConn +
/// InActConn reach 0 (checked here every 100 ms; kube-proxy checks every minute).
fn with_kube_proxy_algorithm() -> Outcome {
    let _ns = NetNs::fresh();
    let topo = topology("i3k");
    let rs_a = RealServer::masq("10.0.2.2".parse().unwrap(), 5353);
    let rs_b = RealServer::masq("10.0.3.2".parse().unwrap(), 5353);
    let mut kube_proxy = KubeProxyIpvs::start(
        "10.96.0.10",
        Protocol::Udp,
        53,
        &[("expire_nodest_conn", "1")],
        &[rs_a, rs_b],
    );

    let stop_load = Arc::new(AtomicBool::new(false));
    let load = start_load(&topo.client, &stop_load);
    std::thread::sleep(WARM);
    assert!(topo.answered_b.load(Ordering::Relaxed) > 0, "b serves");
    let pinned_flows = b_conntrack_entries();

    // Terminating: weight 0.
    kube_proxy.set_weight_zero(&rs_b);
    std::thread::sleep(TERMINATING);

    // The pod exits and its endpoint is gone: kube-proxy keeps the weight-0 real server while
    // it has connections.
    topo.stop_b.store(true, Ordering::Relaxed);
    let applied = Instant::now();
    let mut deleted_after = None;
    while applied.elapsed() < AFTER {
        if kube_proxy.delete_if_drained(&rs_b.key) {
            deleted_after.get_or_insert(applied.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    stop_load.store(true, Ordering::Relaxed);
    let queries = finish_load(load);
    topo.stop_a.store(true, Ordering::Relaxed);
    for s in topo.servers {
        s.join().unwrap();
    }
    let note = match deleted_after {
        Some(t) => format!("real server deleted after {} ms", t.as_millis()),
        None => "real server still kept (connections > 0)".to_owned(),
    };
    outcome(&queries, applied, pinned_flows, note)
}

#[test]
fn dns_queries_are_not_black_holed_after_a_backend_is_deleted() {
    let proxier = with_proxier();
    let kube_proxy = with_kube_proxy_algorithm();
    println!(
        "I3 result: queries lost after the deletion was applied: proxier {} of {} (answered by the deleted backend: {}), \
         kube-proxy algorithm {} of {} ({}); whole run: proxier {} lost of {}, kube-proxy {} lost of {}; \
         conntrack entries on b before termination: {} / {}",
        proxier.lost_after,
        proxier.sent_after,
        proxier.answered_by_b_after,
        kube_proxy.lost_after,
        kube_proxy.sent_after,
        kube_proxy.note,
        proxier.lost_total,
        proxier.total,
        kube_proxy.lost_total,
        kube_proxy.total,
        proxier.pinned_flows,
        kube_proxy.pinned_flows,
    );
    assert!(proxier.sent_after > 200, "the load kept going");
    assert_eq!(
        proxier.lost_after, 0,
        "proxier: no query lost after the deletion"
    );
    assert_eq!(proxier.answered_by_b_after, 0);
    assert!(
        kube_proxy.lost_after > 0,
        "the kube-proxy simulation must show the black hole, or the scenario proves nothing"
    );
}
