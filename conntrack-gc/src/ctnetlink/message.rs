//! ctnetlink messages: parse what the kernel sends (dumped entries, ACKs, errors, DONE) and
//! encode what we send (dump with kernel-side filter, delete, new). Sans-io: bytes in, bytes out.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{NetlinkBuffer, NlaBuffer, NlasIterator};

use super::attr::*;
use super::tuple::{Tuple, TupleMatch};
use crate::error::Error;

/// One entry of a dump, borrowing the receive buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConntrackEntry<'a> {
    /// L3 family from `nfgenmsg` (`AF_INET` or `AF_INET6`).
    pub family: u8,
    /// The original-direction tuple.
    pub orig: Tuple,
    /// The reply-direction tuple (after NAT: its source is the real endpoint).
    pub reply: Tuple,
    /// Conntrack zone (0 when the kernel sent none).
    pub zone: u16,
    /// The kernel's entry id (`CTA_ID`), used to delete exactly this entry.
    pub id: Option<u32>,
    /// `CTA_MARK`, if present.
    pub mark: Option<u32>,
    /// The value bytes of `CTA_TUPLE_ORIG`, copied verbatim into a delete request.
    pub orig_raw: &'a [u8],
}

/// One message received from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply<'a> {
    /// An entry of a dump (`IPCTNL_MSG_CT_NEW` from the kernel).
    Entry(ConntrackEntry<'a>),
    /// `NLMSG_ERROR` with code 0: the request with this sequence number succeeded.
    Ack {
        /// Sequence number of the acknowledged request.
        seq: u32,
    },
    /// `NLMSG_ERROR` with an errno (positive), or a `NLMSG_DONE` carrying one.
    Failed {
        /// Sequence number of the failed request.
        seq: u32,
        /// The errno, positive.
        errno: i32,
    },
    /// `NLMSG_DONE`: the dump is complete.
    Done {
        /// Sequence number of the dump.
        seq: u32,
    },
    /// Any other message (skipped).
    Other {
        /// Its netlink message type.
        msg_type: u16,
    },
}

fn malformed(reason: impl Into<String>) -> Error {
    Error::Malformed {
        reason: reason.into(),
    }
}

/// Iterates over the netlink messages in one `recvmsg` buffer.
///
/// Yields an error and stops at the first message that cannot be framed; a message whose
/// content cannot be parsed yields an error and iteration continues with the next one.
#[derive(Debug, Clone)]
pub struct Replies<'a> {
    rest: &'a [u8],
}

impl<'a> Replies<'a> {
    /// Messages in `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }
}

impl<'a> Iterator for Replies<'a> {
    type Item = Result<Reply<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let framed = NetlinkBuffer::new_checked(self.rest).map_err(|e| malformed(e.to_string()));
        let buffer = match framed {
            Ok(b) => b,
            Err(e) => {
                self.rest = &[];
                return Some(Err(e));
            }
        };
        let len = buffer.length() as usize;
        let (this, rest) = self.rest.split_at(len);
        self.rest = rest.get(align4(len) - len..).unwrap_or(&[]);
        Some(parse_message(this))
    }
}

/// Parses one framed netlink message (header included).
pub fn parse_message(bytes: &[u8]) -> Result<Reply<'_>, Error> {
    let buffer = NetlinkBuffer::new_checked(bytes).map_err(|e| malformed(e.to_string()))?;
    let msg_type = buffer.message_type();
    let seq = buffer.sequence_number();
    let payload = &bytes[NLMSG_HDR_LEN..buffer.length() as usize];
    match msg_type {
        NLMSG_ERROR | NLMSG_DONE => {
            let code = match payload.get(..4) {
                Some(b) => i32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
                None if msg_type == NLMSG_DONE => 0,
                None => return Err(malformed("NLMSG_ERROR shorter than its code")),
            };
            Ok(match (msg_type, code) {
                (_, c) if c < 0 => Reply::Failed {
                    seq,
                    errno: c.saturating_neg(),
                },
                (NLMSG_ERROR, _) => Reply::Ack { seq },
                _ => Reply::Done { seq },
            })
        }
        t if t == (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW => {
            parse_entry(payload).map(Reply::Entry)
        }
        _ => Ok(Reply::Other { msg_type }),
    }
}

