//! [`Scheduler`]: the IPVS scheduling algorithm of a virtual server, by its kernel name.

use std::fmt;

/// An IPVS scheduler (`ip_vs_<name>` kernel modules). Named after the kernel's short names;
/// a name this crate does not know (a dump of a virtual server someone else created with a
/// newer or out-of-tree scheduler) is kept as [`Scheduler::Other`] so that it still decodes
/// and round-trips.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Scheduler {
    /// `rr`: round robin.
    #[default]
    Rr,
    /// `wrr`: weighted round robin.
    Wrr,
    /// `lc`: least connection.
    Lc,
    /// `wlc`: weighted least connection.
    Wlc,
    /// `lblc`: locality-based least connection.
    Lblc,
    /// `lblcr`: locality-based least connection with replication.
    Lblcr,
    /// `dh`: destination hashing.
    Dh,
    /// `sh`: source hashing.
    Sh,
    /// `sed`: shortest expected delay.
    Sed,
    /// `nq`: never queue.
    Nq,
    /// `fo`: weighted failover.
    Fo,
    /// `ovf`: weighted overflow.
    Ovf,
    /// `mh`: maglev hashing.
    Mh,
    /// `twos`: weighted random twos choice.
    Twos,
    /// A name this crate does not know; only [`Scheduler::from_name`] makes it, so a known
    /// name is never held here.
    Other(String),
}

impl Scheduler {
    /// Every scheduler this crate knows, in the kernel's documentation order.
    pub const KNOWN: [Scheduler; 14] = [
        Scheduler::Rr,
        Scheduler::Wrr,
        Scheduler::Lc,
        Scheduler::Wlc,
        Scheduler::Lblc,
        Scheduler::Lblcr,
        Scheduler::Dh,
        Scheduler::Sh,
        Scheduler::Sed,
        Scheduler::Nq,
        Scheduler::Fo,
        Scheduler::Ovf,
        Scheduler::Mh,
        Scheduler::Twos,
    ];

    /// The kernel's name (`IPVS_SVC_ATTR_SCHED_NAME`).
    pub fn name(&self) -> &str {
        match self {
            Scheduler::Rr => "rr",
            Scheduler::Wrr => "wrr",
            Scheduler::Lc => "lc",
            Scheduler::Wlc => "wlc",
            Scheduler::Lblc => "lblc",
            Scheduler::Lblcr => "lblcr",
            Scheduler::Dh => "dh",
            Scheduler::Sh => "sh",
            Scheduler::Sed => "sed",
            Scheduler::Nq => "nq",
            Scheduler::Fo => "fo",
            Scheduler::Ovf => "ovf",
            Scheduler::Mh => "mh",
            Scheduler::Twos => "twos",
            Scheduler::Other(name) => name,
        }
    }

    /// The scheduler named `name` as the kernel names it; an unknown name is kept as
    /// [`Scheduler::Other`].
    pub fn from_name(name: &str) -> Self {
        Self::known(name).unwrap_or_else(|| Scheduler::Other(name.to_owned()))
    }

    /// The known scheduler named `name`, if there is one (for configuration, which must
    /// reject a typo rather than ask the kernel for a module that does not exist).
    pub fn known(name: &str) -> Option<Self> {
        Self::KNOWN.into_iter().find(|s| s.name() == name)
    }
}

impl fmt::Display for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl From<&str> for Scheduler {
    fn from(name: &str) -> Self {
        Self::from_name(name)
    }
}

impl PartialEq<&str> for Scheduler {
    fn eq(&self, name: &&str) -> bool {
        self.name() == *name
    }
}

#[cfg(test)]
mod tests {
    use super::Scheduler;

    #[test]
    fn names_round_trip_and_unknown_names_are_kept() {
        for scheduler in Scheduler::KNOWN {
            assert_eq!(Scheduler::from_name(scheduler.name()), scheduler);
            assert_eq!(Scheduler::known(scheduler.name()), Some(scheduler.clone()));
        }
        let foreign = Scheduler::from_name("my-sched");
        assert_eq!(foreign, Scheduler::Other("my-sched".to_owned()));
        assert_eq!(foreign.to_string(), "my-sched");
        assert_eq!(Scheduler::known("my-sched"), None);
        assert_eq!(Scheduler::default(), "rr");
    }
}
