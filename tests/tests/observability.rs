//! The running binary's kube-proxy-compatible endpoints: `/metrics` (port 10249) carries
//! kube-proxy's metric names after a sync, `/healthz` and `/livez` (port 10256) answer 200.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code panics on failure"
)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use proxier_kernel_tests::{
    service_yaml, slice_yaml, source_dir, wait_for, wait_for_ipvs, write_atomically, Endpoint,
    NetNs, ProxierProcess,
};

fn get(port: u16, path: &str) -> Result<String, String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    Ok(text)
}

#[test]
fn metrics_and_health_endpoints_answer_like_kube_proxy() {
    let _ns = NetNs::fresh();
    let source = source_dir("obs");
    let service = service_yaml("web", "10.96.0.70", &[("http", "TCP", 80, 8080, None)]);
    let slice = slice_yaml(
        "web",
        &[("http", "TCP", 8080)],
        &[Endpoint::ready("10.244.1.5")],
    );
    write_atomically(&source.join("web.yaml"), &format!("{service}---\n{slice}"));
    let mut proxier = ProxierProcess::run(&source, &[]);
    wait_for_ipvs("the service", Duration::from_secs(20), |l| {
        l.contains("10.96.0.70:80")
    });
    let metrics = wait_for("a scrape with a sync", Duration::from_secs(10), || {
        let text = get(10249, "/metrics")?;
        if text.contains("kubeproxy_sync_proxy_rules_last_timestamp_seconds") {
            Ok(text)
        } else {
            Err(text)
        }
    });
    let names: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("kubeproxy_") || l.starts_with("proxier_"))
        .collect();
    println!(
        "/metrics (kube-proxy's and proxier's series):\n{}",
        names.join("\n")
    );
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    for name in [
        "kubeproxy_sync_proxy_rules_duration_seconds_bucket",
        "kubeproxy_sync_proxy_rules_duration_seconds_count",
        "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
        "proxier_real_servers",
    ] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }
    for path in ["/healthz", "/livez"] {
        let answer = get(10256, path).unwrap();
        println!("{path}: {}", answer.lines().next().unwrap_or(""));
        assert!(answer.starts_with("HTTP/1.1 200"), "{path}: {answer}");
    }
    proxier.assert_running();
}
