//! kube-proxy's command line: every flag of `cmd/kube-proxy/app/options.go` and of
//! component-base's logging flags, with kube-proxy's names and value types, so that a
//! DaemonSet's command (kubeadm, kops, GCE, RKE) starts proxier unchanged.
//!
//! Precedence is kube-proxy's (`Options.Complete`): without `--config` the flags make the
//! configuration (mapped onto the same `KubeProxyConfiguration` fields a file sets, and resolved
//! by the same [`ProxySettings::resolve`]); with `--config` the file is the configuration and
//! only the logging flags, `--hostname-override` and `--master` still act. Every other flag
//! given next to `--config` is ignored by kube-proxy too, and logged once as ignored here.
//! A flag proxier does not implement is logged once when its value differs from kube-proxy's
//! default, and never refused.

mod args;
mod render;

pub use args::KubeProxyFlags;
pub use render::render_configuration;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use conntrack_gc::sizing::format_go_duration;
use proxier::config::{KubeProxyConfiguration, ProxySettings};

/// A flag given that does nothing: not implemented, or ignored because `--config` is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagWarning {
    /// The flag, without dashes.
    pub flag: &'static str,
    /// Why it does nothing.
    pub message: String,
}

impl fmt::Display for FlagWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "flag --{}: {}", self.flag, self.message)
    }
}

/// What a given flag does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Sets this configuration field (ignored when `--config` is given, as in kube-proxy).
    Field(&'static str),
    /// Acts with or without `--config` (logging, the node's name, the API server, actions).
    Always,
    /// Not implemented; `true` when its value differs from kube-proxy's default.
    Unimplemented(bool),
}

