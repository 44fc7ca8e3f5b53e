//! The socket edge: `IPT_SO_*`/`IP6T_SO_*` socket options on a raw socket, under iptables' own lock.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::thread::sleep;
use std::time::{Duration, Instant};

use netlink_base::Family;

use crate::table::{Table, TableInfo, HOOKS, INFO_LEN, REPLACE_COUNTERS_POINTER, TABLE_NAME_LEN};
use crate::{remove_chains, Error, Removal};

/// `IPT_SO_GET_INFO` = `IP6T_SO_GET_INFO` = `IPT_SO_SET_REPLACE` (`IPT_BASE_CTL`).
const SO_GET_INFO: libc::c_int = 64;
/// `IPT_SO_GET_ENTRIES` = `IP6T_SO_GET_ENTRIES`.
const SO_GET_ENTRIES: libc::c_int = 65;
/// `IPT_SO_SET_REPLACE` = `IP6T_SO_SET_REPLACE`.
const SO_SET_REPLACE: libc::c_int = 64;
/// `IPT_SO_SET_ADD_COUNTERS` = `IP6T_SO_SET_ADD_COUNTERS`.
const SO_SET_ADD_COUNTERS: libc::c_int = 65;
/// `sizeof(struct ipt_get_entries)` = `sizeof(struct xt_counters_info)`: name, `u32`, padding to 8.
const NAMED_HEADER_LEN: usize = 40;

/// Attempts at read-edit-replace before a concurrent writer is reported.
pub const MAX_ATTEMPTS: u32 = 5;
/// iptables' lock (`XT_LOCK_NAME`): every `iptables-legacy` and `iptables-restore` takes it.
pub const XTABLES_LOCK: &str = "/run/xtables.lock";
/// How long to wait for [`XTABLES_LOCK`] (kube-proxy runs iptables with `-w 5`).
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// What one table lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovalReport {
    /// IPv4 or IPv6.
    pub family: Family,
    /// The table's name.
    pub table: String,
    /// Chains removed.
    pub chains: Vec<String>,
    /// Rules removed from other chains (jumps and gotos to the removed chains).
    pub jumps: usize,
    /// Read-edit-replace attempts (1 unless another writer came between).
    pub attempts: u32,
    /// Whether the kept rules' packet and byte counters were carried over.
    pub counters_carried: bool,
}

/// The legacy tables of one family in the calling thread's network namespace.
#[derive(Debug)]
pub struct LegacyTables {
    family: Family,
    socket: OwnedFd,
}

/// Names of the family's legacy tables that exist in the calling thread's network namespace
/// (`/proc/thread-self/net/ip{,6}_tables_names`; none when `ip{,6}_tables` is not loaded). Reading
/// a table by name would create it, so only these are ever opened.
pub fn existing_tables(family: Family) -> Result<Vec<String>, Error> {
    let path = match family {
        Family::V4 => "/proc/thread-self/net/ip_tables_names",
        Family::V6 => "/proc/thread-self/net/ip6_tables_names",
    };
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text.lines().map(str::to_owned).collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(Error::TableNames { path, source }),
    }
}

impl LegacyTables {
    /// Opens the raw socket the table options go through (needs `CAP_NET_ADMIN`).
    pub fn open(family: Family) -> Result<Self, Error> {
        let domain = match family {
            Family::V4 => libc::AF_INET,
            Family::V6 => libc::AF_INET6,
        };
        // SAFETY: socket() takes no pointers; a non-negative result is a new fd we own.
        let fd = unsafe {
            libc::socket(
                domain,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::IPPROTO_RAW,
            )
        };
        if fd < 0 {
            return Err(sockopt_error("socket", "", io::Error::last_os_error()));
        }
        // SAFETY: `fd` was just returned by socket() and is owned by nothing else.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { family, socket })
    }

    /// Reads a table (`IPT_SO_GET_INFO`, then `IPT_SO_GET_ENTRIES`).
    pub fn read(&self, name: &str) -> Result<Table, Error> {
        let request = TableInfo {
            name: name.to_owned(),
            valid_hooks: 0,
            hook_entry: [0; HOOKS],
            underflow: [0; HOOKS],
            num_entries: 0,
            size: 0,
        };
        let mut info = request.encode()?;
        self.get(SO_GET_INFO, &mut info)
            .map_err(|e| sockopt_error("IPT_SO_GET_INFO", name, e))?;
        let info = TableInfo::parse(&info[..INFO_LEN])?;
        let mut entries = vec![0u8; NAMED_HEADER_LEN + info.size as usize];
        entries[..TABLE_NAME_LEN].copy_from_slice(&request.encode()?[..TABLE_NAME_LEN]);
        entries[32..36].copy_from_slice(&info.size.to_ne_bytes());
        self.get(SO_GET_ENTRIES, &mut entries)
            .map_err(|e| sockopt_error("IPT_SO_GET_ENTRIES", name, e))?;
        Table::parse(self.family, info, &entries[NAMED_HEADER_LEN..])
    }

