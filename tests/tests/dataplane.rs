//! The real dataplane end to end: YAML objects → plan → reconcile → IPVS, addresses on
//! `kube-ipvs0` and conntrack flushes, with real packets between namespaces and `ipvsadm`,
//! `ip` and `conntrack` as witnesses.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code panics on failure"
)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use proxier::config::Config;
use proxier::dataplane::kernel::KernelDataplane;
use proxier::plan::{NodeContext, Planner};
use proxier::runtime::Proxier;
use proxier::source::{parse_documents, SnapshotSync};
use proxier_kernel_tests::lab::PodNetwork;
use proxier_kernel_tests::sysctl::ipvs_knob;
use proxier_kernel_tests::{
    tcp_reads, tcp_responder, udp_query, udp_responder, witness, NetNs, CONNTRACK, IP, IPVSADM, NFT,
};

const SERVICE: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: dns, namespace: kube-system}
spec:
  clusterIP: 10.96.0.10
  clusterIPs: [10.96.0.10]
  ports:
  - {name: dns, port: 53, protocol: UDP, targetPort: 53}
  - {name: web, port: 80, protocol: TCP, targetPort: 8080}
"#;

fn slice(endpoints: &[&str]) -> String {
    slice_with(endpoints, &[])
}

/// The slice with `ready` endpoints and `terminating` ones (terminating, no longer serving).
fn slice_with(ready: &[&str], terminating: &[&str]) -> String {
    let mut text = String::from(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: dns-abc\n  namespace: kube-system\n  labels: {kubernetes.io/service-name: dns}\naddressType: IPv4\nports:\n- {name: dns, port: 53, protocol: UDP}\n- {name: web, port: 8080, protocol: TCP}\nendpoints:\n",
    );
    for ip in ready {
        text.push_str(&format!(
            "- addresses: [{ip}]\n  conditions: {{ready: true, serving: true, terminating: false}}\n  nodeName: node-a\n"
        ));
    }
    for ip in terminating {
        text.push_str(&format!(
            "- addresses: [{ip}]\n  conditions: {{ready: false, serving: false, terminating: true}}\n  nodeName: node-a\n"
        ));
    }
    text
}

fn planner() -> Planner {
    let node = NodeContext {
        name: "node-a".into(),
        node_ips: vec!["10.0.1.1".parse().unwrap()],
        zone: None,
    };
    Planner::new(node, Config::default())
}

fn load(sync: &mut SnapshotSync, proxier: &mut Proxier<KernelDataplane>, yaml: &str) {
    let (objects, problems) = parse_documents("test", yaml);
    assert!(problems.is_empty(), "{problems:?}");
    sync.apply(&objects, proxier.cluster_mut());
}

