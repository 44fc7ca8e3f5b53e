//! One contract, two implementations: the same operation sequences run against the strict
//! in-memory fake (what the engine's tests use) and against the real kernel through
//! `KernelDataplane`; every per-operation result (errno) and the final state must agree.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code panics on failure"
)]

use netlink_ipvs::{Protocol, RealServer, ServiceKey, VirtualServer};
use proxier::dataplane::kernel::KernelDataplane;
use proxier::dataplane::{Dataplane, FakeDataplane};
use proxier::reconcile::Op;
use proxier::Error;
use proxier_kernel_tests::NetNs;

fn vs(address: &str, port: u16) -> VirtualServer {
    VirtualServer::new(ServiceKey::Address {
        protocol: Protocol::Tcp,
        address: address.parse().unwrap(),
        port,
    })
}

fn rs(address: &str, weight: u32) -> RealServer {
    let mut rs = RealServer::masq(address.parse().unwrap(), 8080);
    rs.weight = weight;
    rs
}

/// The errno of each result (0 = success).
fn errnos(results: &[Result<(), Error>]) -> Vec<i32> {
    results
        .iter()
        .map(|r| match r {
            Ok(()) => 0,
            Err(Error::Kernel { errno, .. }) => errno.0,
            Err(other) => panic!("not a kernel errno: {other}"),
        })
        .collect()
}

#[test]
fn fake_and_kernel_agree_on_every_result() {
    let a = vs("10.96.0.1", 80);
    let b = vs("10.96.0.2", 80);
    let ops = vec![
        Op::BindAddress("10.96.0.1".parse().unwrap()),
        Op::BindAddress("10.96.0.1".parse().unwrap()), // EEXIST
        Op::AddVirtualServer(a.clone()),
        Op::AddVirtualServer(a.clone()), // EEXIST
        Op::AddRealServer {
            service: a.key,
            real_server: rs("10.244.0.1", 1),
        },
        Op::AddRealServer {
            service: a.key,
            real_server: rs("10.244.0.1", 1),
        }, // EEXIST
        Op::AddRealServer {
            service: b.key,
            real_server: rs("10.244.0.2", 1),
        }, // ESRCH
        Op::UpdateRealServer {
            service: a.key,
            real_server: rs("10.244.0.1", 0),
        },
        Op::UpdateRealServer {
            service: a.key,
            real_server: rs("10.244.0.9", 0),
        }, // ENOENT
        Op::DeleteRealServer {
            service: a.key,
            real_server: rs("10.244.0.9", 0).key,
        }, // ENOENT
        Op::UpdateVirtualServer(b.clone()), // ESRCH
        Op::DeleteVirtualServer(b.key),     // ESRCH
        Op::AddVirtualServer(b.clone()),
        Op::DeleteVirtualServer(b.key),
        Op::UnbindAddress("10.96.0.9".parse().unwrap()), // EADDRNOTAVAIL
    ];
    let mut fake = FakeDataplane::default();
    let fake_results = errnos(&fake.apply(&ops).results);

    let _ns = NetNs::fresh();
    let mut kernel = KernelDataplane::connect("kube-ipvs0").unwrap();
    let kernel_results = errnos(&kernel.apply(&ops).results);
    println!("per-operation errnos: {kernel_results:?}");
    assert_eq!(kernel_results, fake_results);
    assert_eq!(
        kernel_results,
        [0, 17, 0, 17, 0, 17, 3, 0, 2, 2, 3, 3, 0, 0, 99]
    );
    assert_eq!(kernel.observe().unwrap(), fake.state, "final states agree");
}
