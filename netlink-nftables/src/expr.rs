//! nf_tables expressions (the statements of a rule), each one `NFTA_LIST_ELEM { NFTA_EXPR_NAME,
//! NFTA_EXPR_DATA }`. Attribute numbers are from `nf_tables.h` (`enum nft_payload_attributes`,
//! `nft_meta_attributes`, `nft_cmp_attributes`, `nft_bitwise_attributes`,
//! `nft_lookup_attributes`, `nft_immediate_attributes`, `nft_masq_attributes`,
//! `nft_ct_attributes`, `nft_reject_attributes`).

use crate::attr::{
    Attr, NFTA_DATA_VERDICT, NFTA_EXPR_DATA, NFTA_EXPR_NAME, NFTA_LIST_ELEM, NFTA_VERDICT_CHAIN,
    NFTA_VERDICT_CODE, NFT_REG_VERDICT,
};

const NFTA_PAYLOAD_DREG: u16 = 1;
const NFTA_PAYLOAD_BASE: u16 = 2;
const NFTA_PAYLOAD_OFFSET: u16 = 3;
const NFTA_PAYLOAD_LEN: u16 = 4;

const NFTA_META_DREG: u16 = 1;
const NFTA_META_KEY: u16 = 2;
const NFTA_META_SREG: u16 = 3;

const NFTA_CMP_SREG: u16 = 1;
const NFTA_CMP_OP: u16 = 2;
const NFTA_CMP_DATA: u16 = 3;

const NFTA_BITWISE_SREG: u16 = 1;
const NFTA_BITWISE_DREG: u16 = 2;
const NFTA_BITWISE_LEN: u16 = 3;
const NFTA_BITWISE_MASK: u16 = 4;
const NFTA_BITWISE_XOR: u16 = 5;

const NFTA_LOOKUP_SET: u16 = 1;
const NFTA_LOOKUP_SREG: u16 = 2;
const NFTA_LOOKUP_SET_ID: u16 = 4;

const NFTA_IMMEDIATE_DREG: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;

const NFTA_MASQ_FLAGS: u16 = 1;

const NFTA_CT_DREG: u16 = 1;
const NFTA_CT_KEY: u16 = 2;
/// `NFT_CT_STATE`: the `ct state` bits (host byte order, 4 bytes).
const NFT_CT_STATE: u32 = 0;
/// `NF_CT_STATE_BIT(IP_CT_NEW)` (`nf_conntrack_common.h`: `1 << (ctinfo + 1)`, `IP_CT_NEW` = 2).
pub const CT_STATE_NEW: u32 = 1 << 3;

const NFTA_REJECT_TYPE: u16 = 1;
const NFTA_REJECT_ICMP_CODE: u16 = 2;
/// `NFT_REJECT_ICMPX_UNREACH`: an ICMP or ICMPv6 unreachable, by the packet's family.
const NFT_REJECT_ICMPX_UNREACH: u32 = 2;
/// `NFT_REJECT_ICMPX_PORT_UNREACH`: iptables' `REJECT` default (`icmp-port-unreachable`).
const NFT_REJECT_ICMPX_PORT_UNREACH: u8 = 1;
/// `NF_NAT_RANGE_PROTO_RANDOM_FULLY` (`linux/netfilter/nf_nat.h`).
pub const NF_NAT_RANGE_PROTO_RANDOM_FULLY: u32 = 0x10;

/// Payload bases (`enum nft_payload_bases`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum PayloadBase {
    /// The IPv4/IPv6 header.
    Network = 1,
    /// The TCP/UDP/SCTP header.
    Transport = 2,
}

/// Meta keys (`enum nft_meta_keys`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum MetaKey {
    /// `skb->mark` (host byte order, 4 bytes).
    Mark = 3,
    /// Input interface index (host byte order, 4 bytes).
    Iif = 4,
    /// `skb->priority` (host byte order, 4 bytes).
    Priority = 5,
    /// `NFPROTO_*` of the hook (1 byte).
    NfProto = 15,
    /// Layer-4 protocol number (1 byte).
    L4Proto = 16,
}

/// Comparison operators (`enum nft_cmp_ops`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum CmpOp {
    /// `==`.
    Eq = 0,
    /// `!=`.
    Neq = 1,
}

/// Rule verdicts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// `accept`: ends this base chain.
    Accept,
    /// `drop`.
    Drop,
    /// `return` to the calling chain.
    Return,
    /// `jump CHAIN`.
    Jump(String),
}

fn expr(name: &str, data: Vec<Attr>) -> Attr {
    Attr::Nested(
        NFTA_LIST_ELEM,
        vec![
            Attr::Str(NFTA_EXPR_NAME, name.to_owned()),
            Attr::Nested(NFTA_EXPR_DATA, data),
        ],
    )
}

/// `payload load LEN bytes at BASE + OFFSET => reg DREG`.
pub fn payload(base: PayloadBase, offset: u32, len: u32, dreg: u32) -> Attr {
    expr(
        "payload",
        vec![
            Attr::U32(NFTA_PAYLOAD_DREG, dreg),
            Attr::U32(NFTA_PAYLOAD_BASE, base as u32),
            Attr::U32(NFTA_PAYLOAD_OFFSET, offset),
            Attr::U32(NFTA_PAYLOAD_LEN, len),
        ],
    )
}

