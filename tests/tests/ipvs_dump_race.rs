//! A virtual server deleted between the service dump and its destination dump (issue 12, item
//! 11): the whole-table read skips it instead of failing (at start-up that failure aborted
//! proxier). Someone else churns virtual servers while we read the table again and again.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code panics on failure"
)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use netlink_ipvs::{IpvsHandle, IpvsOperation, Protocol, RealServer, ServiceKey, VirtualServer};
use proxier_kernel_tests::NetNs;

fn churned(i: u16) -> ServiceKey {
    ServiceKey::Address {
        protocol: Protocol::Udp,
        address: format!("192.0.2.{}", 1 + i % 200).parse().unwrap(),
        port: 53,
    }
}

#[test]
fn reading_the_table_survives_virtual_servers_deleted_during_the_dump() {
    const CHURNED: u16 = 200;
    let _ns = NetNs::fresh();
    let mut reader = IpvsHandle::connect().unwrap();

    // What this kernel answers for the destinations of a virtual server that is gone.
    let gone = reader.destinations(&churned(0));
    println!("destinations of a missing virtual server: {gone:?}");

    let stop = Arc::new(AtomicBool::new(false));
    // The new thread shares this thread's (fresh) network namespace.
    let churner = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut writer = IpvsHandle::connect().unwrap();
            let mut rounds = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let mut ops = Vec::new();
                for i in 0..CHURNED {
                    let key = churned(i);
                    ops.push(IpvsOperation::AddVirtualServer(VirtualServer::new(key)));
                    let real_server = RealServer::masq("10.244.0.5".parse().unwrap(), 53);
                    ops.push(IpvsOperation::AddRealServer {
                        service: key,
                        real_server,
                    });
                }
                let _ = writer.apply(&ops);
                let deletes: Vec<IpvsOperation> = (0..CHURNED)
                    .map(|i| IpvsOperation::DeleteVirtualServer(churned(i)))
                    .collect();
                let _ = writer.apply(&deletes);
                rounds += 1;
            }
            rounds
        })
    };

    let started = Instant::now();
    let (mut reads, mut skipped, mut failures) = (0u32, 0usize, Vec::new());
    while started.elapsed() < Duration::from_secs(4) {
        match reader.state_report() {
            Ok(report) => skipped += report.skipped.len(),
            Err(error) => failures.push(error.to_string()),
        }
        // `state()` is what the engine's resync and start-up read.
        match reader.state() {
            Ok(_) => {}
            Err(error) => failures.push(error.to_string()),
        }
        reads += 2;
    }
    stop.store(true, Ordering::Relaxed);
    let rounds = churner.join().unwrap();
    println!(
        "{reads} whole-table reads while {rounds} rounds of {CHURNED} virtual servers were \
         created and deleted: {} failed, {skipped} virtual servers skipped (vanished between \
         the dumps)",
        failures.len()
    );
    assert!(rounds > 0, "the churn ran");
    assert!(
        failures.is_empty(),
        "reads failed: {:?}",
        &failures[..failures.len().min(5)]
    );
}
