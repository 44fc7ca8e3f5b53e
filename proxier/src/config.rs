//! Configuration: kube-proxy's `KubeProxyConfiguration` (`kubeproxy.config.k8s.io/v1alpha1`,
//! the `config.conf` of the `kube-proxy` ConfigMap that kubeadm writes), resolved into
//! [`ProxySettings`], plus the engine's own [`Config`].
//!
//! Go writes every field with its zero value (`0s`, `""`, `null`, `false`), so a zero value
//! means "unset, use the default", exactly as kube-proxy's defaulting does. A field proxier does
//! not implement yields one warning when it is set to something other than its zero value, and
//! never an error; a value proxier cannot honour safely (`mode: iptables`) is an error.

mod settings;
#[cfg(test)]
mod tests;

pub use settings::{
    ConfigWarning, ProxySettings, DEFAULT_DRAIN_BOUND, DEFAULT_HEALTHZ_PORT, DEFAULT_METRICS_PORT,
};

use std::collections::BTreeMap;
use std::net::IpAddr;

use netlink_ipvs::Scheduler;
use serde::Deserialize;

use crate::error::Error;

/// The `ipvs` section of `KubeProxyConfiguration`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct IpvsSection {
    /// `ipvs.scheduler` (empty = `rr`).
    pub scheduler: String,
    /// `ipvs.syncPeriod` (Go duration; `0s` = default).
    pub sync_period: Option<String>,
    /// `ipvs.minSyncPeriod` (Go duration; `0s` = default).
    pub min_sync_period: Option<String>,
    /// `ipvs.strictARP`.
    #[serde(rename = "strictARP")]
    pub strict_arp: bool,
    /// `ipvs.tcpTimeout` (IPVS established-TCP timeout; `0s` = leave the kernel's).
    pub tcp_timeout: Option<String>,
    /// `ipvs.tcpFinTimeout`.
    pub tcp_fin_timeout: Option<String>,
    /// `ipvs.udpTimeout`.
    pub udp_timeout: Option<String>,
    /// `ipvs.excludeCIDRs`: not implemented (warned about when set).
    #[serde(rename = "excludeCIDRs")]
    pub exclude_cidrs: Option<Vec<String>>,
    /// Every other field of the section.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// The `iptables` section: in v1alpha1 it holds `masqueradeAll`, which IPVS mode uses too.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct IptablesSection {
    /// `iptables.masqueradeAll`.
    pub masquerade_all: bool,
    /// The iptables-only fields (`masqueradeBit`, `syncPeriod`, ...): irrelevant in IPVS mode.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// The `clientConnection` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ClientConnection {
    /// `clientConnection.kubeconfig`: the kubeconfig to reach the API server with (kubeadm
    /// points it at `/var/lib/kube-proxy/kubeconfig.conf`, which names the API server's real
    /// address: the `kubernetes` Service's cluster IP needs a working proxy first).
    pub kubeconfig: String,
    /// `qps`, `burst`, `contentType`, `acceptContentTypes`: not implemented.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// The `logging` section (component-base logging options).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LoggingSection {
    /// `logging.verbosity` (klog's `-v`).
    pub verbosity: Option<u32>,
    /// `logging.format`: `text` (or empty) or `json`.
    pub format: String,
    /// Every other field (format options, flush frequency).
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// `KubeProxyConfiguration` as read from YAML: known fields typed, the rest kept by name so
/// that every unimplemented one can be warned about.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct KubeProxyConfiguration {
    /// `apiVersion`.
    pub api_version: String,
    /// `kind`.
    pub kind: String,
    /// `bindAddress`: a specific IP is the node's primary IP (as in kube-proxy).
    pub bind_address: String,
    /// `healthzBindAddress` (`ip:port`; empty = `0.0.0.0:10256`).
    pub healthz_bind_address: String,
    /// `metricsBindAddress` (`ip:port`; empty = `127.0.0.1:10249`).
    pub metrics_bind_address: String,
    /// `clusterCIDR`: comma-separated, one per family.
    #[serde(rename = "clusterCIDR")]
    pub cluster_cidr: String,
    /// `hostnameOverride`.
    pub hostname_override: String,
    /// `mode`: `ipvs` or empty.
    pub mode: String,
    /// `detectLocalMode`: `ClusterCIDR` or empty.
    pub detect_local_mode: String,
    /// `nodePortAddresses`: CIDRs, or `primary`.
    pub node_port_addresses: Option<Vec<String>>,
    /// Top-level `masqueradeAll` (v1alpha2 spelling).
    pub masquerade_all: Option<bool>,
    /// `oomScoreAdj`: written to `/proc/self/oom_score_adj` when set (kube-proxy's default of
    /// -999 is not applied to an unset field).
    pub oom_score_adj: Option<i32>,
    /// Top-level `syncPeriod` (v1alpha2 spelling).
    pub sync_period: Option<String>,
    /// Top-level `minSyncPeriod` (v1alpha2 spelling).
    pub min_sync_period: Option<String>,
    /// `ipvs`.
    pub ipvs: IpvsSection,
    /// `iptables`.
    pub iptables: IptablesSection,
    /// `conntrack`, kept raw: `null` fields take kube-proxy's defaults (see
    /// [`ProxySettings::conntrack`]).
    pub conntrack: Option<serde_json::Value>,
    /// `clientConnection`.
    pub client_connection: ClientConnection,
    /// `logging`.
    pub logging: LoggingSection,
    /// Every other top-level field.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

