//! The dummy interface that holds virtual IPs (kube-proxy's `kube-ipvs0`), over rtnetlink.
//!
//! IPVS only intercepts traffic to addresses that are local to the node, so every virtual IP is
//! bound on a dummy interface of our own. Which addresses sit there is also how ownership of an
//! IPVS virtual server is derived after a restart.

use std::collections::BTreeSet;
use std::net::IpAddr;

use netlink_base::{split_messages, NetlinkSocket, Sequence};
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::protocols::NETLINK_ROUTE;

use crate::error::{Errno, Error};

/// An rtnetlink connection, in the network namespace of the thread that opened it.
pub struct InterfaceHandle {
    socket: NetlinkSocket,
    sequence: Sequence,
}

/// What a request came back with.
enum Reply {
    /// The request succeeded; dumps carry their messages.
    Done(Vec<RouteNetlinkMessage>),
    /// The kernel answered with this errno.
    Errno(i32),
}

const ENODEV: i32 = 19;
const EEXIST: i32 = 17;

fn socket_error(operation: &str) -> impl FnOnce(netlink_base::Error) -> Error + '_ {
    move |source| Error::Rtnetlink {
        operation: operation.to_owned(),
        source,
    }
}

impl InterfaceHandle {
    /// Opens a `NETLINK_ROUTE` socket (with the receive timeout of [`NetlinkSocket`]).
    pub fn connect() -> Result<Self, Error> {
        Ok(Self {
            socket: NetlinkSocket::open(NETLINK_ROUTE)
                .map_err(socket_error("connect to rtnetlink"))?,
            sequence: Sequence::new(0),
        })
    }

    /// A handle on `socket` (opened by the caller, e.g. connected to a user-space peer with
    /// [`NetlinkSocket::open_to_peer`]).
    pub fn over(socket: NetlinkSocket) -> Self {
        Self {
            socket,
            sequence: Sequence::new(0),
        }
    }

