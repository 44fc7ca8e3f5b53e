//! The `proxier` binary.
//!
//! Without a subcommand it is kube-proxy: it takes kube-proxy's whole command line
//! ([`kube_proxy_flags`]) and runs the proxy against the API server, so kube-proxy's DaemonSet
//! runs it unchanged. The subcommands (`run`, `plan`, `cleanup`, `version`) are proxier's own.

mod heap;
mod kube_proxy_flags;
mod logging;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use kube_proxy_flags::{FlagWarning, KubeProxyFlags};
use proxier::config::{Config, ConfigWarning, KubeProxyConfiguration, ProxySettings};
use proxier::plan::{NodeContext, Planner};
use proxier::source::{load_cluster, parse_documents, DirectorySource};

/// A kube-proxy IPVS-mode replacement.
#[derive(Debug, Parser)]
#[command(
    version,
    about,
    long_about = "A kube-proxy IPVS-mode replacement.\n\n\
        Without a subcommand, proxier runs the proxy as kube-proxy does: it takes kube-proxy's \
        flags (listed below; --config makes the file the configuration, as in kube-proxy) and \
        programs this node from the API server. The subcommands are proxier's own.",
    after_long_help = "Environment:\n  \
        PROXIER_LOG        a tracing filter (e.g. `info,proxier=debug`) that overrides --v\n  \
        PROXIER_HOST_ROOT  where the host's /proc/sys and /sys are mounted (default /)\n  \
        NO_COLOR           any non-empty value: no colours in text logs",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    kube_proxy: KubeProxyFlags,
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
        /// Read this node's kernel (as `run` does at start) and print what `run` would change
        /// at takeover instead of the whole plan: the operations, and the foreign virtual
        /// servers it would keep. Nothing is applied.
        #[arg(long, conflicts_with = "addresses")]
        diff: bool,
        /// The dummy interface holding virtual IPs (with --diff).
        #[arg(long, default_value = proxier::dataplane::kernel::DEFAULT_INTERFACE, value_parser = interface_name)]
        interface: String,
    },
    /// Program this node's kernel and keep it in line with the API server (or `--source`).
    Run(RunArgs),
    /// Remove exactly what proxier created (IPVS virtual servers, dummy interface, nftables
    /// table) and nothing else.
    Cleanup(CleanupArgs),
    /// Print the version.
    Version,
}

/// `proxier run`. Flags given here override the configuration file.
#[derive(Debug, Default, clap::Args)]
struct RunArgs {
    /// A directory of YAML (or one file) holding Services, EndpointSlices and Nodes, followed
    /// for changes, instead of the API server.
    #[arg(long)]
    source: Option<PathBuf>,
    /// This node's name (default: hostnameOverride, then the hostname).
    #[arg(long, alias = "hostname-override")]
    node: Option<String>,
    /// IPs NodePorts open on (repeatable), instead of the local addresses `nodePortAddresses`
    /// selects (kube-proxy's rule, followed as addresses come and go).
    #[arg(long = "node-ip")]
    node_ips: Vec<IpAddr>,
    /// A KubeProxyConfiguration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The dummy interface holding virtual IPs.
    #[arg(long, default_value = proxier::dataplane::kernel::DEFAULT_INTERFACE, value_parser = interface_name)]
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
    /// Least time between syncs (Go duration; default 1s).
    #[arg(long)]
    min_sync_period: Option<String>,
    /// Full resync period (Go duration; default 30s).
    #[arg(long)]
    sync_period: Option<String>,
    /// How long a TCP real server whose endpoint left its slice while alive (selector switch,
    /// relabel) drains at weight 0 at most (Go duration; default 15m).
    #[arg(long)]
    drain_bound: Option<String>,
    /// A kubeconfig file (default: clientConnection.kubeconfig, then in-cluster).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The API server's URL (overrides the kubeconfig's).
    #[arg(long)]
    master: Option<String>,
    /// Keep kube-proxy's leftover iptables chains, the rules jumping to them and its ipsets
    /// (by default they are removed once proxier's own table is in place).
    #[arg(long)]
    keep_kube_proxy_rules: bool,
}

