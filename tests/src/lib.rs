//! Helpers for real-kernel tests: a fresh network namespace per test, and the outside witnesses
//! (`ipvsadm`, `conntrack`, `nft`, `ip`) run by absolute path.
//!
//! These tests run inside the VM that `cargo xtask vmtest` boots (a kernel with IPVS); they are
//! excluded from the host run.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test helpers panic on failure"
)]

use std::collections::BTreeSet;
use std::fs::File;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::process::Command;

use netlink_ipvs::{
    Family, ForwardMethod, IpvsOperation, IpvsState, Protocol, RealServer, ServiceFlags,
    ServiceKey, ServiceState, VirtualServer,
};

/// While alive, the current thread is in a new, empty network namespace with `lo` up.
/// Dropping it returns the thread to the namespace it came from.
pub struct NetNs {
    previous: File,
}

impl NetNs {
    /// Moves the calling thread into a new network namespace.
    pub fn fresh() -> Self {
        let previous = File::open("/proc/thread-self/ns/net").expect("open current netns");
        // SAFETY: unshare has no memory-safety preconditions; it affects only this thread's netns.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        );
        witness(IP, &["link", "set", "lo", "up"]);
        Self { previous }
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // SAFETY: the fd is a valid netns fd owned by `self.previous`.
        let rc = unsafe { libc::setns(self.previous.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            eprintln!("setns back failed: {}", std::io::Error::last_os_error());
        }
    }
}

/// `ipvsadm`, the outside witness of IPVS state.
pub const IPVSADM: &str = "/usr/sbin/ipvsadm";
/// `conntrack`, the outside witness of the conntrack table.
pub const CONNTRACK: &str = "/usr/sbin/conntrack";
/// `nft`, the outside witness of nftables.
pub const NFT: &str = "/usr/sbin/nft";
/// iproute2's `ip` (not busybox's).
pub const IP: &str = "/usr/sbin/ip";

/// Runs a witness tool in the caller's namespace and returns its stdout; panics if it fails.
pub fn witness(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {tool}: {e}"));
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The lines `ipvsadm -Sn` prints for `state` (as a set: ipvsadm's order is the kernel's hash order).
pub fn ipvsadm_save(state: &IpvsState) -> BTreeSet<String> {
    let mut lines = BTreeSet::new();
    for s in state.services.values() {
        let service = match s.service.key {
            ServiceKey::Address {
                protocol,
                address,
                port,
            } => {
                let flag = match protocol {
                    Protocol::Tcp => "-t",
                    Protocol::Udp => "-u",
                    Protocol::Sctp => "--sctp-service",
                };
                match address {
                    IpAddr::V4(a) => format!("{flag} {a}:{port}"),
                    IpAddr::V6(a) => format!("{flag} [{a}]:{port}"),
                }
            }
            ServiceKey::FwMark {
                mark,
                family: Family::V4,
            } => format!("-f {mark}"),
            ServiceKey::FwMark {
                mark,
                family: Family::V6,
            } => format!("-f {mark} -6"),
        };
        let mut line = format!("-A {service} -s {}", s.service.scheduler);
        if s.service.flags.contains(ServiceFlags::PERSISTENT) {
            line.push_str(&format!(" -p {}", s.service.timeout));
        }
        lines.insert(line);
        for rs in s.real_servers.values() {
            let method = match rs.forward {
                ForwardMethod::Masq => "-m",
                ForwardMethod::Route | ForwardMethod::Local => "-g",
                _ => "-i",
            };
            lines.insert(format!(
                "-a {service} -r {} {method} -w {}",
                rs.key, rs.weight
            ));
        }
    }
    lines
}

/// `count` virtual servers with `per_service` real servers each: TCP/UDP/SCTP, IPv4 and IPv6,
/// a few persistent ones, schedulers rr/wrr/lc, and (when `with_fwmark`) one fwmark service.
pub fn sample(count: usize, per_service: usize, with_fwmark: bool) -> IpvsState {
    let mut state = IpvsState::default();
    for i in 0..count {
        let v6 = i % 5 == 4;
        let key = if with_fwmark && i == count - 1 {
            let family = if v6 { Family::V6 } else { Family::V4 };
            ServiceKey::FwMark { mark: 7, family }
        } else {
            let address: IpAddr = if v6 {
                format!("fd00::{:x}", i + 1)
                    .parse()
                    .expect("generated address")
            } else {
                format!("10.96.{}.{}", i / 250, i % 250 + 1)
                    .parse()
                    .unwrap()
            };
            ServiceKey::Address {
                protocol: [Protocol::Tcp, Protocol::Udp, Protocol::Sctp][i % 3],
                address,
                port: 80 + (i % 100) as u16,
            }
        };
        let mut service = VirtualServer::new(key);
        service.scheduler = ["rr", "wrr", "lc"][i % 3].to_owned();
        if i % 10 == 3 {
            service.flags = ServiceFlags::PERSISTENT;
            service.timeout = 10800;
        }
        let real_servers = (0..per_service)
            .map(|j| {
                let address: IpAddr = if v6 {
                    format!("fd01::{:x}:{:x}", i + 1, j + 1)
                        .parse()
                        .expect("generated address")
                } else {
                    format!("10.{}.{}.{}", 100 + i / 250, i % 250, j + 1)
                        .parse()
                        .unwrap()
                };
                let mut rs = RealServer::masq(address, 8080);
                rs.weight = 1 + (j % 3) as u32;
                (rs.key, rs)
            })
            .collect();
        state.services.insert(
            key,
            ServiceState {
                service,
                real_servers,
            },
        );
    }
    state
}

/// The operations that create `state` from nothing.
pub fn create_ops(state: &IpvsState) -> Vec<IpvsOperation> {
    let mut ops = Vec::new();
    for s in state.services.values() {
        ops.push(IpvsOperation::AddService(s.service.clone()));
        ops.extend(
            s.real_servers
                .values()
                .map(|rs| IpvsOperation::AddDestination {
                    service: s.service.key,
                    real_server: *rs,
                }),
        );
    }
    ops
}

/// A small routed topology for real-packet tests: the calling thread's (fresh) namespace is the
/// router, where IPVS lives; each host is a named namespace joined to it by a veth pair, with a
/// default route back through the router. Namespaces are deleted on drop.
pub struct Lab {
    tag: String,
    hosts: Vec<String>,
}

impl Lab {
    /// A lab whose namespace names start with `tag` (keep it short and unique per test).
    pub fn new(tag: &str) -> Self {
        Self {
            tag: tag.to_owned(),
            hosts: Vec::new(),
        }
    }

    /// Adds host `name` at `host_ip` on the /24 shared with the router's `router_ip`; returns
    /// the host's namespace name.
    pub fn host(&mut self, name: &str, host_ip: &str, router_ip: &str) -> String {
        let netns = format!("{}-{name}", self.tag);
        let router_side = format!("v{}{}", self.tag, self.hosts.len());
        witness(IP, &["netns", "add", &netns]);
        self.hosts.push(netns.clone());
        witness(
            IP,
            &[
                "link",
                "add",
                &router_side,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &netns,
            ],
        );
        witness(
            IP,
            &[
                "addr",
                "add",
                &format!("{router_ip}/24"),
                "dev",
                &router_side,
            ],
        );
        witness(IP, &["link", "set", &router_side, "up"]);
        witness(
            IP,
            &[
                "-n",
                &netns,
                "addr",
                "add",
                &format!("{host_ip}/24"),
                "dev",
                "eth0",
            ],
        );
        witness(IP, &["-n", &netns, "link", "set", "eth0", "up"]);
        witness(IP, &["-n", &netns, "link", "set", "lo", "up"]);
        witness(
            IP,
            &["-n", &netns, "route", "add", "default", "via", router_ip],
        );
        netns
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for netns in &self.hosts {
            let _ = Command::new(IP).args(["netns", "del", netns]).status();
        }
    }
}

/// Runs `work` on a new thread inside the named namespace `netns`.
pub fn in_netns<T: Send + 'static>(
    netns: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{netns}");
    std::thread::spawn(move || {
        let target = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        // SAFETY: setns on a valid netns fd affects only this new thread.
        let rc = unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        work()
    })
}

/// A UDP server in `netns` on `port` answering every datagram with `name` until `stop` is set.
pub fn udp_responder(
    netns: &str,
    port: u16,
    name: &'static str,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    in_netns(netns, move || {
        let socket = std::net::UdpSocket::bind(("0.0.0.0", port)).expect("bind udp");
        socket
            .set_read_timeout(Some(std::time::Duration::from_millis(50)))
            .expect("timeout");
        let mut buffer = [0u8; 512];
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            if let Ok((_, peer)) = socket.recv_from(&mut buffer) {
                let _ = socket.send_to(name.as_bytes(), peer);
            }
        }
    })
}

/// A TCP server in `netns` on `port` writing `name` to every connection until `stop` is set.
pub fn tcp_responder(
    netns: &str,
    port: u16,
    name: &'static str,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    in_netns(netns, move || {
        use std::io::Write;
        let listener = std::net::TcpListener::bind(("0.0.0.0", port)).expect("bind tcp");
        listener.set_nonblocking(true).expect("nonblocking");
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    let _ = stream.write_all(name.as_bytes());
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
            }
        }
    })
}

/// The `proxier` binary inside the VM (put there by `cargo xtask vmtest`).
pub const PROXIER: &str = "/usr/local/bin/proxier";
