//! A rule under construction: nft statements as nf_tables expressions, in evaluation order.

use std::net::IpAddr;

use netlink_base::{Family, Protocol};

use crate::attr::{
    Attr, NFT_REG32_00, NFT_REG32_01, NFT_REG32_02, NFT_REG32_04, NFT_REG32_05, NFT_REG_1,
};
use crate::expr::{self, CmpOp, MetaKey, PayloadBase, Verdict};

/// A set as rules and element lists name it: by name, and by the id that names it inside the
/// transaction that creates it (`NFTA_SET_ID`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetRef<'a> {
    /// The set's name.
    pub name: &'a str,
    /// Its transaction id.
    pub id: u32,
}

/// `ifindex` of `lo` in every network namespace (`LOOPBACK_IFINDEX`).
const LOOPBACK_IFINDEX: u32 = 1;

/// One rule under construction: expressions in evaluation order.
#[derive(Debug, Default)]
pub struct Rule {
    /// The expressions (`NFTA_LIST_ELEM`s of `NFTA_RULE_EXPRESSIONS`).
    pub exprs: Vec<Attr>,
}

impl Rule {
    /// `meta nfproto ipv4|ipv6`: the dependency of every address match in an inet table.
    pub fn nfproto(mut self, family: Family) -> Self {
        self.exprs
            .push(expr::meta_load(MetaKey::NfProto, NFT_REG_1));
        self.exprs
            .push(expr::cmp(CmpOp::Eq, NFT_REG_1, vec![family.number()]));
        self
    }

    /// `ip saddr (!= | ==) NET/PREFIX`.
    pub fn saddr_prefix(mut self, op: CmpOp, (net, prefix): (IpAddr, u8)) -> Self {
        let family = Family::of(&net);
        self.exprs.push(expr::payload(
            PayloadBase::Network,
            saddr_offset(family),
            family.address_len() as u32,
            NFT_REG_1,
        ));
        let (network, mask) = network_and_mask(net, prefix);
        if mask.iter().any(|b| *b != 0xff) {
            let zeros = vec![0; mask.len()];
            self.exprs
                .push(expr::bitwise(NFT_REG_1, NFT_REG_1, mask, zeros));
        }
        self.exprs.push(expr::cmp(op, NFT_REG_1, network));
        self
    }

    /// `ip daddr ADDRESS`.
    pub fn daddr(mut self, address: IpAddr) -> Self {
        let family = Family::of(&address);
        self.exprs.push(expr::payload(
            PayloadBase::Network,
            daddr_offset(family),
            family.address_len() as u32,
            NFT_REG_1,
        ));
        self.exprs
            .push(expr::cmp(CmpOp::Eq, NFT_REG_1, address_bytes(address)));
        self
    }

    /// `ip daddr @SET`.
    pub fn daddr_in(mut self, family: Family, set: SetRef<'_>) -> Self {
        self.exprs.push(expr::payload(
            PayloadBase::Network,
            daddr_offset(family),
            family.address_len() as u32,
            NFT_REG_1,
        ));
        self.exprs.push(expr::lookup(set.name, set.id, NFT_REG_1));
        self
    }

    /// `ip saddr . ip daddr @SET`.
    pub fn saddr_daddr_in(mut self, family: Family, set: SetRef<'_>) -> Self {
        let daddr_register = match family {
            Family::V4 => NFT_REG32_01,
            Family::V6 => NFT_REG32_04,
        };
        self.exprs.push(expr::payload(
            PayloadBase::Network,
            saddr_offset(family),
            family.address_len() as u32,
            NFT_REG32_00,
        ));
        self.exprs.push(expr::payload(
            PayloadBase::Network,
            daddr_offset(family),
            family.address_len() as u32,
            daddr_register,
        ));
        self.exprs
            .push(expr::lookup(set.name, set.id, NFT_REG32_00));
        self
    }

    /// `meta l4proto PROTO th dport PORT`.
    pub fn l4_port(self, protocol: Protocol, port: u16) -> Self {
        let mut rule = self.l4proto_dport(protocol);
        rule.exprs
            .push(expr::cmp(CmpOp::Eq, NFT_REG_1, port.to_be_bytes().to_vec()));
        rule
    }

