//! Plain IPVS data: what a virtual server and a real server are, independent of any socket.
//!
//! These types compile without the netlink layer, so a planner (such as proxier's engine) can
//! depend on them alone.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

pub use netlink_base::{Family, Protocol};

use crate::scheduler::Scheduler;

/// What identifies a virtual server in the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ServiceKey {
    /// An address:port virtual server.
    Address {
        /// Transport protocol.
        protocol: Protocol,
        /// Virtual IP.
        address: IpAddr,
        /// Virtual port.
        port: u16,
    },
    /// A firewall-mark virtual server (matches packets carrying `mark`).
    FwMark {
        /// The packet mark.
        mark: u32,
        /// Which family's packets the mark selects.
        family: Family,
    },
}

impl ServiceKey {
    /// The address family of this virtual server.
    pub fn family(&self) -> Family {
        match self {
            ServiceKey::Address { address, .. } => Family::of(address),
            ServiceKey::FwMark { family, .. } => *family,
        }
    }
}

impl fmt::Display for ServiceKey {
    /// `ipvsadm -Ln` style: `TCP  10.0.0.1:80`, `TCP  [fd00::1]:80`, `FWM  7`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceKey::Address {
                protocol,
                address,
                port,
            } => write!(f, "{protocol}  {}", SocketFmt(*address, *port)),
            ServiceKey::FwMark { mark, family } => match family {
                Family::V4 => write!(f, "FWM  {mark}"),
                Family::V6 => write!(f, "FWM  {mark} IPv6"),
            },
        }
    }
}

/// Formats `address:port` with brackets around IPv6 addresses.
pub(crate) struct SocketFmt(pub IpAddr, pub u16);

impl fmt::Display for SocketFmt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(a) => write!(f, "{a}:{}", self.1),
            IpAddr::V6(a) => write!(f, "[{a}]:{}", self.1),
        }
    }
}

/// Service flags (`IP_VS_SVC_F_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ServiceFlags(pub u32);

impl ServiceFlags {
    /// Persistent (sticky) service: `IP_VS_SVC_F_PERSISTENT`.
    pub const PERSISTENT: ServiceFlags = ServiceFlags(0x0001);
    /// Set by the kernel on every hashed service: `IP_VS_SVC_F_HASHED`.
    pub const HASHED: ServiceFlags = ServiceFlags(0x0002);
    /// One-packet scheduling (UDP): `IP_VS_SVC_F_ONEPACKET`.
    pub const ONEPACKET: ServiceFlags = ServiceFlags(0x0004);
    /// Scheduler flag 1 (`sh`/`mh`: fallback): `IP_VS_SVC_F_SCHED1`.
    pub const SCHED1: ServiceFlags = ServiceFlags(0x0008);
    /// Scheduler flag 2 (`sh`/`mh`: port): `IP_VS_SVC_F_SCHED2`.
    pub const SCHED2: ServiceFlags = ServiceFlags(0x0010);
    /// Scheduler flag 3: `IP_VS_SVC_F_SCHED3`.
    pub const SCHED3: ServiceFlags = ServiceFlags(0x0020);

    /// Whether every bit of `other` is set.
    pub fn contains(self, other: ServiceFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// These flags without the bits of `other`.
    pub fn without(self, other: ServiceFlags) -> ServiceFlags {
        ServiceFlags(self.0 & !other.0)
    }
}

impl std::ops::BitOr for ServiceFlags {
    type Output = ServiceFlags;
    fn bitor(self, rhs: ServiceFlags) -> ServiceFlags {
        ServiceFlags(self.0 | rhs.0)
    }
}

/// A virtual server: the configurable part of an IPVS service.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VirtualServer {
    /// What identifies it.
    pub key: ServiceKey,
    /// The scheduler.
    pub scheduler: Scheduler,
    /// Flags; the kernel-set `HASHED` bit is masked by [`VirtualServer::normalized`].
    pub flags: ServiceFlags,
    /// Persistence timeout in seconds (used with `PERSISTENT`).
    pub timeout: u32,
    /// Persistence netmask: a prefix mask for IPv4 (`0xffffffff` = /32), a prefix length for IPv6.
    pub netmask: u32,
}

impl VirtualServer {
    /// A round-robin, non-persistent virtual server.
    pub fn new(key: ServiceKey) -> Self {
        let netmask = match key.family() {
            Family::V4 => 0xffff_ffff,
            Family::V6 => 128,
        };
        Self {
            key,
            scheduler: Scheduler::Rr,
            flags: ServiceFlags::default(),
            timeout: 0,
            netmask,
        }
    }

    /// This virtual server as it should compare with what we ask for: kernel-set bits masked.
    pub fn normalized(&self) -> Self {
        Self {
            flags: self.flags.without(ServiceFlags::HASHED),
            ..self.clone()
        }
    }
}

