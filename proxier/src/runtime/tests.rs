//! The sync loop against the strict fake dataplane and a scripted source.

use std::collections::VecDeque;
use std::time::Duration;

use super::{run, Proxier, SyncKind, SyncTiming};
use crate::config::Config;
use crate::dataplane::FakeDataplane;
use crate::error::Error;
use crate::model::ClusterState;
use crate::plan::{NodeContext, Planner};
use crate::source::{parse_documents, SnapshotSync, Source, SourcePoll};

const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\nspec:\n  clusterIP: CLUSTER_IP\n  ports:\n  - {name: http, port: 80, protocol: TCP, targetPort: 8080}\n";
const SLICE: &str = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-1\n  namespace: default\n  labels: {kubernetes.io/service-name: web}\naddressType: IPv4\nports:\n- {name: http, port: 8080, protocol: TCP}\nendpoints:\n- addresses: [10.244.1.5]\n  conditions: {ready: true}\n";

/// A source that replays snapshots (or failures), one per poll, then reports no change.
struct ScriptedSource {
    steps: VecDeque<Result<String, String>>,
    snapshot: SnapshotSync,
    /// Objects the source reported as skipped, over all polls.
    skipped: usize,
}

impl Source for ScriptedSource {
    fn poll_changes(&mut self, cluster: &mut ClusterState) -> Result<SourcePoll, Error> {
        match self.steps.pop_front() {
            None => Ok(SourcePoll::default()),
            Some(Err(reason)) => Err(Error::Config {
                field: "source",
                reason,
            }),
            Some(Ok(yaml)) => {
                let (objects, problems) = parse_documents("script", &yaml);
                assert!(problems.is_empty(), "{problems:?}");
                let poll = self.snapshot.poll(&objects, problems, cluster);
                self.skipped += poll.skipped.len();
                Ok(poll)
            }
        }
    }
}

fn cluster(ip: &str) -> String {
    format!("{}---\n{SLICE}", SERVICE.replace("CLUSTER_IP", ip))
}

/// What a scripted run left: the proxy, the syncs (kind, operations) and the objects skipped.
type ScriptRun = (Proxier<FakeDataplane>, Vec<(SyncKind, usize)>, usize);

fn run_script(steps: Vec<Result<String, String>>) -> ScriptRun {
    let node = NodeContext {
        name: "node-a".into(),
        node_ips: vec![],
        zone: None,
    };
    let mut proxier = Proxier::new(
        Planner::new(node, Config::default()),
        FakeDataplane::default(),
    );
    let mut source = ScriptedSource {
        steps: steps.into(),
        snapshot: SnapshotSync::new(),
        skipped: 0,
    };
    let timing = SyncTiming {
        min_sync_period: Duration::ZERO,
        sync_period: Duration::from_secs(3600),
        poll_period: Duration::from_millis(1),
    };
    let mut syncs = Vec::new();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime
        .block_on(run(
            &mut proxier,
            &mut source,
            timing,
            |kind, outcome| syncs.push((kind, outcome.operations)),
            async { tokio::time::sleep(Duration::from_millis(100)).await },
        ))
        .unwrap();
    (proxier, syncs, source.skipped)
}

#[test]
fn initial_sync_programs_the_cluster_and_later_changes_are_incremental() {
    let (proxier, syncs, _) = run_script(vec![Ok(cluster("10.96.0.1")), Ok(cluster("10.96.0.2"))]);
    // bind + virtual server + real server, then the move to a new cluster IP.
    assert_eq!(syncs[0], (SyncKind::Initial, 3));
    assert_eq!(syncs[1].0, SyncKind::Incremental);
    assert!(syncs[1].1 >= 4, "{syncs:?}");
    let addresses: Vec<_> = proxier
        .observed()
        .addresses
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(addresses, ["10.96.0.2"]);
}

#[test]
fn a_failing_source_leaves_the_kernel_as_it_is() {
    let (proxier, syncs, _) = run_script(vec![
        Ok(cluster("10.96.0.1")),
        Err("API server unreachable".into()),
        Err("API server unreachable".into()),
    ]);
    assert_eq!(
        syncs,
        [(SyncKind::Initial, 3)],
        "no sync after the failures"
    );
    assert_eq!(proxier.observed().ipvs.real_server_count(), 1);
}

