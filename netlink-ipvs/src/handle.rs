//! The socket side: a generic-netlink socket bound to the IPVS family.

use netlink_base::{split_messages, NetlinkSocket, Sequence};
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::GenlMessage;
use netlink_sys::protocols::NETLINK_GENERIC;

use crate::attr::IpvsAttribute;
use crate::batch::{encode_request, encode_window, WindowLimits};
use crate::convert::{destination_entry, service_entry, service_key_attributes};
use crate::convert::{DestinationEntry, ServiceEntry};
use crate::error::IpvsError;
use crate::message::{IpvsCommand, IpvsMessage, IPVS_FAMILY_NAME};
use crate::operation::IpvsOperation;
use crate::types::{
    IpvsState, RealServer, RealServerKey, ServiceKey, ServiceState, Timeouts, VirtualServer,
};

/// Version and connection table size of the kernel's IPVS (`ipvsadm` prints them as its header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpvsInfo {
    /// `IP_VS_VERSION_CODE`, e.g. `0x010201` for 1.2.1.
    pub version: u32,
    /// Size of the connection hash table.
    pub connection_table_size: u32,
}

/// A connection to the kernel's IPVS through generic netlink, in the network namespace of the
/// thread that opened it. Blocking.
pub struct IpvsHandle {
    socket: NetlinkSocket,
    family_id: u16,
    sequence: Sequence,
    limits: WindowLimits,
}

impl IpvsHandle {
    /// Opens a generic-netlink socket (with the receive timeout of [`NetlinkSocket`]) and
    /// resolves the `IPVS` family (the kernel loads `ip_vs` on this lookup if it can).
    pub fn connect() -> Result<Self, IpvsError> {
        let mut handle = Self {
            socket: NetlinkSocket::open(NETLINK_GENERIC)?,
            family_id: 0,
            sequence: Sequence::new(0),
            limits: WindowLimits::default(),
        };
        handle.family_id = handle.resolve_family()?;
        Ok(handle)
    }

    /// A handle on `socket` (opened by the caller, e.g. connected to a user-space peer with
    /// [`NetlinkSocket::open_to_peer`]) for the family numbered `family_id`: no request is sent.
    pub fn over(socket: NetlinkSocket, family_id: u16) -> Self {
        Self {
            socket,
            family_id,
            sequence: Sequence::new(0),
            limits: WindowLimits::default(),
        }
    }

    /// The numeric id the kernel gave the `IPVS` family.
    pub fn family_id(&self) -> u16 {
        self.family_id
    }

    /// Changes how many requests go into one `sendmsg` (see [`WindowLimits`]).
    pub fn set_window_limits(&mut self, limits: WindowLimits) {
        self.limits = limits;
    }

    /// Changes how long a receive waits for the kernel (10 s by default).
    pub fn set_receive_timeout(&mut self, timeout: std::time::Duration) -> Result<(), IpvsError> {
        Ok(self.socket.set_receive_timeout(timeout)?)
    }

