//! The socket side: a generic-netlink socket bound to the IPVS family.

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::GenlMessage;
use netlink_sys::{protocols::NETLINK_GENERIC, Socket, SocketAddr};

use crate::attr::IpvsAttribute;
use crate::batch::{encode_request, encode_window, AckTracker, WindowLimits};
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
    socket: Socket,
    family_id: u16,
    sequence: u32,
    limits: WindowLimits,
}

fn io_error(call: &'static str) -> impl FnOnce(std::io::Error) -> IpvsError {
    move |source| IpvsError::Io { call, source }
}

impl IpvsHandle {
    /// Opens a generic-netlink socket and resolves the `IPVS` family (the kernel loads `ip_vs`
    /// on this lookup if it can).
    pub fn connect() -> Result<Self, IpvsError> {
        let mut socket =
            Socket::new(NETLINK_GENERIC).map_err(io_error("socket(NETLINK_GENERIC)"))?;
        socket.bind_auto().map_err(io_error("bind"))?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(io_error("connect"))?;
        // Error ACKs without the echoed request keep the receive buffer for more ACKs.
        socket
            .set_cap_ack(true)
            .map_err(io_error("setsockopt(NETLINK_CAP_ACK)"))?;
        let mut handle = Self {
            socket,
            family_id: 0,
            sequence: 0,
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

    fn resolve_family(&mut self) -> Result<u16, IpvsError> {
        let request = GenlMessage::from_payload(GenlCtrl {
            cmd: GenlCtrlCmd::GetFamily,
            nlas: vec![GenlCtrlAttrs::FamilyName(IPVS_FAMILY_NAME.to_owned())],
        });
        let mut message =
            NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(request));
        message.header.flags = NLM_F_REQUEST | NLM_F_ACK;
        message.header.sequence_number = self.next_sequence();
        message.finalize();
        let mut buffer = vec![0; message.buffer_len()];
        message.serialize(&mut buffer);
        self.send(&buffer)?;
        let mut family_id = None;
        loop {
            let bytes = self.receive()?;
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

    fn next_sequence(&mut self) -> u32 {
        self.sequence = self.sequence.wrapping_add(1);
        self.sequence
    }

    fn send(&self, bytes: &[u8]) -> Result<(), IpvsError> {
        let sent = self.socket.send(bytes, 0).map_err(io_error("sendmsg"))?;
        if sent != bytes.len() {
            return Err(IpvsError::Io {
                call: "sendmsg",
                source: std::io::Error::other(format!("sent {sent} of {} bytes", bytes.len())),
            });
        }
        Ok(())
    }

    fn receive(&self) -> Result<Vec<u8>, IpvsError> {
        self.socket
            .recv_from_full()
            .map(|(bytes, _)| bytes)
            .map_err(io_error("recvmsg"))
    }

    /// Applies `operations` in order, many per `sendmsg`, and returns one result per operation,
    /// in the same order. One failing operation does not stop the others.
    pub fn apply(&mut self, operations: &[IpvsOperation]) -> Vec<Result<(), IpvsError>> {
        let mut results = Vec::with_capacity(operations.len());
        let mut first = 0;
        while first < operations.len() {
            let first_sequence = self.sequence.wrapping_add(1);
            let window = encode_window(
                self.family_id,
                operations,
                first,
                first_sequence,
                self.limits,
            );
            self.sequence = first_sequence.wrapping_add(window.count as u32 - 1);
            let ops = &operations[first..first + window.count];
            let (errnos, failure) =
                self.exchange_window(&window.bytes, first_sequence, window.count);
            results.extend(ops.iter().zip(errnos).map(|(op, errno)| match errno {
                Some(0) => Ok(()),
                Some(errno) => Err(IpvsError::from_errno(
                    errno,
                    op.to_string(),
                    op.targets_destination(),
                )),
                None => Err(IpvsError::Io {
                    call: "sendmsg/recvmsg",
                    source: std::io::Error::other(format!(
                        "{op}: no answer from the kernel ({})",
                        failure.as_ref().map_or("none".to_owned(), ToString::to_string)
                    )),
                }),
            }));
            first += window.count;
        }
        results
    }

    /// Sends one window and reads until every request in it is answered. On a socket error the
    /// answers received so far are kept and the error is returned beside them.
    fn exchange_window(
        &mut self,
        bytes: &[u8],
        first_sequence: u32,
        count: usize,
    ) -> (Vec<Option<i32>>, Option<IpvsError>) {
        let mut tracker = AckTracker::new(first_sequence, count);
        if let Err(failure) = self.send(bytes) {
            return (tracker.into_errnos(), Some(failure));
        }
        while !tracker.complete() {
            let received = match self.receive() {
                Ok(received) => received,
                Err(failure) => return (tracker.into_errnos(), Some(failure)),
            };
            for reply in split_messages(&received) {
                if let Some((sequence, errno)) = ack_of(reply) {
                    tracker.record(sequence, errno);
                }
            }
        }
        (tracker.into_errnos(), None)
    }

    /// Applies one operation.
    pub fn apply_one(&mut self, operation: IpvsOperation) -> Result<(), IpvsError> {
        self.apply(std::slice::from_ref(&operation))
            .pop()
            .unwrap_or(Ok(()))
    }

    /// Creates a virtual server.
    pub fn add_service(&mut self, service: &VirtualServer) -> Result<(), IpvsError> {
        self.apply_one(IpvsOperation::AddService(service.clone()))
    }

    /// Deletes a virtual server with its real servers.
    pub fn delete_service(&mut self, key: &ServiceKey) -> Result<(), IpvsError> {
        self.apply_one(IpvsOperation::DeleteService(*key))
    }

    /// Adds a real server.
    pub fn add_destination(
        &mut self,
        service: &ServiceKey,
        real_server: &RealServer,
    ) -> Result<(), IpvsError> {
        self.apply_one(IpvsOperation::AddDestination {
            service: *service,
            real_server: *real_server,
        })
    }

    /// Deletes a real server.
    pub fn delete_destination(
        &mut self,
        service: &ServiceKey,
        real_server: &RealServerKey,
    ) -> Result<(), IpvsError> {
        self.apply_one(IpvsOperation::DeleteDestination {
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
        let sequence = self.next_sequence();
        encode_request(
            self.family_id,
            request,
            NLM_F_REQUEST | flags,
            sequence,
            &mut bytes,
        );
        self.send(&bytes)?;
        let mut messages = Vec::new();
        loop {
            let received = self.receive()?;
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

/// Splits a receive buffer into netlink messages by their length fields; stops at a malformed
/// length rather than reading past the buffer.
pub(crate) fn split_messages(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        if rest.len() < 16 {
            return None;
        }
        let length = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if length < 16 || length > rest.len() {
            return None;
        }
        let (message, tail) = rest.split_at(length);
        let aligned = (length + 3) & !3;
        rest = tail.get(aligned - length..).unwrap_or_default();
        Some(message)
    })
}

/// The sequence number and errno (0 = success) of an `NLMSG_ERROR` message.
pub(crate) fn ack_of(message: &[u8]) -> Option<(u32, i32)> {
    const NLMSG_ERROR: u16 = 2;
    let kind = u16::from_ne_bytes([message[4], message[5]]);
    if kind != NLMSG_ERROR || message.len() < 20 {
        return None;
    }
    let sequence = u32::from_ne_bytes([message[8], message[9], message[10], message[11]]);
    let code = i32::from_ne_bytes([message[16], message[17], message[18], message[19]]);
    Some((sequence, -code))
}
