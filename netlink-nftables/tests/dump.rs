//! Wire fixtures for reading rulesets back and removing other owners' objects: dump requests,
//! dump replies (as the kernel builds them: `nf_tables_fill_rule_info`, `..._chain_info`),
//! rule and chain deletion, and ipset list/destroy. Bytes built from the uapi layout.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code panics on failure"
)]

use netlink_nftables::attr::{msg, NFPROTO_IPV4, NFPROTO_IPV6};
use netlink_nftables::ipset::{self, SetName};
use netlink_nftables::{
    parse_reply, DumpAnswers, DumpedChain, NftMessage, NftReply, NftablesError, RuleExpr,
    RuleVerdict,
};

/// One `struct nlattr` with its payload, padded to 4 bytes; `nested` sets `NLA_F_NESTED`.
fn nla(kind: u16, nested: bool, payload: &[u8]) -> Vec<u8> {
    let len = 4 + payload.len();
    let kind = if nested { kind | 0x8000 } else { kind };
    let mut out = [
        &(len as u16).to_ne_bytes()[..],
        &kind.to_ne_bytes(),
        payload,
    ]
    .concat();
    out.resize(len.next_multiple_of(4), 0);
    out
}

fn nla_str(kind: u16, s: &str) -> Vec<u8> {
    nla(kind, false, &[s.as_bytes(), b"\0"].concat())
}

/// `struct nlmsghdr` + `struct nfgenmsg` + attributes.
fn message(kind: u16, flags: u16, family: u8, attrs: &[Vec<u8>]) -> Vec<u8> {
    let body = attrs.concat();
    let len = 20 + body.len();
    [
        &(len as u32).to_ne_bytes()[..],
        &kind.to_ne_bytes(),
        &flags.to_ne_bytes(),
        &9u32.to_ne_bytes(), // nlmsg_seq
        &0u32.to_ne_bytes(), // nlmsg_pid
        &[family, 0, 0, 0],  // nfgen_family, NFNETLINK_V0, res_id
        &body,
    ]
    .concat()
}

/// `-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES` as
/// iptables-nft stores it: a `match` (xt compat) expression and an `immediate` jump.
fn jump_rule(family: u8, handle: u64, verdict_code: i32, target: &str) -> Vec<u8> {
    let xt_match = nla(
        1, // NFTA_LIST_ELEM
        true,
        &[
            nla_str(1, "match"), // NFTA_EXPR_NAME
            nla(
                2, // NFTA_EXPR_DATA
                true,
                &[nla_str(1, "comment"), nla(2, false, &0u32.to_be_bytes())].concat(),
            ),
        ]
        .concat(),
    );
    let immediate = nla(
        1,
        true,
        &[
            nla_str(1, "immediate"),
            nla(
                2,
                true,
                &[
                    nla(1, false, &0u32.to_be_bytes()), // NFTA_IMMEDIATE_DREG = NFT_REG_VERDICT
                    nla(
                        2, // NFTA_IMMEDIATE_DATA
                        true,
                        &nla(
                            2, // NFTA_DATA_VERDICT
                            true,
                            &[
                                nla(1, false, &verdict_code.to_be_bytes()), // NFTA_VERDICT_CODE
                                nla_str(2, target),                         // NFTA_VERDICT_CHAIN
                            ]
                            .concat(),
                        ),
                    ),
                ]
                .concat(),
            ),
        ]
        .concat(),
    );
    message(
        (10 << 8) | 6, // NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWRULE
        2,             // NLM_F_MULTI
        family,
        &[
            nla_str(1, "nat"),                             // NFTA_RULE_TABLE
            nla_str(2, "PREROUTING"),                      // NFTA_RULE_CHAIN
            nla(3, false, &handle.to_be_bytes()),          // NFTA_RULE_HANDLE
            nla(4, true, &[xt_match, immediate].concat()), // NFTA_RULE_EXPRESSIONS
        ],
    )
}

