//! Incidents I6 and I7, through the `proxier run` binary: on restart kube-proxy set
//! `nf_conntrack_max` to maxPerCore x cores, silently undoing an operator's larger value
//! ("nf_conntrack: table full, dropping packet"), and held CLOSE_WAIT entries for its 1 h
//! default.
//!
//! 1. The host's `nf_conntrack_max` and hash size are set above what the config computes
//!    (written in the initial network namespace, where they are writable; the VM is
//!    disposable and the old values are restored): after start both are unchanged, and the
//!    decision is in the log and in `proxier_conntrack_sizing`.
//! 2. Timeouts: with `tcpEstablishedTimeout: 0s` and `tcpCloseWaitTimeout: 0s` the host's
//!    values stay; `udpTimeout: 45s` is written and logged with the old value.
//! 3. The table filled to over 90 % with ctnetlink inserts: the warning is logged and
//!    `proxier_conntrack_fill_ratio` shows it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code panics on failure"
)]

use std::time::Duration;

use conntrack_gc::ctnetlink::{NewEntry, Tuple};
use conntrack_gc::sizing::{cpu_count, wanted_values, ConntrackConfig, FsRoot, Knob};
use proxier_kernel_tests::sysctl::{read, write};
use proxier_kernel_tests::yaml::kube_proxy_config;
use proxier_kernel_tests::{
    http_get, knob_path as knob, source_dir, wait_for, witness, NetNs, ProxierProcess, CONNTRACK,
};

fn metrics() -> Result<String, String> {
    http_get(10249, "/metrics")
}

/// `proxier run` on an empty source with a `KubeProxyConfiguration` whose `conntrack` block is
/// `conntrack` (absent when None); returns the process once its log contains `needle`, and the
/// log.
fn run_until_logged(tag: &str, conntrack: Option<&str>, needle: &str) -> (ProxierProcess, String) {
    let config = conntrack.map(|c| kube_proxy_config(tag, &format!("conntrack:\n{c}")));
    let args: Vec<&str> = config
        .iter()
        .flat_map(|c| ["--config", c.as_str()])
        .collect();
    let mut proxier = ProxierProcess::run(&source_dir(tag), &args);
    let log = proxier.wait_for_log(needle);
    (proxier, log)
}

/// Puts the VM's global limits back, even when an assertion fails.
struct Restore {
    max: u64,
    hash: u64,
}

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = std::fs::write(knob(Knob::Max), format!("{}\n", self.max));
        let _ = std::fs::write(knob(Knob::Hashsize), format!("{}\n", self.hash));
    }
}

