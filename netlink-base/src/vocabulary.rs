//! The words every crate of the workspace shares: transport protocol and address family.

use std::fmt;
use std::net::IpAddr;

/// A transport protocol with ports, as IPVS, conntrack and nf_tables see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP (`IPPROTO_TCP`, 6).
    Tcp,
    /// UDP (`IPPROTO_UDP`, 17).
    Udp,
    /// SCTP (`IPPROTO_SCTP`, 132).
    Sctp,
}

impl Protocol {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }

    /// The protocol for an IP protocol number, if it is one of these three.
    pub fn from_number(number: u8) -> Option<Self> {
        match number {
            6 => Some(Protocol::Tcp),
            17 => Some(Protocol::Udp),
            132 => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        })
    }
}

/// An address family: IPv4 or IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4 (`AF_INET`).
    V4,
    /// IPv6 (`AF_INET6`).
    V6,
}

impl Family {
    /// The family of an address.
    pub fn of(address: &IpAddr) -> Self {
        match address {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// `AF_INET` (2) or `AF_INET6` (10); netfilter's `NFPROTO_IPV4`/`NFPROTO_IPV6` have the same
    /// values.
    pub fn number(self) -> u8 {
        match self {
            Family::V4 => 2,
            Family::V6 => 10,
        }
    }

    /// The family for an `AF_*` number, if it is one of these two.
    pub fn from_number(number: u16) -> Option<Self> {
        match number {
            2 => Some(Family::V4),
            10 => Some(Family::V6),
            _ => None,
        }
    }

    /// Address length in bytes (4 or 16).
    pub fn address_len(self) -> usize {
        match self {
            Family::V4 => 4,
            Family::V6 => 16,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip() {
        for protocol in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp] {
            assert_eq!(Protocol::from_number(protocol.number()), Some(protocol));
        }
        assert_eq!(Protocol::from_number(1), None);
        for family in [Family::V4, Family::V6] {
            assert_eq!(
                Family::from_number(u16::from(family.number())),
                Some(family)
            );
        }
        assert_eq!(Family::from_number(0), None);
        assert_eq!(Family::of(&"::1".parse().unwrap()), Family::V6);
        assert_eq!(Family::V6.address_len(), 16);
    }
}
