//! The operations a batch is made of, and how each becomes a message.

use std::fmt;

#[cfg(feature = "netlink")]
use crate::attr::IpvsAttribute;
#[cfg(feature = "netlink")]
use crate::convert::{
    destination_attributes, destination_key_attributes, service_attributes, service_key_attributes,
};
#[cfg(feature = "netlink")]
use crate::message::{IpvsCommand, IpvsMessage};
use crate::types::{RealServer, RealServerKey, ServiceKey, Timeouts, VirtualServer};

/// One change to the kernel's IPVS table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpvsOperation {
    /// Create a virtual server (EEXIST if it exists).
    AddVirtualServer(VirtualServer),
    /// Change a virtual server's scheduler, flags, timeout or netmask (ESRCH if missing).
    UpdateVirtualServer(VirtualServer),
    /// Delete a virtual server and its real servers (ESRCH if missing).
    DeleteVirtualServer(ServiceKey),
    /// Add a real server to a virtual server.
    AddRealServer {
        /// The virtual server.
        service: ServiceKey,
        /// The real server.
        real_server: RealServer,
    },
    /// Change a real server's weight, thresholds or forwarding method.
    UpdateRealServer {
        /// The virtual server.
        service: ServiceKey,
        /// The real server with its new settings.
        real_server: RealServer,
    },
    /// Delete a real server.
    DeleteRealServer {
        /// The virtual server.
        service: ServiceKey,
        /// The real server to delete.
        real_server: RealServerKey,
    },
    /// Set connection timeouts (0 leaves a value unchanged).
    SetTimeouts(Timeouts),
    /// Delete every virtual server of the network namespace.
    Flush,
}

#[cfg(feature = "netlink")]
impl IpvsOperation {
    /// The request message for this operation.
    pub fn to_message(&self) -> IpvsMessage {
        use IpvsAttribute::{Destination, Service};
        let (command, attributes) = match self {
            IpvsOperation::AddVirtualServer(s) => (
                IpvsCommand::NewService,
                vec![Service(service_attributes(s))],
            ),
            IpvsOperation::UpdateVirtualServer(s) => (
                IpvsCommand::SetService,
                vec![Service(service_attributes(s))],
            ),
            IpvsOperation::DeleteVirtualServer(key) => (
                IpvsCommand::DelService,
                vec![Service(service_key_attributes(key))],
            ),
            IpvsOperation::AddRealServer {
                service,
                real_server,
            } => (
                IpvsCommand::NewDest,
                vec![
                    Service(service_key_attributes(service)),
                    Destination(destination_attributes(real_server)),
                ],
            ),
            IpvsOperation::UpdateRealServer {
                service,
                real_server,
            } => (
                IpvsCommand::SetDest,
                vec![
                    Service(service_key_attributes(service)),
                    Destination(destination_attributes(real_server)),
                ],
            ),
            IpvsOperation::DeleteRealServer {
                service,
                real_server,
            } => (
                IpvsCommand::DelDest,
                vec![
                    Service(service_key_attributes(service)),
                    Destination(destination_key_attributes(real_server)),
                ],
            ),
            IpvsOperation::SetTimeouts(t) => (
                IpvsCommand::SetConfig,
                vec![
                    IpvsAttribute::TimeoutTcp(t.tcp),
                    IpvsAttribute::TimeoutTcpFin(t.tcp_fin),
                    IpvsAttribute::TimeoutUdp(t.udp),
                ],
            ),
            IpvsOperation::Flush => (IpvsCommand::Flush, vec![]),
        };
        IpvsMessage::new(command, attributes)
    }

    /// Whether this operation addresses a real server (so ENOENT means "no such destination").
    pub(crate) fn targets_real_server(&self) -> bool {
        matches!(
            self,
            IpvsOperation::UpdateRealServer { .. } | IpvsOperation::DeleteRealServer { .. }
        )
    }
}

impl fmt::Display for IpvsOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpvsOperation::AddVirtualServer(s) => write!(f, "add virtual server {}", s.key),
            IpvsOperation::UpdateVirtualServer(s) => write!(f, "update virtual server {}", s.key),
            IpvsOperation::DeleteVirtualServer(key) => write!(f, "delete virtual server {key}"),
            IpvsOperation::AddRealServer {
                service,
                real_server,
            } => write!(f, "add real server {} to {service}", real_server.key),
            IpvsOperation::UpdateRealServer {
                service,
                real_server,
            } => write!(f, "update real server {} of {service}", real_server.key),
            IpvsOperation::DeleteRealServer {
                service,
                real_server,
            } => write!(f, "delete real server {real_server} of {service}"),
            IpvsOperation::SetTimeouts(t) => {
                write!(
                    f,
                    "set timeouts tcp {} tcpfin {} udp {}",
                    t.tcp, t.tcp_fin, t.udp
                )
            }
            IpvsOperation::Flush => f.write_str("flush"),
        }
    }
}
