//! The outside witnesses (`ipvsadm`, `conntrack`, `nft`, `ip`, both iptables flavours), run by
//! absolute path so that they work with `PATH` empty, and polling until they agree.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `ipvsadm`, the outside witness of IPVS state.
pub const IPVSADM: &str = "/usr/sbin/ipvsadm";
/// `conntrack`, the outside witness of the conntrack table.
pub const CONNTRACK: &str = "/usr/sbin/conntrack";
/// `nft`, the outside witness of nftables.
pub const NFT: &str = "/usr/sbin/nft";
/// iproute2's `ip` (not busybox's).
pub const IP: &str = "/usr/sbin/ip";
/// `iptables-legacy` (x_tables, the flavour of older container images).
pub const IPTABLES_LEGACY: &str = "/usr/sbin/iptables-legacy";
/// `iptables-nft` (the nf_tables-backed flavour of current hosts).
pub const IPTABLES_NFT: &str = "/usr/sbin/iptables-nft";
/// `iptables-legacy-save`.
pub const IPTABLES_LEGACY_SAVE: &str = "/usr/sbin/iptables-legacy-save";
/// `iptables-nft-save`.
pub const IPTABLES_NFT_SAVE: &str = "/usr/sbin/iptables-nft-save";

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

/// Runs each of `rules` (whitespace-separated arguments) through `tool`.
pub fn witness_each(tool: &str, rules: &[&str]) {
    for rule in rules {
        witness(tool, &rule.split_whitespace().collect::<Vec<_>>());
    }
}

/// Feeds `script` to `nft -f -`; panics if nft fails.
pub fn nft_script(script: &str) {
    let mut child = Command::new(NFT)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn nft");
    child
        .stdin
        .take()
        .expect("stdin piped")
        .write_all(script.as_bytes())
        .expect("write the nft script");
    assert!(
        child.wait().expect("wait nft").success(),
        "nft failed:\n{script}"
    );
}

/// `conntrack -L` for IPv4 and IPv6 (the CLI lists one family at a time).
pub fn conntrack_listing() -> String {
    let mut text = witness(CONNTRACK, &["-L", "-f", "ipv4"]);
    text.push_str(&witness(CONNTRACK, &["-L", "-f", "ipv6"]));
    text
}

/// The original-direction source ports in a `conntrack -L` listing.
pub fn source_ports(listing: &str) -> BTreeSet<u16> {
    listing
        .lines()
        .filter_map(|line| {
            let field = line.split_whitespace().find(|w| w.starts_with("sport="))?;
            field["sport=".len()..].parse().ok()
        })
        .collect()
}

/// Prints the whole conntrack table under `label` and returns the source ports in it (tests
/// that give each entry a unique source port name entries by it).
pub fn conntrack_source_ports(label: &str) -> BTreeSet<u16> {
    let listing = conntrack_listing();
    println!("--- conntrack -L {label} ---\n{listing}");
    source_ports(&listing)
}

/// Polls `check` every 20 ms until it returns `Ok`, and returns that; panics with `what` and
/// the last `Err` text once `timeout` has passed.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen:\n{last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Waits until `ipvsadm -Ln` satisfies `check` and returns that listing.
pub fn wait_for_ipvs(what: &str, timeout: Duration, check: impl Fn(&str) -> bool) -> String {
    wait_for(what, timeout, || {
        let listing = witness(IPVSADM, &["-Ln"]);
        if check(&listing) {
            Ok(listing)
        } else {
            Err(listing)
        }
    })
}
