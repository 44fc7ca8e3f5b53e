//! The crate's error type.

use std::io;

/// What went wrong talking to IPVS.
#[derive(Debug, thiserror::Error)]
pub enum IpvsError {
    /// The kernel has no `IPVS` generic-netlink family (module missing or not loadable).
    #[error("the kernel has no IPVS generic-netlink family (is ip_vs available?)")]
    FamilyNotFound,
    /// A socket call failed.
    #[error("{call} failed")]
    Io {
        /// The call that failed.
        call: &'static str,
        /// The underlying error.
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
    /// The kernel refused an operation with an errno not mapped to a more specific variant.
    #[error("{operation} failed: {source}")]
    Kernel {
        /// The operation that failed.
        operation: String,
        /// The kernel's errno as an I/O error.
        #[source]
        source: io::Error,
    },
}
