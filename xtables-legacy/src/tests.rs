//! Byte fixtures from real kernels: `tests/fixtures/{v4,v6}-TABLE.bin` are `ipt_getinfo` + the
//! `IPT_SO_GET_ENTRIES` blob of the tables `iptables-legacy-restore -c` (iptables 1.8.9) wrote
//! for `kube-proxy-ipvs{,.ip6}.rules` in a fresh network namespace (kernel 6.18, x86_64; the
//! capture tool is `examples/capture.rs`). `*.kept.bin` is the same capture for `*.kept.save`: the
//! `iptables-legacy-save -c` text of those tables with kube-proxy's chains and the rules jumping
//! to them deleted — what libiptc itself writes for the expected result, the oracle of removal.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code panics on failure"
)]

use netlink_base::Family;

use crate::table::{Target, Verdict, INFO_LEN};
use crate::{remove_chains, Error, Table, TableInfo};

/// kube-proxy's chains in the fixtures (KUBE-FIREWALL is kubelet's and stays).
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

fn fixture_bytes(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}.bin", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn fixture(family: Family, name: &str) -> Table {
    let bytes = fixture_bytes(name);
    let info = TableInfo::parse(&bytes[..INFO_LEN]).unwrap();
    Table::parse(family, info, &bytes[INFO_LEN..]).unwrap()
}

const FIXTURES: [(Family, &str); 3] = [
    (Family::V4, "v4-filter"),
    (Family::V4, "v4-nat"),
    (Family::V6, "v6-filter"),
];

#[test]
fn parse_then_encode_is_the_identity() {
    for (family, name) in FIXTURES
        .iter()
        .flat_map(|(f, n)| [(*f, n.to_string()), (*f, format!("{n}.kept"))])
    {
        let bytes = fixture_bytes(&name);
        let table = fixture(family, &name);
        assert_eq!(
            table.info().encode().unwrap().as_slice(),
            &bytes[..INFO_LEN],
            "{name} info"
        );
        assert_eq!(table.encode(), &bytes[INFO_LEN..], "{name} entries");
    }
}

#[test]
fn chains_are_read_from_hooks_and_error_heads() {
    let table = fixture(Family::V4, "v4-filter");
    let names: Vec<String> = table.chains().into_iter().map(|c| c.name).collect();
    assert_eq!(
        names,
        [
            "INPUT",
            "FORWARD",
            "OUTPUT",
            "CNI-FORWARD",
            "KUBE-FIREWALL",
            "KUBE-FORWARD",
            "KUBE-IPVS-FILTER",
            "KUBE-IPVS-OUT-FILTER",
            "KUBE-NODE-PORT",
            "KUBE-PROXY-FIREWALL",
            "KUBE-SOURCE-RANGES-FIREWALL"
        ]
    );
    let ipvs_filter = table
        .chains()
        .into_iter()
        .find(|c| c.name == "KUBE-IPVS-FILTER")
        .unwrap();
    // ERROR head, six rules, RETURN tail.
    assert_eq!(ipvs_filter.entries.len(), 8);
    assert_eq!(
        table.entries()[ipvs_filter.entries.end - 1].target,
        Target::Standard(Verdict::Builtin(-5))
    );
}

/// The native removal yields exactly the entries libiptc writes for the expected ruleset; only
/// `comefrom` (which the kernel rewrites on every replace) may differ.
#[test]
fn removal_matches_what_libiptc_writes() {
    for (family, name) in FIXTURES {
        let table = fixture(family, name);
        let removal = remove_chains(&table, KUBE_PROXY_CHAINS).unwrap();
        let expected = fixture(family, &format!("{name}.kept"));
        assert_eq!(removal.table.info(), expected.info(), "{name} header");
        assert_eq!(
            removal.table.entries().len(),
            expected.entries().len(),
            "{name} entries"
        );
        let comefrom = if family == Family::V4 {
            92..96
        } else {
            144..148
        };
        for (got, want) in removal.table.entries().iter().zip(expected.entries()) {
            assert_eq!(got.offset, want.offset, "{name}");
            assert_eq!(got.target, want.target, "{name} at {}", got.offset);
            let (mut got, mut want) = (got.bytes().to_vec(), want.bytes().to_vec());
            got[comefrom.clone()].fill(0);
            want[comefrom.clone()].fill(0);
            assert_eq!(got, want, "{name} entry bytes");
        }
    }
}

#[test]
fn removal_names_what_it_removed_and_keeps_foreign_chains() {
    let table = fixture(Family::V4, "v4-filter");
    let removal = remove_chains(&table, KUBE_PROXY_CHAINS).unwrap();
    assert_eq!(
        removal.chains,
        [
            "KUBE-FORWARD",
            "KUBE-IPVS-FILTER",
            "KUBE-IPVS-OUT-FILTER",
            "KUBE-NODE-PORT",
            "KUBE-PROXY-FIREWALL",
            "KUBE-SOURCE-RANGES-FIREWALL"
        ]
    );
    // INPUT 3, FORWARD 3 (one a goto), OUTPUT 1.
    assert_eq!(removal.jumps, 7);
    let names: Vec<String> = removal.table.chains().into_iter().map(|c| c.name).collect();
    assert_eq!(
        names,
        ["INPUT", "FORWARD", "OUTPUT", "CNI-FORWARD", "KUBE-FIREWALL"]
    );
    // Each kept entry is the old entry `kept[i]`, with the same counters.
    for (new, &old) in removal.table.entries().iter().zip(&removal.kept) {
        let counters = if table.family == Family::V4 {
            96..112
        } else {
            152..168
        };
        assert_eq!(
            new.bytes()[counters.clone()],
            table.entries()[old].bytes()[counters]
        );
    }
    // Kept jumps still land on the same chain: INPUT's and OUTPUT's jump to KUBE-FIREWALL.
    let firewall = removal
        .table
        .chains()
        .into_iter()
        .find(|c| c.name == "KUBE-FIREWALL")
        .unwrap();
    let first_rule = removal.table.entries()[firewall.entries.start + 1].offset;
    let jumps_to_firewall = removal
        .table
        .entries()
        .iter()
        .filter(|e| e.target == Target::Standard(Verdict::Jump(first_rule)))
        .count();
    assert_eq!(jumps_to_firewall, 2);
}