#[test]
fn dump_request_bytes() {
    let mut out = Vec::new();
    NftMessage::dump(msg::GETRULE, NFPROTO_IPV4).emit(5, false, &mut out);
    #[rustfmt::skip]
    let expected: Vec<u8> = [
        &20u32.to_ne_bytes()[..],      // header + nfgenmsg, no attribute
        &((10u16 << 8) | 7).to_ne_bytes(), // NFT_MSG_GETRULE
        &(1u16 | 0x300).to_ne_bytes(), // NLM_F_REQUEST | NLM_F_DUMP
        &5u32.to_ne_bytes(),
        &0u32.to_ne_bytes(),
        &[2, 0, 0, 0],                 // NFPROTO_IPV4
    ].concat();
    assert_eq!(out, expected);
}

#[test]
fn a_dumped_iptables_nft_rule_names_its_handle_and_jump() {
    let reply = parse_reply(&jump_rule(NFPROTO_IPV4, 0x1_0000_0007, -3, "KUBE-SERVICES")).unwrap();
    let NftReply::Rule(rule) = reply else {
        panic!("a rule: {reply:?}")
    };
    assert_eq!(
        (rule.table.as_str(), rule.chain.as_str()),
        ("nat", "PREROUTING")
    );
    assert_eq!(rule.handle, 0x1_0000_0007, "u64, big-endian");
    assert_eq!(rule.family, NFPROTO_IPV4);
    assert_eq!(
        rule.exprs,
        [
            RuleExpr::Other("match".into()),
            RuleExpr::Verdict(RuleVerdict::Jump("KUBE-SERVICES".into()))
        ]
    );
    assert_eq!(rule.target(), Some("KUBE-SERVICES"));
}

#[test]
fn goto_counts_as_a_target_other_verdicts_do_not() {
    let goto = parse_reply(&jump_rule(NFPROTO_IPV6, 3, -4, "KUBE-NODE-PORT")).unwrap();
    let NftReply::Rule(goto) = goto else { panic!() };
    assert_eq!(goto.target(), Some("KUBE-NODE-PORT"));
    // NF_ACCEPT with a (meaningless) chain name is no jump.
    let accept = parse_reply(&jump_rule(NFPROTO_IPV4, 3, 1, "X")).unwrap();
    let NftReply::Rule(accept) = accept else {
        panic!()
    };
    assert_eq!(accept.target(), None);
    assert_eq!(accept.exprs[1], RuleExpr::Verdict(RuleVerdict::Code(1)));
}

#[test]
fn a_dumped_chain_knows_whether_it_is_a_base_chain() {
    let base = message(
        (10 << 8) | 3, // NFT_MSG_NEWCHAIN
        2,
        NFPROTO_IPV4,
        &[
            nla_str(1, "filter"),                              // NFTA_CHAIN_TABLE
            nla(2, false, &5u64.to_be_bytes()),                // NFTA_CHAIN_HANDLE
            nla_str(3, "INPUT"),                               // NFTA_CHAIN_NAME
            nla(4, true, &nla(1, false, &1u32.to_be_bytes())), // NFTA_CHAIN_HOOK { HOOKNUM }
            nla(99, false, &[7, 7, 7, 7]),                     // unknown: ignored
        ],
    );
    assert_eq!(
        parse_reply(&base).unwrap(),
        NftReply::Chain(DumpedChain {
            family: NFPROTO_IPV4,
            table: "filter".into(),
            name: "INPUT".into(),
            handle: 5,
            base: true,
        })
    );
    let regular = message(
        (10 << 8) | 3,
        2,
        NFPROTO_IPV4,
        &[nla_str(1, "nat"), nla_str(3, "KUBE-SERVICES")],
    );
    let NftReply::Chain(regular) = parse_reply(&regular).unwrap() else {
        panic!()
    };
    assert!(!regular.base);
}

