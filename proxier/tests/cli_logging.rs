//! Issue 16 through the binary, without touching the kernel: kube-proxy's complete command
//! line is accepted and each unimplemented flag is warned about once; `--logging-format=json`
//! (and `logging.format: json`) writes lines that `jq` parses, one object per line; a fatal
//! error goes through the logger with its cause chain printed once.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code panics on failure"
)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use proxier_test_support::kube_proxy::{flag_line, UNIMPLEMENTED_IN_FLAG_LINE};

fn proxier(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_proxier"))
        .args(args)
        .env_clear()
        .output()
        .unwrap()
}

fn scratch(tag: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("proxier-cli-logging-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Every line of `text` through `jq -c .` (the Debian package; `.ci/run` installs it): each
/// must be one JSON object. Returns the parsed lines.
fn jq_lines(text: &str) -> Vec<serde_json::Value> {
    let lines: Vec<&str> = text.lines().collect();
    assert!(!lines.is_empty(), "no log lines");
    let mut jq = Command::new("jq")
        .args(["-c", "."])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("jq (apt-get install jq)");
    jq.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = jq.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "jq refused the log: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        parsed.len(),
        lines.len(),
        "one JSON value per line:\n{text}"
    );
    for (line, value) in lines.iter().zip(&parsed) {
        assert_eq!(
            &serde_json::from_str::<serde_json::Value>(line).unwrap(),
            value
        );
        for key in ["ts", "caller", "level", "msg"] {
            assert!(value.get(key).is_some(), "{key} missing: {line}");
        }
    }
    parsed
}

#[test]
fn the_complete_kube_proxy_line_warns_once_per_unimplemented_flag_in_json() {
    let dir = scratch("line");
    let written = dir.join("config.yaml");
    let mut args = flag_line("/var/lib/kube-proxy/kubeconfig", "https://10.0.0.1:6443");
    let accepted = args.len();
    args.push(format!("--write-config-to={}", written.display()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = proxier(&args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let lines = jq_lines(&stderr);
    let warned: Vec<&str> = lines
        .iter()
        .filter(|l| l["level"] == "warning")
        .filter_map(|l| l["flag"].as_str())
        .collect();
    println!(
        "{accepted} kube-proxy flags accepted (+ --write-config-to); {} JSON lines, all parsed by jq; \
         {} flag warnings: {warned:?}",
        lines.len(),
        warned.len()
    );
    assert_eq!(warned, UNIMPLEMENTED_IN_FLAG_LINE);
    assert!(
        lines.iter().all(|l| l["level"] != "error"),
        "no error: {stderr}"
    );
    // What was written is a configuration `plan --config` takes without a warning (the
    // Node is there, so plan's own report on stderr is empty).
    let cluster = dir.join("cluster");
    std::fs::create_dir_all(&cluster).unwrap();
    std::fs::write(
        cluster.join("node.yaml"),
        "apiVersion: v1\nkind: Node\nmetadata: {name: node-a}\n\
         status: {addresses: [{type: InternalIP, address: 10.0.1.1}]}\n",
    )
    .unwrap();
    let output = proxier(&[
        "plan",
        "-f",
        cluster.to_str().unwrap(),
        "--node",
        "node-a",
        "--config",
        written.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(stderr, "", "no warning, no remark");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn logging_format_json_in_the_file_and_fatal_errors_through_the_logger() {
    let dir = scratch("file");
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        "clusterCIDR: 10.244.0.0/16\nlogging: {format: json}\nfeatureGates: {SomeGate: true}\n\
         ipvs: {futureKnob: 3}\n",
    )
    .unwrap();
    let output = proxier(&[
        "run",
        "--source",
        "/nonexistent-proxier-source",
        "--node",
        "n",
        "--config",
        config.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let lines = jq_lines(&stderr);
    let mut warnings: Vec<&str> = lines
        .iter()
        .filter(|l| l["level"] == "warning")
        .filter_map(|l| l["field"].as_str())
        .collect();
    warnings.sort_unstable();
    assert_eq!(warnings, ["featureGates", "ipvs.futureKnob"], "{stderr}");
    let fatal = lines.last().unwrap();
    let err = fatal["err"].as_str().unwrap();
    println!("fatal line: {fatal}");
    assert_eq!(fatal["level"], "error");
    // The missing source is reported, before any kernel access (no IPVS error).
    assert!(
        err.contains("/nonexistent-proxier-source: no such file or directory"),
        "{err}"
    );
    assert!(!err.contains("IPVS"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_cause_chain_prints_each_cause_once() {
    // kube-proxy's role, no --config: the flags' configuration is refused; the chain is the
    // context and the refusal, once each, through the logger (text by default).
    let output = proxier(&["--proxy-mode=iptables", "--kube-api-qps=3"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("ERROR"), "{stderr}");
    assert_eq!(stderr.matches("IPVS mode only").count(), 1, "{stderr}");
    assert_eq!(
        stderr
            .matches("the configuration made of kube-proxy's flags")
            .count(),
        1,
        "{stderr}"
    );
    // An I/O cause under a context: printed once.
    let output = proxier(&["--config=/nonexistent-proxier.yaml"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "{stderr}"
    );
    println!("fatal: {}", stderr.trim());
}
