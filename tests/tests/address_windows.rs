//! Virtual IPs bound in windows (many `RTM_NEWADDR` per `sendmsg`, one ACK per window) on the
//! real kernel: each address still gets its own answer, a failure in the middle of a window is
//! attributed to the right address and stops none of the others, and `ip addr` agrees.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code panics on failure"
)]

use std::net::IpAddr;

use proxier::dataplane::kernel::{InterfaceHandle, KernelDataplane};
use proxier::dataplane::Dataplane;
use proxier::reconcile::Op;
use proxier::Error;
use proxier_kernel_tests::{witness, NetNs, IP, IPVSADM};

/// EEXIST (`errno.h`).
const EEXIST: i32 = 17;
/// ENODEV (`errno.h`).
const ENODEV: i32 = 19;

fn vips(count: usize) -> Vec<IpAddr> {
    (0..count)
        .map(|i| {
            format!("10.96.{}.{}", i / 250, i % 250 + 1)
                .parse()
                .unwrap()
        })
        .collect()
}

fn errno(outcome: &Result<(), Error>) -> Option<i32> {
    match outcome {
        Ok(()) => None,
        Err(Error::Kernel { errno, .. }) => Some(errno.0),
        Err(other) => panic!("not a kernel answer: {other:?}"),
    }
}

fn bound_on(device: &str) -> Vec<String> {
    witness(IP, &["-o", "-4", "addr", "show", "dev", device])
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3).map(str::to_owned))
        .collect()
}

/// 300 addresses (three windows), two of them already bound: one in the middle of the first
/// window, one the last of the second (the request that carries the window's ACK). Exactly
/// those two answer EEXIST, every other address is bound, and `ip addr` lists all 300.
#[test]
fn a_failure_inside_a_window_belongs_to_its_own_address() {
    let _ns = NetNs::fresh();
    let mut links = InterfaceHandle::connect().unwrap();
    let index = links.ensure_dummy("kube-ipvs0").unwrap();
    let ips = vips(300);
    let taken = [57, 255];
    for &i in &taken {
        links.add_address(index, ips[i]).unwrap();
    }
    let outcomes = links.add_addresses(index, &ips);
    assert_eq!(outcomes.len(), ips.len());
    let failed: Vec<(usize, i32)> = outcomes
        .iter()
        .enumerate()
        .filter_map(|(i, outcome)| errno(outcome).map(|e| (i, e)))
        .collect();
    assert_eq!(failed, [(57, EEXIST), (255, EEXIST)]);
    let listed = bound_on("kube-ipvs0");
    assert_eq!(listed.len(), 300, "{listed:?}");
    for ip in &ips {
        assert!(listed.contains(&format!("{ip}/32")), "{ip} missing");
    }
    // On an interface that does not exist, every address of the window answers ENODEV.
    let gone = links.add_addresses(u32::MAX - 1, &ips[..3]);
    assert_eq!(
        gone.iter().map(errno).collect::<Vec<_>>(),
        [Some(ENODEV); 3]
    );
}

/// Through the dataplane: after `ip link del kube-ipvs0`, a run of 200 bindings recreates the
/// interface and binds every address on it (the ENODEV answers of the window are retried).
#[test]
fn a_run_of_bindings_after_the_interface_vanished_recreates_it() {
    let _ns = NetNs::fresh();
    let mut dataplane = KernelDataplane::connect("kube-ipvs0").unwrap();
    witness(IP, &["link", "del", "kube-ipvs0"]);
    let ips = vips(200);
    let ops: Vec<Op> = ips.iter().map(|ip| Op::BindAddress(*ip)).collect();
    let report = dataplane.apply(&ops);
    let failures: Vec<_> = report.failures(&ops).collect();
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(bound_on("kube-ipvs0").len(), 200);
}

/// A run of bindings followed by the virtual servers on those addresses (a start-up): the
/// dataplane binds on one thread while the IPVS operations go out on another. Every operation
/// gets its own answer: an address already bound answers EEXIST and its virtual server is
/// still created; everything else is bound and created (`ip addr`, `ipvsadm -Ln` agree).
#[test]
fn bindings_and_the_virtual_servers_on_them_go_out_together_each_with_its_answer() {
    use netlink_ipvs::{Protocol, RealServer, ServiceKey, VirtualServer};

    let _ns = NetNs::fresh();
    let mut dataplane = KernelDataplane::connect("kube-ipvs0").unwrap();
    let ips = vips(300);
    let index = {
        let mut links = InterfaceHandle::connect().unwrap();
        let index = links.ensure_dummy("kube-ipvs0").unwrap();
        links.add_address(index, ips[140]).unwrap();
        index
    };
    assert_ne!(index, 0);
    let mut ops: Vec<Op> = ips.iter().map(|ip| Op::BindAddress(*ip)).collect();
    for (i, ip) in ips.iter().enumerate() {
        let key = ServiceKey::Address {
            protocol: Protocol::Tcp,
            address: *ip,
            port: 80,
        };
        ops.push(Op::AddVirtualServer(VirtualServer::new(key)));
        for j in 0..2u8 {
            let pod: IpAddr = format!("10.128.{}.{}", i / 100, (i % 100) * 2 + usize::from(j) + 1)
                .parse()
                .unwrap();
            ops.push(Op::AddRealServer {
                service: key,
                real_server: RealServer::masq(pod, 8080),
            });
        }
    }
    let report = dataplane.apply(&ops);
    assert_eq!(report.results.len(), ops.len());
    let failed: Vec<(usize, Option<i32>)> = report
        .results
        .iter()
        .enumerate()
        .filter(|(_, outcome)| outcome.is_err())
        .map(|(i, outcome)| (i, errno(outcome)))
        .collect();
    assert_eq!(failed, [(140, Some(EEXIST))]);
    assert_eq!(bound_on("kube-ipvs0").len(), 300);
    let listing = witness(IPVSADM, &["-Ln"]);
    assert_eq!(
        listing.lines().filter(|l| l.starts_with("TCP")).count(),
        300
    );
    assert_eq!(
        listing.lines().filter(|l| l.contains("-> 10.128.")).count(),
        600
    );
}
