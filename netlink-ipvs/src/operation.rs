//! The operations a batch is made of, and how each becomes a message.

use std::fmt;

use crate::attr::IpvsAttribute;
use crate::convert::{
    destination_attributes, destination_key_attributes, service_attributes, service_key_attributes,
};
use crate::message::{IpvsCommand, IpvsMessage};
use crate::types::{RealServer, RealServerKey, ServiceKey, Timeouts, VirtualServer};

/// One change to the kernel's IPVS table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpvsOperation {
    /// Create a virtual server (EEXIST if it exists).
    AddService(VirtualServer),
    /// Change a virtual server's scheduler, flags, timeout or netmask (ESRCH if missing).
    UpdateService(VirtualServer),
    /// Delete a virtual server and its real servers (ESRCH if missing).
    DeleteService(ServiceKey),
    /// Add a real server to a virtual server.
    AddDestination {
        /// The virtual server.
        service: ServiceKey,
        /// The real server.
        real_server: RealServer,
    },
    /// Change a real server's weight, thresholds or forwarding method.
    UpdateDestination {
        /// The virtual server.
        service: ServiceKey,
        /// The real server with its new settings.
        real_server: RealServer,
    },
    /// Delete a real server.
    DeleteDestination {
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

impl IpvsOperation {
    /// The request message for this operation.
    pub fn to_message(&self) -> IpvsMessage {
        use IpvsAttribute::{Destination, Service};
        let (command, attributes) = match self {
            IpvsOperation::AddService(s) => (
                IpvsCommand::NewService,
                vec![Service(service_attributes(s))],
            ),
            IpvsOperation::UpdateService(s) => (
                IpvsCommand::SetService,
                vec![Service(service_attributes(s))],
            ),
            IpvsOperation::DeleteService(key) => (
                IpvsCommand::DelService,
                vec![Service(service_key_attributes(key))],
            ),
            IpvsOperation::AddDestination {
                service,
                real_server,
            } => (
                IpvsCommand::NewDest,
                vec![
                    Service(service_key_attributes(service)),
                    Destination(destination_attributes(real_server)),
                ],
            ),
            IpvsOperation::UpdateDestination {
                service,
                real_server,
            } => (
                IpvsCommand::SetDest,
                vec![
                    Service(service_key_attributes(service)),
                    Destination(destination_attributes(real_server)),
                ],
            ),
            IpvsOperation::DeleteDestination {
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
    pub(crate) fn targets_destination(&self) -> bool {
        matches!(
            self,
            IpvsOperation::UpdateDestination { .. } | IpvsOperation::DeleteDestination { .. }
        )
    }
}

impl fmt::Display for IpvsOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpvsOperation::AddService(s) => write!(f, "add service {}", s.key),
            IpvsOperation::UpdateService(s) => write!(f, "update service {}", s.key),
            IpvsOperation::DeleteService(key) => write!(f, "delete service {key}"),
            IpvsOperation::AddDestination {
                service,
                real_server,
            } => write!(f, "add destination {} to {service}", real_server.key),
            IpvsOperation::UpdateDestination {
                service,
                real_server,
            } => write!(f, "update destination {} of {service}", real_server.key),
            IpvsOperation::DeleteDestination {
                service,
                real_server,
            } => write!(f, "delete destination {real_server} of {service}"),
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