fn nlas(bytes: &[u8]) -> impl Iterator<Item = Result<NlaBuffer<&[u8]>, Error>> {
    NlasIterator::new(bytes).map(|r| r.map_err(|e| malformed(e.to_string())))
}

/// The value of an attribute, borrowing the buffer it came from (not the `NlaBuffer`).
fn value_of(nla: NlaBuffer<&[u8]>) -> &[u8] {
    let len = usize::from(nla.length());
    // new_checked (in NlasIterator) verified 4 <= length <= buffer length.
    nla.into_inner().get(4..len).unwrap_or(&[])
}

fn be16(value: &[u8], what: &str) -> Result<u16, Error> {
    match value {
        [a, b] => Ok(u16::from_be_bytes([*a, *b])),
        _ => Err(malformed(format!("{what}: {} bytes, want 2", value.len()))),
    }
}

fn be32(value: &[u8], what: &str) -> Result<u32, Error> {
    match value {
        [a, b, c, d] => Ok(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => Err(malformed(format!("{what}: {} bytes, want 4", value.len()))),
    }
}

/// Parses the payload (`nfgenmsg` + attributes) of a dumped entry.
pub fn parse_entry(payload: &[u8]) -> Result<ConntrackEntry<'_>, Error> {
    let family = *payload.first().ok_or_else(|| malformed("no nfgenmsg"))?;
    let attrs = payload
        .get(NFGENMSG_LEN..)
        .ok_or_else(|| malformed("short nfgenmsg"))?;
    let (mut orig, mut reply, mut orig_raw) = (None, None, None);
    let (mut zone, mut id, mut mark) = (0, None, None);
    for nla in nlas(attrs) {
        let nla = nla?;
        let kind = nla.kind();
        let value = value_of(nla);
        match kind {
            CTA_TUPLE_ORIG => {
                orig = Some(parse_tuple(value)?);
                orig_raw = Some(value);
            }
            CTA_TUPLE_REPLY => reply = Some(parse_tuple(value)?),
            CTA_ZONE => zone = be16(value, "CTA_ZONE")?,
            CTA_ID => id = Some(be32(value, "CTA_ID")?),
            CTA_MARK => mark = Some(be32(value, "CTA_MARK")?),
            _ => {}
        }
    }
    match (orig, reply, orig_raw) {
        (Some(orig), Some(reply), Some(orig_raw)) => Ok(ConntrackEntry {
            family,
            orig,
            reply,
            zone,
            id,
            mark,
            orig_raw,
        }),
        _ => Err(malformed("entry without both tuples")),
    }
}

