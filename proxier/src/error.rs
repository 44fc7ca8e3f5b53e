//! The crate's one error type.

use std::fmt;

/// Identifies a Kubernetes object in messages: `Service default/web`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    /// `Service`, `EndpointSlice`, `Node`, ...
    pub kind: String,
    /// Namespace (empty for cluster-scoped objects).
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// Why a Kubernetes object is not turned into proxy state.
///
/// Some reasons mean the object is invalid (an unparseable IP), others that it is simply not
/// ours to proxy (a headless Service); [`RejectReason::is_invalid`] tells them apart so that a
/// caller can count bad objects separately.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectReason {
    /// The object has no name (or no namespace where one is required).
    MissingName,
    /// A Service without a `spec`.
    MissingSpec,
    /// An EndpointSlice without the `kubernetes.io/service-name` label.
    MissingServiceNameLabel,
    /// An IP address that does not parse.
    InvalidIp {
        /// The field it was read from.
        field: &'static str,
        /// The text found there.
        value: String,
    },
    /// A port outside 1..=65535 (or 0..=65535 where 0 means "none").
    PortOutOfRange {
        /// The field it was read from.
        field: &'static str,
        /// The number found there.
        value: i32,
    },
    /// A protocol other than TCP, UDP and SCTP.
    UnknownProtocol(String),
    /// An EndpointSlice `addressType` other than IPv4 and IPv6 (FQDN slices are not proxied).
    UnsupportedAddressType(String),
    /// An endpoint address of the other family than its slice's `addressType`.
    FamilyMismatch(String),
    /// A session affinity timeout outside 1..=86400 seconds.
    InvalidAffinityTimeout(i32),
    /// `clusterIP: None`: headless Services are not proxied.
    Headless,
    /// `type: ExternalName` Services are DNS-only.
    ExternalName,
    /// The Service has no cluster IP yet.
    NoClusterIp,
    /// Labelled `service.kubernetes.io/service-proxy-name`: another proxy owns it.
    ServiceProxyName(String),
    /// Labelled `service.kubernetes.io/headless`.
    HeadlessLabel,
}

impl RejectReason {
    /// Whether the object is malformed (as opposed to valid but deliberately not proxied).
    pub fn is_invalid(&self) -> bool {
        !matches!(
            self,
            RejectReason::Headless
                | RejectReason::ExternalName
                | RejectReason::NoClusterIp
                | RejectReason::ServiceProxyName(_)
                | RejectReason::HeadlessLabel
                | RejectReason::UnsupportedAddressType(_)
        )
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RejectReason::MissingName => f.write_str("no name or namespace"),
            RejectReason::MissingSpec => f.write_str("no spec"),
            RejectReason::MissingServiceNameLabel => {
                f.write_str("no kubernetes.io/service-name label")
            }
            RejectReason::InvalidIp { field, value } => write!(f, "{field}: invalid IP {value:?}"),
            RejectReason::PortOutOfRange { field, value } => {
                write!(f, "{field}: port {value} out of range")
            }
            RejectReason::UnknownProtocol(p) => write!(f, "unknown protocol {p:?}"),
            RejectReason::UnsupportedAddressType(t) => write!(f, "addressType {t} is not proxied"),
            RejectReason::FamilyMismatch(a) => write!(f, "address {a} does not match addressType"),
            RejectReason::InvalidAffinityTimeout(t) => {
                write!(f, "sessionAffinityConfig timeout {t} out of range")
            }
            RejectReason::Headless => f.write_str("headless (clusterIP: None)"),
            RejectReason::ExternalName => f.write_str("type ExternalName"),
            RejectReason::NoClusterIp => f.write_str("no cluster IP"),
            RejectReason::ServiceProxyName(n) => {
                write!(f, "service.kubernetes.io/service-proxy-name={n}")
            }
            RejectReason::HeadlessLabel => f.write_str("labelled service.kubernetes.io/headless"),
        }
    }
}

/// A kernel errno as the dataplane reports it for one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Errno(pub i32);

