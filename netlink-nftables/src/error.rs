//! The crate's one error type.

use std::io;

/// What went wrong with an nf_tables transaction.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NftablesError {
    /// The kernel refused a message of the transaction, so it refused the whole transaction
    /// (nothing changed).
    #[error("{message}: {}{}", io::Error::from_raw_os_error(*errno), refused_others(*others))]
    Refused {
        /// The description of the (first) refused message.
        message: String,
        /// The kernel's errno.
        errno: i32,
        /// How many other messages were refused.
        others: usize,
    },
    /// A reply could not be parsed (what was wrong with it).
    #[error("malformed nfnetlink reply: {0}")]
    Malformed(&'static str),
    /// A dump kept being interrupted by changes to the ruleset.
    #[error("{0}: interrupted by concurrent changes, {DUMP_ATTEMPTS} times")]
    DumpInterrupted(String),
    /// An ipset is still referenced (by an iptables rule, another set): the kernel keeps it
    /// (`IPSET_ERR_BUSY`).
    #[error("ipset {set} is in use")]
    SetInUse {
        /// The set's name.
        set: String,
    },
    /// The socket failed (or the kernel did not answer in time).
    #[error(transparent)]
    Socket(#[from] netlink_base::Error),
}

/// How many times a dump is tried while the ruleset keeps changing under it.
pub const DUMP_ATTEMPTS: usize = 3;

fn refused_others(others: usize) -> String {
    if others == 0 {
        String::new()
    } else {
        format!(" (and {others} more refused)")
    }
}

impl NftablesError {
    /// The kernel's errno, for a refusal.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NftablesError::Refused { errno, .. } => Some(*errno),
            NftablesError::Socket(_)
            | NftablesError::Malformed(_)
            | NftablesError::DumpInterrupted(_)
            | NftablesError::SetInUse { .. } => None,
        }
    }
}