    /// `meta l4proto PROTO`, then the destination port loaded into register 1.
    fn l4proto_dport(mut self, protocol: Protocol) -> Self {
        self.exprs
            .push(expr::meta_load(MetaKey::L4Proto, NFT_REG_1));
        self.exprs
            .push(expr::cmp(CmpOp::Eq, NFT_REG_1, vec![protocol.number()]));
        self.exprs
            .push(expr::payload(PayloadBase::Transport, 2, 2, NFT_REG_1));
        self
    }

    /// `meta l4proto . th dport @SET`.
    pub fn l4_port_in(mut self, set: SetRef<'_>) -> Self {
        self.exprs
            .push(expr::meta_load(MetaKey::L4Proto, NFT_REG32_00));
        self.exprs
            .push(expr::payload(PayloadBase::Transport, 2, 2, NFT_REG32_01));
        self.exprs
            .push(expr::lookup(set.name, set.id, NFT_REG32_00));
        self
    }

    /// `ip daddr . meta l4proto . th dport @SET`: a set of (address, protocol, port)
    /// destinations, each field padded to a 4-byte register.
    pub fn daddr_l4_port_in(mut self, family: Family, set: SetRef<'_>) -> Self {
        let (proto_register, port_register) = match family {
            Family::V4 => (NFT_REG32_01, NFT_REG32_02),
            Family::V6 => (NFT_REG32_04, NFT_REG32_05),
        };
        self.exprs.push(expr::payload(
            PayloadBase::Network,
            daddr_offset(family),
            family.address_len() as u32,
            NFT_REG32_00,
        ));
        self.exprs
            .push(expr::meta_load(MetaKey::L4Proto, proto_register));
        self.exprs
            .push(expr::payload(PayloadBase::Transport, 2, 2, port_register));
        self.exprs
            .push(expr::lookup(set.name, set.id, NFT_REG32_00));
        self
    }

    /// `meta l4proto PROTO th dport @SET` (a set of ports).
    pub fn port_in(self, protocol: Protocol, set: SetRef<'_>) -> Self {
        let mut rule = self.l4proto_dport(protocol);
        rule.exprs.push(expr::lookup(set.name, set.id, NFT_REG_1));
        rule
    }

    /// `ct state new`: the first packet of a connection conntrack has not seen before.
    pub fn ct_state_new(mut self) -> Self {
        self.exprs.push(expr::ct_state_load(NFT_REG_1));
        self.exprs.push(expr::bitwise(
            NFT_REG_1,
            NFT_REG_1,
            expr::CT_STATE_NEW.to_ne_bytes().to_vec(),
            0u32.to_ne_bytes().to_vec(),
        ));
        self.exprs.push(expr::cmp(
            CmpOp::Neq,
            NFT_REG_1,
            0u32.to_ne_bytes().to_vec(),
        ));
        self
    }

    /// `reject` (ICMP or ICMPv6 port unreachable, as iptables' `REJECT`); ends the rule.
    pub fn reject(mut self) -> Self {
        self.exprs.push(expr::reject_port_unreachable());
        self
    }

    /// `iif != "lo"`: not generated by the node itself (local traffic re-enters through lo).
    pub fn not_from_loopback(mut self) -> Self {
        self.exprs.push(expr::meta_load(MetaKey::Iif, NFT_REG_1));
        self.exprs.push(expr::cmp(
            CmpOp::Neq,
            NFT_REG_1,
            LOOPBACK_IFINDEX.to_ne_bytes().to_vec(),
        ));
        self
    }

    /// `meta mark set meta mark | BITS`. Marks are host byte order in registers.
    pub fn mark_or(self, bits: u32) -> Self {
        self.mark_rewrite(!bits, bits)
    }

    /// `meta mark set meta mark ^ BITS`.
    pub fn mark_xor(self, bits: u32) -> Self {
        self.mark_rewrite(u32::MAX, bits)
    }

    /// `meta mark set (meta mark & MASK) ^ XOR`: nf_tables' one bitwise form, which `|` and `^`
    /// are spelled in.
    fn mark_rewrite(mut self, mask: u32, xor: u32) -> Self {
        self.exprs.push(expr::meta_load(MetaKey::Mark, NFT_REG_1));
        self.exprs.push(expr::bitwise(
            NFT_REG_1,
            NFT_REG_1,
            mask.to_ne_bytes().to_vec(),
            xor.to_ne_bytes().to_vec(),
        ));
        self.exprs.push(expr::meta_set(MetaKey::Mark, NFT_REG_1));
        self
    }

