#![no_main]
//! Arbitrary datagrams into the readers of dumps (nf_tables tables/chains/rules, ipset names):
//! panics are not allowed. A parsed rule's jump target is one of its verdict expressions, and
//! every ipset name parsed is one the datagram spelled.

use libfuzzer_sys::fuzz_target;
use netlink_nftables::{ipset, DumpAnswers, NftReply, RuleExpr, RuleVerdict};

fuzz_target!(|datagrams: Vec<Vec<u8>>| {
    let mut answers = DumpAnswers::default();
    for datagram in &datagrams {
        if answers.feed(datagram).is_err() || answers.done {
            break;
        }
    }
    for reply in &answers.replies {
        if let NftReply::Rule(rule) = reply {
            if let Some(target) = rule.target() {
                assert!(rule.exprs.iter().any(|e| matches!(
                    e,
                    RuleExpr::Verdict(RuleVerdict::Jump(c) | RuleVerdict::Goto(c)) if c == target
                )));
            }
        }
    }
    for message in &answers.other_messages {
        if let Ok(Some(name)) = ipset::parse_list_reply(message) {
            assert!(!name.contains('\0'));
        }
    }
});