#[test]
fn an_object_turning_invalid_keeps_its_last_good_version() {
    let (proxier, syncs, skipped) =
        run_script(vec![Ok(cluster("10.96.0.1")), Ok(cluster("10.96.0.999"))]);
    assert_eq!(
        syncs,
        [(SyncKind::Initial, 3)],
        "nothing deleted: {syncs:?}"
    );
    assert_eq!(proxier.observed().ipvs.services.len(), 1);
    assert_eq!(
        skipped, 1,
        "the invalid Service is reported as skipped once"
    );
}

#[test]
fn the_fake_dataplane_sees_the_plans_packet_rules() {
    let (mut proxier, _, _) = run_script(vec![Ok(cluster("10.96.0.1")), Ok(cluster("10.96.0.2"))]);
    let planned = crate::plan::packet_rules(proxier.desired(), &Default::default());
    let fake = proxier.dataplane_mut();
    let rules = fake.packet_rules.as_ref().expect("packet rules programmed");
    assert_eq!(*rules, planned);
    let service_ips: Vec<String> = rules.service_ips.iter().map(ToString::to_string).collect();
    assert_eq!(
        service_ips,
        ["10.96.0.2"],
        "the rules follow the new cluster IP"
    );
    // Written at the initial sync and again when the cluster IP moved.
    assert_eq!(fake.packet_rule_writes, 2);
}

/// Issue 13 item 12: the plan follows the local Node's zone (kube-proxy resyncs on a Node
/// update; topology hints are read against the node's labels). Endpoints hinted for zone-a
/// serve while node-a is in zone-a; after a Node update moves it to zone-b, the next
/// incremental sync serves the zone-b endpoint instead, with no restart (file source).
#[test]
fn the_plan_follows_the_local_nodes_zone() {
    use crate::plan::RealServerIntent;
    let node_yaml = |zone: &str| {
        format!(
            "apiVersion: v1\nkind: Node\nmetadata:\n  name: node-a\n  labels: {{topology.kubernetes.io/zone: {zone}}}\n\
             status:\n  addresses: [{{type: InternalIP, address: 192.168.1.10}}]\n"
        )
    };
    let slice = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-1\n  \
        namespace: default\n  labels: {kubernetes.io/service-name: web}\naddressType: IPv4\n\
        ports:\n- {name: http, port: 8080, protocol: TCP}\nendpoints:\n\
        - addresses: [10.244.1.5]\n  conditions: {ready: true}\n  hints: {forZones: [{name: zone-a}]}\n\
        - addresses: [10.244.2.5]\n  conditions: {ready: true}\n  hints: {forZones: [{name: zone-b}]}\n";
    let service = SERVICE.replace("CLUSTER_IP", "10.96.0.9");
    let node = NodeContext {
        name: "node-a".into(),
        node_ips: vec![],
        zone: Some("zone-a".into()),
    };
    let mut proxier = Proxier::new(
        Planner::new(node, Config::default()),
        FakeDataplane::default(),
    );
    let mut snapshot = SnapshotSync::new();
    let serving = |proxier: &Proxier<FakeDataplane>| -> Vec<String> {
        proxier
            .desired()
            .virtual_servers
            .values()
            .flat_map(|vs| vs.real_servers.values())
            .filter(|rs| rs.intent == RealServerIntent::Serve)
            .map(|rs| rs.real_server.key.address.to_string())
            .collect()
    };
    let mut apply = |proxier: &mut Proxier<FakeDataplane>, zone: &str| {
        let yaml = format!("{service}---\n{slice}---\n{}", node_yaml(zone));
        let (objects, problems) = parse_documents("script", &yaml);
        assert!(problems.is_empty(), "{problems:?}");
        snapshot.poll(&objects, problems, proxier.cluster_mut())
    };
    apply(&mut proxier, "zone-a");
    proxier.full_sync().unwrap();
    assert_eq!(serving(&proxier), ["10.244.1.5"]);
    let poll = apply(&mut proxier, "zone-b");
    assert!(poll.changed, "a Node update is a change");
    let outcome = proxier.incremental_sync();
    assert_eq!(outcome.failed, 0);
    assert_eq!(serving(&proxier), ["10.244.2.5"], "zone-b's endpoint now");
}