fn parse_tuple(bytes: &[u8]) -> Result<Tuple, Error> {
    let (mut src, mut dst, mut protocol) = (None, None, None);
    let (mut src_port, mut dst_port) = (None, None);
    for nla in nlas(bytes) {
        let nla = nla?;
        match nla.kind() {
            CTA_TUPLE_IP => {
                for ip in nlas(nla.value()) {
                    let ip = ip?;
                    let addr = parse_ip(ip.kind(), ip.value())?;
                    match ip.kind() {
                        CTA_IP_V4_SRC | CTA_IP_V6_SRC => src = addr,
                        CTA_IP_V4_DST | CTA_IP_V6_DST => dst = addr,
                        _ => {}
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for p in nlas(nla.value()) {
                    let p = p?;
                    match p.kind() {
                        CTA_PROTO_NUM => match p.value() {
                            [n] => protocol = Some(*n),
                            v => {
                                return Err(malformed(format!("CTA_PROTO_NUM: {} bytes", v.len())))
                            }
                        },
                        CTA_PROTO_SRC_PORT => src_port = Some(be16(p.value(), "source port")?),
                        CTA_PROTO_DST_PORT => dst_port = Some(be16(p.value(), "dest port")?),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    match (src, dst, protocol) {
        (Some(src), Some(dst), Some(protocol)) => Ok(Tuple {
            src,
            dst,
            protocol,
            src_port,
            dst_port,
        }),
        _ => Err(malformed("tuple without addresses or protocol")),
    }
}

fn parse_ip(kind: u16, value: &[u8]) -> Result<Option<IpAddr>, Error> {
    match kind {
        CTA_IP_V4_SRC | CTA_IP_V4_DST => <[u8; 4]>::try_from(value)
            .map(|b| Some(IpAddr::V4(Ipv4Addr::from(b))))
            .map_err(|_| malformed(format!("IPv4 address of {} bytes", value.len()))),
        CTA_IP_V6_SRC | CTA_IP_V6_DST => <[u8; 16]>::try_from(value)
            .map(|b| Some(IpAddr::V6(Ipv6Addr::from(b))))
            .map_err(|_| malformed(format!("IPv6 address of {} bytes", value.len()))),
        _ => Ok(None),
    }
}

/// The L3 family number (`AF_INET`/`AF_INET6`) of an address.
pub fn family_of(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => libc::AF_INET as u8,
        IpAddr::V6(_) => libc::AF_INET6 as u8,
    }
}

/// Appends a request deleting exactly `entry` (its original tuple, zone and id) to `buf`.
///
/// Always carries the tuple: a ctnetlink delete without one flushes the whole table.
pub fn encode_delete(buf: &mut Vec<u8>, seq: u32, entry: &ConntrackEntry<'_>) {
    let mut w = Writer::message(
        buf,
        IPCTNL_MSG_CT_DELETE,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        entry.family,
    );
    w.attr(CTA_TUPLE_ORIG | NLA_F_NESTED, entry.orig_raw);
    if entry.zone != 0 {
        w.attr(CTA_ZONE, &entry.zone.to_be_bytes());
    }
    if let Some(id) = entry.id {
        w.attr(CTA_ID, &id.to_be_bytes());
    }
    w.finish();
}

/// An entry to create with [`encode_new`] (tests and benchmarks fill tables with these).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewEntry {
    /// Original tuple; ports required for port-based protocols.
    pub orig: Tuple,
    /// Reply tuple; the inverse of `orig` unless NAT is being pretended.
    pub reply: Tuple,
    /// Seconds until it expires.
    pub timeout: u32,
    /// Zone (0 = default).
    pub zone: u16,
}

impl NewEntry {
    /// An entry with the reply tuple the exact inverse of `orig` (no NAT).
    pub fn plain(orig: Tuple, timeout: u32) -> Self {
        let reply = Tuple {
            src: orig.dst,
            dst: orig.src,
            protocol: orig.protocol,
            src_port: orig.dst_port,
            dst_port: orig.src_port,
        };
        Self {
            orig,
            reply,
            timeout,
            zone: 0,
        }
    }
}

fn put_tuple(w: &mut Writer<'_>, kind: u16, t: &Tuple) {
    TupleMatch {
        src: Some(t.src),
        dst: Some(t.dst),
        protocol: Some(t.protocol),
        src_port: t.src_port,
        dst_port: t.dst_port,
    }
    .encode(w, kind);
}

/// Appends a request creating `entry` (`IPCTNL_MSG_CT_NEW`, create-exclusive, acked) to `buf`.
pub fn encode_new(buf: &mut Vec<u8>, seq: u32, entry: &NewEntry) {
    let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
    let mut w = Writer::message(
        buf,
        IPCTNL_MSG_CT_NEW,
        flags,
        seq,
        family_of(entry.orig.src),
    );
    put_tuple(&mut w, CTA_TUPLE_ORIG, &entry.orig);
    put_tuple(&mut w, CTA_TUPLE_REPLY, &entry.reply);
    w.attr(CTA_TIMEOUT, &entry.timeout.to_be_bytes());
    if entry.zone != 0 {
        w.attr(CTA_ZONE, &entry.zone.to_be_bytes());
    }
    w.finish();
}
