//! The `ipvsadm -Ln` listing of an IPVS table, byte for byte (ipvsadm 1.31 `list_all`,
//! `print_title`, `print_service_entry`), so that `proxier plan` can be diffed against a node.

use std::cmp::Ordering;
use std::fmt::Write as _;
use std::net::IpAddr;

use netlink_ipvs::{Family, IpvsState, ServiceFlags, ServiceKey, ServiceState, VirtualServer};

/// The first three lines of `ipvsadm -Ln` (version and table size of current kernels).
pub const HEADER: &str = "IP Virtual Server version 1.2.1 (size=4096)\n\
Prot LocalAddress:Port Scheduler Flags\n  \
-> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n";

fn numeric(ip: &IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(*a)),
        IpAddr::V6(a) => u128::from(*a),
    }
}

/// `ipvs_cmp_services`: fwmark (0 for address services, so they come first), family,
/// protocol number, address, port.
fn service_order(a: &ServiceKey, b: &ServiceKey) -> Ordering {
    let rank = |k: &ServiceKey| match *k {
        ServiceKey::Address {
            protocol,
            address,
            port,
        } => (0, k.family(), protocol.number(), numeric(&address), port),
        ServiceKey::FwMark { mark, family } => (mark, family, 0, 0, 0),
    };
    rank(a).cmp(&rank(b))
}

/// ` (mh-port)`-style scheduler flags, as ipvsadm prints them.
fn scheduler_flags(vs: &VirtualServer) -> String {
    let names: [(ServiceFlags, String); 3] = match vs.scheduler.name() {
        s @ ("sh" | "mh") => [
            (ServiceFlags::SCHED1, format!("{s}-fallback")),
            (ServiceFlags::SCHED2, format!("{s}-port")),
            (ServiceFlags(0), String::new()),
        ],
        _ => [
            (ServiceFlags::SCHED1, "flag-1".to_owned()),
            (ServiceFlags::SCHED2, "flag-2".to_owned()),
            (ServiceFlags::SCHED3, "flag-3".to_owned()),
        ],
    };
    let set: Vec<&str> = names
        .iter()
        .filter(|(flag, _)| flag.0 != 0 && vs.flags.contains(*flag))
        .map(|(_, name)| name.as_str())
        .collect();
    if set.is_empty() {
        String::new()
    } else {
        format!(" ({})", set.join(","))
    }
}

fn write_service(out: &mut String, state: &ServiceState) {
    let vs = &state.service;
    let mut name = vs.key.to_string();
    if vs.key.family() == Family::V4 {
        name.truncate(33);
    }
    // Writing to a String cannot fail.
    let _ = write!(out, "{name} {}{}", vs.scheduler, scheduler_flags(vs));
    if vs.flags.contains(ServiceFlags::PERSISTENT) {
        let _ = write!(out, " persistent {}", vs.timeout);
        match vs.key.family() {
            Family::V4 if vs.netmask != 0xffff_ffff => {
                let mask = std::net::Ipv4Addr::from(vs.netmask);
                let _ = write!(out, " mask {mask}");
            }
            Family::V6 if vs.netmask != 128 => {
                let _ = write!(out, " mask {}", vs.netmask);
            }
            _ => {}
        }
    }
    if vs.flags.contains(ServiceFlags::ONEPACKET) {
        out.push_str(" ops");
    }
    out.push('\n');
    for rs in state.real_servers.values() {
        let mut dest = rs.key.to_string();
        if vs.key.family() == Family::V4 {
            dest.truncate(28);
        }
        let _ = writeln!(
            out,
            "  -> {dest:<28} {:<7} {:<6} {:<10} {:<10}",
            rs.forward.to_string(),
            rs.weight,
            0,
            0
        );
    }
}

/// The listing `ipvsadm -Ln` prints for this table (connection counters are 0: a plan has no
/// traffic).
pub fn listing(state: &IpvsState) -> String {
    let mut services: Vec<&ServiceState> = state.services.values().collect();
    services.sort_by(|a, b| service_order(&a.service.key, &b.service.key));
    let mut out = String::from(HEADER);
    for service in services {
        write_service(&mut out, service);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_ipvs::{Protocol, RealServer};

    fn state(vs: VirtualServer, rs: &[RealServer]) -> ServiceState {
        ServiceState {
            service: vs,
            real_servers: rs.iter().map(|r| (r.key, *r)).collect(),
        }
    }

    #[test]
    fn matches_ipvsadm_columns_and_order() {
        let tcp = |a: &str, p| ServiceKey::Address {
            protocol: Protocol::Tcp,
            address: a.parse().unwrap(),
            port: p,
        };
        let mut sticky = VirtualServer::new(tcp("10.96.0.20", 80));
        sticky.flags = ServiceFlags::PERSISTENT;
        sticky.timeout = 10800;
        let mut mh = VirtualServer::new(ServiceKey::FwMark {
            mark: 7,
            family: Family::V4,
        });
        mh.scheduler = "mh".into();
        mh.flags = ServiceFlags::SCHED2;
        let mut drained = RealServer::masq("10.244.1.6".parse().unwrap(), 8080);
        drained.weight = 0;
        let mut table = IpvsState::default();
        for s in [
            state(mh, &[]),
            state(
                VirtualServer::new(tcp("fd00::10", 80)),
                &[RealServer::masq("fd00:1::5".parse().unwrap(), 80)],
            ),
            state(
                sticky,
                &[
                    RealServer::masq("10.244.1.5".parse().unwrap(), 8080),
                    drained,
                ],
            ),
            state(VirtualServer::new(tcp("10.96.0.10", 53)), &[]),
        ] {
            table.services.insert(s.service.key, s);
        }
        let expected = "IP Virtual Server version 1.2.1 (size=4096)\n\
Prot LocalAddress:Port Scheduler Flags\n\
\x20 -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
TCP  10.96.0.10:53 rr\n\
TCP  10.96.0.20:80 rr persistent 10800\n\
\x20 -> 10.244.1.5:8080              Masq    1      0          0         \n\
\x20 -> 10.244.1.6:8080              Masq    0      0          0         \n\
TCP  [fd00::10]:80 rr\n\
\x20 -> [fd00:1::5]:80               Masq    1      0          0         \n\
FWM  7 mh (mh-port)\n";
        assert_eq!(listing(&table), expected);
    }
}
