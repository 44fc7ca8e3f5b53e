//! Reading nf_tables back: dump requests (`GETTABLE`/`GETCHAIN`/`GETRULE` with `NLM_F_DUMP`)
//! for one family, and their replies parsed into [`NftReply`] (tables, chains, rules with the
//! verdicts their `immediate` expressions carry). What is not understood is kept as an
//! `Other` (a message kind, an expression name); a truncated reply is an error.

use netlink_packet_core::{NLMSG_ERROR, NLM_F_DUMP};

use crate::attr::{
    self, msg, NFTA_DATA_VERDICT, NFTA_EXPR_DATA, NFTA_EXPR_NAME, NFTA_LIST_ELEM,
    NFTA_VERDICT_CHAIN, NFTA_VERDICT_CODE, NFT_GOTO, NFT_JUMP, NLMSG_DONE, NLM_F_DUMP_INTR,
};
use crate::error::NftablesError;
use crate::message::NftMessage;

const HEADER_LEN: usize = 16;
const NFGENMSG_LEN: usize = 4;
const NLA_HEADER_LEN: usize = 4;
const NLA_TYPE_MASK: u16 = 0x3fff;
const NFTA_IMMEDIATE_DREG: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;
const NFTA_TABLE_HANDLE: u16 = 4;
/// `NLM_F_MULTI`: one part of a multipart answer.
const NLM_F_MULTI: u16 = 2;

impl NftMessage {
    /// A dump request of every object of `kind` (`msg::GETTABLE`, `GETCHAIN`, `GETRULE`) in
    /// `family` (`NFPROTO_IPV4`, `NFPROTO_IPV6`, …).
    pub fn dump(kind: u8, family: u8) -> Self {
        NftMessage {
            kind,
            flags: NLM_F_DUMP,
            family,
            attrs: vec![],
            description: format!("dump {} of family {family}", kind_name(kind)),
        }
    }
}

fn kind_name(kind: u8) -> &'static str {
    match kind {
        msg::GETTABLE => "tables",
        msg::GETCHAIN => "chains",
        msg::GETRULE => "rules",
        _ => "objects",
    }
}

/// A table, as dumped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpedTable {
    /// `nfgen_family`.
    pub family: u8,
    /// Its name.
    pub name: String,
    /// Its handle.
    pub handle: u64,
}

/// A chain, as dumped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpedChain {
    /// `nfgen_family`.
    pub family: u8,
    /// Its table.
    pub table: String,
    /// Its name.
    pub name: String,
    /// Its handle.
    pub handle: u64,
    /// Whether it is a base chain (has a hook).
    pub base: bool,
}

/// A rule, as dumped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpedRule {
    /// `nfgen_family`.
    pub family: u8,
    /// Its table.
    pub table: String,
    /// Its chain.
    pub chain: String,
    /// Its handle (what deletes it).
    pub handle: u64,
    /// Its expressions, in order.
    pub exprs: Vec<RuleExpr>,
}

impl DumpedRule {
    /// The chain a `jump`/`goto` verdict of the rule names, if any.
    pub fn target(&self) -> Option<&str> {
        self.exprs.iter().find_map(|e| match e {
            RuleExpr::Verdict(RuleVerdict::Jump(chain) | RuleVerdict::Goto(chain)) => {
                Some(chain.as_str())
            }
            _ => None,
        })
    }
}

/// One expression of a dumped rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleExpr {
    /// `immediate reg 0 VERDICT`.
    Verdict(RuleVerdict),
    /// Any other expression (iptables-nft's `match`/`target`, `cmp`, `payload`, …), by name.
    Other(String),
}

/// A verdict of an `immediate` expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleVerdict {
    /// `jump CHAIN`.
    Jump(String),
    /// `goto CHAIN`.
    Goto(String),
    /// Another verdict code (`accept`, `drop`, `return`, …).
    Code(i32),
}

/// One message of a dump's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NftReply {
    /// `NEWTABLE`.
    Table(DumpedTable),
    /// `NEWCHAIN`.
    Chain(DumpedChain),
    /// `NEWRULE`.
    Rule(DumpedRule),
    /// `NLMSG_DONE`: the dump is complete.
    Done,
    /// `NLMSG_ERROR` with a non-zero errno: the kernel refused the dump.
    Error(i32),
    /// Any other message type.
    Other(u16),
}

/// The attributes of a netlink attribute stream: `(type without flags, payload)`.
fn attributes(mut bytes: &[u8]) -> impl Iterator<Item = Result<(u16, &[u8]), NftablesError>> {
    std::iter::from_fn(move || {
        if bytes.is_empty() {
            return None;
        }
        if bytes.len() < NLA_HEADER_LEN {
            bytes = &[];
            return Some(Err(NftablesError::Malformed("attribute header")));
        }
        let len = usize::from(u16::from_ne_bytes([bytes[0], bytes[1]]));
        let kind = u16::from_ne_bytes([bytes[2], bytes[3]]) & NLA_TYPE_MASK;
        if len < NLA_HEADER_LEN || len > bytes.len() {
            bytes = &[];
            return Some(Err(NftablesError::Malformed("attribute length")));
        }
        let payload = &bytes[NLA_HEADER_LEN..len];
        let aligned = (len + 3) & !3;
        bytes = bytes.get(aligned..).unwrap_or_default();
        Some(Ok((kind, payload)))
    })
}