impl Errno {
    /// No such file or directory: a missing real server.
    pub const ENOENT: Errno = Errno(2);
    /// No such process: IPVS's answer for a missing virtual server.
    pub const ESRCH: Errno = Errno(3);
    /// File exists: a duplicate virtual server, real server or address.
    pub const EEXIST: Errno = Errno(17);
    /// Cannot assign requested address: deleting an address that is not there.
    pub const EADDRNOTAVAIL: Errno = Errno(99);
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match *self {
            Errno::ENOENT => "ENOENT",
            Errno::ESRCH => "ESRCH",
            Errno::EEXIST => "EEXIST",
            Errno::EADDRNOTAVAIL => "EADDRNOTAVAIL",
            _ => return write!(f, "errno {}", self.0),
        };
        f.write_str(name)
    }
}

/// Why an input file was refused before it was parsed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InputRefusal {
    /// Not a regular file (a FIFO, a device, a socket, a directory).
    #[error("not a regular file but a {0}; only regular files are read")]
    NotRegularFile(&'static str),
    /// Longer than [`crate::yaml::MAX_FILE_BYTES`].
    #[error("{size} bytes is more than the limit of {limit} bytes")]
    TooLarge {
        /// The file's length.
        size: u64,
        /// [`crate::yaml::MAX_FILE_BYTES`].
        limit: u64,
    },
    /// Opening or reading failed (or the text is not UTF-8).
    #[error("cannot be read")]
    Unreadable(#[source] std::io::Error),
    /// The YAML is over a limit: nesting, aliases or alias expansion.
    /// (The message is the parser's, without its source snippet.)
    #[error("YAML over the limits of nesting depth, aliases or events replayed by aliases (see `proxier::yaml`): {}", .0.without_snippet())]
    OverBudget(Box<serde_saphyr::Error>),
}

/// Why a YAML document could not be read (see [`crate::yaml`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum YamlError {
    /// Not YAML, or not the shape of what it is read as (a list where a mapping belongs, a
    /// number for a boolean); the parser's message names the line and column.
    #[error("{}", .0.without_snippet())]
    Syntax(Box<serde_saphyr::Error>),
    /// A document does not fit the object its `kind` names (a string where a port number
    /// belongs, ...).
    #[error(transparent)]
    Object(serde_json::Error),
}

