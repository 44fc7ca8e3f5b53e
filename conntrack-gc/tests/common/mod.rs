//! Shared helpers for the host netns tests: a fresh network namespace for the calling thread,
//! entry builders, and the `conntrack` CLI as outside witness (by absolute path).
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers panic on failure; each test binary uses a subset"
)]

use std::collections::BTreeSet;
use std::fs::File;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::process::Command;

use conntrack_gc::ctnetlink::{NewEntry, Tuple};

/// `conntrack`, the outside witness (never used by the library).
pub const CONNTRACK: &str = "/usr/sbin/conntrack";
/// `nft`, used by tests to install a DNAT rule.
pub const NFT: &str = "/usr/sbin/nft";
/// iproute2 `ip`.
pub const IP: &str = "/usr/sbin/ip";

/// While alive, the current thread is in a new, empty network namespace.
pub struct NetNs {
    previous: File,
}

impl NetNs {
    pub fn fresh() -> Self {
        let previous = File::open("/proc/thread-self/ns/net").expect("open current netns");
        // SAFETY: unshare has no memory-safety preconditions; it changes this thread's netns.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "unshare: {}", std::io::Error::last_os_error());
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

/// Runs a tool (absolute path) in the calling thread's namespace; panics on failure.
pub fn run(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {tool}: {e}"));
    assert!(
        out.status.success(),
        "{tool} {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `conntrack -L` for IPv4 and IPv6 (the CLI lists one family at a time).
pub fn witness_listing() -> String {
    let mut text = run(CONNTRACK, &["-L", "-f", "ipv4"]);
    text.push_str(&run(CONNTRACK, &["-L", "-f", "ipv6"]));
    text
}

/// The original-direction source ports in a listing: the tests give each entry a unique one.
pub fn source_ports(listing: &str) -> BTreeSet<u16> {
    listing
        .lines()
        .filter_map(|line| {
            let field = line.split_whitespace().find(|w| w.starts_with("sport="))?;
            field["sport=".len()..].parse().ok()
        })
        .collect()
}

/// Prints the witness listing under a label and returns the source ports in it.
pub fn witness(label: &str) -> BTreeSet<u16> {
    let listing = witness_listing();
    println!("--- conntrack -L {label} ---\n{listing}");
    source_ports(&listing)
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A NAT'ed-looking entry: client:sport → vip:vport, replied by endpoint:eport.
pub fn nat_entry(
    protocol: u8,
    client: &str,
    sport: u16,
    vip: &str,
    vport: u16,
    endpoint: &str,
    eport: u16,
) -> NewEntry {
    let orig = Tuple {
        src: ip(client),
        dst: ip(vip),
        protocol,
        src_port: Some(sport),
        dst_port: Some(vport),
    };
    let reply = Tuple {
        src: ip(endpoint),
        dst: ip(client),
        protocol,
        src_port: Some(eport),
        dst_port: Some(sport),
    };
    NewEntry {
        orig,
        reply,
        timeout: 600,
        zone: 0,
    }
}
