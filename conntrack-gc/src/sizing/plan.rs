//! Pure sizing decisions: config × cores × host values → what to write and why.

use std::collections::BTreeMap;
use std::fmt;

use super::config::ConntrackConfig;
use super::host::Knob;

/// What the configuration asks for: the wanted value of each configured knob.
///
/// `nf_conntrack_max` is `max(maxPerCore × cores, min)` and the hash size is a quarter of it,
/// as kube-proxy computes them (`getConntrackMax` in `cmd/kube-proxy/app/server_linux.go`,
/// `SetMax` in `pkg/proxy/conntrack/sysctls.go`). Timeouts are whole seconds, truncated.
pub fn wanted_values(config: &ConntrackConfig, cores: u32) -> BTreeMap<Knob, u64> {
    let mut wanted = BTreeMap::new();
    if let Some(per_core) = config.max_per_core.filter(|&n| n > 0) {
        let scaled = u64::from(per_core) * u64::from(cores.max(1));
        let max = scaled.max(u64::from(config.min.unwrap_or(0)));
        wanted.insert(Knob::Max, max);
        if max / 4 > 0 {
            wanted.insert(Knob::Hashsize, max / 4);
        }
    }
    let timeouts = [
        (Knob::TcpEstablishedTimeout, config.tcp_established_timeout),
        (Knob::TcpCloseWaitTimeout, config.tcp_close_wait_timeout),
        (Knob::UdpTimeout, config.udp_timeout),
        (Knob::UdpStreamTimeout, config.udp_stream_timeout),
    ];
    for (knob, timeout) in timeouts {
        if let Some(secs) = timeout.map(|d| d.as_secs()).filter(|&s| s > 0) {
            wanted.insert(knob, secs);
        }
    }
    if config.tcp_be_liberal == Some(true) {
        wanted.insert(Knob::TcpBeLiberal, 1);
    }
    wanted
}

/// How a knob may be changed (the mission: never silently lower a host limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KnobPolicy {
    /// A limit (`nf_conntrack_max`): raised, lowered only with `allowLowering`.
    Limit,
    /// The hash size: raised only, never lowered (kube-proxy never lowers it either; a
    /// smaller hash table only makes lookups slower).
    NeverLower,
    /// An explicitly configured value (a timeout, `tcpBeLiberal`): the operator's intent,
    /// written exactly, up or down.
    Exact,
}

impl Knob {
    /// How this knob may be changed.
    pub fn policy(self) -> KnobPolicy {
        match self {
            Knob::Max => KnobPolicy::Limit,
            Knob::Hashsize => KnobPolicy::NeverLower,
            Knob::TcpEstablishedTimeout
            | Knob::TcpCloseWaitTimeout
            | Knob::TcpBeLiberal
            | Knob::UdpTimeout
            | Knob::UdpStreamTimeout => KnobPolicy::Exact,
        }
    }
}

/// Why a value was or was not written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SizingReason {
    /// The host already has exactly the wanted value; nothing written.
    AlreadySet,
    /// The host value is larger and lowering is not allowed; nothing written.
    HostLarger,
    /// The host's hash size is larger; kept (a hash size is never lowered, whatever
    /// `allowLowering` says).
    NeverLowered,
    /// The host value was smaller and has been raised to the wanted value.
    Raised,
    /// The host value was larger, `allowLowering` is set, and it has been lowered.
    Lowered,
    /// An explicitly configured value (a timeout) was larger on the host and has been
    /// lowered to exactly what the configuration says.
    LoweredAsConfigured,
    /// The knob's file does not exist (module not loaded, or an older kernel): this knob is
    /// skipped, the others are still sized.
    Missing,
    /// A write was needed but the file is read-only (outside the initial network namespace,
    /// or a read-only `/sys`); the host keeps its smaller value.
    ReadOnly,
    /// A write was needed and failed.
    WriteFailed(String),
    /// The write succeeded but reading back gave another value.
    NotEffective {
        /// What the file holds after the write.
        read_back: u64,
    },
}

