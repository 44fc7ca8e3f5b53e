//! Issue 13 items 5, 6 and 7 through `proxier run`, with real traffic and `ipvsadm`/`conntrack`
//! as witnesses:
//!
//! 5. a UDP flow pinned to a pod (fixed source port) leaves it when the pod turns not ready
//!    (`ready: false, serving: false`, still in the slice): its real server is deleted and the
//!    flow's conntrack entry flushed, the next datagrams reach the other pod;
//! 6. a long TCP connection survives a selector switch (its endpoint leaves the slice while the
//!    pod lives: weight 0, drained, still there after a proxier restart, deleted after the
//!    drain bound) while a terminated pod's connection is cut at once;
//! 7. the endpoint flush matches only flows through the Service: a direct pod-to-pod UDP flow
//!    to the removed endpoint survives (conntrack entry and answers), the Service flow does not.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code panics on failure"
)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use proxier_kernel_tests::lab::PodNetwork;
use proxier_kernel_tests::{
    in_netns, run_two_backend_dns, service_yaml, slice_yaml, source_dir, udp_ask, udp_echo,
    wait_for, witness, write_atomically, Endpoint, NetNs, ProxierProcess, CONNTRACK, DNS_PORTS,
    IPVSADM,
};

const VIP: &str = "10.96.0.10";

/// One datagram from the client namespace, from source port `port`, to `to`; the answering
/// pod's name (None when lost). The same port is the same conntrack/IPVS flow every time.
fn ask_from(client: &str, port: u16, to: &str, id: u64) -> Option<String> {
    let to: SocketAddr = to.parse().unwrap();
    in_netns(client, move || {
        let socket = UdpSocket::bind(("0.0.0.0", port)).expect("bind fixed port");
        udp_ask(
            &socket,
            to,
            format!("{port}-{id}").as_bytes(),
            Duration::from_millis(300),
        )
    })
    .join()
    .unwrap()
}

/// Conntrack entries (host netns) answered by `pod` whose line contains `needle`.
fn entries(pod: &str, needle: &str) -> Vec<String> {
    witness(CONNTRACK, &["-L", "-p", "udp", "--reply-src", pod])
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}

/// Two echo pods `a` (10.0.2.2) and `b` (10.0.3.2) behind the UDP Service at VIP:53, and the
/// fixed client source ports whose flows IPVS pinned to `b`.
struct DnsLab {
    network: PodNetwork,
    slice: std::path::PathBuf,
    proxier: ProxierProcess,
    stop: Arc<AtomicBool>,
    servers: Vec<JoinHandle<()>>,
    pinned_to_b: Vec<u16>,
}

/// Waits until pod b's real server is gone from IPVS and its flows through the service are
/// flushed from conntrack; returns how long the deletion took to show.
fn b_deleted_and_flushed(lab: &DnsLab) -> Duration {
    let took = lab
        .proxier
        .wait_for_ipvs("b's real server deleted", Duration::from_secs(10), |l| {
            !l.contains("10.0.3.2:5353")
        });
    wait_for(
        "b's service flows flushed",
        Duration::from_secs(5),
        || match entries("10.0.3.2", VIP).len() {
            0 => Ok(()),
            n => Err(format!("{n} left")),
        },
    );
    took
}

fn dns_lab(tag: &str) -> DnsLab {
    let network = PodNetwork::new(tag, 2);
    let stop = Arc::new(AtomicBool::new(false));
    let servers = vec![
        udp_echo(&network.pods[0], 5353, "a", stop.clone(), Arc::default()),
        udp_echo(&network.pods[1], 5353, "b", stop.clone(), Arc::default()),
    ];
    let (slice, proxier) = run_two_backend_dns(tag, VIP);
    let target = format!("{VIP}:53");
    let pinned_to_b: Vec<u16> = (43000..43008)
        .filter(|&port| ask_from(&network.client, port, &target, 0).as_deref() == Some("b"))
        .collect();
    assert!(!pinned_to_b.is_empty(), "rr sends some flows to b");
    DnsLab {
        network,
        slice,
        proxier,
        stop,
        servers,
        pinned_to_b,
    }
}

impl DnsLab {
    fn finish(self) -> String {
        self.stop.store(true, Ordering::Relaxed);
        for s in self.servers {
            s.join().unwrap();
        }
        let (_, log) = self.proxier.stop();
        drop(self.network);
        log
    }
}