/// One test: every part touches the same global limit.
#[test]
fn host_limits_survive_and_fill_level_is_warned_about() {
    let max_path = knob(Knob::Max);
    let hash_path = knob(Knob::Hashsize);
    let saved_max = read(&max_path);
    let saved_hash = read(&hash_path);
    let config = ConntrackConfig {
        max_per_core: Some(32768),
        min: Some(131072),
        ..ConntrackConfig::default()
    };
    let wanted = wanted_values(&config, cpu_count(&FsRoot::system()));
    let host_max = wanted[&Knob::Max] * 2 + 4096;
    let host_hash = wanted[&Knob::Hashsize] * 2;
    let _restore = Restore {
        max: saved_max,
        hash: saved_hash,
    };
    write(&max_path, host_max);
    write(&hash_path, host_hash);

    // 1 + 2: limits above the computed values, timeouts left alone unless configured.
    let (sizing_line, timeouts_line) = {
        let _ns = NetNs::fresh();
        let est = "/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_established";
        let close_wait = "/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_close_wait";
        let udp = "/proc/sys/net/netfilter/nf_conntrack_udp_timeout";
        write(est, 432_000);
        write(close_wait, 60);
        write(udp, 30);
        let (mut proxier, log) = run_until_logged(
            "i6",
            Some("  maxPerCore: 32768\n  min: 131072\n  tcpEstablishedTimeout: 0s\n  tcpCloseWaitTimeout: 0s\n  udpTimeout: 45s\n"),
            "nf_conntrack_udp_timeout: host",
        );
        let metric = wait_for("the sizing metric", Duration::from_secs(10), || {
            let text = metrics()?;
            if text.contains("proxier_conntrack_sizing{knob=\"nf_conntrack_max\"") {
                Ok(text)
            } else {
                Err(text)
            }
        });
        proxier.assert_running();
        let (_, log_after) = proxier.stop();
        assert_eq!(read(&max_path), host_max, "nf_conntrack_max unchanged");
        assert_eq!(read(&hash_path), host_hash, "hashsize unchanged");
        assert_eq!(read(est), 432_000, "tcpEstablishedTimeout 0s: left alone");
        assert_eq!(read(close_wait), 60, "tcpCloseWaitTimeout 0s: left alone");
        assert_eq!(read(udp), 45, "udpTimeout configured: written");
        let max_line = format!(
            "nf_conntrack_max: host {host_max} wanted {} applied false",
            wanted[&Knob::Max]
        );
        assert!(log.contains(&max_line), "{max_line:?} in the log:\n{log}");
        assert!(
            log.contains(&format!(
                "nf_conntrack hashsize: host {host_hash} wanted {} applied false",
                wanted[&Knob::Hashsize]
            )),
            "{log}"
        );
        assert!(
            log.contains("nf_conntrack_udp_timeout: host 30 wanted 45 applied true"),
            "{log}"
        );
        assert!(
            !log_after.contains("nf_conntrack_tcp_timeout_established:")
                && !log_after.contains("nf_conntrack_tcp_timeout_close_wait:"),
            "no decision for unconfigured timeouts:\n{log_after}"
        );
        let decision = metric
            .lines()
            .filter(|l| l.starts_with("proxier_conntrack_sizing{"))
            .collect::<Vec<_>>()
            .join(", ");
        assert!(
            decision.contains(
                "proxier_conntrack_sizing{knob=\"nf_conntrack_max\",decision=\"kept_host_larger\"} 1"
            ),
            "{decision}"
        );
        (
            format!("{max_line}; metric: {decision}"),
            "established 432000 and close_wait 60 kept (0s), udp 30 -> 45 written".to_owned(),
        )
    };

    // With no conntrack block at all, kube-proxy would write its 1 h close-wait default (the
    // I7 incident); proxier leaves every timeout alone unless it is configured.
    let defaults_line = {
        let _ns = NetNs::fresh();
        let close_wait = "/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_close_wait";
        write(close_wait, 60);
        let (proxier, log) = run_until_logged("i7", None, "nf_conntrack_max: host");
        let _ = proxier.stop();
        assert_eq!(
            read(close_wait),
            60,
            "unconfigured timeout left alone:\n{log}"
        );
        assert!(
            !log.contains("nf_conntrack_tcp_timeout_close_wait:"),
            "no decision about an unconfigured timeout:\n{log}"
        );
        "no conntrack block: close_wait 60 kept, no timeout written".to_owned()
    };

    // 3: fill to over 90 %.
    let max = 2000;
    write(&max_path, max);
    let fill_line = {
        let _ns = NetNs::fresh();
        let entries: Vec<NewEntry> = (0..1850u32)
            .map(|i| {
                NewEntry::plain(
                    Tuple {
                        src: format!("10.200.{}.{}", i / 250, i % 250 + 1)
                            .parse()
                            .unwrap(),
                        dst: "10.201.0.1".parse().unwrap(),
                        protocol: 17,
                        src_port: Some(1000 + i as u16),
                        dst_port: Some(53),
                    },
                    600,
                )
            })
            .collect();
        let mut ct = conntrack_gc::Conntrack::open().unwrap();
        let created = ct.create(&entries).unwrap();
        witness(
            CONNTRACK,
            &[
                "-I",
                "-p",
                "udp",
                "-s",
                "10.202.0.1",
                "-d",
                "10.201.0.1",
                "--sport",
                "999",
                "--dport",
                "53",
                "-t",
                "600",
            ],
        );
        let count = witness(CONNTRACK, &["-C"]);
        let count: u64 = count.trim().parse().unwrap();
        assert!(count * 10 >= max * 9, "table at {count}/{max}");
        let (proxier, log) = run_until_logged(
            "i6fill",
            Some("  maxPerCore: 0\n  tcpEstablishedTimeout: 0s\n  tcpCloseWaitTimeout: 0s\n"),
            "% full",
        );
        let ratio = wait_for("the fill metric", Duration::from_secs(10), || {
            let text = metrics()?;
            text.lines()
                .find_map(|l| l.strip_prefix("proxier_conntrack_fill_ratio "))
                .map(|v| v.trim().parse::<f64>().unwrap())
                .ok_or(text)
        });
        let _ = proxier.stop();
        assert!(ratio >= 0.9, "fill ratio metric {ratio}");
        let warning = log
            .lines()
            .find(|l| l.contains("% full"))
            .unwrap()
            .to_owned();
        assert!(warning.contains("WARN"), "{warning}");
        format!("{created} ctnetlink inserts + 1 `conntrack -I`, count {count}/{max}; metric {ratio:.3}; log: {warning}")
    };

    println!(
        "I6/I7 result: {sizing_line}; timeouts: {timeouts_line}; no config: {defaults_line}; fill: {fill_line}"
    );
}
