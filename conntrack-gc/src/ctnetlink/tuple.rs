//! A conntrack tuple (one direction of an entry) and the kernel-side match on one
//! (`CTA_FILTER`); both the parser and the dump request use them.

use std::net::IpAddr;

use super::attr::*;

/// One direction's tuple of a conntrack entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tuple {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IP protocol number (17 UDP, 6 TCP, 132 SCTP...).
    pub protocol: u8,
    /// Source port (TCP/UDP/SCTP/DCCP/UDP-Lite), `None` for port-less protocols.
    pub src_port: Option<u16>,
    /// Destination port, `None` for port-less protocols.
    pub dst_port: Option<u16>,
}

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
    pub(crate) fn flags(&self) -> u32 {
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
