//! Dump requests and the kernel-side filter (`CTA_FILTER`, kernel 5.8+) they may carry.

use std::net::IpAddr;

use super::attr::*;
use super::message::{ConntrackEntry, Tuple};

/// Fields of one direction the kernel should match during a dump (`CTA_FILTER`, kernel 5.8+).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TupleMatch {
    /// Source address.
    pub src: Option<IpAddr>,
    /// Destination address.
    pub dst: Option<IpAddr>,
    /// Protocol number (required by the kernel for port matching).
    pub protocol: Option<u8>,
    /// Source port.
    pub src_port: Option<u16>,
    /// Destination port.
    pub dst_port: Option<u16>,
}

impl TupleMatch {
    fn flags(&self) -> u32 {
        let mut f = 0;
        if self.src.is_some() {
            f |= CTA_FILTER_F_CTA_IP_SRC;
        }
        if self.dst.is_some() {
            f |= CTA_FILTER_F_CTA_IP_DST;
        }
        if self.protocol.is_some() {
            f |= CTA_FILTER_F_CTA_PROTO_NUM;
            if self.src_port.is_some() {
                f |= CTA_FILTER_F_CTA_PROTO_SRC_PORT;
            }
            if self.dst_port.is_some() {
                f |= CTA_FILTER_F_CTA_PROTO_DST_PORT;
            }
        }
        f
    }

    /// Whether the kernel's `CTA_FILTER` lets `tuple` through: every field this names matches,
    /// except that the kernel compares ports for TCP and UDP only.
    pub fn matches(&self, tuple: &Tuple) -> bool {
        agrees(self.src, tuple.src)
            && agrees(self.dst, tuple.dst)
            && agrees(self.protocol, tuple.protocol)
            && (!ports_checked_by_kernel(tuple.protocol)
                || (agrees(self.src_port.map(Some), tuple.src_port)
                    && agrees(self.dst_port.map(Some), tuple.dst_port)))
    }

    pub(crate) fn encode(&self, w: &mut Writer<'_>, kind: u16) {
        let tuple = w.begin_nested(kind);
        if self.src.is_some() || self.dst.is_some() {
            let ip = w.begin_nested(CTA_TUPLE_IP);
            put_ip(w, self.src, CTA_IP_V4_SRC, CTA_IP_V6_SRC);
            put_ip(w, self.dst, CTA_IP_V4_DST, CTA_IP_V6_DST);
            w.end_nested(ip);
        }
        if let Some(protocol) = self.protocol {
            let proto = w.begin_nested(CTA_TUPLE_PROTO);
            w.attr(CTA_PROTO_NUM, &[protocol]);
            if let Some(port) = self.src_port {
                w.attr(CTA_PROTO_SRC_PORT, &port.to_be_bytes());
            }
            if let Some(port) = self.dst_port {
                w.attr(CTA_PROTO_DST_PORT, &port.to_be_bytes());
            }
            w.end_nested(proto);
        }
        w.end_nested(tuple);
    }
}

/// True when `want` is unset or equal to `have`.
fn agrees<T: PartialEq>(want: Option<T>, have: T) -> bool {
    match want {
        Some(w) => w == have,
        None => true,
    }
}

/// The kernel's `ctnetlink_filter_match_tuple` compares ports for TCP and UDP only.
fn ports_checked_by_kernel(protocol: u8) -> bool {
    protocol == 6 || protocol == 17
}

fn put_ip(w: &mut Writer<'_>, addr: Option<IpAddr>, v4: u16, v6: u16) {
    match addr {
        Some(IpAddr::V4(a)) => w.attr(v4, &a.octets()),
        Some(IpAddr::V6(a)) => w.attr(v6, &a.octets()),
        None => {}
    }
}

/// What the kernel is asked to filter during a dump: the family in `nfgenmsg` (0 = all) and,
/// when the family is set, `CTA_FILTER` on the original and reply tuples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DumpFilter {
    /// `AF_INET`, `AF_INET6`, or 0 for both.
    pub family: u8,
    /// Fields of the original tuple (ignored when `family` is 0: the kernel needs it).
    pub orig: TupleMatch,
    /// Fields of the reply tuple (ignored when `family` is 0).
    pub reply: TupleMatch,
}

impl DumpFilter {
    /// True when the request carries a `CTA_FILTER` attribute.
    pub fn uses_cta_filter(&self) -> bool {
        self.family != 0 && (self.orig.flags() | self.reply.flags()) != 0
    }

    /// What the kernel applies if it honours the request.
    pub fn matches(&self, entry: &ConntrackEntry<'_>) -> bool {
        if self.family == 0 {
            return true;
        }
        entry.family == self.family
            && (!self.uses_cta_filter()
                || (self.orig.matches(&entry.orig) && self.reply.matches(&entry.reply)))
    }
}

/// Appends a dump request (`IPCTNL_MSG_CT_GET` with `NLM_F_DUMP`) to `buf`.
pub fn encode_dump(buf: &mut Vec<u8>, seq: u32, filter: &DumpFilter) {
    let mut w = Writer::message(
        buf,
        IPCTNL_MSG_CT_GET,
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        filter.family,
    );
    if filter.uses_cta_filter() {
        let (orig_flags, reply_flags) = (filter.orig.flags(), filter.reply.flags());
        if orig_flags != 0 {
            filter.orig.encode(&mut w, CTA_TUPLE_ORIG);
        }
        if reply_flags != 0 {
            filter.reply.encode(&mut w, CTA_TUPLE_REPLY);
        }
        let nest = w.begin_nested(CTA_FILTER);
        w.attr(CTA_FILTER_ORIG_FLAGS, &orig_flags.to_ne_bytes());
        w.attr(CTA_FILTER_REPLY_FLAGS, &reply_flags.to_ne_bytes());
        w.end_nested(nest);
    }
    w.finish();
}