/// `proxier cleanup`.
#[derive(Debug, clap::Args)]
struct CleanupArgs {
    /// The dummy interface holding virtual IPs.
    #[arg(long, default_value = proxier::dataplane::kernel::DEFAULT_INTERFACE, value_parser = interface_name)]
    interface: String,
    /// Node IPs whose NodePort-range virtual servers may be proxier's (repeatable; see
    /// `proxier::plan::Ownership` for the rule); default: every local address.
    #[arg(long = "node-ip")]
    node_ips: Vec<IpAddr>,
    /// `ipvs.excludeCIDRs`: virtual servers on these addresses are never touched (repeatable).
    #[arg(long = "exclude-cidr")]
    exclude_cidrs: Vec<String>,
}

/// Settings resolved from the command line, with the warnings to log once.
#[derive(Debug, Default)]
struct Resolved {
    settings: ProxySettings,
    config_warnings: Vec<ConfigWarning>,
    flag_warnings: Vec<FlagWarning>,
}

/// Reads and resolves a configuration file (defaults without one).
fn load_settings(file: Option<&Path>) -> anyhow::Result<Resolved> {
    let Some(file) = file else {
        return Ok(Resolved::default());
    };
    let text = proxier::yaml::read_file(file)?;
    let kpc = KubeProxyConfiguration::from_yaml(&text)
        .with_context(|| format!("reading {}", file.display()))?;
    let (settings, config_warnings) =
        ProxySettings::resolve(&kpc).with_context(|| format!("in {}", file.display()))?;
    Ok(Resolved {
        settings,
        config_warnings,
        flag_warnings: Vec::new(),
    })
}

/// The one path from a command line to settings: `run`, `plan` and the kube-proxy role read
/// and check their configuration here, alike (what `run` refuses, `plan` refuses).
fn resolve(cli: &Cli) -> anyhow::Result<Resolved> {
    let resolved = match &cli.command {
        None => {
            let flags = &cli.kube_proxy;
            let mut resolved = match &flags.config {
                Some(file) => load_settings(Some(file))?,
                None => {
                    let (settings, config_warnings) =
                        ProxySettings::resolve(&flags.configuration())
                            .context("the configuration made of kube-proxy's flags")?;
                    Resolved {
                        settings,
                        config_warnings,
                        flag_warnings: Vec::new(),
                    }
                }
            };
            flags.overlay(&mut resolved.settings)?;
            resolved.flag_warnings = flags.warnings();
            resolved
        }
        Some(Command::Run(args)) => {
            let mut resolved = load_settings(args.config.as_deref())?;
            apply_run_flags(&mut resolved.settings, args)?;
            resolved
        }
        Some(Command::Plan { config, .. }) => load_settings(config.as_deref())?,
        Some(Command::Cleanup(_) | Command::Version) => Resolved::default(),
    };
    resolved.settings.check()?;
    Ok(resolved)
}

fn duration(text: &str) -> anyhow::Result<Duration> {
    conntrack_gc::sizing::parse_go_duration(text).map_err(|e| anyhow::anyhow!("{text:?}: {e}"))
}

/// The node's name: the one given, else the hostname lower-cased as kube-proxy does.
fn node_name(given: Option<String>) -> anyhow::Result<String> {
    if let Some(name) = given {
        return Ok(name);
    }
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .context("reading the hostname (set --hostname-override)")?;
    Ok(name.trim().to_lowercase())
}

/// Where the host's `/proc/sys` and `/sys` are: unprivileged containers see their own
/// read-only, so the DaemonSet mounts the host's under `PROXIER_HOST_ROOT`.
fn host_root() -> conntrack_gc::FsRoot {
    match std::env::var_os("PROXIER_HOST_ROOT") {
        Some(dir) if !dir.is_empty() => conntrack_gc::FsRoot::new(PathBuf::from(dir)),
        _ => conntrack_gc::FsRoot::system(),
    }
}