fn string(payload: &[u8]) -> Result<String, NftablesError> {
    let text = payload.split(|b| *b == 0).next().unwrap_or_default();
    String::from_utf8(text.to_vec()).map_err(|_| NftablesError::Malformed("name not UTF-8"))
}

fn be_u64(payload: &[u8]) -> Result<u64, NftablesError> {
    let bytes: [u8; 8] = payload
        .try_into()
        .map_err(|_| NftablesError::Malformed("handle length"))?;
    Ok(u64::from_be_bytes(bytes))
}

fn be_i32(payload: &[u8]) -> Result<i32, NftablesError> {
    let bytes: [u8; 4] = payload
        .try_into()
        .map_err(|_| NftablesError::Malformed("verdict code length"))?;
    Ok(i32::from_be_bytes(bytes))
}

/// The header fields of one message (as cut by `split_messages`): type, flags, and the
/// payload after `struct nlmsghdr`.
pub(crate) fn header(message: &[u8]) -> Result<(u16, u16, &[u8]), NftablesError> {
    if message.len() < HEADER_LEN {
        return Err(NftablesError::Malformed("message header"));
    }
    let kind = u16::from_ne_bytes([message[4], message[5]]);
    let flags = u16::from_ne_bytes([message[6], message[7]]);
    Ok((kind, flags, &message[HEADER_LEN..]))
}

/// Parses one message of a dump's answer.
pub fn parse_reply(message: &[u8]) -> Result<NftReply, NftablesError> {
    let (kind, _, payload) = header(message)?;
    if kind == NLMSG_DONE {
        return Ok(NftReply::Done);
    }
    if kind == NLMSG_ERROR {
        let code: [u8; 4] = payload
            .get(..4)
            .and_then(|c| c.try_into().ok())
            .ok_or(NftablesError::Malformed("error code"))?;
        return Ok(NftReply::Error(i32::from_ne_bytes(code).wrapping_neg()));
    }
    if kind >> 8 != attr::NFNL_SUBSYS_NFTABLES {
        return Ok(NftReply::Other(kind));
    }
    if payload.len() < NFGENMSG_LEN {
        return Err(NftablesError::Malformed("nfgenmsg"));
    }
    let family = payload[0];
    let attrs = &payload[NFGENMSG_LEN..];
    match (kind & 0xff) as u8 {
        msg::NEWTABLE => parse_table(family, attrs).map(NftReply::Table),
        msg::NEWCHAIN => parse_chain(family, attrs).map(NftReply::Chain),
        msg::NEWRULE => parse_rule(family, attrs).map(NftReply::Rule),
        _ => Ok(NftReply::Other(kind)),
    }
}

impl NftMessage {
    /// `GETGEN`: asks for the ruleset's generation (answered by one `NEWGEN`).
    pub fn get_generation() -> Self {
        NftMessage {
            kind: msg::GETGEN,
            flags: 0,
            family: 0,
            attrs: vec![],
            description: "get the ruleset generation".to_owned(),
        }
    }
}

/// The generation (`NFTA_GEN_ID`) a `NEWGEN` message carries; `None` for any other message.
pub fn parse_generation(message: &[u8]) -> Result<Option<u32>, NftablesError> {
    let (kind, _, payload) = header(message)?;
    if kind != (attr::NFNL_SUBSYS_NFTABLES << 8) | u16::from(msg::NEWGEN) {
        return Ok(None);
    }
    let attrs = payload
        .get(NFGENMSG_LEN..)
        .ok_or(NftablesError::Malformed("nfgenmsg"))?;
    for attr in attributes(attrs) {
        if let (attr::NFTA_GEN_ID, p) = attr? {
            let bytes: [u8; 4] = p
                .try_into()
                .map_err(|_| NftablesError::Malformed("generation length"))?;
            return Ok(Some(u32::from_be_bytes(bytes)));
        }
    }
    Err(NftablesError::Malformed("generation without NFTA_GEN_ID"))
}

fn parse_table(family: u8, attrs: &[u8]) -> Result<DumpedTable, NftablesError> {
    let mut table = DumpedTable {
        family,
        name: String::new(),
        handle: 0,
    };
    for attr in attributes(attrs) {
        match attr? {
            (attr::NFTA_TABLE_NAME, p) => table.name = string(p)?,
            (NFTA_TABLE_HANDLE, p) => table.handle = be_u64(p)?,
            _ => {}
        }
    }
    Ok(table)
}