/// `meta load KEY => reg DREG`.
pub fn meta_load(key: MetaKey, dreg: u32) -> Attr {
    expr(
        "meta",
        vec![
            Attr::U32(NFTA_META_DREG, dreg),
            Attr::U32(NFTA_META_KEY, key as u32),
        ],
    )
}

/// `meta set KEY with reg SREG`.
pub fn meta_set(key: MetaKey, sreg: u32) -> Attr {
    expr(
        "meta",
        vec![
            Attr::U32(NFTA_META_KEY, key as u32),
            Attr::U32(NFTA_META_SREG, sreg),
        ],
    )
}

/// `cmp OP reg SREG DATA`.
pub fn cmp(op: CmpOp, sreg: u32, data: Vec<u8>) -> Attr {
    expr(
        "cmp",
        vec![
            Attr::U32(NFTA_CMP_SREG, sreg),
            Attr::U32(NFTA_CMP_OP, op as u32),
            Attr::data(NFTA_CMP_DATA, data),
        ],
    )
}

/// `bitwise reg DREG = (reg SREG & MASK) ^ XOR`; mask and xor have the operand length.
pub fn bitwise(sreg: u32, dreg: u32, mask: Vec<u8>, xor: Vec<u8>) -> Attr {
    debug_assert_eq!(mask.len(), xor.len(), "bitwise operands of one length");
    expr(
        "bitwise",
        vec![
            Attr::U32(NFTA_BITWISE_SREG, sreg),
            Attr::U32(NFTA_BITWISE_DREG, dreg),
            Attr::U32(NFTA_BITWISE_LEN, mask.len() as u32),
            Attr::data(NFTA_BITWISE_MASK, mask),
            Attr::data(NFTA_BITWISE_XOR, xor),
        ],
    )
}

/// `lookup reg SREG set NAME` (the set is named and identified by its transaction id).
pub fn lookup(set: &str, set_id: u32, sreg: u32) -> Attr {
    expr(
        "lookup",
        vec![
            Attr::Str(NFTA_LOOKUP_SET, set.to_owned()),
            Attr::U32(NFTA_LOOKUP_SREG, sreg),
            Attr::U32(NFTA_LOOKUP_SET_ID, set_id),
        ],
    )
}

/// `immediate reg DREG DATA`.
pub fn immediate_value(dreg: u32, value: Vec<u8>) -> Attr {
    expr(
        "immediate",
        vec![
            Attr::U32(NFTA_IMMEDIATE_DREG, dreg),
            Attr::data(NFTA_IMMEDIATE_DATA, value),
        ],
    )
}

/// A verdict: `immediate reg 0 VERDICT`.
pub fn verdict(verdict: &Verdict) -> Attr {
    use crate::attr::{NFT_JUMP, NFT_RETURN, NF_ACCEPT, NF_DROP};
    let mut inner = vec![];
    match verdict {
        Verdict::Accept => inner.push(Attr::i32(NFTA_VERDICT_CODE, NF_ACCEPT)),
        Verdict::Drop => inner.push(Attr::i32(NFTA_VERDICT_CODE, NF_DROP)),
        Verdict::Return => inner.push(Attr::i32(NFTA_VERDICT_CODE, NFT_RETURN)),
        Verdict::Jump(chain) => {
            inner.push(Attr::i32(NFTA_VERDICT_CODE, NFT_JUMP));
            inner.push(Attr::Str(NFTA_VERDICT_CHAIN, chain.clone()));
        }
    }
    expr(
        "immediate",
        vec![
            Attr::U32(NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT),
            Attr::Nested(
                NFTA_IMMEDIATE_DATA,
                vec![Attr::Nested(NFTA_DATA_VERDICT, inner)],
            ),
        ],
    )
}

/// `ct load state => reg DREG`.
pub fn ct_state_load(dreg: u32) -> Attr {
    expr(
        "ct",
        vec![
            Attr::U32(NFTA_CT_DREG, dreg),
            Attr::U32(NFTA_CT_KEY, NFT_CT_STATE),
        ],
    )
}

/// `reject with icmpx type port-unreachable` (ends the rule's evaluation: a drop with an
/// answer; the kernel accepts it in the input, forward and output hooks).
pub fn reject_port_unreachable() -> Attr {
    expr(
        "reject",
        vec![
            Attr::U32(NFTA_REJECT_TYPE, NFT_REJECT_ICMPX_UNREACH),
            Attr::Bytes(NFTA_REJECT_ICMP_CODE, vec![NFT_REJECT_ICMPX_PORT_UNREACH]),
        ],
    )
}

/// `masq` with `NF_NAT_RANGE_*` flags.
pub fn masquerade(flags: u32) -> Attr {
    expr("masq", vec![Attr::U32(NFTA_MASQ_FLAGS, flags)])
}
