//! Typed netlink attributes of the IPVS family, one module per kernel object.
//!
//! Every enum keeps unknown attributes in an `Other(DefaultNla)` variant, so replies from newer
//! kernels parse and re-emit unchanged.

mod destination;
mod service;
mod stats;

pub use destination::DestinationAttribute;
pub use service::ServiceAttribute;
pub use stats::{Stats, StatsAttribute, StatsCounter};

use netlink_packet_core::{
    parse_u32, DecodeError, DefaultNla, ErrorContext, Nla, NlaBuffer, NlasIterator, Parseable,
};

const IPVS_CMD_ATTR_SERVICE: u16 = 1;
const IPVS_CMD_ATTR_DEST: u16 = 2;
const IPVS_CMD_ATTR_TIMEOUT_TCP: u16 = 4;
const IPVS_CMD_ATTR_TIMEOUT_TCP_FIN: u16 = 5;
const IPVS_CMD_ATTR_TIMEOUT_UDP: u16 = 6;
const IPVS_INFO_ATTR_VERSION: u16 = 1;
const IPVS_INFO_ATTR_CONN_TAB_SIZE: u16 = 2;

/// A top-level attribute of an IPVS message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpvsAttribute {
    /// `IPVS_CMD_ATTR_SERVICE`: a nested virtual server.
    Service(Vec<ServiceAttribute>),
    /// `IPVS_CMD_ATTR_DEST`: a nested real server.
    Destination(Vec<DestinationAttribute>),
    /// `IPVS_CMD_ATTR_TIMEOUT_TCP` in seconds.
    TimeoutTcp(u32),
    /// `IPVS_CMD_ATTR_TIMEOUT_TCP_FIN` in seconds.
    TimeoutTcpFin(u32),
    /// `IPVS_CMD_ATTR_TIMEOUT_UDP` in seconds.
    TimeoutUdp(u32),
    /// `IPVS_INFO_ATTR_VERSION` (only in `GET_INFO` replies).
    Version(u32),
    /// `IPVS_INFO_ATTR_CONN_TAB_SIZE` (only in `GET_INFO` replies).
    ConnectionTableSize(u32),
    /// Anything else (daemon attributes, newer kernels), kept as it came.
    Other(DefaultNla),
}

impl Nla for IpvsAttribute {
    fn value_len(&self) -> usize {
        match self {
            IpvsAttribute::Service(nested) => nested.as_slice().buffer_len(),
            IpvsAttribute::Destination(nested) => nested.as_slice().buffer_len(),
            IpvsAttribute::TimeoutTcp(_)
            | IpvsAttribute::TimeoutTcpFin(_)
            | IpvsAttribute::TimeoutUdp(_)
            | IpvsAttribute::Version(_)
            | IpvsAttribute::ConnectionTableSize(_) => 4,
            IpvsAttribute::Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            IpvsAttribute::Service(_) => IPVS_CMD_ATTR_SERVICE,
            IpvsAttribute::Destination(_) => IPVS_CMD_ATTR_DEST,
            IpvsAttribute::TimeoutTcp(_) => IPVS_CMD_ATTR_TIMEOUT_TCP,
            IpvsAttribute::TimeoutTcpFin(_) => IPVS_CMD_ATTR_TIMEOUT_TCP_FIN,
            IpvsAttribute::TimeoutUdp(_) => IPVS_CMD_ATTR_TIMEOUT_UDP,
            IpvsAttribute::Version(_) => IPVS_INFO_ATTR_VERSION,
            IpvsAttribute::ConnectionTableSize(_) => IPVS_INFO_ATTR_CONN_TAB_SIZE,
            IpvsAttribute::Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            IpvsAttribute::Service(nested) => crate::attr::emit_list(nested, buffer),
            IpvsAttribute::Destination(nested) => crate::attr::emit_list(nested, buffer),
            IpvsAttribute::TimeoutTcp(v)
            | IpvsAttribute::TimeoutTcpFin(v)
            | IpvsAttribute::TimeoutUdp(v)
            | IpvsAttribute::Version(v)
            | IpvsAttribute::ConnectionTableSize(v) => {
                buffer[..4].copy_from_slice(&v.to_ne_bytes())
            }
            IpvsAttribute::Other(nla) => nla.emit_value(buffer),
        }
    }
}

use netlink_packet_core::Emitable;

