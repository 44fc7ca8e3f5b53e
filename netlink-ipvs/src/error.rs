//! The crate's error type.

use std::io;

/// What went wrong talking to IPVS. Operation-level variants name the operation that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IpvsError {
    /// The operation cannot be encoded for the kernel (checked before anything is sent).
    #[error("{operation}: {reason}")]
    Invalid {
        /// The operation refused.
        operation: String,
        /// Why.
        reason: &'static str,
    },
    /// The kernel has no `IPVS` generic-netlink family (module missing or not loadable).
    #[error("the kernel has no IPVS generic-netlink family (is ip_vs available?)")]
    FamilyNotFound,
    /// EEXIST: the virtual or real server already exists.
    #[error("{operation}: already exists")]
    AlreadyExists {
        /// The operation that failed.
        operation: String,
    },
    /// ESRCH: the virtual server does not exist.
    #[error("{operation}: no such service")]
    NoSuchService {
        /// The operation that failed.
        operation: String,
    },
    /// ENOENT on a real-server operation: the real server does not exist.
    #[error("{operation}: no such destination")]
    NoSuchDestination {
        /// The operation that failed.
        operation: String,
    },
    /// EPERM/EACCES: the caller lacks CAP_NET_ADMIN in this network namespace.
    #[error("{operation}: permission denied (CAP_NET_ADMIN needed)")]
    PermissionDenied {
        /// The operation that failed.
        operation: String,
    },
    /// Any other errno from the kernel (`Display` names the operation; the errno is the
    /// `source`).
    #[error("{operation}")]
    Kernel {
        /// The operation that failed.
        operation: String,
        /// The kernel's errno as an I/O error.
        #[source]
        source: io::Error,
    },
    /// The kernel's reply could not be parsed.
    #[error("malformed reply to {operation}: {reason}")]
    MalformedReply {
        /// The operation whose reply was bad.
        operation: String,
        /// What was wrong with it.
        reason: String,
    },
    /// The socket failed (or the kernel did not answer in time).
    #[error(transparent)]
    Socket(#[from] netlink_base::Error),
    /// The window carrying this operation was cut short by a socket failure before the kernel
    /// answered it: whether it was applied is unknown.
    #[error("{operation}: no answer from the kernel")]
    Unanswered {
        /// The operation.
        operation: String,
        /// The socket failure that cut the window short.
        #[source]
        source: netlink_base::Error,
    },
}

/// Why the attributes of a dumped service or destination do not make an entry (a kernel
/// reply this crate cannot read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EntryError {
    /// A required attribute is missing (its name says which: "service scheduler", ...).
    #[error("{0} missing")]
    Missing(&'static str),
    /// A service has neither a fwmark nor protocol, address and port.
    #[error("service without fwmark or protocol/address/port")]
    NoServiceKey,
    /// An address family other than AF_INET/AF_INET6.
    #[error("unknown address family {0}")]
    UnknownFamily(u16),
    /// A protocol number other than TCP/UDP/SCTP.
    #[error("unknown protocol {0}")]
    UnknownProtocol(u16),
    /// A forwarding method this crate does not know.
    #[error("unknown forwarding method {0}")]
    UnknownForwardMethod(u32),
    /// A tunnel type this crate does not know.
    #[error("unknown tunnel type {0}")]
    UnknownTunnelKind(u8),
}

impl IpvsError {
    /// Maps a kernel errno (positive) for `operation` to the matching variant.
    pub(crate) fn from_errno(errno: i32, operation: String, on_destination: bool) -> Self {
        match errno {
            libc_errno::EEXIST => IpvsError::AlreadyExists { operation },
            libc_errno::ESRCH => IpvsError::NoSuchService { operation },
            libc_errno::ENOENT if on_destination => IpvsError::NoSuchDestination { operation },
            libc_errno::EPERM | libc_errno::EACCES => IpvsError::PermissionDenied { operation },
            _ => IpvsError::Kernel {
                operation,
                source: io::Error::from_raw_os_error(errno),
            },
        }
    }

    /// The errno the kernel returned, if this error came from the kernel.
    pub fn errno(&self) -> Option<i32> {
        match self {
            IpvsError::AlreadyExists { .. } => Some(libc_errno::EEXIST),
            IpvsError::NoSuchService { .. } => Some(libc_errno::ESRCH),
            IpvsError::NoSuchDestination { .. } => Some(libc_errno::ENOENT),
            IpvsError::PermissionDenied { .. } => Some(libc_errno::EPERM),
            IpvsError::Kernel { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// The Linux errno values this crate distinguishes (stable ABI numbers).
mod libc_errno {
    pub const EPERM: i32 = 1;
    pub const ENOENT: i32 = 2;
    pub const ESRCH: i32 = 3;
    pub const EACCES: i32 = 13;
    pub const EEXIST: i32 = 17;
}
