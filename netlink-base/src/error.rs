//! The socket layer's one error type.

use std::io;
use std::time::Duration;

/// A netlink socket call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A socket call failed.
    #[error("{call} failed")]
    Io {
        /// The call (`socket(NETLINK_GENERIC)`, `sendmsg`, `recvmsg`...).
        call: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The kernel (or whatever holds the other end) did not answer within the receive timeout.
    #[error("no netlink answer within {timeout:?}")]
    Timeout {
        /// The socket's receive timeout.
        timeout: Duration,
    },
    /// `sendmsg` took only part of the buffer.
    #[error("sendmsg sent {sent} of {len} bytes")]
    ShortSend {
        /// Bytes sent.
        sent: usize,
        /// Bytes in the buffer.
        len: usize,
    },
}

impl Clone for Error {
    /// A copy for each of several requests cut short by one failure (`io::Error` is not
    /// `Clone`: its errno, or else its kind and text, are kept).
    fn clone(&self) -> Self {
        match self {
            Error::Io { call, source } => Error::Io {
                call,
                source: match source.raw_os_error() {
                    Some(errno) => io::Error::from_raw_os_error(errno),
                    None => io::Error::new(source.kind(), source.to_string()),
                },
            },
            Error::Timeout { timeout } => Error::Timeout { timeout: *timeout },
            Error::ShortSend { sent, len } => Error::ShortSend {
                sent: *sent,
                len: *len,
            },
        }
    }
}

impl Error {
    /// The errno of a failed socket call.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}
