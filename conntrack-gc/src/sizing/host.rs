//! The host's conntrack knobs: which files, and the small trait that reads and writes them.

use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::Error;

/// One host value that sizing reads and may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Knob {
    /// `net.netfilter.nf_conntrack_max` (a limit).
    Max,
    /// `/sys/module/nf_conntrack/parameters/hashsize` (a limit; writable only in the initial netns).
    Hashsize,
    /// `net.netfilter.nf_conntrack_tcp_timeout_established`, seconds.
    TcpEstablishedTimeout,
    /// `net.netfilter.nf_conntrack_tcp_timeout_close_wait`, seconds.
    TcpCloseWaitTimeout,
    /// `net.netfilter.nf_conntrack_tcp_be_liberal`, 0 or 1.
    TcpBeLiberal,
    /// `net.netfilter.nf_conntrack_udp_timeout`, seconds.
    UdpTimeout,
    /// `net.netfilter.nf_conntrack_udp_timeout_stream`, seconds.
    UdpStreamTimeout,
}

impl Knob {
    /// Every knob, in the order sizing reads and reports them.
    pub const ALL: [Knob; 7] = [
        Knob::Max,
        Knob::Hashsize,
        Knob::TcpEstablishedTimeout,
        Knob::TcpCloseWaitTimeout,
        Knob::TcpBeLiberal,
        Knob::UdpTimeout,
        Knob::UdpStreamTimeout,
    ];

    /// The file, relative to the filesystem root (`proc/sys/...` or `sys/module/...`).
    pub fn relative_path(self) -> &'static str {
        match self {
            Knob::Max => "proc/sys/net/netfilter/nf_conntrack_max",
            Knob::Hashsize => "sys/module/nf_conntrack/parameters/hashsize",
            Knob::TcpEstablishedTimeout => {
                "proc/sys/net/netfilter/nf_conntrack_tcp_timeout_established"
            }
            Knob::TcpCloseWaitTimeout => {
                "proc/sys/net/netfilter/nf_conntrack_tcp_timeout_close_wait"
            }
            Knob::TcpBeLiberal => "proc/sys/net/netfilter/nf_conntrack_tcp_be_liberal",
            Knob::UdpTimeout => "proc/sys/net/netfilter/nf_conntrack_udp_timeout",
            Knob::UdpStreamTimeout => "proc/sys/net/netfilter/nf_conntrack_udp_timeout_stream",
        }
    }
}

impl fmt::Display for Knob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Knob::Max => "nf_conntrack_max",
            Knob::Hashsize => "nf_conntrack hashsize",
            Knob::TcpEstablishedTimeout => "nf_conntrack_tcp_timeout_established",
            Knob::TcpCloseWaitTimeout => "nf_conntrack_tcp_timeout_close_wait",
            Knob::TcpBeLiberal => "nf_conntrack_tcp_be_liberal",
            Knob::UdpTimeout => "nf_conntrack_udp_timeout",
            Knob::UdpStreamTimeout => "nf_conntrack_udp_timeout_stream",
        };
        f.write_str(name)
    }
}

/// `nf_conntrack_count`, relative to the filesystem root.
pub const COUNT_PATH: &str = "proc/sys/net/netfilter/nf_conntrack_count";

/// Access to procfs/sysfs files named relative to a root. The only I/O sizing does.
pub trait HostFiles {
    /// Reads the whole file (`relative` as in [`Knob::relative_path`]).
    fn read(&self, relative: &str) -> io::Result<String>;
    /// Writes `value` to an existing file; never creates one.
    fn write(&self, relative: &str, value: &str) -> io::Result<()>;
    /// Whether the file can be written at all (sysctls outside the initial network namespace
    /// are mode 0444; a read-only sysfs mount reports `EROFS` on write instead).
    fn is_writable(&self, relative: &str) -> io::Result<bool>;
    /// The absolute path for messages.
    fn display_path(&self, relative: &str) -> PathBuf;
}

/// The real [`HostFiles`]: files under a root directory (`/` on a host, a temp dir in tests).
#[derive(Debug, Clone)]
pub struct FsRoot {
    root: PathBuf,
}

impl FsRoot {
    /// Files under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The running system: `/proc` and `/sys`.
    pub fn system() -> Self {
        Self::new("/")
    }

    /// The root this reads under.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl HostFiles for FsRoot {
    fn read(&self, relative: &str) -> io::Result<String> {
        std::fs::read_to_string(self.root.join(relative))
    }

    fn write(&self, relative: &str, value: &str) -> io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(self.root.join(relative))?;
        file.write_all(format!("{value}\n").as_bytes())
    }

    fn is_writable(&self, relative: &str) -> io::Result<bool> {
        let mode = std::fs::metadata(self.root.join(relative))?
            .permissions()
            .mode();
        // procfs enforces these bits even for root, so a 0444 sysctl is read-only.
        Ok(mode & 0o222 != 0)
    }

    fn display_path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }
}

/// Reads one unsigned integer value (sysctl files hold one number and a newline).
pub(crate) fn read_number(files: &dyn HostFiles, relative: &str) -> Result<u64, Error> {
    let path = files.display_path(relative);
    let text = files.read(relative).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            Error::HostFileMissing { path: path.clone() }
        } else {
            Error::HostFile {
                path: path.clone(),
                op: "read",
                source,
            }
        }
    })?;
    text.trim().parse().map_err(|_| Error::HostValue {
        path,
        text: text.trim().to_owned(),
    })
}

/// How full the conntrack table is: `nf_conntrack_count` / `nf_conntrack_max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FillLevel {
    /// Entries in this network namespace's table.
    pub count: u64,
    /// The limit (0 would mean unlimited).
    pub max: u64,
}

impl FillLevel {
    /// The ratio at and above which [`FillLevel::needs_warning`] is true: 90 %.
    pub const WARN_RATIO: f64 = 0.9;

    /// `count / max`, 0.0 when the limit is 0 (unlimited).
    pub fn ratio(&self) -> f64 {
        if self.max == 0 {
            0.0
        } else {
            self.count as f64 / self.max as f64
        }
    }

    /// True at 90 % full or more (compared in integers: `count * 10 >= max * 9`).
    pub fn needs_warning(&self) -> bool {
        self.max != 0 && u128::from(self.count) * 10 >= u128::from(self.max) * 9
    }

    /// Reads the fill level of the calling thread's network namespace.
    pub fn read(files: &dyn HostFiles) -> Result<Self, Error> {
        Ok(Self {
            count: read_number(files, COUNT_PATH)?,
            max: read_number(files, Knob::Max.relative_path())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warning_threshold_is_ninety_percent() {
        let at = |count, max| FillLevel { count, max }.needs_warning();
        assert!(!at(89, 100));
        assert!(at(90, 100));
        assert!(at(100, 100));
        assert!(!at(471_858, 524_288));
        assert!(at(471_860, 524_288));
        assert!(!at(5, 0), "max 0 is unlimited");
        assert_eq!(FillLevel { count: 1, max: 4 }.ratio(), 0.25);
    }
}
