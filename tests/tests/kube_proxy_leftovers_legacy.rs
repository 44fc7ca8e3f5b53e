//! kube-proxy's iptables-legacy leftovers removed natively (issue 14, item 2): the ruleset
//! kube-proxy's IPVS mode writes (`writeIptablesRules`: KUBE-SERVICES, KUBE-POSTROUTING,
//! KUBE-MARK-MASQ, KUBE-IPVS-FILTER, … with `-m set`, `-m comment`, `-m mark` matches) next to a
//! CNI's chains and kubelet's KUBE-FIREWALL is loaded with `iptables-legacy-restore -c`; the
//! `xtables-legacy` crate removes kube-proxy's chains and the rules jumping to them through
//! `IPT_SO_SET_REPLACE` (no binary); `iptables-legacy-save -c` witnesses that exactly those lines
//! are gone and every other line (counters included) is unchanged, and a connection that the
//! frozen KUBE-IPVS-FILTER rejected now gets through.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code panics on failure"
)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use proxier_kernel_tests::{witness, NetNs, IP, IPTABLES_LEGACY, IPTABLES_LEGACY_SAVE};
use xtables_legacy::{existing_tables, Family, LegacyTables};

const IPSETS: &str = include_str!("../../xtables-legacy/tests/fixtures/kube-proxy-ipvs.ipset");
const RULES: &str = include_str!("../../xtables-legacy/tests/fixtures/kube-proxy-ipvs.rules");
const RULES6: &str = include_str!("../../xtables-legacy/tests/fixtures/kube-proxy-ipvs.ip6.rules");
const IPSET: &str = "/usr/sbin/ipset";
const IPTABLES_LEGACY_RESTORE: &str = "/usr/sbin/iptables-legacy-restore";
const IP6TABLES_LEGACY_RESTORE: &str = "/usr/sbin/ip6tables-legacy-restore";
const IP6TABLES_LEGACY_SAVE: &str = "/usr/sbin/ip6tables-legacy-save";

/// kube-proxy's chains in the ruleset (KUBE-FIREWALL is kubelet's and must stay).
const KUBE_PROXY_CHAINS: &[&str] = &[
    "KUBE-SERVICES",
    "KUBE-POSTROUTING",
    "KUBE-NODE-PORT",
    "KUBE-LOAD-BALANCER",
    "KUBE-MARK-MASQ",
    "KUBE-FORWARD",
    "KUBE-IPVS-FILTER",
    "KUBE-IPVS-OUT-FILTER",
    "KUBE-PROXY-FIREWALL",
    "KUBE-SOURCE-RANGES-FIREWALL",
];

/// A kube-ipvs0 address in KUBE-IPVS-IPS but in no frozen Service set: a Service created after
/// kube-proxy stopped.
const NEW_SERVICE: &str = "10.96.0.50";

/// Runs `tool args` with `input` on stdin; panics if it fails.
fn feed(tool: &str, args: &[&str], input: &str) {
    let mut child = Command::new(tool)
        .args(args)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {tool}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "{tool} {args:?} failed");
}

/// `*-save -c` without its date comments.
fn save(tool: &str) -> Vec<String> {
    witness(tool, &["-c"])
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// `lines` without kube-proxy's chain declarations, its chains' rules and the jumps to them.
fn without_kube_proxy(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let declared = words.first().and_then(|w| w.strip_prefix(':'));
            let named = words
                .windows(2)
                .filter(|w| ["-A", "-j", "-g"].contains(&w[0]))
                .map(|w| w[1]);
            !declared
                .into_iter()
                .chain(named)
                .any(|n| KUBE_PROXY_CHAINS.contains(&n))
        })
        .cloned()
        .collect()
}

fn connect_new_service() -> std::io::Result<TcpStream> {
    let to: SocketAddr = format!("{NEW_SERVICE}:8080").parse().unwrap();
    TcpStream::connect_timeout(&to, Duration::from_secs(3))
}

