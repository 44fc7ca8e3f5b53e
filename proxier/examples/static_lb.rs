//! A static bare-metal load balancer: the Services and endpoints are a YAML file (here
//! `examples/static-lb.yaml`: `192.0.2.10:80` in front of two backends), read under proxier's
//! input limits and programmed into the kernel once, with no Kubernetes API and no loop.
//!
//! Run as root, in a network namespace of your own:
//! `ip netns add lb && ip netns exec lb cargo run -p proxier --example static_lb --
//! proxier/examples/static-lb.yaml`, then `ip netns exec lb ipvsadm -Ln`. The VM test
//! `tests/tests/examples.rs` runs it and checks the listing.

use std::path::{Path, PathBuf};

use proxier::config::Config;
use proxier::dataplane::kernel::KernelDataplane;
use proxier::plan::{NodeContext, Planner};
use proxier::runtime::{Proxier, SyncOutcome};
use proxier::source::{parse_documents, SnapshotSync};

/// Reads the cluster at `path` and programs it: one full sync (kernel state adopted, what the
/// file wants applied). Objects that could not be read are printed and skipped.
pub fn program(path: &Path) -> Result<SyncOutcome, proxier::Error> {
    let text = proxier::yaml::read_file(path)?;
    let (objects, problems) = parse_documents(&path.display().to_string(), &text);
    let node = NodeContext {
        name: "lb-1".into(),
        node_ips: vec![],
        zone: None,
    };
    let mut proxier = Proxier::new(
        Planner::new(node, Config::default()),
        KernelDataplane::connect("kube-ipvs0")?,
    );
    let report = SnapshotSync::new().apply(&objects, proxier.cluster_mut());
    for problem in problems.iter().chain(&report.skipped) {
        eprintln!("skipped: {}", problem.report());
    }
    proxier.full_sync()
}

/// `static_lb [FILE]` (default: the example file next to this one).
pub fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).map_or_else(
        || {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/examples/static-lb.yaml"
            ))
        },
        PathBuf::from,
    );
    let outcome = program(&path)?;
    println!("{outcome:?}");
    if outcome.failed > 0 {
        return Err(format!("{} operations failed", outcome.failed).into());
    }
    Ok(())
}
