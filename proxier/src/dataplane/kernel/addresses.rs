//! Following the node's local addresses: an rtnetlink socket subscribed to the address
//! notification groups (`RTNLGRP_IPV4_IFADDR`, `RTNLGRP_IPV6_IFADDR`), read without blocking.
//! Thin I/O: it only tells whether an address outside our dummy interface came or went; the
//! addresses are then dumped again and the planner decides where NodePorts open.

use std::io;

use netlink_base::split_messages;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::Socket;

use crate::error::Error;

/// `RTNLGRP_IPV4_IFADDR` (linux/rtnetlink.h).
const RTNLGRP_IPV4_IFADDR: u32 = 5;
/// `RTNLGRP_IPV6_IFADDR` (linux/rtnetlink.h).
const RTNLGRP_IPV6_IFADDR: u32 = 9;
/// `ENOBUFS`: notifications were lost (the receive buffer overflowed).
const ENOBUFS: i32 = 105;

fn socket_error(call: &'static str) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Rtnetlink {
        operation: "follow address notifications".to_owned(),
        source: netlink_base::Error::Io { call, source },
    }
}

/// Whether one datagram of notifications tells of an address outside the interface with
/// `ignored_index` (our dummy interface, whose addresses the engine binds itself). A datagram
/// that does not parse counts as a change: reading the addresses again is always safe.
pub fn notifies_change(datagram: &[u8], ignored_index: u32) -> bool {
    split_messages(datagram).any(|bytes| {
        match NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes) {
            Ok(message) => match message.payload {
                NetlinkPayload::InnerMessage(
                    RouteNetlinkMessage::NewAddress(a) | RouteNetlinkMessage::DelAddress(a),
                ) => a.header.index != ignored_index,
                _ => false,
            },
            Err(_) => true,
        }
    })
}

/// A subscription to address notifications in the network namespace of the thread that
/// opened it.
pub struct AddressWatch {
    socket: Socket,
    first: bool,
    buffer: Vec<u8>,
}

impl AddressWatch {
    /// Subscribes (before the first dump, so no change falls between the two).
    pub fn open() -> Result<Self, Error> {
        let mut socket =
            Socket::new(NETLINK_ROUTE).map_err(socket_error("socket(NETLINK_ROUTE)"))?;
        socket.bind_auto().map_err(socket_error("bind"))?;
        for group in [RTNLGRP_IPV4_IFADDR, RTNLGRP_IPV6_IFADDR] {
            socket
                .add_membership(group)
                .map_err(socket_error("setsockopt(NETLINK_ADD_MEMBERSHIP)"))?;
        }
        socket
            .set_non_blocking(true)
            .map_err(socket_error("fcntl(O_NONBLOCK)"))?;
        Ok(Self {
            socket,
            first: true,
            buffer: Vec::new(),
        })
    }

    /// Reads every pending notification; whether an address outside the interface with
    /// `ignored_index` changed since the last call (always true on the first call, and after
    /// lost notifications).
    pub fn changed(&mut self, ignored_index: u32) -> Result<bool, Error> {
        let mut changed = std::mem::take(&mut self.first);
        loop {
            self.buffer.clear();
            self.buffer.reserve(64 * 1024);
            match self.socket.recv(&mut self.buffer, 0) {
                Ok(0) => return Ok(changed),
                Ok(_) => changed |= notifies_change(&self.buffer, ignored_index),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(changed),
                Err(e) if e.raw_os_error() == Some(ENOBUFS) => changed = true,
                Err(e) => return Err(socket_error("recvmsg")(e)),
            }
        }
    }
}