/// Errors of the proxier crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A Kubernetes object was not turned into proxy state.
    #[error("{object}: {reason}")]
    Rejected {
        /// Which object.
        object: ObjectRef,
        /// Why.
        reason: RejectReason,
    },
    /// One entry of a list field of a Kubernetes object (an `externalIPs` entry, a
    /// LoadBalancer ingress IP, a `loadBalancerSourceRanges` entry) was left out; the rest of
    /// the object was used (as kube-proxy).
    #[error("{object}: skipped {reason}; the rest of the object is used")]
    FieldSkipped {
        /// Which object.
        object: ObjectRef,
        /// What was wrong with the entry.
        reason: RejectReason,
    },
    /// The local Node's InternalIPs changed while running: proxier exits so that its
    /// DaemonSet restarts it with the new addresses (as kube-proxy does).
    #[error("the node's InternalIPs changed from {old:?} to {new:?}: exiting to restart with them (as kube-proxy)")]
    NodeAddressesChanged {
        /// Before.
        old: Vec<std::net::IpAddr>,
        /// Now.
        new: Vec<std::net::IpAddr>,
    },
    /// A YAML document could not be read.
    #[error("{context}")]
    Yaml {
        /// Where (file name, document number).
        context: String,
        /// The parser's error.
        #[source]
        source: YamlError,
    },
    /// An input file (cluster YAML, configuration) refused before parsing: not a regular file,
    /// too large, or over the YAML limits (see [`crate::yaml`]).
    #[error("{context}")]
    InputRefused {
        /// The file (or what the text is).
        context: String,
        /// Why.
        #[source]
        reason: InputRefusal,
    },
    /// A configuration value is unusable.
    #[error("config {field}: {reason}")]
    Config {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A host file (procfs) could not be read.
    #[error("{operation}")]
    Host {
        /// What was being done.
        operation: String,
        /// The file error.
        #[source]
        source: std::io::Error,
    },
    /// IPVS could not be used outside the engine's operations (connect, dump, timeouts), or
    /// an operation got no answer.
    #[cfg(feature = "kernel")]
    #[error("{operation}")]
    Ipvs {
        /// What was being done.
        operation: String,
        /// netlink-ipvs' error.
        #[source]
        source: netlink_ipvs::IpvsError,
    },
    /// Conntrack could not be used (connect, flush).
    #[cfg(feature = "kernel")]
    #[error("{operation}")]
    Conntrack {
        /// What was being done.
        operation: String,
        /// conntrack-gc's error (shared by every flush of a failed pass).
        #[source]
        source: std::sync::Arc<conntrack_gc::Error>,
    },
    /// iptables-legacy's tables could not be read or replaced (kube-proxy's leftovers).
    #[cfg(feature = "kernel")]
    #[error("iptables-legacy: {operation}")]
    Xtables {
        /// What was being done.
        operation: String,
        /// xtables-legacy's error.
        #[source]
        source: xtables_legacy::Error,
    },
    /// Our nftables table could not be read or written.
    #[cfg(feature = "kernel")]
    #[error(transparent)]
    Nftables(#[from] netlink_nftables::NftablesError),
    /// The rtnetlink socket failed (or the kernel did not answer in time).
    #[cfg(feature = "kernel")]
    #[error("{operation}")]
    Rtnetlink {
        /// What was being done.
        operation: String,
        /// The socket's error.
        #[source]
        source: netlink_base::Error,
    },
    /// A netlink reply could not be parsed.
    #[cfg(feature = "kernel")]
    #[error("malformed reply to {operation}")]
    MalformedReply {
        /// The request answered.
        operation: String,
        /// The parser's error.
        #[source]
        source: netlink_packet_core::DecodeError,
    },
    /// The kernel (or the fake) refused an operation.
    #[error("{op}: {errno}")]
    Kernel {
        /// The operation, as `ipvsadm`-like text.
        op: String,
        /// The kernel's answer.
        errno: Errno,
    },
    /// The Kubernetes API could not be used.
    #[cfg(feature = "kube")]
    #[error("Kubernetes API: {operation}")]
    Api {
        /// What was being done.
        operation: String,
        /// The client's error.
        #[source]
        source: Box<kube::Error>,
    },
    /// A [`crate::source::FeedSender`] sent to a [`crate::source::Feed`] that is gone (its sync
    /// loop ended).
    #[error("the feed's sync loop has ended")]
    FeedClosed,
    /// A health or metrics endpoint could not listen.
    #[error("listen on {address}")]
    Serve {
        /// The address.
        address: std::net::SocketAddr,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The error with its chain of causes, `outer: cause: root cause`, each printed once (the
    /// `Display` of a variant that wraps a wire crate's error names only what was being done).
    pub fn report(&self) -> Report<'_> {
        Report(self)
    }
}

/// Displays an error and its sources; see [`Error::report`].
#[derive(Debug)]
pub struct Report<'a>(&'a (dyn std::error::Error + 'static));

impl<'a> Report<'a> {
    /// Any error with its chain of causes, each printed once (for errors whose `Display`
    /// names only what was being done, as this workspace's do).
    pub fn new(error: &'a (dyn std::error::Error + 'static)) -> Self {
        Report(error)
    }
}

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

#[cfg(all(test, feature = "kernel"))]
mod tests {
    use super::Error;

    #[test]
    fn a_wrapped_wire_error_prints_its_cause_once() {
        let error = Error::Ipvs {
            operation: "dump IPVS".into(),
            source: netlink_ipvs::IpvsError::Socket(netlink_base::Error::Timeout {
                timeout: std::time::Duration::from_secs(10),
            }),
        };
        assert_eq!(error.to_string(), "dump IPVS");
        assert_eq!(
            error.report().to_string(),
            "dump IPVS: no netlink answer within 10s"
        );
    }
}
