//! conntrack sizing against the real kernel's sysctls (incident I6), in the VM: a host limit
//! set above the computed value survives sizing and the report says so; outside the initial
//! network namespace the read-only limit is fine when large enough and reported when not.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "real-kernel tests panic on failure"
)]

use std::time::Duration;

use conntrack_gc::sizing::{
    apply_sizing, cpu_count, wanted_values, ConntrackConfig, FillLevel, FsRoot, Knob, SizingReason,
};
use proxier_kernel_tests::{knob_path, sysctl, NetNs};

fn read(knob: Knob) -> u64 {
    sysctl::read(&knob_path(knob))
}

fn write(knob: Knob, value: u64) {
    sysctl::write(&knob_path(knob), value);
}

/// One test on purpose: both parts touch the same global limit.
#[test]
fn host_limit_above_computed_value_survives_sizing() {
    let saved: Vec<(Knob, u64)> = [
        Knob::Max,
        Knob::Hashsize,
        Knob::TcpEstablishedTimeout,
        Knob::TcpCloseWaitTimeout,
    ]
    .into_iter()
    .map(|k| (k, read(k)))
    .collect();
    println!("VM values before the test: {saved:?}");

    let config = ConntrackConfig {
        tcp_established_timeout: Some(Duration::from_secs(86_400)),
        tcp_close_wait_timeout: Some(Duration::from_secs(3600)),
        ..ConntrackConfig::kube_proxy_defaults()
    };
    let cores = cpu_count();
    let wanted = wanted_values(&config, cores);
    let want_max = wanted[&Knob::Max];
    let host_max = want_max * 2 + 4096;
    let host_hash = wanted[&Knob::Hashsize] * 2;
    write(Knob::Max, host_max);
    write(Knob::Hashsize, host_hash);
    write(Knob::TcpEstablishedTimeout, 432_000);
    write(Knob::TcpCloseWaitTimeout, 60);

    let report = apply_sizing(&FsRoot::system(), &config, cores).unwrap();
    println!("cores {cores}; sizing report (host larger than wanted):\n{report}");
    let max = report.get(Knob::Max).unwrap();
    assert_eq!(
        (max.host, max.wanted, max.applied),
        (host_max, want_max, false)
    );
    assert_eq!(max.reason, SizingReason::HostLarger);
    assert_eq!(read(Knob::Max), host_max, "nf_conntrack_max unchanged");
    assert_eq!(read(Knob::Hashsize), host_hash, "hashsize unchanged");
    assert_eq!(
        read(Knob::TcpEstablishedTimeout),
        432_000,
        "longer timeout kept"
    );
    let close_wait = report.get(Knob::TcpCloseWaitTimeout).unwrap();
    assert_eq!(
        (close_wait.applied, &close_wait.reason),
        (true, &SizingReason::Raised)
    );
    assert_eq!(
        read(Knob::TcpCloseWaitTimeout),
        3600,
        "configured timeout raised"
    );
    assert_eq!(report.failures().count(), 0);

    let level = FillLevel::read(&FsRoot::system()).unwrap();
    assert_eq!(level.max, host_max);
    println!("fill level {level:?} ratio {:.6}", level.ratio());

    // Outside the initial netns nf_conntrack_max is read-only (0444) and hashsize refuses writes.
    {
        let _ns = NetNs::fresh();
        let small = ConntrackConfig {
            max_per_core: Some(1),
            min: Some(1024),
            ..Default::default()
        };
        let report = apply_sizing(&FsRoot::system(), &small, cores).unwrap();
        println!("in a child netns, wanted below host:\n{report}");
        assert_eq!(
            report.failures().count(),
            0,
            "large enough read-only is fine"
        );
        let big = ConntrackConfig {
            max_per_core: Some(u32::try_from(host_max).unwrap()),
            ..Default::default()
        };
        let report = apply_sizing(&FsRoot::system(), &big, cores).unwrap();
        println!("in a child netns, wanted above host:\n{report}");
        assert_eq!(
            report.get(Knob::Max).unwrap().reason,
            SizingReason::ReadOnly
        );
        assert!(!report.get(Knob::Hashsize).unwrap().applied);
        assert_eq!(read(Knob::Max), host_max);
        assert_eq!(read(Knob::Hashsize), host_hash);
    }

    for (knob, value) in saved {
        write(knob, value);
    }
}
