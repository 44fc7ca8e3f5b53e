//! VM benchmark (`cargo xtask vmbench ipvs`): the same IPVS table programmed three ways on the
//! same kernel in the same run — our batched `apply`, one request per `sendmsg` with an ACK each
//! (the pattern of moby/ipvs and kube-proxy), and `ipvsadm -R` — each into a fresh namespace.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark binary panics on failure"
)]

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use netlink_ipvs::{IpvsHandle, WindowLimits};
use proxier_kernel_tests::{create_ops, ipvsadm_save, sample, NetNs, IPVSADM};

fn main() {
    let services: usize = std::env::args()
        .nth(1)
        .map_or(10_000, |n| n.parse().unwrap());
    let per_service = 10;
    let state = sample(services, per_service, false);
    let ops = create_ops(&state);
    println!(
        "table: {services} services x {per_service} destinations = {} operations",
        ops.len()
    );

    let batched = timed("batched apply (128 per sendmsg)", || {
        let mut handle = IpvsHandle::connect().unwrap();
        let results = handle.apply(&ops);
        assert!(results.iter().all(Result::is_ok));
    });
    let one_by_one = timed("one request per sendmsg + ACK", || {
        let mut handle = IpvsHandle::connect().unwrap();
        handle.set_window_limits(WindowLimits {
            max_requests: 1,
            ..WindowLimits::default()
        });
        let results = handle.apply(&ops);
        assert!(results.iter().all(Result::is_ok));
    });
    let rules: String = ipvsadm_save(&state)
        .into_iter()
        .filter(|l| l.starts_with("-A"))
        .chain(
            ipvsadm_save(&state)
                .into_iter()
                .filter(|l| l.starts_with("-a")),
        )
        .map(|l| l + "\n")
        .collect();
    let restore = timed("ipvsadm -R", || {
        let mut child = Command::new(IPVSADM)
            .arg("-R")
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(rules.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success());
    });
    println!(
        "ratios: batched/one-by-one = {:.3}, batched/ipvsadm-R = {:.3}, one-by-one/ipvsadm-R = {:.3}",
        ratio(batched, one_by_one),
        ratio(batched, restore),
        ratio(one_by_one, restore)
    );
}

/// Runs `program` in a fresh namespace, checks the result with a dump, and prints the time.
fn timed(label: &str, program: impl FnOnce()) -> Duration {
    let _ns = NetNs::fresh();
    let started = Instant::now();
    program();
    let elapsed = started.elapsed();
    let dumped = IpvsHandle::connect().unwrap().state().unwrap();
    println!(
        "{label:<34} {:>9.3} s  ({} services, {} real servers in the kernel afterwards)",
        elapsed.as_secs_f64(),
        dumped.services.len(),
        dumped.real_server_count()
    );
    elapsed
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}
