//! Issue 14 item 2 (iptables-nft): kube-proxy's IPVS mode leaves iptables chains, the rules
//! jumping to them and ipsets behind; frozen, they reject Services created after the swap.
//! proxier removes exactly those once its own table is in place, over netlink (no binary),
//! and keeps kubelet's chains (`filter KUBE-FIREWALL`, `KUBE-KUBELET-CANARY`,
//! `nat KUBE-MARK-DROP`), a CNI's chain, rule and set, and a kube-proxy set that a foreign
//! rule still references (`EBUSY`, reported). With `--keep-kube-proxy-rules` nothing changes.
//!
//! The test writes the state with `iptables-nft-restore`, `ip6tables-nft-restore` and
//! `ipset restore` (kube-proxy's own `writeIptablesRules`/`ipset.go` shapes) and witnesses
//! with `iptables-nft-save`, `ip6tables-nft-save`, `ipset list -n` and `nft list ruleset`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code panics on failure"
)]

use std::io::Write;
use std::process::{Command, Stdio};

use proxier_kernel_tests::{
    service_yaml, source_dir, witness, write_atomically, NetNs, ProxierProcess, NFT,
};

const IPSET: &str = "/usr/sbin/ipset";
const IPTABLES_NFT_RESTORE: &str = "/usr/sbin/iptables-nft-restore";
const IP6TABLES_NFT_RESTORE: &str = "/usr/sbin/ip6tables-nft-restore";
const IPTABLES_NFT_SAVE: &str = "/usr/sbin/iptables-nft-save";
const IP6TABLES_NFT_SAVE: &str = "/usr/sbin/ip6tables-nft-save";

/// kube-proxy's sets (both families) and a CNI's; `KUBE-EXTERNAL-IP` is also referenced by a
/// foreign rule below.
const SETS: &str = "\
create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536
add KUBE-CLUSTER-IP 10.96.0.1,80
create KUBE-EXTERNAL-IP hash:ip,port family inet
create KUBE-LOOP-BACK hash:ip,port,ip family inet
create KUBE-LOAD-BALANCER hash:ip,port family inet
create KUBE-LOAD-BALANCER-FW hash:ip,port family inet
create KUBE-IPVS-IPS hash:ip family inet
add KUBE-IPVS-IPS 10.96.0.1
create KUBE-NODE-PORT-TCP bitmap:port range 0-65535
create KUBE-HEALTH-CHECK-NODE-PORT bitmap:port range 0-65535
create KUBE-6-CLUSTER-IP hash:ip,port family inet6
create cni-pods hash:net family inet
add cni-pods 10.88.0.0/16
";