    /// Replaces `old` by `removal.table` and adds the old counters of the kept entries to the new
    /// ones; returns whether the counters were carried. The kernel refuses (`EAGAIN`) when the
    /// table no longer has `old`'s entry count: another writer came between. Does not take
    /// [`XTABLES_LOCK`]; [`remove_chains`](Self::remove_chains) does.
    pub fn replace(&self, old: &Table, removal: &Removal) -> Result<bool, Error> {
        let name = old.name();
        let num_counters = old.info().num_entries;
        let mut counters = vec![[0u64; 2]; num_counters as usize];
        let mut request = removal.table.encode_replace(num_counters)?;
        let pointer = counters.as_mut_ptr() as usize as u64;
        request[REPLACE_COUNTERS_POINTER..REPLACE_COUNTERS_POINTER + 8]
            .copy_from_slice(&pointer.to_ne_bytes());
        // The kernel writes the old table's counters through `pointer` during this call; `counters`
        // lives until the end of the function and is not touched meanwhile.
        self.set(SO_SET_REPLACE, &request)
            .map_err(|e| sockopt_error("IPT_SO_SET_REPLACE", name, e))?;
        let mut add = vec![0u8; NAMED_HEADER_LEN];
        add[..TABLE_NAME_LEN].copy_from_slice(&request[..TABLE_NAME_LEN]);
        add[32..36].copy_from_slice(&(removal.kept.len() as u32).to_ne_bytes());
        for &i in &removal.kept {
            add.extend(counters[i][0].to_ne_bytes());
            add.extend(counters[i][1].to_ne_bytes());
        }
        Ok(self.set(SO_SET_ADD_COUNTERS, &add).is_ok())
    }

    /// Removes the user chains named in `names` from table `name`, and the rules jumping to them;
    /// read, edit and replace again (at most [`MAX_ATTEMPTS`]) when another writer changed the table
    /// in between (`EAGAIN`). Holds [`XTABLES_LOCK`] throughout, as iptables does.
    pub fn remove_chains<S: AsRef<str>>(
        &self,
        name: &str,
        names: &[S],
    ) -> Result<RemovalReport, Error> {
        let _lock = xtables_lock()?;
        for attempts in 1..=MAX_ATTEMPTS {
            let old = match self.read(name) {
                Err(e) if is_eagain(&e) => continue,
                other => other?,
            };
            let removal = remove_chains(&old, names)?;
            let mut report = RemovalReport {
                family: self.family,
                table: name.to_owned(),
                chains: removal.chains.clone(),
                jumps: removal.jumps,
                attempts,
                counters_carried: false,
            };
            if removal.is_empty() {
                return Ok(report);
            }
            match self.replace(&old, &removal) {
                Ok(carried) => {
                    report.counters_carried = carried;
                    return Ok(report);
                }
                Err(e) if is_eagain(&e) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::ConcurrentWriter {
            table: name.to_owned(),
            attempts: MAX_ATTEMPTS,
        })
    }

    /// [`remove_chains`](Self::remove_chains) on every existing table of the family; reports
    /// only the tables that lost something.
    pub fn remove_chains_everywhere<S: AsRef<str>>(
        &self,
        names: &[S],
    ) -> Result<Vec<RemovalReport>, Error> {
        let mut reports = Vec::new();
        for table in existing_tables(self.family)? {
            let report = self.remove_chains(&table, names)?;
            if !report.chains.is_empty() || report.jumps > 0 {
                reports.push(report);
            }
        }
        Ok(reports)
    }

    fn level(&self) -> libc::c_int {
        match self.family {
            Family::V4 => libc::IPPROTO_IP,
            Family::V6 => libc::IPPROTO_IPV6,
        }
    }

    fn get(&self, option: libc::c_int, buffer: &mut [u8]) -> io::Result<()> {
        let mut len = buffer.len() as libc::socklen_t;
        // SAFETY: `buffer` is valid for writes of `len` bytes and `len` outlives the call.
        let rc = unsafe {
            libc::getsockopt(
                self.socket.as_raw_fd(),
                self.level(),
                option,
                buffer.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn set(&self, option: libc::c_int, buffer: &[u8]) -> io::Result<()> {
        // SAFETY: `buffer` is valid for reads of its length; any pointer inside it is the caller's
        // to keep valid (see `replace`).
        let rc = unsafe {
            libc::setsockopt(
                self.socket.as_raw_fd(),
                self.level(),
                option,
                buffer.as_ptr().cast(),
                buffer.len() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// The kernel's answer when the table changed between two calls.
fn is_eagain(error: &Error) -> bool {
    matches!(error, Error::Sockopt { source, .. } if source.raw_os_error() == Some(libc::EAGAIN))
}

fn sockopt_error(call: &'static str, table: &str, source: io::Error) -> Error {
    Error::Sockopt {
        call,
        table: table.to_owned(),
        source,
    }
}

/// Takes iptables' lock, waiting at most [`LOCK_WAIT`]; released when the file is dropped.
fn xtables_lock() -> Result<File, Error> {
    let lock_error = |source| Error::Lock {
        path: XTABLES_LOCK,
        source,
    };
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(XTABLES_LOCK)
        .map_err(lock_error)?;
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        // SAFETY: flock takes no pointers; the fd is owned by `file`.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(file);
        }
        let error = io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EWOULDBLOCK) || Instant::now() >= deadline {
            return Err(lock_error(error));
        }
        sleep(Duration::from_millis(50));
    }
}
