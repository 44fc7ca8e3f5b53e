//! `--write-config-to`.

use std::net::IpAddr;
use std::time::Duration;

use conntrack_gc::sizing::format_go_duration;
use proxier::config::{LogFormat, ProxySettings};

/// `--write-config-to`: the configuration proxier resolved, as a v1alpha1
/// `KubeProxyConfiguration` that [`KubeProxyConfiguration::from_yaml`] reads back to the same
/// settings (values are JSON scalars, which YAML reads as written).
pub fn render_configuration(settings: &ProxySettings) -> String {
    use proxier::config::NodePortAddress;
    let quote = |text: &str| serde_json::Value::String(text.to_owned()).to_string();
    let list = |items: Vec<String>| {
        let items: Vec<String> = items.iter().map(|i| quote(i)).collect();
        format!("[{}]", items.join(", "))
    };
    let cidr = |(ip, prefix): &(IpAddr, u8)| format!("{ip}/{prefix}");
    let seconds = |s: u32| quote(&format_go_duration(Duration::from_secs(u64::from(s))));
    let duration =
        |d: Option<Duration>| d.map_or("null".to_owned(), |d| quote(&format_go_duration(d)));
    let number = |n: Option<u32>| n.map_or("null".to_owned(), |n| n.to_string());
    let engine = &settings.engine;
    let conntrack = &settings.conntrack;
    let node_port_addresses = engine
        .node_port_addresses
        .iter()
        .map(|a| match a {
            NodePortAddress::Primary => "primary".to_owned(),
            NodePortAddress::Cidr { network, prefix } => format!("{network}/{prefix}"),
        })
        .collect();
    let lines = [
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1".to_owned(),
        "kind: KubeProxyConfiguration".to_owned(),
        "mode: ipvs".to_owned(),
        format!(
            "bindAddress: {}",
            quote(
                &settings
                    .bind_address
                    .map(|ip| ip.to_string())
                    .unwrap_or_default()
            )
        ),
        format!(
            "healthzBindAddress: {}",
            quote(&settings.healthz_bind_address.to_string())
        ),
        format!(
            "metricsBindAddress: {}",
            quote(&settings.metrics_bind_address.to_string())
        ),
        format!(
            "clusterCIDR: {}",
            quote(
                &settings
                    .cluster_cidrs
                    .iter()
                    .map(cidr)
                    .collect::<Vec<_>>()
                    .join(",")
            )
        ),
        format!(
            "hostnameOverride: {}",
            quote(settings.hostname_override.as_deref().unwrap_or(""))
        ),
        format!("nodePortAddresses: {}", list(node_port_addresses)),
        format!(
            "oomScoreAdj: {}",
            settings
                .oom_score_adj
                .map_or("null".to_owned(), |v| v.to_string())
        ),
        "iptables:".to_owned(),
        format!("  masqueradeAll: {}", settings.masquerade_all),
        "ipvs:".to_owned(),
        format!("  scheduler: {}", quote(engine.scheduler.name())),
        format!(
            "  syncPeriod: {}",
            quote(&format_go_duration(settings.sync_period))
        ),
        format!(
            "  minSyncPeriod: {}",
            quote(&format_go_duration(settings.min_sync_period))
        ),
        format!("  strictARP: {}", settings.strict_arp),
        format!("  tcpTimeout: {}", seconds(settings.ipvs_timeouts.tcp)),
        format!(
            "  tcpFinTimeout: {}",
            seconds(settings.ipvs_timeouts.tcp_fin)
        ),
        format!("  udpTimeout: {}", seconds(settings.ipvs_timeouts.udp)),
        format!(
            "  excludeCIDRs: {}",
            list(engine.exclude_cidrs.iter().map(cidr).collect())
        ),
        "conntrack:".to_owned(),
        format!("  maxPerCore: {}", number(conntrack.max_per_core)),
        format!("  min: {}", number(conntrack.min)),
        format!(
            "  tcpEstablishedTimeout: {}",
            duration(conntrack.tcp_established_timeout)
        ),
        format!(
            "  tcpCloseWaitTimeout: {}",
            duration(conntrack.tcp_close_wait_timeout)
        ),
        format!(
            "  tcpBeLiberal: {}",
            conntrack
                .tcp_be_liberal
                .map_or("null".to_owned(), |b| b.to_string())
        ),
        format!("  udpTimeout: {}", duration(conntrack.udp_timeout)),
        format!(
            "  udpStreamTimeout: {}",
            duration(conntrack.udp_stream_timeout)
        ),
        format!("  allowLowering: {}", conntrack.allow_lowering),
        "clientConnection:".to_owned(),
        format!(
            "  kubeconfig: {}",
            quote(
                &settings
                    .kubeconfig
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            )
        ),
        "logging:".to_owned(),
        format!(
            "  format: {}",
            quote(match settings.log_format {
                LogFormat::Text => "text",
                LogFormat::Json => "json",
            })
        ),
        format!("  verbosity: {}", settings.verbosity.unwrap_or(0)),
    ];
    lines.join("\n") + "\n"
}
