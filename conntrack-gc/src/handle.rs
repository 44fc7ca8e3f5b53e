//! The thin I/O driver: two ctnetlink sockets (one streams the dump, one carries batched
//! deletes), so entries are deleted while the table is being read, with bounded memory.

use std::io;

use netlink_base::{ack_last_only, AckTracker, NetlinkSocket, Sequence};
use tracing::{debug, warn};

use crate::ctnetlink::{
    encode_delete, encode_dump, encode_new, ConntrackEntry, DumpFilter, NewEntry, Replies, Reply,
    NETLINK_NETFILTER,
};
use crate::error::Error;
use crate::filter::{ConntrackFilter, FilterSet};

/// Receive buffer for one `recvmsg`: the kernel builds dump messages of at most 32 KiB.
const RECV_BUFFER: usize = 64 * 1024;

/// Requests per `sendmsg` before their answers are read. Only the last asks for an ACK, but
/// each refusal (ENOENT: the entry expired meanwhile) costs the receive queue about 1 KiB of skb
/// truesize, so 128 stay far below the default ~208 KiB `SO_RCVBUF`.
pub const DEFAULT_BATCH: usize = 128;

/// Whether the kernel filtered the dump for us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KernelFiltering {
    /// Not asked: the filters share no family (or kernel filtering was switched off).
    NotRequested,
    /// Asked, and every entry the kernel sent satisfied the request.
    Applied,
    /// Asked, but the kernel sent entries outside it (a kernel without `CTA_FILTER`, before
    /// 5.8, ignores the attribute); user-space matching kept the result correct.
    Ignored,
    /// The kernel refused the filtered dump with this errno; the dump was redone unfiltered.
    Rejected {
        /// The errno of the refusal.
        errno: i32,
    },
}

/// What a flush did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushReport {
    /// Entries the kernel sent and we checked.
    pub examined: u64,
    /// Entries that matched a filter.
    pub matched: u64,
    /// Entries deleted by us.
    pub deleted: u64,
    /// Matched entries gone before our delete arrived (ENOENT: expired or deleted by another).
    pub already_gone: u64,
    /// Deletes the kernel refused with another errno (see the log for each).
    pub failed: u64,
    /// Whether the kernel pre-filtered the dump.
    pub kernel_filtering: KernelFiltering,
}

/// Options of [`Conntrack::flush_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushOptions {
    /// Ask the kernel to pre-filter the dump (`CTA_FILTER`) when the filters allow it.
    pub kernel_filter: bool,
    /// Delete requests per `sendmsg` (1 to 1024; clamped).
    pub batch: usize,
}

impl Default for FlushOptions {
    fn default() -> Self {
        Self {
            kernel_filter: true,
            batch: DEFAULT_BATCH,
        }
    }
}

/// A ctnetlink connection in the network namespace of the thread that opened it.
#[derive(Debug)]
pub struct Conntrack {
    dump: NetlinkSocket,
    control: NetlinkSocket,
    seq: Sequence,
    recv: Vec<u8>,
}

/// A ctnetlink socket, with the receive timeout of [`NetlinkSocket`].
fn open_socket() -> Result<NetlinkSocket, Error> {
    Ok(NetlinkSocket::open(NETLINK_NETFILTER)?)
}

/// Sends one buffer of `count` requests (sequence numbers from `first_seq`) as one window:
/// only the last asks for an ACK (the kernel reports every error anyway; see
/// [`AckTracker`]). Then hands each request's answer to `on_reply(seq, errno)`, in order.
fn send_window(
    socket: &NetlinkSocket,
    recv: &mut Vec<u8>,
    requests: &mut [u8],
    first_seq: u32,
    count: usize,
    mut on_reply: impl FnMut(u32, i32),
) -> Result<(), Error> {
    ack_last_only(requests);
    socket.send_all(requests)?;
    let mut window = AckTracker::new(first_seq, count);
    while !window.complete() {
        socket.receive_into(recv, RECV_BUFFER)?;
        for reply in Replies::new(recv) {
            match reply? {
                Reply::Ack { seq } => window.record(seq, 0),
                Reply::Failed { seq, errno } => window.record(seq, errno),
                _ => continue,
            };
        }
    }
    for (i, errno) in window.into_errnos().into_iter().enumerate() {
        // A closed window knows every answer.
        on_reply(first_seq.wrapping_add(i as u32), errno.unwrap_or(0));
    }
    Ok(())
}

