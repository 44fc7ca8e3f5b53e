//! Virtual server attributes (`IPVS_SVC_ATTR_*`).

use netlink_packet_core::{
    DecodeError, DefaultNla, Emitable, ErrorContext, Nla, NlaBuffer, Parseable,
};

use super::{
    address_value, emit_string, parse_nested, port_value, string_value, u16_value, u32_value,
    StatsAttribute,
};

const IPVS_SVC_ATTR_AF: u16 = 1;
const IPVS_SVC_ATTR_PROTOCOL: u16 = 2;
const IPVS_SVC_ATTR_ADDR: u16 = 3;
const IPVS_SVC_ATTR_PORT: u16 = 4;
const IPVS_SVC_ATTR_FWMARK: u16 = 5;
const IPVS_SVC_ATTR_SCHED_NAME: u16 = 6;
const IPVS_SVC_ATTR_FLAGS: u16 = 7;
const IPVS_SVC_ATTR_TIMEOUT: u16 = 8;
const IPVS_SVC_ATTR_NETMASK: u16 = 9;
const IPVS_SVC_ATTR_STATS: u16 = 10;
const IPVS_SVC_ATTR_PE_NAME: u16 = 11;
const IPVS_SVC_ATTR_STATS64: u16 = 12;

/// An attribute nested in `IPVS_CMD_ATTR_SERVICE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceAttribute {
    /// `AF_INET` (2) or `AF_INET6` (10).
    AddressFamily(u16),
    /// IP protocol number.
    Protocol(u16),
    /// The 16-byte address union; the address family says how much of it is used.
    Address([u8; 16]),
    /// Virtual port (host order here, big-endian on the wire).
    Port(u16),
    /// Firewall mark of a fwmark service.
    FwMark(u32),
    /// Scheduler name.
    Scheduler(String),
    /// `struct ip_vs_flags`: the flags and the mask of the bits to change.
    Flags {
        /// Flag bits.
        flags: u32,
        /// Bits of `flags` that apply.
        mask: u32,
    },
    /// Persistence timeout in seconds.
    Timeout(u32),
    /// Persistence netmask (IPv4 mask, or IPv6 prefix length).
    Netmask(u32),
    /// 32-bit statistics.
    Stats(Vec<StatsAttribute>),
    /// Persistence engine name (e.g. `sip`).
    PersistenceEngine(String),
    /// 64-bit statistics.
    Stats64(Vec<StatsAttribute>),
    /// An attribute this crate does not know, kept as it came.
    Other(DefaultNla),
}

