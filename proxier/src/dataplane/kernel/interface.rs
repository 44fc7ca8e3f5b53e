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
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::protocols::NETLINK_ROUTE;

use super::binding::{address_message, encode_bind_window, ADDRESS_WINDOW};
use crate::error::{Errno, Error};
use crate::plan::is_ipv6_link_local;

/// An rtnetlink connection, in the network namespace of the thread that opened it.
pub struct InterfaceHandle {
    socket: NetlinkSocket,
    sequence: Sequence,
}

/// What an rtnetlink request came back with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteReply {
    /// The request succeeded; dumps carry their messages.
    Done(Vec<RouteNetlinkMessage>),
    /// The kernel answered with this errno.
    Errno(i32),
}

impl RouteReply {
    /// The index of the (first) link in the answer to a link request.
    pub fn link_index(&self) -> Option<u32> {
        let RouteReply::Done(messages) = self else {
            return None;
        };
        messages.iter().find_map(|m| match m {
            RouteNetlinkMessage::NewLink(link) => Some(link.header.index),
            _ => None,
        })
    }

    /// Every (interface index, address) in the answer to an address dump.
    fn address_entries(&self) -> impl Iterator<Item = (u32, IpAddr)> + '_ {
        let messages = match self {
            RouteReply::Done(messages) => messages.as_slice(),
            RouteReply::Errno(_) => &[],
        };
        messages.iter().filter_map(|m| match m {
            RouteNetlinkMessage::NewAddress(a) => a
                .attributes
                .iter()
                .find_map(|attr| match attr {
                    AddressAttribute::Local(ip) => Some(*ip),
                    AddressAttribute::Address(ip) if a.header.family == AddressFamily::Inet6 => {
                        Some(*ip)
                    }
                    _ => None,
                })
                .map(|ip| (a.header.index, ip)),
            _ => None,
        })
    }

    /// The addresses on the interface with `index` in the answer to an address dump (IPv6
    /// link-local ones are the kernel's, not virtual IPs, and are left out).
    pub fn addresses_on(&self, index: u32) -> BTreeSet<IpAddr> {
        self.address_entries()
            .filter(|(i, ip)| *i == index && !is_ipv6_link_local(ip))
            .map(|(_, ip)| ip)
            .collect()
    }

    /// The addresses on every interface but the one with `index`, all of them (which count
    /// as node addresses is the planner's rule), in dump order without duplicates.
    pub fn addresses_off(&self, index: u32) -> Vec<IpAddr> {
        let mut out: Vec<IpAddr> = Vec::new();
        for (_, ip) in self.address_entries().filter(|(i, _)| *i != index) {
            if !out.contains(&ip) {
                out.push(ip);
            }
        }
        out
    }
}

/// The answer to one rtnetlink request, read datagram by datagram (sans-io: the socket loop of
/// [`InterfaceHandle`] feeds it what it receives).
#[derive(Debug)]
pub struct RouteAnswer {
    sequence: u32,
    messages: Vec<RouteNetlinkMessage>,
}

impl RouteAnswer {
    /// Waits for the answer to the request with `sequence`.
    pub fn new(sequence: u32) -> Self {
        Self {
            sequence,
            messages: Vec::new(),
        }
    }

