//! kube-proxy's `conntrack` configuration block, with its field names, plus `allowLowering`.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The `conntrack` block of a `KubeProxyConfiguration` (kubeproxy.config.k8s.io/v1alpha1), as far
/// as host sizing goes, plus our own `allowLowering`.
///
/// Every field is optional and an unset or zero field leaves the host's value alone. kube-proxy's
/// defaults (maxPerCore 32768, min 131072, tcpEstablishedTimeout 24h, tcpCloseWaitTimeout 1h) are
/// not applied here; see [`ConntrackConfig::kube_proxy_defaults`] for a caller that wants them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConntrackConfig {
    /// Connections to track per CPU core; `nf_conntrack_max` is `max(maxPerCore × cores, min)`.
    /// 0 or unset leaves `nf_conntrack_max` and the hash size alone (and ignores `min`).
    #[serde(default)]
    pub max_per_core: Option<u32>,
    /// Lower bound of the computed `nf_conntrack_max`.
    #[serde(default)]
    pub min: Option<u32>,
    /// `nf_conntrack_tcp_timeout_established` (Go duration string such as `24h0m0s`).
    #[serde(default, with = "go_duration")]
    pub tcp_established_timeout: Option<Duration>,
    /// `nf_conntrack_tcp_timeout_close_wait` (Go duration string).
    #[serde(default, with = "go_duration")]
    pub tcp_close_wait_timeout: Option<Duration>,
    /// `nf_conntrack_tcp_be_liberal`: `true` sets it to 1; `false` or unset leaves it alone.
    #[serde(default)]
    pub tcp_be_liberal: Option<bool>,
    /// `nf_conntrack_udp_timeout` (Go duration string).
    #[serde(default, with = "go_duration")]
    pub udp_timeout: Option<Duration>,
    /// `nf_conntrack_udp_timeout_stream` (Go duration string).
    #[serde(default, with = "go_duration")]
    pub udp_stream_timeout: Option<Duration>,
    /// Our own field: allow writing a value below the host's current one. Off by default, so an
    /// operator's larger `nf_conntrack_max` (incident I6) or longer timeout is never undone.
    #[serde(default)]
    pub allow_lowering: bool,
}

impl ConntrackConfig {
    /// kube-proxy's defaulted values (`pkg/proxy/apis/config/v1alpha1/defaults.go`):
    /// maxPerCore 32768, min 131072, tcpEstablishedTimeout 24h, tcpCloseWaitTimeout 1h.
    pub fn kube_proxy_defaults() -> Self {
        Self {
            max_per_core: Some(32 * 1024),
            min: Some(128 * 1024),
            tcp_established_timeout: Some(Duration::from_secs(24 * 3600)),
            tcp_close_wait_timeout: Some(Duration::from_secs(3600)),
            ..Self::default()
        }
    }
}

/// Why a Go duration string does not parse (each variant keeps the text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DurationError {
    /// A leading `-`: durations here are never negative.
    #[error("negative duration {0:?}")]
    Negative(String),
    /// Nothing but whitespace (or a lone `+`).
    #[error("empty duration")]
    Empty,
    /// A number without a unit (`"30"`).
    #[error("missing unit in {0:?}")]
    MissingUnit(String),
    /// A unit without a number (`"h"`).
    #[error("expected a number in {0:?}")]
    ExpectedNumber(String),
    /// Digits and dots that are no number (`"1.2.3s"`).
    #[error("bad number in {0:?}")]
    BadNumber(String),
    /// A unit Go does not know.
    #[error("unknown unit {unit:?} in {text:?}")]
    UnknownUnit {
        /// The unit found.
        unit: String,
        /// The whole text.
        text: String,
    },
    /// More than `u64::MAX` nanoseconds.
    #[error("duration {0:?} out of range")]
    OutOfRange(String),
}