    fn resolve_family(&mut self) -> Result<u16, IpvsError> {
        let request = GenlMessage::from_payload(GenlCtrl {
            cmd: GenlCtrlCmd::GetFamily,
            nlas: vec![GenlCtrlAttrs::FamilyName(IPVS_FAMILY_NAME.to_owned())],
        });
        let mut message =
            NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(request));
        message.header.flags = NLM_F_REQUEST | NLM_F_ACK;
        message.header.sequence_number = self.sequence.allocate();
        message.finalize();
        let mut buffer = vec![0; message.buffer_len()];
        message.serialize(&mut buffer);
        self.socket.send_all(&buffer)?;
        let mut family_id = None;
        loop {
            let bytes = self.socket.receive()?;
            for reply in split_messages(&bytes) {
                let reply = NetlinkMessage::<GenlMessage<GenlCtrl>>::deserialize(reply)
                    .map_err(|e| malformed("resolve the IPVS family", e))?;
                match reply.payload {
                    NetlinkPayload::InnerMessage(genl) => {
                        family_id = genl.payload.nlas.iter().find_map(|nla| match nla {
                            GenlCtrlAttrs::FamilyId(id) => Some(*id),
                            _ => None,
                        });
                    }
                    NetlinkPayload::Error(err) if err.code.is_some() => {
                        return Err(IpvsError::FamilyNotFound)
                    }
                    NetlinkPayload::Error(_) | NetlinkPayload::Done(_) => {
                        return family_id.ok_or(IpvsError::FamilyNotFound)
                    }
                    _ => {}
                }
            }
        }
    }

    /// Applies `operations` in order, many per `sendmsg`, and returns one result per operation,
    /// in the same order. One failing operation does not stop the others.
    /// An operation the kernel could never accept ([`IpvsOperation::check`]) is refused without
    /// being sent.
    pub fn apply(&mut self, operations: &[IpvsOperation]) -> Vec<Result<(), IpvsError>> {
        self.apply_gated(operations, |_| {})
    }

    /// [`IpvsHandle::apply`], calling `before_window` with the operations of each window just
    /// before it is sent (e.g. to wait until what the window needs is in place: the caller's
    /// virtual IPs bound on another thread).
    pub fn apply_gated(
        &mut self,
        operations: &[IpvsOperation],
        mut before_window: impl FnMut(&[IpvsOperation]),
    ) -> Vec<Result<(), IpvsError>> {
        let refused: Vec<Option<IpvsError>> =
            operations.iter().map(|op| op.check().err()).collect();
        if refused.iter().all(Option::is_none) {
            return self.apply_checked(operations, &mut before_window);
        }
        let valid: Vec<IpvsOperation> = operations
            .iter()
            .zip(&refused)
            .filter(|(_, refusal)| refusal.is_none())
            .map(|(op, _)| op.clone())
            .collect();
        let mut answers = self.apply_checked(&valid, &mut before_window).into_iter();
        refused
            .into_iter()
            .map(|refusal| match refusal {
                Some(error) => Err(error),
                // One answer per valid operation, in order (apply_checked's contract).
                None => answers.next().unwrap_or(Ok(())),
            })
            .collect()
    }

    fn apply_checked(
        &mut self,
        operations: &[IpvsOperation],
        before_window: &mut impl FnMut(&[IpvsOperation]),
    ) -> Vec<Result<(), IpvsError>> {
        let mut results = Vec::with_capacity(operations.len());
        let mut first = 0;
        while first < operations.len() {
            let first_sequence = self.sequence.upcoming();
            let window = encode_window(
                self.family_id,
                operations,
                first,
                first_sequence,
                self.limits,
            );
            self.sequence.reserve(window.count as u32);
            let ops = &operations[first..first + window.count];
            before_window(ops);
            let answers = self
                .socket
                .exchange_window(&window.bytes, first_sequence, window.count);
            results.extend(ops.iter().zip(answers).map(|(op, answer)| match answer {
                Ok(0) => Ok(()),
                Ok(errno) => Err(IpvsError::from_errno(
                    errno,
                    op.to_string(),
                    op.targets_real_server(),
                )),
                Err(failure) => Err(IpvsError::Unanswered {
                    operation: op.to_string(),
                    source: failure,
                }),
            }));
            first += window.count;
        }
        results
    }

    /// Applies one operation.
    pub fn apply_one(&mut self, operation: IpvsOperation) -> Result<(), IpvsError> {
        self.apply(std::slice::from_ref(&operation))
            .pop()
            .unwrap_or(Ok(()))
    }

    /// Creates a virtual server.
    pub fn add_virtual_server(&mut self, service: &VirtualServer) -> Result<(), IpvsError> {
        self.apply_one(IpvsOperation::AddVirtualServer(service.clone()))
    }

    /// Deletes a virtual server with its real servers.
    pub fn delete_virtual_server(&mut self, key: &ServiceKey) -> Result<(), IpvsError> {
        self.apply_one(IpvsOperation::DeleteVirtualServer(*key))
    }

    /// Adds a real server.
    pub fn add_real_server(
        &mut self,
        service: &ServiceKey,
        real_server: &RealServer,
    ) -> Result<(), IpvsError> {
        self.apply_one(IpvsOperation::AddRealServer {
            service: *service,
            real_server: *real_server,
        })
    }

    /// Deletes a real server.
    pub fn delete_real_server(
        &mut self,
        service: &ServiceKey,
        real_server: &RealServerKey,
    ) -> Result<(), IpvsError> {
        self.apply_one(IpvsOperation::DeleteRealServer {
            service: *service,
            real_server: *real_server,
        })
    }

    /// Sends a request and collects its reply messages until `NLMSG_DONE` (a dump) or the ACK
    /// (a single request, sent with `NLM_F_ACK`).
    fn exchange(
        &mut self,
        request: IpvsMessage,
        flags: u16,
        what: &str,
    ) -> Result<Vec<IpvsMessage>, IpvsError> {
        let mut bytes = Vec::new();
        let sequence = self.sequence.allocate();
        encode_request(
            self.family_id,
            request,
            NLM_F_REQUEST | flags,
            sequence,
            &mut bytes,
        );
        self.socket.send_all(&bytes)?;
        let mut messages = Vec::new();
        loop {
            let received = self.socket.receive()?;
            for reply in split_messages(&received) {
                let reply = NetlinkMessage::<GenlMessage<IpvsMessage>>::deserialize(reply)
                    .map_err(|e| malformed(what, e))?;
                if reply.header.sequence_number != sequence {
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::InnerMessage(genl) => messages.push(genl.payload),
                    NetlinkPayload::Done(_) => return Ok(messages),
                    NetlinkPayload::Error(err) => match err.code {
                        Some(code) => {
                            return Err(IpvsError::from_errno(-code.get(), what.to_owned(), false))
                        }
                        None => return Ok(messages),
                    },
                    _ => {}
                }
            }
        }
    }

    /// A dump: every reply message.
    fn dump(&mut self, request: IpvsMessage, what: &str) -> Result<Vec<IpvsMessage>, IpvsError> {
        self.exchange(request, NLM_F_DUMP, what)
    }

    /// A request that answers with one message.
    fn query(&mut self, request: IpvsMessage, what: &str) -> Result<IpvsMessage, IpvsError> {
        self.exchange(request, NLM_F_ACK, what)?
            .into_iter()
            .next()
            .ok_or_else(|| malformed(what, "no reply message before the ACK"))
    }

    /// Every virtual server of the namespace; fails on the first entry this crate cannot read
    /// ([`IpvsHandle::state_report`] skips such entries instead).
    pub fn services(&mut self) -> Result<Vec<ServiceEntry>, IpvsError> {
        let (entries, skipped) = self.service_dump()?;
        match skipped.into_iter().next() {
            Some(skipped) => Err(skipped.reason),
            None => Ok(entries),
        }
    }

    fn service_dump(&mut self) -> Result<(Vec<ServiceEntry>, Vec<SkippedService>), IpvsError> {
        let request = IpvsMessage::new(IpvsCommand::GetService, vec![]);
        let messages = self.dump(request, SERVICE_DUMP)?;
        Ok(service_entries(&messages))
    }

    /// The real servers of one virtual server.
    pub fn destinations(
        &mut self,
        service: &ServiceKey,
    ) -> Result<Vec<DestinationEntry>, IpvsError> {
        let what = format!("dump destinations of {service}");
        let request = IpvsMessage::new(
            IpvsCommand::GetDest,
            vec![IpvsAttribute::Service(service_key_attributes(service))],
        );
        self.dump(request, &what)?
            .iter()
            .flat_map(|m| &m.attributes)
            .filter_map(|a| match a {
                IpvsAttribute::Destination(attributes) => Some(attributes),
                _ => None,
            })
            .map(|attributes| {
                destination_entry(attributes, service.family()).map_err(|r| malformed(&what, r))
            })
            .collect()
    }

    /// The whole table: every virtual server with its real servers (1 + one dump per service),
    /// as far as it can be read (see [`IpvsHandle::state_report`], whose skipped entries are
    /// dropped here).
    pub fn state(&mut self) -> Result<IpvsState, IpvsError> {
        self.state_report().map(|report| report.state)
    }

    /// The whole table, leaving out (and listing in [`IpvsStateReport::skipped`]) a virtual
    /// server whose entry this crate cannot read and one that vanished between the service
    /// dump and its destination dump: one odd or racing virtual server (most likely someone
    /// else's) does not make the whole table unreadable. A socket failure still fails the call.
    pub fn state_report(&mut self) -> Result<IpvsStateReport, IpvsError> {
        let (entries, mut skipped) = self.service_dump()?;
        let mut state = IpvsState::default();
        for entry in entries {
            let key = entry.service.key;
            let real_servers = match self.destinations(&key) {
                Ok(destinations) => destinations
                    .into_iter()
                    .map(|d| (d.real_server.key, d.real_server))
                    .collect(),
                Err(reason) if is_skippable(&reason) => {
                    skipped.push(SkippedService {
                        key: Some(key),
                        reason,
                    });
                    continue;
                }
                Err(other) => return Err(other),
            };
            state.services.insert(
                key,
                ServiceState {
                    service: entry.service,
                    real_servers,
                },
            );
        }
        Ok(IpvsStateReport { state, skipped })
    }

    /// The connection timeouts.
    pub fn timeouts(&mut self) -> Result<Timeouts, IpvsError> {
        let reply = self.query(
            IpvsMessage::new(IpvsCommand::GetConfig, vec![]),
            "get timeouts",
        )?;
        let mut timeouts = Timeouts::default();
        for attribute in reply.attributes {
            match attribute {
                IpvsAttribute::TimeoutTcp(t) => timeouts.tcp = t,
                IpvsAttribute::TimeoutTcpFin(t) => timeouts.tcp_fin = t,
                IpvsAttribute::TimeoutUdp(t) => timeouts.udp = t,
                _ => {}
            }
        }
        Ok(timeouts)
    }

    /// Sets the connection timeouts (a 0 leaves that value unchanged).
    pub fn set_timeouts(&mut self, timeouts: Timeouts) -> Result<(), IpvsError> {
        self.apply_one(IpvsOperation::SetTimeouts(timeouts))
    }

    /// IPVS version and connection table size.
    pub fn info(&mut self) -> Result<IpvsInfo, IpvsError> {
        let reply = self.query(IpvsMessage::new(IpvsCommand::GetInfo, vec![]), "get info")?;
        let mut info = IpvsInfo {
            version: 0,
            connection_table_size: 0,
        };
        for attribute in reply.attributes {
            match attribute {
                IpvsAttribute::Version(v) => info.version = v,
                IpvsAttribute::ConnectionTableSize(n) => info.connection_table_size = n,
                _ => {}
            }
        }
        Ok(info)
    }
}

