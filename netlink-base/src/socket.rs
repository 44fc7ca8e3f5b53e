//! The one blocking netlink socket every client opens.

use std::io;
use std::time::Duration;

use netlink_sys::{Socket, SocketAddr};
use rustix::net::sockopt;

use crate::error::Error;
use crate::{split_messages, Ack, AckTracker};

/// How long a receive waits for the kernel before it is reported as [`Error::Timeout`].
pub const DEFAULT_RECEIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// A netlink socket connected to the kernel, in the network namespace of the thread that
/// opened it, with a receive timeout.
#[derive(Debug)]
pub struct NetlinkSocket {
    socket: Socket,
    timeout: Duration,
}

fn io_error(call: &'static str) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Io { call, source }
}

impl NetlinkSocket {
    /// Opens a socket for netlink `protocol` (`NETLINK_GENERIC`, `NETLINK_NETFILTER`, ...):
    /// binds it, connects it to the kernel, asks for error ACKs without the echoed request
    /// (`NETLINK_CAP_ACK`: many more fit in the receive buffer) and sets the receive timeout to
    /// [`DEFAULT_RECEIVE_TIMEOUT`].
    pub fn open(protocol: isize) -> Result<Self, Error> {
        Self::open_connected(protocol, 0)
    }

    /// Like [`NetlinkSocket::open`], but connected to the user-space netlink socket bound to
    /// `port_id` (see [`SilentPeer::port_id`]) instead of the kernel: a peer under the
    /// caller's control, e.g. one that never answers, to show that a request then ends in
    /// [`Error::Timeout`] instead of hanging.
    pub fn open_to_peer(protocol: isize, port_id: u32) -> Result<Self, Error> {
        Self::open_connected(protocol, port_id)
    }

    fn open_connected(protocol: isize, port_id: u32) -> Result<Self, Error> {
        let mut socket = Socket::new(protocol).map_err(io_error("socket(AF_NETLINK)"))?;
        socket.bind_auto().map_err(io_error("bind"))?;
        socket
            .connect(&SocketAddr::new(port_id, 0))
            .map_err(io_error("connect"))?;
        socket
            .set_cap_ack(true)
            .map_err(io_error("setsockopt(NETLINK_CAP_ACK)"))?;
        let mut socket = Self {
            socket,
            timeout: DEFAULT_RECEIVE_TIMEOUT,
        };
        socket.set_receive_timeout(DEFAULT_RECEIVE_TIMEOUT)?;
        Ok(socket)
    }

    /// Changes how long a receive waits (must not be zero: zero would mean "forever").
    pub fn set_receive_timeout(&mut self, timeout: Duration) -> Result<(), Error> {
        let timeout = timeout.max(Duration::from_millis(1));
        sockopt::set_socket_timeout(&self.socket, sockopt::Timeout::Recv, Some(timeout)).map_err(
            |e| Error::Io {
                call: "setsockopt(SO_RCVTIMEO)",
                source: e.into(),
            },
        )?;
        self.timeout = timeout;
        Ok(())
    }

    /// Sends `bytes` in one `sendmsg`; a partial send is an error.
    pub fn send_all(&self, bytes: &[u8]) -> Result<(), Error> {
        let sent = self.socket.send(bytes, 0).map_err(io_error("sendmsg"))?;
        if sent != bytes.len() {
            return Err(Error::ShortSend {
                sent,
                len: bytes.len(),
            });
        }
        Ok(())
    }

    /// Receives one datagram, whatever its size.
    pub fn receive(&self) -> Result<Vec<u8>, Error> {
        self.socket
            .recv_from_full()
            .map(|(bytes, _)| bytes)
            .map_err(|e| self.receive_error(e))
    }

    /// Receives one datagram of at most `capacity` bytes into `buffer` (cleared first), so a
    /// stream of datagrams reuses one allocation.
    pub fn receive_into(&self, buffer: &mut Vec<u8>, capacity: usize) -> Result<(), Error> {
        buffer.clear();
        buffer.reserve(capacity);
        self.socket
            .recv(buffer, 0)
            .map(|_| ())
            .map_err(|e| self.receive_error(e))
    }