/// Parses a Go `time.Duration` string (`"24h0m0s"`, `"1.5h"`, `"300ms"`, `"0s"`, `"0"`).
pub fn parse_go_duration(text: &str) -> Result<Duration, DurationError> {
    let s = text.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.starts_with('-') {
        return Err(DurationError::Negative(text.to_owned()));
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    let mut total_nanos: f64 = 0.0;
    let mut rest = s;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| DurationError::MissingUnit(text.to_owned()))?;
        if number_len == 0 {
            return Err(DurationError::ExpectedNumber(text.to_owned()));
        }
        let number: f64 = rest[..number_len]
            .parse()
            .map_err(|_| DurationError::BadNumber(text.to_owned()))?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            unit => {
                return Err(DurationError::UnknownUnit {
                    unit: unit.to_owned(),
                    text: text.to_owned(),
                })
            }
        };
        rest = &rest[unit_len..];
        total_nanos += number * scale;
    }
    if !total_nanos.is_finite() || total_nanos > u64::MAX as f64 {
        return Err(DurationError::OutOfRange(text.to_owned()));
    }
    Ok(Duration::from_nanos(total_nanos.round() as u64))
}

/// Formats a duration as Go does for whole seconds (`24h0m0s`).
pub fn format_go_duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    let nanos = duration.subsec_nanos();
    if secs == 0 && nanos == 0 {
        return "0s".to_owned();
    }
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let seconds = if nanos == 0 {
        format!("{s}s")
    } else {
        let frac = format!("{:09}", nanos);
        format!("{s}.{}s", frac.trim_end_matches('0'))
    };
    match (h, m) {
        (0, 0) => seconds,
        (0, m) => format!("{m}m{seconds}"),
        (h, m) => format!("{h}h{m}m{seconds}"),
    }
}

mod go_duration {
    use super::*;

    pub(super) fn serialize<S: Serializer>(
        value: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => serializer.serialize_str(&format_go_duration(*d)),
            None => serializer.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        let text: Option<String> = Option::deserialize(deserializer)?;
        text.map(|t| parse_go_duration(&t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        let cases = [
            ("24h0m0s", 86_400_000),
            ("1h", 3_600_000),
            ("1.5h", 5_400_000),
            ("90s", 90_000),
            ("300ms", 300),
            ("1m30s", 90_000),
            ("0s", 0),
            ("0", 0),
        ];
        for (text, millis) in cases {
            assert_eq!(
                parse_go_duration(text),
                Ok(Duration::from_millis(millis)),
                "{text}"
            );
        }
        for bad in ["", "5", "-1s", "1d", "h", "1.2.3s"] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn go_durations_round_trip() {
        for secs in [1, 59, 60, 61, 3599, 3600, 86_400, 90_061] {
            let d = Duration::from_secs(secs);
            assert_eq!(parse_go_duration(&format_go_duration(d)), Ok(d));
        }
        assert_eq!(format_go_duration(Duration::from_secs(86_400)), "24h0m0s");
    }

    #[test]
    fn kube_proxy_field_names_deserialize() {
        let json = r#"{"maxPerCore": 32768, "min": 131072, "tcpEstablishedTimeout": "24h0m0s",
            "tcpCloseWaitTimeout": "1h0m0s", "tcpBeLiberal": true, "udpTimeout": "30s",
            "udpStreamTimeout": "2m0s", "allowLowering": true}"#;
        let config: ConntrackConfig = serde_json::from_str(json).unwrap();
        assert_eq!(
            config,
            ConntrackConfig {
                max_per_core: Some(32768),
                min: Some(131072),
                tcp_established_timeout: Some(Duration::from_secs(86_400)),
                tcp_close_wait_timeout: Some(Duration::from_secs(3600)),
                tcp_be_liberal: Some(true),
                udp_timeout: Some(Duration::from_secs(30)),
                udp_stream_timeout: Some(Duration::from_secs(120)),
                allow_lowering: true,
            }
        );
        let empty: ConntrackConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, ConntrackConfig::default());
        assert!(serde_json::from_str::<ConntrackConfig>(r#"{"udpTimeout":"5 parsecs"}"#).is_err());
    }
}