#[test]
fn every_truncation_of_a_rule_reply_is_an_error_or_a_shorter_message() {
    let bytes = jump_rule(NFPROTO_IPV4, 7, -3, "KUBE-SERVICES");
    for cut in 0..bytes.len() {
        let mut truncated = bytes[..cut].to_vec();
        // Keep nlmsg_len honest about the cut, as a short datagram would be.
        if cut >= 4 {
            truncated[..4].copy_from_slice(&(cut as u32).to_ne_bytes());
        }
        match parse_reply(&truncated) {
            Err(NftablesError::Malformed(_)) => {}
            Ok(NftReply::Rule(rule)) => assert_ne!(
                (rule.handle, rule.target()),
                (7, Some("KUBE-SERVICES")),
                "cut at {cut} lost nothing?"
            ),
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
}

#[test]
fn a_dump_ends_at_done_and_reports_interruption_and_refusal() {
    let done = [
        &20u32.to_ne_bytes()[..],
        &3u16.to_ne_bytes(), // NLMSG_DONE
        &2u16.to_ne_bytes(),
        &9u32.to_ne_bytes(),
        &0u32.to_ne_bytes(),
        &0u32.to_ne_bytes(),
    ]
    .concat();
    let mut answers = DumpAnswers::default();
    answers.feed(&jump_rule(NFPROTO_IPV4, 1, -3, "A")).unwrap();
    assert!(!answers.done);
    let mut interrupted = jump_rule(NFPROTO_IPV4, 2, -3, "B");
    interrupted[6..8].copy_from_slice(&(2u16 | 0x10).to_ne_bytes()); // NLM_F_MULTI | NLM_F_DUMP_INTR
    answers.feed(&[interrupted, done].concat()).unwrap();
    assert!(answers.done && answers.interrupted);
    assert_eq!(answers.replies.len(), 2);

    let refused = [
        &36u32.to_ne_bytes()[..],
        &2u16.to_ne_bytes(), // NLMSG_ERROR
        &0u16.to_ne_bytes(),
        &9u32.to_ne_bytes(),
        &0u32.to_ne_bytes(),
        &(-97i32).to_ne_bytes(), // -EAFNOSUPPORT
        &[0; 16],                // the request's header
    ]
    .concat();
    let mut answers = DumpAnswers::default();
    answers.feed(&refused).unwrap();
    assert_eq!((answers.done, answers.errno), (true, Some(97)));
}

#[test]
fn delete_rule_by_handle_bytes() {
    let mut out = Vec::new();
    NftMessage::delete_rule(NFPROTO_IPV4, "nat", "PREROUTING", 7).emit(3, true, &mut out);
    #[rustfmt::skip]
    let expected: Vec<u8> = [
        &(20u32 + 8 + 16 + 12).to_ne_bytes()[..],
        &((10u16 << 8) | 8).to_ne_bytes(),    // NFT_MSG_DELRULE
        &(1u16 | 4).to_ne_bytes(),            // NLM_F_REQUEST | NLM_F_ACK
        &3u32.to_ne_bytes(),
        &0u32.to_ne_bytes(),
        &[2, 0, 0, 0],                        // NFPROTO_IPV4
        &8u16.to_ne_bytes(), &1u16.to_ne_bytes(), b"nat\0",          // NFTA_RULE_TABLE
        &15u16.to_ne_bytes(), &2u16.to_ne_bytes(), b"PREROUTING\0\0", // NFTA_RULE_CHAIN (+1 pad)
        &12u16.to_ne_bytes(), &3u16.to_ne_bytes(), &7u64.to_be_bytes(), // NFTA_RULE_HANDLE
    ].concat();
    assert_eq!(out, expected);
}

#[test]
fn flush_and_delete_chain_bytes() {
    let mut out = Vec::new();
    NftMessage::flush_chain(NFPROTO_IPV6, "filter", "KUBE-FORWARD").emit(4, false, &mut out);
    NftMessage::delete_chain(NFPROTO_IPV6, "filter", "KUBE-FORWARD").emit(5, true, &mut out);
    #[rustfmt::skip]
    let expected: Vec<u8> = [
        &(20u32 + 12 + 20).to_ne_bytes()[..],
        &((10u16 << 8) | 8).to_ne_bytes(),    // NFT_MSG_DELRULE without a handle: flush
        &1u16.to_ne_bytes(),
        &4u32.to_ne_bytes(),
        &0u32.to_ne_bytes(),
        &[10, 0, 0, 0],                       // NFPROTO_IPV6
        &11u16.to_ne_bytes(), &1u16.to_ne_bytes(), b"filter\0\0",      // NFTA_RULE_TABLE
        &17u16.to_ne_bytes(), &2u16.to_ne_bytes(), b"KUBE-FORWARD\0\0\0\0", // NFTA_RULE_CHAIN
        &(20u32 + 12 + 20).to_ne_bytes(),
        &((10u16 << 8) | 5).to_ne_bytes(),    // NFT_MSG_DELCHAIN
        &(1u16 | 4).to_ne_bytes(),
        &5u32.to_ne_bytes(),
        &0u32.to_ne_bytes(),
        &[10, 0, 0, 0],
        &11u16.to_ne_bytes(), &1u16.to_ne_bytes(), b"filter\0\0",      // NFTA_CHAIN_TABLE
        &17u16.to_ne_bytes(), &3u16.to_ne_bytes(), b"KUBE-FORWARD\0\0\0\0", // NFTA_CHAIN_NAME
    ].concat();
    assert_eq!(out, expected);
}

#[test]
fn ipset_list_names_request_bytes() {
    let mut out = Vec::new();
    ipset::emit_list_names(11, &mut out);
    #[rustfmt::skip]
    let expected: Vec<u8> = [
        &(20u32 + 8 + 8).to_ne_bytes()[..],
        &((6u16 << 8) | 7).to_ne_bytes(),     // NFNL_SUBSYS_IPSET << 8 | IPSET_CMD_LIST
        &(1u16 | 0x300).to_ne_bytes(),        // NLM_F_REQUEST | NLM_F_DUMP
        &11u32.to_ne_bytes(),
        &0u32.to_ne_bytes(),
        &[2, 0, 0, 0],                        // AF_INET, NFNETLINK_V0
        &5u16.to_ne_bytes(), &1u16.to_ne_bytes(), &[6, 0, 0, 0], // IPSET_ATTR_PROTOCOL = 6 (u8)
        &8u16.to_ne_bytes(), &6u16.to_ne_bytes(), &2u32.to_be_bytes(), // IPSET_ATTR_FLAGS = LIST_SETNAME
    ].concat();
    assert_eq!(out, expected);
}

#[test]
fn ipset_destroy_bytes_always_name_the_set() {
    let mut out = Vec::new();
    ipset::emit_destroy(&SetName::new("KUBE-CLUSTER-IP").unwrap(), 12, &mut out);
    #[rustfmt::skip]
    let expected: Vec<u8> = [
        &(20u32 + 8 + 20).to_ne_bytes()[..],
        &((6u16 << 8) | 3).to_ne_bytes(),     // IPSET_CMD_DESTROY
        &(1u16 | 4).to_ne_bytes(),            // NLM_F_REQUEST | NLM_F_ACK
        &12u32.to_ne_bytes(),
        &0u32.to_ne_bytes(),
        &[2, 0, 0, 0],
        &5u16.to_ne_bytes(), &1u16.to_ne_bytes(), &[6, 0, 0, 0],
        &20u16.to_ne_bytes(), &2u16.to_ne_bytes(), b"KUBE-CLUSTER-IP\0", // IPSET_ATTR_SETNAME
    ].concat();
    assert_eq!(out, expected);
    // No request without a name: the kernel would destroy every set.
    assert_eq!(SetName::new(""), None);
    assert_eq!(SetName::new(&"K".repeat(32)), None);
    assert_eq!(SetName::new("a\0b"), None);
}

#[test]
fn ipset_list_reply_names_its_set() {
    let reply = message(
        (6 << 8) | 7,
        2,
        2,
        &[nla(1, false, &[6]), nla_str(2, "KUBE-6-LOOP-BACK")],
    );
    assert_eq!(
        ipset::parse_list_reply(&reply).unwrap().as_deref(),
        Some("KUBE-6-LOOP-BACK")
    );
    // Another message kind is not a set.
    assert_eq!(
        ipset::parse_list_reply(&jump_rule(2, 1, -3, "A")).unwrap(),
        None
    );
    // A reply without a name, or cut inside an attribute, is malformed.
    let nameless = message((6 << 8) | 7, 2, 2, &[nla(1, false, &[6])]);
    assert!(matches!(
        ipset::parse_list_reply(&nameless),
        Err(NftablesError::Malformed(_))
    ));
    let mut cut = reply.clone();
    cut.truncate(reply.len() - 12);
    assert!(ipset::parse_list_reply(&cut).is_err());
}
