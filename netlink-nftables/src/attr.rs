//! The attribute tree of nf_tables messages and the kernel numbers it uses.
//!
//! Numbers are from `include/uapi/linux/netfilter/nf_tables.h`, `nfnetlink.h` and
//! `linux/netfilter.h`. Every `u32` attribute of nf_tables is big-endian on the wire
//! (`nla_put_be32`); data values (`NFTA_DATA_VALUE`) are raw register bytes.
#![allow(
    missing_docs,
    reason = "kernel numbers, named and grouped as in the uapi headers"
)]

use netlink_packet_core::{Emitable, Nla, NLA_F_NESTED};

/// `NFNL_SUBSYS_NFTABLES`: the high byte of every nf_tables message type.
pub const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// `NFNL_MSG_BATCH_BEGIN` (= `NLMSG_MIN_TYPE`).
pub const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
/// `NFNL_MSG_BATCH_END`.
pub const NFNL_MSG_BATCH_END: u16 = 0x11;
/// `NLMSG_DONE`: the end of a dump.
pub const NLMSG_DONE: u16 = 3;
/// `NLM_F_DUMP_INTR`: the dump was interrupted by a change (the kernel's generation moved).
pub const NLM_F_DUMP_INTR: u16 = 0x10;
/// `NFNETLINK_V0`.
pub const NFNETLINK_V0: u8 = 0;

/// `NFPROTO_INET`: one table for IPv4 and IPv6.
pub const NFPROTO_INET: u8 = 1;
/// `NFPROTO_IPV4`, the value of `meta nfproto` for IPv4 packets.
pub const NFPROTO_IPV4: u8 = 2;
/// `NFPROTO_IPV6`.
pub const NFPROTO_IPV6: u8 = 10;

/// `enum nf_tables_msg_types`.
pub mod msg {
    pub const NEWTABLE: u8 = 0;
    pub const GETTABLE: u8 = 1;
    pub const DELTABLE: u8 = 2;
    pub const NEWCHAIN: u8 = 3;
    pub const GETCHAIN: u8 = 4;
    pub const DELCHAIN: u8 = 5;
    pub const NEWRULE: u8 = 6;
    pub const GETRULE: u8 = 7;
    pub const DELRULE: u8 = 8;
    pub const NEWSET: u8 = 9;
    pub const NEWSETELEM: u8 = 12;
    pub const DELSETELEM: u8 = 14;
    pub const NEWGEN: u8 = 15;
    pub const GETGEN: u8 = 16;
}

/// `enum nft_gen_attributes`: the ruleset generation, bumped by every committed transaction.
pub const NFTA_GEN_ID: u16 = 1;

/// `enum nft_table_attributes`.
pub const NFTA_TABLE_NAME: u16 = 1;
/// `enum nft_chain_attributes`.
pub const NFTA_CHAIN_TABLE: u16 = 1;
pub const NFTA_CHAIN_HANDLE: u16 = 2;
pub const NFTA_CHAIN_NAME: u16 = 3;
pub const NFTA_CHAIN_HOOK: u16 = 4;
pub const NFTA_CHAIN_POLICY: u16 = 5;
pub const NFTA_CHAIN_TYPE: u16 = 7;
/// `enum nft_hook_attributes`.
pub const NFTA_HOOK_HOOKNUM: u16 = 1;
pub const NFTA_HOOK_PRIORITY: u16 = 2;
/// `enum nft_rule_attributes`.
pub const NFTA_RULE_TABLE: u16 = 1;
pub const NFTA_RULE_CHAIN: u16 = 2;
pub const NFTA_RULE_HANDLE: u16 = 3;
pub const NFTA_RULE_EXPRESSIONS: u16 = 4;
/// `enum nft_list_attributes`.
pub const NFTA_LIST_ELEM: u16 = 1;
/// `enum nft_expr_attributes`.
pub const NFTA_EXPR_NAME: u16 = 1;
pub const NFTA_EXPR_DATA: u16 = 2;
/// `enum nft_set_attributes`.
pub const NFTA_SET_TABLE: u16 = 1;
pub const NFTA_SET_NAME: u16 = 2;
pub const NFTA_SET_FLAGS: u16 = 3;
pub const NFTA_SET_KEY_TYPE: u16 = 4;
pub const NFTA_SET_KEY_LEN: u16 = 5;
pub const NFTA_SET_ID: u16 = 10;
/// `enum nft_set_elem_list_attributes`.
pub const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
pub const NFTA_SET_ELEM_LIST_SET: u16 = 2;
pub const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
pub const NFTA_SET_ELEM_LIST_SET_ID: u16 = 4;
/// `enum nft_set_elem_attributes`.
pub const NFTA_SET_ELEM_KEY: u16 = 1;
/// `enum nft_data_attributes`.
pub const NFTA_DATA_VALUE: u16 = 1;
pub const NFTA_DATA_VERDICT: u16 = 2;
/// `enum nft_verdict_attributes`.
pub const NFTA_VERDICT_CODE: u16 = 1;
pub const NFTA_VERDICT_CHAIN: u16 = 2;