/// What the service dump is called in errors.
const SERVICE_DUMP: &str = "dump services";

/// A virtual server left out of [`IpvsHandle::state_report`].
#[derive(Debug)]
pub struct SkippedService {
    /// Its key, when it could be read.
    pub key: Option<ServiceKey>,
    /// Why: a malformed entry ([`IpvsError::MalformedReply`]), or the virtual server was gone
    /// by the time its destinations were asked for (ESRCH or ENOENT).
    pub reason: IpvsError,
}

/// The table as far as it could be read, and what was left out.
#[derive(Debug, Default)]
pub struct IpvsStateReport {
    /// Every virtual server that could be read, with its real servers.
    pub state: IpvsState,
    /// What was left out, and why.
    pub skipped: Vec<SkippedService>,
}

/// A per-service failure that skips that service instead of failing the whole dump.
fn is_skippable(error: &IpvsError) -> bool {
    matches!(
        error,
        IpvsError::MalformedReply { .. }
            | IpvsError::NoSuchService { .. }
            | IpvsError::NoSuchDestination { .. }
    ) || matches!(error, IpvsError::Kernel { source, .. } if source.raw_os_error() == Some(ENOENT))
}

/// ENOENT (a stable ABI number): what some kernels answer for a dump of a vanished service.
const ENOENT: i32 = 2;