impl KubeProxyConfiguration {
    /// Parses the YAML (or JSON) text of a configuration file (under the limits of
    /// [`crate::yaml`]), read once.
    pub fn from_yaml(text: &str) -> Result<Self, Error> {
        let config: Self = crate::yaml::from_str("KubeProxyConfiguration", text)?;
        let bad = |field, reason: String| Err(Error::Config { field, reason });
        if !config.kind.is_empty() && config.kind != "KubeProxyConfiguration" {
            return bad(
                "kind",
                format!("{:?} is not KubeProxyConfiguration", config.kind),
            );
        }
        if !config.api_version.is_empty()
            && !config.api_version.starts_with("kubeproxy.config.k8s.io/")
        {
            return bad(
                "apiVersion",
                format!(
                    "{:?} is not kubeproxy.config.k8s.io/v1alpha1",
                    config.api_version
                ),
            );
        }
        Ok(config)
    }

    /// Top-level fields that are set but that proxier does not implement, by name (the
    /// complete list with nested fields is [`ProxySettings::resolve`]'s warnings).
    pub fn unimplemented_fields(&self) -> Vec<&str> {
        self.other
            .iter()
            .filter(|(_, v)| !is_zero(v))
            .map(|(k, _)| k.as_str())
            .collect()
    }
}

/// Whether a YAML value is Go's zero value (what an unset field is written as).
pub(crate) fn is_zero(value: &serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => matches!(s.as_str(), "" | "0" | "0s"),
        Value::Array(items) => items.is_empty(),
        Value::Object(map) => map.values().all(is_zero),
    }
}

/// How log lines are written: `logging.format`, `--logging-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One human-readable line per event (the default).
    #[default]
    Text,
    /// One JSON object per line, with component-base's keys (`ts`, `msg`, `v`, `err`).
    Json,
}

impl LogFormat {
    /// Parses `text`, `json` (or empty: text), as component-base's registry names them.
    pub fn parse(text: &str) -> Result<Self, Error> {
        match text.trim() {
            "" | "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(Error::Config {
                field: "logging.format",
                reason: format!("{other:?}: the formats are text and json"),
            }),
        }
    }
}

/// A `nodePortAddresses` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodePortAddress {
    /// Node IPs inside this CIDR.
    Cidr {
        /// Network address.
        network: IpAddr,
        /// Prefix length.
        prefix: u8,
    },
    /// The node's primary IPs (its `InternalIP`s).
    Primary,
}

