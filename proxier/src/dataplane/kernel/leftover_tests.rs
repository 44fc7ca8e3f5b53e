//! The iptables-nft backend's pure halves: a dump turned into the ruleset the selection reads,
//! and a removal turned into one transaction in the order the kernel needs.

use netlink_ipvs::Family;
use netlink_nftables::attr::{msg, NFPROTO_IPV6};
use netlink_nftables::{DumpedChain, DumpedRule, NftReply, RuleExpr, RuleVerdict};

use super::leftovers::{removal_messages, ruleset};
use crate::plan::kube_proxy_leftovers::{self, XtRule};

fn chain(table: &str, name: &str) -> NftReply {
    NftReply::Chain(DumpedChain {
        family: NFPROTO_IPV6,
        table: table.into(),
        name: name.into(),
        handle: 1,
        base: false,
    })
}

fn rule(table: &str, chain: &str, handle: u64, verdict: Option<RuleVerdict>) -> NftReply {
    let mut exprs = vec![RuleExpr::Other("match".into())];
    exprs.extend(verdict.map(RuleExpr::Verdict));
    NftReply::Rule(DumpedRule {
        family: NFPROTO_IPV6,
        table: table.into(),
        chain: chain.into(),
        handle,
        exprs,
    })
}

#[test]
fn a_dump_becomes_chains_with_their_rules_and_targets() {
    let chains = vec![
        chain("nat", "PREROUTING"),
        chain("nat", "KUBE-SERVICES"),
        chain("filter", "KUBE-SERVICES"),
    ];
    let rules = vec![
        rule(
            "nat",
            "PREROUTING",
            4,
            Some(RuleVerdict::Jump("KUBE-SERVICES".into())),
        ),
        rule("nat", "PREROUTING", 5, Some(RuleVerdict::Code(1))),
        rule(
            "nat",
            "KUBE-SERVICES",
            6,
            Some(RuleVerdict::Goto("KUBE-MARK-MASQ".into())),
        ),
        // A rule of a chain the chain dump did not show (created in between) is left out.
        rule("nat", "LATE", 7, None),
    ];
    let built = ruleset(chains, rules);
    assert_eq!(built.chains.len(), 3);
    assert_eq!(
        built.chains[0].rules,
        [
            XtRule {
                handle: 4,
                target: Some("KUBE-SERVICES".into())
            },
            XtRule {
                handle: 5,
                target: None
            }
        ]
    );
    assert_eq!(
        built.chains[1].rules[0].target.as_deref(),
        Some("KUBE-MARK-MASQ")
    );
    assert!(built.chains[2].rules.is_empty(), "same name, other table");
}

#[test]
fn removal_is_one_transaction_rules_then_flushes_then_chain_deletions() {
    let built = ruleset(
        vec![
            chain("nat", "PREROUTING"),
            chain("nat", "KUBE-SERVICES"),
            chain("nat", "KUBE-MARK-MASQ"),
        ],
        vec![
            rule(
                "nat",
                "PREROUTING",
                4,
                Some(RuleVerdict::Jump("KUBE-SERVICES".into())),
            ),
            rule(
                "nat",
                "KUBE-SERVICES",
                6,
                Some(RuleVerdict::Jump("KUBE-MARK-MASQ".into())),
            ),
        ],
    );
    let removal = kube_proxy_leftovers::select(&built, Family::V6);
    let messages = removal_messages(Family::V6, &removal);
    let described: Vec<(u8, &str)> = messages
        .iter()
        .map(|m| (m.kind, m.description.as_str()))
        .collect();
    assert_eq!(
        described,
        [
            (msg::DELRULE, "delete rule ip6 nat PREROUTING handle 4"),
            (msg::DELRULE, "flush chain ip6 nat KUBE-SERVICES"),
            (msg::DELRULE, "flush chain ip6 nat KUBE-MARK-MASQ"),
            (msg::DELCHAIN, "delete chain ip6 nat KUBE-SERVICES"),
            (msg::DELCHAIN, "delete chain ip6 nat KUBE-MARK-MASQ"),
        ]
    );
    assert!(
        messages.iter().all(|m| m.family == NFPROTO_IPV6),
        "never inet, where our table is"
    );
}
