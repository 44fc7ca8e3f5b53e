//! The `proxier` binary.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use proxier::config::{Config, KubeProxyConfiguration};
use proxier::plan::{NodeContext, Planner};
use proxier::source::{load_cluster, parse_documents};

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
}

fn input_files(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).with_context(|| format!("reading {}", path.display()))? {
        let file = entry?.path();
        let ext = file.extension().and_then(|e| e.to_str()).unwrap_or("");
        if file.is_file() && matches!(ext, "yaml" | "yml" | "json") {
            files.push(file);
        }
    }
    files.sort();
    Ok(files)
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
    for file in input_files(path)? {
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
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Plan {
            path,
            node,
            node_ips,
            config,
            addresses,
        } => plan(&path, node, node_ips, config, addresses),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("proxier: {e:#}");
            ExitCode::FAILURE
        }
    }
}
