//! The operations a batch is made of, and how each becomes a message.

use std::fmt;

#[cfg(feature = "netlink")]
use crate::attr::IpvsAttribute;
#[cfg(feature = "netlink")]
use crate::convert::{
    destination_attributes, destination_key_attributes, service_attributes, service_key_attributes,
};
#[cfg(feature = "netlink")]
use crate::error::IpvsError;
#[cfg(feature = "netlink")]
use crate::message::{IpvsCommand, IpvsMessage};

/// `IP_VS_SCHEDNAME_MAXLEN` (16) less the terminating NUL.
#[cfg(feature = "netlink")]
const SCHEDULER_NAME_MAX: usize = 15;
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

    /// Refuses what the kernel can never accept and the encoder must not try: a scheduler name
    /// longer than `IP_VS_SCHEDNAME_MAXLEN - 1` (15) bytes (a name of 64 KiB would overflow the
    /// attribute's 16-bit length).
    pub fn check(&self) -> Result<(), IpvsError> {
        let scheduler = match self {
            IpvsOperation::AddVirtualServer(vs) | IpvsOperation::UpdateVirtualServer(vs) => {
                vs.scheduler.name()
            }
            _ => return Ok(()),
        };
        if scheduler.len() > SCHEDULER_NAME_MAX {
            return Err(IpvsError::Invalid {
                operation: self.to_string(),
                reason: "scheduler name longer than 15 bytes (IP_VS_SCHEDNAME_MAXLEN)",
            });
        }
        Ok(())
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

#[cfg(all(test, feature = "netlink"))]
mod tests {
    use super::*;
    use crate::types::{Protocol, ServiceKey};

    fn with_scheduler(name: &str) -> IpvsOperation {
        let mut vs = VirtualServer::new(ServiceKey::Address {
            protocol: Protocol::Tcp,
            address: std::net::Ipv4Addr::new(10, 96, 0, 1).into(),
            port: 80,
        });
        vs.scheduler = name.into();
        IpvsOperation::AddVirtualServer(vs)
    }

    #[test]
    fn a_scheduler_name_the_kernel_cannot_hold_is_refused_before_encoding() {
        assert!(with_scheduler("wrr").check().is_ok());
        assert!(with_scheduler("fifteen-bytes-x").check().is_ok());
        let long = with_scheduler(&"x".repeat(70_000));
        let Err(IpvsError::Invalid { reason, .. }) = long.check() else {
            panic!("a 70,000-byte scheduler name must be refused");
        };
        assert!(reason.contains("15 bytes"), "{reason}");
        assert!(with_scheduler("sixteen-bytes-xx").check().is_err());
        // Other operations have nothing to check.
        assert!(IpvsOperation::Flush.check().is_ok());
    }
}