/// The machine's CPU count for conntrack sizing. Read from this process's own `/sys`, not
/// `PROXIER_HOST_ROOT`: sysfs's `devices/system/cpu/online` is the machine's in a container
/// too, and the DaemonSet mounts only the files proxier writes under the host root.
fn machine_cpus() -> u32 {
    conntrack_gc::sizing::cpu_count(&conntrack_gc::FsRoot::system())
}

/// Writes the process's `oom_score_adj` (`--oom-score-adj`, `oomScoreAdj`); a failure (no
/// CAP_SYS_RESOURCE to lower it) is a warning, as in kube-proxy.
fn set_oom_score_adj(value: i32) {
    match std::fs::write("/proc/self/oom_score_adj", value.to_string()) {
        Ok(()) => tracing::info!(value, "oom_score_adj set"),
        Err(error) => tracing::warn!(value, %error, "oom_score_adj not set"),
    }
}

/// `--init-only`: the host settings that need privileges (conntrack sizing, the sysctls IPVS
/// mode needs, IPVS timeouts), then exit.
fn init_node(settings: &ProxySettings) -> anyhow::Result<()> {
    use proxier::dataplane::kernel::{KernelDataplane, DEFAULT_INTERFACE};
    // The kernel first (as `run`): without IPVS nothing else is written.
    let mut dataplane =
        KernelDataplane::connect(DEFAULT_INTERFACE).context("opening the kernel dataplane")?;
    let root = host_root();
    match conntrack_gc::apply_sizing(&root, &settings.conntrack, machine_cpus()) {
        Ok(report) => {
            for entry in &report.entries {
                tracing::info!(%entry, "conntrack sizing");
            }
        }
        Err(error) => tracing::warn!(%error, "conntrack sizing skipped"),
    }
    dataplane.prepare_host(&root, settings.strict_arp, settings.ipvs_timeouts)?;
    tracing::info!("host initialised (--init-only)");
    Ok(())
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

/// Applies `run`'s flags over the configuration file's settings.
fn apply_run_flags(settings: &mut ProxySettings, args: &RunArgs) -> anyhow::Result<()> {
    if !args.cluster_cidrs.is_empty() {
        settings.cluster_cidrs = args
            .cluster_cidrs
            .iter()
            .map(|c| proxier::config::parse_cidr(c, "--cluster-cidr"))
            .collect::<Result<_, _>>()?;
    }
    settings.masquerade_all |= args.masquerade_all;
    settings.strict_arp |= args.strict_arp;
    if let Some(text) = &args.min_sync_period {
        settings.min_sync_period = duration(text)?;
    }
    if let Some(text) = &args.drain_bound {
        settings.drain_bound = duration(text)?;
    }
    if let Some(text) = &args.sync_period {
        settings.sync_period = duration(text)?;
    }
    if args.kubeconfig.is_some() {
        settings.kubeconfig.clone_from(&args.kubeconfig);
    }
    Ok(())
}

/// A network interface name the kernel can take: 1 to 15 bytes (IFNAMSIZ - 1), no `/`, no
/// whitespace, not `.` or `..` (checked before any netlink request is built).
fn interface_name(text: &str) -> Result<String, String> {
    let fine = (1..=15).contains(&text.len())
        && text != "."
        && text != ".."
        && !text.contains('/')
        && !text.contains(char::is_whitespace)
        && !text.contains(':');
    if fine {
        Ok(text.to_owned())
    } else {
        let shown: String = text.chars().take(20).collect();
        Err(format!(
            "{shown:?}{}: not an interface name (1-15 bytes, no '/', ':' or whitespace)",
            if text.chars().count() > 20 { "…" } else { "" }
        ))
    }
}

async fn kube_client(
    kubeconfig: Option<&Path>,
    master: Option<&str>,
) -> anyhow::Result<kube::Client> {
    let mut config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("using kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("no kubeconfig given and no in-cluster service account")?,
    };
    if let Some(master) = master {
        config.cluster_url = master
            .parse()
            .with_context(|| format!("--master {master:?}"))?;
    }
    kube::Client::try_from(config).context("creating the API client")
}

/// Where `run` gets cluster objects from.
enum Origin {
    Directory(PathBuf),
    Api {
        kubeconfig: Option<PathBuf>,
        master: Option<String>,
    },
}

async fn run(
    settings: ProxySettings,
    node: String,
    node_ips: Vec<IpAddr>,
    interface: String,
    origin: Origin,
    remove_leftovers: bool,
) -> anyhow::Result<()> {
    use proxier::dataplane::kernel::KernelDataplane;
    use proxier::observability::{EventPublisher, Metrics, Observer};
    use proxier::plan::PacketSettings;
    use proxier::runtime::{Proxier, SyncKind, SyncTiming};
    use proxier::source::{DirectoryWatch, Source as _};

    let timing = SyncTiming {
        min_sync_period: settings.min_sync_period,
        sync_period: settings.sync_period,
        ..SyncTiming::default()
    };
    // The source is read (once) before the kernel is touched: a missing directory is the
    // error to report, not whatever the kernel says next; the Node is known before the first
    // plan.
    let mut cluster = proxier::model::ClusterState::new();
    let directory = match &origin {
        Origin::Directory(path) => {
            let mut source = DirectoryWatch::new(DirectorySource::new(path));
            let first = source.poll_changes(&mut cluster)?;
            for skipped in &first.skipped {
                tracing::warn!(%skipped, "object skipped");
            }
            Some((source, first))
        }
        Origin::Api { .. } => None,
    };
    if let Some(value) = settings.oom_score_adj {
        set_oom_score_adj(value);
    }
    let mut dataplane =
        KernelDataplane::connect(&interface).context("opening the kernel dataplane")?;
    // As kube-proxy: NodePorts open on the local addresses `nodePortAddresses` selects, as
    // they come and go; `--node-ip` pins them to the given IPs instead.
    if node_ips.is_empty() {
        dataplane
            .follow_node_addresses()
            .context("following the node's addresses")?;
    }
    let metrics = Metrics::new().with_kernel_counters(dataplane.counters());
    let client = match &origin {
        Origin::Api { kubeconfig, master } => {
            Some(kube_client(kubeconfig.as_deref(), master.as_deref()).await?)
        }
        Origin::Directory(_) => None,
    };
    let events = match &client {
        Some(client) => EventPublisher::start(client.clone(), &node),
        None => EventPublisher::disabled(),
    };
    let observer = Observer::new(metrics, settings.sync_period, events);
    observer.spawn_health_server(settings.healthz_bind_address);
    observer.spawn_metrics_server(
        settings.metrics_bind_address,
        proxier::observability::configz::configz(&settings),
    );
    // Unhealthy if the first sync does not come within 2 × syncPeriod (API unreachable).
    observer.health.queued(std::time::Instant::now());

    let (node_object, api_source) = match (&origin, client) {
        (Origin::Directory(_), _) => (cluster.node(&node).cloned(), None),
        (Origin::Api { .. }, Some(client)) => {
            let mut source = proxier::source::kube::KubeSource::start(client, &node);
            tokio::select! {
                synced = source.wait_until_synced(&mut cluster, Duration::from_secs(10)) => {
                    observer.record_poll(&synced?);
                }
                () = shutdown_signal() => return Ok(()),
            }
            tracing::info!("services, endpoint slices and node synced");
            (source.local_node().cloned(), Some(source))
        }
        (Origin::Api { .. }, None) => anyhow::bail!("no API client"),
    };
    if node_object.is_none() {
        tracing::warn!(%node, "no Node object: no zone, and `nodePortAddresses: [primary]` selects bindAddress only");
    }
    let context = NodeContext::resolve(
        node.clone(),
        node_ips,
        settings.bind_address,
        node_object.as_ref(),
    );
    tracing::info!(?context, ?timing, "planning for this node");
    let families: Vec<_> = context
        .node_ips
        .iter()
        .map(netlink_ipvs::Family::of)
        .collect();
    observer.metrics.set_families(&families);

    let root = host_root();
    tracing::info!(root = %root.root().display(), "host files");
    match conntrack_gc::apply_sizing(&root, &settings.conntrack, machine_cpus()) {
        Ok(report) => observer.record_sizing(&node, &report),
        Err(error) => tracing::warn!(%error, "conntrack sizing skipped"),
    }
    dataplane.prepare_host(&root, settings.strict_arp, settings.ipvs_timeouts)?;
    observer.spawn_conntrack_watch(root, Duration::from_secs(60));

    let planner =
        Planner::new(context, settings.engine.clone()).with_packet_settings(PacketSettings {
            cluster_cidrs: settings.cluster_cidrs.clone(),
            masquerade_all: settings.masquerade_all,
            ..PacketSettings::default()
        });
    let mut proxier = Proxier::new(planner, dataplane)
        .with_drain_bound(settings.drain_bound)
        .with_kube_proxy_leftovers_removed(remove_leftovers);
    *proxier.cluster_mut() = cluster;
    let hook = |kind, outcome: &proxier::runtime::SyncOutcome| {
        logging::log_sync(kind, outcome);
        observer.on_sync(kind, outcome);
        // These syncs have just freed a whole kernel table (and, at start, the initial list).
        if matches!(kind, SyncKind::Initial | SyncKind::Full) {
            heap::release_free_memory();
        }
    };
    match (directory, api_source) {
        (_, Some(source)) => {
            let mut source = observer.watch_source(source);
            proxier::runtime::run(&mut proxier, &mut source, timing, hook, shutdown_signal())
                .await?;
        }
        (Some((source, first)), None) => {
            observer.record_poll(&first);
            let mut source = observer.watch_source(source);
            proxier::runtime::run(&mut proxier, &mut source, timing, hook, shutdown_signal())
                .await?;
        }
        (None, None) => anyhow::bail!("no API source"),
    }
    tracing::info!("stopped; kernel state left as it is");
    Ok(())
}

fn block_on(future: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?
        .block_on(future)
}

fn cleanup(args: CleanupArgs) -> anyhow::Result<()> {
    let config = Config::default();
    let exclude_cidrs = args
        .exclude_cidrs
        .iter()
        .map(|c| proxier::config::parse_cidr(c, "--exclude-cidr"))
        .collect::<Result<_, _>>()?;
    let ownership = proxier::plan::Ownership {
        node_ips: args.node_ips.into_iter().collect(),
        node_port_range: config.node_port_range,
        fwmarks: (config.fwmark_base, proxier::config::FWMARK_COUNT),
        exclude_cidrs,
        ..proxier::plan::Ownership::default()
    };
    let table = proxier::plan::DEFAULT_TABLE;
    let report = proxier::dataplane::kernel::cleanup(&args.interface, table, &ownership)?;
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

/// What `proxier plan` prints.
enum PlanOutput {
    /// The whole IPVS plan (and with `true` the addresses to bind).
    Listing(bool),
    /// What `run` would change on this node's kernel, read through the dummy interface named.
    Diff(String),
}

/// `proxier plan`, with the engine configuration [`resolve`] read (as for `run`).
fn plan(
    path: &Path,
    node: String,
    node_ips: Vec<IpAddr>,
    config: Config,
    output: PlanOutput,
) -> anyhow::Result<()> {
    let mut objects = Vec::new();
    for file in DirectorySource::input_files(path)? {
        let text = proxier::yaml::read_file(&file)?;
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
    // `plan` reads no bindAddress: the node's IPs are the given ones or the Node's.
    let follow_addresses = node_ips.is_empty();
    let context = NodeContext::resolve(node, node_ips, None, node_object);
    let addresses = match output {
        PlanOutput::Listing(addresses) => addresses,
        PlanOutput::Diff(interface) => {
            return plan_diff(
                Planner::new(context, config),
                cluster,
                &interface,
                follow_addresses,
            )
        }
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
    print!(
        "{}",
        netlink_ipvs::ipvsadm::listing(&desired.to_ipvs_state())
    );
    if addresses {
        println!();
        println!("Addresses to bind:");
        for ip in desired.addresses.keys() {
            println!("{ip}");
        }
    }
    Ok(())
}

/// `proxier plan --diff`: the initial sync of `run` against this node's kernel, not applied.
fn plan_diff(
    planner: Planner,
    cluster: proxier::model::ClusterState,
    interface: &str,
    follow_addresses: bool,
) -> anyhow::Result<()> {
    use proxier::dataplane::kernel::KernelDataplane;
    let mut dataplane =
        KernelDataplane::connect(interface).context("opening the kernel dataplane")?;
    if follow_addresses {
        dataplane
            .follow_node_addresses()
            .context("reading the node's addresses")?;
    }
    let mut proxier = proxier::runtime::Proxier::new(planner, dataplane);
    *proxier.cluster_mut() = cluster;
    proxier.poll_node_addresses();
    let preview = proxier.preview().context("reading the kernel")?;
    print!("{preview}");
    Ok(())
}

fn main() -> ExitCode {
    heap::configure_allocator();
    let cli = Cli::parse();
    let resolved = resolve(&cli);
    // The logger follows the settings (logging.verbosity and .format, --v, --logging-format);
    // when they are unusable, the flags alone.
    let (verbosity, format) = match &resolved {
        Ok(resolved) => (
            resolved.settings.verbosity.unwrap_or(0),
            resolved.settings.log_format,
        ),
        Err(_) => (
            cli.kube_proxy.verbosity.unwrap_or(0),
            cli.kube_proxy.logging_format.unwrap_or_default(),
        ),
    };
    logging::init(verbosity, format);
    match resolved.and_then(|resolved| dispatch(cli, resolved)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            logging::fatal(&error);
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli, resolved: Resolved) -> anyhow::Result<()> {
    for warning in &resolved.config_warnings {
        tracing::warn!(field = %warning.field, "{warning}");
    }
    for warning in &resolved.flag_warnings {
        tracing::warn!(flag = %warning.flag, "{warning}");
    }
    let settings = resolved.settings;
    match cli.command {
        Some(Command::Plan {
            path,
            node,
            node_ips,
            addresses,
            diff,
            interface,
            ..
        }) => {
            let output = if diff {
                PlanOutput::Diff(interface)
            } else {
                PlanOutput::Listing(addresses)
            };
            plan(&path, node, node_ips, settings.engine, output)
        }
        Some(Command::Run(args)) => {
            let node = node_name(args.node.clone().or(settings.hostname_override.clone()))?;
            let origin = match &args.source {
                Some(path) => Origin::Directory(path.clone()),
                None => Origin::Api {
                    kubeconfig: settings.kubeconfig.clone(),
                    master: args.master.clone(),
                },
            };
            let (node_ips, interface) = (args.node_ips, args.interface);
            let remove_leftovers = !args.keep_kube_proxy_rules;
            block_on(run(
                settings,
                node,
                node_ips,
                interface,
                origin,
                remove_leftovers,
            ))
        }
        Some(Command::Cleanup(args)) => cleanup(args),
        Some(Command::Version) => {
            println!("proxier {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        None => kube_proxy(cli.kube_proxy, settings),
    }
}

/// No subcommand: kube-proxy's actions (`--write-config-to`, `--cleanup`, `--init-only`),
/// else the proxy against the API server.
fn kube_proxy(flags: KubeProxyFlags, settings: ProxySettings) -> anyhow::Result<()> {
    if let Some(path) = &flags.write_config_to {
        std::fs::write(path, kube_proxy_flags::render_configuration(&settings))
            .with_context(|| format!("writing {}", path.display()))?;
        tracing::info!(file = %path.display(), "wrote the configuration");
        return Ok(());
    }
    if flags.cleanup() {
        return cleanup(CleanupArgs {
            interface: proxier::dataplane::kernel::DEFAULT_INTERFACE.to_owned(),
            node_ips: Vec::new(),
            exclude_cidrs: Vec::new(),
        });
    }
    if flags.init_only() {
        if let Some(value) = settings.oom_score_adj {
            set_oom_score_adj(value);
        }
        return init_node(&settings);
    }
    let node = node_name(settings.hostname_override.clone())?;
    let origin = Origin::Api {
        kubeconfig: settings.kubeconfig.clone(),
        master: flags.master,
    };
    let interface = proxier::dataplane::kernel::DEFAULT_INTERFACE.to_owned();
    block_on(run(settings, node, Vec::new(), interface, origin, true))
}
