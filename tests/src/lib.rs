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

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;

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
pub fn ipvsadm_save(state: &netlink_ipvs::IpvsState) -> std::collections::BTreeSet<String> {
    use netlink_ipvs::{Family, Protocol, ServiceFlags, ServiceKey};
    let mut lines = std::collections::BTreeSet::new();
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
                    std::net::IpAddr::V4(a) => format!("{flag} {a}:{port}"),
                    std::net::IpAddr::V6(a) => format!("{flag} [{a}]:{port}"),
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
                netlink_ipvs::ForwardMethod::Masq => "-m",
                netlink_ipvs::ForwardMethod::Route | netlink_ipvs::ForwardMethod::Local => "-g",
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
