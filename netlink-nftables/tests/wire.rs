//! Wire fixtures: bytes built by hand from the uapi layout (`struct nlmsghdr`, `struct
//! nfgenmsg`, `struct nlattr`, `nf_tables.h` numbers), commented per field; emit == raw bytes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code panics on failure"
)]

use std::net::IpAddr;

use netlink_nftables::attr::{msg, NFPROTO_INET};
use netlink_nftables::expr::{self, CmpOp, Verdict};
use netlink_nftables::{
    emit_batch_begin, encode_batch, network_and_mask, NftMessage, NftablesError, SetRef,
    TransactionAnswers, ELEMENTS_PER_MESSAGE,
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn batch_begin_is_a_bare_nfgenmsg_naming_the_nftables_subsystem() {
    let mut out = Vec::new();
    emit_batch_begin(7, &mut out);
    #[rustfmt::skip]
    let expected: Vec<u8> = [
        &20u32.to_ne_bytes()[..],   // nlmsg_len
        &0x10u16.to_ne_bytes(),      // NFNL_MSG_BATCH_BEGIN
        &1u16.to_ne_bytes(),         // NLM_F_REQUEST
        &7u32.to_ne_bytes(),         // nlmsg_seq
        &0u32.to_ne_bytes(),         // nlmsg_pid
        &[0, 0],                     // AF_UNSPEC, NFNETLINK_V0
        &[0x00, 0x0a],               // res_id = NFNL_SUBSYS_NFTABLES, big-endian
    ].concat();
    assert_eq!(out, expected);
}

#[test]
fn newtable_message_bytes() {
    let message = NftMessage::table(msg::NEWTABLE, "proxier", 0x400, "create");
    assert_eq!(message.family, NFPROTO_INET);
    let mut out = Vec::new();
    message.emit(8, true, &mut out);
    #[rustfmt::skip]
    let expected: Vec<u8> = [
        &32u32.to_ne_bytes()[..],              // 16 header + 4 nfgenmsg + 12 attribute
        &(10u16 << 8).to_ne_bytes(),           // NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWTABLE (0)
        &(1u16 | 4 | 0x400).to_ne_bytes(),     // NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE
        &8u32.to_ne_bytes(),                   // nlmsg_seq
        &0u32.to_ne_bytes(),                   // nlmsg_pid
        &[1, 0, 0, 0],                         // NFPROTO_INET, NFNETLINK_V0, res_id 0
        &12u16.to_ne_bytes(), &1u16.to_ne_bytes(), // nla_len, NFTA_TABLE_NAME
        b"proxier\0",
    ].concat();
    assert_eq!(out, expected);
    let mut quiet = Vec::new();
    message.emit(8, false, &mut quiet);
    assert_eq!(
        u16::from_ne_bytes([quiet[6], quiet[7]]),
        1 | 0x400,
        "no NLM_F_ACK"
    );
}

#[test]
fn cmp_expression_bytes() {
    // cmp eq reg 1 0x02: meta nfproto ipv4's comparison.
    let bytes = expr::cmp(CmpOp::Eq, 1, vec![2]).to_bytes();
    #[rustfmt::skip]
    let expected: Vec<u8> = [
        &44u16.to_ne_bytes()[..], &(0x8000u16 | 1).to_ne_bytes(), // NFTA_LIST_ELEM, nested
        &8u16.to_ne_bytes(), &1u16.to_ne_bytes(), b"cmp\0",        // NFTA_EXPR_NAME
        &32u16.to_ne_bytes(), &(0x8000u16 | 2).to_ne_bytes(),     // NFTA_EXPR_DATA, nested
        &8u16.to_ne_bytes(), &1u16.to_ne_bytes(), &[0, 0, 0, 1],  // NFTA_CMP_SREG = be32 1
        &8u16.to_ne_bytes(), &2u16.to_ne_bytes(), &[0, 0, 0, 0],  // NFTA_CMP_OP = NFT_CMP_EQ
        &12u16.to_ne_bytes(), &(0x8000u16 | 3).to_ne_bytes(),     // NFTA_CMP_DATA, nested
        &5u16.to_ne_bytes(), &1u16.to_ne_bytes(), &[2, 0, 0, 0],  // NFTA_DATA_VALUE 0x02 + pad
    ].concat();
    assert_eq!(bytes, expected);
}

#[test]
fn jump_verdict_bytes() {
    let bytes = expr::verdict(&Verdict::Jump("x".to_owned())).to_bytes();
    #[rustfmt::skip]
    let expected: Vec<u8> = [
        &56u16.to_ne_bytes()[..], &(0x8000u16 | 1).to_ne_bytes(),    // NFTA_LIST_ELEM
        &14u16.to_ne_bytes(), &1u16.to_ne_bytes(), b"immediate\0", &[0, 0], // NFTA_EXPR_NAME
        &36u16.to_ne_bytes(), &(0x8000u16 | 2).to_ne_bytes(),         // NFTA_EXPR_DATA
        &8u16.to_ne_bytes(), &1u16.to_ne_bytes(), &[0, 0, 0, 0],      // DREG = NFT_REG_VERDICT
        &24u16.to_ne_bytes(), &(0x8000u16 | 2).to_ne_bytes(),         // NFTA_IMMEDIATE_DATA
        &20u16.to_ne_bytes(), &(0x8000u16 | 2).to_ne_bytes(),         // NFTA_DATA_VERDICT
        &8u16.to_ne_bytes(), &1u16.to_ne_bytes(), &(-3i32).to_be_bytes(), // NFT_JUMP
        &6u16.to_ne_bytes(), &2u16.to_ne_bytes(), b"x\0", &[0, 0],    // NFTA_VERDICT_CHAIN
    ].concat();
    assert_eq!(bytes, expected);
}

#[test]
fn prefixes_become_network_and_mask() {
    assert_eq!(
        network_and_mask(ip("10.244.1.5"), 16),
        (vec![10, 244, 0, 0], vec![255, 255, 0, 0])
    );
    assert_eq!(
        network_and_mask(ip("192.168.7.200"), 21),
        (vec![192, 168, 0, 0], vec![255, 255, 0xf8, 0])
    );
    assert_eq!(network_and_mask(ip("1.2.3.4"), 40).1, vec![255; 4]);
    let (net, mask) = network_and_mask(ip("fd00:10:244:ff::1"), 60);
    assert_eq!(&mask[..8], &[255, 255, 255, 255, 255, 255, 255, 0xf0]);
    assert_eq!(&mask[8..], &[0; 8]);
    assert_eq!(&net[..8], &[0xfd, 0, 0, 0x10, 0x02, 0x44, 0, 0xf0]);
}

fn messages(count: usize) -> Vec<NftMessage> {
    (0..count)
        .map(|i| NftMessage::table(msg::NEWTABLE, &format!("t{i}"), 0x400, "create"))
        .collect()
}

#[test]
fn a_batch_numbers_every_message_and_only_the_last_asks_for_an_ack() {
    let messages = messages(3);
    let bytes = encode_batch(&messages, u32::MAX - 1);
    let seen: Vec<(u16, u32, u16)> = netlink_base::split_messages(&bytes)
        .map(|m| {
            (
                u16::from_ne_bytes([m[4], m[5]]),
                u32::from_ne_bytes([m[8], m[9], m[10], m[11]]),
                u16::from_ne_bytes([m[6], m[7]]),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (0x10, u32::MAX - 1, 1),   // BATCH_BEGIN
            (0x0a00, u32::MAX, 0x401), // NEWTABLE, no ACK
            (0x0a00, 0, 0x401),        // sequence numbers wrap
            (0x0a00, 1, 0x405),        // the last asks for the ACK
            (0x11, 2, 1),              // BATCH_END
        ]
    );
}

#[test]
fn large_element_lists_are_split_below_the_attribute_length_limit() {
    let keys: Vec<Vec<u8>> = (0..2500u32)
        .map(|i| [&[0u8; 12][..], &i.to_be_bytes()].concat())
        .collect();
    let set = SetRef { name: "s", id: 1 };
    let messages = NftMessage::set_elements("t", set, msg::NEWSETELEM, &keys, true);
    assert_eq!(messages.len(), 2500usize.div_ceil(ELEMENTS_PER_MESSAGE));
    assert_eq!(messages[2].description, "add 452 elements of set inet t s");
    for m in &messages {
        for a in &m.attrs {
            assert!(a.to_bytes().len() < 65536, "{}", m.description);
        }
    }
}

/// An `NLMSG_ERROR` answering `seq` with `code` (0 or -errno), as sent with `NETLINK_CAP_ACK`.
fn ack(seq: u32, code: i32) -> Vec<u8> {
    #[rustfmt::skip]
    let bytes = [
        &36u32.to_ne_bytes()[..],  // nlmsg_len
        &2u16.to_ne_bytes(),       // NLMSG_ERROR
        &0x100u16.to_ne_bytes(),   // NLM_F_CAPPED
        &seq.to_ne_bytes(),        // nlmsg_seq
        &0u32.to_ne_bytes(),       // nlmsg_pid
        &code.to_ne_bytes(),       // error
        &[0; 16],                  // the request's header
    ].concat();
    bytes
}

#[test]
fn answers_name_the_refused_message() {
    let messages = messages(10);
    // BATCH_BEGIN is 50, message i is 51 + i. Refusals come unasked; the last message's ACK
    // closes the transaction.
    let mut answers = TransactionAnswers::new(50, messages.len());
    answers.feed(&[ack(56, -22), ack(58, -22)].concat());
    assert!(!answers.complete());
    answers.feed(&ack(60, 0));
    assert!(answers.complete());
    match answers.into_result(&messages) {
        Err(NftablesError::Refused {
            message,
            errno,
            others,
        }) => {
            assert_eq!(errno, 22);
            assert_eq!(message, messages[5].description);
            assert_eq!(others, 1);
        }
        other => panic!("{other:?}"),
    }

    let mut refused = TransactionAnswers::new(50, messages.len());
    refused.feed(&ack(50, -1));
    assert!(refused.complete(), "an error on BATCH_BEGIN ends the batch");
    assert!(matches!(
        refused.into_result(&messages),
        Err(NftablesError::Refused { errno: 1, .. })
    ));

    let mut ok = TransactionAnswers::new(u32::MAX - 1, 2);
    ok.feed(&ack(u32::MAX - 1, 0)); // an ACK for BATCH_BEGIN itself is no refusal
    ok.feed(&ack(0, 0));
    assert!(ok.complete());
    assert!(
        ok.into_result(&messages[..2]).is_ok(),
        "sequence numbers wrap"
    );
}

#[test]
fn getgen_request_is_a_bare_nfgenmsg_asking_for_an_ack() {
    let mut out = Vec::new();
    NftMessage::get_generation().emit(9, true, &mut out);
    #[rustfmt::skip]
    let expected: Vec<u8> = [
        &20u32.to_ne_bytes()[..],    // nlmsg_len
        &0x0a10u16.to_ne_bytes(),     // NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETGEN (16)
        &5u16.to_ne_bytes(),          // NLM_F_REQUEST | NLM_F_ACK
        &9u32.to_ne_bytes(),          // nlmsg_seq
        &0u32.to_ne_bytes(),          // nlmsg_pid
        &[0, 0],                      // AF_UNSPEC, NFNETLINK_V0
        &[0, 0],                      // res_id
    ].concat();
    assert_eq!(out, expected);
}

#[test]
fn newgen_reply_carries_the_generation_big_endian() {
    #[rustfmt::skip]
    let reply: Vec<u8> = [
        &44u32.to_ne_bytes()[..],    // nlmsg_len
        &0x0a0fu16.to_ne_bytes(),     // NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWGEN (15)
        &0u16.to_ne_bytes(),          // flags
        &9u32.to_ne_bytes(),          // nlmsg_seq
        &0u32.to_ne_bytes(),          // nlmsg_pid
        &[0, 0], &[0, 0],             // AF_UNSPEC, NFNETLINK_V0, res_id
        &8u16.to_ne_bytes(), &1u16.to_ne_bytes(), // NFTA_GEN_ID, u32
        &0x0102_0304u32.to_be_bytes(),
        &8u16.to_ne_bytes(), &2u16.to_ne_bytes(), // NFTA_GEN_PROC_PID
        &77u32.to_be_bytes(),
        &8u16.to_ne_bytes(), &3u16.to_ne_bytes(), // NFTA_GEN_PROC_NAME "nft"
        b"nft\0",
    ].concat();
    assert_eq!(
        netlink_nftables::parse_generation(&reply).unwrap(),
        Some(0x0102_0304)
    );
    // Any other message is not a generation.
    let mut table = Vec::new();
    NftMessage::table(msg::NEWTABLE, "proxier", 0, "add").emit(1, false, &mut table);
    assert_eq!(netlink_nftables::parse_generation(&table).unwrap(), None);
}
