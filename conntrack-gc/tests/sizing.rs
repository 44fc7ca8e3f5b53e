//! Sizing against a temp-dir procfs/sysfs root (never the host's own sysctls).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests panic on failure"
)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use conntrack_gc::sizing::{
    apply_sizing, cpu_count, ConntrackConfig, FillLevel, FsRoot, Knob, SizingReason,
};
use conntrack_gc::Error;
use tempfile::TempDir;

/// A fake root holding every knob with the given values (and `nf_conntrack_count`).
fn fake_root(values: &[(Knob, u64)]) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    for knob in Knob::ALL {
        let value = values
            .iter()
            .find(|(k, _)| *k == knob)
            .map(|(_, v)| *v)
            .unwrap_or(0);
        write(dir.path(), knob.relative_path(), value);
    }
    write(dir.path(), conntrack_gc::sizing::COUNT_PATH, 0);
    dir
}

fn write(root: &Path, relative: &str, value: u64) {
    let path = root.join(relative);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, format!("{value}\n")).unwrap();
}

fn read(root: &Path, knob: Knob) -> String {
    fs::read_to_string(root.join(knob.relative_path())).unwrap()
}

fn config_max(per_core: u32, min: u32) -> ConntrackConfig {
    ConntrackConfig {
        max_per_core: Some(per_core),
        min: Some(min),
        ..Default::default()
    }
}

#[test]
fn host_larger_than_wanted_is_untouched_and_reported() {
    // Incident I6: an operator's 2310720 must survive a computed 524288.
    let root = fake_root(&[
        (Knob::Max, 2_310_720),
        (Knob::Hashsize, 577_680),
        (Knob::TcpEstablishedTimeout, 432_000),
    ]);
    let mut config = config_max(32_768, 131_072);
    config.tcp_established_timeout = Some(Duration::from_secs(86_400));
    let report = apply_sizing(&FsRoot::new(root.path()), &config, 16).unwrap();
    println!("sizing report (host larger than wanted):\n{report}");

    let max = report.get(Knob::Max).unwrap();
    assert_eq!(
        (max.host, max.wanted, max.applied),
        (2_310_720, 524_288, false)
    );
    assert_eq!(max.reason, SizingReason::HostLarger);
    let hash = report.get(Knob::Hashsize).unwrap();
    assert_eq!(
        (hash.host, hash.wanted, hash.applied),
        (577_680, 131_072, false)
    );
    assert_eq!(report.entries.len(), 3, "only configured knobs: {report}");
    assert_eq!(report.failures().count(), 0);
    assert_eq!(read(root.path(), Knob::Max), "2310720\n", "file untouched");
    assert_eq!(read(root.path(), Knob::Hashsize), "577680\n");
    // A configured timeout is the operator's intent, not a limit: written exactly, even down
    // (issue 13 item 11), and the report says old -> new.
    let est = report.get(Knob::TcpEstablishedTimeout).unwrap();
    assert_eq!(
        (est.host, est.wanted, est.applied, &est.reason),
        (432_000, 86_400, true, &SizingReason::LoweredAsConfigured)
    );
    assert!(est.to_string().contains("(432000 -> 86400)"), "{est}");
    assert_eq!(read(root.path(), Knob::TcpEstablishedTimeout), "86400\n");
}

#[test]
fn configured_timeouts_are_written_exactly_up_and_down_limits_are_not() {
    let root = fake_root(&[
        (Knob::Max, 1_000_000),
        (Knob::Hashsize, 250_000),
        (Knob::TcpEstablishedTimeout, 432_000),
        (Knob::TcpCloseWaitTimeout, 60),
        (Knob::UdpTimeout, 120),
        (Knob::UdpStreamTimeout, 180),
    ]);
    let config = ConntrackConfig {
        tcp_established_timeout: Some(Duration::from_secs(86_400)),
        tcp_close_wait_timeout: Some(Duration::from_secs(3600)),
        udp_timeout: Some(Duration::from_secs(30)),
        ..config_max(32_768, 0)
    };
    let report = apply_sizing(&FsRoot::new(root.path()), &config, 8).unwrap();
    println!("{report}");
    for (knob, host, wanted, reason) in [
        (
            Knob::TcpEstablishedTimeout,
            432_000,
            86_400,
            SizingReason::LoweredAsConfigured,
        ),
        (Knob::TcpCloseWaitTimeout, 60, 3600, SizingReason::Raised),
        (Knob::UdpTimeout, 120, 30, SizingReason::LoweredAsConfigured),
    ] {
        let e = report.get(knob).unwrap();
        assert_eq!(
            (e.host, e.wanted, e.applied, &e.reason),
            (host, wanted, true, &reason)
        );
        assert_eq!(read(root.path(), knob), format!("{wanted}\n"));
    }
    assert!(report.get(Knob::UdpStreamTimeout).is_none(), "unset: left");
    assert_eq!(read(root.path(), Knob::UdpStreamTimeout), "180\n");
    assert_eq!(
        read(root.path(), Knob::Max),
        "1000000\n",
        "limit not lowered"
    );
    assert_eq!(read(root.path(), Knob::Hashsize), "250000\n");
    assert_eq!(report.failures().count(), 0);
}