/// kube-proxy IPVS mode's IPv4 rules, kubelet's chains, and a CNI's chain and rules.
const RULES_V4: &str = r#"*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-NODE-PORT - [0:0]
:KUBE-LOAD-BALANCER - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-MARK-DROP - [0:0]
:KUBE-KUBELET-CANARY - [0:0]
:CNI-SNAT - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A POSTROUTING -s 10.88.0.0/16 -j CNI-SNAT
-A KUBE-POSTROUTING -m comment --comment "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose" -m set --match-set KUBE-LOOP-BACK dst,dst,src -j MASQUERADE
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
-A KUBE-MARK-DROP -j MARK --or-mark 0x8000
-A KUBE-SERVICES -m comment --comment "Kubernetes service cluster ip + port for masquerade purpose" -m set --match-set KUBE-CLUSTER-IP dst,dst -j KUBE-MARK-MASQ
-A KUBE-SERVICES -m comment --comment "Kubernetes service lb portal" -m set --match-set KUBE-LOAD-BALANCER dst,dst -j KUBE-LOAD-BALANCER
-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT
-A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT
-A KUBE-LOAD-BALANCER -j KUBE-MARK-MASQ
-A KUBE-NODE-PORT -p tcp -m comment --comment "Kubernetes nodeport TCP port for masquerade purpose" -m set --match-set KUBE-NODE-PORT-TCP dst -j KUBE-MARK-MASQ
-A CNI-SNAT -m set ! --match-set cni-pods dst -j MASQUERADE
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-NODE-PORT - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
:KUBE-SOURCE-RANGES-FIREWALL - [0:0]
:KUBE-IPVS-FILTER - [0:0]
:KUBE-IPVS-OUT-FILTER - [0:0]
:KUBE-FIREWALL - [0:0]
:KUBE-KUBELET-CANARY - [0:0]
:CNI-FORWARD - [0:0]
-A INPUT -m comment --comment "kubernetes health check rules" -j KUBE-NODE-PORT
-A INPUT -m comment --comment "kube-proxy firewall rules" -j KUBE-PROXY-FIREWALL
-A INPUT -m comment --comment "kubernetes ipvs access filter" -j KUBE-IPVS-FILTER
-A INPUT -j KUBE-FIREWALL
-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
-A INPUT -m set --match-set KUBE-EXTERNAL-IP dst,dst -m comment --comment "a foreign rule using a kube-proxy set" -j ACCEPT
-A FORWARD -m comment --comment "kube-proxy firewall rules" -j KUBE-PROXY-FIREWALL
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A FORWARD -j CNI-FORWARD
-A OUTPUT -m comment --comment "kubernetes ipvs access filter" -j KUBE-IPVS-OUT-FILTER
-A OUTPUT -j KUBE-FIREWALL
-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment "block incoming localnet connections" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
-A KUBE-PROXY-FIREWALL -m comment --comment "Kubernetes service load balancer ip + port for load balancer with sourceRange" -m set --match-set KUBE-LOAD-BALANCER-FW dst,dst -j KUBE-SOURCE-RANGES-FIREWALL
-A KUBE-SOURCE-RANGES-FIREWALL -j DROP
-A KUBE-NODE-PORT -m comment --comment "Kubernetes health check node port" -m set --match-set KUBE-HEALTH-CHECK-NODE-PORT dst -j ACCEPT
-A KUBE-IPVS-FILTER -m set --match-set KUBE-LOAD-BALANCER dst,dst -j RETURN
-A KUBE-IPVS-FILTER -m set --match-set KUBE-CLUSTER-IP dst,dst -j RETURN
-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set KUBE-IPVS-IPS dst -j REJECT --reject-with icmp-port-unreachable
-A CNI-FORWARD -s 10.88.0.0/16 -j ACCEPT
COMMIT
"#;

/// The IPv6 proxier's rules (its sets are `KUBE-6-…`) and a foreign chain.
const RULES_V6: &str = r#"*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-MARK-MASQ - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A KUBE-SERVICES -m set --match-set KUBE-6-CLUSTER-IP dst,dst -j KUBE-MARK-MASQ
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-FORWARD - [0:0]
:CNI6-INPUT - [0:0]
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A INPUT -j CNI6-INPUT
-A CNI6-INPUT -p tcp -m tcp --dport 22 -j ACCEPT
COMMIT
"#;

/// kube-proxy IPVS mode's chain names (either table).
const KUBE_PROXY_CHAINS: &[&str] = &[
    "KUBE-SERVICES",
    "KUBE-POSTROUTING",
    "KUBE-NODE-PORT",
    "KUBE-LOAD-BALANCER",
    "KUBE-MARK-MASQ",
    "KUBE-FORWARD",
    "KUBE-PROXY-FIREWALL",
    "KUBE-SOURCE-RANGES-FIREWALL",
    "KUBE-IPVS-FILTER",
    "KUBE-IPVS-OUT-FILTER",
];

