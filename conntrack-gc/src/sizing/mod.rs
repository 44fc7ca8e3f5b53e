//! Conntrack sizing that never lowers a host limit unless told to.
//!
//! [`apply_sizing`] reads every configured knob first (a missing file skips that knob only and
//! is reported; any other read error stops everything before a write), decides each one with
//! the pure [`decide`] by its [`KnobPolicy`] (limits raise-only unless `allowLowering`, the hash
//! size never lowered, configured timeouts written exactly), and returns a [`SizingReport`] with
//! the host value, the wanted value, whether it was applied and why, per knob. The CPU count
//! comes from the machine ([`cpu_count`]), not from this process's cgroup or affinity.

mod config;
mod host;
mod plan;

use std::fmt;
use std::io;

use tracing::{info, warn};

pub use config::{format_go_duration, parse_go_duration, ConntrackConfig, DurationError};
pub use host::{FillLevel, FsRoot, HostFiles, Knob, COUNT_PATH};
pub use plan::{decide, parse_cpu_list, wanted_values, Decision, KnobPolicy, SizingReason};

use crate::error::Error;
use host::read_number;

/// The outcome for one knob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizingEntry {
    /// Which value.
    pub knob: Knob,
    /// The host's value before sizing (0 when the file is missing: [`SizingReason::Missing`]).
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
                | SizingReason::Missing
        )
    }
}

impl fmt::Display for SizingEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.reason == SizingReason::Missing {
            return write!(f, "{}: wanted {}: {}", self.knob, self.wanted, self.reason);
        }
        write!(
            f,
            "{}: host {} wanted {} applied {}: {}",
            self.knob, self.host, self.wanted, self.applied, self.reason
        )?;
        if self.applied {
            write!(f, " ({} -> {})", self.host, self.wanted)?;
        }
        Ok(())
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
/// Reads all configured knobs before writing any: a missing one (module not loaded, older
/// kernel) is skipped and reported as [`SizingReason::Missing`], the others are still sized;
/// any other read error (unreadable, not a number) is returned and nothing is written. Write
/// failures do not abort the others; they are reported per entry (see
/// [`SizingEntry::is_failure`]).
pub fn apply_sizing(
    files: &dyn HostFiles,
    config: &ConntrackConfig,
    cores: u32,
) -> Result<SizingReport, Error> {
    let wanted = wanted_values(config, cores);
    let mut current = Vec::with_capacity(wanted.len());
    for (&knob, &want) in &wanted {
        let host = match read_number(files, knob.relative_path()) {
            Ok(value) => Some(value),
            Err(Error::HostFileMissing { .. }) => None,
            Err(other) => return Err(other),
        };
        current.push((knob, host, want));
    }
    let mut report = SizingReport::default();
    for (knob, host, want) in current {
        let (host, applied, reason) = match host {
            None => (0, false, SizingReason::Missing),
            Some(host) => {
                let decision = decide(knob.policy(), host, want, config.allow_lowering);
                let (applied, reason) = match decision {
                    Decision::Keep if host == want => (false, SizingReason::AlreadySet),
                    Decision::Keep if knob.policy() == KnobPolicy::NeverLower => {
                        (false, SizingReason::NeverLowered)
                    }
                    Decision::Keep => (false, SizingReason::HostLarger),
                    Decision::Raise | Decision::Lower => write_knob(files, knob, want, decision),
                };
                (host, applied, reason)
            }
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
            match (decision, knob.policy()) {
                (Decision::Lower, KnobPolicy::Exact) => SizingReason::LoweredAsConfigured,
                (Decision::Lower, _) => SizingReason::Lowered,
                _ => SizingReason::Raised,
            },
        ),
        Ok(read_back) => (false, SizingReason::NotEffective { read_back }),
        Err(e) => (false, SizingReason::WriteFailed(e.to_string())),
    }
}

/// The machine's online CPUs, relative to the filesystem root.
pub const CPU_ONLINE_PATH: &str = "sys/devices/system/cpu/online";

/// The machine's CPU count, as kube-proxy sizes `nf_conntrack_max` (kubernetes#99225, #140021:
/// `/sys/devices/system/cpu/online`, which neither a cpuset, an affinity mask nor a cgroup CPU
/// quota shrinks, so a 64-core node running proxier under a 1-CPU limit sizes for 64). Falls
/// back to this process's parallelism only when that file cannot be read or parsed.
pub fn cpu_count(files: &dyn HostFiles) -> u32 {
    files
        .read(CPU_ONLINE_PATH)
        .ok()
        .and_then(|text| parse_cpu_list(&text))
        .unwrap_or_else(|| {
            let fallback = std::thread::available_parallelism()
                .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
                .unwrap_or(1);
            warn!(
                path = %files.display_path(CPU_ONLINE_PATH).display(),
                fallback,
                "cannot read the machine's online CPUs; sizing for this process's parallelism"
            );
            fallback
        })
}
