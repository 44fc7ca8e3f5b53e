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

/// Why a value was or was not written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SizingReason {
    /// The host already has exactly the wanted value; nothing written.
    AlreadySet,
    /// The host value is larger and lowering is not allowed; nothing written.
    HostLarger,
    /// The host value was smaller and has been raised to the wanted value.
    Raised,
    /// The host value was larger, `allowLowering` is set, and it has been lowered.
    Lowered,
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
            SizingReason::Lowered => f.write_str("lowered to the wanted value (allowLowering)"),
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

/// Decides one knob: limits and timeouts alike are raise-only unless lowering is allowed.
pub fn decide(host: u64, wanted: u64, allow_lowering: bool) -> Decision {
    match host.cmp(&wanted) {
        std::cmp::Ordering::Equal => Decision::Keep,
        std::cmp::Ordering::Less => Decision::Raise,
        std::cmp::Ordering::Greater if allow_lowering => Decision::Lower,
        std::cmp::Ordering::Greater => Decision::Keep,
    }
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

    proptest! {
        #[test]
        fn never_lowers_without_opt_in(host: u64, wanted: u64) {
            let d = decide(host, wanted, false);
            prop_assert_ne!(d, Decision::Lower);
            if d == Decision::Raise { prop_assert!(host < wanted); }
            if host >= wanted { prop_assert_eq!(d, Decision::Keep); }
        }

        #[test]
        fn lowering_only_when_larger(host: u64, wanted: u64) {
            let d = decide(host, wanted, true);
            prop_assert_eq!(d == Decision::Lower, host > wanted);
            prop_assert_eq!(d == Decision::Keep, host == wanted);
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
