//! The `proxier` binary.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use proxier::config::{Config, KubeProxyConfiguration};
use proxier::plan::{NodeContext, Planner};
use proxier::source::{load_cluster, parse_documents, DirectorySource};

/// A kube-proxy IPVS-mode replacement.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the IPVS state this node would get, in `ipvsadm -Ln` format.
    Plan {
        /// A YAML file, or a directory of `.yaml`/`.yml`/`.json` files (Services,
        /// EndpointSlices, Nodes; multi-document and `List` kinds).
        #[arg(short = 'f', long = "filename")]
        path: PathBuf,
        /// The node to plan for (endpoint locality, its Node object's IPs and zone).
        #[arg(long)]
        node: String,
        /// IPs NodePorts open on (repeatable); default: the Node's InternalIPs.
        #[arg(long = "node-ip")]
        node_ips: Vec<IpAddr>,
        /// A KubeProxyConfiguration file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Also print the addresses to bind on the dummy interface.
        #[arg(long)]
        addresses: bool,
    },
    /// Program this node's kernel and keep it in line with the source.
    Run(RunArgs),
    /// Remove exactly what proxier created (IPVS virtual servers, dummy interface, nftables
    /// table) and nothing else.
    Cleanup(CleanupArgs),
}

/// `proxier run`.
#[derive(Debug, clap::Args)]
struct RunArgs {
    /// A directory of YAML (or one file) holding Services, EndpointSlices and Nodes; followed
    /// for changes.
    #[arg(long)]
    source: PathBuf,
    /// This node's name.
    #[arg(long)]
    node: String,
    /// IPs NodePorts open on (repeatable); default: the Node object's InternalIPs.
    #[arg(long = "node-ip")]
    node_ips: Vec<IpAddr>,
    /// A KubeProxyConfiguration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The dummy interface holding virtual IPs.
    #[arg(long, default_value = proxier::dataplane::kernel::DEFAULT_INTERFACE)]
    interface: String,
    /// The cluster (pod) CIDR(s): traffic from outside is masqueraded (repeatable).
    #[arg(long = "cluster-cidr")]
    cluster_cidrs: Vec<String>,
    /// Masquerade all traffic to services.
    #[arg(long)]
    masquerade_all: bool,
    /// Set arp_ignore/arp_announce for load balancers that announce VIPs (ipvs.strictARP).
    #[arg(long)]
    strict_arp: bool,
    /// Least time between syncs (Go duration).
    #[arg(long, default_value = "1s")]
    min_sync_period: String,
    /// Full resync period (Go duration).
    #[arg(long, default_value = "30s")]
    sync_period: String,
}

/// `proxier cleanup`.
#[derive(Debug, clap::Args)]
struct CleanupArgs {
    /// The dummy interface holding virtual IPs.
    #[arg(long, default_value = proxier::dataplane::kernel::DEFAULT_INTERFACE)]
    interface: String,
    /// Node IPs whose NodePort-range virtual servers are proxier's (repeatable).
    #[arg(long = "node-ip")]
    node_ips: Vec<IpAddr>,
}

fn read_config(config: Option<&Path>, command: &str) -> anyhow::Result<Config> {
    let Some(file) = config else {
        return Ok(Config::default());
    };
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let kpc = KubeProxyConfiguration::from_yaml(&text)?;
    for field in kpc.unimplemented_fields() {
        eprintln!("config: {field} is not implemented by proxier {command}; ignored");
    }
    Ok(Config::from_kube_proxy(&kpc)?)
}

fn parse_cidr(text: &str) -> anyhow::Result<(IpAddr, u8)> {
    let (ip, prefix) = text
        .split_once('/')
        .with_context(|| format!("{text:?} is not a CIDR"))?;
    Ok((ip.parse()?, prefix.parse()?))
}