impl KubeProxyFlags {
    /// Every flag given, by name, with what it does.
    fn given(&self) -> Vec<(&'static str, Role)> {
        use Role::{Always, Field};
        /// Not implemented: warned when the value is not kube-proxy's default.
        fn unless<T: PartialEq>(value: &Option<T>, default: T) -> Role {
            Role::Unimplemented(value.as_ref() != Some(&default))
        }
        /// Not implemented: warned when the value is not empty (the default).
        fn unless_empty(value: &Option<String>) -> Role {
            Role::Unimplemented(value.as_deref().is_some_and(|v| !v.trim().is_empty()))
        }
        /// The deprecated port flags; port 0 (no server) is not implemented.
        fn port(value: Option<u16>, field: &'static str) -> Role {
            match value {
                Some(0) => Role::Unimplemented(true),
                _ => Field(field),
            }
        }
        let mut out = Vec::new();
        macro_rules! flag {
            ($name:literal, $set:expr, $role:expr) => {
                if $set {
                    out.push(($name, $role));
                }
            };
        }
        let minutes = |m: u64| Duration::from_secs(60 * m);
        flag!("config", self.config.is_some(), Always);
        flag!("write-config-to", self.write_config_to.is_some(), Always);
        flag!("cleanup", self.cleanup.is_some(), Always);
        flag!("init-only", self.init_only.is_some(), Always);
        let gates = &self.feature_gates;
        flag!("feature-gates", gates.is_some(), unless_empty(gates));
        let kubeconfig = Field("clientConnection.kubeconfig");
        flag!("kubeconfig", self.kubeconfig.is_some(), kubeconfig);
        flag!("master", self.master.is_some(), Always);
        let content_type = &self.kube_api_content_type;
        let protobuf = "application/vnd.kubernetes.protobuf".to_owned();
        flag!(
            "kube-api-content-type",
            content_type.is_some(),
            unless(content_type, protobuf)
        );
        flag!(
            "kube-api-burst",
            self.kube_api_burst.is_some(),
            unless(&self.kube_api_burst, 10)
        );
        flag!(
            "kube-api-qps",
            self.kube_api_qps.is_some(),
            unless(&self.kube_api_qps, 5.0)
        );
        flag!(
            "hostname-override",
            self.hostname_override.is_some(),
            Always
        );
        flag!(
            "bind-address",
            self.bind_address.is_some(),
            Field("bindAddress")
        );
        let healthz = Field("healthzBindAddress");
        flag!(
            "healthz-bind-address",
            self.healthz_bind_address.is_some(),
            healthz
        );
        let metrics = Field("metricsBindAddress");
        flag!(
            "metrics-bind-address",
            self.metrics_bind_address.is_some(),
            metrics
        );
        let hard_fail = &self.bind_address_hard_fail;
        flag!(
            "bind-address-hard-fail",
            hard_fail.is_some(),
            unless(hard_fail, false)
        );
        flag!(
            "profiling",
            self.profiling.is_some(),
            unless(&self.profiling, false)
        );
        let hidden = &self.show_hidden_metrics_for_version;
        flag!(
            "show-hidden-metrics-for-version",
            hidden.is_some(),
            unless_empty(hidden)
        );
        flag!("proxy-mode", self.proxy_mode.is_some(), Field("mode"));
        let bit = &self.iptables_masquerade_bit;
        flag!("iptables-masquerade-bit", bit.is_some(), unless(bit, 14));
        flag!(
            "masquerade-all",
            self.masquerade_all.is_some(),
            Field("masqueradeAll")
        );
        let localhost = &self.iptables_localhost_nodeports;
        flag!(
            "iptables-localhost-nodeports",
            localhost.is_some(),
            unless(localhost, true)
        );
        let period = &self.iptables_sync_period;
        flag!(
            "iptables-sync-period",
            period.is_some(),
            unless(period, Duration::from_secs(30))
        );
        let period = &self.iptables_min_sync_period;
        flag!(
            "iptables-min-sync-period",
            period.is_some(),
            unless(period, Duration::from_secs(1))
        );
        let period = Field("ipvs.syncPeriod");
        flag!("ipvs-sync-period", self.ipvs_sync_period.is_some(), period);
        let period = Field("ipvs.minSyncPeriod");
        flag!(
            "ipvs-min-sync-period",
            self.ipvs_min_sync_period.is_some(),
            period
        );
        flag!(
            "ipvs-scheduler",
            self.ipvs_scheduler.is_some(),
            Field("ipvs.scheduler")
        );
        let exclude = Field("ipvs.excludeCIDRs");
        flag!(
            "ipvs-exclude-cidrs",
            !self.ipvs_exclude_cidrs.is_empty(),
            exclude
        );
        flag!(
            "ipvs-strict-arp",
            self.ipvs_strict_arp.is_some(),
            Field("ipvs.strictARP")
        );
        flag!(
            "ipvs-tcp-timeout",
            self.ipvs_tcp_timeout.is_some(),
            Field("ipvs.tcpTimeout")
        );
        let fin = Field("ipvs.tcpFinTimeout");
        flag!(
            "ipvs-tcpfin-timeout",
            self.ipvs_tcpfin_timeout.is_some(),
            fin
        );
        flag!(
            "ipvs-udp-timeout",
            self.ipvs_udp_timeout.is_some(),
            Field("ipvs.udpTimeout")
        );
        let local = Field("detectLocalMode");
        flag!("detect-local-mode", self.detect_local_mode.is_some(), local);
        let bridge = &self.pod_bridge_interface;
        flag!(
            "pod-bridge-interface",
            bridge.is_some(),
            unless_empty(bridge)
        );
        let prefix = &self.pod_interface_name_prefix;
        flag!(
            "pod-interface-name-prefix",
            prefix.is_some(),
            unless_empty(prefix)
        );
        flag!(
            "cluster-cidr",
            self.cluster_cidr.is_some(),
            Field("clusterCIDR")
        );
        let node_ports = Field("nodePortAddresses");
        flag!(
            "nodeport-addresses",
            !self.nodeport_addresses.is_empty(),
            node_ports
        );
        flag!(
            "oom-score-adj",
            self.oom_score_adj.is_some(),
            Field("oomScoreAdj")
        );
        let conntrack = [
            (
                "conntrack-max-per-core",
                self.conntrack_max_per_core.is_some(),
                "conntrack.maxPerCore",
            ),
            (
                "conntrack-min",
                self.conntrack_min.is_some(),
                "conntrack.min",
            ),
            (
                "conntrack-tcp-timeout-established",
                self.conntrack_tcp_timeout_established.is_some(),
                "conntrack.tcpEstablishedTimeout",
            ),
            (
                "conntrack-tcp-timeout-close-wait",
                self.conntrack_tcp_timeout_close_wait.is_some(),
                "conntrack.tcpCloseWaitTimeout",
            ),
            (
                "conntrack-tcp-be-liberal",
                self.conntrack_tcp_be_liberal.is_some(),
                "conntrack.tcpBeLiberal",
            ),
            (
                "conntrack-udp-timeout",
                self.conntrack_udp_timeout.is_some(),
                "conntrack.udpTimeout",
            ),
            (
                "conntrack-udp-timeout-stream",
                self.conntrack_udp_timeout_stream.is_some(),
                "conntrack.udpStreamTimeout",
            ),
        ];
        for (name, set, field) in conntrack {
            if set {
                out.push((name, Field(field)));
            }
        }
        let resync = &self.config_sync_period;
        flag!(
            "config-sync-period",
            resync.is_some(),
            unless(resync, minutes(15))
        );
        flag!(
            "healthz-port",
            self.healthz_port.is_some(),
            port(self.healthz_port, "healthzBindAddress")
        );
        flag!(
            "metrics-port",
            self.metrics_port.is_some(),
            port(self.metrics_port, "metricsBindAddress")
        );
        flag!("logging-format", self.logging_format.is_some(), Always);
        let flush = &self.log_flush_frequency;
        flag!(
            "log-flush-frequency",
            flush.is_some(),
            unless(flush, Duration::from_secs(5))
        );
        flag!("v", self.verbosity.is_some(), Always);
        flag!(
            "vmodule",
            self.vmodule.is_some(),
            unless_empty(&self.vmodule)
        );
        let split = &self.log_json_split_stream;
        flag!(
            "log-json-split-stream",
            split.is_some(),
            unless(split, false)
        );
        let buffer = self
            .log_json_info_buffer_size
            .as_ref()
            .map(|b| b.trim().trim_start_matches('0').to_owned());
        flag!(
            "log-json-info-buffer-size",
            buffer.is_some(),
            unless_empty(&buffer)
        );
        out
    }

