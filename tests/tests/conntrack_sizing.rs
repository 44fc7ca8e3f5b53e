//! conntrack sizing against the real kernel's sysctls (incident I6), in the VM: a host limit
//! set above the computed value survives sizing and the report says so; outside the initial
//! network namespace the read-only limit is fine when large enough and reported when not.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "real-kernel tests panic on failure"
)]

use std::time::Duration;

use std::io;
use std::path::PathBuf;

use conntrack_gc::sizing::{
    apply_sizing, cpu_count, wanted_values, ConntrackConfig, FillLevel, FsRoot, HostFiles, Knob,
    SizingReason,
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
    let cores = cpu_count(&FsRoot::system());
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
    let established = report.get(Knob::TcpEstablishedTimeout).unwrap();
    assert_eq!(
        (established.host, established.applied, &established.reason),
        (432_000, true, &SizingReason::LoweredAsConfigured),
        "a configured timeout is written exactly, down too"
    );
    assert_eq!(read(Knob::TcpEstablishedTimeout), 86_400);
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

/// The real sysctls, with one knob's file made to vanish (fault injection: the module that
/// owns it not loaded).
struct WithoutKnob {
    system: FsRoot,
    missing: Knob,
}

impl WithoutKnob {
    fn check(&self, relative: &str) -> io::Result<()> {
        if relative == self.missing.relative_path() {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        Ok(())
    }
}

impl HostFiles for WithoutKnob {
    fn read(&self, relative: &str) -> io::Result<String> {
        self.check(relative)?;
        self.system.read(relative)
    }
    fn write(&self, relative: &str, value: &str) -> io::Result<()> {
        self.check(relative)?;
        self.system.write(relative, value)
    }
    fn is_writable(&self, relative: &str) -> io::Result<bool> {
        self.check(relative)?;
        self.system.is_writable(relative)
    }
    fn display_path(&self, relative: &str) -> PathBuf {
        self.system.display_path(relative)
    }
}

/// Issue 13 item 11 in the kernel: a missing knob skips that knob only (reported), the others
/// are still written; the CPU count is the machine's, not this thread's affinity.
#[test]
fn missing_knob_skips_only_itself_and_cpus_come_from_the_machine() {
    let saved: Vec<(Knob, u64)> = [Knob::Max, Knob::Hashsize, Knob::UdpTimeout]
        .into_iter()
        .map(|k| (k, read(k)))
        .collect();
    let machine = cpu_count(&FsRoot::system());
    // Pin this thread to CPU 0: the process now may use 1 CPU, the machine still has all.
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the calls only read/write it.
    let pinned = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    assert_eq!(pinned, 0, "sched_setaffinity");
    let parallelism = std::thread::available_parallelism().unwrap().get();
    let after = cpu_count(&FsRoot::system());
    println!(
        "machine CPUs {machine}; pinned to CPU 0: parallelism {parallelism}, cpu_count {after}"
    );
    assert_eq!(parallelism, 1);
    assert_eq!(
        after, machine,
        "sizing counts the machine, not the affinity"
    );
    assert!(
        machine >= 2,
        "the VM has 2 CPUs: the test would prove nothing with 1"
    );

    let host_max = read(Knob::Max);
    write(Knob::UdpTimeout, 30);
    let config = ConntrackConfig {
        max_per_core: Some(u32::try_from(host_max).unwrap()),
        min: Some(0),
        udp_timeout: Some(Duration::from_secs(45)),
        ..ConntrackConfig::default()
    };
    let files = WithoutKnob {
        system: FsRoot::system(),
        missing: Knob::Hashsize,
    };
    let report = apply_sizing(&files, &config, after).unwrap();
    println!("hashsize made missing:\n{report}");
    let hash = report.get(Knob::Hashsize).unwrap();
    assert_eq!(
        (hash.applied, &hash.reason),
        (false, &SizingReason::Missing)
    );
    let max = report.get(Knob::Max).unwrap();
    assert_eq!((max.applied, &max.reason), (true, &SizingReason::Raised));
    assert_eq!(
        read(Knob::Max),
        host_max * u64::from(after),
        "max still raised"
    );
    assert_eq!(read(Knob::UdpTimeout), 45, "timeout still written");
    assert_eq!(report.failures().count(), 1, "only the missing knob");

    for (knob, value) in saved {
        write(knob, value);
    }
}