#[test]
fn pinned_udp_flow_leaves_a_pod_that_turns_not_ready() {
    let _ns = NetNs::fresh();
    let lab = dns_lab("i13n");
    let client = lab.network.client.clone();
    let target = format!("{VIP}:53");
    let port = lab.pinned_to_b[0];
    // The flow stays on b while b is ready (IPVS pins it).
    for id in 1..=5 {
        assert_eq!(ask_from(&client, port, &target, id).as_deref(), Some("b"));
    }
    let before = entries("10.0.3.2", VIP).len();
    // b turns not ready (readiness probe failing): still in the slice, serving false. Its
    // server keeps answering, so a flow still pinned to it would be answered by "b".
    let not_ready = Endpoint {
        ready: false,
        serving: false,
        ..Endpoint::ready("10.0.3.2")
    };
    write_atomically(
        &lab.slice,
        &slice_yaml("dns", DNS_PORTS, &[Endpoint::ready("10.0.2.2"), not_ready]),
    );
    let took = b_deleted_and_flushed(&lab);
    // The same 5-tuple now reaches a (the first datagram may die with the old IPVS
    // connection: expire_nodest_conn).
    let mut answers = Vec::new();
    for id in 10..40 {
        answers.push(ask_from(&client, port, &target, id));
    }
    let first_a = answers
        .iter()
        .position(|a| a.as_deref() == Some("a"))
        .unwrap_or_else(|| panic!("the pinned flow never reached a: {answers:?}"));
    assert!(first_a <= 2, "at most the first two are lost: {answers:?}");
    assert!(
        answers[first_a..].iter().all(|a| a.as_deref() == Some("a")),
        "after the switch every datagram is answered by a: {answers:?}"
    );
    println!(
        "item 5: flow from port {port} pinned to b ({before} conntrack entries via {VIP}); b not \
         ready -> real server deleted in {took:?}, entries flushed; next 30 datagrams: {} lost, \
         then {} answered by a",
        first_a,
        answers.len() - first_a
    );
    lab.finish();
}

#[test]
fn pod_to_pod_udp_flow_survives_its_endpoint_s_removal() {
    let _ns = NetNs::fresh();
    let lab = dns_lab("i13p");
    let client = lab.network.client.clone();
    let service = format!("{VIP}:53");
    let direct = "10.0.3.2:5353";
    let (service_port, direct_port) = (lab.pinned_to_b[0], 44000);
    assert_eq!(
        ask_from(&client, direct_port, direct, 1).as_deref(),
        Some("b")
    );
    assert_eq!(
        ask_from(&client, service_port, &service, 1).as_deref(),
        Some("b")
    );
    let direct_entry = format!("sport={direct_port} dport=5353");
    assert_eq!(entries("10.0.3.2", &direct_entry).len(), 1, "direct flow");
    assert!(!entries("10.0.3.2", VIP).is_empty(), "service flow");
    // b leaves the Service (relabelled) but lives on.
    write_atomically(
        &lab.slice,
        &slice_yaml("dns", DNS_PORTS, &[Endpoint::ready("10.0.2.2")]),
    );
    b_deleted_and_flushed(&lab);
    let survivors = entries("10.0.3.2", &direct_entry);
    assert_eq!(
        survivors.len(),
        1,
        "the pod-to-pod flow's entry survives the flush:\n{}",
        witness(CONNTRACK, &["-L", "-p", "udp"])
    );
    assert_eq!(
        ask_from(&client, direct_port, direct, 2).as_deref(),
        Some("b"),
        "and it still talks to b"
    );
    let log = lab.finish();
    let flush_line = log
        .lines()
        .find(|l| l.contains("conntrack -D") && l.contains("10.0.3.2"))
        .unwrap_or("(flush not logged)")
        .to_owned();
    println!(
        "item 7: service flow via {VIP} flushed; pod-to-pod entry kept: {}; direct flow still \
         answered by b; {flush_line}",
        survivors[0].trim()
    );
}

