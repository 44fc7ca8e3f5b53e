//! `cargo xtask demo`: the VM runs this. It builds a tiny node (a client namespace, two pod
//! namespaces, this namespace as the node), starts `proxier run --source` on the embedded
//! `examples/demo` cluster, and shows real traffic through what proxier programmed: a rollout
//! (terminating pod → weight 0 → deleted) and `proxier cleanup`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a demo program panics on failure"
)]

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proxier_kernel_tests::udp::by_answer;
use proxier_kernel_tests::{
    tcp_reads, tcp_responder, udp_query, udp_responder, wait_for_ipvs, witness, write_atomically,
    Lab, NetNs, IP, IPVSADM, NFT, PROXIER,
};

const SERVICES: &str = include_str!("../../../examples/demo/services.yaml");
const ENDPOINTS: &str = include_str!("../../../examples/demo/endpoints.yaml");
const SOURCE: &str = "/tmp/demo-cluster";

fn write_endpoints(text: &str) {
    write_atomically(&std::path::Path::new(SOURCE).join("endpoints.yaml"), text);
}

fn wait_for(what: &str, check: impl Fn(&str) -> bool) -> String {
    wait_for_ipvs(what, Duration::from_secs(20), check)
}

fn banner(text: &str) {
    println!("\n=== {text} ===");
}

fn tally(answers: &[String]) -> String {
    by_answer(answers)
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn main() {
    let _node = NetNs::fresh();
    let (mut lab, client) = Lab::with_client("demo");
    let pod1 = lab.host("pod1", "10.244.1.10", "10.244.1.1");
    let pod2 = lab.host("pod2", "10.244.2.10", "10.244.2.1");
    let stop = Arc::new(AtomicBool::new(false));
    let servers = [
        tcp_responder(&pod1, 8080, "web-1", stop.clone()),
        tcp_responder(&pod2, 8080, "web-2", stop.clone()),
        udp_responder(&pod1, 53, "dns-1", stop.clone()),
        udp_responder(&pod2, 53, "dns-2", stop.clone()),
    ];
    std::fs::create_dir_all(SOURCE).unwrap();
    std::fs::write(format!("{SOURCE}/services.yaml"), SERVICES).unwrap();
    write_endpoints(ENDPOINTS);

    banner("proxier run --source examples/demo --node node-a --cluster-cidr 10.244.0.0/16");
    let mut proxier: Child = Command::new(PROXIER)
        .args([
            "run",
            "--source",
            SOURCE,
            "--node",
            "node-a",
            "--cluster-cidr",
            "10.244.0.0/16",
        ])
        .args(["--min-sync-period", "0s"])
        .env_clear()
        .env("PATH", "")
        .env("PROXIER_LOG", "warn")
        .stdout(Stdio::inherit())
        .spawn()
        .expect("start proxier");
    let started = Instant::now();
    let listing = wait_for("the services", |l| {
        l.contains("10.96.0.80:80") && l.contains("10.0.1.1:30080")
    });
    println!(
        "programmed in {:.2} s (PATH is empty: nothing is exec'd)\n{listing}",
        started.elapsed().as_secs_f64()
    );
    println!(
        "{}",
        witness(IP, &["-brief", "addr", "show", "dev", "kube-ipvs0"])
    );
    let table = witness(NFT, &["list", "table", "inet", "proxier"]);
    println!(
        "nftables: table inet proxier, {} lines",
        table.lines().count()
    );

    banner("traffic from the client namespace");
    println!(
        "ClusterIP 10.96.0.80:80  x10: {}",
        tally(&tcp_reads(&client, "10.96.0.80:80", 10))
    );
    println!(
        "NodePort 10.0.1.1:30080  x10: {}",
        tally(&tcp_reads(&client, "10.0.1.1:30080", 10))
    );
    println!(
        "UDP 10.96.0.10:53        x10: {}",
        tally(&udp_query(&client, "10.96.0.10:53", 10))
    );

    banner("rollout: pod 10.244.2.10 is terminating (serving, not ready)");
    write_endpoints(&ENDPOINTS.replace(
        "- addresses: [10.244.2.10]\n  conditions: {ready: true, serving: true, terminating: false}",
        "- addresses: [10.244.2.10]\n  conditions: {ready: false, serving: true, terminating: true}",
    ));
    let listing = wait_for("weight 0", |l| {
        l.contains("10.244.2.10:8080             Masq    0")
    });
    println!("{listing}");
    println!(
        "ClusterIP 10.96.0.80:80  x10: {}",
        tally(&tcp_reads(&client, "10.96.0.80:80", 10))
    );

    banner("rollout: the pod is gone from the EndpointSlice");
    let gone = ENDPOINTS.replace(
        "- addresses: [10.244.2.10]\n  conditions: {ready: true, serving: true, terminating: false}\n  nodeName: node-a\n",
        "",
    );
    write_endpoints(&gone);
    let listing = wait_for("deletion", |l| !l.contains("10.244.2.10"));
    println!("{listing}");
    println!(
        "ClusterIP 10.96.0.80:80  x10: {}",
        tally(&tcp_reads(&client, "10.96.0.80:80", 10))
    );
    println!(
        "UDP 10.96.0.10:53        x10: {}",
        tally(&udp_query(&client, "10.96.0.10:53", 10))
    );

    banner("proxier stops (the kernel keeps serving), then proxier cleanup");
    let _ = proxier.kill();
    let _ = proxier.wait();
    println!(
        "after stop, ClusterIP x4: {}",
        tally(&tcp_reads(&client, "10.96.0.80:80", 4))
    );
    let out = Command::new(PROXIER)
        .args(["cleanup"])
        .env("PROXIER_LOG", "warn")
        .output()
        .unwrap();
    print!("{}", String::from_utf8_lossy(&out.stdout));
    println!("{}", witness(IPVSADM, &["-Ln"]));
    stop.store(true, Ordering::Relaxed);
    for server in servers {
        server.join().unwrap();
    }
    assert!(out.status.success());
    println!("demo finished");
}
