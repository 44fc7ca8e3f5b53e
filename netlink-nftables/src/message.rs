//! nf_tables requests and the builders of the objects a table is made of: the table, its
//! sets and their elements, chains and rules.

use netlink_packet_core::{NLM_F_APPEND, NLM_F_CREATE};

use crate::attr::{self, msg, Attr, NFPROTO_INET};
use crate::rule::{Rule, SetRef};

/// Elements per `NEWSETELEM`/`DELSETELEM` message: the element list is one attribute and an
/// attribute's length is 16 bits (an IPv6 element takes 28 bytes, so 1024 of them stay under
/// 64 KiB).
pub const ELEMENTS_PER_MESSAGE: usize = 1024;

/// One nf_tables request: a message type, its flags and attributes, and a description used
/// when the kernel refuses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftMessage {
    /// `NFT_MSG_*` (see [`msg`]).
    pub kind: u8,
    /// Flags besides `NLM_F_REQUEST` (and `NLM_F_ACK`, which the batch encoder sets):
    /// `NLM_F_CREATE`, `NLM_F_APPEND`.
    pub flags: u16,
    /// `nfgenmsg.nfgen_family`.
    pub family: u8,
    /// The attributes, in order.
    pub attrs: Vec<Attr>,
    /// What the message does, e.g. `add rule inet proxier postrouting: masquerade`.
    pub description: String,
}

/// The key of a set: nft's data type number (only `nft list` reads it; a concatenation is
/// `(a << 6) | b`) and the key length in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetKey {
    /// `NFTA_SET_KEY_TYPE`.
    pub data_type: u32,
    /// `NFTA_SET_KEY_LEN`.
    pub len: u32,
}

impl NftMessage {
    /// `NFT_MSG_NEWTABLE` / `DELTABLE` / `GETTABLE` (`kind`) for `inet TABLE`; `verb` goes into
    /// the description (`create`, `delete`, `get`).
    pub fn table(kind: u8, table: &str, flags: u16, verb: &str) -> Self {
        NftMessage {
            kind,
            flags,
            family: NFPROTO_INET,
            attrs: vec![Attr::Str(attr::NFTA_TABLE_NAME, table.to_owned())],
            description: format!("{verb} table inet {table}"),
        }
    }

    /// `NFT_MSG_NEWSET`: a plain set (no flags) of `key`s in `inet TABLE`.
    pub fn new_set(table: &str, set: SetRef<'_>, key: SetKey) -> Self {
        NftMessage {
            kind: msg::NEWSET,
            flags: NLM_F_CREATE,
            family: NFPROTO_INET,
            attrs: vec![
                Attr::Str(attr::NFTA_SET_TABLE, table.to_owned()),
                Attr::Str(attr::NFTA_SET_NAME, set.name.to_owned()),
                Attr::U32(attr::NFTA_SET_FLAGS, 0),
                Attr::U32(attr::NFTA_SET_KEY_TYPE, key.data_type),
                Attr::U32(attr::NFTA_SET_KEY_LEN, key.len),
                Attr::U32(attr::NFTA_SET_ID, set.id),
            ],
            description: format!("add set inet {table} {}", set.name),
        }
    }

    /// A base chain: `type TYPE hook HOOK priority PRIORITY; policy accept;`.
    pub fn base_chain(table: &str, name: &str, chain_type: &str, hook: u32, priority: i32) -> Self {
        let mut chain = Self::regular_chain(table, name);
        chain.attrs.extend([
            Attr::Nested(
                attr::NFTA_CHAIN_HOOK,
                vec![
                    Attr::U32(attr::NFTA_HOOK_HOOKNUM, hook),
                    Attr::i32(attr::NFTA_HOOK_PRIORITY, priority),
                ],
            ),
            Attr::i32(attr::NFTA_CHAIN_POLICY, attr::NF_ACCEPT),
            Attr::Str(attr::NFTA_CHAIN_TYPE, chain_type.to_owned()),
        ]);
        chain.description = format!("add chain inet {table} {name} (type {chain_type})");
        chain
    }

    /// A regular chain (a jump target).
    pub fn regular_chain(table: &str, name: &str) -> Self {
        NftMessage {
            kind: msg::NEWCHAIN,
            flags: NLM_F_CREATE,
            family: NFPROTO_INET,
            attrs: vec![
                Attr::Str(attr::NFTA_CHAIN_TABLE, table.to_owned()),
                Attr::Str(attr::NFTA_CHAIN_NAME, name.to_owned()),
            ],
            description: format!("add chain inet {table} {name}"),
        }
    }

