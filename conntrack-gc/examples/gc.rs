//! conntrack-gc alone: flush the entries of one service by filter over ctnetlink, then size
//! the table with kube-proxy's limits (never lowering a host value) and print both reports.
//!
//! Needs `CAP_NET_ADMIN` (the flush acts on the calling thread's network namespace) and, for
//! the sizing, write access to `/proc/sys/net/netfilter` (a raise only):
//! `ip netns exec NAME cargo run -p conntrack-gc --example gc -- udp 10.96.0.10 53`.
//! The VM test `tests/tests/examples.rs` runs it against entries it created.

use std::net::IpAddr;

use conntrack_gc::sizing::{apply_sizing, cpu_count, ConntrackConfig, FsRoot, SizingReport};
use conntrack_gc::{Conntrack, ConntrackFilter, FlushReport, Protocol};

/// kube-proxy's table limits (`maxPerCore` 32768, `min` 131072) and no timeout: timeouts are
/// written only when configured (incident I7).
pub fn table_limits() -> ConntrackConfig {
    let defaults = ConntrackConfig::kube_proxy_defaults();
    ConntrackConfig {
        max_per_core: defaults.max_per_core,
        min: defaults.min,
        ..ConntrackConfig::default()
    }
}

/// Flushes the flows to `ip:port` of `protocol` (a stale service VIP), then sizes the table
/// under `root`.
pub fn flush_and_size(
    protocol: Protocol,
    ip: IpAddr,
    port: u16,
    root: &FsRoot,
) -> Result<(FlushReport, SizingReport), conntrack_gc::Error> {
    let flushed = Conntrack::open()?.flush(&[ConntrackFilter::service_ip(protocol, ip, port)])?;
    let sized = apply_sizing(root, &table_limits(), cpu_count(&FsRoot::system()))?;
    Ok((flushed, sized))
}

fn parse(args: &[String]) -> Option<(Protocol, IpAddr, u16)> {
    let [protocol, ip, port] = args else {
        return Some((Protocol::Udp, "10.96.0.10".parse().ok()?, 53));
    };
    let protocol = match protocol.as_str() {
        "udp" => Protocol::Udp,
        "tcp" => Protocol::Tcp,
        "sctp" => Protocol::Sctp,
        _ => return None,
    };
    Some((protocol, ip.parse().ok()?, port.parse().ok()?))
}

/// `gc [udp|tcp|sctp VIP PORT]` (default: udp 10.96.0.10 53).
pub fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (protocol, ip, port) = parse(&args).ok_or("usage: gc [udp|tcp|sctp VIP PORT]")?;
    let (flushed, sized) = flush_and_size(protocol, ip, port, &FsRoot::system())?;
    println!(
        "flush: examined {} matched {} deleted {}",
        flushed.examined, flushed.matched, flushed.deleted
    );
    print!("sizing:\n{sized}");
    Ok(())
}
