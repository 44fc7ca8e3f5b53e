//! Incident I2: `kube-proxy --cleanup` removed iptables rules it did not own, among them
//! docker's `-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE`, and every docker0
//! container lost outbound networking.
//!
//! Here a keepalived-like IPVS set-up (including virtual servers on the node IP outside and
//! inside the NodePort range, virtual servers on a VIP that a Service also uses as its
//! externalIP, and a fwmark service), a foreign nftables table, docker's MASQUERADE rule in
//! both iptables-nft and iptables-legacy, and kubelet's `KUBE-MARK-DROP` chain exist first.
//! `proxier run` programs a ClusterIP + NodePort service (and a Service whose externalIP is
//! keepalived's VIP) and serves traffic, then `proxier cleanup` runs, told by `--exclude-cidr`
//! (kube-proxy's `ipvs.excludeCIDRs`) that the shared VIP is not to be touched: after the
//! run, nothing in the kernel says which virtual servers on an address of kube-ipvs0 were
//! keepalived's. Every foreign object must be byte-identical (witness listings, with
//! packet counters stripped) during the run and after the cleanup, and everything of proxier's
//! must be gone.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code panics on failure"
)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use proxier_kernel_tests::lab::PodNetwork;
use proxier_kernel_tests::{
    service_yaml, slice_yaml, source_dir, tcp_reads, tcp_responder, wait_for_ipvs, witness,
    write_atomically, Endpoint, NetNs, ProxierProcess, IP, IPTABLES_LEGACY, IPTABLES_LEGACY_SAVE,
    IPTABLES_NFT, IPTABLES_NFT_SAVE, IPVSADM, NFT,
};

/// Removes packet/byte counters and timestamp comments so listings compare on content only.
fn strip_counters(text: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let mut out = String::new();
            let mut rest = l;
            // iptables-save chain policies: ":POSTROUTING ACCEPT [12:720]".
            if let (Some(open), true) = (rest.find(" ["), rest.starts_with(':')) {
                out.push_str(&rest[..open]);
                rest = "";
            }
            // nft: "counter packets 3 bytes 180".
            while let Some(at) = rest.find("counter packets ") {
                out.push_str(&rest[..at + "counter".len()]);
                let tail = &rest[at + "counter packets ".len()..];
                let after_bytes = tail
                    .find("bytes ")
                    .map(|b| &tail[b + "bytes ".len()..])
                    .unwrap_or("");
                rest = after_bytes.trim_start_matches(|c: char| c.is_ascii_digit());
            }
            out.push_str(rest);
            out
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every nftables table except proxier's own, listed one by one, counters stripped.
fn foreign_nft() -> String {
    let tables = witness(NFT, &["list", "tables"]);
    let mut out = String::new();
    for line in tables.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let ["table", family, name] = words[..] else {
            panic!("unexpected `nft list tables` line {line:?}");
        };
        if family == "inet" && name == "proxier" {
            continue;
        }
        out.push_str(&witness(NFT, &["list", "table", family, name]));
    }
    strip_counters(&out)
}

/// proxier's virtual server on keepalived's VIP (the `ext` Service's externalIP).
const SHARED_VIP_OURS: &str = "192.168.50.10:8081";

