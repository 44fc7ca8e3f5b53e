//! Heap and per-change cost of a source + engine at scale, on the host, without a kernel:
//! `cargo run --release -p proxier-benches --example scale_heap -- [SERVICES] [FLIPS]
//! [file|kube]` (default 10,000 Services × 10 endpoints in 100 files, 20 flips, the file
//! source).
//!
//! `kube`: the Kubernetes source instead, against the fake API server (`ScaleCluster`'s
//! Services and EndpointSlices, paged initial lists, then one MODIFIED EndpointSlice watch
//! event per flip), the client and its watches on a 2-worker tokio runtime and each resync's
//! read on a blocking thread, as `proxier run` has them. The fake API server runs in the same
//! process (its templates and rendered pages show up in the profile under `fake_api`).
//!
//! Writes the input (`write_scale_input`: FILES files of Services + EndpointSlices, ClusterIP
//! 10.96.0.0 + i + 1, endpoints 10.128.0.0 + 10 i …), loads it through `DirectoryWatch` into a
//! `Proxier` over a dataplane that only keeps the "kernel" table (`TableDataplane`), then flips
//! one endpoint ready ⇄ terminating by renaming a rewritten file over the old one, `FLIPS`
//! times, with a full resync every 5 flips. Prints RSS after start and after the flips, and the
//! per-flip time of the source poll and of the incremental sync.
//!
//! With `PROXIER_DHAT=1` it runs under the dhat heap profiler (slower; RSS then includes
//! dhat's own books) and writes `dhat-heap.json` (top sites: open it in dhat's viewer, or
//! `benches/dhat_top.py dhat-heap.json`).

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use proxier::config::Config;
use proxier::dataplane::{ApplyReport, Dataplane, TableRead};
use proxier::model::ClusterState;
use proxier::plan::{NodeContext, PacketRules, Planner};
use proxier::reconcile::{Observed, Op};
use proxier::runtime::{Proxier, SyncParts};
use proxier::source::kube::KubeSource;
use proxier::source::{DirectorySource, DirectoryWatch, Source};
use proxier_test_support::fake_api::FakeApi;
use proxier_test_support::scale_cluster::{ScaleCluster, NODE};

/// The binary's allocator settings (arena limit, trims), the same file.
#[path = "../../proxier/src/heap.rs"]
mod heap;

#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

const ENDPOINTS: u32 = 10;
const FILES: u32 = 100;
/// The loop's slice of a resync's repair (`runtime::REPAIR_SLICE`).
const REPAIR_SLICE: usize = 500;

/// A dataplane that keeps only what a kernel would have (no log), so the heap is proxier's.
#[derive(Default)]
struct TableDataplane {
    table: Observed,
    rules: Option<PacketRules>,
}

impl Dataplane for TableDataplane {
    fn observe(&mut self) -> Result<Observed, proxier::Error> {
        Ok(self.table.clone())
    }

    fn apply(&mut self, ops: &[Op]) -> ApplyReport {
        let results = ops
            .iter()
            .map(|op| {
                self.table
                    .apply(op)
                    .map_err(|errno| proxier::Error::Kernel {
                        op: op.to_string(),
                        errno,
                    })
            })
            .collect();
        ApplyReport { results }
    }

    fn table_read(&mut self) -> Result<Option<TableRead>, proxier::Error> {
        let table = self.table.ipvs.clone();
        Ok(Some(Box::new(move || Ok(table))))
    }

    fn observe_addresses(
        &mut self,
    ) -> Result<std::collections::BTreeSet<std::net::IpAddr>, proxier::Error> {
        Ok(self.table.addresses.clone())
    }

    /// As the kernel dataplane answers when the ruleset generation has not moved since its
    /// last write (no other tool writes nftables here); `PROXIER_RULES_DRIFT=1`: as it
    /// answers when it has.
    fn packet_rules_intact(&mut self) -> bool {
        self.rules.is_some() && std::env::var_os("PROXIER_RULES_DRIFT").is_none()
    }

    fn program_packet_rules(&mut self, rules: &PacketRules) -> Result<bool, proxier::Error> {
        if self.rules.as_ref() == Some(rules) {
            return Ok(false);
        }
        self.rules = Some(rules.clone());
        Ok(true)
    }
}

fn nth(base: Ipv4Addr, n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(base) + n)
}

/// The YAML of Services `range` with their slices; endpoint 0 of Service `flipped` (if any)
/// terminating.
fn file_text(range: std::ops::Range<u32>, flipped: Option<u32>) -> String {
    let mut text = String::new();
    for i in range {
        let vip = nth(Ipv4Addr::new(10, 96, 0, 0), i + 1);
        let _ = write!(
            text,
            "apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: default}}\n\
             spec:\n  clusterIP: {vip}\n  ports:\n  - {{name: http, port: 80, protocol: TCP, targetPort: 8080}}\n---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: svc-{i}-abcde\n  namespace: default\n  labels: {{kubernetes.io/service-name: svc-{i}}}\n\
             addressType: IPv4\nports:\n- {{name: http, port: 8080, protocol: TCP}}\nendpoints:\n"
        );
        for j in 0..ENDPOINTS {
            let address = nth(Ipv4Addr::new(10, 128, 0, 0), i * ENDPOINTS + j);
            let conditions = if flipped == Some(i) && j == 0 {
                "{ready: false, serving: true, terminating: true}"
            } else {
                "{ready: true}"
            };
            let _ = writeln!(
                text,
                "- addresses: [{address}]\n  nodeName: node-{}\n  conditions: {conditions}",
                j % 5
            );
        }
        text.push_str("---\n");
    }
    text
}

