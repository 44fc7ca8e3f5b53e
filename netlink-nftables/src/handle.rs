//! The socket side: a `NETLINK_NETFILTER` socket in the network namespace of the thread that
//! opened it. Blocking; every answer is awaited with the receive timeout of [`NetlinkSocket`].

use netlink_base::{split_messages, Ack, AckTracker, NetlinkSocket, Sequence};
use netlink_sys::protocols::NETLINK_NETFILTER;

use crate::attr::msg;
use crate::batch::encode_batch;
use crate::dump::{parse_generation, DumpAnswers, NftReply};
use crate::error::{NftablesError, DUMP_ATTEMPTS};
use crate::message::NftMessage;

/// `ENOENT`: no such table.
const ENOENT: i32 = 2;

/// A connection to nf_tables over nfnetlink.
pub struct NftablesHandle {
    socket: NetlinkSocket,
    sequence: Sequence,
}

impl NftablesHandle {
    /// Opens a `NETLINK_NETFILTER` socket.
    pub fn connect() -> Result<Self, NftablesError> {
        Ok(Self {
            socket: NetlinkSocket::open(NETLINK_NETFILTER)?,
            // A stale answer to an earlier process on a reused port id is not taken for ours.
            sequence: Sequence::from_clock(),
        })
    }

    /// Changes how long a receive waits for the kernel (10 s by default).
    pub fn set_receive_timeout(
        &mut self,
        timeout: std::time::Duration,
    ) -> Result<(), NftablesError> {
        Ok(self.socket.set_receive_timeout(timeout)?)
    }

    /// Sends `messages` as one transaction (one `sendmsg`): the kernel applies all of them or,
    /// if it refuses one, none; the error names the (first) refused message.
    pub fn transaction(&mut self, messages: &[NftMessage]) -> Result<(), NftablesError> {
        if messages.is_empty() {
            return Ok(());
        }
        // BATCH_BEGIN, the messages, BATCH_END.
        let batch_begin = self.sequence.reserve(messages.len() as u32 + 2);
        let bytes = encode_batch(messages, batch_begin);
        self.socket.grow_send_buffer(bytes.len());
        self.socket.send_all(&bytes)?;
        let mut answers = TransactionAnswers::new(batch_begin, messages.len());
        while !answers.complete() {
            let datagram = self.socket.receive()?;
            answers.feed(&datagram);
        }
        answers.into_result(messages)
    }

    /// Deletes table `inet TABLE`; `false` if it did not exist. Touches nothing else.
    pub fn delete_table(&mut self, table: &str) -> Result<bool, NftablesError> {
        let message = NftMessage::table(msg::DELTABLE, table, 0, "delete");
        absent_is_false(self.transaction(&[message]))
    }

    /// Every object of `kind` (`msg::GETTABLE`, `GETCHAIN`, `GETRULE`) in `family`, dumped
    /// again when the ruleset changed while it was read.
    pub fn dump(&mut self, kind: u8, family: u8) -> Result<Vec<NftReply>, NftablesError> {
        let request = NftMessage::dump(kind, family);
        for _ in 0..DUMP_ATTEMPTS {
            let answers = self.request_dump(&request)?;
            if let Some(errno) = answers.errno {
                return Err(NftablesError::Refused {
                    message: request.description,
                    errno,
                    others: 0,
                });
            }
            if !answers.interrupted {
                return Ok(answers.replies);
            }
        }
        Err(NftablesError::DumpInterrupted(request.description))
    }

    /// Sends one dump request (`request` emitted with `emit_request`) and reads its answer.
    pub(crate) fn dump_with(
        &mut self,
        emit_request: impl Fn(u32, &mut Vec<u8>),
    ) -> Result<DumpAnswers, NftablesError> {
        self.send_request(emit_request)?;
        let mut answers = DumpAnswers::default();
        while !answers.done {
            let datagram = self.socket.receive()?;
            answers.feed(&datagram)?;
        }
        Ok(answers)
    }

    /// Sends one request with the next sequence number (returned).
    fn send_request(
        &mut self,
        emit_request: impl Fn(u32, &mut Vec<u8>),
    ) -> Result<u32, NftablesError> {
        let sequence = self.sequence.allocate();
        let mut bytes = Vec::new();
        emit_request(sequence, &mut bytes);
        self.socket.send_all(&bytes)?;
        Ok(sequence)
    }

    fn request_dump(&mut self, request: &NftMessage) -> Result<DumpAnswers, NftablesError> {
        self.dump_with(|sequence, out| request.emit(sequence, false, out))
    }