impl fmt::Display for SizingReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SizingReason::AlreadySet => f.write_str("host already has the wanted value"),
            SizingReason::HostLarger => {
                f.write_str("host value is larger; kept (lowering not allowed)")
            }
            SizingReason::Raised => f.write_str("raised to the wanted value"),
            SizingReason::NeverLowered => f.write_str("host value is larger; kept (never lowered)"),
            SizingReason::Lowered => f.write_str("lowered to the wanted value (allowLowering)"),
            SizingReason::LoweredAsConfigured => {
                f.write_str("lowered to exactly the configured value")
            }
            SizingReason::Missing => f.write_str("the file does not exist; knob skipped"),
            SizingReason::ReadOnly => f.write_str("needs raising but the file is read-only"),
            SizingReason::WriteFailed(e) => write!(f, "write failed: {e}"),
            SizingReason::NotEffective { read_back } => {
                write!(f, "written, but the kernel reports {read_back}")
            }
        }
    }
}

/// The decision for one knob before anything is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Leave the host value (equal, or larger without `allowLowering`).
    Keep,
    /// Write the wanted value, raising the host value.
    Raise,
    /// Write the wanted value, lowering the host value (only with `allowLowering`).
    Lower,
}

/// Decides one knob by its [`KnobPolicy`]: a limit is raise-only unless lowering is allowed,
/// the hash size is never lowered, an explicitly configured value is written exactly.
pub fn decide(policy: KnobPolicy, host: u64, wanted: u64, allow_lowering: bool) -> Decision {
    match (host.cmp(&wanted), policy) {
        (std::cmp::Ordering::Equal, _) => Decision::Keep,
        (std::cmp::Ordering::Less, _) => Decision::Raise,
        (std::cmp::Ordering::Greater, KnobPolicy::Exact) => Decision::Lower,
        (std::cmp::Ordering::Greater, KnobPolicy::Limit) if allow_lowering => Decision::Lower,
        (std::cmp::Ordering::Greater, KnobPolicy::Limit | KnobPolicy::NeverLower) => Decision::Keep,
    }
}