#[test]
fn removing_again_changes_nothing() {
    let table = fixture(Family::V4, "v4-nat");
    let once = remove_chains(&table, KUBE_PROXY_CHAINS).unwrap();
    let twice = remove_chains(&once.table, KUBE_PROXY_CHAINS).unwrap();
    assert!(twice.is_empty());
    assert_eq!(twice.table, once.table);
    assert_eq!(
        twice.kept,
        (0..once.table.entries().len()).collect::<Vec<_>>()
    );
}

#[test]
fn no_names_change_no_byte() {
    let table = fixture(Family::V6, "v6-filter");
    let removal = remove_chains::<&str>(&table, &[]).unwrap();
    assert!(removal.is_empty());
    assert_eq!(removal.table.encode(), table.encode());
    assert_eq!(removal.table.info(), table.info());
}

#[test]
fn a_builtin_chain_is_refused() {
    let table = fixture(Family::V4, "v4-filter");
    assert!(matches!(
        remove_chains(&table, &["KUBE-FORWARD", "INPUT"]),
        Err(Error::BuiltinChain { chain }) if chain == "INPUT"
    ));
}

#[test]
fn the_replace_request_carries_the_new_header_and_the_old_count() {
    let table = fixture(Family::V4, "v4-filter");
    let removal = remove_chains(&table, KUBE_PROXY_CHAINS).unwrap();
    let request = removal
        .table
        .encode_replace(table.info().num_entries)
        .unwrap();
    let word = |at: usize| u32::from_ne_bytes(request[at..at + 4].try_into().unwrap());
    assert_eq!(&request[..7], b"filter\0");
    assert_eq!(word(36), 14, "num_entries");
    assert_eq!(word(40), removal.table.info().size);
    assert_eq!(word(84), 45, "num_counters: the old table's entry count");
    assert_eq!(
        &request[88..96],
        &[0; 8],
        "counters pointer, filled by the handle"
    );
    assert_eq!(&request[96..], removal.table.encode().as_slice());
}

#[test]
fn every_truncation_is_an_error() {
    for (family, name) in FIXTURES {
        let bytes = fixture_bytes(name);
        let info = TableInfo::parse(&bytes[..INFO_LEN]).unwrap();
        assert!(TableInfo::parse(&bytes[..INFO_LEN - 1]).is_err());
        for cut in (0..bytes.len() - INFO_LEN).step_by(7) {
            assert!(
                Table::parse(family, info.clone(), &bytes[INFO_LEN..INFO_LEN + cut]).is_err(),
                "{name} cut {cut}"
            );
        }
    }
}

#[test]
fn a_jump_between_entries_is_refused() {
    let mut bytes = fixture_bytes("v4-filter");
    let table = fixture(Family::V4, "v4-filter");
    let jump = table
        .entries()
        .iter()
        .find(|e| matches!(e.target, Target::Standard(Verdict::Jump(_))))
        .unwrap();
    let Target::Standard(Verdict::Jump(to)) = jump.target else {
        unreachable!()
    };
    let at = INFO_LEN + jump.offset as usize + jump.bytes().len() - 8;
    assert_eq!(&bytes[at..at + 4], &to.to_ne_bytes(), "the verdict's place");
    bytes[at..at + 4].copy_from_slice(&(to + 8).to_ne_bytes());
    let info = TableInfo::parse(&bytes[..INFO_LEN]).unwrap();
    assert!(matches!(
        Table::parse(Family::V4, info, &bytes[INFO_LEN..]),
        Err(Error::NotAnEntry { what: "jump", .. })
    ));
}

#[test]
fn rules_and_jump_targets_name_chains() {
    let table = fixture(Family::V4, "v4-filter");
    let chains = table.chains();
    let rules_of = |name: &str| {
        let chain = chains.iter().find(|c| c.name == name).unwrap();
        table.entries()[chain.rules()]
            .iter()
            .map(|e| table.jump_target(e).map(str::to_owned))
            .collect::<Vec<_>>()
    };
    let some = |n: &str| Some(n.to_owned());
    assert_eq!(
        rules_of("FORWARD"),
        [
            some("KUBE-PROXY-FIREWALL"),
            some("KUBE-FORWARD"),
            some("KUBE-FORWARD"),
            some("CNI-FORWARD")
        ]
    );
    assert_eq!(
        rules_of("KUBE-IPVS-FILTER"),
        [None, None, None, None, None, None]
    );
    assert_eq!(rules_of("KUBE-SOURCE-RANGES-FIREWALL"), [None]);
    // A rule without a target falls through to the next entry: no chain.
    let nat = fixture(Family::V4, "v4-nat");
    let chain = nat
        .chains()
        .into_iter()
        .find(|c| c.name == "CNI-POSTROUTING")
        .unwrap();
    let counted = &nat.entries()[chain.rules().start];
    assert!(matches!(counted.target, Target::Standard(Verdict::Jump(_))));
    assert_eq!(nat.jump_target(counted), None);
}