    /// Sends one request asking for an ACK (`emit_request`) and returns the kernel's errno
    /// (0: done); replies before the ACK are ignored.
    pub(crate) fn acknowledged(
        &mut self,
        emit_request: impl Fn(u32, &mut Vec<u8>),
    ) -> Result<i32, NftablesError> {
        let sequence = self.send_request(emit_request)?;
        let mut tracker = AckTracker::new(sequence, 1);
        while !tracker.complete() {
            let datagram = self.socket.receive()?;
            for ack in split_messages(&datagram).filter_map(Ack::parse) {
                tracker.record(ack.sequence, ack.errno);
            }
        }
        Ok(tracker.into_errnos().pop().flatten().unwrap_or(0))
    }

    /// The ruleset's generation: the kernel bumps it with every committed transaction, by
    /// anyone (nft, iptables-nft, us), so an unchanged generation means an unchanged ruleset.
    pub fn generation(&mut self) -> Result<u32, NftablesError> {
        let request = NftMessage::get_generation();
        let sequence = self.send_request(|sequence, out| request.emit(sequence, true, out))?;
        let mut tracker = AckTracker::new(sequence, 1);
        let mut generation = None;
        while !tracker.complete() {
            let datagram = self.socket.receive()?;
            for message in split_messages(&datagram) {
                if let Some(id) = parse_generation(message)? {
                    generation = Some(id);
                } else if let Some(ack) = Ack::parse(message) {
                    tracker.record(ack.sequence, ack.errno);
                }
            }
        }
        let errno = tracker.into_errnos().pop().flatten().unwrap_or(0);
        refusal(&[request], &[Some(errno)], None)?;
        generation.ok_or(NftablesError::Malformed("no NEWGEN before the ACK"))
    }

    /// Whether table `inet TABLE` exists.
    pub fn table_exists(&mut self, table: &str) -> Result<bool, NftablesError> {
        let message = NftMessage::table(msg::GETTABLE, table, 0, "get");
        // The NEWTABLE reply to GETTABLE needs no action; its ACK follows.
        let errno = self.acknowledged(|sequence, out| message.emit(sequence, true, out))?;
        absent_is_false(refusal(&[message], &[Some(errno)], None))
    }
}

fn absent_is_false(result: Result<(), NftablesError>) -> Result<bool, NftablesError> {
    match result {
        Ok(()) => Ok(true),
        Err(NftablesError::Refused { errno: ENOENT, .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The answers to one transaction (sans-io): the window of its messages (only the last asks
/// for an ACK, see [`encode_batch`]), and an error answering `BATCH_BEGIN` itself, which means
/// the kernel refused the whole batch (or could not commit it).
#[derive(Debug)]
pub struct TransactionAnswers {
    batch_begin: u32,
    window: AckTracker,
    batch_refused: Option<i32>,
}

impl TransactionAnswers {
    /// `batch_begin` is the sequence number of `BATCH_BEGIN`; message `i` of `count` has
    /// `batch_begin + 1 + i`.
    pub fn new(batch_begin: u32, count: usize) -> Self {
        Self {
            batch_begin,
            window: AckTracker::new(batch_begin.wrapping_add(1), count),
            batch_refused: None,
        }
    }

    /// Takes one datagram from the socket.
    pub fn feed(&mut self, datagram: &[u8]) {
        for ack in split_messages(datagram).filter_map(Ack::parse) {
            if ack.sequence == self.batch_begin {
                if ack.errno != 0 {
                    self.batch_refused = Some(ack.errno);
                }
            } else {
                self.window.record(ack.sequence, ack.errno);
            }
        }
    }

    /// Whether every message is answered (or the batch was refused as a whole).
    pub fn complete(&self) -> bool {
        self.window.complete() || self.batch_refused.is_some()
    }

    /// The first refusal, naming its message from `messages` (and how many others were
    /// refused).
    pub fn into_result(self, messages: &[NftMessage]) -> Result<(), NftablesError> {
        refusal(messages, &self.window.into_errnos(), self.batch_refused)
    }
}

fn refusal(
    messages: &[NftMessage],
    errnos: &[Option<i32>],
    batch_refused: Option<i32>,
) -> Result<(), NftablesError> {
    let mut refused = messages
        .iter()
        .zip(errnos)
        .filter_map(|(m, errno)| match errno {
            Some(errno) if *errno != 0 => Some((m.description.clone(), *errno)),
            _ => None,
        })
        .chain(batch_refused.map(|errno| ("nf_tables batch (BATCH_BEGIN)".to_owned(), errno)));
    let Some((message, errno)) = refused.next() else {
        return Ok(());
    };
    Err(NftablesError::Refused {
        message,
        errno,
        others: refused.count(),
    })
}
