//! VM benchmark (`cargo xtask vmbench ipvs`): the same IPVS table programmed three ways on the
//! same kernel in the same run — our batched `apply`, one request per `sendmsg` with an ACK each
//! (the pattern of moby/ipvs and kube-proxy), and `ipvsadm -R` — each into a fresh namespace.
//! Then where a cold start's kernel time goes (`parts` as the second argument: only that).
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
    // `cargo xtask vmbench ipvs SERVICES parts`: only where a cold start's kernel time goes.
    if std::env::args().nth(2).as_deref() == Some("parts") {
        cold_start_parts(&ops, services);
        return;
    }

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
    dumps(&ops);
    cold_start_parts(&ops, services);
}

/// Where a cold start's kernel time goes (issue 15): the batch's user and system CPU per window
/// size, binding the virtual IPs to a dummy interface, and both at once on two threads (IPVS
/// and rtnetlink take different kernel locks).
fn cold_start_parts(ops: &[netlink_ipvs::IpvsOperation], services: usize) {
    for max_requests in [128, 1024] {
        let _ns = NetNs::fresh();
        let mut handle = IpvsHandle::connect().unwrap();
        handle.set_window_limits(WindowLimits {
            max_requests,
            max_bytes: 192 * 1024,
        });
        split_timed(&format!("apply, windows of {max_requests:>4}"), || {
            assert!(handle.apply(ops).iter().all(Result::is_ok));
        });
    }
    let vips: Vec<std::net::IpAddr> = (0..services)
        .map(|i| {
            format!("10.96.{}.{}", i / 250, i % 250 + 1)
                .parse()
                .unwrap()
        })
        .collect();
    let bind = |vips: &[std::net::IpAddr]| {
        let mut links = proxier::dataplane::kernel::InterfaceHandle::connect().unwrap();
        let index = links.ensure_dummy("kube-ipvs0").unwrap();
        for ip in vips {
            links.add_address(index, *ip).unwrap();
        }
    };
    let count = vips.len();
    {
        let _ns = NetNs::fresh();
        split_timed(&format!("bind {count} addresses one by one"), || {
            bind(&vips);
        });
    }
    {
        let _ns = NetNs::fresh();
        split_timed(&format!("bind {count} addresses in windows"), || {
            let mut links = proxier::dataplane::kernel::InterfaceHandle::connect().unwrap();
            let index = links.ensure_dummy("kube-ipvs0").unwrap();
            let outcomes = links.add_addresses(index, &vips);
            assert!(outcomes.iter().all(Result::is_ok));
        });
    }
    {
        let _ns = NetNs::fresh();
        split_timed("apply and bind on two threads", || {
            std::thread::scope(|scope| {
                scope.spawn(|| bind(&vips));
                let mut handle = IpvsHandle::connect().unwrap();
                assert!(handle.apply(ops).iter().all(Result::is_ok));
            });
        });
    }
}

/// Runs `work` and prints its wall time, user CPU and system CPU (this process).
fn split_timed(label: &str, work: impl FnOnce()) {
    let (wall, user, system) = measured_split(work);
    println!(
        "{label}: {:.3} s wall, {:.3} s user, {:.3} s system",
        wall.as_secs_f64(),
        user.as_secs_f64(),
        system.as_secs_f64()
    );
}

/// Wall, user CPU and system CPU (this process) of `work`.
fn measured_split(work: impl FnOnce()) -> (Duration, Duration, Duration) {
    let cpu = || {
        // SAFETY: getrusage only writes the struct it is given.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) }, 0);
        let time = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
        };
        (time(usage.ru_utime), time(usage.ru_stime))
    };
    let (user_before, system_before) = cpu();
    let started = Instant::now();
    work();
    let (user_after, system_after) = cpu();
    (
        started.elapsed(),
        user_after - user_before,
        system_after - system_before,
    )
}

/// Reading the table back (what a full resync costs): our dump (one service dump, then one
/// destination dump per service, like ipvsadm) against `ipvsadm -Sn`, wall and CPU time.
fn dumps(ops: &[netlink_ipvs::IpvsOperation]) {
    let _ns = NetNs::fresh();
    let mut handle = IpvsHandle::connect().unwrap();
    assert!(handle.apply(ops).iter().all(Result::is_ok));
    for round in 1..=2 {
        let (ours, ours_cpu) = measured(libc::RUSAGE_SELF, || {
            let report = handle.state_report().unwrap();
            assert!(report.skipped.is_empty());
        });
        let (theirs, theirs_cpu) = measured(libc::RUSAGE_CHILDREN, || {
            let out = Command::new(IPVSADM)
                .arg("-Sn")
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(out.success());
        });
        println!(
            "dump round {round}: state_report {:.3} s wall, {:.3} s CPU; ipvsadm -Sn {:.3} s wall, {:.3} s CPU; ratio (CPU) {:.3}",
            ours.as_secs_f64(),
            ours_cpu.as_secs_f64(),
            theirs.as_secs_f64(),
            theirs_cpu.as_secs_f64(),
            ratio(ours_cpu, theirs_cpu)
        );
    }
}

/// Wall time and CPU time (user + system, of `who`) of `work`.
fn measured(who: libc::c_int, work: impl FnOnce()) -> (Duration, Duration) {
    let cpu = || {
        // SAFETY: getrusage only writes the struct it is given.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::getrusage(who, &mut usage) }, 0);
        let time = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
        };
        time(usage.ru_utime) + time(usage.ru_stime)
    };
    let cpu_before = cpu();
    let started = Instant::now();
    work();
    (started.elapsed(), cpu() - cpu_before)
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