#[test]
fn hashsize_is_never_lowered_even_with_allow_lowering() {
    let root = fake_root(&[(Knob::Max, 1_000_000), (Knob::Hashsize, 250_000)]);
    let config = ConntrackConfig {
        allow_lowering: true,
        ..config_max(32_768, 0)
    };
    let report = apply_sizing(&FsRoot::new(root.path()), &config, 8).unwrap();
    println!("{report}");
    let max = report.get(Knob::Max).unwrap();
    assert_eq!((max.applied, &max.reason), (true, &SizingReason::Lowered));
    assert_eq!(read(root.path(), Knob::Max), "262144\n");
    let hash = report.get(Knob::Hashsize).unwrap();
    assert_eq!(
        (hash.host, hash.wanted, hash.applied, &hash.reason),
        (250_000, 65_536, false, &SizingReason::NeverLowered)
    );
    assert_eq!(read(root.path(), Knob::Hashsize), "250000\n");
}

#[test]
fn cpu_count_is_the_machine_s_online_cpus() {
    let root = tempfile::tempdir().unwrap();
    let files = FsRoot::new(root.path());
    let online = root.path().join(conntrack_gc::sizing::CPU_ONLINE_PATH);
    fs::create_dir_all(online.parent().unwrap()).unwrap();
    // A 64-CPU machine, whatever this process's affinity or cgroup quota allows.
    fs::write(&online, "0-63\n").unwrap();
    assert_eq!(cpu_count(&files), 64);
    fs::write(&online, "0-3,8,10-11\n").unwrap();
    assert_eq!(cpu_count(&files), 7);
    // Unreadable: this process's parallelism, never 0.
    fs::remove_file(&online).unwrap();
    let fallback = cpu_count(&files);
    assert_eq!(
        fallback,
        u32::try_from(std::thread::available_parallelism().unwrap().get()).unwrap()
    );
}

#[test]
fn smaller_host_values_are_raised_and_unconfigured_ones_left() {
    let root = fake_root(&[
        (Knob::Max, 65_536),
        (Knob::Hashsize, 16_384),
        (Knob::TcpCloseWaitTimeout, 60),
        (Knob::UdpTimeout, 30),
        (Knob::TcpBeLiberal, 0),
        (Knob::UdpStreamTimeout, 120),
    ]);
    let config = ConntrackConfig {
        tcp_close_wait_timeout: Some(Duration::from_secs(3600)),
        tcp_be_liberal: Some(true),
        ..config_max(32_768, 131_072)
    };
    let report = apply_sizing(&FsRoot::new(root.path()), &config, 4).unwrap();
    println!("{report}");
    for (knob, host, wanted, value) in [
        (Knob::Max, 65_536, 131_072, "131072\n"),
        (Knob::Hashsize, 16_384, 32_768, "32768\n"),
        (Knob::TcpCloseWaitTimeout, 60, 3600, "3600\n"),
        (Knob::TcpBeLiberal, 0, 1, "1\n"),
    ] {
        let e = report.get(knob).unwrap();
        assert_eq!((e.host, e.wanted, e.applied), (host, wanted, true), "{e}");
        assert_eq!(e.reason, SizingReason::Raised);
        assert_eq!(read(root.path(), knob), value);
    }
    assert!(report.get(Knob::UdpTimeout).is_none());
    assert_eq!(
        read(root.path(), Knob::UdpTimeout),
        "30\n",
        "not configured"
    );
    assert_eq!(read(root.path(), Knob::UdpStreamTimeout), "120\n");
}

