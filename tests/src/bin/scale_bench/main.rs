//! VM benchmark (`cargo xtask vmbench scale [SERVICES…]`): the release `proxier` binary at
//! SERVICES × 10 endpoints (default 100 and 10,000), fed by its file source (`--source DIR`,
//! at most 100 files) and by its Kubernetes source (the fake API server in this process:
//! paged list, then watch events), with `--min-sync-period 100ms --sync-period 20s`. Per size
//! and source: cold start vs `ipvsadm -R` of the same table, RSS after start and after the
//! flips and ≥ 3 resyncs, CPU while idle over 3 resyncs vs one `ipvsadm -Sn`, and event →
//! kernel latency of one endpoint flipped ready ⇄ terminating, polled with a destination dump
//! of that one virtual server (netlink-ipvs), resyncs running meanwhile. Prints one table and
//! issue 15's goal ratios.
//!
//! Environment: `SCALE_FLIPS` (default 100), `SCALE_SYNC_PERIOD` (seconds, default 20),
//! `SCALE_RESTORE_MAX` (the most Services `ipvsadm -R` restores; a larger table's time is
//! scaled linearly from that many; default: the whole table, restored once per size, as both
//! sources program the same table), `SCALE_SOURCES` (default `file,kube`; `json` is the file
//! source fed JSON files), `SCALE_LOCAL` (`spread`, the
//! default: the endpoints spread over the cluster's nodes so the node under test runs a real
//! node's share; `all`: every endpoint on the node under test, the worst case for the
//! per-endpoint packet rules).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark binary panics on failure"
)]

mod report;

use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use netlink_ipvs::{IpvsHandle, Protocol, ServiceKey};
use proxier_kernel_tests::fake_api::FakeApi;
use proxier_kernel_tests::scale_cluster::{ScaleCluster, CLUSTER_NODES, NODE, PORT};
use proxier_kernel_tests::yaml::{kubeconfig, source_dir};
use proxier_kernel_tests::{NetNs, ProxierProcess, IPVSADM};

use report::{Figures, Run, SourceKind};

/// Endpoints per Service.
const PER_SERVICE: usize = 10;
/// The longest one flip may take to reach the kernel before it counts as lost.
const FLIP_TIMEOUT: Duration = Duration::from_secs(90);
/// How often the kernel is asked for the flipped virtual server's real servers.
const POLL: Duration = Duration::from_millis(2);

/// What the environment asks for.
struct Settings {
    flips: usize,
    sync_period: u64,
    restore_max: usize,
    sources: Vec<SourceKind>,
    all_local: bool,
}

impl Settings {
    /// The cluster of `size` Services as the environment lays it out.
    fn cluster(&self, size: usize) -> ScaleCluster {
        let cluster = ScaleCluster::new(size, PER_SERVICE);
        if self.all_local {
            cluster.all_local()
        } else {
            cluster
        }
    }
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name).map_or(default, |v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a number"))
    })
}

fn main() {
    let started = Instant::now();
    let mut sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap_or_else(|_| panic!("{a}: not a size")))
        .collect();
    if sizes.is_empty() {
        sizes = vec![100, 10_000];
    }
    let sources = std::env::var("SCALE_SOURCES").unwrap_or_else(|_| "file,kube".into());
    let settings = Settings {
        flips: env_number("SCALE_FLIPS", 100),
        sync_period: env_number("SCALE_SYNC_PERIOD", 20) as u64,
        restore_max: env_number("SCALE_RESTORE_MAX", usize::MAX),
        sources: sources
            .split(',')
            .map(|s| match s {
                "file" => SourceKind::File,
                "json" => SourceKind::JsonFile,
                "kube" => SourceKind::Kube,
                other => panic!("SCALE_SOURCES: unknown source {other}"),
            })
            .collect(),
        all_local: match std::env::var("SCALE_LOCAL").as_deref() {
            Err(_) | Ok("spread") => false,
            Ok("all") => true,
            Ok(other) => panic!("SCALE_LOCAL: {other} is neither spread nor all"),
        },
    };
    println!(
        "scale bench: sizes {sizes:?} x {PER_SERVICE} endpoints ({}), {} flips, \
         --min-sync-period 100ms --sync-period {}s, ipvsadm -R of {}",
        if settings.all_local {
            "all on the node under test".to_owned()
        } else {
            format!("spread over {CLUSTER_NODES} nodes")
        },
        settings.flips,
        settings.sync_period,
        match settings.restore_max {
            usize::MAX => "the whole table".to_owned(),
            max => format!("at most {max} services (scaled linearly beyond)"),
        }
    );
    let mut runs = Vec::new();
    for &size in &sizes {
        // The same table for both sources: restored once.
        let (restore, restored) = ipvsadm_restore(&settings.cluster(size), settings.restore_max);
        println!(
            "[{:>6.0} s] {size} x {PER_SERVICE}: ipvsadm -R of {restored} services: {restore:?}",
            started.elapsed().as_secs_f64()
        );
        let restore = restore.mul_f64(size as f64 / restored as f64);
        for &source in &settings.sources {
            let run_started = Instant::now();
            let figures = measure(size, source, &settings, (restore, restored));
            println!(
                "[{:>6.0} s] {size} x {PER_SERVICE} {}: {figures:?} ({:.0} s)",
                started.elapsed().as_secs_f64(),
                source.name(),
                run_started.elapsed().as_secs_f64()
            );
            runs.push(Run {
                size,
                source,
                figures,
            });
        }
    }
    println!();
    report::print(&runs, settings.sync_period);
    println!(
        "scale bench: {:.0} s in all",
        started.elapsed().as_secs_f64()
    );
}

