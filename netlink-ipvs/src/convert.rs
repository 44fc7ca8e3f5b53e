//! Between plain types ([`VirtualServer`], [`RealServer`], ...) and attributes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::attr::{DestinationAttribute, ServiceAttribute, Stats};
use crate::error::EntryError;
use crate::scheduler::Scheduler;
use crate::types::{
    Family, ForwardMethod, Protocol, RealServer, RealServerKey, ServiceFlags, ServiceKey,
    TunnelKind, VirtualServer,
};

/// A virtual server as the kernel reports it, with its statistics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceEntry {
    /// The virtual server; [`VirtualServer::normalized`] masks the kernel-set bits.
    pub service: VirtualServer,
    /// Persistence engine, if any.
    pub persistence_engine: Option<String>,
    /// Statistics (the 64-bit set when the kernel sends it).
    pub stats: Stats,
}

/// A real server as the kernel reports it, with its connection counts and statistics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationEntry {
    /// The real server.
    pub real_server: RealServer,
    /// Its address family (differs from the service's for mixed-family tunnels).
    pub family: Family,
    /// Active connections.
    pub active_connections: u32,
    /// Inactive connections.
    pub inactive_connections: u32,
    /// Persistent connection templates.
    pub persistent_connections: u32,
    /// Statistics (the 64-bit set when the kernel sends it).
    pub stats: Stats,
}

pub(crate) fn family_number(family: Family) -> u16 {
    u16::from(family.number())
}

fn family_from_number(number: u16) -> Result<Family, EntryError> {
    Family::from_number(number).ok_or(EntryError::UnknownFamily(number))
}

/// The 16-byte union for an address (IPv4 in the first four bytes).
pub(crate) fn address_union(address: &IpAddr) -> [u8; 16] {
    let mut bytes = [0; 16];
    match address {
        IpAddr::V4(a) => bytes[..4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => bytes = a.octets(),
    }
    bytes
}

/// Reads the union by family, never by length.
fn address_from_union(bytes: &[u8; 16], family: Family) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(*bytes)),
    }
}

/// The attributes that identify a virtual server (enough for delete and for dumping its dests).
pub fn service_key_attributes(key: &ServiceKey) -> Vec<ServiceAttribute> {
    let mut attributes = vec![ServiceAttribute::AddressFamily(family_number(key.family()))];
    match key {
        ServiceKey::Address {
            protocol,
            address,
            port,
        } => {
            attributes.push(ServiceAttribute::Protocol(u16::from(protocol.number())));
            attributes.push(ServiceAttribute::Address(address_union(address)));
            attributes.push(ServiceAttribute::Port(*port));
        }
        ServiceKey::FwMark { mark, .. } => attributes.push(ServiceAttribute::FwMark(*mark)),
    }
    attributes
}

/// The full attribute set of a virtual server, as `NEW_SERVICE`/`SET_SERVICE` need it.
pub fn service_attributes(service: &VirtualServer) -> Vec<ServiceAttribute> {
    let mut attributes = service_key_attributes(&service.key);
    attributes.extend([
        ServiceAttribute::Scheduler(service.scheduler.name().to_owned()),
        ServiceAttribute::Flags {
            flags: service.flags.0,
            mask: u32::MAX,
        },
        ServiceAttribute::Timeout(service.timeout),
        ServiceAttribute::Netmask(service.netmask),
    ]);
    attributes
}

/// A virtual server from the attributes of a dump reply.
pub fn service_entry(attributes: &[ServiceAttribute]) -> Result<ServiceEntry, EntryError> {
    let mut family = None;
    let (mut protocol, mut address, mut port, mut mark) = (None, None, None, None);
    let mut scheduler = None;
    let (mut flags, mut timeout, mut netmask) = (0, 0, None);
    let mut persistence_engine = None;
    let (mut stats32, mut stats64) = (None, None);
    for attribute in attributes {
        match attribute {
            ServiceAttribute::AddressFamily(n) => family = Some(family_from_number(*n)?),
            ServiceAttribute::Protocol(n) => protocol = Some(*n),
            ServiceAttribute::Address(a) => address = Some(*a),
            ServiceAttribute::Port(p) => port = Some(*p),
            ServiceAttribute::FwMark(m) => mark = Some(*m),
            ServiceAttribute::Scheduler(s) => scheduler = Some(s.clone()),
            ServiceAttribute::Flags { flags: f, .. } => flags = *f,
            ServiceAttribute::Timeout(t) => timeout = *t,
            ServiceAttribute::Netmask(n) => netmask = Some(*n),
            ServiceAttribute::Stats(s) => stats32 = Some(Stats::from_attributes(s)),
            ServiceAttribute::Stats64(s) => stats64 = Some(Stats::from_attributes(s)),
            ServiceAttribute::PersistenceEngine(pe) => persistence_engine = Some(pe.clone()),
            ServiceAttribute::Other(_) => {}
        }
    }
    let family = family.ok_or(EntryError::Missing("service address family"))?;
    let key = match (mark, protocol, address, port) {
        (Some(mark), ..) if mark != 0 => ServiceKey::FwMark { mark, family },
        (_, Some(protocol), Some(address), Some(port)) => ServiceKey::Address {
            protocol: u8::try_from(protocol)
                .ok()
                .and_then(Protocol::from_number)
                .ok_or(EntryError::UnknownProtocol(protocol))?,
            address: address_from_union(&address, family),
            port,
        },
        _ => return Err(EntryError::NoServiceKey),
    };
    let mut service = VirtualServer::new(key);
    service.scheduler =
        Scheduler::from_name(&scheduler.ok_or(EntryError::Missing("service scheduler"))?);
    service.flags = ServiceFlags(flags);
    service.timeout = timeout;
    if let Some(netmask) = netmask {
        service.netmask = netmask;
    }
    Ok(ServiceEntry {
        service,
        persistence_engine,
        stats: stats64.or(stats32).unwrap_or_default(),
    })
}

