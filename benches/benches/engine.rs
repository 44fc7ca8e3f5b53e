//! Engine sync latency at scale (pure: plan + reconcile, no kernel).
//!
//! For 1k, 10k and 50k Services × 10 endpoints:
//! - `cold`: plan everything and reconcile against an empty kernel (start-up);
//! - `flip`: one endpoint flips ready ↔ terminating; replan the dirty Service, reconcile the
//!   changed keys, record the result in the kernel mirror (the steady-state sync path);
//! - `resync`: full reconcile of an unchanged node (periodic resync): zero operations.
//!
//! Op counts are printed once per size. Run one size with `cargo bench -p proxier-benches -- 10000`.

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use netlink_ipvs::Protocol;
use proxier::config::Config;
use proxier::fixtures::{ep, ip, service, terminating};
use proxier::model::{ClusterState, EndpointSlice, Service};
use proxier::plan::{NodeContext, Planner};
use proxier::reconcile::{reconcile, reconcile_changes, Observed, Op, Terminations};

const ENDPOINTS: u32 = 10;

/// The `n`-th address after `base`, as text for the fixtures.
fn nth(base: Ipv4Addr, n: u32) -> String {
    Ipv4Addr::from(u32::from(base) + n).to_string()
}

/// Service `svc-i`: ClusterIP 10.96.0.0 + i + 1, port `http` 80/TCP.
fn bench_service(i: u32) -> Service {
    let cluster_ip = nth(Ipv4Addr::new(10, 96, 0, 0), i + 1);
    service(
        &format!("svc-{i}"),
        &[&cluster_ip],
        &[("http", Protocol::Tcp, 80)],
    )
}

/// The slice of `svc-i`: ten endpoints from 10.128.0.0 + 10 i on nodes node-0..node-4, target
/// port 8080; the first one terminating (still serving) when `terminating_first`.
fn bench_slice(i: u32, terminating_first: bool) -> EndpointSlice {
    let endpoints = (0..ENDPOINTS)
        .map(|j| {
            let address = nth(Ipv4Addr::new(10, 128, 0, 0), i * ENDPOINTS + j);
            let node = format!("node-{}", j % 5);
            if terminating_first && j == 0 {
                terminating(&address, &node, true)
            } else {
                ep(&address, &node)
            }
        })
        .collect();
    let svc = format!("svc-{i}");
    let ports = [("http", Protocol::Tcp, 8080)];
    proxier::fixtures::slice(&svc, &format!("{svc}-abcde"), &ports, endpoints)
}

fn cluster(services: u32) -> ClusterState {
    proxier::fixtures::cluster(
        (0..services).map(bench_service).collect(),
        (0..services).map(|i| bench_slice(i, false)).collect(),
    )
}

fn planner() -> Planner {
    let node = NodeContext {
        name: "node-0".into(),
        node_ips: vec![ip("192.168.1.10")],
        zone: None,
    };
    Planner::new(node, Config::default())
}

/// Start-up: plans all of `cluster` and reconciles against an empty kernel; the operations.
fn cold(cluster: &mut ClusterState) -> Vec<Op> {
    let mut planner = planner();
    planner.plan_all(cluster);
    reconcile(
        planner.desired(),
        &Observed::default(),
        &Terminations::new(),
    )
}

/// A node synced to `cluster`: planner, kernel mirror.
fn synced(cluster: &mut ClusterState) -> (Planner, Observed) {
    let mut planner = planner();
    planner.plan_all(cluster);
    let mut observed = Observed::default();
    for op in reconcile(planner.desired(), &observed, &Terminations::new()) {
        // Only setup: every op of a cold reconcile applies to an empty mirror.
        observed.apply(&op).ok();
    }
    (planner, observed)
}

fn engine(c: &mut Criterion) {
    for services in [1_000u32, 10_000, 50_000] {
        let mut group = c.benchmark_group(format!("{services}x{ENDPOINTS}"));
        group.sample_size(10);
        group.measurement_time(Duration::from_secs(if services > 10_000 { 20 } else { 5 }));

        let mut base = cluster(services);
        let ops = cold(&mut base);
        println!("{services}x{ENDPOINTS} cold: {} ops", ops.len());
        group.bench_function(BenchmarkId::new("cold", "plan+reconcile"), |b| {
            b.iter_batched(
                || base.clone(),
                |mut cluster| black_box(cold(&mut cluster).len()),
                criterion::BatchSize::LargeInput,
            )
        });

        let (mut planner, mut observed) = synced(&mut base);
        let terminations = Terminations::new();
        let flipped = services / 2;
        // Both versions of the flipped slice built once: the bench measures the sync, not the
        // fixture.
        let versions = [bench_slice(flipped, false), bench_slice(flipped, true)];
        let mut flip = |cluster: &mut ClusterState, terminating: bool| {
            cluster.upsert_slice(versions[usize::from(terminating)].clone());
            let changes = planner.replan(cluster);
            let ops = reconcile_changes(planner.desired(), &observed, &terminations, &changes);
            for op in &ops {
                // Bench bookkeeping: keep the mirror in step so the next flip is a change.
                observed.apply(op).ok();
            }
            ops
        };
        let ops = flip(&mut base, true);
        println!(
            "{services}x{ENDPOINTS} flip ready->terminating: {} ops: {:?}",
            ops.len(),
            ops.iter().map(ToString::to_string).collect::<Vec<_>>()
        );
        let ops = flip(&mut base, false);
        println!(
            "{services}x{ENDPOINTS} flip terminating->ready: {} ops",
            ops.len()
        );
        let mut terminating = false;
        group.bench_function(BenchmarkId::new("flip", "one endpoint"), |b| {
            b.iter(|| {
                terminating = !terminating;
                let ops = flip(&mut base, terminating);
                assert_eq!(ops.len(), 1);
                black_box(ops)
            })
        });
        if terminating {
            flip(&mut base, false);
        }

        let (planner, observed) = synced(&mut base);
        let ops = reconcile(planner.desired(), &observed, &Terminations::new());
        println!("{services}x{ENDPOINTS} no-op resync: {} ops", ops.len());
        assert!(ops.is_empty());
        group.bench_function(BenchmarkId::new("resync", "no-op full reconcile"), |b| {
            b.iter(|| {
                black_box(reconcile(
                    planner.desired(),
                    &observed,
                    &Terminations::new(),
                ))
            })
        });
        group.finish();
    }
}

criterion_group!(benches, engine);
criterion_main!(benches);