/// The number of CPUs in a cpulist such as `/sys/devices/system/cpu/online` holds
/// (`0-3,8,10-11` is 7); `None` for anything else.
pub fn parse_cpu_list(text: &str) -> Option<u32> {
    let mut count = 0u32;
    for range in text.trim().split(',') {
        let (first, last) = match range.split_once('-') {
            Some((a, b)) => (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?),
            None => {
                let one = range.parse::<u32>().ok()?;
                (one, one)
            }
        };
        count = count.checked_add(last.checked_sub(first)?.checked_add(1)?)?;
    }
    (count > 0).then_some(count)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn max_is_per_core_times_cores_floored_by_min() {
        let config = ConntrackConfig {
            max_per_core: Some(32768),
            min: Some(131072),
            ..Default::default()
        };
        assert_eq!(wanted_values(&config, 16)[&Knob::Max], 524_288);
        assert_eq!(wanted_values(&config, 16)[&Knob::Hashsize], 131_072);
        assert_eq!(wanted_values(&config, 2)[&Knob::Max], 131_072, "min wins");
        assert_eq!(wanted_values(&config, 2)[&Knob::Hashsize], 32_768);
    }

    #[test]
    fn zero_or_unset_leaves_everything_alone() {
        let config = ConntrackConfig {
            max_per_core: Some(0),
            min: Some(131072),
            tcp_established_timeout: Some(Duration::ZERO),
            tcp_be_liberal: Some(false),
            ..Default::default()
        };
        assert!(wanted_values(&config, 8).is_empty());
        assert!(wanted_values(&ConntrackConfig::default(), 8).is_empty());
    }

    #[test]
    fn timeouts_are_whole_seconds() {
        let config = ConntrackConfig {
            tcp_established_timeout: Some(Duration::from_secs(86_400)),
            tcp_close_wait_timeout: Some(Duration::from_millis(60_900)),
            udp_timeout: Some(Duration::from_millis(500)),
            udp_stream_timeout: Some(Duration::from_secs(120)),
            tcp_be_liberal: Some(true),
            ..Default::default()
        };
        let wanted = wanted_values(&config, 4);
        assert_eq!(wanted[&Knob::TcpEstablishedTimeout], 86_400);
        assert_eq!(wanted[&Knob::TcpCloseWaitTimeout], 60);
        assert!(
            !wanted.contains_key(&Knob::UdpTimeout),
            "under 1 s is 0: leave"
        );
        assert_eq!(wanted[&Knob::UdpStreamTimeout], 120);
        assert_eq!(wanted[&Knob::TcpBeLiberal], 1);
    }

    /// The decision table per knob kind (kube-proxy `cmd/kube-proxy/app/conntrack.go` writes
    /// `nf_conntrack_max` only when it raises it, and a configured timeout whatever the host
    /// has; proxier keeps both, adds the `allowLowering` opt-in for the limit, and never lowers
    /// the hash size).
    #[test]
    fn decision_table_by_policy() {
        use Decision::{Keep, Lower, Raise};
        use KnobPolicy::{Exact, Limit, NeverLower};
        let table = [
            // (policy, host, wanted, allowLowering, decision)
            (Limit, 100, 200, false, Raise),
            (Limit, 200, 100, false, Keep),
            (Limit, 200, 100, true, Lower),
            (Limit, 100, 100, true, Keep),
            (NeverLower, 100, 200, false, Raise),
            (NeverLower, 200, 100, false, Keep),
            (NeverLower, 200, 100, true, Keep),
            (Exact, 30, 45, false, Raise),
            (Exact, 432_000, 86_400, false, Lower),
            (Exact, 432_000, 86_400, true, Lower),
            (Exact, 60, 60, false, Keep),
        ];
        for (policy, host, wanted, allow, want) in table {
            assert_eq!(
                decide(policy, host, wanted, allow),
                want,
                "{policy:?} host {host} wanted {wanted} allowLowering {allow}"
            );
        }
        assert_eq!(Knob::Max.policy(), Limit);
        assert_eq!(Knob::Hashsize.policy(), NeverLower);
        assert_eq!(Knob::TcpEstablishedTimeout.policy(), Exact);
        assert_eq!(Knob::UdpTimeout.policy(), Exact);
    }

    #[test]
    fn cpu_list_counts_every_listed_cpu() {
        assert_eq!(parse_cpu_list("0-63\n"), Some(64));
        assert_eq!(parse_cpu_list("0"), Some(1));
        assert_eq!(parse_cpu_list("0-3,8,10-11"), Some(7));
        for bad in ["", "x", "3-1", "0-", ",", "0,,1"] {
            assert_eq!(parse_cpu_list(bad), None, "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn limits_never_lower_without_opt_in(host: u64, wanted: u64) {
            for policy in [KnobPolicy::Limit, KnobPolicy::NeverLower] {
                let d = decide(policy, host, wanted, false);
                prop_assert_ne!(d, Decision::Lower);
                if d == Decision::Raise { prop_assert!(host < wanted); }
                if host >= wanted { prop_assert_eq!(d, Decision::Keep); }
            }
            prop_assert_ne!(decide(KnobPolicy::NeverLower, host, wanted, true), Decision::Lower);
        }

        #[test]
        fn lowering_only_when_larger(host: u64, wanted: u64) {
            for (policy, allow) in [(KnobPolicy::Limit, true), (KnobPolicy::Exact, false)] {
                let d = decide(policy, host, wanted, allow);
                prop_assert_eq!(d == Decision::Lower, host > wanted);
                prop_assert_eq!(d == Decision::Keep, host == wanted);
            }
        }

        #[test]
        fn max_is_at_least_min_and_per_core(per_core in 1u32.., min: u32, cores in 1u32..1024) {
            let config = ConntrackConfig { max_per_core: Some(per_core), min: Some(min), ..Default::default() };
            let max = wanted_values(&config, cores)[&Knob::Max];
            prop_assert!(max >= u64::from(min));
            prop_assert!(max >= u64::from(per_core) * u64::from(cores));
            prop_assert!(max == u64::from(min) || max == u64::from(per_core) * u64::from(cores));
        }
    }
}