/// The attributes that identify a real server (enough for delete).
pub fn destination_key_attributes(key: &RealServerKey) -> Vec<DestinationAttribute> {
    vec![
        DestinationAttribute::AddressFamily(family_number(Family::of(&key.address))),
        DestinationAttribute::Address(address_union(&key.address)),
        DestinationAttribute::Port(key.port),
    ]
}

/// The full attribute set of a real server, as `NEW_DEST`/`SET_DEST` need it.
pub fn destination_attributes(real_server: &RealServer) -> Vec<DestinationAttribute> {
    let mut attributes = destination_key_attributes(&real_server.key);
    attributes.extend([
        DestinationAttribute::ForwardMethod(real_server.forward.number()),
        DestinationAttribute::Weight(real_server.weight),
        DestinationAttribute::UpperThreshold(real_server.upper_threshold),
        DestinationAttribute::LowerThreshold(real_server.lower_threshold),
    ]);
    if let ForwardMethod::Tunnel { kind, port, flags } = real_server.forward {
        attributes.extend([
            DestinationAttribute::TunnelType(kind.number()),
            DestinationAttribute::TunnelPort(port),
            DestinationAttribute::TunnelFlags(flags),
        ]);
    }
    attributes
}

/// A real server from the attributes of a dump reply of a service of `service_family`.
pub fn destination_entry(
    attributes: &[DestinationAttribute],
    service_family: Family,
) -> Result<DestinationEntry, EntryError> {
    use DestinationAttribute as D;
    let mut family = service_family;
    let (mut address, mut port, mut forward) = (None, None, None);
    let (mut weight, mut upper, mut lower) = (0, 0, 0);
    let (mut active, mut inactive, mut persistent) = (0, 0, 0);
    let (mut tunnel_kind, mut tunnel_port, mut tunnel_flags) = (TunnelKind::IpIp, 0, 0);
    let (mut stats32, mut stats64) = (None, None);
    for attribute in attributes {
        match attribute {
            D::Address(a) => address = Some(*a),
            D::Port(p) => port = Some(*p),
            D::ForwardMethod(f) => {
                forward = Some(
                    ForwardMethod::from_number(*f).ok_or(EntryError::UnknownForwardMethod(*f))?,
                )
            }
            D::Weight(w) => weight = *w,
            D::UpperThreshold(u) => upper = *u,
            D::LowerThreshold(l) => lower = *l,
            D::ActiveConnections(n) => active = *n,
            D::InactiveConnections(n) => inactive = *n,
            D::PersistentConnections(n) => persistent = *n,
            D::AddressFamily(n) => family = family_from_number(*n)?,
            D::TunnelType(t) => {
                tunnel_kind =
                    TunnelKind::from_number(*t).ok_or(EntryError::UnknownTunnelKind(*t))?
            }
            D::TunnelPort(p) => tunnel_port = *p,
            D::TunnelFlags(f) => tunnel_flags = *f,
            D::Stats(s) => stats32 = Some(Stats::from_attributes(s)),
            D::Stats64(s) => stats64 = Some(Stats::from_attributes(s)),
            D::Other(_) => {}
        }
    }
    let address = address.ok_or(EntryError::Missing("destination address"))?;
    let mut forward = forward.ok_or(EntryError::Missing("destination forwarding method"))?;
    if let ForwardMethod::Tunnel { .. } = forward {
        forward = ForwardMethod::Tunnel {
            kind: tunnel_kind,
            port: tunnel_port,
            flags: tunnel_flags,
        };
    }
    Ok(DestinationEntry {
        real_server: RealServer {
            key: RealServerKey {
                address: address_from_union(&address, family),
                port: port.ok_or(EntryError::Missing("destination port"))?,
            },
            forward,
            weight,
            upper_threshold: upper,
            lower_threshold: lower,
        },
        family,
        active_connections: active,
        inactive_connections: inactive,
        persistent_connections: persistent,
        stats: stats64.or(stats32).unwrap_or_default(),
    })
}
