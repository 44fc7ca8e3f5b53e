use std::time::Duration;

use clap::Parser;
use proxier::config::{KubeProxyConfiguration, LogFormat, NodePortAddress, ProxySettings};
use proxier_test_support::kube_proxy::{flag_line, UNIMPLEMENTED_IN_FLAG_LINE};

use super::*;

/// kube-proxy's command line alone, as the binary sees it without a subcommand.
#[derive(Debug, Parser)]
struct Line {
    #[command(flatten)]
    flags: KubeProxyFlags,
}

fn parse(args: &[&str]) -> KubeProxyFlags {
    let argv = std::iter::once("kube-proxy").chain(args.iter().copied());
    match Line::try_parse_from(argv) {
        Ok(line) => line.flags,
        Err(error) => panic!("{args:?}: {error}"),
    }
}

/// Flags → configuration → settings, as `resolve` in main.rs does without `--config`.
fn settings(flags: &KubeProxyFlags) -> Result<ProxySettings, proxier::Error> {
    let (mut settings, _) = ProxySettings::resolve(&flags.configuration())?;
    flags.overlay(&mut settings)?;
    settings.check()?;
    Ok(settings)
}

#[test]
fn the_complete_gce_style_line_is_accepted_and_warns_once_per_unimplemented_flag() {
    let line = flag_line("/var/lib/kube-proxy/kubeconfig", "https://10.0.0.1");
    let args: Vec<&str> = line.iter().map(String::as_str).collect();
    let flags = parse(&args);
    let given = flags.given();
    let warned: Vec<&str> = flags.warnings().iter().map(|w| w.flag).collect();
    println!(
        "{} flags given, {} accepted, {} warned: {warned:?}",
        args.len(),
        given.len(),
        warned.len()
    );
    assert_eq!(given.len(), args.len(), "every flag given is recognised");
    assert_eq!(warned, UNIMPLEMENTED_IN_FLAG_LINE);
    let settings = settings(&flags).unwrap();
    assert_eq!(settings.hostname_override.as_deref(), Some("node-a"));
    assert_eq!(settings.log_format, LogFormat::Json);
    assert_eq!(settings.verbosity, Some(2));
    assert_eq!(settings.oom_score_adj, Some(-999));
    assert_eq!(settings.min_sync_period, Duration::from_millis(100));
    assert_eq!(
        settings.cluster_cidrs,
        vec![("10.244.0.0".parse().unwrap(), 16)]
    );
    assert_eq!(
        settings.engine.exclude_cidrs,
        vec![("10.255.0.0".parse().unwrap(), 16)]
    );
    assert_eq!(
        settings.engine.node_port_addresses,
        vec![NodePortAddress::parse("10.0.0.0/8").unwrap()]
    );
    assert!(settings.strict_arp);
    assert_eq!(
        (
            settings.ipvs_timeouts.tcp,
            settings.ipvs_timeouts.tcp_fin,
            settings.ipvs_timeouts.udp
        ),
        (900, 120, 300)
    );
    assert_eq!(settings.conntrack.max_per_core, Some(0));
    assert_eq!(settings.conntrack.min, Some(131_072));
    assert_eq!(
        settings.kubeconfig.as_deref(),
        Some(std::path::Path::new("/var/lib/kube-proxy/kubeconfig"))
    );
}

#[test]
fn flags_at_kube_proxy_defaults_do_not_warn() {
    let flags = parse(&[
        "--profiling=false",
        "--kube-api-qps=5",
        "--kube-api-burst=10",
        "--iptables-masquerade-bit=14",
        "--iptables-localhost-nodeports",
        "--config-sync-period=15m",
        "--log-flush-frequency=5s",
        "--vmodule=",
    ]);
    assert_eq!(flags.warnings(), Vec::new());
}

