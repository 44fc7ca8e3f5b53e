//! Golden test: `proxier plan` on `examples/cluster` prints exactly `examples/cluster-node-a.ipvsadm`.

use std::path::PathBuf;
use std::process::Command;

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

#[expect(
    clippy::unwrap_used,
    reason = "test helper: a failed spawn fails the test"
)]
fn plan(extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_proxier"))
        .args(["plan", "-f"])
        .arg(examples().join("cluster"))
        .args(["--node", "node-a"])
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn plan_of_the_example_cluster_matches_the_golden_listing() {
    let output = plan(&[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let expected = std::fs::read_to_string(examples().join("cluster-node-a.ipvsadm")).unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(
        stdout, expected,
        "regenerate with: proxier plan -f examples/cluster --node node-a"
    );
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(
        stderr,
        "skipped Service shop/db: headless (clusterIP: None)\n\
         skipped Service shop/payments: type ExternalName\n"
    );
}

#[test]
fn addresses_follow_the_listing_and_exclude_node_ips() {
    let output = plan(&["--addresses"]);
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    let (_, addresses) = stdout.split_once("\nAddresses to bind:\n").unwrap();
    let addresses: Vec<&str> = addresses.lines().collect();
    assert!(addresses.contains(&"10.96.0.10"));
    assert!(addresses.contains(&"203.0.113.10"));
    assert!(addresses.contains(&"fd00:96::70"));
    assert!(!addresses.contains(&"192.168.1.10"));
}

#[test]
fn node_ip_flag_overrides_the_node_object_and_config_sets_the_scheduler() {
    let dir = std::env::temp_dir().join(format!("proxier-golden-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nipvs: {scheduler: mh}\n",
    )
    .unwrap();
    let output = plan(&[
        "--node-ip",
        "10.0.0.5",
        "--config",
        config.to_str().unwrap(),
    ]);
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        stdout.contains("TCP  10.0.0.5:30080 mh (mh-port)\n"),
        "{stdout}"
    );
    assert!(!stdout.contains("192.168.1.10:30080"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn unreadable_input_exits_1() {
    let output = Command::new(env!("CARGO_BIN_EXE_proxier"))
        .args(["plan", "-f", "/nonexistent/proxier-input", "--node", "n"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
}
