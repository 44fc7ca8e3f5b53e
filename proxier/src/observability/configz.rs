//! `/configz` and `/proxyMode` of the metrics server, as kube-proxy serves them: the effective
//! configuration as JSON under the key `kubeproxy.config.k8s.io` (field names and Go duration
//! strings of `KubeProxyConfiguration`), and the mode as plain text.

use std::time::Duration;

use serde_json::{json, Value};

use crate::config::{NodePortAddress, ProxySettings};

/// `/proxyMode`'s body: proxier is IPVS mode.
pub const PROXY_MODE: &str = "ipvs";

/// A duration as Go's `time.Duration.String()` prints it (`30s`, `1m30s`, `24h0m0s`, `500ms`).
pub fn go_duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    let nanos = duration.subsec_nanos();
    if secs == 0 {
        return match nanos {
            0 => "0s".to_owned(),
            n if n % 1_000_000 == 0 => format!("{}ms", n / 1_000_000),
            n => format!("{}s", f64::from(n) / 1e9),
        };
    }
    let fraction = if nanos == 0 {
        String::new()
    } else {
        let digits = format!("{nanos:09}");
        format!(".{}", digits.trim_end_matches('0'))
    };
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}{fraction}s"),
        (0, _) => format!("{m}m{s}{fraction}s"),
        _ => format!("{h}h{m}m{s}{fraction}s"),
    }
}

fn cidr((network, prefix): &(std::net::IpAddr, u8)) -> String {
    format!("{network}/{prefix}")
}

/// `/configz`'s body for `settings`.
pub fn configz(settings: &ProxySettings) -> String {
    let conntrack = &settings.conntrack;
    let optional = |d: Option<Duration>| d.map(go_duration);
    let node_port_addresses: Vec<String> = settings
        .engine
        .node_port_addresses
        .iter()
        .map(|address| match address {
            NodePortAddress::Cidr { network, prefix } => format!("{network}/{prefix}"),
            NodePortAddress::Primary => "primary".to_owned(),
        })
        .collect();
    let timeout = |seconds: u32| go_duration(Duration::from_secs(u64::from(seconds)));
    let config: Value = json!({
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": PROXY_MODE,
        "bindAddress": settings.bind_address.map_or("0.0.0.0".to_owned(), |ip| ip.to_string()),
        "healthzBindAddress": settings.healthz_bind_address.to_string(),
        "metricsBindAddress": settings.metrics_bind_address.to_string(),
        "clusterCIDR": settings.cluster_cidrs.iter().map(cidr).collect::<Vec<_>>().join(","),
        "hostnameOverride": settings.hostname_override.clone().unwrap_or_default(),
        "nodePortAddresses": node_port_addresses,
        "clientConnection": {
            "kubeconfig": settings.kubeconfig.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
        },
        "logging": { "verbosity": settings.verbosity.unwrap_or(0) },
        "iptables": { "masqueradeAll": settings.masquerade_all },
        "ipvs": {
            "scheduler": settings.engine.scheduler.name(),
            "syncPeriod": go_duration(settings.sync_period),
            "minSyncPeriod": go_duration(settings.min_sync_period),
            "strictARP": settings.strict_arp,
            "excludeCIDRs": settings.engine.exclude_cidrs.iter().map(cidr).collect::<Vec<_>>(),
            "tcpTimeout": timeout(settings.ipvs_timeouts.tcp),
            "tcpFinTimeout": timeout(settings.ipvs_timeouts.tcp_fin),
            "udpTimeout": timeout(settings.ipvs_timeouts.udp),
        },
        "conntrack": {
            "maxPerCore": conntrack.max_per_core,
            "min": conntrack.min,
            "tcpEstablishedTimeout": optional(conntrack.tcp_established_timeout),
            "tcpCloseWaitTimeout": optional(conntrack.tcp_close_wait_timeout),
            "tcpBeLiberal": conntrack.tcp_be_liberal.unwrap_or(false),
            "udpTimeout": optional(conntrack.udp_timeout),
            "udpStreamTimeout": optional(conntrack.udp_stream_timeout),
        },
    });
    json!({ "kubeproxy.config.k8s.io": config }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_as_go_does() {
        let d = Duration::from_secs;
        assert_eq!(go_duration(d(30)), "30s");
        assert_eq!(go_duration(d(90)), "1m30s");
        assert_eq!(go_duration(d(86_400)), "24h0m0s");
        assert_eq!(go_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn configz_is_the_effective_configuration_under_kube_proxys_key() {
        let settings = ProxySettings {
            sync_period: Duration::from_secs(45),
            strict_arp: true,
            ..ProxySettings::default()
        };
        let body: Value = serde_json::from_str(&configz(&settings)).unwrap();
        let config = &body["kubeproxy.config.k8s.io"];
        assert_eq!(config["mode"], "ipvs");
        assert_eq!(config["kind"], "KubeProxyConfiguration");
        assert_eq!(config["ipvs"]["syncPeriod"], "45s");
        assert_eq!(config["ipvs"]["minSyncPeriod"], "1s");
        assert_eq!(config["ipvs"]["scheduler"], "rr");
        assert_eq!(config["ipvs"]["strictARP"], true);
        assert_eq!(config["metricsBindAddress"], "127.0.0.1:10249");
        assert_eq!(config["healthzBindAddress"], "0.0.0.0:10256");
    }
}