impl Nla for ServiceAttribute {
    fn value_len(&self) -> usize {
        match self {
            ServiceAttribute::AddressFamily(_)
            | ServiceAttribute::Protocol(_)
            | ServiceAttribute::Port(_) => 2,
            ServiceAttribute::Address(_) => 16,
            ServiceAttribute::FwMark(_)
            | ServiceAttribute::Timeout(_)
            | ServiceAttribute::Netmask(_) => 4,
            ServiceAttribute::Flags { .. } => 8,
            ServiceAttribute::Scheduler(s) | ServiceAttribute::PersistenceEngine(s) => s.len() + 1,
            ServiceAttribute::Stats(n) | ServiceAttribute::Stats64(n) => n.as_slice().buffer_len(),
            ServiceAttribute::Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            ServiceAttribute::AddressFamily(_) => IPVS_SVC_ATTR_AF,
            ServiceAttribute::Protocol(_) => IPVS_SVC_ATTR_PROTOCOL,
            ServiceAttribute::Address(_) => IPVS_SVC_ATTR_ADDR,
            ServiceAttribute::Port(_) => IPVS_SVC_ATTR_PORT,
            ServiceAttribute::FwMark(_) => IPVS_SVC_ATTR_FWMARK,
            ServiceAttribute::Scheduler(_) => IPVS_SVC_ATTR_SCHED_NAME,
            ServiceAttribute::Flags { .. } => IPVS_SVC_ATTR_FLAGS,
            ServiceAttribute::Timeout(_) => IPVS_SVC_ATTR_TIMEOUT,
            ServiceAttribute::Netmask(_) => IPVS_SVC_ATTR_NETMASK,
            ServiceAttribute::Stats(_) => IPVS_SVC_ATTR_STATS,
            ServiceAttribute::PersistenceEngine(_) => IPVS_SVC_ATTR_PE_NAME,
            ServiceAttribute::Stats64(_) => IPVS_SVC_ATTR_STATS64,
            ServiceAttribute::Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            ServiceAttribute::AddressFamily(v) | ServiceAttribute::Protocol(v) => {
                buffer[..2].copy_from_slice(&v.to_ne_bytes())
            }
            ServiceAttribute::Port(port) => buffer[..2].copy_from_slice(&port.to_be_bytes()),
            ServiceAttribute::Address(bytes) => buffer[..16].copy_from_slice(bytes),
            ServiceAttribute::FwMark(v)
            | ServiceAttribute::Timeout(v)
            | ServiceAttribute::Netmask(v) => buffer[..4].copy_from_slice(&v.to_ne_bytes()),
            ServiceAttribute::Flags { flags, mask } => {
                buffer[..4].copy_from_slice(&flags.to_ne_bytes());
                buffer[4..8].copy_from_slice(&mask.to_ne_bytes());
            }
            ServiceAttribute::Scheduler(s) | ServiceAttribute::PersistenceEngine(s) => {
                emit_string(buffer, s)
            }
            ServiceAttribute::Stats(n) | ServiceAttribute::Stats64(n) => {
                crate::attr::emit_list(n, buffer)
            }
            ServiceAttribute::Other(nla) => nla.emit_value(buffer),
        }
    }
}

impl ServiceAttribute {
    /// Parses one service attribute.
    pub fn parse(buf: &NlaBuffer<&[u8]>) -> Result<Self, DecodeError> {
        let value = buf.value();
        Ok(match buf.kind() {
            IPVS_SVC_ATTR_AF => ServiceAttribute::AddressFamily(u16_value(value, "service af")?),
            IPVS_SVC_ATTR_PROTOCOL => {
                ServiceAttribute::Protocol(u16_value(value, "service protocol")?)
            }
            IPVS_SVC_ATTR_ADDR => ServiceAttribute::Address(address_value(value, "service addr")?),
            IPVS_SVC_ATTR_PORT => ServiceAttribute::Port(port_value(value, "service port")?),
            IPVS_SVC_ATTR_FWMARK => ServiceAttribute::FwMark(u32_value(value, "service fwmark")?),
            IPVS_SVC_ATTR_SCHED_NAME => {
                ServiceAttribute::Scheduler(string_value(value, "service scheduler")?)
            }
            IPVS_SVC_ATTR_FLAGS => {
                if value.len() != 8 {
                    return Err(DecodeError::from(format!(
                        "service flags: expected 8 bytes, got {}",
                        value.len()
                    )));
                }
                ServiceAttribute::Flags {
                    flags: u32_value(&value[..4], "service flags")?,
                    mask: u32_value(&value[4..], "service flags mask")?,
                }
            }
            IPVS_SVC_ATTR_TIMEOUT => {
                ServiceAttribute::Timeout(u32_value(value, "service timeout")?)
            }
            IPVS_SVC_ATTR_NETMASK => {
                ServiceAttribute::Netmask(u32_value(value, "service netmask")?)
            }
            IPVS_SVC_ATTR_STATS => ServiceAttribute::Stats(
                parse_nested(value, StatsAttribute::parse).context("service stats")?,
            ),
            IPVS_SVC_ATTR_PE_NAME => {
                ServiceAttribute::PersistenceEngine(string_value(value, "service pe name")?)
            }
            IPVS_SVC_ATTR_STATS64 => ServiceAttribute::Stats64(
                parse_nested(value, StatsAttribute::parse).context("service stats64")?,
            ),
            _ => ServiceAttribute::Other(DefaultNla::parse(buf)?),
        })
    }
}