#[test]
fn program_serve_adopt_and_remove_an_endpoint() {
    let _ns = NetNs::fresh();
    let network = PodNetwork::new("dp", 2);
    let (client, a, b) = (&network.client, &network.pods[0], &network.pods[1]);
    // No rule of anyone else's: conntrack hooks become active through proxier's own table.
    let stop = Arc::new(AtomicBool::new(false));
    let servers = vec![
        udp_responder(a, 53, "a", stop.clone()),
        udp_responder(b, 53, "b", stop.clone()),
        tcp_responder(a, 8080, "web-a", stop.clone()),
        tcp_responder(b, 8080, "web-b", stop.clone()),
    ];
    std::thread::sleep(Duration::from_millis(200));

    let mut sync = SnapshotSync::new();
    let mut dataplane = KernelDataplane::connect("kube-ipvs0").unwrap();
    let changes = dataplane
        .prepare_host(
            &conntrack_gc::FsRoot::system(),
            false,
            netlink_ipvs::Timeouts::default(),
        )
        .unwrap();
    assert!(changes.iter().all(|c| c.error.is_none()), "{changes:?}");
    let sysctl = |name: &str| std::fs::read_to_string(ipvs_knob(name)).unwrap();
    assert_eq!(sysctl("conntrack").trim(), "1");
    assert_eq!(sysctl("expire_nodest_conn").trim(), "1");
    assert_eq!(sysctl("conn_reuse_mode").trim(), "1", "kernel 6.1 >= 5.9");
    let mut proxier = Proxier::new(planner(), dataplane);
    load(
        &mut sync,
        &mut proxier,
        &format!("{SERVICE}---\n{}", slice(&["10.0.2.2", "10.0.3.2"])),
    );
    let first = proxier.full_sync().unwrap();
    assert_eq!(first.failed, 0, "{:?}", first.failures);
    println!("first sync: {} operations", first.operations);

    let listing = witness(IPVSADM, &["-Ln"]);
    assert!(listing.contains("UDP  10.96.0.10:53 rr"), "{listing}");
    assert!(listing.contains("TCP  10.96.0.10:80 rr"), "{listing}");
    assert_eq!(listing.matches("-> 10.0.2.2").count(), 2, "{listing}");
    assert_eq!(listing.matches("-> 10.0.3.2").count(), 2, "{listing}");
    let table = witness(NFT, &["list", "table", "inet", "proxier"]);
    assert!(
        table.contains("10.96.0.10") && table.contains("masquerade"),
        "{table}"
    );
    let addresses = witness(IP, &["-o", "addr", "show", "dev", "kube-ipvs0"]);
    assert!(addresses.contains("10.96.0.10/32"), "{addresses}");

    let answers = udp_query(client, "10.96.0.10:53", 10);
    assert!(answers.iter().all(|a| a == "a" || a == "b"), "{answers:?}");
    assert!(
        answers.contains(&"a".to_owned()) && answers.contains(&"b".to_owned()),
        "{answers:?}"
    );
    let web = tcp_reads(client, "10.96.0.10:80", 1).concat();
    assert!(web == "web-a" || web == "web-b", "{web}");

    // A restart over matching state adopts it: zero writes.
    drop(proxier);
    let mut proxier = Proxier::new(planner(), KernelDataplane::connect("kube-ipvs0").unwrap());
    let mut sync = SnapshotSync::new();
    load(
        &mut sync,
        &mut proxier,
        &format!("{SERVICE}---\n{}", slice(&["10.0.2.2", "10.0.3.2"])),
    );
    let adopted = proxier.full_sync().unwrap();
    assert_eq!(adopted.operations, 0, "restart must not write anything");

    // Drift caused by someone else in our objects is repaired by a full resync; a foreign
    // virtual server is left alone.
    witness(IPVSADM, &["-d", "-u", "10.96.0.10:53", "-r", "10.0.2.2:53"]);
    witness(
        IPVSADM,
        &[
            "-e",
            "-t",
            "10.96.0.10:80",
            "-r",
            "10.0.3.2:8080",
            "-m",
            "-w",
            "7",
        ],
    );
    witness(IPVSADM, &["-A", "-t", "192.0.2.50:443", "-s", "wlc"]);
    let repair = proxier.full_sync().unwrap();
    assert_eq!(repair.operations, 2, "{repair:?}");
    let listing = witness(IPVSADM, &["-Ln"]);
    assert_eq!(listing.matches("-> 10.0.2.2").count(), 2, "{listing}");
    assert!(!listing.contains("Masq    7"), "{listing}");
    assert!(
        listing.contains("TCP  192.0.2.50:443 wlc"),
        "foreign service kept:\n{listing}"
    );

    // Backend b's pod terminates (no longer serving), then its endpoint leaves the slice: its
    // real servers go at once, and its UDP conntrack entries are flushed over ctnetlink. (An
    // endpoint that left while alive would drain instead: issue 13 item 6,
    // endpoint_departures.rs.)
    let before = witness(CONNTRACK, &["-L", "-p", "udp", "--reply-src", "10.0.3.2"]);
    assert!(
        before.contains("10.96.0.10"),
        "entries to flush exist first:\n{before}"
    );
    load(
        &mut sync,
        &mut proxier,
        &format!("{SERVICE}---\n{}", slice_with(&["10.0.2.2"], &["10.0.3.2"])),
    );
    let terminating = proxier.incremental_sync();
    assert_eq!(terminating.failed, 0, "{:?}", terminating.failures);
    let marked = witness(IPVSADM, &["-Ln", "--thresholds"]);
    assert!(
        marked
            .lines()
            .any(|l| l.contains("10.0.3.2:8080") && l.contains("1073741824")),
        "the terminating mark is on b's TCP real server:\n{marked}"
    );
    load(
        &mut sync,
        &mut proxier,
        &format!("{SERVICE}---\n{}", slice(&["10.0.2.2"])),
    );
    let removal = proxier.incremental_sync();
    assert_eq!(removal.failed, 0, "{:?}", removal.failures);
    println!("endpoint removal: {} operations", removal.operations);
    let listing = witness(IPVSADM, &["-Ln"]);
    assert!(!listing.contains("10.0.3.2"), "{listing}");
    let after = witness(CONNTRACK, &["-L", "-p", "udp", "--reply-src", "10.0.3.2"]);
    assert!(!after.contains("10.96.0.10"), "flushed:\n{after}");
    let answers = udp_query(client, "10.96.0.10:53", 10);
    assert!(answers.iter().all(|a| a == "a"), "{answers:?}");

    stop.store(true, Ordering::Relaxed);
    for server in servers {
        server.join().unwrap();
    }
}