/// One size × source, in a fresh network namespace.
fn measure(
    size: usize,
    source: SourceKind,
    settings: &Settings,
    (restore, restored): (Duration, usize),
) -> Figures {
    let _ns = NetNs::fresh();
    let mut cluster = settings.cluster(size);
    if source == SourceKind::JsonFile {
        cluster = cluster.json_files();
    }
    println!(
        "{size} x {PER_SERVICE}: {} endpoints on {NODE}",
        cluster.local_endpoints()
    );
    let tag = format!("scale-{size}-{}", source.name());
    let sync_period = format!("{}s", settings.sync_period);
    let common = [
        "--node",
        NODE,
        "--min-sync-period",
        "100ms",
        "--sync-period",
        sync_period.as_str(),
    ];
    // The fake API server's runtime is built in this namespace: its threads serve 127.0.0.1 here.
    let mut api: Option<(tokio::runtime::Runtime, FakeApi)> = None;
    let dir = source_dir(&tag);
    let origin = match source {
        SourceKind::File | SourceKind::JsonFile => {
            cluster.write_files(&dir);
            vec!["--source".to_owned(), dir.to_str().unwrap().to_owned()]
        }
        SourceKind::Kube => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            let server = FakeApi::new();
            cluster.load_into(&server);
            let (address, _) = runtime.block_on(server.clone().serve());
            let config = kubeconfig(&tag, &format!("http://{address}"));
            api = Some((runtime, server));
            vec!["--kubeconfig".to_owned(), config]
        }
    };
    let mut args: Vec<&str> = vec!["run"];
    args.extend(origin.iter().map(String::as_str));
    args.extend(common);

    let spawned = Instant::now();
    let mut proxier = ProxierProcess::spawn(&args);
    wait_for_count(&mut proxier, "initial sync", 1, Duration::from_secs(1800));
    let cold_start = spawned.elapsed();
    println!(
        "{size} x {PER_SERVICE} {}: cold start {cold_start:?}, of which the initial sync {}",
        source.name(),
        initial_sync_parts(&proxier.log())
    );
    // What the start logged up to the initial sync (timestamped: where the time before the
    // sync went), with the sync's large runs of one kind (IPVS, addresses) and their time.
    for line in proxier
        .log()
        .lines()
        .take_while(|l| !l.contains("initial sync"))
    {
        println!("  | {}", line.chars().take(220).collect::<String>());
    }
    let pid = proxier.id();
    let rss_start_kb = settled_rss_kb(pid, "after start");

    // Idle: from just after one resync to just after the third one after it.
    let period = Duration::from_secs(settings.sync_period);
    let resync_wait = period * 3 + Duration::from_secs(600);
    let base = count(&proxier.log(), "full resync");
    wait_for_count(&mut proxier, "full resync", base + 1, resync_wait);
    let (cpu_before, idle_started) = (cpu_time(pid), Instant::now());
    wait_for_count(&mut proxier, "full resync", base + 4, resync_wait * 3);
    let idle_cpu = cpu_time(pid).saturating_sub(cpu_before);
    let idle_wall = idle_started.elapsed();
    let dump = ipvsadm_dump(size);

    // Flips, resyncs running meanwhile; then at least 3 resyncs since the first flip.
    let resyncs_before = count(&proxier.log(), "full resync");
    let mut ipvs = IpvsHandle::connect().unwrap();
    let mut latencies = Vec::new();
    let mut lost = 0;
    for k in 0..settings.flips {
        let i = (k * 7_919 + 13) % size;
        let weight = cluster.flip(i);
        let flipped = Instant::now();
        match (&source, &api) {
            (SourceKind::File | SourceKind::JsonFile, _) => cluster.rewrite_file_of(&dir, i),
            (SourceKind::Kube, Some((_, server))) => cluster.publish(server, i),
            (SourceKind::Kube, None) => unreachable!("the kube source has its server"),
        }
        match wait_for_weight(&mut ipvs, i, weight) {
            true => latencies.push(flipped.elapsed()),
            false => lost += 1,
        }
    }
    wait_for_count(
        &mut proxier,
        "full resync",
        resyncs_before + 3,
        resync_wait * 3,
    );
    let resyncs_during_flips = count(&proxier.log(), "full resync") - resyncs_before;
    let rss_after_kb = settled_rss_kb(pid, "after the flips and 3 resyncs");
    // One more resync: is the reading a level or a moment?
    wait_for_count(&mut proxier, "full resync", resyncs_before + 4, resync_wait);
    settled_rss_kb(pid, "after one more resync");
    proxier.assert_running();
    drop(proxier);
    drop(api);

    Figures {
        cold_start,
        restore,
        restored,
        rss_start_kb,
        rss_after_kb,
        idle_cpu,
        idle_wall,
        dump,
        latencies,
        lost,
        resyncs_during_flips,
    }
}

