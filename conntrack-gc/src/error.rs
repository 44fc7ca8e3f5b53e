//! The crate's one error type.

use std::io;
use std::path::PathBuf;

/// What went wrong in a flush or in sizing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The socket failed (or the kernel did not answer in time).
    #[error(transparent)]
    Socket(#[from] netlink_base::Error),
    /// The kernel answered a request with an errno.
    #[error("ctnetlink {request}: kernel error")]
    Kernel {
        /// The request (`dump`, `delete`, `new`).
        request: &'static str,
        /// The kernel's errno as an I/O error.
        #[source]
        source: io::Error,
    },
    /// A ctnetlink message from the kernel could not be parsed.
    #[error("malformed ctnetlink message: {reason}")]
    Malformed {
        /// What was wrong with it.
        reason: String,
    },
    /// A procfs/sysfs file does not exist (for conntrack knobs: `nf_conntrack` not loaded).
    #[error("{path} does not exist (is the nf_conntrack module loaded?)")]
    HostFileMissing {
        /// The missing file.
        path: PathBuf,
    },
    /// A procfs/sysfs file could not be read or written.
    #[error("{op} {path}")]
    HostFile {
        /// The file.
        path: PathBuf,
        /// `read` or `write`.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A procfs/sysfs file did not hold an unsigned integer.
    #[error("{path} holds {text:?}, not an unsigned integer")]
    HostValue {
        /// The file.
        path: PathBuf,
        /// What it held (trimmed).
        text: String,
    },
}

impl Error {
    /// The errno, for kernel and socket errors.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Socket(socket) => socket.errno(),
            Error::Kernel { source, .. } | Error::HostFile { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}