fn parse_chain(family: u8, attrs: &[u8]) -> Result<DumpedChain, NftablesError> {
    let mut chain = DumpedChain {
        family,
        table: String::new(),
        name: String::new(),
        handle: 0,
        base: false,
    };
    for attr in attributes(attrs) {
        match attr? {
            (attr::NFTA_CHAIN_TABLE, p) => chain.table = string(p)?,
            (attr::NFTA_CHAIN_NAME, p) => chain.name = string(p)?,
            (attr::NFTA_CHAIN_HANDLE, p) => chain.handle = be_u64(p)?,
            (attr::NFTA_CHAIN_HOOK, _) => chain.base = true,
            _ => {}
        }
    }
    Ok(chain)
}

fn parse_rule(family: u8, attrs: &[u8]) -> Result<DumpedRule, NftablesError> {
    let mut rule = DumpedRule {
        family,
        table: String::new(),
        chain: String::new(),
        handle: 0,
        exprs: vec![],
    };
    for attr in attributes(attrs) {
        match attr? {
            (attr::NFTA_RULE_TABLE, p) => rule.table = string(p)?,
            (attr::NFTA_RULE_CHAIN, p) => rule.chain = string(p)?,
            (attr::NFTA_RULE_HANDLE, p) => rule.handle = be_u64(p)?,
            (attr::NFTA_RULE_EXPRESSIONS, p) => {
                for element in attributes(p) {
                    let (kind, element) = element?;
                    if kind == NFTA_LIST_ELEM {
                        rule.exprs.push(parse_expr(element)?);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(rule)
}

fn parse_expr(element: &[u8]) -> Result<RuleExpr, NftablesError> {
    let mut name = String::new();
    let mut data: &[u8] = &[];
    for attr in attributes(element) {
        match attr? {
            (NFTA_EXPR_NAME, p) => name = string(p)?,
            (NFTA_EXPR_DATA, p) => data = p,
            _ => {}
        }
    }
    if name != "immediate" {
        return Ok(RuleExpr::Other(name));
    }
    let mut verdict_register = false;
    let mut verdict = None;
    for attr in attributes(data) {
        match attr? {
            (NFTA_IMMEDIATE_DREG, p) => verdict_register = p == 0u32.to_be_bytes(),
            (NFTA_IMMEDIATE_DATA, p) => {
                for inner in attributes(p) {
                    if let (NFTA_DATA_VERDICT, v) = inner? {
                        verdict = Some(parse_verdict(v)?);
                    }
                }
            }
            _ => {}
        }
    }
    match verdict {
        Some(verdict) if verdict_register => Ok(RuleExpr::Verdict(verdict)),
        _ => Ok(RuleExpr::Other(name)),
    }
}

fn parse_verdict(attrs: &[u8]) -> Result<RuleVerdict, NftablesError> {
    let mut code = None;
    let mut chain = None;
    for attr in attributes(attrs) {
        match attr? {
            (NFTA_VERDICT_CODE, p) => code = Some(be_i32(p)?),
            (NFTA_VERDICT_CHAIN, p) => chain = Some(string(p)?),
            _ => {}
        }
    }
    let code = code.ok_or(NftablesError::Malformed("verdict without a code"))?;
    Ok(match (code, chain) {
        (NFT_JUMP, Some(chain)) => RuleVerdict::Jump(chain),
        (NFT_GOTO, Some(chain)) => RuleVerdict::Goto(chain),
        (code, _) => RuleVerdict::Code(code),
    })
}

/// The answer to one dump request (sans-io): every object, until `NLMSG_DONE`.
#[derive(Debug, Default)]
pub struct DumpAnswers {
    /// The objects, in the order the kernel sent them.
    pub replies: Vec<NftReply>,
    /// Whether `NLMSG_DONE` (or an error) arrived.
    pub done: bool,
    /// Whether a message carried `NLM_F_DUMP_INTR` (the ruleset changed while dumped: dump
    /// again).
    pub interrupted: bool,
    /// The kernel's errno, if it refused the dump.
    pub errno: Option<i32>,
    /// The raw messages of other subsystems (an ipset listing), for their own parsers.
    pub other_messages: Vec<Vec<u8>>,
}

impl DumpAnswers {
    /// Takes one datagram from the socket.
    pub fn feed(&mut self, datagram: &[u8]) -> Result<(), NftablesError> {
        for message in netlink_base::split_messages(datagram) {
            let (_, flags, _) = header(message)?;
            if flags & NLM_F_DUMP_INTR != 0 && flags & NLM_F_MULTI != 0 {
                self.interrupted = true;
            }
            match parse_reply(message)? {
                NftReply::Done => self.done = true,
                NftReply::Error(0) => {}
                NftReply::Error(errno) => {
                    self.errno = Some(errno);
                    self.done = true;
                }
                reply @ NftReply::Other(_) => {
                    self.other_messages.push(message.to_vec());
                    self.replies.push(reply);
                }
                reply => self.replies.push(reply),
            }
        }
        Ok(())
    }
}
