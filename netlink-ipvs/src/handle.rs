//! The socket side: a generic-netlink socket bound to the IPVS family.

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_REQUEST,
};
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::GenlMessage;
use netlink_sys::{protocols::NETLINK_GENERIC, Socket, SocketAddr};

use crate::error::IpvsError;

/// The IPVS generic-netlink family name.
const FAMILY_NAME: &str = "IPVS";

/// A connection to the kernel's IPVS through generic netlink.
pub struct IpvsHandle {
    socket: Socket,
    family_id: u16,
    sequence: u32,
}

impl IpvsHandle {
    /// Opens a generic-netlink socket in the caller's network namespace and resolves the
    /// `IPVS` family (the kernel loads `ip_vs` on this lookup if it can).
    pub fn connect() -> Result<Self, IpvsError> {
        let io = |call| move |source| IpvsError::Io { call, source };
        let mut socket = Socket::new(NETLINK_GENERIC).map_err(io("socket(NETLINK_GENERIC)"))?;
        socket.bind_auto().map_err(io("bind"))?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(io("connect"))?;
        let mut handle = Self {
            socket,
            family_id: 0,
            sequence: 0,
        };
        handle.family_id = handle.resolve_family()?;
        Ok(handle)
    }

    /// The numeric id the kernel gave the `IPVS` family.
    pub fn family_id(&self) -> u16 {
        self.family_id
    }

    fn resolve_family(&mut self) -> Result<u16, IpvsError> {
        let request = GenlMessage::from_payload(GenlCtrl {
            cmd: GenlCtrlCmd::GetFamily,
            nlas: vec![GenlCtrlAttrs::FamilyName(FAMILY_NAME.to_owned())],
        });
        let mut message =
            NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(request));
        message.header.flags = NLM_F_REQUEST | NLM_F_ACK;
        self.sequence += 1;
        message.header.sequence_number = self.sequence;
        message.finalize();
        let mut buffer = vec![0; message.buffer_len()];
        message.serialize(&mut buffer);
        self.socket
            .send(&buffer, 0)
            .map_err(|source| IpvsError::Io {
                call: "send",
                source,
            })?;
        let mut family_id = None;
        loop {
            let (bytes, _) = self
                .socket
                .recv_from_full()
                .map_err(|source| IpvsError::Io {
                    call: "recv",
                    source,
                })?;
            let mut offset = 0;
            while offset < bytes.len() {
                let reply = NetlinkMessage::<GenlMessage<GenlCtrl>>::deserialize(&bytes[offset..])
                    .map_err(|e| IpvsError::MalformedReply {
                        operation: "resolve the IPVS family".into(),
                        reason: e.to_string(),
                    })?;
                offset += reply.header.length as usize;
                match reply.payload {
                    NetlinkPayload::InnerMessage(genl) => {
                        family_id = genl.payload.nlas.iter().find_map(|nla| match nla {
                            GenlCtrlAttrs::FamilyId(id) => Some(*id),
                            _ => None,
                        });
                    }
                    NetlinkPayload::Error(err) if err.code.is_some() => {
                        return Err(IpvsError::FamilyNotFound);
                    }
                    NetlinkPayload::Error(_) | NetlinkPayload::Done(_) => {
                        return family_id.ok_or(IpvsError::FamilyNotFound);
                    }
                    _ => {}
                }
                if reply.header.length == 0 {
                    break;
                }
            }
        }
    }
}
