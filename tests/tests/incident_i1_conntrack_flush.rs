//! Incident I1: kube-proxy shelled out to `conntrack` to flush stale UDP entries; the binary was
//! missing, the flush failed, and UDP clients kept hitting a dead backend.
//!
//! Here `proxier run` has an empty environment (`PATH=""`: no binary can be found). A UDP
//! service has two backends and steady clients that keep their source ports; one backend
//! leaves the EndpointSlice. The `conntrack -L` witness must show its entries gone, and every
//! datagram sent after that must be answered by the live backend, and proxier's log must show
//! the flush done in-process over ctnetlink (its `conntrack flush` line, written from the
//! ctnetlink flush report) in a sync with no failed operation (a flush by an external
//! `conntrack` binary would produce no such line and fail). kube-proxy in this set-up
//! fails the first assertion (its flush never runs), so its clients stay on the dead backend.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code panics on failure"
)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proxier_kernel_tests::lab::PodNetwork;
use proxier_kernel_tests::{
    run_two_backend_dns, slice_yaml, tally, udp_echo, udp_load, wait_for, wait_for_ipvs, witness,
    write_atomically, Endpoint, NetNs, CONNTRACK,
};

use proxier_kernel_tests::DNS_PORTS as PORTS;

fn b_entries() -> String {
    witness(
        CONNTRACK,
        &[
            "-L",
            "-p",
            "udp",
            "--orig-dst",
            "10.96.0.53",
            "--reply-src",
            "10.0.3.2",
        ],
    )
}

#[test]
fn removed_udp_backend_is_flushed_without_any_binary() {
    let _ns = NetNs::fresh();
    let PodNetwork {
        lab: _lab,
        client,
        pods,
    } = PodNetwork::new("i1", 2);
    let (a, b) = (&pods[0], &pods[1]);
    let stop_servers = Arc::new(AtomicBool::new(false));
    let answered_b = Arc::new(AtomicU64::new(0));
    let servers = [
        udp_echo(a, 5353, "a", stop_servers.clone(), Arc::default()),
        udp_echo(b, 5353, "b", stop_servers.clone(), answered_b.clone()),
    ];

    let (slice, mut proxier) = run_two_backend_dns("i1", "10.96.0.53");

    // Steady clients: 8 long-lived sockets (fixed source ports), a query every 20 ms each.
    let stop_load = Arc::new(AtomicBool::new(false));
    let load = udp_load(
        &client,
        "10.96.0.53:53".parse().unwrap(),
        8,
        Some(41000),
        Duration::from_millis(20),
        Duration::from_millis(300),
        stop_load.clone(),
    );
    wait_for("b to answer some flows", Duration::from_secs(10), || {
        let seen = answered_b.load(Ordering::Relaxed);
        if seen >= 20 {
            Ok(())
        } else {
            Err(format!("b answered {seen}"))
        }
    });
    let before = b_entries();
    assert!(
        before.contains("10.96.0.53"),
        "flows to b exist before the removal:\n{before}"
    );
    let flows_on_b = before.lines().filter(|l| l.contains("10.96.0.53")).count();

    // b leaves the slice.
    let removed_at = Instant::now();
    write_atomically(
        &slice,
        &slice_yaml("dns", PORTS, &[Endpoint::ready("10.0.2.2")]),
    );
    wait_for_ipvs("b's real server deleted", Duration::from_secs(10), |l| {
        !l.contains("10.0.3.2")
    });
    let applied = Instant::now();
    // The flush is part of the same sync; the witness must agree within a short time (kube-proxy
    // with no `conntrack` binary never gets there).
    wait_for(
        "b's conntrack entries flushed",
        Duration::from_secs(2),
        || {
            let after = b_entries();
            if after.contains("10.96.0.53") {
                Err(after)
            } else {
                Ok(())
            }
        },
    );
    let flushed = Instant::now();
    std::thread::sleep(Duration::from_millis(2000));
    stop_load.store(true, Ordering::Relaxed);
    let queries = load.join().unwrap();
    proxier.assert_running();

    let (total_before, by_before, lost_before) = {
        let all = tally(&queries, queries[0].sent);
        let later = tally(&queries, removed_at);
        (
            all.0 - later.0,
            all.1
                .iter()
                .map(|(k, v)| (k.clone(), v - later.1.get(k).copied().unwrap_or(0)))
                .collect::<std::collections::BTreeMap<_, _>>(),
            all.2 - later.2,
        )
    };
    let (total_after, by_after, lost_after) = tally(&queries, flushed);
    println!(
        "I1 result: {flows_on_b} conntrack flows on b before removal; removal applied in {} ms, flushed {} ms later; \
         before: {total_before} queries {by_before:?} lost {lost_before}; \
         after flush: {total_after} queries {by_after:?} lost {lost_after}",
        applied.duration_since(removed_at).as_millis(),
        flushed.duration_since(applied).as_millis(),
    );
    assert!(
        by_before.get("b").copied().unwrap_or(0) > 0,
        "b served before removal"
    );
    assert!(total_after > 100, "the load kept going: {total_after}");
    assert_eq!(lost_after, 0, "no datagram lost after the flush");
    assert_eq!(
        by_after.get("a").copied().unwrap_or(0),
        total_after,
        "every later datagram answered by the live backend: {by_after:?}"
    );
    let left = b_entries();
    assert!(!left.contains("10.96.0.53"), "no entry came back:\n{left}");

    // The flush was proxier's own, in-process over ctnetlink, and it succeeded: proxier writes
    // `conntrack flush` only from a ctnetlink flush report, and a flush that failed (as an exec
    // of `conntrack` with PATH empty would) fails its operations and the sync. (Here the kernel
    // itself has usually dropped b's entries already, with its real server: IPVS's
    // `expire_nodest_conn` with `conntrack=1`; so the count deleted may be 0.)
    let (_, log) = proxier.stop();
    let flushes: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("conntrack flush"))
        .collect();
    println!("I1 flushes: {flushes:?}");
    assert!(
        !flushes.is_empty(),
        "proxier flushed conntrack over ctnetlink:\n{log}"
    );
    let syncs: Vec<&str> = log.lines().filter(|l| l.contains(" synced ")).collect();
    assert!(
        syncs.len() >= 2 && syncs.iter().all(|l| l.contains(" failed=0 ")),
        "every sync, the removal's included, succeeded:\n{log}"
    );
    stop_servers.store(true, Ordering::Relaxed);
    for s in servers {
        s.join().unwrap();
    }
}
