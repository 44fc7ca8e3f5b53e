//! Encoding and parsing throughput of netlink-ipvs messages (one core).
//!
//! `cargo bench -p proxier-benches --bench netlink_ipvs`; criterion reports time per batch of
//! 1,000 operations and elements per second.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark set-up")]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use netlink_ipvs::{
    decode_message, encode_request, encode_window, IpvsOperation, Protocol, RealServer, ServiceKey,
    VirtualServer, WindowLimits,
};

const OPERATIONS: usize = 1000;

fn operations() -> Vec<IpvsOperation> {
    (0..OPERATIONS)
        .map(|i| {
            let service = ServiceKey::Address {
                protocol: Protocol::Tcp,
                address: IpAddr::V4(Ipv4Addr::from(0x0a60_0000 + i as u32)),
                port: 80,
            };
            if i % 11 == 0 {
                IpvsOperation::AddVirtualServer(VirtualServer::new(service))
            } else {
                let rs = RealServer::masq(IpAddr::V4(Ipv4Addr::from(0x0af4_0000 + i as u32)), 8080);
                IpvsOperation::AddRealServer {
                    service,
                    real_server: rs,
                }
            }
        })
        .collect()
}

fn encode(c: &mut Criterion) {
    let ops = operations();
    let mut group = c.benchmark_group("netlink_ipvs");
    group.throughput(Throughput::Elements(OPERATIONS as u64));
    group.bench_function("encode 1000 ops in windows", |b| {
        b.iter(|| {
            let mut first = 0;
            while first < ops.len() {
                let window =
                    encode_window(0x1c, black_box(&ops), first, 1, WindowLimits::default());
                first += window.count;
                black_box(window.bytes);
            }
        })
    });
    let encoded: Vec<Vec<u8>> = ops
        .iter()
        .map(|op| {
            let mut bytes = Vec::new();
            encode_request(0x1c, op.to_message(), 5, 1, &mut bytes);
            bytes
        })
        .collect();
    group.bench_function("parse 1000 messages", |b| {
        b.iter(|| {
            for bytes in &encoded {
                black_box(decode_message(black_box(bytes)).unwrap());
            }
        })
    });
    group.finish();
}

criterion_group!(benches, encode);
criterion_main!(benches);
