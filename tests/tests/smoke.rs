//! The VM has what every other real-kernel test relies on.

use std::path::Path;

use netlink_ipvs::IpvsHandle;
use proxier_kernel_tests::{witness, NetNs, IP, IPVSADM};

#[test]
fn ipvs_family_resolves_and_proc_net_ip_vs_exists() {
    let _ns = NetNs::fresh();
    let handle = IpvsHandle::connect().expect("resolve the IPVS family");
    // Dynamic generic-netlink ids start after GENL_MIN_ID (0x10).
    assert!(
        handle.family_id() > 0x10,
        "family id {}",
        handle.family_id()
    );
    assert!(Path::new("/proc/thread-self/net/ip_vs").exists());
    let listing = witness(IPVSADM, &["-Ln"]);
    assert!(listing.contains("IP Virtual Server version"), "{listing}");
}

#[test]
fn each_test_gets_an_empty_namespace() {
    let _ns = NetNs::fresh();
    let links = witness(IP, &["-o", "link", "show"]);
    assert_eq!(links.lines().count(), 1, "only lo expected:\n{links}");
}
