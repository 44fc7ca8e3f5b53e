//! The binary in its kube-proxy role — `proxier --config … --hostname-override …`, kubeadm's
//! command, the kubeconfig named by the file's `clientConnection.kubeconfig` —
//! against a fake API server (list + watch over HTTP on 127.0.0.1), programming the real
//! kernel: a Service and its EndpointSlice reach IPVS, watch events change it, and the time
//! from an event to the kernel change is measured with `ipvsadm` as the witness.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code panics on failure"
)]

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proxier_kernel_tests::fake_api::{serve_dns_cluster, slice};
use proxier_kernel_tests::yaml::{kube_proxy_config, kubeconfig};
use proxier_kernel_tests::{udp_query, udp_responder, wait_for_ipvs, Lab, NetNs, ProxierProcess};

#[test]
fn the_binary_follows_the_api_server_into_the_kernel() {
    let _ns = NetNs::fresh();
    let (mut lab, client) = Lab::with_client("fa");
    let a = lab.host("a", "10.244.1.5", "10.244.1.1");
    let b = lab.host("b", "10.244.2.6", "10.244.2.1");
    let stop = Arc::new(AtomicBool::new(false));
    let servers = [
        udp_responder(&a, 53, "a", stop.clone()),
        udp_responder(&b, 53, "b", stop.clone()),
    ];

    let (_runtime, api, url) = serve_dns_cluster();
    let kubeconfig = kubeconfig("fake-api-kernel", &url);
    let config = kube_proxy_config(
        "fake-api-kernel",
        &format!(
            "clusterCIDR: 10.244.0.0/16\nipvs:\n  minSyncPeriod: 100ms\n  syncPeriod: 30s\n\
             clientConnection:\n  kubeconfig: {kubeconfig}\n"
        ),
    );

    let mut proxier =
        ProxierProcess::spawn(&["--config", &config, "--hostname-override", "node-a"]);
    let initial = proxier.wait_for_ipvs("programmed", Duration::from_secs(30), |l| {
        l.contains("UDP  10.96.0.10:53 rr")
            && l.contains("-> 10.244.1.5:53")
            && l.contains("-> 10.244.2.6:53")
    });
    let answers = udp_query(&client, "10.96.0.10:53", 6);
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
    let answers = udp_query(&client, "10.96.0.10:53", 6);
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
