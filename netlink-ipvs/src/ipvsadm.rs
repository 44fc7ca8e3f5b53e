//! The one ipvsadm renderer: everything this workspace prints in `ipvsadm`'s words.
//!
//! - [`ServiceArgs`]: a service as `ipvsadm` arguments (`-t 10.0.0.1:80`, `-f 7 -6`);
//! - [`Command`]: one change as an `ipvsadm` command line (`-a -t ... -r ... -w 1`), the text of
//!   the engine's operations in logs and test failures;
//! - [`save`]: the lines `ipvsadm -Sn` prints for a table (the tests' outside witness);
//! - [`listing`]: the `ipvsadm -Ln` listing, byte for byte (ipvsadm 1.31 `list_all`,
//!   `print_title`, `print_service_entry`), so that `proxier plan` can be diffed against a node.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::fmt::{self, Write as _};
use std::net::IpAddr;

use crate::types::{
    Family, ForwardMethod, IpvsState, Protocol, RealServer, RealServerKey, ServiceFlags,
    ServiceKey, ServiceState, SocketFmt, VirtualServer,
};

/// A service as `ipvsadm` arguments: `-t 10.0.0.1:80`, `-u [fd00::1]:53`,
/// `--sctp-service 10.0.0.1:9`, `-f 7`, `-f 7 -6` (as `ipvsadm -S` prints them).
#[derive(Debug, Clone, Copy)]
pub struct ServiceArgs<'a>(pub &'a ServiceKey);

impl fmt::Display for ServiceArgs<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self.0 {
            ServiceKey::Address {
                protocol,
                address,
                port,
            } => {
                let flag = match protocol {
                    Protocol::Tcp => "-t",
                    Protocol::Udp => "-u",
                    Protocol::Sctp => "--sctp-service",
                };
                write!(f, "{flag} {}", SocketFmt(address, port))
            }
            ServiceKey::FwMark {
                mark,
                family: Family::V4,
            } => write!(f, "-f {mark}"),
            ServiceKey::FwMark {
                mark,
                family: Family::V6,
            } => write!(f, "-f {mark} -6"),
        }
    }
}

/// One change to an IPVS table as the `ipvsadm` command line that would make it (without the
/// leading `ipvsadm`).
#[derive(Debug, Clone, Copy)]
pub enum Command<'a> {
    /// `-A SERVICE -s SCHEDULER`.
    AddVirtualServer(&'a VirtualServer),
    /// `-E SERVICE -s SCHEDULER`.
    EditService(&'a VirtualServer),
    /// `-D SERVICE`.
    DeleteVirtualServer(&'a ServiceKey),
    /// `-a SERVICE -r SERVER -w WEIGHT`.
    AddServer(&'a ServiceKey, &'a RealServer),
    /// `-e SERVICE -r SERVER -w WEIGHT`.
    EditServer(&'a ServiceKey, &'a RealServer),
    /// `-d SERVICE -r SERVER`.
    DeleteServer(&'a ServiceKey, &'a RealServerKey),
}

impl fmt::Display for Command<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Command::AddVirtualServer(vs) => {
                write!(f, "-A {} -s {}", ServiceArgs(&vs.key), vs.scheduler)
            }
            Command::EditService(vs) => {
                write!(f, "-E {} -s {}", ServiceArgs(&vs.key), vs.scheduler)
            }
            Command::DeleteVirtualServer(key) => write!(f, "-D {}", ServiceArgs(key)),
            Command::AddServer(service, rs) => write!(
                f,
                "-a {} -r {} -w {}",
                ServiceArgs(service),
                rs.key,
                rs.weight
            ),
            Command::EditServer(service, rs) => write!(
                f,
                "-e {} -r {} -w {}",
                ServiceArgs(service),
                rs.key,
                rs.weight
            ),
            Command::DeleteServer(service, key) => {
                write!(f, "-d {} -r {key}", ServiceArgs(service))
            }
        }
    }
}

/// The lines `ipvsadm -Sn` prints for `state`, as a set (ipvsadm's order is the kernel's hash
/// order): `-A SERVICE -s SCHEDULER [-p TIMEOUT]` and `-a SERVICE -r SERVER -m|-g|-i -w WEIGHT`.
pub fn save(state: &IpvsState) -> BTreeSet<String> {
    let mut lines = BTreeSet::new();
    for s in state.services.values() {
        let service = ServiceArgs(&s.service.key);
        let mut line = format!("-A {service} -s {}", s.service.scheduler);
        if s.service.flags.contains(ServiceFlags::PERSISTENT) {
            // Writing to a String cannot fail.
            let _ = write!(line, " -p {}", s.service.timeout);
        }
        lines.insert(line);
        for rs in s.real_servers.values() {
            let method = match rs.forward {
                ForwardMethod::Masq => "-m",
                ForwardMethod::Route | ForwardMethod::Local => "-g",
                _ => "-i",
            };
            lines.insert(format!(
                "-a {service} -r {} {method} -w {}",
                rs.key, rs.weight
            ));
        }
    }
    lines
}

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
    use crate::types::Protocol;

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

    #[test]
    fn commands_and_save_lines_in_ipvsadm_words() {
        let udp = ServiceKey::Address {
            protocol: Protocol::Udp,
            address: "fd00::10".parse().unwrap(),
            port: 53,
        };
        let mark = ServiceKey::FwMark {
            mark: 7,
            family: Family::V6,
        };
        let mut vs = VirtualServer::new(udp);
        vs.flags = ServiceFlags::PERSISTENT;
        vs.timeout = 600;
        let rs = RealServer::masq("fd00:1::5".parse().unwrap(), 5353);
        let texts = [
            Command::AddVirtualServer(&vs).to_string(),
            Command::EditService(&VirtualServer::new(mark)).to_string(),
            Command::DeleteVirtualServer(&mark).to_string(),
            Command::AddServer(&udp, &rs).to_string(),
            Command::EditServer(&udp, &rs).to_string(),
            Command::DeleteServer(&udp, &rs.key).to_string(),
        ];
        assert_eq!(
            texts,
            [
                "-A -u [fd00::10]:53 -s rr",
                "-E -f 7 -6 -s rr",
                "-D -f 7 -6",
                "-a -u [fd00::10]:53 -r [fd00:1::5]:5353 -w 1",
                "-e -u [fd00::10]:53 -r [fd00:1::5]:5353 -w 1",
                "-d -u [fd00::10]:53 -r [fd00:1::5]:5353",
            ]
        );
        let mut table = IpvsState::default();
        table.services.insert(udp, state(vs, &[rs]));
        let lines: Vec<String> = save(&table).into_iter().collect();
        assert_eq!(
            lines,
            [
                "-A -u [fd00::10]:53 -s rr -p 600",
                "-a -u [fd00::10]:53 -r [fd00:1::5]:5353 -m -w 1",
            ]
        );
    }
}
