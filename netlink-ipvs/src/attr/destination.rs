//! Real server attributes (`IPVS_DEST_ATTR_*`).

use netlink_packet_core::{
    DecodeError, DefaultNla, Emitable, ErrorContext, Nla, NlaBuffer, Parseable,
};

use super::{address_value, parse_nested, port_value, u16_value, u32_value, StatsAttribute};

const IPVS_DEST_ATTR_ADDR: u16 = 1;
const IPVS_DEST_ATTR_PORT: u16 = 2;
const IPVS_DEST_ATTR_FWD_METHOD: u16 = 3;
const IPVS_DEST_ATTR_WEIGHT: u16 = 4;
const IPVS_DEST_ATTR_U_THRESH: u16 = 5;
const IPVS_DEST_ATTR_L_THRESH: u16 = 6;
const IPVS_DEST_ATTR_ACTIVE_CONNS: u16 = 7;
const IPVS_DEST_ATTR_INACT_CONNS: u16 = 8;
const IPVS_DEST_ATTR_PERSIST_CONNS: u16 = 9;
const IPVS_DEST_ATTR_STATS: u16 = 10;
const IPVS_DEST_ATTR_ADDR_FAMILY: u16 = 11;
const IPVS_DEST_ATTR_STATS64: u16 = 12;
const IPVS_DEST_ATTR_TUN_TYPE: u16 = 13;
const IPVS_DEST_ATTR_TUN_PORT: u16 = 14;
const IPVS_DEST_ATTR_TUN_FLAGS: u16 = 15;

/// An attribute nested in `IPVS_CMD_ATTR_DEST`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestinationAttribute {
    /// The 16-byte address union.
    Address([u8; 16]),
    /// Real port (host order here, big-endian on the wire).
    Port(u16),
    /// Forwarding method (`IP_VS_CONN_F_*` & `IP_VS_CONN_F_FWD_MASK`).
    ForwardMethod(u32),
    /// Weight.
    Weight(u32),
    /// Upper connection threshold.
    UpperThreshold(u32),
    /// Lower connection threshold.
    LowerThreshold(u32),
    /// Active connections (replies only).
    ActiveConnections(u32),
    /// Inactive connections (replies only).
    InactiveConnections(u32),
    /// Persistent connection templates (replies only).
    PersistentConnections(u32),
    /// 32-bit statistics.
    Stats(Vec<StatsAttribute>),
    /// Address family of the destination when it differs from the service's (tunnels).
    AddressFamily(u16),
    /// 64-bit statistics.
    Stats64(Vec<StatsAttribute>),
    /// Tunnel type (`IP_VS_CONN_F_TUNNEL_TYPE_*`).
    TunnelType(u8),
    /// Tunnel port (host order here, big-endian on the wire).
    TunnelPort(u16),
    /// Tunnel encapsulation flags.
    TunnelFlags(u16),
    /// An attribute this crate does not know, kept as it came.
    Other(DefaultNla),
}

