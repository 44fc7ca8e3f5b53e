//! The flag set itself: kube-proxy's names, types and value syntax.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use conntrack_gc::sizing::{parse_go_duration, DurationError};
use proxier::config::LogFormat;

/// A Go duration flag value (`30s`, `1m`, `2h22m`).
fn go_duration(text: &str) -> Result<Duration, DurationError> {
    parse_go_duration(text)
}

/// A log format flag value (`text` or `json`).
fn log_format(text: &str) -> Result<LogFormat, String> {
    LogFormat::parse(text).map_err(|e| e.to_string())
}

/// `--feature-gates`: `Name=true,Other=false`.
fn feature_gates(text: &str) -> Result<String, String> {
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("{pair:?} is not Name=true|false"))?;
        if name.trim().is_empty() || value.trim().parse::<bool>().is_err() {
            return Err(format!("{pair:?} is not Name=true|false"));
        }
    }
    Ok(text.to_owned())
}

/// kube-proxy's flags (the ones without a subcommand). Boolean flags take `--flag` or
/// `--flag=true|false`, list flags a comma-separated list (repeatable), durations Go's syntax.
#[derive(Debug, Default, clap::Args)]
#[command(
    next_help_heading = "kube-proxy's flags (without a subcommand proxier runs as kube-proxy)"
)]
pub struct KubeProxyFlags {
    /// The path to the configuration file (KubeProxyConfiguration). With it, the file is the
    /// configuration: only the logging flags, --hostname-override and --master still act.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Write the configuration proxier resolved to this file and exit.
    #[arg(long = "write-config-to", value_name = "FILE")]
    pub write_config_to: Option<PathBuf>,
    /// Remove what proxier created and exit (as `proxier cleanup`).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true, value_name = "BOOL")]
    pub cleanup: Option<bool>,
    /// Write the host settings that need privileges (conntrack sizing, sysctls, IPVS
    /// timeouts) and exit.
    #[arg(long = "init-only", num_args = 0..=1, default_missing_value = "true", require_equals = true, value_name = "BOOL")]
    pub init_only: Option<bool>,
    /// Feature gates (Name=true,...): not implemented, warned.
    #[arg(long = "feature-gates", value_parser = feature_gates, value_name = "NAME=BOOL,...")]
    pub feature_gates: Option<String>,
    /// A kubeconfig file (clientConnection.kubeconfig; default: in-cluster).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The API server's URL (overrides the kubeconfig's).
    #[arg(long)]
    pub master: Option<String>,
    /// Content type of API requests: not implemented, warned.
    #[arg(long = "kube-api-content-type")]
    pub kube_api_content_type: Option<String>,
    /// Burst of API requests: not implemented, warned.
    #[arg(long = "kube-api-burst", allow_negative_numbers = true)]
    pub kube_api_burst: Option<i32>,
    /// QPS of API requests: not implemented, warned.
    #[arg(long = "kube-api-qps", allow_negative_numbers = true)]
    pub kube_api_qps: Option<f32>,
    /// The node's name, instead of the hostname (acts with --config too).
    #[arg(long = "hostname-override")]
    pub hostname_override: Option<String>,
    /// The node's primary IP (bindAddress).
    #[arg(long = "bind-address")]
    pub bind_address: Option<IpAddr>,
    /// ip:port of /healthz and /livez (healthzBindAddress; default 0.0.0.0:10256).
    #[arg(long = "healthz-bind-address", value_name = "IP:PORT")]
    pub healthz_bind_address: Option<String>,
    /// ip:port of /metrics (metricsBindAddress; default 127.0.0.1:10249).
    #[arg(long = "metrics-bind-address", value_name = "IP:PORT")]
    pub metrics_bind_address: Option<String>,
    /// Exit when a port cannot be bound: not implemented (proxier retries), warned.
    #[arg(long = "bind-address-hard-fail", num_args = 0..=1, default_missing_value = "true", require_equals = true, value_name = "BOOL")]
    pub bind_address_hard_fail: Option<bool>,
    /// /debug/pprof: not implemented, warned.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true, value_name = "BOOL")]
    pub profiling: Option<bool>,
    /// Hidden metrics of a previous version: not implemented, warned.
    #[arg(long = "show-hidden-metrics-for-version", value_name = "VERSION")]
    pub show_hidden_metrics_for_version: Option<String>,
    /// Proxy mode (mode): only `ipvs` or empty.
    #[arg(long = "proxy-mode")]
    pub proxy_mode: Option<String>,
    /// iptables' masquerade bit: proxier marks with its own nftables table; warned.
    #[arg(long = "iptables-masquerade-bit", allow_negative_numbers = true)]
    pub iptables_masquerade_bit: Option<i32>,
    /// SNAT all traffic to services (masqueradeAll).
    #[arg(long = "masquerade-all", num_args = 0..=1, default_missing_value = "true", require_equals = true, value_name = "BOOL")]
    pub masquerade_all: Option<bool>,
    /// iptables mode only; warned.
    #[arg(long = "iptables-localhost-nodeports", num_args = 0..=1, default_missing_value = "true", require_equals = true, value_name = "BOOL")]
    pub iptables_localhost_nodeports: Option<bool>,
    /// iptables mode only; warned.
    #[arg(long = "iptables-sync-period", value_parser = go_duration, value_name = "DURATION")]
    pub iptables_sync_period: Option<Duration>,
    /// iptables mode only; warned.
    #[arg(long = "iptables-min-sync-period", value_parser = go_duration, value_name = "DURATION")]
    pub iptables_min_sync_period: Option<Duration>,
    /// Full resync period (ipvs.syncPeriod; default 30s).
    #[arg(long = "ipvs-sync-period", value_parser = go_duration, value_name = "DURATION")]
    pub ipvs_sync_period: Option<Duration>,
    /// Least time between syncs (ipvs.minSyncPeriod; default 1s).
    #[arg(long = "ipvs-min-sync-period", value_parser = go_duration, value_name = "DURATION")]
    pub ipvs_min_sync_period: Option<Duration>,
    /// IPVS scheduler (ipvs.scheduler; default rr).
    #[arg(long = "ipvs-scheduler")]
    pub ipvs_scheduler: Option<String>,
    /// CIDRs whose virtual servers are never touched (ipvs.excludeCIDRs).
    #[arg(
        long = "ipvs-exclude-cidrs",
        value_delimiter = ',',
        value_name = "CIDR,..."
    )]
    pub ipvs_exclude_cidrs: Vec<String>,
    /// arp_ignore=1 and arp_announce=2 (ipvs.strictARP).
    #[arg(long = "ipvs-strict-arp", num_args = 0..=1, default_missing_value = "true", require_equals = true, value_name = "BOOL")]
    pub ipvs_strict_arp: Option<bool>,
    /// IPVS TCP timeout (ipvs.tcpTimeout; 0 leaves it).
    #[arg(long = "ipvs-tcp-timeout", value_parser = go_duration, value_name = "DURATION")]
    pub ipvs_tcp_timeout: Option<Duration>,
    /// IPVS TCP FIN timeout (ipvs.tcpFinTimeout; 0 leaves it).
    #[arg(long = "ipvs-tcpfin-timeout", value_parser = go_duration, value_name = "DURATION")]
    pub ipvs_tcpfin_timeout: Option<Duration>,
    /// IPVS UDP timeout (ipvs.udpTimeout; 0 leaves it).
    #[arg(long = "ipvs-udp-timeout", value_parser = go_duration, value_name = "DURATION")]
    pub ipvs_udp_timeout: Option<Duration>,
    /// How local traffic is told apart (detectLocalMode): ClusterCIDR.
    #[arg(long = "detect-local-mode")]
    pub detect_local_mode: Option<String>,
    /// detectLocalMode BridgeInterface only; warned.
    #[arg(long = "pod-bridge-interface")]
    pub pod_bridge_interface: Option<String>,
    /// detectLocalMode InterfaceNamePrefix only; warned.
    #[arg(long = "pod-interface-name-prefix")]
    pub pod_interface_name_prefix: Option<String>,
    /// The pods' CIDR(s), comma-separated per family (clusterCIDR).
    #[arg(long = "cluster-cidr", value_name = "CIDR[,CIDR]")]
    pub cluster_cidr: Option<String>,
    /// CIDRs of the node IPs NodePorts open on, or `primary` (nodePortAddresses).
    #[arg(
        long = "nodeport-addresses",
        value_delimiter = ',',
        value_name = "CIDR,..."
    )]
    pub nodeport_addresses: Vec<String>,
    /// The process's oom_score_adj (-1000..=1000), written to /proc/self/oom_score_adj.
    #[arg(long = "oom-score-adj", allow_negative_numbers = true, value_parser = clap::value_parser!(i32).range(-1000..=1000))]
    pub oom_score_adj: Option<i32>,
    /// conntrack.maxPerCore (0 leaves nf_conntrack_max).
    #[arg(long = "conntrack-max-per-core")]
    pub conntrack_max_per_core: Option<u32>,
    /// conntrack.min.
    #[arg(long = "conntrack-min")]
    pub conntrack_min: Option<u32>,
    /// conntrack.tcpEstablishedTimeout (0 leaves it).
    #[arg(long = "conntrack-tcp-timeout-established", value_parser = go_duration, value_name = "DURATION")]
    pub conntrack_tcp_timeout_established: Option<Duration>,
    /// conntrack.tcpCloseWaitTimeout (0 leaves it).
    #[arg(long = "conntrack-tcp-timeout-close-wait", value_parser = go_duration, value_name = "DURATION")]
    pub conntrack_tcp_timeout_close_wait: Option<Duration>,
    /// conntrack.tcpBeLiberal.
    #[arg(long = "conntrack-tcp-be-liberal", num_args = 0..=1, default_missing_value = "true", require_equals = true, value_name = "BOOL")]
    pub conntrack_tcp_be_liberal: Option<bool>,
    /// conntrack.udpTimeout (0 leaves it).
    #[arg(long = "conntrack-udp-timeout", value_parser = go_duration, value_name = "DURATION")]
    pub conntrack_udp_timeout: Option<Duration>,
    /// conntrack.udpStreamTimeout (0 leaves it).
    #[arg(long = "conntrack-udp-timeout-stream", value_parser = go_duration, value_name = "DURATION")]
    pub conntrack_udp_timeout_stream: Option<Duration>,
    /// Informer resync period: not implemented (watches only), warned.
    #[arg(long = "config-sync-period", value_parser = go_duration, value_name = "DURATION")]
    pub config_sync_period: Option<Duration>,
    /// Deprecated: the port of healthzBindAddress.
    #[arg(long = "healthz-port")]
    pub healthz_port: Option<u16>,
    /// Deprecated: the port of metricsBindAddress.
    #[arg(long = "metrics-port")]
    pub metrics_port: Option<u16>,
    /// Log format: text or json (logging.format).
    #[arg(long = "logging-format", value_parser = log_format, value_name = "text|json")]
    pub logging_format: Option<LogFormat>,
    /// Seconds between log flushes: every line is written at once; warned.
    #[arg(long = "log-flush-frequency", value_parser = go_duration, value_name = "DURATION")]
    pub log_flush_frequency: Option<Duration>,
    /// Log verbosity, klog's levels (logging.verbosity): 0-3 info, 4-5 debug, 6+ trace.
    #[arg(long = "v", short = 'v', value_name = "LEVEL")]
    pub verbosity: Option<u32>,
    /// Per-file verbosity: not implemented, warned.
    #[arg(long)]
    pub vmodule: Option<String>,
    /// JSON errors to stderr, info to stdout: not implemented, warned.
    #[arg(long = "log-json-split-stream", num_args = 0..=1, default_missing_value = "true", require_equals = true, value_name = "BOOL")]
    pub log_json_split_stream: Option<bool>,
    /// Buffer of JSON info lines: not implemented, warned.
    #[arg(long = "log-json-info-buffer-size", value_name = "QUANTITY")]
    pub log_json_info_buffer_size: Option<String>,
}
