//! A CNI (or static load balancer) embedding proxier: its own endpoint source, the real kernel
//! dataplane, the same sync loop as `proxier run`. Run as root: `cargo run --example cni`.

use std::time::Duration;

use proxier::config::Config;
use proxier::dataplane::kernel::KernelDataplane;
use proxier::model::ClusterState;
use proxier::plan::{NodeContext, Planner};
use proxier::runtime::{run, Proxier, SyncTiming};
use proxier::source::{parse_documents, SnapshotSync, Source, SourcePoll};

/// The CNI's own view of services: here a fixed YAML snapshot, in real life its IPAM/state.
struct MyEndpoints {
    snapshot: SnapshotSync,
    pending: Option<&'static str>,
}

impl Source for MyEndpoints {
    fn poll_changes(&mut self, cluster: &mut ClusterState) -> Result<SourcePoll, proxier::Error> {
        let Some(yaml) = self.pending.take() else {
            return Ok(SourcePoll::default());
        };
        let (objects, problems) = parse_documents("cni", yaml);
        Ok(self.snapshot.poll(&objects, problems, cluster))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let node = NodeContext {
        name: "node-a".into(),
        node_ips: vec![],
        zone: None,
    };
    let mut proxier = Proxier::new(
        Planner::new(node, Config::default()),
        KernelDataplane::connect("kube-ipvs0")?,
    );
    let mut source = MyEndpoints {
        snapshot: SnapshotSync::new(),
        pending: Some(include_str!("cni.yaml")),
    };
    let stop = async { tokio::time::sleep(Duration::from_secs(2)).await };
    let on_sync = |kind, outcome: &_| println!("{kind:?}: {outcome:?}");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run(
            &mut proxier,
            &mut source,
            SyncTiming::default(),
            on_sync,
            stop,
        ))?;
    Ok(())
}
