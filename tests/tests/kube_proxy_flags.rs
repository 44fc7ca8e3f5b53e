//! Issue 16 in the real kernel: proxier started as kube-proxy with a complete GCE/kops-style
//! command line (every flag of kube-proxy's `options.go` set) against a fake API server runs,
//! logs JSON lines that all parse, warns once per unimplemented flag, and acts on the
//! implemented ones (outside witnesses: `ipvsadm` for the scheduler and IPVS timeouts, procfs
//! for strict ARP and oom_score_adj, the HTTP endpoints for the addresses). `/healthz` turns
//! 503 while the Node carries the cluster autoscaler's `ToBeDeletedByClusterAutoscaler` taint
//! (KEP-3836) and 200 again once it is gone; `/livez` stays 200.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code panics on failure"
)]

use std::time::Duration;

use proxier_kernel_tests::fake_api::{node, serve_dns_cluster};
use proxier_kernel_tests::kube_proxy::{flag_line, UNIMPLEMENTED_IN_FLAG_LINE};
use proxier_kernel_tests::yaml::kubeconfig;
use proxier_kernel_tests::{http_get, wait_for, witness, NetNs, ProxierProcess, IPVSADM};

/// The status line of `GET path` on 127.0.0.1:`port`.
fn status(port: u16, path: &str) -> String {
    http_get(port, path)
        .map(|r| r.lines().next().unwrap_or("").to_owned())
        .unwrap_or_else(|e| e)
}

/// Waits (10 s at most) until `GET path` on :10256 answers `code`; returns the status line.
fn health_turns(path: &str, code: u16) -> String {
    let want = format!("HTTP/1.1 {code}");
    wait_for(&format!("{path} {code}"), Duration::from_secs(10), || {
        let line = status(10256, path);
        if line.starts_with(&want) {
            Ok(line)
        } else {
            Err(line)
        }
    })
}

#[test]
fn the_complete_kube_proxy_command_line_runs_and_warns_once_per_unimplemented_flag() {
    let _ns = NetNs::fresh();
    let (_runtime, api, master) = serve_dns_cluster();
    let kubeconfig = kubeconfig("kube-proxy-flags", &master);
    let line = flag_line(&kubeconfig, &master);
    let args: Vec<&str> = line.iter().map(String::as_str).collect();
    println!("proxier {}", args.join(" "));
    let mut proxier = ProxierProcess::spawn(&args);

    proxier.wait_for_ipvs("the Service", Duration::from_secs(30), |l| {
        l.contains("UDP  10.96.0.10:53 rr")
            && l.contains("-> 10.244.1.5:53")
            && l.contains("-> 10.244.2.6:53")
    });
    let healthz = health_turns("/healthz", 200);
    let metrics = http_get(10249, "/metrics").unwrap();
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    proxier.assert_running();

    // Implemented flags, seen from outside.
    let timeouts = witness(IPVSADM, &["-L", "--timeout"]);
    assert!(timeouts.contains("900 120 300"), "{timeouts}");
    let arp_ignore = std::fs::read_to_string("/proc/sys/net/ipv4/conf/all/arp_ignore").unwrap();
    assert_eq!(arp_ignore.trim(), "1", "--ipvs-strict-arp");
    let oom = std::fs::read_to_string(format!("/proc/{}/oom_score_adj", proxier.id())).unwrap();
    assert_eq!(oom.trim(), "-999", "--oom-score-adj");

    // KEP-3836: the autoscaler's taint fails /healthz, not /livez, until it goes.
    let tainted = node("node-a", "10.0.1.1").replacen(
        r#""status""#,
        r#""spec":{"taints":[{"key":"ToBeDeletedByClusterAutoscaler","value":"1700000000","effect":"NoSchedule"}]},"status""#,
        1,
    );
    api.put("nodes", "node-a", &tainted);
    let unhealthy = wait_for(
        "/healthz 503 under the taint",
        Duration::from_secs(10),
        || {
            let line = status(10256, "/healthz");
            if line.starts_with("HTTP/1.1 503") {
                Ok(line)
            } else {
                Err(line)
            }
        },
    );
    let livez = status(10256, "/livez");
    assert!(livez.starts_with("HTTP/1.1 200"), "{livez}");
    api.put("nodes", "node-a", &node("node-a", "10.0.1.1"));
    let recovered = wait_for(
        "/healthz 200 without the taint",
        Duration::from_secs(10),
        || {
            let line = status(10256, "/healthz");
            if line.starts_with("HTTP/1.1 200") {
                Ok(line)
            } else {
                Err(line)
            }
        },
    );

    let (_, log) = proxier.stop();
    let mut parsed = Vec::new();
    for line in log.lines() {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}\n{log}"));
        parsed.push(value);
    }
    let warned: Vec<&str> = parsed
        .iter()
        .filter(|l| l["level"] == "warning")
        .filter_map(|l| l["flag"].as_str())
        .collect();
    println!(
        "{} flags accepted; {} log lines, every one parsed as JSON; {} flag warnings {warned:?}; \
         {healthz} -> tainted {unhealthy} (livez {livez}) -> untainted {recovered}",
        args.len(),
        parsed.len(),
        warned.len(),
    );
    assert_eq!(warned, UNIMPLEMENTED_IN_FLAG_LINE, "{log}");
    assert!(
        parsed.iter().all(|l| l["level"] != "error"),
        "no error logged:\n{log}"
    );
}
