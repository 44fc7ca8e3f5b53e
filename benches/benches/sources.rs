//! The per-change path of each source at 10,000 Services × 10 endpoints (issue 15): one
//! endpoint flips ready ⇄ terminating, and the source's `poll_changes` plus the engine's
//! `incremental_sync` on the `FakeDataplane` carry it to the (fake) kernel.
//!
//! - `file`: `DirectoryWatch` over 100 files of 100 Services; the flip replaces one file (a
//!   temporary file renamed over it, outside the timed part);
//! - `kube`: `KubeSource` fed one watch event (an EndpointSlice `Apply`, queued outside the
//!   timed part), as the watcher task would deliver it.
//!
//! Both assert exactly one operation per flip. Run one with `cargo bench -p proxier-benches
//! --bench sources -- file`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark set-up")]

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use k8s_openapi::api::discovery::v1 as discovery;
use kube::runtime::watcher::Event;
use proxier::config::Config;
use proxier::dataplane::FakeDataplane;
use proxier::fixtures::ip;
use proxier::plan::{NodeContext, Planner};
use proxier::runtime::Proxier;
use proxier::source::kube::{KubeSource, WatchEvent};
use proxier::source::{DirectorySource, DirectoryWatch, Source};
use proxier_test_support::fake_api::render;
use proxier_test_support::scale_cluster::{ScaleCluster, NODE};
use tokio::sync::mpsc;

const SERVICES: usize = 10_000;
const ENDPOINTS: usize = 10;

fn proxier() -> Proxier<FakeDataplane> {
    let node = NodeContext {
        name: NODE.into(),
        node_ips: vec![ip("10.0.1.1")],
        zone: None,
    };
    Proxier::new(
        Planner::new(node, Config::default()),
        FakeDataplane::default(),
    )
}

/// The Service whose endpoint 0 the `k`-th flip turns (spread over the cluster).
fn flipped(k: usize) -> usize {
    (k * 7_919 + 13) % SERVICES
}

/// One poll of `source` then an incremental sync: the operations it sent.
fn carry(source: &mut impl Source, proxier: &mut Proxier<FakeDataplane>) -> usize {
    let poll = source.poll_changes(proxier.cluster_mut()).unwrap();
    assert!(poll.changed, "the flip was seen");
    let outcome = proxier.incremental_sync();
    assert_eq!(outcome.failed, 0);
    outcome.operations
}

fn file_source(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("proxier-bench-sources-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut cluster = ScaleCluster::new(SERVICES, ENDPOINTS);
    cluster.write_files(&dir);
    let mut source = DirectoryWatch::new(DirectorySource::new(dir.clone()));
    let mut proxier = proxier();
    source.poll_changes(proxier.cluster_mut()).unwrap();
    let outcome = proxier.full_sync().unwrap();
    println!(
        "file source {SERVICES}x{ENDPOINTS} in {} files: initial sync {} ops",
        cluster.files(),
        outcome.operations
    );

    let mut group = c.benchmark_group(format!("sources {SERVICES}x{ENDPOINTS}"));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(10));
    let mut k = 0;
    group.bench_function(BenchmarkId::new("file", "one file of 100 replaced"), |b| {
        b.iter_batched(
            || {
                k += 1;
                let i = flipped(k);
                cluster.flip(i);
                cluster.rewrite_file_of(&dir, i);
            },
            |()| {
                let operations = carry(&mut source, &mut proxier);
                assert_eq!(operations, 1);
                black_box(operations)
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
    let _ = std::fs::remove_dir_all::<PathBuf>(dir);
}

/// Service `i`'s EndpointSlice as the watcher would deliver it.
fn slice(cluster: &ScaleCluster, i: usize) -> discovery::EndpointSlice {
    serde_json::from_str(&render(&cluster.slice_json(i), 1)).unwrap()
}

fn kube_source(c: &mut Criterion) {
    let mut cluster = ScaleCluster::new(SERVICES, ENDPOINTS);
    // The initial lists fit the queue at once: 2 x (Init, objects, InitDone) + the Node's.
    let (sender, receiver) = mpsc::channel(2 * SERVICES + 16);
    let mut source = KubeSource::from_channel(receiver);
    let send = |event| sender.try_send(event).unwrap();
    send(WatchEvent::Service(Event::Init));
    for i in 0..SERVICES {
        let service = render(&ScaleCluster::service_json(i), 1);
        send(WatchEvent::Service(Event::InitApply(
            serde_json::from_str(&service).unwrap(),
        )));
    }
    send(WatchEvent::Service(Event::InitDone));
    send(WatchEvent::EndpointSlice(Event::Init));
    for i in 0..SERVICES {
        send(WatchEvent::EndpointSlice(Event::InitApply(slice(
            &cluster, i,
        ))));
    }
    send(WatchEvent::EndpointSlice(Event::InitDone));
    send(WatchEvent::Node(Event::Init));
    send(WatchEvent::Node(Event::InitDone));
    let mut proxier = proxier();
    source.poll_changes(proxier.cluster_mut()).unwrap();
    let outcome = proxier.full_sync().unwrap();
    println!(
        "kube source {SERVICES}x{ENDPOINTS}: initial sync {} ops",
        outcome.operations
    );

    let mut group = c.benchmark_group(format!("sources {SERVICES}x{ENDPOINTS}"));
    group.sample_size(50);
    let mut k = 0;
    group.bench_function(BenchmarkId::new("kube", "one EndpointSlice event"), |b| {
        b.iter_batched(
            || {
                k += 1;
                let i = flipped(k);
                cluster.flip(i);
                send(WatchEvent::EndpointSlice(Event::Apply(slice(&cluster, i))));
            },
            |()| {
                let operations = carry(&mut source, &mut proxier);
                assert_eq!(operations, 1);
                black_box(operations)
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, file_source, kube_source);
criterion_main!(benches);