impl Nla for DestinationAttribute {
    fn value_len(&self) -> usize {
        use DestinationAttribute as D;
        match self {
            D::Address(_) => 16,
            D::Port(_) | D::AddressFamily(_) | D::TunnelPort(_) | D::TunnelFlags(_) => 2,
            D::TunnelType(_) => 1,
            D::ForwardMethod(_)
            | D::Weight(_)
            | D::UpperThreshold(_)
            | D::LowerThreshold(_)
            | D::ActiveConnections(_)
            | D::InactiveConnections(_)
            | D::PersistentConnections(_) => 4,
            D::Stats(n) | D::Stats64(n) => n.as_slice().buffer_len(),
            D::Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        use DestinationAttribute as D;
        match self {
            D::Address(_) => IPVS_DEST_ATTR_ADDR,
            D::Port(_) => IPVS_DEST_ATTR_PORT,
            D::ForwardMethod(_) => IPVS_DEST_ATTR_FWD_METHOD,
            D::Weight(_) => IPVS_DEST_ATTR_WEIGHT,
            D::UpperThreshold(_) => IPVS_DEST_ATTR_U_THRESH,
            D::LowerThreshold(_) => IPVS_DEST_ATTR_L_THRESH,
            D::ActiveConnections(_) => IPVS_DEST_ATTR_ACTIVE_CONNS,
            D::InactiveConnections(_) => IPVS_DEST_ATTR_INACT_CONNS,
            D::PersistentConnections(_) => IPVS_DEST_ATTR_PERSIST_CONNS,
            D::Stats(_) => IPVS_DEST_ATTR_STATS,
            D::AddressFamily(_) => IPVS_DEST_ATTR_ADDR_FAMILY,
            D::Stats64(_) => IPVS_DEST_ATTR_STATS64,
            D::TunnelType(_) => IPVS_DEST_ATTR_TUN_TYPE,
            D::TunnelPort(_) => IPVS_DEST_ATTR_TUN_PORT,
            D::TunnelFlags(_) => IPVS_DEST_ATTR_TUN_FLAGS,
            D::Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        use DestinationAttribute as D;
        match self {
            D::Address(bytes) => buffer[..16].copy_from_slice(bytes),
            D::Port(port) | D::TunnelPort(port) => buffer[..2].copy_from_slice(&port.to_be_bytes()),
            D::AddressFamily(v) | D::TunnelFlags(v) => {
                buffer[..2].copy_from_slice(&v.to_ne_bytes())
            }
            D::TunnelType(v) => buffer[0] = *v,
            D::ForwardMethod(v)
            | D::Weight(v)
            | D::UpperThreshold(v)
            | D::LowerThreshold(v)
            | D::ActiveConnections(v)
            | D::InactiveConnections(v)
            | D::PersistentConnections(v) => buffer[..4].copy_from_slice(&v.to_ne_bytes()),
            D::Stats(n) | D::Stats64(n) => crate::attr::emit_list(n, buffer),
            D::Other(nla) => nla.emit_value(buffer),
        }
    }
}

impl DestinationAttribute {
    /// Parses one destination attribute.
    pub fn parse(buf: &NlaBuffer<&[u8]>) -> Result<Self, DecodeError> {
        use DestinationAttribute as D;
        let v = buf.value();
        Ok(match buf.kind() {
            IPVS_DEST_ATTR_ADDR => D::Address(address_value(v, "dest addr")?),
            IPVS_DEST_ATTR_PORT => D::Port(port_value(v, "dest port")?),
            IPVS_DEST_ATTR_FWD_METHOD => D::ForwardMethod(u32_value(v, "dest fwd method")?),
            IPVS_DEST_ATTR_WEIGHT => D::Weight(u32_value(v, "dest weight")?),
            IPVS_DEST_ATTR_U_THRESH => D::UpperThreshold(u32_value(v, "dest u_thresh")?),
            IPVS_DEST_ATTR_L_THRESH => D::LowerThreshold(u32_value(v, "dest l_thresh")?),
            IPVS_DEST_ATTR_ACTIVE_CONNS => D::ActiveConnections(u32_value(v, "dest activeconns")?),
            IPVS_DEST_ATTR_INACT_CONNS => D::InactiveConnections(u32_value(v, "dest inactconns")?),
            IPVS_DEST_ATTR_PERSIST_CONNS => {
                D::PersistentConnections(u32_value(v, "dest persistconns")?)
            }
            IPVS_DEST_ATTR_STATS => {
                D::Stats(parse_nested(v, StatsAttribute::parse).context("dest stats")?)
            }
            IPVS_DEST_ATTR_ADDR_FAMILY => D::AddressFamily(u16_value(v, "dest addr family")?),
            IPVS_DEST_ATTR_STATS64 => {
                D::Stats64(parse_nested(v, StatsAttribute::parse).context("dest stats64")?)
            }
            IPVS_DEST_ATTR_TUN_TYPE => match v {
                [t] => D::TunnelType(*t),
                _ => return Err(DecodeError::from("dest tunnel type: expected 1 byte")),
            },
            IPVS_DEST_ATTR_TUN_PORT => D::TunnelPort(port_value(v, "dest tunnel port")?),
            IPVS_DEST_ATTR_TUN_FLAGS => D::TunnelFlags(u16_value(v, "dest tunnel flags")?),
            _ => D::Other(DefaultNla::parse(buf)?),
        })
    }
}