/// Polls the real servers of Service `i`'s virtual server until endpoint 0 has `weight`.
fn wait_for_weight(ipvs: &mut IpvsHandle, i: usize, weight: u32) -> bool {
    let key = ServiceKey::Address {
        protocol: Protocol::Tcp,
        address: IpAddr::V4(ScaleCluster::vip(i)),
        port: PORT,
    };
    let endpoint = IpAddr::V4(ScaleCluster::endpoint(i, 0));
    let started = Instant::now();
    while started.elapsed() < FLIP_TIMEOUT {
        let destinations = ipvs.destinations(&key).unwrap_or_default();
        let now = destinations
            .iter()
            .find(|d| d.real_server.key.address == endpoint)
            .map(|d| d.real_server.weight);
        if now == Some(weight) {
            return true;
        }
        std::thread::sleep(POLL);
    }
    eprintln!("flip of service {i} to weight {weight}: not in the kernel after {FLIP_TIMEOUT:?}");
    false
}

/// The initial sync's own time and parts, as its log line has them.
fn initial_sync_parts(log: &str) -> String {
    let Some(line) = log.lines().find(|l| l.contains("initial sync")) else {
        return "(no log line)".to_owned();
    };
    let field = |text: &'_ str, name: &str, end: char| -> String {
        text.find(name).map_or("?".to_owned(), |at| {
            let rest = &text[at + name.len()..];
            rest.find(end).map_or(rest, |to| &rest[..to]).to_owned()
        })
    };
    let parts = line.find("parts: SyncParts {").map_or("", |at| &line[at..]);
    format!(
        "{} (plan {}, reconcile {}, packet rules {}, operations {})",
        field(line, "elapsed: ", ','),
        field(parts, "plan: ", ','),
        field(parts, "reconcile: ", ','),
        field(parts, "packet_rules: ", ','),
        field(parts, "operations: ", ' ')
    )
}

/// How often `needle` occurs in `log`.
fn count(log: &str, needle: &str) -> usize {
    log.matches(needle).count()
}

/// Waits until the log holds `needle` `n` times; panics with the log's tail after `timeout`.
fn wait_for_count(proxier: &mut ProxierProcess, needle: &str, n: usize, timeout: Duration) {
    let started = Instant::now();
    loop {
        proxier.assert_running();
        let log = proxier.log();
        if count(&log, needle) >= n {
            return;
        }
        if started.elapsed() > timeout {
            let tail: String = log
                .chars()
                .rev()
                .take(4000)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            panic!("{needle:?} x{n} not logged after {timeout:?}; log tail:\n{tail}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// How long after a sync's log line the resident size is read: the line is written before
/// the sync's end (the binary returns freed memory to the OS right after it).
const RSS_SETTLE: Duration = Duration::from_secs(2);

/// `VmRSS` of process `pid` [`RSS_SETTLE`] after now, in kB.
fn settled_rss_kb(pid: u32, when: &str) -> u64 {
    std::thread::sleep(RSS_SETTLE);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in /proc/PID/status"))
    };
    // The resident size is the heap (anonymous) and the binary's pages that ran so far (file).
    println!(
        "RSS {when}: VmRSS {} kB = anonymous {} kB + file {} kB (+ shmem)",
        field("VmRSS:"),
        field("RssAnon:"),
        field("RssFile:")
    );
    field("VmRSS:")
}

/// utime + stime of process `pid`.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) start at field 3 (state).
    let after = stat.rsplit_once(')').unwrap().1;
    let fields: Vec<u64> = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|f| f.parse().unwrap())
        .collect();
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Duration::from_secs_f64((fields[0] + fields[1]) as f64 / ticks as f64)
}

/// The time of one `ipvsadm -Sn` of the table (checked: one line per virtual and real server).
fn ipvsadm_dump(size: usize) -> Duration {
    let started = Instant::now();
    let output = Command::new(IPVSADM).arg("-Sn").output().unwrap();
    let elapsed = started.elapsed();
    assert!(output.status.success());
    let lines = output.stdout.iter().filter(|b| **b == b'\n').count();
    assert_eq!(lines, size * (PER_SERVICE + 1), "ipvsadm -Sn lines");
    elapsed
}

/// `ipvsadm -R` of the first `max` Services' table into a fresh namespace: its time and how
/// many Services it restored.
fn ipvsadm_restore(cluster: &ScaleCluster, max: usize) -> (Duration, usize) {
    let _ns = NetNs::fresh();
    let restored = cluster.services().min(max);
    let text = cluster.restore_text(restored);
    let started = Instant::now();
    let mut child = Command::new(IPVSADM)
        .arg("-R")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "ipvsadm -R");
    (started.elapsed(), restored)
}