/// Encapsulation of a tunnelling real server (`IP_VS_CONN_F_TUNNEL_TYPE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum TunnelKind {
    /// IP-in-IP, the classic and default one.
    #[default]
    IpIp,
    /// Generic UDP Encapsulation.
    Gue,
    /// GRE.
    Gre,
}

impl TunnelKind {
    /// The kernel's value.
    pub fn number(self) -> u8 {
        match self {
            TunnelKind::IpIp => 0,
            TunnelKind::Gue => 1,
            TunnelKind::Gre => 2,
        }
    }

    /// The kind for the kernel's value.
    pub fn from_number(number: u8) -> Option<Self> {
        match number {
            0 => Some(TunnelKind::IpIp),
            1 => Some(TunnelKind::Gue),
            2 => Some(TunnelKind::Gre),
            _ => None,
        }
    }
}

/// How IPVS forwards to a real server (`IP_VS_CONN_F_FWD_MASK` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ForwardMethod {
    /// NAT (`IP_VS_CONN_F_MASQ`), what service proxies use.
    Masq,
    /// Local delivery (`IP_VS_CONN_F_LOCALNODE`).
    Local,
    /// Tunnelling (`IP_VS_CONN_F_TUNNEL`).
    Tunnel {
        /// Encapsulation.
        kind: TunnelKind,
        /// Destination UDP port of the encapsulation (GUE), 0 otherwise.
        port: u16,
        /// Encapsulation flags (`IP_VS_TUNNEL_ENCAP_FLAG_*`).
        flags: u16,
    },
    /// Direct routing (`IP_VS_CONN_F_DROUTE`).
    Route,
    /// Bypass (`IP_VS_CONN_F_BYPASS`).
    Bypass,
}

impl ForwardMethod {
    /// IP-in-IP tunnelling with no encapsulation options.
    pub const TUNNEL: ForwardMethod = ForwardMethod::Tunnel {
        kind: TunnelKind::IpIp,
        port: 0,
        flags: 0,
    };

    /// The kernel's value.
    pub fn number(self) -> u32 {
        match self {
            ForwardMethod::Masq => 0,
            ForwardMethod::Local => 1,
            ForwardMethod::Tunnel { .. } => 2,
            ForwardMethod::Route => 3,
            ForwardMethod::Bypass => 4,
        }
    }

    /// The method for the kernel's value (only the low three bits are the method); a tunnel
    /// comes back as IP-in-IP until its tunnel attributes are applied.
    pub fn from_number(number: u32) -> Option<Self> {
        match number & 0x7 {
            0 => Some(ForwardMethod::Masq),
            1 => Some(ForwardMethod::Local),
            2 => Some(ForwardMethod::TUNNEL),
            3 => Some(ForwardMethod::Route),
            4 => Some(ForwardMethod::Bypass),
            _ => None,
        }
    }
}

impl fmt::Display for ForwardMethod {
    /// `ipvsadm -Ln` names.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ForwardMethod::Masq => "Masq",
            ForwardMethod::Local => "Local",
            ForwardMethod::Tunnel { .. } => "Tunnel",
            ForwardMethod::Route => "Route",
            ForwardMethod::Bypass => "Bypass",
        })
    }
}

/// What identifies a real server within its virtual server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RealServerKey {
    /// Backend address.
    pub address: IpAddr,
    /// Backend port.
    pub port: u16,
}

impl fmt::Display for RealServerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        SocketFmt(self.address, self.port).fmt(f)
    }
}

/// A real server (IPVS destination): the configurable part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RealServer {
    /// What identifies it.
    pub key: RealServerKey,
    /// Forwarding method.
    pub forward: ForwardMethod,
    /// Scheduling weight; 0 takes no new connections.
    pub weight: u32,
    /// Connection upper threshold (0 = none).
    pub upper_threshold: u32,
    /// Connection lower threshold (0 = none).
    pub lower_threshold: u32,
}

impl RealServer {
    /// A NAT real server of weight 1.
    pub fn masq(address: IpAddr, port: u16) -> Self {
        Self {
            key: RealServerKey { address, port },
            forward: ForwardMethod::Masq,
            weight: 1,
            upper_threshold: 0,
            lower_threshold: 0,
        }
    }
}

/// IPVS connection timeouts in seconds (0 in a request = leave unchanged).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timeouts {
    /// Established TCP.
    pub tcp: u32,
    /// TCP after FIN.
    pub tcp_fin: u32,
    /// UDP.
    pub udp: u32,
}

/// A virtual server with its real servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceState {
    /// The virtual server.
    pub service: VirtualServer,
    /// Its real servers by key.
    pub real_servers: BTreeMap<RealServerKey, RealServer>,
}

/// The whole IPVS table of a network namespace (or the part of it someone cares about).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IpvsState {
    /// Virtual servers by key.
    pub services: BTreeMap<ServiceKey, ServiceState>,
}

impl IpvsState {
    /// Total number of real servers.
    pub fn real_server_count(&self) -> usize {
        self.services.values().map(|s| s.real_servers.len()).sum()
    }
}