    fn request(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
        what: &str,
    ) -> Result<Reply, Error> {
        let sequence = self.sequence.allocate();
        let mut request =
            NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(message));
        request.header.flags = NLM_F_REQUEST | flags;
        request.header.sequence_number = sequence;
        request.finalize();
        let mut bytes = vec![0; request.buffer_len()];
        request.serialize(&mut bytes);
        self.socket.send_all(&bytes).map_err(socket_error(what))?;
        let mut messages = Vec::new();
        loop {
            let received = self.socket.receive().map_err(socket_error(what))?;
            for reply in split_messages(&received) {
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(reply).map_err(
                    |source| Error::MalformedReply {
                        operation: what.to_owned(),
                        source,
                    },
                )?;
                if reply.header.sequence_number != sequence {
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::InnerMessage(inner) => messages.push(inner),
                    NetlinkPayload::Done(_) => return Ok(Reply::Done(messages)),
                    NetlinkPayload::Error(err) => {
                        return Ok(match err.code {
                            Some(code) => Reply::Errno(-code.get()),
                            None => Reply::Done(messages),
                        })
                    }
                    _ => {}
                }
            }
        }
    }

    /// The index of interface `name`, if it exists.
    pub fn link_index(&mut self, name: &str) -> Result<Option<u32>, Error> {
        let mut message = LinkMessage::default();
        message
            .attributes
            .push(LinkAttribute::IfName(name.to_owned()));
        let what = format!("get link {name}");
        match self.request(RouteNetlinkMessage::GetLink(message), NLM_F_ACK, &what)? {
            Reply::Done(replies) => Ok(replies.iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(link) => Some(link.header.index),
                _ => None,
            })),
            Reply::Errno(ENODEV) => Ok(None),
            Reply::Errno(errno) => Err(kernel_error(what, errno)),
        }
    }

    /// Creates the dummy interface `name` unless it exists, and returns its index. Like
    /// kube-proxy's `kube-ipvs0` it stays down: its addresses are still local (which is all
    /// IPVS needs), and a down interface gets no IPv6 link-local address of its own.
    pub fn ensure_dummy(&mut self, name: &str) -> Result<u32, Error> {
        if let Some(index) = self.link_index(name)? {
            return Ok(index);
        }
        let mut message = LinkMessage::default();
        message
            .attributes
            .push(LinkAttribute::IfName(name.to_owned()));
        message
            .attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Dummy,
            )]));
        let what = format!("create dummy interface {name}");
        match self.request(
            RouteNetlinkMessage::NewLink(message),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            &what,
        )? {
            Reply::Done(_) | Reply::Errno(EEXIST) => {}
            Reply::Errno(errno) => return Err(kernel_error(what, errno)),
        }
        self.link_index(name)?
            .ok_or_else(|| kernel_error(format!("find {name} after creating it"), ENODEV))
    }

    /// Deletes interface `name`; returns false if it did not exist.
    pub fn delete_link(&mut self, name: &str) -> Result<bool, Error> {
        let Some(index) = self.link_index(name)? else {
            return Ok(false);
        };
        let mut message = LinkMessage::default();
        message.header.index = index;
        let what = format!("delete interface {name}");
        match self.request(RouteNetlinkMessage::DelLink(message), NLM_F_ACK, &what)? {
            Reply::Done(_) => Ok(true),
            Reply::Errno(ENODEV) => Ok(false),
            Reply::Errno(errno) => Err(kernel_error(what, errno)),
        }
    }

    /// The addresses on the interface with `index` (IPv6 link-local ones are the kernel's, not
    /// virtual IPs, and are left out).
    pub fn addresses(&mut self, index: u32) -> Result<BTreeSet<IpAddr>, Error> {
        let what = format!("dump addresses of interface {index}");
        match self.request(
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            NLM_F_DUMP,
            &what,
        )? {
            Reply::Done(replies) => Ok(replies
                .iter()
                .filter_map(|m| match m {
                    RouteNetlinkMessage::NewAddress(a) if a.header.index == index => {
                        a.attributes.iter().find_map(|attr| match attr {
                            AddressAttribute::Local(ip) => Some(*ip),
                            AddressAttribute::Address(ip)
                                if a.header.family == AddressFamily::Inet6 =>
                            {
                                Some(*ip)
                            }
                            _ => None,
                        })
                    }
                    _ => None,
                })
                .filter(|ip| !is_link_local(ip))
                .collect()),
            Reply::Errno(errno) => Err(kernel_error(what, errno)),
        }
    }

    fn address_message(index: u32, ip: IpAddr) -> AddressMessage {
        let mut message = AddressMessage::default();
        message.header.index = index;
        message.header.scope = AddressScope::Universe;
        match ip {
            IpAddr::V4(_) => {
                message.header.family = AddressFamily::Inet;
                message.header.prefix_len = 32;
                message.attributes.push(AddressAttribute::Local(ip));
                message.attributes.push(AddressAttribute::Address(ip));
            }
            IpAddr::V6(_) => {
                message.header.family = AddressFamily::Inet6;
                message.header.prefix_len = 128;
                // No duplicate address detection: the address is usable at once.
                message.header.flags = AddressHeaderFlags::Nodad;
                message.attributes.push(AddressAttribute::Address(ip));
                message
                    .attributes
                    .push(AddressAttribute::Flags(AddressFlags::Nodad));
            }
        }
        message
    }

    /// Binds `ip` (as /32 or /128) on the interface with `index`. EEXIST is returned as an error
    /// ([`Error::Kernel`]) so the caller's mirror stays exact.
    pub fn add_address(&mut self, index: u32, ip: IpAddr) -> Result<(), Error> {
        let message = RouteNetlinkMessage::NewAddress(Self::address_message(index, ip));
        let what = format!("add address {ip}");
        match self.request(message, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, &what)? {
            Reply::Done(_) => Ok(()),
            Reply::Errno(errno) => Err(kernel_error(what, errno)),
        }
    }

    /// Removes `ip` from the interface with `index` (EADDRNOTAVAIL if it is not there).
    pub fn delete_address(&mut self, index: u32, ip: IpAddr) -> Result<(), Error> {
        let message = RouteNetlinkMessage::DelAddress(Self::address_message(index, ip));
        let what = format!("delete address {ip}");
        match self.request(message, NLM_F_ACK, &what)? {
            Reply::Done(_) => Ok(()),
            Reply::Errno(errno) => Err(kernel_error(what, errno)),
        }
    }
}

fn kernel_error(op: String, errno: i32) -> Error {
    Error::Kernel {
        op,
        errno: Errno(errno),
    }
}

fn is_link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
        IpAddr::V4(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    /// An rtnetlink peer that never answers: the request ends in the socket's timeout as
    /// [`Error::Rtnetlink`] (a resync then fails and is retried), instead of hanging the loop.
    #[test]
    fn a_request_to_a_silent_peer_times_out() {
        let silent = netlink_base::SilentPeer::bind(NETLINK_ROUTE).unwrap();
        let peer = silent.port_id().unwrap();
        let mut socket = NetlinkSocket::open_to_peer(NETLINK_ROUTE, peer).unwrap();
        socket
            .set_receive_timeout(Duration::from_millis(100))
            .unwrap();
        let mut links = InterfaceHandle::over(socket);
        let started = Instant::now();
        let outcome = links.ensure_dummy("kube-ipvs0");
        assert!(
            matches!(
                outcome,
                Err(Error::Rtnetlink {
                    source: netlink_base::Error::Timeout { .. },
                    ..
                })
            ),
            "{outcome:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
