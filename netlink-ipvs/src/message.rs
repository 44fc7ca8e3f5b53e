//! IPVS generic-netlink messages: a command and its attributes.

use netlink_packet_core::{
    DecodeError, Emitable, ErrorContext, NetlinkMessage, NlasIterator, ParseableParametrized,
};
use netlink_packet_generic::{GenlFamily, GenlHeader, GenlMessage};

use crate::attr::IpvsAttribute;

/// The IPVS generic-netlink family name.
pub const IPVS_FAMILY_NAME: &str = "IPVS";
/// `IPVS_GENL_VERSION`.
pub const IPVS_GENL_VERSION: u8 = 1;

/// An IPVS command (`IPVS_CMD_*`). Sync-daemon commands are not modelled and parse as `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpvsCommand {
    /// Add a virtual server.
    NewService,
    /// Edit a virtual server.
    SetService,
    /// Delete a virtual server.
    DelService,
    /// Get or dump virtual servers.
    GetService,
    /// Add a real server.
    NewDest,
    /// Edit a real server.
    SetDest,
    /// Delete a real server.
    DelDest,
    /// Dump the real servers of a virtual server.
    GetDest,
    /// Set timeouts.
    SetConfig,
    /// Get timeouts.
    GetConfig,
    /// Reply to `GetInfo`.
    SetInfo,
    /// Get version and connection table size.
    GetInfo,
    /// Zero statistics.
    Zero,
    /// Delete every virtual server of the namespace.
    Flush,
    /// Any other command number.
    Other(u8),
}

const COMMANDS: [(u8, IpvsCommand); 14] = [
    (1, IpvsCommand::NewService),
    (2, IpvsCommand::SetService),
    (3, IpvsCommand::DelService),
    (4, IpvsCommand::GetService),
    (5, IpvsCommand::NewDest),
    (6, IpvsCommand::SetDest),
    (7, IpvsCommand::DelDest),
    (8, IpvsCommand::GetDest),
    (12, IpvsCommand::SetConfig),
    (13, IpvsCommand::GetConfig),
    (14, IpvsCommand::SetInfo),
    (15, IpvsCommand::GetInfo),
    (16, IpvsCommand::Zero),
    (17, IpvsCommand::Flush),
];

impl From<IpvsCommand> for u8 {
    fn from(command: IpvsCommand) -> u8 {
        match command {
            IpvsCommand::Other(n) => n,
            known => COMMANDS
                .iter()
                .find(|(_, c)| *c == known)
                .map_or(0, |(n, _)| *n),
        }
    }
}

impl From<u8> for IpvsCommand {
    fn from(number: u8) -> Self {
        COMMANDS
            .iter()
            .find(|(n, _)| *n == number)
            .map_or(IpvsCommand::Other(number), |(_, c)| *c)
    }
}

/// The payload of an IPVS generic-netlink message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpvsMessage {
    /// The command.
    pub command: IpvsCommand,
    /// Its attributes, in wire order.
    pub attributes: Vec<IpvsAttribute>,
}

impl IpvsMessage {
    /// A message with the given command and attributes.
    pub fn new(command: IpvsCommand, attributes: Vec<IpvsAttribute>) -> Self {
        Self {
            command,
            attributes,
        }
    }
}

impl GenlFamily for IpvsMessage {
    fn family_name() -> &'static str {
        IPVS_FAMILY_NAME
    }

    fn command(&self) -> u8 {
        self.command.into()
    }

    fn version(&self) -> u8 {
        IPVS_GENL_VERSION
    }
}

impl Emitable for IpvsMessage {
    fn buffer_len(&self) -> usize {
        self.attributes.as_slice().buffer_len()
    }

    fn emit(&self, buffer: &mut [u8]) {
        crate::attr::emit_list(&self.attributes, buffer)
    }
}

impl ParseableParametrized<[u8], GenlHeader> for IpvsMessage {
    fn parse_with_param(buf: &[u8], header: GenlHeader) -> Result<Self, DecodeError> {
        let command = IpvsCommand::from(header.cmd);
        let info = matches!(command, IpvsCommand::GetInfo | IpvsCommand::SetInfo);
        let attributes = NlasIterator::new(buf)
            .map(|nla| nla.and_then(|nla| IpvsAttribute::parse(&nla, info)))
            .collect::<Result<Vec<_>, _>>()
            .context(format!("IPVS {command:?} message"))?;
        Ok(Self {
            command,
            attributes,
        })
    }
}

/// Parses one netlink message (header, generic-netlink header, IPVS attributes) from the start
/// of `bytes`: a reply from the kernel or a request as `ipvsadm` sends it. Never panics.
pub fn decode_message(
    bytes: &[u8],
) -> Result<NetlinkMessage<GenlMessage<IpvsMessage>>, DecodeError> {
    NetlinkMessage::<GenlMessage<IpvsMessage>>::deserialize(bytes)
}
