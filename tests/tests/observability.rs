//! The running binary's kube-proxy-compatible endpoints: `/metrics` (port 10249) carries
//! kube-proxy's metric names after a sync, `/healthz` and `/livez` (port 10256) answer 200,
//! `/proxyMode` and `/configz` answer like kube-proxy's.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code panics on failure"
)]

use std::time::Duration;

use proxier_kernel_tests::scrape::{assert_kube_proxy_set, series};
use proxier_kernel_tests::yaml::web_source;
use proxier_kernel_tests::{
    http_get as get, wait_for, wait_for_ipvs, Endpoint, NetNs, ProxierProcess,
};

#[test]
fn metrics_and_health_endpoints_answer_like_kube_proxy() {
    let _ns = NetNs::fresh();
    let source = web_source("obs", "10.96.0.70", &[Endpoint::ready("10.244.1.5")]);
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
    // Issue 16 item 3: kube-proxy's whole IPVS-mode set (pkg/proxy/metrics RegisterMetrics),
    // each with its labels, after a sync and the probes above.
    let metrics = get(10249, "/metrics").unwrap();
    let mut listed = assert_kube_proxy_set(&metrics, &["IPv4"]);
    listed.extend(
        series(&metrics, "proxier_build_info")
            .iter()
            .map(|l| l.to_string()),
    );
    println!(
        "kube-proxy, process and build series (first sample each):\n{}",
        listed.join("\n")
    );
    let healthz = series(&metrics, "kubeproxy_proxy_healthz_total");
    assert!(
        healthz
            .iter()
            .any(|l| l.starts_with("kubeproxy_proxy_healthz_total{code=\"200\"} ")),
        "{healthz:?}"
    );
    let mode = get(10249, "/proxyMode").unwrap();
    assert!(mode.ends_with("\r\n\r\nipvs"), "{mode}");
    let configz = get(10249, "/configz").unwrap();
    println!(
        "/configz: {}",
        configz.split("\r\n\r\n").nth(1).unwrap_or("")
    );
    assert!(
        configz.contains("\"kubeproxy.config.k8s.io\":{") && configz.contains("\"mode\":\"ipvs\""),
        "{configz}"
    );
    proxier.assert_running();
}
