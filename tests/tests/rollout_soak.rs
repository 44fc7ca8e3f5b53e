//! Rollout soak: TCP (short connections from reused source ports, 1,024 of them) and DNS-like UDP load for about
//! a minute, the whole rollout of a 10-endpoint Service, one pod at a time (new pod ready → old pod
//! terminating → old pod gone from the slice → old pod exits), through `proxier run`.
//! Every failure is counted and attributed to the rollout phase it happened in.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code panics on failure"
)]

use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proxier_kernel_tests::{
    service_yaml, slice_yaml, source_dir, tally, tcp_port_load, tcp_responder, udp_echo, udp_load,
    wait_for_ipvs, write_atomically, Endpoint, Lab, NetNs, ProxierProcess,
};

const PODS: usize = 10;

#[test]
fn rolling_ten_pods_under_tcp_and_udp_load() {
    let _ns = NetNs::fresh();
    let (mut lab, client) = Lab::with_client("rs");
    // Generation 0 pod N at 10.244.N.2, its replacement (generation 1) at 10.244.(N+11).2, each
    // in a namespace of its own with a server answering with its name.
    let ip = |generation: usize, n: usize| format!("10.244.{}.2", n + 1 + 11 * generation);
    let names: Vec<&'static str> = (0..2 * PODS)
        .map(|i| &*Box::leak(format!("g{}p{}", i / PODS, i % PODS).into_boxed_str()))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let mut servers = Vec::new();
    let mut pod_ns = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let (generation, n) = (i / PODS, i % PODS);
        let subnet = n + 1 + 11 * generation;
        let netns = lab.host(
            &format!("p{i}"),
            &ip(generation, n),
            &format!("10.244.{subnet}.1"),
        );
        servers.push(tcp_responder(&netns, 8080, name, stop.clone()));
        servers.push(udp_echo(
            &netns,
            5353,
            names[i],
            stop.clone(),
            answered.clone(),
        ));
        pod_ns.push(netns);
    }
    std::thread::sleep(Duration::from_millis(300));

    let source = source_dir("soak");
    let service = service_yaml(
        "web",
        "10.96.0.90",
        &[
            ("http", "TCP", 80, 8080, None),
            ("dns", "UDP", 53, 5353, None),
        ],
    );
    let ports = [("http", "TCP", 8080), ("dns", "UDP", 5353)];
    let write = |endpoints: &[Endpoint]| {
        write_atomically(
            &source.join("web.yaml"),
            &format!("{service}---\n{}", slice_yaml("web", &ports, endpoints)),
        );
    };
    let mut current: Vec<Endpoint> = (0..PODS).map(|n| Endpoint::ready(&ip(0, n))).collect();
    write(&current);
    let mut proxier = ProxierProcess::run(&source, &["--cluster-cidr", "10.244.0.0/16"]);
    wait_for_ipvs("10 real servers", Duration::from_secs(20), |l| {
        l.matches("-> 10.244.").count() == 2 * PODS
    });

    let load_stop = Arc::new(AtomicBool::new(false));
    let target = SocketAddrV4::new("10.96.0.90".parse().unwrap(), 80);
    // Source ports are reused (each about every 3 s at this rate), but not within the few
    // milliseconds after a close: 64 ports reused every ~50 ms hit the kernel's own SYN drops
    // for a tuple still closing (seen in steady phases, with no proxier change in flight).
    // Port reuse across endpoint changes is incident I4's test.
    let tcp = tcp_port_load(&client, target, 40000..41024, 4, load_stop.clone());
    let udp = udp_load(
        &client,
        "10.96.0.90:53".parse().unwrap(),
        4,
        None,
        Duration::from_millis(5),
        Duration::from_millis(300),
        load_stop.clone(),
    );
    let started = Instant::now();
    let started_wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    std::thread::sleep(Duration::from_secs(5));
    let mut phases: Vec<(Instant, String)> = vec![(Instant::now(), "steady".into())];
    for (n, netns) in pod_ns.iter().take(PODS).enumerate() {
        phases.push((Instant::now(), format!("pod {n}: replacement ready")));
        // The replacement becomes ready (its address comes up in the pod namespace first).
        current.push(Endpoint::ready(&ip(1, n)));
        write(&current);
        // Each step is in the kernel before the next is written: the test measures the
        // rollout's phases, not whether a source may coalesce them (a terminating phase that
        // is never seen means a deletion at full weight).
        let new = ip(1, n);
        wait_for_ipvs("replacement serving", Duration::from_secs(10), |l| {
            weights(l, &new) == [1, 1]
        });
        std::thread::sleep(Duration::from_millis(1500));
        // The old pod is terminating but still serving: weight 0.
        let old = current
            .iter()
            .position(|e| e.ip.to_string() == ip(0, n))
            .unwrap();
        phases.push((Instant::now(), format!("pod {n}: old terminating")));
        current[old] = Endpoint::terminating(&ip(0, n));
        write(&current);
        let draining = ip(0, n);
        wait_for_ipvs("old pod at weight 0", Duration::from_secs(10), |l| {
            weights(l, &draining) == [0, 0]
        });
        std::thread::sleep(Duration::from_millis(1500));
        // The old pod leaves the slice; then it exits (its namespace loses its address).
        phases.push((Instant::now(), format!("pod {n}: old removed from slice")));
        current.remove(old);
        write(&current);
        let gone = ip(0, n);
        let deleted = std::panic::catch_unwind(|| {
            wait_for_ipvs("old pod deleted", Duration::from_secs(10), |l| {
                !l.contains(&format!("-> {gone}:"))
            })
        });
        if let Err(panic) = deleted {
            for (at, phase) in &phases {
                let wall = started_wall + at.duration_since(started);
                println!("phase {phase:?} began at unix {:.3}", wall.as_secs_f64());
            }
            println!("proxier log:\n{}", proxier.log());
            std::panic::resume_unwind(panic);
        }
        std::thread::sleep(Duration::from_millis(800));
        phases.push((Instant::now(), format!("pod {n}: old pod exits")));
        proxier_kernel_tests::witness(
            proxier_kernel_tests::IP,
            &[
                "-n",
                netns,
                "addr",
                "del",
                &format!("{gone}/24"),
                "dev",
                "eth0",
            ],
        );
        std::thread::sleep(Duration::from_millis(800));
    }
    std::thread::sleep(Duration::from_secs(5));
    load_stop.store(true, Ordering::Relaxed);
    let tcp = tcp.join().unwrap();
    let queries = udp.join().unwrap();
    let elapsed = started.elapsed();
    proxier.assert_running();
    let listing = proxier_kernel_tests::witness(proxier_kernel_tests::IPVSADM, &["-Ln"]);
    assert_eq!(listing.matches("-> 10.244.").count(), 2 * PODS, "{listing}");
    for n in 0..PODS {
        let old = format!("-> {}:8080", ip(0, n));
        assert!(
            !listing.contains(&old),
            "generation-0 pod {n} is gone:\n{listing}"
        );
    }
    let (udp_total, _, udp_lost) = tally(&queries, started);
    println!(
        "rollout soak: {:.1} s, {PODS} pods rolled; TCP {} connections, {} failed, {} slow, {} client port clashes; UDP {udp_total} queries, {udp_lost} lost",
        elapsed.as_secs_f64(),
        tcp.attempts,
        tcp.failed,
        tcp.slow,
        tcp.port_busy
    );
    // The phase (pod number and step) an instant fell in, and the time since that phase began.
    let phase_of = |at: Instant| -> (String, Duration) {
        phases
            .iter()
            .rev()
            .find(|(began, _)| *began <= at)
            .map_or(("before".to_owned(), Duration::ZERO), |(began, p)| {
                (p.clone(), at.duration_since(*began))
            })
    };
    let mut lost_by_phase = std::collections::BTreeMap::<String, usize>::new();
    for q in queries.iter().filter(|q| q.answer.is_none()) {
        let (phase, _) = phase_of(q.sent);
        let kind = phase.split(": ").nth(1).unwrap_or(&phase).to_owned();
        *lost_by_phase.entry(kind).or_default() += 1;
    }
    println!("UDP lost by phase: {lost_by_phase:?}");
    println!(
        "the load started at unix time {:.3} (proxier's log is in UTC)",
        started_wall.as_secs_f64()
    );
    for (what, at) in tcp
        .failed_at
        .iter()
        .map(|at| ("failed", at))
        .chain(tcp.slow_at.iter().map(|at| ("slow", at)))
    {
        let (phase, into) = phase_of(*at);
        println!(
            "  tcp {what}: started {:.3} s into the test, {:.3} s into phase {phase:?}",
            at.duration_since(started).as_secs_f64(),
            into.as_secs_f64()
        );
    }
    for example in &tcp.examples {
        println!("  tcp failure: {example}");
    }
    if tcp.failed > 0 {
        println!("proxier log:\n{}", proxier.log());
    }
    stop.store(true, Ordering::Relaxed);
    for server in servers {
        server.join().unwrap();
    }
    assert!(
        tcp.attempts > 500 && udp_total > 500,
        "enough load to mean something"
    );
    assert_eq!(tcp.failed, 0, "TCP connections failed during the rollout");
    // UDP: nothing is lost while pods come up, drain or exit. What remains is a race at the
    // moment an endpoint leaves its slice: a query already forwarded to the old pod loses its
    // answer when the pod's conntrack entries are flushed (kube-proxy flushes the same way).
    // At most one such query per pod removed; none in any other phase.
    let at_removal = lost_by_phase
        .get("old removed from slice")
        .copied()
        .unwrap_or(0);
    assert_eq!(
        udp_lost, at_removal,
        "UDP lost outside endpoint removal: {lost_by_phase:?}"
    );
    assert!(
        at_removal <= PODS,
        "{at_removal} in-flight queries lost at {PODS} removals"
    );
}

/// The weights of `ip`'s real servers (TCP and UDP) in an `ipvsadm -Ln` listing, in order.
fn weights(listing: &str, ip: &str) -> Vec<u32> {
    let prefix = format!("-> {ip}:");
    listing
        .lines()
        .filter_map(|line| {
            let rest = line.trim_start().strip_prefix(&prefix)?;
            rest.split_whitespace().nth(2)?.parse().ok()
        })
        .collect()
}
