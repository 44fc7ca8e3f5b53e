//! The crates' examples, run against the real kernel: each example's own code (included from
//! its file, so what runs here is exactly what `cargo run --example` runs) in a fresh network
//! namespace, with `ipvsadm`, `conntrack` and `ip` as witnesses.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code panics on failure"
)]

use std::net::IpAddr;
use std::path::Path;

use conntrack_gc::ctnetlink::{NewEntry, Tuple};
use conntrack_gc::sizing::{cpu_count, FsRoot, Knob};
use conntrack_gc::{Conntrack, Protocol};
use netlink_ipvs::IpvsError;
use proxier_kernel_tests::{witness, NetNs, CONNTRACK, IP, IPVSADM};

#[path = "../../netlink-ipvs/examples/ipvs.rs"]
#[allow(dead_code, reason = "the example's items are exercised one by one")]
mod ipvs_example;

#[path = "../../conntrack-gc/examples/gc.rs"]
#[allow(dead_code, reason = "the example's items are exercised one by one")]
mod gc_example;

#[path = "../../proxier/examples/cni.rs"]
#[allow(dead_code, reason = "the example's items are exercised one by one")]
mod cni_example;

#[path = "../../proxier/examples/static_lb.rs"]
#[allow(dead_code, reason = "the example's items are exercised one by one")]
mod static_lb_example;

/// Asserts that `listing` (`ipvsadm -Ln`) has the virtual server `vip` (`TCP  ip:port rr`)
/// with exactly `real_servers` (sorted) behind it.
fn assert_virtual_server(listing: &str, vip: &str, real_servers: &[&str]) {
    let mut lines = listing.lines().skip_while(|l| !l.starts_with(vip));
    assert!(lines.next().is_some(), "no {vip:?} in:\n{listing}");
    let mut behind: Vec<&str> = lines
        .take_while(|l| l.trim_start().starts_with("->"))
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    behind.sort_unstable();
    assert_eq!(behind, real_servers, "{listing}");
}

#[test]
fn netlink_ipvs_example_lists_and_applies_a_batch() {
    let _ns = NetNs::fresh();
    ipvs_example::main().expect("the example runs");
    let listing = witness(IPVSADM, &["-Ln"]);
    println!("{listing}");
    assert_virtual_server(
        &listing,
        "TCP  10.0.0.1:80 rr",
        &["10.244.0.2:8080", "10.244.0.3:8080"],
    );
    // A second run: the batch's first operation now meets EEXIST, reported as its own result.
    let again = ipvs_example::main();
    assert!(
        matches!(again, Err(IpvsError::AlreadyExists { .. })),
        "{again:?}"
    );
}

fn udp_flow(src: &str, sport: u16, dst: &str) -> NewEntry {
    NewEntry::plain(
        Tuple {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            protocol: 17,
            src_port: Some(sport),
            dst_port: Some(53),
        },
        600,
    )
}

fn host_value(knob: Knob) -> u64 {
    let path = Path::new("/").join(knob.relative_path());
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    text.trim().parse().unwrap()
}

#[test]
fn conntrack_gc_example_flushes_by_filter_and_reports_sizing() {
    let _ns = NetNs::fresh();
    let flows = [
        udp_flow("10.1.0.1", 1001, "10.96.0.10"),
        udp_flow("10.1.0.2", 1002, "10.96.0.10"),
        udp_flow("10.1.0.3", 1003, "10.96.0.11"),
    ];
    assert_eq!(Conntrack::open().unwrap().create(&flows).unwrap(), 3);
    // Sizing reads this kernel's values but writes to a copy (the VM's limits are shared by
    // every test): the report is the one the host would get.
    let root = std::env::temp_dir().join(format!("examples-gc-{}", std::process::id()));
    let (max, hashsize) = (host_value(Knob::Max), host_value(Knob::Hashsize));
    for (knob, value) in [(Knob::Max, max), (Knob::Hashsize, hashsize)] {
        let path = root.join(knob.relative_path());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, format!("{value}\n")).unwrap();
    }
    let vip: IpAddr = "10.96.0.10".parse().unwrap();
    let (flushed, sized) =
        gc_example::flush_and_size(Protocol::Udp, vip, 53, &FsRoot::new(&root)).unwrap();
    println!("{flushed:?}\n{sized}");
    assert_eq!((flushed.matched, flushed.deleted), (2, 2), "{flushed:?}");
    let table = witness(CONNTRACK, &["-L"]);
    assert!(!table.contains("dst=10.96.0.10 "), "{table}");
    assert!(table.contains("dst=10.96.0.11 "), "{table}");
    let wanted = (32_768 * u64::from(cpu_count(&FsRoot::system()))).max(131_072);
    let entry = sized.get(Knob::Max).expect("nf_conntrack_max is sized");
    assert_eq!((entry.host, entry.wanted), (max, wanted), "{sized}");
    assert_eq!(entry.applied, max < wanted, "{sized}");
    let written: u64 = std::fs::read_to_string(root.join(Knob::Max.relative_path()))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(written, max.max(wanted), "never lowered");
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn cni_example_programs_its_own_source_of_k8s_objects_and_model_types() {
    let _ns = NetNs::fresh();
    cni_example::main().expect("the example runs");
    let listing = witness(IPVSADM, &["-Ln"]);
    println!("{listing}");
    // From the watch (k8s-openapi objects through the feed) and from the IPAM (model types).
    assert_virtual_server(&listing, "TCP  10.96.7.7:80 rr", &["10.244.7.7:8080"]);
    assert_virtual_server(&listing, "UDP  10.96.7.53:53 rr", &["10.244.7.53:5353"]);
    let addresses = witness(IP, &["-o", "addr", "show", "dev", "kube-ipvs0"]);
    for vip in ["10.96.7.7/32", "10.96.7.53/32"] {
        assert!(addresses.contains(vip), "{addresses}");
    }
}

#[test]
fn static_lb_example_programs_a_yaml_file() {
    let _ns = NetNs::fresh();
    let path = std::env::temp_dir().join(format!("static-lb-{}.yaml", std::process::id()));
    std::fs::write(&path, include_str!("../../proxier/examples/static-lb.yaml")).unwrap();
    let outcome = static_lb_example::program(&path).expect("the example runs");
    std::fs::remove_file(&path).unwrap();
    assert_eq!(outcome.failed, 0, "{outcome:?}");
    let listing = witness(IPVSADM, &["-Ln"]);
    println!("{listing}");
    let backends = ["10.0.20.2:8080", "10.0.20.3:8080"];
    assert_virtual_server(&listing, "TCP  192.0.2.10:80 rr", &backends);
    assert_virtual_server(&listing, "TCP  10.96.20.1:80 rr", &backends);
}