    /// One warning per given flag that does nothing (see the module docs).
    pub fn warnings(&self) -> Vec<FlagWarning> {
        let with_config = self.config.is_some();
        self.given()
            .into_iter()
            .filter_map(|(flag, role)| {
                let message = match role {
                    Role::Field(field) if with_config => format!(
                        "ignored: --config is given, and the file is the configuration (as in \
                         kube-proxy); set {field} in the file"
                    ),
                    Role::Unimplemented(true) if with_config => {
                        "ignored: --config is given (and not implemented)".to_owned()
                    }
                    Role::Unimplemented(true) => "not implemented; ignored".to_owned(),
                    Role::Field(_) | Role::Always | Role::Unimplemented(false) => return None,
                };
                Some(FlagWarning { flag, message })
            })
            .collect()
    }

    /// The configuration the flags make (kube-proxy without `--config`): each implemented
    /// flag sets the field a file would, so that [`ProxySettings::resolve`] checks both alike.
    pub fn configuration(&self) -> KubeProxyConfiguration {
        let text = |d: &Option<Duration>| d.map(format_go_duration);
        let mut kpc = KubeProxyConfiguration {
            bind_address: self
                .bind_address
                .map(|ip| ip.to_string())
                .unwrap_or_default(),
            healthz_bind_address: with_port(
                self.healthz_bind_address.as_deref(),
                self.healthz_port,
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            ),
            metrics_bind_address: with_port(
                self.metrics_bind_address.as_deref(),
                self.metrics_port,
                IpAddr::V4(Ipv4Addr::LOCALHOST),
            ),
            cluster_cidr: self.cluster_cidr.clone().unwrap_or_default(),
            mode: self.proxy_mode.clone().unwrap_or_default(),
            detect_local_mode: self.detect_local_mode.clone().unwrap_or_default(),
            node_port_addresses: Some(self.nodeport_addresses.clone()).filter(|a| !a.is_empty()),
            masquerade_all: self.masquerade_all,
            oom_score_adj: self.oom_score_adj,
            ..KubeProxyConfiguration::default()
        };
        kpc.ipvs.scheduler = self.ipvs_scheduler.clone().unwrap_or_default();
        kpc.ipvs.sync_period = text(&self.ipvs_sync_period);
        kpc.ipvs.min_sync_period = text(&self.ipvs_min_sync_period);
        kpc.ipvs.strict_arp = self.ipvs_strict_arp.unwrap_or(false);
        kpc.ipvs.tcp_timeout = text(&self.ipvs_tcp_timeout);
        kpc.ipvs.tcp_fin_timeout = text(&self.ipvs_tcpfin_timeout);
        kpc.ipvs.udp_timeout = text(&self.ipvs_udp_timeout);
        kpc.ipvs.exclude_cidrs = Some(self.ipvs_exclude_cidrs.clone()).filter(|c| !c.is_empty());
        kpc.client_connection.kubeconfig = self
            .kubeconfig
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        kpc
    }