    /// Reads one datagram; `Some` once the answer is complete (`NLMSG_DONE`, an ACK or an
    /// error). Messages answering other requests are skipped; `what` names the request in a
    /// [`Error::MalformedReply`].
    pub fn feed(&mut self, datagram: &[u8], what: &str) -> Result<Option<RouteReply>, Error> {
        for reply in split_messages(datagram) {
            let reply =
                NetlinkMessage::<RouteNetlinkMessage>::deserialize(reply).map_err(|source| {
                    Error::MalformedReply {
                        operation: what.to_owned(),
                        source,
                    }
                })?;
            if reply.header.sequence_number != self.sequence {
                continue;
            }
            match reply.payload {
                NetlinkPayload::InnerMessage(inner) => self.messages.push(inner),
                NetlinkPayload::Done(_) => {
                    return Ok(Some(RouteReply::Done(std::mem::take(&mut self.messages))))
                }
                NetlinkPayload::Error(err) => {
                    return Ok(Some(match err.code {
                        Some(code) => RouteReply::Errno(-code.get()),
                        None => RouteReply::Done(std::mem::take(&mut self.messages)),
                    }))
                }
                _ => {}
            }
        }
        Ok(None)
    }
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
    ) -> Result<RouteReply, Error> {
        let sequence = self.sequence.allocate();
        let mut request =
            NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(message));
        request.header.flags = NLM_F_REQUEST | flags;
        request.header.sequence_number = sequence;
        request.finalize();
        let mut bytes = vec![0; request.buffer_len()];
        request.serialize(&mut bytes);
        self.socket.send_all(&bytes).map_err(socket_error(what))?;
        let mut answer = RouteAnswer::new(sequence);
        loop {
            let received = self.socket.receive().map_err(socket_error(what))?;
            if let Some(reply) = answer.feed(&received, what)? {
                return Ok(reply);
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
            reply @ RouteReply::Done(_) => Ok(reply.link_index()),
            RouteReply::Errno(ENODEV) => Ok(None),
            RouteReply::Errno(errno) => Err(kernel_error(what, errno)),
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
            RouteReply::Done(_) | RouteReply::Errno(EEXIST) => {}
            RouteReply::Errno(errno) => return Err(kernel_error(what, errno)),
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
            RouteReply::Done(_) => Ok(true),
            RouteReply::Errno(ENODEV) => Ok(false),
            RouteReply::Errno(errno) => Err(kernel_error(what, errno)),
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
            reply @ RouteReply::Done(_) => Ok(reply.addresses_on(index)),
            RouteReply::Errno(errno) => Err(kernel_error(what, errno)),
        }
    }

    /// The node's local addresses on every interface but the one with `index` (our dummy
    /// interface): the input of `nodePortAddresses`.
    pub fn addresses_outside(&mut self, index: u32) -> Result<Vec<IpAddr>, Error> {
        let what = "dump the node's addresses";
        match self.request(
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            NLM_F_DUMP,
            what,
        )? {
            reply @ RouteReply::Done(_) => Ok(reply.addresses_off(index)),
            RouteReply::Errno(errno) => Err(kernel_error(what.to_owned(), errno)),
        }
    }

    /// Binds `ip` (as /32 or /128) on the interface with `index`. EEXIST is returned as an error
    /// ([`Error::Kernel`]) so the caller's mirror stays exact.
    pub fn add_address(&mut self, index: u32, ip: IpAddr) -> Result<(), Error> {
        let message = RouteNetlinkMessage::NewAddress(address_message(index, ip));
        let what = format!("add address {ip}");
        match self.request(message, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, &what)? {
            RouteReply::Done(_) => Ok(()),
            RouteReply::Errno(errno) => Err(kernel_error(what, errno)),
        }
    }

    /// Binds every address of `ips` on the interface with `index`, each as
    /// [`InterfaceHandle::add_address`] would, in windows of [`ADDRESS_WINDOW`] requests per
    /// `sendmsg` with one ACK each: one result per address, in order.
    pub fn add_addresses(&mut self, index: u32, ips: &[IpAddr]) -> Vec<Result<(), Error>> {
        let mut results = Vec::with_capacity(ips.len());
        for window in ips.chunks(ADDRESS_WINDOW) {
            let first = self.sequence.reserve(window.len() as u32);
            let bytes = encode_bind_window(index, window, first);
            let answers = self.socket.exchange_window(&bytes, first, window.len());
            results.extend(window.iter().zip(answers).map(|(ip, answer)| {
                let what = || format!("add address {ip}");
                match answer {
                    Ok(0) => Ok(()),
                    Ok(errno) => Err(kernel_error(what(), errno)),
                    Err(source) => Err(socket_error(&what())(source)),
                }
            }));
        }
        results
    }

    /// Removes `ip` from the interface with `index` (EADDRNOTAVAIL if it is not there).
    pub fn delete_address(&mut self, index: u32, ip: IpAddr) -> Result<(), Error> {
        let message = RouteNetlinkMessage::DelAddress(address_message(index, ip));
        let what = format!("delete address {ip}");
        match self.request(message, NLM_F_ACK, &what)? {
            RouteReply::Done(_) => Ok(()),
            RouteReply::Errno(errno) => Err(kernel_error(what, errno)),
        }
    }
}

