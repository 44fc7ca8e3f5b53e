use super::*;

#[test]
fn reads_kube_proxy_configuration_and_lists_unimplemented_fields() {
    let yaml = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n\
                mode: ipvs\nipvs:\n  scheduler: mh\nnodePortAddresses: [\"10.0.0.0/8\"]\n\
                oomScoreAdj: -999\nportRange: \"\"\nshowHiddenMetricsForVersion: \"1.30\"\n";
    let kpc = KubeProxyConfiguration::from_yaml(yaml).unwrap();
    // oomScoreAdj is implemented (written to /proc/self/oom_score_adj).
    assert_eq!(kpc.oom_score_adj, Some(-999));
    assert_eq!(
        kpc.unimplemented_fields(),
        vec!["showHiddenMetricsForVersion"]
    );
    let config = Config::from_kube_proxy(&kpc).unwrap();
    assert_eq!(config.scheduler, "mh");
    let ips: Vec<IpAddr> = vec!["10.1.2.3".parse().unwrap(), "192.168.0.1".parse().unwrap()];
    assert_eq!(
        crate::plan::node_port_ips(&config.node_port_addresses, &ips, &ips),
        vec![ips[0]]
    );
}

#[test]
fn an_unknown_scheduler_is_rejected_naming_the_valid_ones() {
    let yaml = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n\
                ipvs:\n  scheduler: wrrr\n";
    let kpc = KubeProxyConfiguration::from_yaml(yaml).unwrap();
    let error = Config::from_kube_proxy(&kpc).unwrap_err().to_string();
    assert!(error.contains("ipvs.scheduler"), "{error}");
    assert!(error.contains("\"wrrr\""), "{error}");
    assert!(error.contains("rr, wrr, lc, wlc"), "{error}");
    assert!(error.contains("mh, twos"), "{error}");
}

#[test]
fn cidr_matching_and_parse_errors() {
    let v6 = NodePortAddress::parse("fd00::/64").unwrap();
    assert!(v6.contains("fd00::5".parse().unwrap()));
    assert!(!v6.contains("fd01::5".parse().unwrap()));
    assert!(!v6.contains("10.0.0.1".parse().unwrap()));
    let all = NodePortAddress::parse("0.0.0.0/0").unwrap();
    assert!(all.contains("1.2.3.4".parse().unwrap()));
    assert!(NodePortAddress::parse("10.0.0.0/33").is_err());
    assert!(NodePortAddress::parse("ten/8").is_err());
    assert_eq!(
        NodePortAddress::parse("primary").unwrap(),
        NodePortAddress::Primary
    );
}

mod settings {
    use std::net::SocketAddr;
    use std::time::Duration;

    use super::super::{ConfigWarning, ProxySettings};
    use super::*;

    const KUBEADM_CONFIGMAP: &str = include_str!("testdata/kubeadm-kube-proxy.yaml");

    fn config_conf() -> String {
        let map: serde_json::Value = serde_saphyr::from_str(KUBEADM_CONFIGMAP).unwrap();
        map["data"]["config.conf"].as_str().unwrap().to_owned()
    }

    fn resolve(yaml: &str) -> Result<(ProxySettings, Vec<ConfigWarning>), Error> {
        ProxySettings::resolve(&KubeProxyConfiguration::from_yaml(yaml)?)
    }

    #[test]
    fn kubeadm_configmap_resolves_to_kube_proxy_defaults_without_warnings() {
        let (settings, warnings) = resolve(&config_conf()).unwrap();
        assert_eq!(warnings, vec![], "kubeadm's zero values are not 'set'");
        assert_eq!(
            settings.healthz_bind_address,
            "0.0.0.0:10256".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            settings.metrics_bind_address,
            "127.0.0.1:10249".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            settings.cluster_cidrs,
            vec![("10.244.0.0".parse().unwrap(), 16)]
        );
        assert_eq!(settings.bind_address, None, "0.0.0.0 is not a node IP");
        assert_eq!(settings.hostname_override, None);
        assert!(!settings.masquerade_all && !settings.strict_arp);
        assert_eq!(settings.sync_period, Duration::from_secs(30));
        assert_eq!(settings.min_sync_period, Duration::from_secs(1));
        assert_eq!(settings.engine, Config::default());
        assert_eq!(settings.ipvs_timeouts, netlink_ipvs::Timeouts::default());
        assert_eq!(
            settings.kubeconfig.as_deref(),
            Some(std::path::Path::new("/var/lib/kube-proxy/kubeconfig.conf"))
        );
        // null limits take kube-proxy's defaults (only ever raised); null timeouts are not
        // written at all (I7: kube-proxy's defaulted 1 h close-wait timeout filled a table).
        let wanted = conntrack_gc::sizing::wanted_values(&settings.conntrack, 4);
        assert_eq!(wanted.get(&conntrack_gc::Knob::Max), Some(&131_072));
        assert_eq!(wanted.get(&conntrack_gc::Knob::TcpEstablishedTimeout), None);
        assert_eq!(wanted.get(&conntrack_gc::Knob::TcpCloseWaitTimeout), None);
        assert_eq!(wanted.get(&conntrack_gc::Knob::UdpTimeout), None);
    }

    #[test]
    fn implemented_fields_table() {
        type Check = fn(&ProxySettings) -> bool;
        let cases: &[(&str, Check)] = &[
            ("bindAddress: 10.0.0.5", |s| {
                s.bind_address == Some("10.0.0.5".parse().unwrap())
            }),
            ("healthzBindAddress: 127.0.0.1:9999", |s| {
                s.healthz_bind_address.port() == 9999
            }),
            ("healthzBindAddress: '::'", |s| {
                s.healthz_bind_address == "[::]:10256".parse().unwrap()
            }),
            ("metricsBindAddress: 0.0.0.0:10249", |s| {
                s.metrics_bind_address == "0.0.0.0:10249".parse().unwrap()
            }),
            ("clusterCIDR: 10.244.0.0/16,fd00:10:244::/56", |s| {
                s.cluster_cidrs
                    == vec![
                        ("10.244.0.0".parse().unwrap(), 16),
                        ("fd00:10:244::".parse().unwrap(), 56),
                    ]
            }),
            ("hostnameOverride: node-a", |s| {
                s.hostname_override.as_deref() == Some("node-a")
            }),
            ("mode: ''", |s| s.engine.scheduler == "rr"),
            ("nodePortAddresses: [primary]", |s| {
                s.engine.node_port_addresses == vec![NodePortAddress::Primary]
            }),
            ("iptables: {masqueradeAll: true}", |s| s.masquerade_all),
            ("masqueradeAll: true", |s| s.masquerade_all),
            ("ipvs: {scheduler: wrr}", |s| s.engine.scheduler == "wrr"),
            ("ipvs: {syncPeriod: 1m0s, minSyncPeriod: 250ms}", |s| {
                s.sync_period == Duration::from_secs(60)
                    && s.min_sync_period == Duration::from_millis(250)
            }),
            ("syncPeriod: 45s\nminSyncPeriod: 2s", |s| {
                s.sync_period == Duration::from_secs(45)
                    && s.min_sync_period == Duration::from_secs(2)
            }),
            ("ipvs: {strictARP: true}", |s| s.strict_arp),
            (
                "ipvs: {tcpTimeout: 15m0s, tcpFinTimeout: 2m, udpTimeout: 30s}",
                |s| {
                    s.ipvs_timeouts
                        == netlink_ipvs::Timeouts {
                            tcp: 900,
                            tcp_fin: 120,
                            udp: 30,
                        }
                },
            ),
            ("conntrack: {maxPerCore: 0, min: 0}", |s| {
                s.conntrack.max_per_core == Some(0)
            }),
            (
                "conntrack: {maxPerCore: 65536, udpTimeout: 30s, allowLowering: true}",
                |s| {
                    s.conntrack.max_per_core == Some(65536)
                        && s.conntrack.min == Some(131_072)
                        && s.conntrack.udp_timeout == Some(Duration::from_secs(30))
                        && s.conntrack.allow_lowering
                },
            ),
            (
                "detectLocalMode: ClusterCIDR\nclusterCIDR: 10.0.0.0/8",
                |s| s.cluster_cidrs.len() == 1,
            ),
            ("logging: {verbosity: 4}", |s| s.verbosity == Some(4)),
            ("logging: {format: json}", |s| {
                s.log_format == LogFormat::Json
            }),
            ("oomScoreAdj: -999", |s| s.oom_score_adj == Some(-999)),
        ];
        for (yaml, check) in cases {
            let (settings, _) = resolve(yaml).unwrap_or_else(|e| panic!("{yaml}: {e}"));
            assert!(check(&settings), "{yaml}: {settings:#?}");
        }
    }

    #[test]
    fn unimplemented_fields_warn_once_each_and_never_fail() {
        let yaml = "clusterCIDR: 10.0.0.0/8\nfeatureGates: {SomeGate: true}\n\
                    ipvs: {excludeCIDRs: [10.1.0.0/16], futureKnob: 3}\n\
                    iptables: {masqueradeBit: 14, syncPeriod: 30s}\n\
                    detectLocalMode: NodeCIDR\nconntrack: {max: 5}\noomScoreAdj: -999\n\
                    clientConnection: {qps: 5}\nsomethingNew: x\nwinkernel: {enableDSR: false}\n";
        let (_, warnings) = resolve(yaml).unwrap();
        let mut fields: Vec<&str> = warnings.iter().map(|w| w.field.as_str()).collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            vec![
                "clientConnection.qps",
                "conntrack.max",
                "detectLocalMode",
                "featureGates",
                "iptables.masqueradeBit",
                "iptables.syncPeriod",
                "ipvs.futureKnob",
                "somethingNew",
            ]
        );
    }

    #[test]
    fn a_zero_sync_period_is_refused_by_the_check() {
        let (mut settings, _) = resolve("clusterCIDR: 10.0.0.0/8").unwrap();
        assert!(settings.check().is_ok());
        settings.sync_period = std::time::Duration::ZERO;
        let error = settings.check().unwrap_err().to_string();
        assert!(
            error.contains("syncPeriod") && error.contains("greater than 0"),
            "{error}"
        );
    }

    #[test]
    fn bad_input_is_a_clear_error_naming_the_field() {
        let cases = [
            ("mode: iptables", "mode", "IPVS mode only"),
            ("mode: nftables", "mode", "IPVS mode only"),
            ("logging: {format: xml}", "logging.format", "text and json"),
            ("oomScoreAdj: 1001", "oomScoreAdj", "-1000..=1000"),
            ("clusterCIDR: 10.0.0.0", "clusterCIDR", "not a CIDR"),
            ("clusterCIDR: 10.0.0.0/40", "clusterCIDR", "prefix too long"),
            (
                "healthzBindAddress: here:10256",
                "healthzBindAddress",
                "ip:port",
            ),
            ("bindAddress: somewhere", "bindAddress", "not an IP"),
            ("ipvs: {syncPeriod: soon}", "ipvs.syncPeriod", "soon"),
            ("ipvs: {tcpTimeout: -5s}", "ipvs.tcpTimeout", "-5s"),
            ("conntrack: {udpTimeout: banana}", "conntrack", "banana"),
            ("nodePortAddresses: [lan]", "nodePortAddresses", "lan"),
            ("kind: KubeletConfiguration", "kind", "KubeletConfiguration"),
            ("apiVersion: v1", "apiVersion", "v1"),
        ];
        // Issue 12 item 9: an unknown scheduler is found here, not by the kernel. (A zero
        // syncPeriod in the file is Go's zero value, defaulted to 30 s as kube-proxy does; the
        // `--sync-period 0s` flag is refused by `ProxySettings::check`.)
        let cases = cases.into_iter().chain([(
            "ipvs: {scheduler: fancy}",
            "ipvs.scheduler",
            "not an IPVS scheduler",
        )]);
        for (yaml, field, detail) in cases {
            let error = resolve(yaml).expect_err(yaml).to_string();
            assert!(
                error.contains(field) && error.contains(detail),
                "{yaml}: {error}"
            );
        }
        let Err(Error::Yaml { .. }) = KubeProxyConfiguration::from_yaml("ipvs: [unclosed") else {
            panic!("broken YAML accepted");
        };
        let Err(Error::Yaml { .. }) = KubeProxyConfiguration::from_yaml("ipvs: {strictARP: 7}")
        else {
            panic!("a number for a boolean accepted");
        };
    }
}
