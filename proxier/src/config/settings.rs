//! [`ProxySettings`]: a [`KubeProxyConfiguration`] resolved into typed values with kube-proxy's
//! defaults, plus one [`ConfigWarning`] per field proxier does not implement.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use conntrack_gc::sizing::parse_go_duration;
use conntrack_gc::ConntrackConfig;

use super::{is_zero, parse_cidr, Config, KubeProxyConfiguration, LogFormat};
use crate::error::Error;

/// kube-proxy's health check port (`healthzBindAddress` default `0.0.0.0:10256`).
pub const DEFAULT_HEALTHZ_PORT: u16 = 10256;
/// kube-proxy's metrics port (`metricsBindAddress` default `127.0.0.1:10249`).
pub const DEFAULT_METRICS_PORT: u16 = 10249;
/// How long an unselected TCP real server drains at most, by default (IPVS's own default
/// timeout for an idle established connection; see `reconcile::departure`).
pub const DEFAULT_DRAIN_BOUND: Duration = Duration::from_secs(900);

/// A configuration field that is set but ignored (or only partly honoured).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    /// The field's path, such as `ipvs.excludeCIDRs`.
    pub field: String,
    /// What proxier does with it.
    pub message: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config {}: {}", self.field, self.message)
    }
}

/// Everything `proxier run` takes from a `KubeProxyConfiguration`, with defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxySettings {
    /// The planner's configuration (scheduler, nodePortAddresses).
    pub engine: Config,
    /// `bindAddress` when it names one IP: the node's primary IP.
    pub bind_address: Option<IpAddr>,
    /// Where `/healthz` and `/livez` are served.
    pub healthz_bind_address: SocketAddr,
    /// Where `/metrics` is served.
    pub metrics_bind_address: SocketAddr,
    /// `clusterCIDR`, one per family.
    pub cluster_cidrs: Vec<(IpAddr, u8)>,
    /// `hostnameOverride`.
    pub hostname_override: Option<String>,
    /// `masqueradeAll` (`iptables.masqueradeAll` in v1alpha1).
    pub masquerade_all: bool,
    /// `ipvs.strictARP`.
    pub strict_arp: bool,
    /// `ipvs.tcpTimeout`, `ipvs.tcpFinTimeout`, `ipvs.udpTimeout` (0 = leave the kernel's).
    pub ipvs_timeouts: netlink_ipvs::Timeouts,
    /// Full resync period (default 30 s).
    pub sync_period: Duration,
    /// Least time between syncs (default 1 s).
    pub min_sync_period: Duration,
    /// How long a TCP real server unselected while alive drains at most (`--drain-bound`,
    /// default 15 min; not a kube-proxy field: kube-proxy drains until connections end).
    pub drain_bound: Duration,
    /// `conntrack.*` with kube-proxy's defaults for the fields left `null`.
    pub conntrack: ConntrackConfig,
    /// `clientConnection.kubeconfig`.
    pub kubeconfig: Option<PathBuf>,
    /// `logging.verbosity`.
    pub verbosity: Option<u32>,
    /// `logging.format`.
    pub log_format: LogFormat,
    /// `oomScoreAdj`, when set.
    pub oom_score_adj: Option<i32>,
}

impl Default for ProxySettings {
    fn default() -> Self {
        Self {
            engine: Config::default(),
            bind_address: None,
            healthz_bind_address: SocketAddr::new(
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                DEFAULT_HEALTHZ_PORT,
            ),
            metrics_bind_address: SocketAddr::new(
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                DEFAULT_METRICS_PORT,
            ),
            cluster_cidrs: Vec::new(),
            hostname_override: None,
            masquerade_all: false,
            strict_arp: false,
            ipvs_timeouts: netlink_ipvs::Timeouts::default(),
            sync_period: Duration::from_secs(30),
            min_sync_period: Duration::from_secs(1),
            drain_bound: DEFAULT_DRAIN_BOUND,
            conntrack: conntrack_defaults(),
            kubeconfig: None,
            verbosity: None,
            log_format: LogFormat::Text,
            oom_score_adj: None,
        }
    }
}

/// A Go duration field; `None`, empty and `0s` are "unset".
fn duration(text: Option<&str>, field: &'static str) -> Result<Option<Duration>, Error> {
    match text.map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) => {
            let value = parse_go_duration(text).map_err(|reason| Error::Config {
                field,
                reason: format!("{text:?}: {reason}"),
            })?;
            Ok(Some(value).filter(|d| !d.is_zero()))
        }
    }
}

