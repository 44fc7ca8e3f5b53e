//! Which addresses NodePorts (and health-check node ports) open on: kube-proxy's
//! `nodePortAddresses` rule over the node's local addresses (pkg/proxy/util/
//! nodeport_addresses.go, pkg/proxy/ipvs/proxier.go, cmd/kube-proxy/app/server.go). Pure: the
//! local addresses are an input, which the kernel dataplane follows through rtnetlink address
//! notifications.
//!
//! The rule, per address family:
//! - `nodePortAddresses: [primary]` stands for the node's primary IP of each family (the
//!   first of the given node IPs of that family, unless it is loopback) as a /32 or /128;
//! - a family without any CIDR (`nodePortAddresses` unset, or CIDRs of the other family
//!   only) or with a /0 matches every local address of that family except loopback and IPv6
//!   link-local ones;
//! - otherwise the local addresses inside one of the family's CIDRs, except loopback.
//!
//! The local addresses are those of every interface except our dummy one (`kube-ipvs0`): an
//! address that is also on another interface counts (kubernetes#114815).

use std::net::IpAddr;

use netlink_ipvs::Family;

use super::cidr_contains;
use crate::config::NodePortAddress;

fn family_of(ip: &IpAddr) -> Family {
    match ip {
        IpAddr::V4(_) => Family::V4,
        IpAddr::V6(_) => Family::V6,
    }
}

fn host_prefix(ip: &IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// Whether `ip` is an IPv6 link-local address (fe80::/10): the kernel's own on every IPv6
/// interface, never a NodePort or virtual IP.
pub fn is_ipv6_link_local(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80)
}

/// The CIDRs of `family` that `nodePortAddresses` selects (`primary` expanded to the node's
/// primary IP of the family); `None` matches every address of the family.
fn cidrs_of(
    entries: &[NodePortAddress],
    primary: &[IpAddr],
    family: Family,
) -> Option<Vec<(IpAddr, u8)>> {
    let mut cidrs = Vec::new();
    for entry in entries {
        match *entry {
            NodePortAddress::Cidr { network, prefix } => cidrs.push((network, prefix)),
            NodePortAddress::Primary => {
                for f in [Family::V4, Family::V6] {
                    let first = primary.iter().find(|ip| family_of(ip) == f);
                    if let Some(ip) = first.filter(|ip| !ip.is_loopback()) {
                        cidrs.push((*ip, host_prefix(ip)));
                    }
                }
            }
        }
    }
    cidrs.retain(|(network, _)| family_of(network) == family);
    if cidrs.is_empty() || cidrs.iter().any(|(_, prefix)| *prefix == 0) {
        return None;
    }
    Some(cidrs)
}

fn selected(cidrs: Option<&[(IpAddr, u8)]>, ip: &IpAddr) -> bool {
    match cidrs {
        None => !ip.is_loopback() && !is_ipv6_link_local(ip),
        Some(cidrs) => !ip.is_loopback() && cidrs.iter().any(|c| cidr_contains(*c, *ip)),
    }
}

/// The local addresses NodePorts open on (in `local`'s order, without duplicates).
pub fn node_port_ips(
    entries: &[NodePortAddress],
    primary: &[IpAddr],
    local: &[IpAddr],
) -> Vec<IpAddr> {
    let v4 = cidrs_of(entries, primary, Family::V4);
    let v6 = cidrs_of(entries, primary, Family::V6);
    let mut out: Vec<IpAddr> = Vec::new();
    for ip in local {
        let cidrs = match family_of(ip) {
            Family::V4 => v4.as_deref(),
            Family::V6 => v6.as_deref(),
        };
        if selected(cidrs, ip) && !out.contains(ip) {
            out.push(*ip);
        }
    }
    out
}

/// Where health-check node ports listen, as kube-proxy's service health server decides it
/// for the primary family (that of the first primary IP; IPv4 when there is none): `None` =
/// every address (the family matches all), else the selected addresses of that family.
pub fn health_check_addresses(
    entries: &[NodePortAddress],
    primary: &[IpAddr],
    local: &[IpAddr],
) -> Option<Vec<IpAddr>> {
    let family = primary.first().map_or(Family::V4, family_of);
    let cidrs = cidrs_of(entries, primary, family)?;
    Some(
        local
            .iter()
            .filter(|ip| family_of(ip) == family && selected(Some(&cidrs), ip))
            .copied()
            .collect(),
    )
}

#[cfg(test)]
mod tests;
