//! Kernel ipsets over nfnetlink (`NFNL_SUBSYS_IPSET`, `include/uapi/linux/netfilter/ipset/
//! ip_set.h`): list the sets' names, destroy one by name. Every request carries
//! `IPSET_ATTR_PROTOCOL` (6, the oldest protocol current kernels accept). A destroy always
//! names its set: without a name the kernel destroys every set.

use netlink_packet_core::{NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};

use crate::attr::{Attr, NFNETLINK_V0};
use crate::batch::{emit_header, set_length};
use crate::dump::header;
use crate::error::NftablesError;
use crate::handle::NftablesHandle;

/// `NFNL_SUBSYS_IPSET`.
pub const NFNL_SUBSYS_IPSET: u16 = 6;
/// `IPSET_PROTOCOL` of the oldest kernels this speaks to (`IPSET_PROTOCOL_MIN` today).
pub const IPSET_PROTOCOL: u8 = 6;
/// `IPSET_CMD_DESTROY`.
pub const IPSET_CMD_DESTROY: u8 = 3;
/// `IPSET_CMD_LIST`.
pub const IPSET_CMD_LIST: u8 = 7;
/// `IPSET_ATTR_PROTOCOL` (u8).
pub const IPSET_ATTR_PROTOCOL: u16 = 1;
/// `IPSET_ATTR_SETNAME` (string).
pub const IPSET_ATTR_SETNAME: u16 = 2;
/// `IPSET_ATTR_FLAGS` (big-endian u32).
pub const IPSET_ATTR_FLAGS: u16 = 6;
/// `IPSET_FLAG_LIST_SETNAME`: list names only.
pub const IPSET_FLAG_LIST_SETNAME: u32 = 1 << 1;
/// `IPSET_ERR_BUSY`: the set is referenced.
pub const IPSET_ERR_BUSY: i32 = 4100;
/// `ENOENT`: no such set.
const ENOENT: i32 = 2;
/// `AF_INET`, the `nfgen_family` `ipset` sends.
const AF_INET: u8 = 2;

/// What destroying a set did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destroyed {
    /// The set is gone.
    Destroyed,
    /// There was no such set.
    Absent,
}

fn emit(command: u8, flags: u16, sequence: u32, attrs: &[Attr], out: &mut Vec<u8>) {
    let start = out.len();
    emit_header(
        out,
        (NFNL_SUBSYS_IPSET << 8) | u16::from(command),
        NLM_F_REQUEST | flags,
        sequence,
        AF_INET,
        0,
    );
    debug_assert_eq!(out[start + 17], NFNETLINK_V0);
    for attr in attrs {
        out.extend_from_slice(&attr.to_bytes());
    }
    set_length(out, start);
}

/// `IPSET_CMD_LIST` of every set, names only (a dump).
pub fn emit_list_names(sequence: u32, out: &mut Vec<u8>) {
    emit(
        IPSET_CMD_LIST,
        NLM_F_DUMP,
        sequence,
        &[
            Attr::Bytes(IPSET_ATTR_PROTOCOL, vec![IPSET_PROTOCOL]),
            Attr::U32(IPSET_ATTR_FLAGS, IPSET_FLAG_LIST_SETNAME),
        ],
        out,
    );
}

/// `IPSET_CMD_DESTROY` of set `name` (asks for an ACK).
pub fn emit_destroy(name: &SetName, sequence: u32, out: &mut Vec<u8>) {
    emit(
        IPSET_CMD_DESTROY,
        NLM_F_ACK,
        sequence,
        &[
            Attr::Bytes(IPSET_ATTR_PROTOCOL, vec![IPSET_PROTOCOL]),
            Attr::Str(IPSET_ATTR_SETNAME, name.0.clone()),
        ],
        out,
    );
}

/// A set's name: 1 to 31 bytes, no NUL (so that a destroy can never go without one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetName(String);

impl SetName {
    /// `None` for an empty name, one over 31 bytes or one with a NUL.
    pub fn new(name: &str) -> Option<Self> {
        let valid = !name.is_empty() && name.len() < 32 && !name.contains('\0');
        valid.then(|| SetName(name.to_owned()))
    }
}

/// The set named by one `IPSET_CMD_LIST` reply; `None` for a message of another kind.
pub fn parse_list_reply(message: &[u8]) -> Result<Option<String>, NftablesError> {
    let (kind, _, payload) = header(message)?;
    if kind != (NFNL_SUBSYS_IPSET << 8) | u16::from(IPSET_CMD_LIST) {
        return Ok(None);
    }
    let attrs = payload
        .get(4..)
        .ok_or(NftablesError::Malformed("nfgenmsg"))?;
    let mut rest = attrs;
    while rest.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
        let kind = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        if len < 4 || len > rest.len() {
            return Err(NftablesError::Malformed("attribute length"));
        }
        if kind == IPSET_ATTR_SETNAME {
            let name = rest[4..len].split(|b| *b == 0).next().unwrap_or_default();
            return String::from_utf8(name.to_vec())
                .map(Some)
                .map_err(|_| NftablesError::Malformed("set name not UTF-8"));
        }
        rest = rest.get((len + 3) & !3..).unwrap_or_default();
    }
    if rest.is_empty() {
        Err(NftablesError::Malformed("list reply without a set name"))
    } else {
        Err(NftablesError::Malformed("attribute header"))
    }
}

impl NftablesHandle {
    /// Every ipset's name (both families share one namespace).
    pub fn ipset_names(&mut self) -> Result<Vec<String>, NftablesError> {
        let mut names = Vec::new();
        let mut failed = None;
        let answers = self.dump_with(emit_list_names)?;
        if let Some(errno) = answers.errno {
            return Err(NftablesError::Refused {
                message: "list ipsets".to_owned(),
                errno,
                others: 0,
            });
        }
        for raw in answers.other_messages {
            match parse_list_reply(&raw) {
                Ok(Some(name)) => names.push(name),
                Ok(None) => {}
                Err(e) => failed = Some(e),
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(names),
        }
    }

    /// Destroys ipset `name`; a set a rule still references is [`NftablesError::SetInUse`].
    pub fn destroy_ipset(&mut self, name: &SetName) -> Result<Destroyed, NftablesError> {
        match self.acknowledged(|sequence, out| emit_destroy(name, sequence, out))? {
            0 => Ok(Destroyed::Destroyed),
            ENOENT => Ok(Destroyed::Absent),
            IPSET_ERR_BUSY => Err(NftablesError::SetInUse {
                set: name.0.clone(),
            }),
            errno => Err(NftablesError::Refused {
                message: format!("destroy ipset {}", name.0),
                errno,
                others: 0,
            }),
        }
    }
}