#[test]
fn kube_proxy_chains_leave_natively_and_nothing_else_changes() {
    let _ns = NetNs::fresh();
    feed(IPSET, &["restore"], IPSETS);
    feed(IPTABLES_LEGACY_RESTORE, &["-c"], RULES);
    feed(IP6TABLES_LEGACY_RESTORE, &["-c"], RULES6);
    witness(IP, &["link", "add", "kube-ipvs0", "type", "dummy"]);
    witness(
        IP,
        &[
            "addr",
            "add",
            &format!("{NEW_SERVICE}/32"),
            "dev",
            "kube-ipvs0",
        ],
    );
    witness(IP, &["link", "set", "kube-ipvs0", "up"]);
    let listener = TcpListener::bind(format!("{NEW_SERVICE}:8080")).unwrap();

    // The frozen KUBE-IPVS-FILTER rejects the new Service although something listens.
    let refused = connect_new_service().expect_err("KUBE-IPVS-FILTER lets a new Service through");
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused, "{refused}");
    let reject_hits = witness(
        IPTABLES_LEGACY,
        &["-t", "filter", "-L", "KUBE-IPVS-FILTER", "-v", "-x", "-n"],
    );
    println!("before:\n{reject_hits}");

    let before = save(IPTABLES_LEGACY_SAVE);
    let before6 = save(IP6TABLES_LEGACY_SAVE);
    let mut tables_before = existing_tables(Family::V4).unwrap();
    tables_before.sort();
    assert_eq!(tables_before, ["filter", "nat"]);

    let reports = LegacyTables::open(Family::V4)
        .unwrap()
        .remove_chains_everywhere(KUBE_PROXY_CHAINS)
        .unwrap();
    let reports6 = LegacyTables::open(Family::V6)
        .unwrap()
        .remove_chains_everywhere(KUBE_PROXY_CHAINS)
        .unwrap();
    for report in reports.iter().chain(&reports6) {
        println!(
            "removed natively: {:?} {} chains {:?}, {} jumps, attempts {}, counters carried {}",
            report.family,
            report.table,
            report.chains,
            report.jumps,
            report.attempts,
            report.counters_carried
        );
        assert!(report.counters_carried, "{report:?}");
    }
    let summary: Vec<(&str, usize, usize)> = reports
        .iter()
        .chain(&reports6)
        .map(|r| (r.table.as_str(), r.chains.len(), r.jumps))
        .collect();
    let mut expected_summary = vec![("filter", 6, 7), ("nat", 5, 3), ("filter", 2, 2)];
    if reports.first().is_some_and(|r| r.table == "nat") {
        expected_summary.swap(0, 1);
    }
    assert_eq!(summary, expected_summary);

    // Exactly kube-proxy's lines are gone; every other line, counters included, is unchanged.
    let after = save(IPTABLES_LEGACY_SAVE);
    let after6 = save(IP6TABLES_LEGACY_SAVE);
    println!("iptables-legacy-save -c after:\n{}", after.join("\n"));
    assert_ne!(after, before);
    assert_eq!(after, without_kube_proxy(&before));
    assert_eq!(after6, without_kube_proxy(&before6));
    assert!(after
        .iter()
        .any(|l| l.contains("-A INPUT -j KUBE-FIREWALL")));
    assert!(after
        .iter()
        .any(|l| l.starts_with("[16:960] -A CNI-POSTROUTING -j MASQUERADE")));
    let mut tables_after = existing_tables(Family::V4).unwrap();
    tables_after.sort();
    assert_eq!(tables_after, tables_before, "reading created no table");

    // A second pass finds nothing of kube-proxy's (and changes no byte).
    let again = LegacyTables::open(Family::V4)
        .unwrap()
        .remove_chains_everywhere(KUBE_PROXY_CHAINS)
        .unwrap();
    assert_eq!(again, []);
    assert_eq!(save(IPTABLES_LEGACY_SAVE), after);

    // The new Service is reachable now.
    let mut client = connect_new_service().expect("the new Service after the removal");
    let (mut server, _) = listener.accept().unwrap();
    client.write_all(b"ping").unwrap();
    let mut got = [0u8; 4];
    server.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");
    println!("connection to {NEW_SERVICE}:8080 refused before, answered after");
}

/// A writer that changes the table between our read and our replace makes the kernel refuse the
/// replace (EAGAIN: the entry count we announce is not the table's any more); the retrying removal
/// then keeps that writer's rule.
#[test]
fn a_concurrent_writer_is_detected_and_kept() {
    let _ns = NetNs::fresh();
    feed(IPSET, &["restore"], IPSETS);
    feed(IPTABLES_LEGACY_RESTORE, &["-c"], RULES);
    let tables = LegacyTables::open(Family::V4).unwrap();
    let old = tables.read("filter").unwrap();
    let removal = xtables_legacy::remove_chains(&old, KUBE_PROXY_CHAINS).unwrap();
    witness(
        IPTABLES_LEGACY,
        &[
            "-t",
            "filter",
            "-A",
            "FORWARD",
            "-s",
            "192.0.2.7",
            "-j",
            "DROP",
        ],
    );
    let refused = tables
        .replace(&old, &removal)
        .expect_err("a replace over a changed table");
    println!("replace over a changed table: {refused}");
    assert!(
        matches!(&refused, xtables_legacy::Error::Sockopt { source, .. } if source.raw_os_error() == Some(libc::EAGAIN)),
        "{refused:?}"
    );
    let report = tables.remove_chains("filter", KUBE_PROXY_CHAINS).unwrap();
    assert_eq!((report.chains.len(), report.jumps), (6, 7));
    let after = save(IPTABLES_LEGACY_SAVE);
    assert!(
        after
            .iter()
            .any(|l| l.ends_with("-A FORWARD -s 192.0.2.7/32 -j DROP")),
        "{after:#?}"
    );
    assert!(!after.iter().any(|l| l.contains("KUBE-IPVS-FILTER")));
}