    /// `meta mark @SET` (a set of marks, host byte order).
    pub fn mark_in(mut self, set: SetRef<'_>) -> Self {
        self.exprs.push(expr::meta_load(MetaKey::Mark, NFT_REG_1));
        self.exprs.push(expr::lookup(set.name, set.id, NFT_REG_1));
        self
    }

    /// `meta priority set meta mark`: keeps the packet's mark in `skb->priority` while the
    /// mark is borrowed (see [`Rule::mark_from_priority`]).
    pub fn mark_to_priority(mut self) -> Self {
        self.exprs.push(expr::meta_load(MetaKey::Mark, NFT_REG_1));
        self.exprs
            .push(expr::meta_set(MetaKey::Priority, NFT_REG_1));
        self
    }

    /// `meta mark set meta priority meta priority set 0`: gives the packet back the mark kept
    /// by [`Rule::mark_to_priority`], and its priority back the 0 it had.
    pub fn mark_from_priority(mut self) -> Self {
        self.exprs
            .push(expr::meta_load(MetaKey::Priority, NFT_REG_1));
        self.exprs.push(expr::meta_set(MetaKey::Mark, NFT_REG_1));
        self.exprs.push(expr::immediate_value(
            NFT_REG_1,
            0u32.to_ne_bytes().to_vec(),
        ));
        self.exprs
            .push(expr::meta_set(MetaKey::Priority, NFT_REG_1));
        self
    }

    /// `meta mark set MARK`.
    pub fn mark_set(mut self, mark: u32) -> Self {
        self.exprs.push(expr::immediate_value(
            NFT_REG_1,
            mark.to_ne_bytes().to_vec(),
        ));
        self.exprs.push(expr::meta_set(MetaKey::Mark, NFT_REG_1));
        self
    }

    /// `meta mark & BITS == BITS`.
    pub fn mark_has(mut self, bits: u32) -> Self {
        self.exprs.push(expr::meta_load(MetaKey::Mark, NFT_REG_1));
        self.exprs.push(expr::bitwise(
            NFT_REG_1,
            NFT_REG_1,
            bits.to_ne_bytes().to_vec(),
            0u32.to_ne_bytes().to_vec(),
        ));
        self.exprs
            .push(expr::cmp(CmpOp::Eq, NFT_REG_1, bits.to_ne_bytes().to_vec()));
        self
    }

    /// `masquerade fully-random`.
    pub fn masquerade_fully_random(mut self) -> Self {
        self.exprs
            .push(expr::masquerade(expr::NF_NAT_RANGE_PROTO_RANDOM_FULLY));
        self
    }

    /// The rule's verdict.
    pub fn verdict(mut self, verdict: Verdict) -> Self {
        self.exprs.push(expr::verdict(&verdict));
        self
    }
}

/// Offset of the source address in the IPv4 or IPv6 header.
fn saddr_offset(family: Family) -> u32 {
    match family {
        Family::V4 => 12,
        Family::V6 => 8,
    }
}

/// Offset of the destination address in the IPv4 or IPv6 header.
fn daddr_offset(family: Family) -> u32 {
    match family {
        Family::V4 => 16,
        Family::V6 => 24,
    }
}

/// The network address (host bits cleared) and the mask of `net/prefix`; a prefix longer than
/// the address is clamped.
pub fn network_and_mask(net: IpAddr, prefix: u8) -> (Vec<u8>, Vec<u8>) {
    let bytes = address_bytes(net);
    let bits = (bytes.len() * 8) as u32;
    let prefix = u32::from(prefix).min(bits);
    let mask: Vec<u8> = (0..bytes.len() as u32)
        .map(|i| {
            let covered = prefix.saturating_sub(i * 8).min(8);
            // covered is 0..=8: shifting a u16 keeps 8 a valid shift.
            (0xff00u16 >> covered) as u8
        })
        .collect();
    let network = bytes.iter().zip(&mask).map(|(b, m)| b & m).collect();
    (network, mask)
}

/// The address as register bytes (network order: 4 or 16 bytes).
pub fn address_bytes(address: IpAddr) -> Vec<u8> {
    match address {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}
