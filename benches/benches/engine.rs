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
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use netlink_ipvs::{Family, Protocol};
use proxier::config::Config;
use proxier::model::{
    ClusterState, Endpoint, EndpointPort, EndpointSlice, Service, ServiceName, ServicePort,
    ServicePortName, SessionAffinity, TrafficPolicy,
};
use proxier::plan::{NodeContext, Planner};
use proxier::reconcile::{reconcile, reconcile_changes, Observed, Terminations};

const ENDPOINTS: u32 = 10;

fn v4(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(n))
}

fn name(i: u32) -> ServiceName {
    ServiceName {
        namespace: "bench".into(),
        name: format!("svc-{i}"),
    }
}

fn service(i: u32) -> Service {
    let cluster_ip = v4(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + i + 1);
    Service {
        name: name(i),
        ports: vec![ServicePort {
            name: ServicePortName {
                service: name(i),
                port: "http".into(),
                protocol: Protocol::Tcp,
            },
            port: 80,
            node_port: None,
            cluster_ips: vec![cluster_ip],
            external_ips: vec![],
            load_balancer_ips: vec![],
            load_balancer_source_ranges: vec![],
            affinity: SessionAffinity::None,
            internal_policy: TrafficPolicy::Cluster,
            external_policy: TrafficPolicy::Cluster,
        }],
    }
}

fn slice(i: u32, terminating_first: bool) -> EndpointSlice {
    let base = u32::from(Ipv4Addr::new(10, 128, 0, 0)) + i * ENDPOINTS;
    let mut endpoints: Vec<Endpoint> = (0..ENDPOINTS)
        .map(|j| Endpoint {
            node: Some(format!("node-{}", j % 5)),
            ..Endpoint::ready(v4(base + j))
        })
        .collect();
    if terminating_first {
        endpoints[0].ready = false;
        endpoints[0].terminating = true;
    }
    EndpointSlice {
        name: format!("svc-{i}-abcde"),
        service: name(i),
        family: Family::V4,
        ports: vec![EndpointPort {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: 8080,
        }],
        endpoints,
    }
}

fn cluster(services: u32) -> ClusterState {
    let mut cluster = ClusterState::new();
    for i in 0..services {
        cluster.upsert_service(service(i));
        cluster.upsert_slice(slice(i, false));
    }
    cluster
}

fn planner() -> Planner {
    let node = NodeContext {
        name: "node-0".into(),
        node_ips: vec![v4(u32::from(Ipv4Addr::new(192, 168, 1, 10)))],
        zone: None,
    };
    Planner::new(node, Config::default())
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
        {
            let mut planner = planner();
            planner.plan_all(&mut base);
            let ops = reconcile(
                planner.desired(),
                &Observed::default(),
                &Terminations::new(),
            );
            println!("{services}x{ENDPOINTS} cold: {} ops", ops.len());
        }
        group.bench_function(BenchmarkId::new("cold", "plan+reconcile"), |b| {
            b.iter_batched(
                || base.clone(),
                |mut cluster| {
                    let mut planner = planner();
                    planner.plan_all(&mut cluster);
                    let ops = reconcile(
                        planner.desired(),
                        &Observed::default(),
                        &Terminations::new(),
                    );
                    black_box(ops.len())
                },
                criterion::BatchSize::LargeInput,
            )
        });

        let (mut planner, mut observed) = synced(&mut base);
        let terminations = Terminations::new();
        let flipped = services / 2;
        let mut flip = |cluster: &mut ClusterState, terminating: bool| {
            cluster.upsert_slice(slice(flipped, terminating));
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
