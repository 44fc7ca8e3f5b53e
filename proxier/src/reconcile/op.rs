//! [`Op`]: one change to the kernel, plain data that maps 1:1 onto a netlink request.

use std::fmt;
use std::net::IpAddr;

use conntrack_gc::{ConntrackFilter, Protocol, Selector};
use netlink_ipvs::ipvsadm::Command;
use netlink_ipvs::{IpvsOperation, RealServer, RealServerKey, ServiceKey, VirtualServer};

/// One change to the node, in the order reconcile emits them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Add an address to the dummy interface (before its virtual servers, so ownership holds
    /// even if we stop half way).
    BindAddress(IpAddr),
    /// Create a virtual server.
    AddVirtualServer(VirtualServer),
    /// Change a virtual server's scheduler, flags or persistence.
    UpdateVirtualServer(VirtualServer),
    /// Add a real server.
    AddRealServer {
        /// Its virtual server.
        service: ServiceKey,
        /// The real server.
        real_server: RealServer,
    },
    /// Change a real server (weight 0 to drain, back to its weight when it serves again).
    UpdateRealServer {
        /// Its virtual server.
        service: ServiceKey,
        /// The real server with its new settings.
        real_server: RealServer,
    },
    /// Delete a real server whose endpoint left its EndpointSlice.
    DeleteRealServer {
        /// Its virtual server.
        service: ServiceKey,
        /// The real server.
        real_server: RealServerKey,
    },
    /// Delete conntrack entries (over ctnetlink, never by running `conntrack`): an endpoint's
    /// flows through one service address (original destination and reply source), or a
    /// service address:port's by original destination.
    FlushConntrack(ConntrackFilter),
    /// Delete one of our virtual servers (the kernel drops its real servers with it).
    DeleteVirtualServer(ServiceKey),
    /// Remove an address from the dummy interface.
    UnbindAddress(IpAddr),
}

impl fmt::Display for Op {
    /// `ipvsadm`/`ip`/`conntrack`-like text, for logs and test failures (IPVS changes through
    /// the one ipvsadm renderer, [`netlink_ipvs::ipvsadm::Command`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::BindAddress(ip) => write!(f, "addr add {ip}"),
            Op::UnbindAddress(ip) => write!(f, "addr del {ip}"),
            Op::AddVirtualServer(vs) => Command::AddVirtualServer(vs).fmt(f),
            Op::UpdateVirtualServer(vs) => Command::EditService(vs).fmt(f),
            Op::DeleteVirtualServer(key) => Command::DeleteVirtualServer(key).fmt(f),
            Op::AddRealServer {
                service,
                real_server,
            } => Command::AddServer(service, real_server).fmt(f),
            Op::UpdateRealServer {
                service,
                real_server,
            } => Command::EditServer(service, real_server).fmt(f),
            Op::DeleteRealServer {
                service,
                real_server,
            } => Command::DeleteServer(service, real_server).fmt(f),
            Op::FlushConntrack(filter) => {
                let protocol = match filter.protocol {
                    Protocol::Tcp => "TCP",
                    Protocol::Udp => "UDP",
                    Protocol::Sctp => "SCTP",
                };
                match filter.selector {
                    Selector::Endpoint { ip, port } => write!(
                        f,
                        "conntrack -D -p {protocol} --reply-src {ip} --reply-port-src {port}"
                    ),
                    Selector::ServiceIp { ip, port } => {
                        write!(
                            f,
                            "conntrack -D -p {protocol} --orig-dst {ip} --dport {port}"
                        )
                    }
                    Selector::NodePort { port, .. } => {
                        write!(f, "conntrack -D -p {protocol} --dport {port}")
                    }
                    Selector::ServiceEndpoint {
                        service_ip,
                        service_port,
                        endpoint_ip,
                        endpoint_port,
                    } => write!(
                        f,
                        "conntrack -D -p {protocol} --orig-dst {service_ip} --dport \
                         {service_port} --reply-src {endpoint_ip} --reply-port-src {endpoint_port}"
                    ),
                }
            }
        }
    }
}

impl Op {
    /// A stable label for the kind of operation (metrics).
    pub fn kind(&self) -> &'static str {
        match self {
            Op::BindAddress(_) => "bind_address",
            Op::AddVirtualServer(_) => "add_virtual_server",
            Op::UpdateVirtualServer(_) => "update_virtual_server",
            Op::AddRealServer { .. } => "add_real_server",
            Op::UpdateRealServer { .. } => "update_real_server",
            Op::DeleteRealServer { .. } => "delete_real_server",
            Op::FlushConntrack(_) => "flush_conntrack",
            Op::DeleteVirtualServer(_) => "delete_virtual_server",
            Op::UnbindAddress(_) => "unbind_address",
        }
    }

    /// The virtual server an IPVS operation changes; `None` for the address and conntrack
    /// operations.
    pub fn virtual_server(&self) -> Option<ServiceKey> {
        match self {
            Op::AddVirtualServer(vs) | Op::UpdateVirtualServer(vs) => Some(vs.key),
            Op::DeleteVirtualServer(key)
            | Op::AddRealServer { service: key, .. }
            | Op::UpdateRealServer { service: key, .. }
            | Op::DeleteRealServer { service: key, .. } => Some(*key),
            Op::BindAddress(_) | Op::UnbindAddress(_) | Op::FlushConntrack(_) => None,
        }
    }

    /// The IPVS request this operation is (same variant name, same fields); `None` for the
    /// address and conntrack operations, which go to rtnetlink and ctnetlink.
    pub fn ipvs_operation(&self) -> Option<IpvsOperation> {
        Some(match self {
            Op::AddVirtualServer(vs) => IpvsOperation::AddVirtualServer(vs.clone()),
            Op::UpdateVirtualServer(vs) => IpvsOperation::UpdateVirtualServer(vs.clone()),
            Op::DeleteVirtualServer(key) => IpvsOperation::DeleteVirtualServer(*key),
            Op::AddRealServer {
                service,
                real_server,
            } => IpvsOperation::AddRealServer {
                service: *service,
                real_server: *real_server,
            },
            Op::UpdateRealServer {
                service,
                real_server,
            } => IpvsOperation::UpdateRealServer {
                service: *service,
                real_server: *real_server,
            },
            Op::DeleteRealServer {
                service,
                real_server,
            } => IpvsOperation::DeleteRealServer {
                service: *service,
                real_server: *real_server,
            },
            Op::BindAddress(_) | Op::UnbindAddress(_) | Op::FlushConntrack(_) => return None,
        })
    }
}