/// Writes `services` Services × 10 endpoints into `FILES` files of `dir`.
fn write_scale_input(dir: &Path, services: u32) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let per_file = services.div_ceil(FILES);
    for f in 0..FILES {
        let range = (f * per_file).min(services)..((f + 1) * per_file).min(services);
        std::fs::write(file_path(dir, f), file_text(range, None))?;
    }
    Ok(())
}

fn file_path(dir: &Path, f: u32) -> PathBuf {
    dir.join(format!("services-{f:03}.yaml"))
}

fn rss_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort_unstable();
    times.get(times.len() / 2).copied().unwrap_or_default()
}

/// Where the cluster comes from, and how one flip reaches the source.
#[expect(
    clippy::large_enum_variant,
    reason = "one value for the whole run, never moved after start"
)]
enum Input {
    /// `FILES` files in `dir`, read by the file source.
    Files {
        dir: PathBuf,
        services: u32,
        source: DirectoryWatch,
    },
    /// The fake API server, watched by the Kubernetes source.
    Kube {
        api: FakeApi,
        cluster: ScaleCluster,
        source: KubeSource,
    },
}

impl Input {
    fn files(services: u32) -> Result<Self, Box<dyn std::error::Error>> {
        let dir =
            std::env::temp_dir().join(format!("proxier-scale-{services}-{}", std::process::id()));
        write_scale_input(&dir, services)?;
        let source = DirectoryWatch::new(DirectorySource::new(&dir));
        Ok(Self::Files {
            dir,
            services,
            source,
        })
    }

    /// Serves the cluster from a fake API server on `runtime` and starts the watches.
    fn kube(
        services: u32,
        runtime: &tokio::runtime::Runtime,
    ) -> Result<Self, Box<dyn std::error::Error>> {
        let cluster = ScaleCluster::new(services as usize, ENDPOINTS as usize);
        let api = FakeApi::new();
        cluster.load_into(&api);
        let (address, _acceptor) = runtime.block_on(api.clone().serve());
        let config = kube::Config::new(format!("http://{address}").parse()?);
        let _entered = runtime.enter();
        let client = kube::Client::try_from(config)?;
        let source = KubeSource::start(client, NODE);
        Ok(Self::Kube {
            api,
            cluster,
            source,
        })
    }

    fn node(&self) -> Result<NodeContext, Box<dyn std::error::Error>> {
        Ok(match self {
            Self::Files { .. } => NodeContext {
                name: "node-0".into(),
                node_ips: vec!["192.168.1.10".parse()?],
                zone: None,
            },
            Self::Kube { .. } => NodeContext {
                name: NODE.into(),
                node_ips: vec!["10.0.1.1".parse()?],
                zone: None,
            },
        })
    }

    /// The initial load into `cluster` (the file source's first poll, the watches' lists).
    fn load(
        &mut self,
        cluster: &mut ClusterState,
        runtime: &tokio::runtime::Runtime,
    ) -> Result<(), Box<dyn std::error::Error>> {
        match self {
            Self::Files { source, .. } => {
                source.poll_changes(cluster)?;
            }
            Self::Kube { source, .. } => {
                runtime.block_on(source.wait_until_synced(cluster, Duration::from_secs(10)))?;
            }
        }
        Ok(())
    }

