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
    /// The socket failed (or the kernel did not answer in time).
    #[error(transparent)]
    Socket(#[from] netlink_base::Error),
}

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
            NftablesError::Socket(_) => None,
        }
    }
}
