//! The binary in its kube-proxy role — `proxier --kubeconfig … --config … --hostname-override` —
//! against a fake API server (list + watch over HTTP on 127.0.0.1), programming the real
//! kernel: a Service and its EndpointSlice reach IPVS, watch events change it, and the time
//! from an event to the kernel change is measured with `ipvsadm` as the witness.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code panics on failure"
)]

#[path = "../../proxier/tests/support/fake_api_server.rs"]
mod fake_api_server;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fake_api_server::{node, service, slice, FakeApi};
use proxier_kernel_tests::{
    enable_forwarding, in_netns, udp_responder, wait_for_ipvs, Lab, NetNs, ProxierProcess,
};

const KUBECONFIG: &str = "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster: {server: \"SERVER\"}\nusers:\n- name: none\n  user: {}\ncontexts:\n- name: fake\n  context: {cluster: fake, user: none}\ncurrent-context: fake\n";
const CONFIG: &str = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: ipvs\nclusterCIDR: 10.244.0.0/16\nipvs:\n  minSyncPeriod: 100ms\n  syncPeriod: 30s\n";

fn ask(client: &str) -> String {
    in_netns(client, || {
        let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        socket.send_to(b"q", "10.96.0.10:53").unwrap();
        let mut buffer = [0; 32];
        socket
            .recv(&mut buffer)
            .map(|n| String::from_utf8_lossy(&buffer[..n]).into_owned())
            .unwrap_or_else(|_| "lost".into())
    })
    .join()
    .unwrap()
}

#[test]
fn the_binary_follows_the_api_server_into_the_kernel() {
    let _ns = NetNs::fresh();
    enable_forwarding();
    let mut lab = Lab::new("fa");
    let client = lab.host("client", "10.0.1.2", "10.0.1.1");
    let a = lab.host("a", "10.244.1.5", "10.244.1.1");
    let b = lab.host("b", "10.244.2.6", "10.244.2.1");
    let stop = Arc::new(AtomicBool::new(false));
    let servers = [
        udp_responder(&a, 53, "a", stop.clone()),
        udp_responder(&b, 53, "b", stop.clone()),
    ];

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let api = FakeApi::new();
    api.put("services", "dns", &service("dns", "10.96.0.10", "UDP", 53));
    api.put(
        "endpointslices",
        "dns-1",
        &slice("dns-1", "", ("UDP", 53), &["10.244.1.5", "10.244.2.6"]),
    );
    api.put("nodes", "node-a", &node("node-a", "10.0.1.1"));
    let (address, _acceptor) = runtime.block_on(api.clone().serve());
    let dir = std::path::Path::new("/tmp/fake-api-kernel");
    std::fs::create_dir_all(dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        KUBECONFIG.replace("SERVER", &format!("http://{address}")),
    )
    .unwrap();
    let config = dir.join("config.conf");
    std::fs::write(&config, CONFIG).unwrap();

    let started = Instant::now();
    let mut proxier = ProxierProcess::spawn(&[
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--hostname-override",
        "node-a",
    ]);
    let programmed = |l: &str| {
        l.contains("UDP  10.96.0.10:53 rr")
            && l.contains("-> 10.244.1.5:53")
            && l.contains("-> 10.244.2.6:53")
    };
    while !programmed(&proxier_kernel_tests::witness(
        proxier_kernel_tests::IPVSADM,
        &["-Ln"],
    )) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not programmed; proxier log:\n{}",
            proxier.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let initial = started.elapsed();
    let answers: Vec<String> = (0..6).map(|_| ask(&client)).collect();
    assert!(answers.iter().all(|x| x == "a" || x == "b"), "{answers:?}");

    let event = Instant::now();
    api.put(
        "endpointslices",
        "dns-1",
        &slice("dns-1", "", ("UDP", 53), &["10.244.1.5"]),
    );
    wait_for_ipvs("the endpoint removal", Duration::from_secs(10), |l| {
        !l.contains("10.244.2.6")
    });
    let removal = event.elapsed();
    let answers: Vec<String> = (0..6).map(|_| ask(&client)).collect();
    assert!(answers.iter().all(|x| x == "a"), "{answers:?}");

    let event = Instant::now();
    api.change("services", "dns", None);
    wait_for_ipvs("the Service deletion", Duration::from_secs(10), |l| {
        !l.contains("10.96.0.10")
    });
    let deletion = event.elapsed();
    let posted_events = api.with(|s| s.events.len());

    println!(
        "fake API -> kernel: start to first programmed state {:.0} ms; EndpointSlice MODIFIED -> real server gone {:.0} ms; Service DELETED -> virtual server gone {:.0} ms; {posted_events} Kubernetes Events posted",
        initial.as_secs_f64() * 1e3,
        removal.as_secs_f64() * 1e3,
        deletion.as_secs_f64() * 1e3
    );
    assert!(
        posted_events > 0,
        "sizing decisions are posted as Events:\n{}",
        proxier.log()
    );
    proxier.assert_running();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for server in servers {
        server.join().unwrap();
    }
}
