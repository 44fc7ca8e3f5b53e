//! Conntrack sizing that never lowers a host limit unless told to.
//!
//! [`apply_sizing`] reads every configured knob first (a missing file is an error and nothing is
//! written), decides each one with the pure [`decide`], writes only raises (or lowerings with
//! `allowLowering`), and returns a [`SizingReport`] with the host value, the wanted value, whether
//! it was applied and why, per knob.

mod config;
mod host;
mod plan;

use std::fmt;
use std::io;

use tracing::{info, warn};

pub use config::{format_go_duration, parse_go_duration, ConntrackConfig, DurationError};
pub use host::{FillLevel, FsRoot, HostFiles, Knob, COUNT_PATH};
pub use plan::{decide, wanted_values, Decision, SizingReason};

use crate::error::Error;
use host::read_number;

/// The outcome for one knob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizingEntry {
    /// Which value.
    pub knob: Knob,
    /// The host's value before sizing.
    pub host: u64,
    /// What the configuration asks for.
    pub wanted: u64,
    /// Whether a new value was written (and read back as written).
    pub applied: bool,
    /// Why.
    pub reason: SizingReason,
}

impl SizingEntry {
    /// True when the entry is a failure: a needed write did not happen.
    pub fn is_failure(&self) -> bool {
        matches!(
            self.reason,
            SizingReason::ReadOnly
                | SizingReason::WriteFailed(_)
                | SizingReason::NotEffective { .. }
        )
    }
}

impl fmt::Display for SizingEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: host {} wanted {} applied {}: {}",
            self.knob, self.host, self.wanted, self.applied, self.reason
        )
    }
}

/// What sizing decided and did, one entry per configured knob, in [`Knob::ALL`] order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SizingReport {
    /// One entry per knob the configuration sets.
    pub entries: Vec<SizingEntry>,
}

impl SizingReport {
    /// The entry for `knob`, if the configuration set it.
    pub fn get(&self, knob: Knob) -> Option<&SizingEntry> {
        self.entries.iter().find(|e| e.knob == knob)
    }

    /// Entries whose needed write did not happen.
    pub fn failures(&self) -> impl Iterator<Item = &SizingEntry> {
        self.entries.iter().filter(|e| e.is_failure())
    }
}

impl fmt::Display for SizingReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for entry in &self.entries {
            writeln!(f, "{entry}")?;
        }
        Ok(())
    }
}

/// Sizes the host's conntrack knobs from `config` for a machine with `cores` CPUs.
///
/// Reads all configured knobs before writing any: if one is missing (module not loaded) or
/// unreadable, returns that error and writes nothing. Write failures do not abort the others;
/// they are reported per entry (see [`SizingEntry::is_failure`]).
pub fn apply_sizing(
    files: &dyn HostFiles,
    config: &ConntrackConfig,
    cores: u32,
) -> Result<SizingReport, Error> {
    let wanted = wanted_values(config, cores);
    let mut current = Vec::with_capacity(wanted.len());
    for (&knob, &want) in &wanted {
        current.push((knob, read_number(files, knob.relative_path())?, want));
    }
    let mut report = SizingReport::default();
    for (knob, host, want) in current {
        let decision = decide(host, want, config.allow_lowering);
        let (applied, reason) = match decision {
            Decision::Keep if host == want => (false, SizingReason::AlreadySet),
            Decision::Keep => (false, SizingReason::HostLarger),
            Decision::Raise | Decision::Lower => write_knob(files, knob, want, decision),
        };
        let entry = SizingEntry {
            knob,
            host,
            wanted: want,
            applied,
            reason,
        };
        if entry.is_failure() {
            warn!(%entry, "conntrack sizing");
        } else {
            info!(%entry, "conntrack sizing");
        }
        report.entries.push(entry);
    }
    Ok(report)
}

fn write_knob(
    files: &dyn HostFiles,
    knob: Knob,
    want: u64,
    decision: Decision,
) -> (bool, SizingReason) {
    let path = knob.relative_path();
    match files.is_writable(path) {
        Ok(false) => return (false, SizingReason::ReadOnly),
        Ok(true) => {}
        Err(e) => return (false, SizingReason::WriteFailed(e.to_string())),
    }
    if let Err(e) = files.write(path, &want.to_string()) {
        let read_only = matches!(
            e.raw_os_error(),
            Some(libc::EACCES | libc::EPERM | libc::EROFS)
        ) || e.kind() == io::ErrorKind::PermissionDenied;
        let reason = if read_only {
            SizingReason::ReadOnly
        } else {
            SizingReason::WriteFailed(e.to_string())
        };
        return (false, reason);
    }
    match read_number(files, path) {
        Ok(v) if v == want => (
            true,
            if decision == Decision::Lower {
                SizingReason::Lowered
            } else {
                SizingReason::Raised
            },
        ),
        Ok(read_back) => (false, SizingReason::NotEffective { read_back }),
        Err(e) => (false, SizingReason::WriteFailed(e.to_string())),
    }
}

/// The CPUs this process may use (`std::thread::available_parallelism`: the affinity mask, and
/// also a cgroup CPU quota, where Go's `runtime.NumCPU` that kube-proxy uses counts the affinity
/// mask only). Pass your own count to [`apply_sizing`] for exact kube-proxy parity.
pub fn cpu_count() -> u32 {
    std::thread::available_parallelism()
        .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
        .unwrap_or(1)
}