#[test]
fn lowering_needs_the_opt_in() {
    let root = fake_root(&[(Knob::Max, 1_000_000), (Knob::Hashsize, 250_000)]);
    let mut config = config_max(32_768, 0);
    let files = FsRoot::new(root.path());
    let report = apply_sizing(&files, &config, 8).unwrap();
    assert_eq!(
        report.get(Knob::Max).unwrap().reason,
        SizingReason::HostLarger
    );
    assert_eq!(read(root.path(), Knob::Max), "1000000\n");

    config.allow_lowering = true;
    let report = apply_sizing(&files, &config, 8).unwrap();
    let max = report.get(Knob::Max).unwrap();
    assert_eq!(
        (max.host, max.wanted, max.applied),
        (1_000_000, 262_144, true)
    );
    assert_eq!(max.reason, SizingReason::Lowered);
    assert_eq!(read(root.path(), Knob::Max), "262144\n");
    // The hash size is never lowered, allowLowering or not (issue 13 item 11).
    assert_eq!(read(root.path(), Knob::Hashsize), "250000\n");

    // Equal now: a second run writes nothing and says so.
    let again = apply_sizing(&files, &config, 8).unwrap();
    assert!(again.entries.iter().all(|e| !e.applied));
    assert_eq!(
        again.get(Knob::Max).unwrap().reason,
        SizingReason::AlreadySet
    );
    assert_eq!(
        again.get(Knob::Hashsize).unwrap().reason,
        SizingReason::NeverLowered
    );
}

#[test]
fn read_only_file_large_enough_is_fine_too_small_is_reported() {
    // As outside the initial netns: nf_conntrack_max is 0444 (procfs enforces it even for root).
    let root = fake_root(&[(Knob::Max, 262_144), (Knob::Hashsize, 65_536)]);
    let max_path = root.path().join(Knob::Max.relative_path());
    fs::set_permissions(&max_path, fs::Permissions::from_mode(0o444)).unwrap();
    let files = FsRoot::new(root.path());

    let report = apply_sizing(&files, &config_max(16_384, 0), 8).unwrap();
    let max = report.get(Knob::Max).unwrap();
    assert_eq!(max.reason, SizingReason::HostLarger, "{report}");
    assert_eq!(
        report.failures().count(),
        0,
        "large enough read-only is no error"
    );

    let report = apply_sizing(&files, &config_max(65_536, 0), 8).unwrap();
    println!("{report}");
    let max = report.get(Knob::Max).unwrap();
    assert_eq!(
        (max.host, max.wanted, max.applied),
        (262_144, 524_288, false)
    );
    assert_eq!(max.reason, SizingReason::ReadOnly);
    assert_eq!(report.failures().count(), 1);
    assert_eq!(fs::read_to_string(&max_path).unwrap(), "262144\n");
    // The writable hash size is still raised: one read-only knob does not stop the others.
    assert_eq!(read(root.path(), Knob::Hashsize), "131072\n");
}

#[test]
fn missing_knob_is_skipped_and_reported_the_others_are_sized() {
    let root = fake_root(&[
        (Knob::Max, 1000),
        (Knob::Hashsize, 250),
        (Knob::UdpTimeout, 30),
    ]);
    fs::remove_file(root.path().join(Knob::Hashsize.relative_path())).unwrap();
    let config = ConntrackConfig {
        udp_timeout: Some(Duration::from_secs(60)),
        ..config_max(32_768, 0)
    };
    let report = apply_sizing(&FsRoot::new(root.path()), &config, 2).unwrap();
    println!("{report}");
    let hash = report.get(Knob::Hashsize).unwrap();
    assert_eq!(
        (hash.applied, &hash.reason),
        (false, &SizingReason::Missing)
    );
    assert!(hash.to_string().contains("does not exist"), "{hash}");
    assert_eq!(report.failures().count(), 1, "the missing knob is reported");
    assert!(
        !root.path().join(Knob::Hashsize.relative_path()).exists(),
        "never created"
    );
    assert_eq!(
        read(root.path(), Knob::Max),
        "65536\n",
        "the others are sized"
    );
    assert_eq!(read(root.path(), Knob::UdpTimeout), "60\n");
    assert_eq!(report.get(Knob::Max).unwrap().reason, SizingReason::Raised);
}

#[test]
fn garbage_value_is_an_error() {
    let root = fake_root(&[]);
    fs::write(root.path().join(Knob::Max.relative_path()), "lots\n").unwrap();
    let err = apply_sizing(&FsRoot::new(root.path()), &config_max(1, 0), 1).unwrap_err();
    assert!(
        matches!(err, Error::HostValue { ref text, .. } if text == "lots"),
        "{err:?}"
    );
}

#[test]
fn fill_level_reads_count_over_max() {
    let root = fake_root(&[(Knob::Max, 1000)]);
    write(root.path(), conntrack_gc::sizing::COUNT_PATH, 900);
    let level = FillLevel::read(&FsRoot::new(root.path())).unwrap();
    assert_eq!(
        level,
        FillLevel {
            count: 900,
            max: 1000
        }
    );
    assert!(level.needs_warning());
    write(root.path(), conntrack_gc::sizing::COUNT_PATH, 899);
    assert!(!FillLevel::read(&FsRoot::new(root.path()))
        .unwrap()
        .needs_warning());
}