    fn receive_error(&self, error: io::Error) -> Error {
        // SO_RCVTIMEO expiring shows as EAGAIN/EWOULDBLOCK.
        if error.kind() == io::ErrorKind::WouldBlock {
            Error::Timeout {
                timeout: self.timeout,
            }
        } else {
            Error::Io {
                call: "recvmsg",
                source: error,
            }
        }
    }

    /// Sends one window of requests (sequence numbers `first_sequence..first_sequence +
    /// count`, only the last asking for an ACK: [`crate::ack_last_only`]) in one `sendmsg` and
    /// reads until every request is answered: the errno (0 = success) of each, in order (see
    /// [`AckTracker`]). On a socket error the answers received so far are kept and the others
    /// carry the error.
    pub fn exchange_window(
        &self,
        bytes: &[u8],
        first_sequence: u32,
        count: usize,
    ) -> Vec<Result<i32, Error>> {
        let mut tracker = AckTracker::new(first_sequence, count);
        let mut failure = self.send_all(bytes).err();
        while failure.is_none() && !tracker.complete() {
            match self.receive() {
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

    /// A netlink `sendmsg` larger than the socket's send buffer fails with EMSGSIZE: grows the
    /// buffer to hold `len` bytes (`SO_SNDBUFFORCE` needs CAP_NET_ADMIN, which the requests
    /// need anyway; if it fails, the send reports the real error).
    pub fn grow_send_buffer(&self, len: usize) {
        let wanted = len + 64 * 1024;
        let current = sockopt::socket_send_buffer_size(&self.socket).unwrap_or(0);
        if current < wanted {
            let _ignored = sockopt::set_socket_send_buffer_size_force(&self.socket, wanted);
        }
    }
}

/// A bound, unconnected user-space netlink socket that takes requests and never answers: the
/// peer of [`NetlinkSocket::open_to_peer`] in tests of the timeout path (a connected socket
/// would refuse messages from anyone but its own peer).
#[derive(Debug)]
pub struct SilentPeer {
    socket: Socket,
}

impl SilentPeer {
    /// Binds a socket for netlink `protocol` to a port id of the kernel's choosing.
    pub fn bind(protocol: isize) -> Result<Self, Error> {
        let mut socket = Socket::new(protocol).map_err(io_error("socket(AF_NETLINK)"))?;
        socket.bind_auto().map_err(io_error("bind"))?;
        Ok(Self { socket })
    }

    /// The port id to connect to.
    pub fn port_id(&self) -> Result<u32, Error> {
        let mut address = SocketAddr::new(0, 0);
        self.socket
            .get_address(&mut address)
            .map_err(io_error("getsockname"))?;
        Ok(address.port_number())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `NETLINK_NETFILTER`: a protocol every kernel with netfilter has, openable without
    /// privileges; a socket nobody sends to times out instead of hanging.
    #[test]
    fn a_receive_without_an_answer_times_out() {
        let mut socket = NetlinkSocket::open(12).unwrap();
        socket
            .set_receive_timeout(Duration::from_millis(50))
            .unwrap();
        let started = std::time::Instant::now();
        match socket.receive() {
            Err(Error::Timeout { timeout }) => assert_eq!(timeout, Duration::from_millis(50)),
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(5));
        let mut buffer = Vec::new();
        assert!(matches!(
            socket.receive_into(&mut buffer, 1024),
            Err(Error::Timeout { .. })
        ));
    }

    /// A request sent to a peer that never answers (a user-space socket that never reads)
    /// ends in a timeout, not a hang.
    #[test]
    fn a_request_to_a_silent_peer_times_out() {
        let silent = SilentPeer::bind(12).unwrap();
        let port = silent.port_id().unwrap();
        assert_ne!(port, 0);
        let mut socket = NetlinkSocket::open_to_peer(12, port).unwrap();
        socket
            .set_receive_timeout(Duration::from_millis(100))
            .unwrap();
        socket.send_all(&[0; 16]).unwrap();
        let started = std::time::Instant::now();
        assert!(matches!(socket.receive(), Err(Error::Timeout { .. })));
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
