//! Incident I5: kube-proxy's IPVS mode jumped to a `KUBE-MARK-DROP` chain that kubelet was
//! supposed to create; where the container's iptables (legacy) and the host's (nft)
//! disagreed, `iptables-restore` failed and the Kubernetes API VIP went dark.
//!
//! proxier depends on no rule, chain or set of anyone else's. The same ClusterIP (TCP and UDP)
//! and NodePort service must work on a host with no netfilter rules at all, and on hosts with
//! both iptables-legacy and nft rules present, kubelet's chains (`KUBE-MARK-DROP`, and a
//! `KUBE-FIREWALL` dropping packets marked 0x8000) in only one flavour, each way round; and
//! proxier must not add anything to either iptables flavour.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code panics on failure"
)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use proxier_kernel_tests::lab::PodNetwork;
use proxier_kernel_tests::witness::witness_each as iptables;
use proxier_kernel_tests::{
    in_netns, service_yaml, slice_yaml, source_dir, tcp_read, tcp_responder, udp_ask, udp_echo,
    wait_for_ipvs, witness, write_atomically, Endpoint, NetNs, ProxierProcess, IPTABLES_LEGACY,
    IPTABLES_LEGACY_SAVE, IPTABLES_NFT, IPTABLES_NFT_SAVE, NFT,
};

/// Host rules that are not kubelet's: docker's, an SSH accept, a foreign nft table.
fn host_rules() {
    for tool in [IPTABLES_LEGACY, IPTABLES_NFT] {
        iptables(
            tool,
            &[
                "-t nat -A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE",
                "-t filter -A INPUT -p tcp --dport 22 -j ACCEPT",
                "-t filter -N DOCKER-USER",
                "-t filter -A DOCKER-USER -j RETURN",
                "-t filter -A FORWARD -j DOCKER-USER",
            ],
        );
    }
    witness(
        NFT,
        &["add table inet host; \
           add chain inet host input { type filter hook input priority 10; policy accept; }; \
           add rule inet host input tcp dport 22 counter accept; \
           add chain inet host forward { type filter hook forward priority 10; policy accept; }; \
           add rule inet host forward ct state established,related counter accept"],
    );
}

/// kubelet's chains, in one iptables flavour only.
fn kubelet_chains(tool: &str) {
    iptables(
        tool,
        &[
            "-t nat -N KUBE-MARK-DROP",
            "-t nat -A KUBE-MARK-DROP -j MARK --set-xmark 0x8000/0x8000",
            "-t filter -N KUBE-FIREWALL",
            "-t filter -A KUBE-FIREWALL -m mark --mark 0x8000/0x8000 -j DROP",
            "-t filter -A INPUT -j KUBE-FIREWALL",
            "-t filter -A OUTPUT -j KUBE-FIREWALL",
        ],
    );
}