/// A TCP server in `netns` on `port` keeping every connection open and answering each line
/// with `"{name} {line}"`.
fn tcp_line_echo(
    netns: &str,
    port: u16,
    name: &'static str,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    in_netns(netns, move || {
        let listener = TcpListener::bind(("0.0.0.0", port)).expect("bind tcp");
        listener.set_nonblocking(true).unwrap();
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((stream, _)) => {
                    let stop = stop.clone();
                    std::thread::spawn(move || {
                        stream.set_nonblocking(false).unwrap();
                        stream
                            .set_read_timeout(Some(Duration::from_millis(200)))
                            .unwrap();
                        let mut writer = stream.try_clone().unwrap();
                        let mut reader = BufReader::new(stream);
                        let mut line = String::new();
                        while !stop.load(Ordering::Relaxed) {
                            line.clear();
                            match reader.read_line(&mut line) {
                                Ok(0) => return,
                                Ok(_) => {
                                    if writer
                                        .write_all(format!("{name} {line}").as_bytes())
                                        .is_err()
                                    {
                                        return;
                                    }
                                }
                                Err(e)
                                    if matches!(
                                        e.kind(),
                                        std::io::ErrorKind::WouldBlock
                                            | std::io::ErrorKind::TimedOut
                                    ) => {}
                                Err(_) => return,
                            }
                        }
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    })
}

/// A long-lived TCP connection from the client namespace, driven from the test thread.
struct LongConnection {
    ask: mpsc::Sender<u32>,
    answers: mpsc::Receiver<Result<String, String>>,
    _thread: JoinHandle<()>,
}

impl LongConnection {
    fn open(client: &str, target: &str) -> Self {
        let target: SocketAddr = target.parse().unwrap();
        let (ask, asks) = mpsc::channel::<u32>();
        let (tell, answers) = mpsc::channel();
        let thread = in_netns(client, move || {
            let stream = match TcpStream::connect_timeout(&target, Duration::from_secs(2)) {
                Ok(s) => s,
                Err(e) => {
                    let _ = tell.send(Err(e.to_string()));
                    return;
                }
            };
            stream
                .set_read_timeout(Some(Duration::from_secs(2)))
                .unwrap();
            let mut writer = stream.try_clone().unwrap();
            let mut reader = BufReader::new(stream);
            for id in asks {
                let result = writer
                    .write_all(format!("ping{id}\n").as_bytes())
                    .map_err(|e| e.to_string())
                    .and_then(|()| {
                        let mut line = String::new();
                        match reader.read_line(&mut line) {
                            Ok(0) => Err("closed".to_owned()),
                            Ok(_) => Ok(line
                                .split_whitespace()
                                .next()
                                .unwrap_or_default()
                                .to_owned()),
                            Err(e) => Err(e.to_string()),
                        }
                    });
                let failed = result.is_err();
                let _ = tell.send(result);
                if failed {
                    return;
                }
            }
        });
        Self {
            ask,
            answers,
            _thread: thread,
        }
    }

    /// Who answers a ping now (Err: the connection failed).
    fn ping(&self, id: u32) -> Result<String, String> {
        if self.ask.send(id).is_err() {
            return Err("connection thread ended".to_owned());
        }
        self.answers
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|_| Err("no answer".to_owned()))
    }
}

fn web_files(source: &std::path::Path, endpoints: &[Endpoint]) {
    let service = service_yaml("web", "10.96.0.20", &[("http", "TCP", 80, 8080, None)]);
    write_atomically(&source.join("service.yaml"), &service);
    write_atomically(
        &source.join("slice.yaml"),
        &slice_yaml("web", &[("http", "TCP", 8080)], endpoints),
    );
}