impl Conntrack {
    /// Opens two ctnetlink sockets in the calling thread's network namespace.
    pub fn open() -> Result<Self, Error> {
        Ok(Self {
            dump: open_socket()?,
            control: open_socket()?,
            seq: Sequence::new(1),
            recv: Vec::with_capacity(RECV_BUFFER),
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq.allocate()
    }

    /// Streams the table (pre-filtered by `filter` if the kernel honours it) into `visit`, one
    /// receive buffer at a time; returns the number of entries seen. Memory stays at one buffer.
    ///
    /// Returns [`Error::Kernel`] when the kernel refuses the dump.
    pub fn dump(
        &mut self,
        filter: &DumpFilter,
        visit: impl FnMut(&ConntrackEntry<'_>) -> Result<(), Error>,
    ) -> Result<u64, Error> {
        let seq = self.next_seq();
        let result = dump_stream(&self.dump, &mut self.recv, seq, filter, visit);
        if result.is_err() {
            self.reset_sockets();
        }
        result
    }

    /// After an error mid-dump or mid-batch, replies still queued on a socket would be read as
    /// part of the next request: start over with fresh sockets (best effort; a failure to
    /// reopen shows on the next call).
    fn reset_sockets(&mut self) {
        if let (Ok(dump), Ok(control)) = (open_socket(), open_socket()) {
            self.dump = dump;
            self.control = control;
        }
    }

    /// Deletes every entry matching any of `filters`, in one pass over the table.
    pub fn flush(&mut self, filters: &[ConntrackFilter]) -> Result<FlushReport, Error> {
        self.flush_with(filters, FlushOptions::default())
    }

    /// [`Conntrack::flush`] with options.
    pub fn flush_with(
        &mut self,
        filters: &[ConntrackFilter],
        options: FlushOptions,
    ) -> Result<FlushReport, Error> {
        let set = FilterSet::new(filters);
        let mut report = FlushReport {
            examined: 0,
            matched: 0,
            deleted: 0,
            already_gone: 0,
            failed: 0,
            kernel_filtering: KernelFiltering::NotRequested,
        };
        if set.is_empty() {
            return Ok(report);
        }
        let mut dump_filter = set.dump_filter();
        if options.kernel_filter && dump_filter.uses_cta_filter() {
            report.kernel_filtering = KernelFiltering::Applied;
        } else {
            // Keep the family: old kernels filter by family without CTA_FILTER.
            dump_filter.orig = Default::default();
            dump_filter.reply = Default::default();
        }
        match self.flush_pass(&set, &dump_filter, options.batch, &mut report) {
            Err(Error::Kernel {
                request: "dump",
                source,
            }) if report.kernel_filtering == KernelFiltering::Applied && report.examined == 0 => {
                let errno = source.raw_os_error().unwrap_or(0);
                warn!(
                    errno,
                    "kernel refused the filtered conntrack dump; dumping unfiltered"
                );
                report.kernel_filtering = KernelFiltering::Rejected { errno };
                dump_filter.orig = Default::default();
                dump_filter.reply = Default::default();
                self.flush_pass(&set, &dump_filter, options.batch, &mut report)?;
            }
            other => other?,
        }
        debug!(?report, "conntrack flush");
        Ok(report)
    }

    fn flush_pass(
        &mut self,
        set: &FilterSet,
        dump_filter: &DumpFilter,
        batch: usize,
        report: &mut FlushReport,
    ) -> Result<(), Error> {
        let dump_seq = self.next_seq();
        let kernel_filtered = dump_filter.uses_cta_filter();
        let mut deleter = Deleter::new(&self.control, batch);
        let result = dump_stream(&self.dump, &mut self.recv, dump_seq, dump_filter, |entry| {
            report.examined += 1;
            if kernel_filtered && !dump_filter.matches(entry) {
                report.kernel_filtering = KernelFiltering::Ignored;
            }
            if set.matches(entry) {
                report.matched += 1;
                deleter.push(entry, report)?;
            }
            Ok(())
        })
        .and_then(|_| deleter.send(report));
        if result.is_err() {
            self.reset_sockets();
        }
        result
    }

    /// Creates `entries` (`IPCTNL_MSG_CT_NEW`, batched); returns how many the kernel accepted.
    /// For tests and benchmarks that need a filled table without traffic.
    pub fn create(&mut self, entries: &[NewEntry]) -> Result<u64, Error> {
        let mut created = 0u64;
        let mut first_error = None;
        let mut request = Vec::with_capacity(DEFAULT_BATCH * 128);
        let mut ack_buf = Vec::with_capacity(RECV_BUFFER);
        for chunk in entries.chunks(DEFAULT_BATCH) {
            request.clear();
            let first_seq = self.seq.upcoming();
            for entry in chunk {
                let seq = self.next_seq();
                encode_new(&mut request, seq, entry);
            }
            send_window(
                &self.control,
                &mut ack_buf,
                &mut request,
                first_seq,
                chunk.len(),
                |_, errno| {
                    if errno == 0 {
                        created += 1;
                    } else if first_error.is_none() {
                        first_error = Some(errno);
                    }
                },
            )?;
        }
        match first_error {
            Some(errno) if created == 0 => Err(Error::Kernel {
                request: "new",
                source: io::Error::from_raw_os_error(errno),
            }),
            _ => Ok(created),
        }
    }
}

/// The dump loop on a socket, without borrowing the whole handle.
fn dump_stream(
    socket: &NetlinkSocket,
    recv: &mut Vec<u8>,
    seq: u32,
    filter: &DumpFilter,
    mut visit: impl FnMut(&ConntrackEntry<'_>) -> Result<(), Error>,
) -> Result<u64, Error> {
    let mut request = Vec::with_capacity(128);
    encode_dump(&mut request, seq, filter);
    socket.send_all(&request)?;
    let mut seen = 0u64;
    loop {
        socket.receive_into(recv, RECV_BUFFER)?;
        for reply in Replies::new(recv) {
            match reply? {
                Reply::Entry(entry) => {
                    seen += 1;
                    visit(&entry)?;
                }
                Reply::Done { seq: s } if s == seq => return Ok(seen),
                Reply::Failed { seq: s, errno } if s == seq => {
                    return Err(Error::Kernel {
                        request: "dump",
                        source: io::Error::from_raw_os_error(errno),
                    })
                }
                _ => {}
            }
        }
    }
}

/// Delete requests staged for one `sendmsg`, then their ACKs read before more are sent.
struct Deleter<'s> {
    socket: &'s NetlinkSocket,
    batch: usize,
    pending: Vec<u8>,
    count: usize,
    seq: u32,
    acks: Vec<u8>,
}

impl<'s> Deleter<'s> {
    fn new(socket: &'s NetlinkSocket, batch: usize) -> Self {
        let batch = batch.clamp(1, 1024);
        Self {
            socket,
            batch,
            pending: Vec::with_capacity(batch * 96),
            count: 0,
            seq: 0,
            acks: Vec::with_capacity(RECV_BUFFER),
        }
    }

    /// Stages a delete of `entry`; sends the batch when it is full.
    fn push(&mut self, entry: &ConntrackEntry<'_>, report: &mut FlushReport) -> Result<(), Error> {
        self.seq = self.seq.wrapping_add(1);
        encode_delete(&mut self.pending, self.seq, entry);
        self.count += 1;
        if self.count >= self.batch {
            self.send(report)?;
        }
        Ok(())
    }

    /// Sends the staged deletes and accounts for every ACK.
    fn send(&mut self, report: &mut FlushReport) -> Result<(), Error> {
        if self.count == 0 {
            return Ok(());
        }
        let first_seq = self.seq.wrapping_sub(self.count as u32 - 1);
        send_window(
            self.socket,
            &mut self.acks,
            &mut self.pending,
            first_seq,
            self.count,
            |seq, errno| match errno {
                0 => report.deleted += 1,
                libc::ENOENT => report.already_gone += 1,
                e => {
                    report.failed += 1;
                    warn!(seq, errno = e, "conntrack delete refused");
                }
            },
        )?;
        self.pending.clear();
        self.count = 0;
        Ok(())
    }
}
