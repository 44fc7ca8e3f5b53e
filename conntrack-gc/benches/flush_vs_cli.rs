//! Flush N matching UDP entries out of a table of S, with our one-pass batched flush and with
//! `conntrack -D` and the same filter, in the same run, in a fresh network namespace.
//!
//! `cargo bench -p conntrack-gc --bench flush_vs_cli` (root). Sizes from
//! `CONNTRACK_BENCH_SIZES` (comma-separated, default `100000`), matches from
//! `CONNTRACK_BENCH_MATCHES` (default 1000). The host's global `nf_conntrack_max` bounds S.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark binary")]

use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use conntrack_gc::ctnetlink::{DumpFilter, NewEntry, Tuple};
use conntrack_gc::{Conntrack, ConntrackFilter, FlushOptions, Protocol};
use proxier_test_support::{NetNs, CONNTRACK};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);

fn udp(client: u32, sport: u16, vip: Ipv4Addr, dport: u16) -> NewEntry {
    NewEntry::plain(
        Tuple {
            src: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | client)),
            dst: IpAddr::V4(vip),
            protocol: 17,
            src_port: Some(sport),
            dst_port: Some(dport),
        },
        1200,
    )
}

/// Background entries: UDP to 1000 other VIPs, unique client address per entry.
fn fill(ct: &mut Conntrack, from: u32, count: u32) {
    let mut chunk = Vec::with_capacity(10_000);
    for i in from..from + count {
        let vip = Ipv4Addr::new(10, 97, (i % 1000 / 250) as u8, (i % 250) as u8 + 1);
        chunk.push(udp(0x10_0000 + i, 1024 + (i % 60_000) as u16, vip, 53));
        if chunk.len() == chunk.capacity() {
            assert_eq!(ct.create(&chunk).unwrap(), chunk.len() as u64);
            chunk.clear();
        }
    }
    assert_eq!(ct.create(&chunk).unwrap(), chunk.len() as u64);
}

/// The N entries the flush must delete: UDP to VIP:53 from distinct clients.
fn add_matching(ct: &mut Conntrack, n: u32) {
    let entries: Vec<_> = (0..n).map(|i| udp(i + 1, 40_000, VIP, 53)).collect();
    assert_eq!(ct.create(&entries).unwrap(), u64::from(n));
}

/// The N entries spread over `k` VIPs 10.96.1.0 .. 10.96.1.(k-1), port 53.
fn add_matching_spread(ct: &mut Conntrack, n: u32, k: u32) -> Vec<Ipv4Addr> {
    let vips: Vec<_> = (0..k).map(|i| Ipv4Addr::new(10, 96, 1, i as u8)).collect();
    let entries: Vec<_> = (0..n)
        .map(|i| udp(i + 1, 40_001, vips[(i % k) as usize], 53))
        .collect();
    assert_eq!(ct.create(&entries).unwrap(), u64::from(n));
    vips
}

fn count(ct: &mut Conntrack) -> u64 {
    ct.dump(&DumpFilter::default(), |_| Ok(())).unwrap()
}

fn self_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

fn cli_delete() -> Duration {
    cli_delete_vip(VIP)
}

fn cli_delete_vip(vip: Ipv4Addr) -> Duration {
    let start = Instant::now();
    let vip = vip.to_string();
    let out = Command::new(CONNTRACK)
        .args(["-D", "-p", "udp", "--orig-dst", &vip, "--dport", "53"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let took = start.elapsed();
    eprintln!(
        "    conntrack -D: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    took
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let sizes: Vec<u32> = std::env::var("CONNTRACK_BENCH_SIZES")
        .unwrap_or_else(|_| "100000".to_owned())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let n: u32 = std::env::var("CONNTRACK_BENCH_MATCHES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let filter = [ConntrackFilter::service_ip(
        Protocol::Udp,
        IpAddr::V4(VIP),
        53,
    )];
    for size in sizes {
        let _ns = NetNs::fresh();
        let mut ct = Conntrack::open().unwrap();
        let start = Instant::now();
        fill(&mut ct, 0, size - n);
        println!("table of {size}: filled in {:.0} ms", ms(start.elapsed()));

        let hwm_before = self_hwm_kib();
        let mut ours = Vec::new();
        let mut ours_full = Vec::new();
        let mut cli = Vec::new();
        for round in 0..3 {
            add_matching(&mut ct, n);
            assert_eq!(count(&mut ct), u64::from(size));
            let start = Instant::now();
            let report = ct.flush(&filter).unwrap();
            ours.push(start.elapsed());
            assert_eq!(report.deleted, u64::from(n), "{report:?}");

            add_matching(&mut ct, n);
            let start = Instant::now();
            let options = FlushOptions {
                kernel_filter: false,
                ..FlushOptions::default()
            };
            let report = ct.flush_with(&filter, options).unwrap();
            ours_full.push(start.elapsed());
            assert_eq!(report.deleted, u64::from(n), "{report:?}");
            assert_eq!(report.examined, u64::from(size));

            add_matching(&mut ct, n);
            cli.push(cli_delete());
            assert_eq!(count(&mut ct), u64::from(size - n), "CLI deleted all N");
            println!(
                "  round {round}: ours {:.1} ms, ours without CTA_FILTER {:.1} ms, conntrack -D {:.1} ms",
                ms(ours[round]),
                ms(ours_full[round]),
                ms(cli[round])
            );
        }
        let median = |v: &mut Vec<Duration>| {
            v.sort();
            v[v.len() / 2]
        };
        let (o, f, c) = (median(&mut ours), median(&mut ours_full), median(&mut cli));
        println!(
            "RESULT table={size} matches={n}: ours {:.1} ms (ratio {:.3}), ours-without-kernel-filter {:.1} ms (ratio {:.3}), conntrack -D {:.1} ms",
            ms(o),
            o.as_secs_f64() / c.as_secs_f64(),
            ms(f),
            f.as_secs_f64() / c.as_secs_f64(),
            ms(c)
        );
        // Many filters: k service VIPs flushed in one pass, against k CLI runs.
        let k: u32 = std::env::var("CONNTRACK_BENCH_FILTERS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(10);
        let vips = add_matching_spread(&mut ct, n, k);
        let filters: Vec<_> = vips
            .iter()
            .map(|v| ConntrackFilter::service_ip(Protocol::Udp, IpAddr::V4(*v), 53))
            .collect();
        let start = Instant::now();
        let report = ct.flush(&filters).unwrap();
        let ours_many = start.elapsed();
        assert_eq!(report.deleted, u64::from(n), "{report:?}");
        add_matching_spread(&mut ct, n, k);
        let start = Instant::now();
        for v in &vips {
            cli_delete_vip(*v);
        }
        let cli_many = start.elapsed();
        assert_eq!(count(&mut ct), u64::from(size - n), "CLI deleted all N");
        println!(
            "RESULT table={size} matches={n} filters={k}: ours one pass {:.1} ms ({:?}), {k} x conntrack -D {:.1} ms, ratio {:.3}",
            ms(ours_many),
            report.kernel_filtering,
            ms(cli_many),
            ours_many.as_secs_f64() / cli_many.as_secs_f64()
        );
        println!(
            "MEMORY: this process's peak RSS (VmHWM) {} kB before the flushes, {} kB after",
            hwm_before,
            self_hwm_kib()
        );
    }
}