/// The entries of a service dump's messages, and those that could not be read.
pub(crate) fn service_entries(
    messages: &[IpvsMessage],
) -> (Vec<ServiceEntry>, Vec<SkippedService>) {
    let mut entries = Vec::new();
    let mut skipped = Vec::new();
    let attributes = messages
        .iter()
        .flat_map(|m| &m.attributes)
        .filter_map(|a| match a {
            IpvsAttribute::Service(attributes) => Some(attributes),
            _ => None,
        });
    for attributes in attributes {
        match service_entry(attributes) {
            Ok(entry) => entries.push(entry),
            Err(reason) => skipped.push(SkippedService {
                key: None,
                reason: malformed(SERVICE_DUMP, reason),
            }),
        }
    }
    (entries, skipped)
}

fn malformed(operation: &str, reason: impl ToString) -> IpvsError {
    IpvsError::MalformedReply {
        operation: operation.to_owned(),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attr::ServiceAttribute;
    use crate::convert::service_attributes;
    use crate::types::Protocol;

    fn service_message(attributes: Vec<ServiceAttribute>) -> IpvsMessage {
        IpvsMessage::new(
            IpvsCommand::NewService,
            vec![IpvsAttribute::Service(attributes)],
        )
    }

    /// A dump with one foreign entry this crate cannot read (no scheduler) between two good
    /// ones: the good ones are kept, the bad one is reported, not fatal.
    #[test]
    fn an_unreadable_service_entry_is_skipped_and_reported() {
        let good = |port| {
            VirtualServer::new(ServiceKey::Address {
                protocol: Protocol::Tcp,
                address: "10.96.0.1".parse().unwrap(),
                port,
            })
        };
        let mut unreadable = service_attributes(&good(81));
        unreadable.retain(|a| !matches!(a, ServiceAttribute::Scheduler(_)));
        let messages = [
            service_message(service_attributes(&good(80))),
            service_message(unreadable),
            service_message(service_attributes(&good(82))),
        ];
        let (entries, skipped) = service_entries(&messages);
        let ports: Vec<u16> = entries
            .iter()
            .filter_map(|e| match e.service.key {
                ServiceKey::Address { port, .. } => Some(port),
                ServiceKey::FwMark { .. } => None,
            })
            .collect();
        assert_eq!(ports, [80, 82]);
        assert_eq!(skipped.len(), 1);
        assert!(matches!(
            &skipped[0].reason,
            IpvsError::MalformedReply { reason, .. } if reason.contains("scheduler")
        ));
        assert!(is_skippable(&skipped[0].reason));
    }

    /// A peer that never answers: the dump and a batch both end in the receive timeout (a
    /// typed error), neither hangs.
    #[test]
    fn requests_to_a_silent_peer_time_out() {
        let silent = netlink_base::SilentPeer::bind(NETLINK_GENERIC).unwrap();
        let peer = silent.port_id().unwrap();
        let mut handle = IpvsHandle::over(
            NetlinkSocket::open_to_peer(NETLINK_GENERIC, peer).unwrap(),
            42,
        );
        handle
            .set_receive_timeout(std::time::Duration::from_millis(100))
            .unwrap();
        let started = std::time::Instant::now();
        assert!(matches!(
            handle.state(),
            Err(IpvsError::Socket(netlink_base::Error::Timeout { .. }))
        ));
        let key = ServiceKey::FwMark {
            mark: 1,
            family: crate::types::Family::V4,
        };
        let outcomes = handle.apply(&[IpvsOperation::DeleteVirtualServer(key)]);
        assert!(matches!(
            outcomes.as_slice(),
            [Err(IpvsError::Unanswered {
                source: netlink_base::Error::Timeout { .. },
                ..
            })]
        ));
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn only_per_service_failures_are_skippable() {
        let gone = IpvsError::from_errno(3, "dump destinations".into(), false);
        assert!(is_skippable(&gone));
        let enoent = IpvsError::from_errno(2, "dump destinations".into(), false);
        assert!(is_skippable(&enoent));
        let denied = IpvsError::from_errno(1, "dump destinations".into(), false);
        assert!(!is_skippable(&denied));
        let timeout = IpvsError::Socket(netlink_base::Error::Timeout {
            timeout: std::time::Duration::from_secs(10),
        });
        assert!(!is_skippable(&timeout));
    }
}
