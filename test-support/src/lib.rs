//! Test support for proxier's workspace, in one place: a fresh network namespace per test
//! ([`netns`]), the outside witnesses run by absolute path ([`mod@witness`]), host knobs
//! ([`sysctl`]), a routed lab of namespaces joined by veths ([`lab`]), UDP and TCP clients,
//! servers and load generators ([`udp`], [`tcp`]), the `proxier` binary as a child process
//! ([`process`]), cluster files ([`yaml`]), a fake Kubernetes API server ([`fake_api`]), the
//! scale benchmarks' cluster ([`scale_cluster`]) and
//! kube-proxy's host set-up for the baseline runs of the incident tests ([`kube_proxy`]).
//!
//! It depends on no crate of the workspace (conntrack-gc's tests dev-depend on it); what needs
//! proxier's or netlink-ipvs's types lives in `tests/src/lib.rs`. The flat re-exports below are
//! what most tests import.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test support panics on failure, as the tests it serves do"
)]

pub mod fake_api;
pub mod kube_proxy;
pub mod lab;
pub mod netns;
pub mod process;
pub mod scale_cluster;
pub mod scrape;
pub mod sysctl;
pub mod tcp;
pub mod udp;
pub mod witness;
pub mod yaml;

pub use lab::Lab;
pub use netns::{in_netns, NetNs};
pub use process::{http_get, run_two_backend_dns, ProxierProcess, PROXIER};
pub use sysctl::enable_forwarding;
pub use tcp::{tcp_connect_from, tcp_port_load, tcp_read, tcp_reads, tcp_responder, TcpStats};
pub use udp::{tally, udp_ask, udp_echo, udp_load, udp_query, udp_responder, Query};
pub use witness::{
    wait_for, wait_for_ipvs, witness, CONNTRACK, IP, IPTABLES_LEGACY, IPTABLES_LEGACY_SAVE,
    IPTABLES_NFT, IPTABLES_NFT_SAVE, IPVSADM, NFT,
};
pub use yaml::{service_yaml, slice_yaml, source_dir, write_atomically, Endpoint, DNS_PORTS};