    /// `rule` appended to `chain`; `what` goes into the description.
    pub fn rule(table: &str, chain: &str, what: &str, rule: Rule) -> Self {
        NftMessage {
            kind: msg::NEWRULE,
            flags: NLM_F_CREATE | NLM_F_APPEND,
            family: NFPROTO_INET,
            attrs: vec![
                Attr::Str(attr::NFTA_RULE_TABLE, table.to_owned()),
                Attr::Str(attr::NFTA_RULE_CHAIN, chain.to_owned()),
                Attr::Nested(attr::NFTA_RULE_EXPRESSIONS, rule.exprs),
            ],
            description: format!("add rule inet {table} {chain}: {what}"),
        }
    }

    /// Adds (`msg::NEWSETELEM`) or deletes (`msg::DELSETELEM`) `keys` of `set`, in messages
    /// of at most [`ELEMENTS_PER_MESSAGE`]; `by_id` names the set by its transaction id too
    /// (when it is created in the same transaction).
    pub fn set_elements(
        table: &str,
        set: SetRef<'_>,
        kind: u8,
        keys: &[Vec<u8>],
        by_id: bool,
    ) -> Vec<Self> {
        let verb = if kind == msg::DELSETELEM {
            "delete"
        } else {
            "add"
        };
        keys.chunks(ELEMENTS_PER_MESSAGE)
            .map(|chunk| {
                let elements = chunk
                    .iter()
                    .map(|key| {
                        Attr::Nested(
                            attr::NFTA_LIST_ELEM,
                            vec![Attr::data(attr::NFTA_SET_ELEM_KEY, key.clone())],
                        )
                    })
                    .collect();
                let mut attrs = vec![
                    Attr::Str(attr::NFTA_SET_ELEM_LIST_TABLE, table.to_owned()),
                    Attr::Str(attr::NFTA_SET_ELEM_LIST_SET, set.name.to_owned()),
                ];
                if by_id {
                    attrs.push(Attr::U32(attr::NFTA_SET_ELEM_LIST_SET_ID, set.id));
                }
                attrs.push(Attr::Nested(attr::NFTA_SET_ELEM_LIST_ELEMENTS, elements));
                NftMessage {
                    kind,
                    flags: if kind == msg::NEWSETELEM {
                        NLM_F_CREATE
                    } else {
                        0
                    },
                    family: NFPROTO_INET,
                    attrs,
                    description: format!(
                        "{verb} {} elements of set inet {table} {}",
                        chunk.len(),
                        set.name
                    ),
                }
            })
            .collect()
    }

    /// `DELRULE`: the rule with `handle` in `FAMILY TABLE CHAIN`.
    pub fn delete_rule(family: u8, table: &str, chain: &str, handle: u64) -> Self {
        let mut rule = Self::flush_chain(family, table, chain);
        rule.attrs.push(Attr::Bytes(
            attr::NFTA_RULE_HANDLE,
            handle.to_be_bytes().to_vec(),
        ));
        rule.description = format!(
            "delete rule {} {table} {chain} handle {handle}",
            family_name(family)
        );
        rule
    }

    /// `DELRULE` without a handle: flushes chain `FAMILY TABLE CHAIN`.
    pub fn flush_chain(family: u8, table: &str, chain: &str) -> Self {
        NftMessage {
            kind: msg::DELRULE,
            flags: 0,
            family,
            attrs: vec![
                Attr::Str(attr::NFTA_RULE_TABLE, table.to_owned()),
                Attr::Str(attr::NFTA_RULE_CHAIN, chain.to_owned()),
            ],
            description: format!("flush chain {} {table} {chain}", family_name(family)),
        }
    }

    /// `DELCHAIN`: chain `FAMILY TABLE CHAIN` (it must be empty and not jumped to).
    pub fn delete_chain(family: u8, table: &str, chain: &str) -> Self {
        NftMessage {
            kind: msg::DELCHAIN,
            flags: 0,
            family,
            attrs: vec![
                Attr::Str(attr::NFTA_CHAIN_TABLE, table.to_owned()),
                Attr::Str(attr::NFTA_CHAIN_NAME, chain.to_owned()),
            ],
            description: format!("delete chain {} {table} {chain}", family_name(family)),
        }
    }
}

/// nft's name of an `NFPROTO_*` family.
fn family_name(family: u8) -> &'static str {
    match family {
        attr::NFPROTO_INET => "inet",
        attr::NFPROTO_IPV4 => "ip",
        attr::NFPROTO_IPV6 => "ip6",
        _ => "family",
    }
}