fn feed(tool: &str, args: &[&str], input: &str) {
    let mut child = Command::new(tool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {tool}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{tool} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `iptables-save` without comments and counters (they change as packets pass).
fn save(tool: &str) -> String {
    witness(tool, &[])
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| match (l.starts_with(':'), l.find(" [")) {
            (true, Some(at)) => l[..at].to_owned(),
            _ => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn set_names() -> Vec<String> {
    let mut names: Vec<String> = witness(IPSET, &["list", "-n"])
        .lines()
        .map(str::to_owned)
        .collect();
    names.sort();
    names
}

/// Writes the node's state, runs proxier with `extra` flags until its initial sync (and the
/// leftover pass) is done; returns (v4 save, v6 save, sets) before and after, and the log.
fn takeover(tag: &str, extra: &[&str]) -> ([String; 3], [String; 3], String) {
    feed(IPSET, &["restore"], SETS);
    feed(IPTABLES_NFT_RESTORE, &[], RULES_V4);
    feed(IP6TABLES_NFT_RESTORE, &[], RULES_V6);
    let before = [
        save(IPTABLES_NFT_SAVE),
        save(IP6TABLES_NFT_SAVE),
        set_names().join("\n"),
    ];
    let source = source_dir(tag);
    write_atomically(
        &source.join("service.yaml"),
        &service_yaml("web", "10.96.0.1", &[("http", "TCP", 80, 8080, None)]),
    );
    let mut args = vec!["--node-ip", "10.0.1.1"];
    args.extend_from_slice(extra);
    let mut proxier = ProxierProcess::run(&source, &args);
    proxier.wait_for_log("initial sync");
    let after = [
        save(IPTABLES_NFT_SAVE),
        save(IP6TABLES_NFT_SAVE),
        set_names().join("\n"),
    ];
    let ruleset = witness(NFT, &["list", "ruleset"]);
    assert!(ruleset.contains("table inet proxier"), "{ruleset}");
    let (_, log) = proxier.stop();
    (before, after, log)
}

fn lines_naming(text: &str, chain: &str) -> Vec<String> {
    text.lines()
        .filter(|l| {
            l.split_whitespace()
                .any(|word| word == chain || word == format!(":{chain}"))
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn kube_proxys_leftovers_are_removed_and_everyone_elses_kept() {
    let _ns = NetNs::fresh();
    let (before, after, log) = takeover("leftovers-nft", &[]);
    let [v4, v6, sets] = &after;
    for chain in KUBE_PROXY_CHAINS {
        assert!(
            !lines_naming(&before[0], chain).is_empty()
                || !lines_naming(&before[1], chain).is_empty(),
            "{chain} was written"
        );
        let left: Vec<String> = [lines_naming(v4, chain), lines_naming(v6, chain)].concat();
        assert!(left.is_empty(), "{chain} left: {left:?}\n{v4}\n{v6}\n{log}");
    }
    // kubelet's chains, the CNI's chains and rules, the SSH rule: all still there.
    for kept in [
        ":KUBE-MARK-DROP",
        "-A KUBE-MARK-DROP -j MARK --set-xmark 0x8000/0x8000",
        ":KUBE-KUBELET-CANARY",
        ":KUBE-FIREWALL",
        "-A INPUT -j KUBE-FIREWALL",
        "-A OUTPUT -j KUBE-FIREWALL",
        ":CNI-SNAT",
        "-A POSTROUTING -s 10.88.0.0/16 -j CNI-SNAT",
        "-A CNI-SNAT -m set ! --match-set cni-pods dst -j MASQUERADE",
        "-A FORWARD -j CNI-FORWARD",
        "-A CNI-FORWARD -s 10.88.0.0/16 -j ACCEPT",
        "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT",
        "--match-set KUBE-EXTERNAL-IP dst,dst",
    ] {
        assert!(v4.contains(kept), "{kept:?} kept:\n{v4}\n{log}");
    }
    for kept in [
        ":CNI6-INPUT",
        "-A INPUT -j CNI6-INPUT",
        "-A CNI6-INPUT -p tcp -m tcp --dport 22 -j ACCEPT",
    ] {
        assert!(v6.contains(kept), "{kept:?} kept:\n{v6}\n{log}");
    }
    // kube-proxy's sets are gone, but the one a foreign rule references (EBUSY) and the CNI's.
    assert_eq!(sets, "KUBE-EXTERNAL-IP\ncni-pods", "{log}");
    assert!(log.contains("kube-proxy leftovers"), "{log}");
    assert!(log.contains("ipsets in use [KUBE-EXTERNAL-IP]"), "{log}");
    assert!(
        log.contains("iptables-nft ipv4 filter KUBE-FIREWALL"),
        "{log}"
    );
    let summary = log
        .lines()
        .find(|l| l.contains("kube-proxy leftovers"))
        .unwrap_or_default();
    println!("item 2 (iptables-nft): {summary}");
    println!(
        "item 2 (iptables-nft): v4 lines {} -> {}, v6 lines {} -> {}, sets {} -> {}",
        before[0].lines().count(),
        v4.lines().count(),
        before[1].lines().count(),
        v6.lines().count(),
        before[2].lines().count(),
        sets.lines().count()
    );
}

#[test]
fn keep_kube_proxy_rules_changes_nothing() {
    let _ns = NetNs::fresh();
    let (before, after, log) = takeover("leftovers-nft-keep", &["--keep-kube-proxy-rules"]);
    assert_eq!(before, after, "{log}");
    assert!(!log.contains("kube-proxy leftovers"), "{log}");
    println!(
        "item 2 (keep): {} v4 lines, {} v6 lines, {} sets unchanged",
        after[0].lines().count(),
        after[1].lines().count(),
        after[2].lines().count()
    );
}