fn duration(text: &str) -> anyhow::Result<std::time::Duration> {
    conntrack_gc::sizing::parse_go_duration(text).map_err(|e| anyhow::anyhow!("{text:?}: {e}"))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    use proxier::dataplane::kernel::{KernelDataplane, PacketSettings};
    use proxier::runtime::{DirectoryWatch, Proxier, SyncTiming};

    let config = read_config(args.config.as_deref(), "run")?;
    let timing = SyncTiming {
        min_sync_period: duration(&args.min_sync_period)?,
        sync_period: duration(&args.sync_period)?,
        ..SyncTiming::default()
    };
    let packet_settings = PacketSettings {
        cluster_cidrs: args
            .cluster_cidrs
            .iter()
            .map(|c| parse_cidr(c))
            .collect::<anyhow::Result<_>>()?,
        masquerade_all: args.masquerade_all,
        ..PacketSettings::default()
    };
    let mut dataplane = KernelDataplane::connect(&args.interface)
        .context("opening the kernel dataplane")?
        .with_packet_settings(packet_settings);
    let root = conntrack_gc::FsRoot::system();
    dataplane.prepare_host(&root, args.strict_arp, netlink_ipvs::Timeouts::default())?;
    match conntrack_gc::apply_sizing(
        &root,
        &conntrack_gc::ConntrackConfig::kube_proxy_defaults(),
        conntrack_gc::sizing::cpu_count(),
    ) {
        Ok(report) => {
            for entry in &report.entries {
                tracing::info!(%entry, "conntrack sizing");
            }
        }
        Err(error) => tracing::warn!(%error, "conntrack sizing skipped"),
    }

    // The Node object (if the source has it) gives the node IPs and zone, as for `plan`.
    let mut probe = DirectorySource::new(&args.source);
    probe.poll()?;
    let (probed, _) = load_cluster(&probe.objects());
    let node_object = probed.node(&args.node);
    let context = NodeContext {
        name: args.node.clone(),
        node_ips: if args.node_ips.is_empty() {
            node_object
                .map(|n| n.internal_ips.clone())
                .unwrap_or_default()
        } else {
            args.node_ips.clone()
        },
        zone: node_object.and_then(|n| n.zone.clone()),
    };
    let mut source = DirectoryWatch::new(DirectorySource::new(&args.source));
    let mut proxier = Proxier::new(Planner::new(context, config), dataplane);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(proxier::runtime::run(
        &mut proxier,
        &mut source,
        timing,
        |kind, outcome| {
            tracing::info!(
                ?kind,
                operations = outcome.operations,
                failed = outcome.failed,
                elapsed_us = outcome.elapsed.as_micros() as u64,
                "synced"
            );
        },
        shutdown_signal(),
    ))?;
    tracing::info!("stopped; kernel state left as it is");
    Ok(())
}

fn cleanup(args: CleanupArgs) -> anyhow::Result<()> {
    let config = Config::default();
    let ownership = proxier::plan::Ownership {
        node_ips: args.node_ips.into_iter().collect(),
        node_port_range: config.node_port_range,
        fwmarks: (config.fwmark_base, proxier::config::FWMARK_COUNT),
    };
    let table = proxier::dataplane::nftables::PacketRules::default().table;
    let report = proxier::dataplane::kernel::cleanup(&args.interface, &table, &ownership)?;
    for key in &report.deleted_services {
        println!("deleted {key}");
    }
    println!(
        "deleted {} virtual servers; left {} foreign ones untouched; nftables table {}: {}; interface {}: {}",
        report.deleted_services.len(),
        report.foreign_services.len(),
        table,
        if report.table_deleted { "deleted" } else { "absent" },
        args.interface,
        if report.interface_deleted { "deleted" } else { "absent" },
    );
    Ok(())
}

fn plan(
    path: &Path,
    node: String,
    node_ips: Vec<IpAddr>,
    config: Option<PathBuf>,
    addresses: bool,
) -> anyhow::Result<()> {
    let config = match config {
        Some(file) => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let kpc = KubeProxyConfiguration::from_yaml(&text)?;
            for field in kpc.unimplemented_fields() {
                eprintln!("config: {field} is not implemented by proxier plan; ignored");
            }
            Config::from_kube_proxy(&kpc)?
        }
        None => Config::default(),
    };
    let mut objects = Vec::new();
    for file in DirectorySource::input_files(path)? {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        let (mut found, problems) = parse_documents(&file.display().to_string(), &text);
        if let Some(problem) = problems.into_iter().next() {
            return Err(problem.into());
        }
        objects.append(&mut found);
    }
    let (mut cluster, rejected) = load_cluster(&objects);
    for reason in &rejected {
        eprintln!("skipped {reason}");
    }
    let node_object = cluster.node(&node);
    if node_object.is_none() {
        eprintln!("no Node {node} in the input: no zone, and NodePorts only on --node-ip");
    }
    let context = NodeContext {
        node_ips: if node_ips.is_empty() {
            node_object
                .map(|n| n.internal_ips.clone())
                .unwrap_or_default()
        } else {
            node_ips
        },
        zone: node_object.and_then(|n| n.zone.clone()),
        name: node,
    };
    let mut planner = Planner::new(context, config);
    planner.plan_all(&mut cluster);
    for conflict in planner.conflicts() {
        eprintln!(
            "skipped {} for {}: already used by {}",
            conflict.key, conflict.refused, conflict.holder
        );
    }
    let desired = planner.desired();
    print!("{}", proxier::ipvsadm::listing(&desired.to_ipvs_state()));
    if addresses {
        println!();
        println!("Addresses to bind:");
        for ip in desired.addresses.keys() {
            println!("{ip}");
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PROXIER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Plan {
            path,
            node,
            node_ips,
            config,
            addresses,
        } => plan(&path, node, node_ips, config, addresses),
        Command::Run(args) => run(args),
        Command::Cleanup(args) => cleanup(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("proxier: {e:#}");
            ExitCode::FAILURE
        }
    }
}
