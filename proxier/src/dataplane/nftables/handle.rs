//! The socket side: a `NETLINK_NETFILTER` socket in the network namespace of the thread that
//! opened it. Blocking; every answer is awaited with a receive timeout.

use std::collections::BTreeMap;
use std::time::Duration;

use netlink_packet_core::{NetlinkBuffer, NLMSG_ERROR};
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

use super::attr::msg;
use super::message::NftMessage;
use super::{encode_batch, ruleset, PacketRules};
use crate::error::{Errno, Error};

/// How long to wait for the kernel's answers before reporting them missing.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to nf_tables over nfnetlink.
pub struct NftablesHandle {
    socket: Socket,
    sequence: u32,
}

fn io_error(operation: &str) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Netlink {
        operation: operation.to_owned(),
        source,
    }
}

impl NftablesHandle {
    /// Opens a `NETLINK_NETFILTER` socket.
    pub fn connect() -> Result<Self, Error> {
        let mut socket =
            Socket::new(NETLINK_NETFILTER).map_err(io_error("socket(NETLINK_NETFILTER)"))?;
        socket.bind_auto().map_err(io_error("bind"))?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(io_error("connect"))?;
        // Error ACKs without the echoed request: many ACKs fit in the receive buffer.
        socket
            .set_cap_ack(true)
            .map_err(io_error("setsockopt(NETLINK_CAP_ACK)"))?;
        rustix::net::sockopt::set_socket_timeout(
            &socket,
            rustix::net::sockopt::Timeout::Recv,
            Some(ANSWER_TIMEOUT),
        )
        .map_err(|e| Error::Netlink {
            operation: "setsockopt(SO_RCVTIMEO)".to_owned(),
            source: e.into(),
        })?;
        // Sequence numbers start from the clock so that a stale answer to an earlier process
        // on a reused port id is not taken for ours.
        let sequence = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1);
        Ok(Self { socket, sequence })
    }

    /// Replaces our table with `rules` in one transaction (one `sendmsg`). On failure nothing
    /// changed (the kernel aborts the whole batch) and the error names the refused message.
    pub fn replace_table(&mut self, rules: &PacketRules) -> Result<(), Error> {
        let messages = ruleset::replace_table_messages(rules);
        self.transaction(&messages)
    }

    /// Brings a table written from `old` in line with `new`: set elements added and removed in
    /// one transaction when only set contents differ, the whole table replaced otherwise.
    pub fn update_table(&mut self, old: &PacketRules, new: &PacketRules) -> Result<(), Error> {
        match ruleset::update_messages(old, new) {
            Some(messages) if messages.is_empty() => Ok(()),
            Some(messages) => self.transaction(&messages),
            None => self.replace_table(new),
        }
    }

    /// Deletes table `inet TABLE`; `false` if it did not exist. Touches nothing else.
    pub fn delete_table(&mut self, table: &str) -> Result<bool, Error> {
        let message = ruleset::table_message(msg::DELTABLE, table, 0, "delete");
        match self.transaction(&[message]) {
            Ok(()) => Ok(true),
            Err(Error::Kernel {
                errno: Errno::ENOENT,
                ..
            }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether table `inet TABLE` exists.
    pub fn table_exists(&mut self, table: &str) -> Result<bool, Error> {
        let message = ruleset::table_message(msg::GETTABLE, table, 0, "get");
        let sequence = self.next_sequence(1);
        let mut bytes = Vec::new();
        message.emit(sequence, &mut bytes);
        self.send(&bytes)?;
        let mut tracker = AckTracker::new(sequence.wrapping_sub(1), &[message]);
        while !tracker.is_done() {
            let answer = self.receive()?;
            tracker.feed(&answer);
        }
        match tracker.into_result() {
            Ok(()) => Ok(true),
            Err(Error::Kernel {
                errno: Errno::ENOENT,
                ..
            }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn transaction(&mut self, messages: &[NftMessage]) -> Result<(), Error> {
        // BATCH_BEGIN, the messages, BATCH_END.
        let first = self.next_sequence(messages.len() as u32 + 2);
        let bytes = encode_batch(messages, first);
        self.grow_send_buffer(bytes.len());
        self.send(&bytes)?;
        let mut tracker = AckTracker::new(first, messages);
        while !tracker.is_done() {
            let answer = self.receive()?;
            tracker.feed(&answer);
        }
        tracker.into_result()
    }

    /// A netlink `sendmsg` larger than the socket's send buffer fails with EMSGSIZE; a big table
    /// (10k IPv6 service IPs) needs more than the default. SO_SNDBUFFORCE needs CAP_NET_ADMIN,
    /// which writing nf_tables needs anyway; if it fails, the send reports the real error.
    fn grow_send_buffer(&self, len: usize) {
        let wanted = len + 64 * 1024;
        let current = rustix::net::sockopt::socket_send_buffer_size(&self.socket).unwrap_or(0);
        if current < wanted {
            let _ignored =
                rustix::net::sockopt::set_socket_send_buffer_size_force(&self.socket, wanted);
        }
    }

    /// Reserves `count` sequence numbers and returns the first.
    fn next_sequence(&mut self, count: u32) -> u32 {
        let first = self.sequence.wrapping_add(1);
        self.sequence = self.sequence.wrapping_add(count);
        first
    }

    fn send(&self, bytes: &[u8]) -> Result<(), Error> {
        let sent = self.socket.send(bytes, 0).map_err(io_error("sendmsg"))?;
        if sent != bytes.len() {
            return Err(Error::Netlink {
                operation: "sendmsg".to_owned(),
                source: std::io::Error::other(format!("sent {sent} of {} bytes", bytes.len())),
            });
        }
        Ok(())
    }

    fn receive(&self) -> Result<Vec<u8>, Error> {
        self.socket
            .recv_from_full()
            .map(|(bytes, _)| bytes)
            .map_err(io_error("recvmsg (waiting for nf_tables ACKs)"))
    }
}

/// Matches the kernel's answers to the messages of one batch (sans-io): every message asks for
/// an ACK, so each gets exactly one `NLMSG_ERROR` (code 0 = done). An error answering the
/// batch header itself means the kernel refused the whole batch.
#[derive(Debug)]
pub(super) struct AckTracker {
    batch_begin: u32,
    /// Sequence number → description, for the messages not answered yet.
    pending: BTreeMap<u32, String>,
    /// Refused messages: (description, errno).
    failures: Vec<(String, i32)>,
    batch_refused: bool,
}

impl AckTracker {
    /// `batch_begin` is the sequence number of `BATCH_BEGIN`; message `i` has
    /// `batch_begin + 1 + i`.
    pub(super) fn new(batch_begin: u32, messages: &[NftMessage]) -> Self {
        let pending = messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                (
                    batch_begin.wrapping_add(1).wrapping_add(i as u32),
                    m.description.clone(),
                )
            })
            .collect();
        Self {
            batch_begin,
            pending,
            failures: Vec::new(),
            batch_refused: false,
        }
    }

    /// Takes one datagram from the socket.
    pub(super) fn feed(&mut self, mut bytes: &[u8]) {
        while let Ok(message) = NetlinkBuffer::new_checked(bytes) {
            let len = (message.length() as usize).max(16);
            if message.message_type() == NLMSG_ERROR {
                let payload = message.payload();
                let code = payload
                    .get(..4)
                    .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                    .unwrap_or(-libc_eproto());
                self.answer(message.sequence_number(), code);
            }
            // Other answers (the NEWTABLE reply to GETTABLE) need no action.
            let next = (len + 3) & !3;
            if next >= bytes.len() {
                break;
            }
            bytes = &bytes[next..];
        }
    }

    fn answer(&mut self, sequence: u32, code: i32) {
        if let Some(description) = self.pending.remove(&sequence) {
            if code != 0 {
                self.failures.push((description, -code));
            }
        } else if sequence == self.batch_begin && code != 0 {
            self.batch_refused = true;
            self.failures
                .push(("nf_tables batch (BATCH_BEGIN)".to_owned(), -code));
        }
    }

    /// Whether every message is answered (or the batch was refused as a whole).
    pub(super) fn is_done(&self) -> bool {
        self.pending.is_empty() || self.batch_refused
    }

    /// The first refusal, naming its message (and how many others were refused).
    pub(super) fn into_result(self) -> Result<(), Error> {
        let count = self.failures.len();
        match self.failures.into_iter().next() {
            None => Ok(()),
            Some((description, errno)) => {
                let op = if count > 1 {
                    format!("{description} (and {} more refused)", count - 1)
                } else {
                    description
                };
                Err(Error::Kernel {
                    op,
                    errno: Errno(errno),
                })
            }
        }
    }
}

/// `EPROTO`: an `NLMSG_ERROR` too short to hold its code.
fn libc_eproto() -> i32 {
    71
}