impl IpvsAttribute {
    /// Parses one top-level attribute; `info` selects the `GET_INFO` reply numbering, which
    /// reuses the numbers of the command attributes.
    pub fn parse(buf: &NlaBuffer<&[u8]>, info: bool) -> Result<Self, DecodeError> {
        let value = buf.value();
        Ok(match (info, buf.kind()) {
            (true, IPVS_INFO_ATTR_VERSION) => IpvsAttribute::Version(u32_value(value, "version")?),
            (true, IPVS_INFO_ATTR_CONN_TAB_SIZE) => {
                IpvsAttribute::ConnectionTableSize(u32_value(value, "connection table size")?)
            }
            (true, _) => IpvsAttribute::Other(DefaultNla::parse(buf)?),
            (false, IPVS_CMD_ATTR_SERVICE) => IpvsAttribute::Service(
                parse_nested(value, ServiceAttribute::parse).context("service attribute")?,
            ),
            (false, IPVS_CMD_ATTR_DEST) => IpvsAttribute::Destination(
                parse_nested(value, DestinationAttribute::parse)
                    .context("destination attribute")?,
            ),
            (false, IPVS_CMD_ATTR_TIMEOUT_TCP) => {
                IpvsAttribute::TimeoutTcp(u32_value(value, "tcp timeout")?)
            }
            (false, IPVS_CMD_ATTR_TIMEOUT_TCP_FIN) => {
                IpvsAttribute::TimeoutTcpFin(u32_value(value, "tcpfin timeout")?)
            }
            (false, IPVS_CMD_ATTR_TIMEOUT_UDP) => {
                IpvsAttribute::TimeoutUdp(u32_value(value, "udp timeout")?)
            }
            (false, _) => IpvsAttribute::Other(DefaultNla::parse(buf)?),
        })
    }
}

/// Emits a run of attributes. netlink-packet-core's flag setters clear each other's bit (an
/// attribute with both `NLA_F_NESTED` and `NLA_F_NET_BYTEORDER` loses one), so the type field
/// is written again as the attribute gives it, flags included: unknown attributes survive a
/// parse/emit round trip byte for byte (found by the `ipvs_reply` fuzz target).
pub(crate) fn emit_list<T: Nla>(attributes: &[T], buffer: &mut [u8]) {
    let mut offset = 0;
    for attribute in attributes {
        let length = attribute.buffer_len();
        attribute.emit(&mut buffer[offset..offset + length]);
        buffer[offset + 2..offset + 4].copy_from_slice(&attribute.kind().to_ne_bytes());
        offset += length;
    }
}

/// Parses a run of attributes with `parse_one`.
pub(crate) fn parse_nested<T>(
    bytes: &[u8],
    parse_one: impl Fn(&NlaBuffer<&[u8]>) -> Result<T, DecodeError>,
) -> Result<Vec<T>, DecodeError> {
    NlasIterator::new(bytes)
        .map(|nla| nla.and_then(|nla| parse_one(&nla)))
        .collect()
}

/// A `u32` attribute value of exactly four bytes.
pub(crate) fn u32_value(value: &[u8], what: &str) -> Result<u32, DecodeError> {
    if value.len() != 4 {
        return Err(DecodeError::from(format!(
            "{what}: expected 4 bytes, got {}",
            value.len()
        )));
    }
    parse_u32(value).context(what.to_owned())
}

/// A `u16` attribute value of exactly two bytes (host order).
pub(crate) fn u16_value(value: &[u8], what: &str) -> Result<u16, DecodeError> {
    match value {
        [a, b] => Ok(u16::from_ne_bytes([*a, *b])),
        _ => Err(DecodeError::from(format!(
            "{what}: expected 2 bytes, got {}",
            value.len()
        ))),
    }
}

/// A big-endian port of exactly two bytes.
pub(crate) fn port_value(value: &[u8], what: &str) -> Result<u16, DecodeError> {
    u16_value(value, what).map(u16::from_be)
}

/// A NUL-terminated string (the terminator is not part of the result).
pub(crate) fn string_value(value: &[u8], what: &str) -> Result<String, DecodeError> {
    let end = value.iter().position(|b| *b == 0).unwrap_or(value.len());
    String::from_utf8(value[..end].to_vec()).map_err(|e| DecodeError::from(format!("{what}: {e}")))
}

/// The 16-byte `union nf_inet_addr` the kernel always uses for addresses.
pub(crate) fn address_value(value: &[u8], what: &str) -> Result<[u8; 16], DecodeError> {
    value.try_into().map_err(|_| {
        DecodeError::from(format!(
            "{what}: expected a 16-byte address union, got {} bytes",
            value.len()
        ))
    })
}

/// Emits a string with its NUL terminator.
pub(crate) fn emit_string(buffer: &mut [u8], value: &str) {
    buffer[..value.len()].copy_from_slice(value.as_bytes());
    buffer[value.len()] = 0;
}