#[test]
fn long_tcp_connection_survives_a_selector_switch_while_a_terminated_pod_s_is_cut() {
    let _ns = NetNs::fresh();
    let network = PodNetwork::new("i13t", 3);
    let stop = Arc::new(AtomicBool::new(false));
    let servers: Vec<_> = ["a", "b", "c"]
        .into_iter()
        .zip(&network.pods)
        .map(|(name, pod)| tcp_line_echo(pod, 8080, name, stop.clone()))
        .collect();
    let (a, b, c) = ("10.0.2.2", "10.0.3.2", "10.0.4.2");
    let source = source_dir("i13t");
    web_files(&source, &[Endpoint::ready(a), Endpoint::ready(b)]);
    let bound = Duration::from_secs(12);
    let args = [
        "--cluster-cidr",
        "10.0.0.0/8",
        "--sync-period",
        "1s",
        "--drain-bound",
        "12s",
    ];
    let proxier = ProxierProcess::run(&source, &args);
    proxier.wait_for_ipvs("a and b", Duration::from_secs(20), |l| {
        l.contains("10.0.2.2:8080") && l.contains("10.0.3.2:8080")
    });
    // Long connections until one is on a and one on b (rr alternates).
    let mut on = std::collections::BTreeMap::new();
    for _ in 0..6 {
        let conn = LongConnection::open(&network.client, "10.96.0.20:80");
        let who = conn.ping(0).expect("first ping");
        on.entry(who).or_insert(conn);
    }
    let (to_a, to_b) = (on.remove("a").unwrap(), on.remove("b").unwrap());

    // b terminates, then leaves the slice (its pod is gone): deleted at once, its
    // connection is cut (expire_nodest_conn).
    web_files(&source, &[Endpoint::ready(a), Endpoint::terminating(b)]);
    proxier.wait_for_ipvs("b at weight 0", Duration::from_secs(10), |l| {
        l.lines()
            .any(|line| line.contains("10.0.3.2:8080") && line.contains("Masq    0"))
    });
    assert_eq!(
        to_b.ping(1).as_deref(),
        Ok("b"),
        "terminating b still serves its connection"
    );
    web_files(&source, &[Endpoint::ready(a)]);
    proxier.wait_for_ipvs("b deleted", Duration::from_secs(10), |l| {
        !l.contains("10.0.3.2:8080")
    });
    let cut = to_b.ping(2);
    assert!(
        cut.is_err(),
        "the terminated pod's connection is cut: {cut:?}"
    );

    // Selector switch: a leaves the slice while its pod lives, c comes in.
    let switched = Instant::now();
    web_files(&source, &[Endpoint::ready(c)]);
    proxier.wait_for_ipvs(
        "a drained at weight 0, c serving",
        Duration::from_secs(10),
        |l| {
            l.lines()
                .any(|line| line.contains("10.0.2.2:8080") && line.contains("Masq    0"))
                && l.contains("10.0.4.2:8080")
        },
    );
    let thresholds = witness(IPVSADM, &["-Ln", "--thresholds"]);
    for id in 3..6 {
        assert_eq!(
            to_a.ping(id).as_deref(),
            Ok("a"),
            "a's connection survives the switch"
        );
    }
    let fresh = LongConnection::open(&network.client, "10.96.0.20:80");
    assert_eq!(fresh.ping(0).as_deref(), Ok("c"), "new connections go to c");

    // A restart recognises the drain (the mark is on the real server): not re-added, not cut.
    let _ = proxier.stop();
    let mut restarted = ProxierProcess::run(&source, &args);
    restarted.wait_for_log("initial sync");
    std::thread::sleep(Duration::from_secs(2));
    let after_restart = witness(IPVSADM, &["-Ln"]);
    assert!(
        after_restart
            .lines()
            .any(|line| line.contains("10.0.2.2:8080") && line.contains("Masq    0")),
        "still draining after the restart:\n{after_restart}\nafter {:?}; the restarted proxier's log:\n{}",
        switched.elapsed(),
        restarted.log()
    );
    assert_eq!(
        to_a.ping(6).as_deref(),
        Ok("a"),
        "and the connection still works"
    );
    assert!(
        switched.elapsed() < bound,
        "the restart happened within the bound"
    );

    // The bound ends the drain: deleted, and the connection with it.
    let ended = restarted.wait_for_ipvs("a deleted after the bound", bound * 2, |l| {
        !l.contains("10.0.2.2:8080")
    });
    let drained_for = switched.elapsed();
    assert!(
        drained_for >= bound,
        "not deleted before the bound: {drained_for:?}"
    );
    let cut_a = to_a.ping(7);
    stop.store(true, Ordering::Relaxed);
    let _ = restarted.stop();
    for s in servers {
        s.join().unwrap();
    }
    assert!(
        cut_a.is_err(),
        "after the bound a's connection is gone: {cut_a:?}"
    );
    println!(
        "item 6: b terminating -> gone: deleted, its connection cut ({cut:?}); selector switch: \
         a at weight 0 and its long connection answered 4 pings (one after a restart), new \
         connection -> c; a deleted {drained_for:?} after the switch (bound {bound:?}, waited \
         {ended:?} after the restart); thresholds witness:\n{}",
        thresholds
            .lines()
            .filter(|l| l.contains("10.0.2.2"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