    /// Applies what the configuration cannot carry, over `settings`: without `--config` the
    /// conntrack flags; always the logging flags and `--hostname-override` (kube-proxy's
    /// precedence). Errors name the flag.
    pub fn overlay(&self, settings: &mut ProxySettings) -> Result<(), proxier::Error> {
        if self.config.is_none() {
            // In a file 0s means "unset"; a flag set to 0 asks for it (kube-proxy refuses it).
            if self.ipvs_sync_period.is_some_and(|d| d.is_zero()) {
                return Err(proxier::Error::Config {
                    field: "--ipvs-sync-period",
                    reason: "must be greater than 0".to_owned(),
                });
            }
            let conntrack = &mut settings.conntrack;
            if let Some(value) = self.conntrack_max_per_core {
                conntrack.max_per_core = Some(value);
            }
            if let Some(value) = self.conntrack_min {
                conntrack.min = Some(value);
            }
            let timeout = |flag: Option<Duration>, field: &mut Option<Duration>| {
                if let Some(value) = flag {
                    *field = Some(value).filter(|d| !d.is_zero());
                }
            };
            timeout(
                self.conntrack_tcp_timeout_established,
                &mut conntrack.tcp_established_timeout,
            );
            timeout(
                self.conntrack_tcp_timeout_close_wait,
                &mut conntrack.tcp_close_wait_timeout,
            );
            timeout(self.conntrack_udp_timeout, &mut conntrack.udp_timeout);
            timeout(
                self.conntrack_udp_timeout_stream,
                &mut conntrack.udp_stream_timeout,
            );
            if let Some(liberal) = self.conntrack_tcp_be_liberal {
                conntrack.tcp_be_liberal = Some(liberal).filter(|l| *l);
            }
        }
        if let Some(verbosity) = self.verbosity {
            settings.verbosity = Some(verbosity);
        }
        if let Some(format) = self.logging_format {
            settings.log_format = format;
        }
        if let Some(name) = &self.hostname_override {
            let name = name.trim();
            if name.is_empty() {
                return Err(proxier::Error::Config {
                    field: "--hostname-override",
                    reason: "empty hostname-override is invalid".to_owned(),
                });
            }
            settings.hostname_override = Some(name.to_lowercase());
        }
        Ok(())
    }

    /// Whether a boolean action flag is set to true.
    pub fn cleanup(&self) -> bool {
        self.cleanup == Some(true)
    }

    /// `--init-only`.
    pub fn init_only(&self) -> bool {
        self.init_only == Some(true)
    }
}

/// kube-proxy's deprecated `--healthz-port`/`--metrics-port`: the port of the address flag
/// (or of the default address) unless the address names its own port. Port 0 (disable the
/// server) is not implemented (warned): the address keeps its port.
fn with_port(address: Option<&str>, port: Option<u16>, default_ip: IpAddr) -> String {
    match (address, port.filter(|p| *p != 0)) {
        (Some(address), Some(port)) => match address.parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, port).to_string(),
            // It names its own port (or is not an address: resolve refuses it).
            Err(_) => address.to_owned(),
        },
        (Some(address), None) => address.to_owned(),
        (None, Some(port)) => SocketAddr::new(default_ip, port).to_string(),
        (None, None) => String::new(),
    }
}

#[cfg(test)]
mod tests;