/// Parses `10.0.0.0/8` or `fd00::/64` into network and prefix length.
pub fn parse_cidr(text: &str, field: &'static str) -> Result<(IpAddr, u8), Error> {
    let bad = |reason: &str| Error::Config {
        field,
        reason: format!("{text:?}: {reason}"),
    };
    let (ip, prefix) = text
        .trim()
        .split_once('/')
        .ok_or_else(|| bad("not a CIDR"))?;
    let network: IpAddr = ip.parse().map_err(|_| bad("bad address"))?;
    let prefix: u8 = prefix.parse().map_err(|_| bad("bad prefix"))?;
    let max = if network.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err(bad("prefix too long"));
    }
    Ok((network, prefix))
}

impl NodePortAddress {
    /// Parses `10.0.0.0/8`, `fd00::/64` or `primary`.
    pub fn parse(text: &str) -> Result<Self, Error> {
        if text == "primary" {
            return Ok(NodePortAddress::Primary);
        }
        let (network, prefix) = parse_cidr(text, "nodePortAddresses")?;
        Ok(NodePortAddress::Cidr { network, prefix })
    }

    /// Whether a node IP is selected by this entry.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (*self, ip) {
            (NodePortAddress::Primary, _) => true,
            (
                NodePortAddress::Cidr {
                    network: IpAddr::V4(n),
                    prefix,
                },
                IpAddr::V4(a),
            ) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (
                NodePortAddress::Cidr {
                    network: IpAddr::V6(n),
                    prefix,
                },
                IpAddr::V6(a),
            ) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// Default base of the firewall marks proxier gives ETP=Local external-traffic services.
pub const DEFAULT_FWMARK_BASE: u32 = 0x0100_0000;
/// Number of firewall marks proxier may allocate from the base.
pub const FWMARK_COUNT: u32 = 0x0001_0000;

/// What the planner needs to know besides the cluster and the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// IPVS scheduler for every virtual server.
    pub scheduler: Scheduler,
    /// Which node IPs NodePorts open on (empty = all given node IPs).
    pub node_port_addresses: Vec<NodePortAddress>,
    /// The API server's NodePort range (ownership: see [`crate::plan::Ownership`]).
    pub node_port_range: (u16, u16),
    /// First firewall mark of proxier's range (`FWMARK_COUNT` marks).
    pub fwmark_base: u32,
    /// `ipvs.excludeCIDRs`: virtual servers on these addresses are never deleted or changed
    /// unless planned (as kube-proxy).
    pub exclude_cidrs: Vec<(IpAddr, u8)>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            scheduler: Scheduler::Rr,
            node_port_addresses: Vec::new(),
            node_port_range: (30000, 32767),
            fwmark_base: DEFAULT_FWMARK_BASE,
            exclude_cidrs: Vec::new(),
        }
    }
}

impl Config {
    /// The engine configuration a `KubeProxyConfiguration` asks for.
    pub fn from_kube_proxy(config: &KubeProxyConfiguration) -> Result<Self, Error> {
        let mut out = Config::default();
        let name = config.ipvs.scheduler.trim();
        if !name.is_empty() {
            out.scheduler = Scheduler::known(name).ok_or_else(|| {
                let valid: Vec<&str> = Scheduler::KNOWN.iter().map(Scheduler::name).collect();
                Error::Config {
                    field: "ipvs.scheduler",
                    reason: format!(
                        "{name:?} is not an IPVS scheduler; valid: {}",
                        valid.join(", ")
                    ),
                }
            })?;
        }
        out.exclude_cidrs = config
            .ipvs
            .exclude_cidrs
            .iter()
            .flatten()
            .map(|c| parse_cidr(c, "ipvs.excludeCIDRs"))
            .collect::<Result<_, _>>()?;
        out.node_port_addresses = config
            .node_port_addresses
            .iter()
            .flatten()
            .map(|a| NodePortAddress::parse(a))
            .collect::<Result<_, _>>()?;
        Ok(out)
    }
}
