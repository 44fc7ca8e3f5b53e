//! The crate's one error type.

use std::io;

/// What can go wrong reading, editing or replacing a legacy table.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A fixed-size header (`ipt_getinfo`, an entry's header, a target's header) is cut short.
    #[error("{what} truncated at byte {offset}: {needed} bytes needed, {available} present")]
    Truncated {
        /// Which structure.
        what: &'static str,
        /// Its offset in the buffer.
        offset: usize,
        /// Bytes it needs.
        needed: usize,
        /// Bytes left.
        available: usize,
    },
    /// An entry's `next_offset` or `target_offset` does not fit the entry or the table.
    #[error("entry at offset {offset}: target_offset {target_offset}, next_offset {next_offset} do not fit")]
    BadEntryBounds {
        /// The entry's offset in the table.
        offset: u32,
        /// Its `target_offset`.
        target_offset: u16,
        /// Its `next_offset`.
        next_offset: u16,
    },
    /// A hook entry, an underflow or a jump names an offset where no entry starts.
    #[error("offset {offset} ({what}) is not the start of an entry")]
    NotAnEntry {
        /// What pointed there (`"hook entry"`, `"underflow"`, `"jump"`).
        what: &'static str,
        /// The offset.
        offset: u32,
    },
    /// The table does not end with the `ERROR` entry every legacy table ends with.
    #[error("table {table:?} does not end with its ERROR entry")]
    MissingTableEnd {
        /// The table's name.
        table: String,
    },
    /// The kernel's entry count and the entries in the blob differ.
    #[error("table {table:?}: {announced} entries announced, {found} found")]
    EntryCount {
        /// The table's name.
        table: String,
        /// `num_entries` from `IPT_SO_GET_INFO`.
        announced: u32,
        /// Entries parsed.
        found: usize,
    },
    /// A name longer than the kernel's 32-byte table name or 30-byte chain name.
    #[error("name {name:?} is too long for the kernel ({max} bytes at most)")]
    NameTooLong {
        /// The name.
        name: String,
        /// The limit, without the terminating NUL.
        max: usize,
    },
    /// A built-in chain (`INPUT`, `PREROUTING`, …) was asked to be removed.
    #[error("chain {chain:?} is built in and cannot be removed")]
    BuiltinChain {
        /// The chain's name.
        chain: String,
    },
    /// A socket call failed.
    #[error("{call} on table {table:?}")]
    Sockopt {
        /// `socket`, `IPT_SO_GET_INFO`, `IPT_SO_GET_ENTRIES`, `IPT_SO_SET_REPLACE`, …
        call: &'static str,
        /// The table's name (empty for `socket`).
        table: String,
        /// The errno.
        #[source]
        source: io::Error,
    },
    /// Another writer changed the table between our read and our replace, every time we tried.
    #[error("table {table:?} changed under us {attempts} times in a row (a concurrent writer)")]
    ConcurrentWriter {
        /// The table's name.
        table: String,
        /// Attempts made.
        attempts: u32,
    },
    /// `/run/xtables.lock` (iptables' own lock) could not be taken or opened.
    #[error("xtables lock {path}")]
    Lock {
        /// The lock file.
        path: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// `/proc/thread-self/net/ip{,6}_tables_names` could not be read.
    #[error("reading {path}")]
    TableNames {
        /// The file.
        path: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
}