/// Lines of `ipvsadm -Sn` that are not proxier's (VIPs 10.96.0.0/16, NodePorts on 10.0.1.1,
/// the externalIP port on the shared VIP).
fn foreign_ipvs(save: &str) -> String {
    save.lines()
        .filter(|l| {
            !l.contains("10.96.") && !l.contains("10.0.1.1:30080") && !l.contains(SHARED_VIP_OURS)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    ipvs: String,
    nft: String,
    legacy: String,
    iptables_nft: String,
}

fn snapshot() -> Snapshot {
    Snapshot {
        ipvs: foreign_ipvs(&witness(IPVSADM, &["-Sn"])),
        nft: foreign_nft(),
        legacy: strip_counters(&witness(IPTABLES_LEGACY_SAVE, &[])),
        iptables_nft: strip_counters(&witness(IPTABLES_NFT_SAVE, &[])),
    }
}

fn assert_same(label: &str, before: &Snapshot, now: &Snapshot) {
    for (what, b, n) in [
        ("ipvsadm -Sn", &before.ipvs, &now.ipvs),
        ("nft (foreign tables)", &before.nft, &now.nft),
        ("iptables-legacy-save", &before.legacy, &now.legacy),
        ("iptables-nft-save", &before.iptables_nft, &now.iptables_nft),
    ] {
        assert_eq!(
            b, n,
            "{label}: {what} changed\n--- before\n{b}\n--- now\n{n}"
        );
    }
}

fn install_foreign_objects() {
    // keepalived: a VIP of its own, one on the node IP outside the NodePort range, a fwmark one.
    for args in [
        "-A -t 192.168.50.10:80 -s wrr",
        "-a -t 192.168.50.10:80 -r 192.168.50.20:80 -m -w 3",
        "-a -t 192.168.50.10:80 -r 192.168.50.21:80 -m -w 1",
        "-A -u 192.168.50.10:53 -s rr",
        "-a -u 192.168.50.10:53 -r 192.168.50.22:53 -m -w 1",
        "-A -t 10.0.1.1:443 -s lc -p 300",
        "-a -t 10.0.1.1:443 -r 192.168.50.23:443 -m -w 1",
        // On the node IP inside the NodePort range (issue 12 item 3).
        "-A -t 10.0.1.1:30500 -s wrr",
        "-a -t 10.0.1.1:30500 -r 192.168.50.25:80 -m -w 2",
        "-A -f 1 -s rr",
        "-a -f 1 -r 192.168.50.24:0 -m -w 1",
    ] {
        witness(IPVSADM, &args.split_whitespace().collect::<Vec<_>>());
    }
    // Someone's nftables table.
    witness(
        NFT,
        &["add table ip keepalived; \
           add chain ip keepalived post { type nat hook postrouting priority 50; }; \
           add rule ip keepalived post ip saddr 10.1.0.0/16 oifname != \"br0\" counter masquerade; \
           add table inet filter; \
           add set inet filter allowed { type ipv4_addr; elements = { 192.168.50.1, 192.168.50.2 }; }; \
           add chain inet filter input { type filter hook input priority 0; policy accept; }; \
           add rule inet filter input ip saddr @allowed counter accept"],
    );
    // docker's rule in both iptables flavours, and kubelet's KUBE-MARK-DROP.
    for tool in [IPTABLES_NFT, IPTABLES_LEGACY] {
        witness(
            tool,
            &[
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
                "-s",
                "172.17.0.0/16",
                "!",
                "-o",
                "docker0",
                "-j",
                "MASQUERADE",
            ],
        );
        witness(tool, &["-t", "nat", "-N", "KUBE-MARK-DROP"]);
        witness(
            tool,
            &[
                "-t",
                "nat",
                "-A",
                "KUBE-MARK-DROP",
                "-j",
                "MARK",
                "--set-xmark",
                "0x8000/0x8000",
            ],
        );
        witness(tool, &["-t", "filter", "-N", "DOCKER-USER"]);
        witness(tool, &["-t", "filter", "-A", "DOCKER-USER", "-j", "RETURN"]);
    }
}

#[test]
fn cleanup_leaves_every_foreign_object_byte_identical() {
    let _ns = NetNs::fresh();
    let network = PodNetwork::new("i2", 1);
    let stop = Arc::new(AtomicBool::new(false));
    let server = tcp_responder(&network.pods[0], 8080, "web-a", stop.clone());

    install_foreign_objects();
    let before = snapshot();
    assert!(
        before
            .legacy
            .contains("-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE"),
        "{}",
        before.legacy
    );
    assert!(
        before
            .iptables_nft
            .contains("-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE"),
        "{}",
        before.iptables_nft
    );
    assert_eq!(before.ipvs.lines().count(), 11, "{}", before.ipvs);

    let source = source_dir("i2");
    write_atomically(
        &source.join("service.yaml"),
        &service_yaml(
            "web",
            "10.96.0.80",
            &[("web", "TCP", 80, 8080, Some(30080))],
        ),
    );
    write_atomically(
        &source.join("slice.yaml"),
        &slice_yaml(
            "web",
            &[("web", "TCP", 8080)],
            &[Endpoint::ready("10.0.2.2")],
        ),
    );
    // A Service whose externalIP is keepalived's VIP (another port).
    write_atomically(
        &source.join("ext.yaml"),
        &service_yaml("ext", "10.96.0.81", &[("web", "TCP", 8081, 8080, None)])
            .replace("  ports:\n", "  externalIPs: [192.168.50.10]\n  ports:\n"),
    );
    write_atomically(
        &source.join("ext-slice.yaml"),
        &slice_yaml(
            "ext",
            &[("web", "TCP", 8080)],
            &[Endpoint::ready("10.0.2.2")],
        ),
    );
    let mut proxier = ProxierProcess::run(
        &source,
        &["--node-ip", "10.0.1.1", "--cluster-cidr", "10.0.0.0/8"],
    );
    wait_for_ipvs("proxier's services", Duration::from_secs(20), |l| {
        l.contains("10.96.0.80:80") && l.contains("10.0.1.1:30080") && l.contains(SHARED_VIP_OURS)
    });
    let answers = ["10.96.0.80:80", "10.0.1.1:30080"]
        .map(|target| tcp_reads(&network.client, target, 1).concat());
    assert_eq!(answers, ["web-a", "web-a"], "ClusterIP and NodePort served");
    proxier.assert_running();
    assert_same("while proxier runs", &before, &snapshot());
    let (_, run_log) = proxier.stop();

    let (ok, cleanup_log) = ProxierProcess::oneshot(&[
        "cleanup",
        "--node-ip",
        "10.0.1.1",
        "--exclude-cidr",
        "192.168.50.10/32",
    ]);
    assert!(ok, "proxier cleanup failed:\n{cleanup_log}");
    let after = snapshot();
    assert_same("after cleanup", &before, &after);

    // Everything of proxier's is gone except what excludeCIDRs protects; the full IPVS
    // listing is exactly the foreign one plus that.
    let save = witness(IPVSADM, &["-Sn"]);
    let (excluded, rest): (Vec<&str>, Vec<&str>) =
        save.lines().partition(|l| l.contains(SHARED_VIP_OURS));
    assert_eq!(
        rest.join("\n"),
        before.ipvs,
        "only foreign virtual servers are left"
    );
    assert_eq!(
        excluded.len(),
        2,
        "the excluded VIP is never touched, also for proxier's own virtual server: {excluded:?}"
    );
    let tables = witness(NFT, &["list", "tables"]);
    assert!(!tables.contains("inet proxier"), "{tables}");
    let links = witness(IP, &["-o", "link", "show"]);
    assert!(!links.contains("kube-ipvs0"), "{links}");
    println!(
        "I2 result: foreign objects identical during run and after cleanup: {} IPVS lines, {} nft lines, {} iptables-legacy lines, {} iptables-nft lines; cleanup said: {}",
        before.ipvs.lines().count(),
        before.nft.lines().count(),
        before.legacy.lines().count(),
        before.iptables_nft.lines().count(),
        cleanup_log.lines().last().unwrap_or_default()
    );
    if run_log.contains("ERROR") {
        println!("proxier run log:\n{run_log}");
    }
    stop.store(true, Ordering::Relaxed);
    server.join().unwrap();
}