/// The crate's byte fixtures (captured from `iptables-legacy-restore -c` of the same rules on the
/// development host's kernel) are what this kernel holds for them, byte for byte.
#[test]
fn the_fixtures_are_what_this_kernel_holds() {
    let _ns = NetNs::fresh();
    feed(IPSET, &["restore"], IPSETS);
    feed(IPTABLES_LEGACY_RESTORE, &["-c"], RULES);
    feed(IP6TABLES_LEGACY_RESTORE, &["-c"], RULES6);
    let fixtures: [(Family, &str, &[u8]); 3] = [
        (
            Family::V4,
            "filter",
            include_bytes!("../../xtables-legacy/tests/fixtures/v4-filter.bin"),
        ),
        (
            Family::V4,
            "nat",
            include_bytes!("../../xtables-legacy/tests/fixtures/v4-nat.bin"),
        ),
        (
            Family::V6,
            "filter",
            include_bytes!("../../xtables-legacy/tests/fixtures/v6-filter.bin"),
        ),
    ];
    for (family, name, fixture) in fixtures {
        let table = LegacyTables::open(family).unwrap().read(name).unwrap();
        let mut bytes = table.info().encode().unwrap().to_vec();
        bytes.extend(table.encode());
        assert_eq!(bytes.len(), fixture.len(), "{family:?} {name}");
        assert!(
            bytes == fixture,
            "{family:?} {name}: the kernel's bytes differ from the fixture"
        );
        println!(
            "{family:?} {name}: {} entries, {} bytes, identical to the fixture",
            table.entries().len(),
            bytes.len()
        );
    }
}

/// Through proxier's kernel dataplane: its recognition (`plan::kube_proxy_leftovers`) selects
/// kube-proxy's chains per table, the iptables-legacy backend removes them, then kube-proxy's
/// ipsets (no longer referenced) are destroyed; kubelet's filter KUBE-FIREWALL stays.
#[test]
fn the_kernel_dataplane_removes_legacy_leftovers() {
    use proxier::dataplane::kernel::KernelDataplane;
    use proxier::dataplane::Dataplane;

    let _ns = NetNs::fresh();
    feed(IPSET, &["restore"], IPSETS);
    feed(IPTABLES_LEGACY_RESTORE, &["-c"], RULES);
    feed(IP6TABLES_LEGACY_RESTORE, &["-c"], RULES6);
    let before = save(IPTABLES_LEGACY_SAVE);
    let before6 = save(IP6TABLES_LEGACY_SAVE);

    let mut dataplane = KernelDataplane::connect("kube-ipvs0").unwrap();
    let report = dataplane.remove_kube_proxy_leftovers();
    println!("{}", report.summary());
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    let legacy: Vec<(Family, usize, usize)> = report
        .removed
        .iter()
        .filter(|r| r.backend == "iptables-legacy")
        .map(|r| (r.family, r.removal.chains.len(), r.removal.rules.len()))
        .collect();
    assert_eq!(legacy, [(Family::V4, 11, 10), (Family::V6, 2, 2)]);
    assert_eq!(save(IPTABLES_LEGACY_SAVE), without_kube_proxy(&before));
    assert_eq!(save(IP6TABLES_LEGACY_SAVE), without_kube_proxy(&before6));
    assert_eq!(
        report.sets_destroyed.len(),
        9,
        "{:?}",
        report.sets_destroyed
    );
    assert_eq!(witness(IPSET, &["list", "-n"]), "");
    assert!(
        report
            .chains_kept
            .iter()
            .any(|c| c == "iptables-legacy ipv4 filter KUBE-FIREWALL"),
        "{:?}",
        report.chains_kept
    );
}