/// `enum nft_registers`: the 16-byte register 1, and the first two 4-byte registers (which
/// overlay it) for concatenations.
pub const NFT_REG_VERDICT: u32 = 0;
pub const NFT_REG_1: u32 = 1;
pub const NFT_REG32_00: u32 = 8;
pub const NFT_REG32_01: u32 = 9;
pub const NFT_REG32_02: u32 = 10;
/// The 32-bit register after an IPv6 address loaded at `NFT_REG32_00`.
pub const NFT_REG32_04: u32 = 12;
pub const NFT_REG32_05: u32 = 13;

/// Netfilter hooks (`enum nf_inet_hooks`).
pub const NF_INET_PRE_ROUTING: u32 = 0;
pub const NF_INET_LOCAL_IN: u32 = 1;
pub const NF_INET_LOCAL_OUT: u32 = 3;
pub const NF_INET_POST_ROUTING: u32 = 4;
/// Hook priorities: `NF_IP_PRI_MANGLE`, `NF_IP_PRI_FILTER` and `NF_IP_PRI_NAT_SRC` (nft's
/// `mangle`, `filter`, `srcnat`).
pub const PRIORITY_MANGLE: i32 = -150;
pub const PRIORITY_FILTER: i32 = 0;
pub const PRIORITY_SRCNAT: i32 = 100;
/// `NF_IP_PRI_RAW` (nft's `raw`).
pub const PRIORITY_RAW: i32 = -300;
/// IPVS picks the virtual server of a packet to a local address at local-in priority
/// `NF_IP_PRI_NAT_SRC - 1` (`ip_vs_remote_request4`/`6`), after `ip_vs_reply` at
/// `NF_IP_PRI_NAT_SRC - 2`: a chain at this priority runs just before both.
pub const PRIORITY_BEFORE_IPVS: i32 = PRIORITY_SRCNAT - 3;

/// Verdicts: `NF_DROP`, `NF_ACCEPT` and `enum nft_verdicts`.
pub const NF_DROP: i32 = 0;
pub const NF_ACCEPT: i32 = 1;
pub const NFT_JUMP: i32 = -3;
pub const NFT_GOTO: i32 = -4;
pub const NFT_RETURN: i32 = -5;

/// One netlink attribute of an nf_tables message. Nested attributes carry `NLA_F_NESTED`, as
/// the kernel's strict validation of nf_tables expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attr {
    /// A big-endian `u32` (`nla_put_be32`); signed values (priorities, verdicts) are cast.
    U32(u16, u32),
    /// A NUL-terminated string.
    Str(u16, String),
    /// Raw bytes.
    Bytes(u16, Vec<u8>),
    /// A nested attribute list.
    Nested(u16, Vec<Attr>),
}

impl Attr {
    /// A signed `u32` attribute (two's complement, big-endian).
    pub fn i32(kind: u16, value: i32) -> Attr {
        Attr::U32(kind, value as u32)
    }

    /// `NFTA_*_DATA { NFTA_DATA_VALUE bytes }`, the shape of cmp/bitwise/immediate data and of
    /// set element keys.
    pub fn data(kind: u16, value: Vec<u8>) -> Attr {
        Attr::Nested(kind, vec![Attr::Bytes(NFTA_DATA_VALUE, value)])
    }

    /// The whole attribute, header and padding included.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = vec![0; self.buffer_len()];
        self.emit(&mut bytes);
        bytes
    }
}

impl Nla for Attr {
    fn value_len(&self) -> usize {
        match self {
            Attr::U32(..) => 4,
            Attr::Str(_, s) => s.len() + 1,
            Attr::Bytes(_, b) => b.len(),
            Attr::Nested(_, children) => children.as_slice().buffer_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            Attr::Nested(kind, _) => kind | NLA_F_NESTED,
            Attr::U32(kind, _) | Attr::Str(kind, _) | Attr::Bytes(kind, _) => *kind,
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            Attr::U32(_, value) => buffer[..4].copy_from_slice(&value.to_be_bytes()),
            Attr::Str(_, s) => {
                buffer[..s.len()].copy_from_slice(s.as_bytes());
                buffer[s.len()] = 0;
            }
            Attr::Bytes(_, b) => buffer[..b.len()].copy_from_slice(b),
            Attr::Nested(_, children) => children.as_slice().emit(buffer),
        }
    }
}
