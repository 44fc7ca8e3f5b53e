//! A `/metrics` scrape checked against kube-proxy's metric set: the unit tests and the VM test
//! of the running binary hold proxier to the same list.

/// Every series kube-proxy exposes in IPVS mode (`pkg/proxy/metrics` `RegisterMetrics`), with
/// the label each of its samples carries.
pub const KUBE_PROXY_SERIES: &[(&str, &str)] = &[
    (
        "kubeproxy_sync_proxy_rules_duration_seconds_bucket",
        "ip_family",
    ),
    (
        "kubeproxy_sync_proxy_rules_duration_seconds_sum",
        "ip_family",
    ),
    (
        "kubeproxy_sync_proxy_rules_duration_seconds_count",
        "ip_family",
    ),
    (
        "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
        "ip_family",
    ),
    (
        "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
        "ip_family",
    ),
    (
        "kubeproxy_network_programming_duration_seconds_bucket",
        "ip_family",
    ),
    (
        "kubeproxy_network_programming_duration_seconds_sum",
        "ip_family",
    ),
    (
        "kubeproxy_network_programming_duration_seconds_count",
        "ip_family",
    ),
    (
        "kubeproxy_sync_proxy_rules_endpoint_changes_pending",
        "ip_family",
    ),
    (
        "kubeproxy_sync_proxy_rules_endpoint_changes_total",
        "ip_family",
    ),
    (
        "kubeproxy_sync_proxy_rules_service_changes_pending",
        "ip_family",
    ),
    (
        "kubeproxy_sync_proxy_rules_service_changes_total",
        "ip_family",
    ),
    (
        "kubeproxy_sync_proxy_rules_no_local_endpoints_total",
        "ip_family",
    ),
    (
        "kubeproxy_sync_proxy_rules_iptables_restore_failures_total",
        "ip_family",
    ),
    ("kubeproxy_proxy_healthz_total", "code"),
    ("kubeproxy_proxy_livez_total", "code"),
];

/// client_golang's process collector's series (one unlabelled sample each).
pub const PROCESS_SERIES: &[&str] = &[
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "process_start_time_seconds",
];

/// The sample lines of series `name` in a scrape.
pub fn series<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .collect()
}

/// The value of the sample `series` (name and labels exactly as exposed).
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Asserts that every series of [`KUBE_PROXY_SERIES`] is in `text`, each sample with its
/// label, the `ip_family` ones for every family of `families` (`IPv4`, `IPv6`), and every
/// [`PROCESS_SERIES`] once with a value >= 0. Returns the first sample of each, in order.
pub fn assert_kube_proxy_set(text: &str, families: &[&str]) -> Vec<String> {
    let mut first = Vec::new();
    for (name, label) in KUBE_PROXY_SERIES {
        let lines = series(text, name);
        assert!(!lines.is_empty(), "{name} missing:\n{text}");
        for line in &lines {
            assert!(line.contains(&format!("{label}=\"")), "{line}");
        }
        if *label == "ip_family" {
            for family in families {
                let labelled = format!("ip_family=\"{family}\"");
                assert!(
                    lines.iter().any(|l| l.contains(&labelled)),
                    "{name} has no {family} sample"
                );
            }
        }
        first.push(lines[0].to_owned());
    }
    for name in PROCESS_SERIES {
        let lines = series(text, name);
        assert_eq!(lines.len(), 1, "{name}:\n{text}");
        let value = sample(text, name).unwrap_or(-1.0);
        assert!(value >= 0.0, "{name} = {value}");
        first.push(lines[0].to_owned());
    }
    first
}