    /// Flip `flip`: one endpoint of one Service ready ⇄ terminating, then polls until the
    /// source has it in `cluster`; returns the time of the poll that saw it.
    fn flip(
        &mut self,
        flip: u32,
        cluster: &mut ClusterState,
        runtime: &tokio::runtime::Runtime,
    ) -> Result<Duration, Box<dyn std::error::Error>> {
        match self {
            Self::Files {
                dir,
                services,
                source,
            } => {
                // Service k of file f: endpoint 0 terminating on odd flips, ready again on
                // even ones.
                let per_file = services.div_ceil(FILES);
                let f = flip % FILES;
                let range = (f * per_file).min(*services)..((f + 1) * per_file).min(*services);
                let flipped = (flip / FILES).is_multiple_of(2).then_some(range.start);
                let tmp = dir.join("flip.tmp~");
                std::fs::write(&tmp, file_text(range, flipped))?;
                std::fs::rename(&tmp, file_path(dir, f))?;
                let t = Instant::now();
                let poll = source.poll_changes(cluster)?;
                assert!(poll.changed, "flip {flip} seen");
                Ok(t.elapsed())
            }
            Self::Kube {
                api,
                cluster: scale,
                source,
            } => {
                let i = (flip as usize * 7_919 + 13) % scale.services();
                scale.flip(i);
                scale.publish(api, i);
                let waited = Instant::now();
                loop {
                    let t = Instant::now();
                    let poll = source.poll_changes(cluster)?;
                    if poll.changed {
                        return Ok(t.elapsed());
                    }
                    if waited.elapsed() > Duration::from_secs(30) {
                        return Err(format!("flip {flip} not seen in 30 s").into());
                    }
                    runtime.block_on(async { tokio::time::sleep(Duration::from_millis(1)).await });
                }
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Files { .. } => format!("in {FILES} files"),
            Self::Kube { .. } => "from the fake API server".to_owned(),
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let services: u32 = args.next().map_or(Ok(10_000), |a| a.parse())?;
    let flips: u32 = args.next().map_or(Ok(20), |a| a.parse())?;
    let kind = args.next().unwrap_or_else(|| "file".to_owned());
    let profiler = std::env::var_os("PROXIER_DHAT").map(|_| dhat::Profiler::new_heap());
    // As `proxier run`: at most two malloc arenas, a trim after the syncs that free a table.
    heap::configure_allocator();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut input = match kind.as_str() {
        "file" => Input::files(services)?,
        "kube" => Input::kube(services, &runtime)?,
        other => return Err(format!("source {other:?}: file or kube").into()),
    };

    let started = Instant::now();
    let mut proxier = Proxier::new(
        Planner::new(input.node()?, Config::default()),
        TableDataplane::default(),
    );
    input.load(proxier.cluster_mut(), &runtime)?;
    let read = started.elapsed();
    let outcome = proxier.full_sync()?;
    heap::release_free_memory();
    println!(
        "start: {services} services x {ENDPOINTS} endpoints {}: {:.2?} (source read {read:.2?}), {} operations, RSS {} KiB",
        input.describe(),
        started.elapsed(),
        outcome.operations,
        rss_kib("VmRSS:")
    );
    let start_rss = rss_kib("VmRSS:");
    let start_heap = profiler.as_ref().map(|_| dhat::HeapStats::get().curr_bytes);

    let (mut polls, mut syncs) = (Vec::new(), Vec::new());
    let mut operations = 0;
    let mut resyncs: Vec<(Duration, Duration, Duration, SyncParts)> = Vec::new();
    for flip in 0..flips {
        polls.push(input.flip(flip, proxier.cluster_mut(), &runtime)?);
        let t = Instant::now();
        let outcome = proxier.incremental_sync();
        syncs.push(t.elapsed());
        operations += outcome.operations;
        if flip % 5 == 4 {
            // The periodic resync as the loop runs it: the read (here a copy of the table) on
            // a blocking thread, then the finish step on the loop.
            let t = Instant::now();
            let read = proxier
                .begin_resync()?
                .ok_or("TableDataplane reads off the loop")?;
            let table = runtime.block_on(runtime.spawn_blocking(read))?;
            let read_time = t.elapsed();
            proxier.finish_resync(table, t)?;
            let finish = t.elapsed() - read_time;
            // Then the repair in slices, as the loop runs them between syncs.
            let mut longest_slice = Duration::ZERO;
            let outcome = loop {
                let slice = Instant::now();
                let done = proxier.repair_slice(REPAIR_SLICE);
                longest_slice = longest_slice.max(slice.elapsed());
                if let Some(outcome) = done {
                    break outcome;
                }
            };
            heap::release_free_memory();
            resyncs.push((read_time, finish, longest_slice, outcome.parts));
        }
    }
    let end_rss = rss_kib("VmRSS:");
    for (read, finish, slice, parts) in &resyncs {
        println!(
            "resync: read (table copy) {read:.2?}; longest step on the loop: finish {finish:.2?}, slice of {REPAIR_SLICE} {slice:.2?}; in all: plan {:.2?}, reconcile {:.2?}, packet rules {:.2?}, operations {:.2?}",
            parts.plan, parts.reconcile, parts.packet_rules, parts.operations
        );
    }
    println!(
        "flips: {flips}, operations {operations}; per flip median: poll {:.2?}, sync {:.2?}; max: poll {:.2?}, sync {:.2?}",
        median(&mut polls.clone()),
        median(&mut syncs.clone()),
        polls.iter().max().copied().unwrap_or_default(),
        syncs.iter().max().copied().unwrap_or_default(),
    );
    println!(
        "RSS: after start {start_rss} KiB, after flips and {} resyncs {end_rss} KiB, peak (VmHWM) {} KiB",
        flips / 5,
        rss_kib("VmHWM:")
    );
    if let Some(start_heap) = start_heap {
        let stats = dhat::HeapStats::get();
        println!(
            "dhat: peak {} bytes in {} blocks; live after start {start_heap} bytes; now {} bytes in {} blocks; total {} bytes",
            stats.max_bytes,
            stats.max_blocks,
            stats.curr_bytes,
            stats.curr_blocks,
            stats.total_bytes
        );
    }
    drop(profiler);
    if let Input::Files { dir, .. } = &input {
        std::fs::remove_dir_all(dir)?;
    }
    Ok(())
}
