//! The socket side: a generic-netlink socket bound to the IPVS family.

use netlink_base::{split_messages, Ack, AckTracker, NetlinkSocket, Sequence};
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
    pub fn apply(&mut self, operations: &[IpvsOperation]) -> Vec<Result<(), IpvsError>> {
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
            let answers = self.exchange_window(&window.bytes, first_sequence, window.count);
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

    /// Sends one window and reads until every request in it is answered: the errno (0 =
    /// success) of each request, in order. On a socket error the answers received so far are
    /// kept and the others carry the error.
    fn exchange_window(
        &mut self,
        bytes: &[u8],
        first_sequence: u32,
        count: usize,
    ) -> Vec<Result<i32, netlink_base::Error>> {
        let mut tracker = AckTracker::new(first_sequence, count);
        let mut failure = self.socket.send_all(bytes).err();
        while failure.is_none() && !tracker.complete() {
            match self.socket.receive() {
                Ok(received) => {
                    for ack in split_messages(&received).filter_map(Ack::parse) {
                        tracker.record(ack.sequence, ack.errno);
                    }
                }
                Err(error) => failure = Some(error),
            }
        }
        tracker
            .into_errnos()
            .into_iter()
            .map(|errno| match (errno, &failure) {
                (Some(errno), _) => Ok(errno),
                (None, Some(failure)) => Err(failure.clone()),
                // An unclosed window always comes with the failure that cut it short.
                (None, None) => Ok(0),
            })
            .collect()
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

    /// Every virtual server of the namespace.
    pub fn services(&mut self) -> Result<Vec<ServiceEntry>, IpvsError> {
        let what = "dump services";
        let request = IpvsMessage::new(IpvsCommand::GetService, vec![]);
        self.dump(request, what)?
            .iter()
            .flat_map(|m| &m.attributes)
            .filter_map(|a| match a {
                IpvsAttribute::Service(attributes) => Some(attributes),
                _ => None,
            })
            .map(|attributes| service_entry(attributes).map_err(|reason| malformed(what, reason)))
            .collect()
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

    /// The whole table: every virtual server with its real servers (1 + one dump per service).
    pub fn state(&mut self) -> Result<IpvsState, IpvsError> {
        let mut state = IpvsState::default();
        for entry in self.services()? {
            let real_servers = self
                .destinations(&entry.service.key)?
                .into_iter()
                .map(|d| (d.real_server.key, d.real_server))
                .collect();
            state.services.insert(
                entry.service.key,
                ServiceState {
                    service: entry.service,
                    real_servers,
                },
            );
        }
        Ok(state)
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

fn malformed(operation: &str, reason: impl ToString) -> IpvsError {
    IpvsError::MalformedReply {
        operation: operation.to_owned(),
        reason: reason.to_string(),
    }
}