#[test]
fn implemented_flags_set_what_the_file_would() {
    let flags = parse(&[
        "--ipvs-scheduler=wrr",
        "--ipvs-sync-period=1m",
        "--masquerade-all",
        "--cluster-cidr=10.244.0.0/16,fd00:10:244::/56",
        "--healthz-port=10266",
        "--metrics-bind-address=0.0.0.0",
        "--metrics-port=10259",
        "--conntrack-tcp-timeout-close-wait=1h",
        "--conntrack-tcp-be-liberal",
        "--hostname-override= Node-A ",
        "-v",
        "5",
    ]);
    let settings = settings(&flags).unwrap();
    assert_eq!(settings.engine.scheduler.name(), "wrr");
    assert_eq!(settings.sync_period, Duration::from_secs(60));
    assert!(settings.masquerade_all);
    assert_eq!(settings.cluster_cidrs.len(), 2);
    assert_eq!(settings.healthz_bind_address.to_string(), "0.0.0.0:10266");
    assert_eq!(settings.metrics_bind_address.to_string(), "0.0.0.0:10259");
    assert_eq!(
        settings.conntrack.tcp_close_wait_timeout,
        Some(Duration::from_secs(3600))
    );
    assert_eq!(settings.conntrack.tcp_be_liberal, Some(true));
    assert_eq!(settings.hostname_override.as_deref(), Some("node-a"));
    assert_eq!(settings.verbosity, Some(5));
}

#[test]
fn with_config_the_file_wins_except_logging_hostname_and_master() {
    let flags = parse(&[
        "--config=/etc/kube-proxy/config.conf",
        "--ipvs-scheduler=wrr",
        "--kubeconfig=/k",
        "--profiling",
        "--hostname-override=node-b",
        "--v=4",
        "--logging-format=json",
        "--master=https://api",
    ]);
    let warnings = flags.warnings();
    let warned: Vec<&str> = warnings.iter().map(|w| w.flag).collect();
    assert_eq!(warned, ["kubeconfig", "profiling", "ipvs-scheduler"]);
    assert!(warnings[0]
        .to_string()
        .contains("set clientConnection.kubeconfig in the file"));
    // What the file says stays; the logging flags and the node's name act.
    let mut file = ProxySettings::default();
    flags.overlay(&mut file).unwrap();
    assert_eq!(file.engine.scheduler.name(), "rr");
    assert_eq!(file.kubeconfig, None);
    assert_eq!(
        (
            file.verbosity,
            file.log_format,
            file.hostname_override.as_deref()
        ),
        (Some(4), LogFormat::Json, Some("node-b"))
    );
}

#[test]
fn what_kube_proxy_refuses_is_refused() {
    for (args, needle) in [
        (&["--proxy-mode=iptables"][..], "IPVS mode only"),
        (&["--ipvs-scheduler=fancy"][..], "not an IPVS scheduler"),
        (
            &["--healthz-bind-address=somewhere"][..],
            "healthzBindAddress",
        ),
        (&["--ipvs-sync-period=0s"][..], "greater than 0"),
        (&["--hostname-override=  "][..], "empty hostname-override"),
    ] {
        let error = settings(&parse(args)).expect_err(args[0]);
        assert!(error.to_string().contains(needle), "{args:?}: {error}");
    }
    for args in [
        &["--oom-score-adj=-1001"][..],
        &["--ipvs-sync-period=30x"][..],
        &["--feature-gates=Foo"][..],
        &["--logging-format=xml"][..],
        &["--profiling", "false"][..],
    ] {
        let argv = std::iter::once("kube-proxy").chain(args.iter().copied());
        assert!(Line::try_parse_from(argv).is_err(), "{args:?}");
    }
}

#[test]
fn the_written_configuration_reads_back_to_the_same_settings() {
    let line = flag_line("/var/lib/kube-proxy/kubeconfig", "https://10.0.0.1");
    let args: Vec<&str> = line.iter().map(String::as_str).collect();
    let original = settings(&parse(&args)).unwrap();
    let text = render_configuration(&original);
    let kpc = KubeProxyConfiguration::from_yaml(&text).unwrap();
    let (read_back, warnings) = ProxySettings::resolve(&kpc).unwrap();
    assert_eq!(read_back, original, "{text}");
    assert_eq!(warnings, Vec::new(), "{text}");
}