fn seconds(text: Option<&str>, field: &'static str) -> Result<u32, Error> {
    Ok(duration(text, field)?
        .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
        .unwrap_or(0))
}

/// `ip:port`, `[v6]:port`, or a bare IP (kube-proxy's port then).
fn bind_address(text: &str, field: &'static str, default: SocketAddr) -> Result<SocketAddr, Error> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(default);
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, default.port()));
    }
    Err(Error::Config {
        field,
        reason: format!("{text:?} is not ip:port"),
    })
}

fn warn_other(
    prefix: &str,
    other: &BTreeMap<String, serde_json::Value>,
    message: &str,
    warnings: &mut Vec<ConfigWarning>,
) {
    for (key, value) in other {
        if !is_zero(value) {
            warnings.push(ConfigWarning {
                field: format!("{prefix}{key}"),
                message: message.to_owned(),
            });
        }
    }
}

/// kube-proxy's defaults for the table limits (`maxPerCore`, `min`) apply to fields that are
/// absent or `null` (proxier only ever raises a limit, so the default is safe). Timeouts are
/// different (incident I7: kube-proxy's defaulted one-hour `tcpCloseWaitTimeout` filled an
/// ingress node's table): a timeout is written only when it is configured with a non-zero
/// value; absent, `null` or 0 leaves the host's value alone.
/// kube-proxy's table-limit defaults, and no timeout (timeouts are written only when set).
fn conntrack_defaults() -> ConntrackConfig {
    let kube_proxy = ConntrackConfig::kube_proxy_defaults();
    ConntrackConfig {
        max_per_core: kube_proxy.max_per_core,
        min: kube_proxy.min,
        ..ConntrackConfig::default()
    }
}

fn conntrack(
    raw: Option<&serde_json::Value>,
    warnings: &mut Vec<ConfigWarning>,
) -> Result<ConntrackConfig, Error> {
    const KNOWN: &[&str] = &[
        "maxPerCore",
        "min",
        "tcpEstablishedTimeout",
        "tcpCloseWaitTimeout",
        "tcpBeLiberal",
        "udpTimeout",
        "udpStreamTimeout",
        "allowLowering",
    ];
    let defaults = conntrack_defaults();
    let Some(raw) = raw.filter(|v| !v.is_null()) else {
        return Ok(defaults);
    };
    let mut config: ConntrackConfig =
        serde_json::from_value(raw.clone()).map_err(|e| Error::Config {
            field: "conntrack",
            reason: e.to_string(),
        })?;
    let is_set = |key: &str| raw.get(key).is_some_and(|v| !v.is_null());
    if !is_set("maxPerCore") {
        config.max_per_core = defaults.max_per_core;
    }
    if !is_set("min") {
        config.min = defaults.min;
    }
    if let Some(map) = raw.as_object() {
        for (key, value) in map {
            let key = key.as_str();
            if !KNOWN.contains(&key) && !is_zero(value) {
                warnings.push(ConfigWarning {
                    field: format!("conntrack.{key}"),
                    message: "not implemented; ignored".to_owned(),
                });
            }
        }
    }
    Ok(config)
}