fn kernel_error(op: String, errno: i32) -> Error {
    Error::Kernel {
        op,
        errno: Errno(errno),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use netlink_packet_core::{DoneMessage, ErrorMessage};

    use super::*;

    fn datagram(sequence: u32, payloads: Vec<NetlinkPayload<RouteNetlinkMessage>>) -> Vec<u8> {
        let mut bytes = Vec::new();
        for payload in payloads {
            let mut message = NetlinkMessage::new(NetlinkHeader::default(), payload);
            message.header.sequence_number = sequence;
            message.finalize();
            let start = bytes.len();
            bytes.resize(start + message.buffer_len(), 0);
            message.serialize(&mut bytes[start..]);
        }
        bytes
    }

    fn new_address(index: u32, ip: IpAddr) -> NetlinkPayload<RouteNetlinkMessage> {
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(address_message(index, ip)))
    }

    #[test]
    fn an_address_dump_is_read_across_datagrams_and_other_sequences_skipped() {
        let mut answer = RouteAnswer::new(7);
        let first = datagram(7, vec![new_address(3, "10.96.0.1".parse().unwrap())]);
        let stray = datagram(6, vec![new_address(3, "10.96.0.9".parse().unwrap())]);
        let last = datagram(
            7,
            vec![
                new_address(3, "fe80::1".parse().unwrap()),
                new_address(4, "10.96.0.2".parse().unwrap()),
                new_address(3, "fd00::1".parse().unwrap()),
                NetlinkPayload::Done(DoneMessage::default()),
            ],
        );
        assert_eq!(answer.feed(&first, "dump").unwrap(), None);
        assert_eq!(answer.feed(&stray, "dump").unwrap(), None);
        let reply = answer
            .feed(&last, "dump")
            .unwrap()
            .expect("DONE ends the dump");
        let want: BTreeSet<IpAddr> = ["10.96.0.1", "fd00::1"]
            .iter()
            .map(|ip| ip.parse().unwrap())
            .collect();
        assert_eq!(reply.addresses_on(3), want);
        assert_eq!(reply.link_index(), None);
    }

    #[test]
    fn an_error_answer_is_its_errno_and_garbage_is_malformed() {
        let mut error = ErrorMessage::default();
        error.code = std::num::NonZeroI32::new(-ENODEV);
        let mut answer = RouteAnswer::new(1);
        let reply = answer
            .feed(&datagram(1, vec![NetlinkPayload::Error(error)]), "get link")
            .unwrap();
        assert_eq!(reply, Some(RouteReply::Errno(ENODEV)));
        let mut garbage = datagram(1, vec![new_address(1, "10.0.0.1".parse().unwrap())]);
        // RTM_NEWADDR cut to 4 bytes of its 8-byte `struct ifaddrmsg`.
        garbage.truncate(20);
        garbage[..4].copy_from_slice(&20u32.to_ne_bytes());
        let Err(Error::MalformedReply { operation, .. }) = RouteAnswer::new(1).feed(&garbage, "x")
        else {
            panic!("a message that does not parse is an error");
        };
        assert_eq!(operation, "x");
    }

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