fn iptables_listings() -> (String, String) {
    let strip = |text: String| {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| match (l.starts_with(':'), l.find(" [")) {
                (true, Some(at)) => l[..at].to_owned(),
                _ => l.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    (
        strip(witness(IPTABLES_LEGACY_SAVE, &[])),
        strip(witness(IPTABLES_NFT_SAVE, &[])),
    )
}

/// Runs proxier for a ClusterIP (TCP 80, UDP 53) + NodePort (TCP 30080) service with two
/// backends after `setup`, and checks every request through each front is answered.
fn service_works_after(tag: &str, setup: impl FnOnce()) -> String {
    let _ns = NetNs::fresh();
    let network = PodNetwork::new(tag, 2);
    let (a, b) = (&network.pods[0], &network.pods[1]);
    let stop = Arc::new(AtomicBool::new(false));
    let servers = [
        tcp_responder(a, 8080, "a", stop.clone()),
        tcp_responder(b, 8080, "b", stop.clone()),
        udp_echo(a, 5353, "a", stop.clone(), Arc::default()),
        udp_echo(b, 5353, "b", stop.clone(), Arc::default()),
    ];
    setup();
    let tables_before = witness(NFT, &["list", "tables"]);
    let iptables_before = iptables_listings();

    let source = source_dir(tag);
    write_atomically(
        &source.join("service.yaml"),
        &service_yaml(
            "api",
            "10.96.0.1",
            &[
                ("https", "TCP", 80, 8080, Some(30080)),
                ("dns", "UDP", 53, 5353, Some(30053)),
            ],
        ),
    );
    write_atomically(
        &source.join("slice.yaml"),
        &slice_yaml(
            "api",
            &[("https", "TCP", 8080), ("dns", "UDP", 5353)],
            &[Endpoint::ready("10.0.2.2"), Endpoint::ready("10.0.3.2")],
        ),
    );
    let mut proxier = ProxierProcess::run(
        &source,
        &["--node-ip", "10.0.1.1", "--cluster-cidr", "10.0.0.0/8"],
    );
    wait_for_ipvs("the service", Duration::from_secs(20), |l| {
        l.contains("TCP  10.96.0.1:80")
            && l.contains("TCP  10.0.1.1:30080")
            && l.contains("UDP  10.96.0.1:53")
            && l.matches("10.0.3.2").count() >= 4
    });

    let results = in_netns(&network.client, || {
        let mut results = Vec::new();
        for target in ["10.96.0.1:80", "10.0.1.1:30080"] {
            for _ in 0..10 {
                let answer = tcp_read(target.parse().unwrap(), Duration::from_secs(2))
                    .unwrap_or_else(|e| format!("failed: {e}"));
                results.push((target, answer));
            }
        }
        for target in ["10.96.0.1:53", "10.0.1.1:30053"] {
            for i in 0..10 {
                let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
                let answer = udp_ask(
                    &socket,
                    target.parse().unwrap(),
                    format!("q{i}").as_bytes(),
                    Duration::from_secs(1),
                )
                .unwrap_or_else(|| "lost".to_owned());
                results.push((target, answer));
            }
        }
        results
    })
    .join()
    .unwrap();
    proxier.assert_running();
    let failed: Vec<_> = results
        .iter()
        .filter(|(_, answer)| answer != "a" && answer != "b")
        .collect();
    let (from_a, from_b) = (
        results.iter().filter(|(_, x)| x == "a").count(),
        results.iter().filter(|(_, x)| x == "b").count(),
    );
    // proxier wrote nothing into either iptables flavour, and only its own nft table.
    let iptables_after = iptables_listings();
    let tables_after = witness(NFT, &["list", "tables"]);
    let _ = proxier.stop();
    stop.store(true, Ordering::Relaxed);
    for s in servers {
        s.join().unwrap();
    }
    assert!(failed.is_empty(), "{tag}: failed requests {failed:?}");
    assert!(from_a > 0 && from_b > 0, "{tag}: both backends served");
    assert_eq!(
        iptables_before, iptables_after,
        "{tag}: proxier changed iptables"
    );
    let added: Vec<&str> = tables_after
        .lines()
        .filter(|l| !tables_before.lines().any(|b| b == *l))
        .collect();
    assert_eq!(added, ["table inet proxier"], "{tag}: {tables_after}");
    format!(
        "{tag}: {} requests (ClusterIP+NodePort, TCP+UDP), {} failed, a={from_a} b={from_b}",
        results.len(),
        failed.len()
    )
}

#[test]
fn service_works_with_no_other_rules_at_all() {
    let line = service_works_after("i5none", || {
        let tables = witness(NFT, &["list", "ruleset"]);
        assert!(tables.trim().is_empty(), "a host with no rules: {tables}");
    });
    println!("I5 result: {line}");
}

/// Host rules in both flavours, kubelet's chains in `kubelet` only (absent from `other_save`).
fn service_works_with_kubelet_chains_in(
    tag: &str,
    kubelet: &'static str,
    other_save: &'static str,
) {
    let line = service_works_after(tag, || {
        host_rules();
        kubelet_chains(kubelet);
        let other = witness(other_save, &[]);
        assert!(!other.contains("KUBE-MARK-DROP"), "{other}");
    });
    println!("I5 result: {line}");
}

#[test]
fn service_works_with_legacy_and_nft_rules_and_kubelet_chains_in_nft_only() {
    service_works_with_kubelet_chains_in("i5nft", IPTABLES_NFT, IPTABLES_LEGACY_SAVE);
}

#[test]
fn service_works_with_legacy_and_nft_rules_and_kubelet_chains_in_legacy_only() {
    service_works_with_kubelet_chains_in("i5leg", IPTABLES_LEGACY, IPTABLES_NFT_SAVE);
}