impl ProxySettings {
    /// Resolves a configuration: kube-proxy's defaults for unset fields, an error for values
    /// proxier cannot honour (another proxy mode, an unparseable address or duration), and one
    /// warning per set field that proxier ignores.
    pub fn resolve(kpc: &KubeProxyConfiguration) -> Result<(Self, Vec<ConfigWarning>), Error> {
        let mut warnings = Vec::new();
        let defaults = Self::default();
        match kpc.mode.as_str() {
            "" | "ipvs" => {}
            other => {
                return Err(Error::Config {
                    field: "mode",
                    reason: format!(
                        "{other:?}: proxier implements kube-proxy's IPVS mode only; set mode to \
                         \"ipvs\" (or leave it empty), or keep kube-proxy for {other} mode"
                    ),
                })
            }
        }
        let bind_ip = match kpc.bind_address.trim() {
            "" => None,
            text => Some(text.parse::<IpAddr>().map_err(|_| Error::Config {
                field: "bindAddress",
                reason: format!("{text:?} is not an IP"),
            })?),
        };
        let cluster_cidrs = kpc
            .cluster_cidr
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(|c| parse_cidr(c, "clusterCIDR"))
            .collect::<Result<Vec<_>, _>>()?;
        match kpc.detect_local_mode.as_str() {
            "" | "ClusterCIDR" => {
                if cluster_cidrs.is_empty() {
                    warnings.push(ConfigWarning {
                        field: "clusterCIDR".into(),
                        message: "empty: traffic from outside the cluster is not told apart \
                                  from pod traffic (set clusterCIDR, or masqueradeAll)"
                            .into(),
                    });
                }
            }
            other => warnings.push(ConfigWarning {
                field: "detectLocalMode".into(),
                message: format!("{other} is not implemented; ClusterCIDR is used"),
            }),
        }
        let ipvs = &kpc.ipvs;
        warn_other(
            "ipvs.",
            &ipvs.other,
            "not implemented; ignored",
            &mut warnings,
        );
        warn_other(
            "iptables.",
            &kpc.iptables.other,
            "iptables mode only; ignored",
            &mut warnings,
        );
        warn_other(
            "clientConnection.",
            &kpc.client_connection.other,
            "not implemented; ignored",
            &mut warnings,
        );
        warn_other(
            "logging.",
            &kpc.logging.other,
            "not implemented; ignored",
            &mut warnings,
        );
        warn_other("", &kpc.other, "not implemented; ignored", &mut warnings);

        let sync_period = duration(ipvs.sync_period.as_deref(), "ipvs.syncPeriod")?
            .or(duration(kpc.sync_period.as_deref(), "syncPeriod")?)
            .unwrap_or(defaults.sync_period);
        let min_sync_period = duration(ipvs.min_sync_period.as_deref(), "ipvs.minSyncPeriod")?
            .or(duration(kpc.min_sync_period.as_deref(), "minSyncPeriod")?)
            .unwrap_or(defaults.min_sync_period);
        let settings = ProxySettings {
            drain_bound: defaults.drain_bound,
            engine: Config::from_kube_proxy(kpc)?,
            bind_address: bind_ip.filter(|ip| !ip.is_unspecified()),
            healthz_bind_address: bind_address(
                &kpc.healthz_bind_address,
                "healthzBindAddress",
                defaults.healthz_bind_address,
            )?,
            metrics_bind_address: bind_address(
                &kpc.metrics_bind_address,
                "metricsBindAddress",
                defaults.metrics_bind_address,
            )?,
            cluster_cidrs,
            hostname_override: Some(kpc.hostname_override.trim().to_owned())
                .filter(|h| !h.is_empty()),
            masquerade_all: kpc.masquerade_all.unwrap_or(false) || kpc.iptables.masquerade_all,
            strict_arp: ipvs.strict_arp,
            ipvs_timeouts: netlink_ipvs::Timeouts {
                tcp: seconds(ipvs.tcp_timeout.as_deref(), "ipvs.tcpTimeout")?,
                tcp_fin: seconds(ipvs.tcp_fin_timeout.as_deref(), "ipvs.tcpFinTimeout")?,
                udp: seconds(ipvs.udp_timeout.as_deref(), "ipvs.udpTimeout")?,
            },
            sync_period,
            min_sync_period,
            conntrack: conntrack(kpc.conntrack.as_ref(), &mut warnings)?,
            kubeconfig: Some(kpc.client_connection.kubeconfig.trim())
                .filter(|k| !k.is_empty())
                .map(PathBuf::from),
            verbosity: kpc.logging.verbosity.filter(|v| *v > 0),
            log_format: LogFormat::parse(&kpc.logging.format)?,
            oom_score_adj: kpc.oom_score_adj,
        };
        settings.check()?;
        Ok((settings, warnings))
    }

    /// Rejects settings no proxy can run with (also after flags override the file): a zero
    /// `syncPeriod` would resync on every poll and make the health timeout 0 (kube-proxy's
    /// validation requires it to be greater than 0).
    pub fn check(&self) -> Result<(), Error> {
        if let Some(value) = self.oom_score_adj.filter(|v| !(-1000..=1000).contains(v)) {
            return Err(Error::Config {
                field: "oomScoreAdj",
                reason: format!("{value} is outside -1000..=1000"),
            });
        }
        if self.sync_period.is_zero() {
            return Err(Error::Config {
                field: "syncPeriod",
                reason: "must be greater than 0".to_owned(),
            });
        }
        Ok(())
    }
}
