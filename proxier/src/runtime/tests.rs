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

/// A proxy for node-a (no node IPs, default configuration) over `dataplane`.
fn node_a(dataplane: FakeDataplane) -> Proxier<FakeDataplane> {
    let node = NodeContext {
        name: "node-a".into(),
        node_ips: vec![],
        zone: None,
    };
    Proxier::new(Planner::new(node, Config::default()), dataplane)
}

fn run_script(steps: Vec<Result<String, String>>) -> ScriptRun {
    let mut proxier = node_a(FakeDataplane::default());
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

/// Issue 13 item 1: with `nodePortAddresses` unset, NodePorts open on every local address (a
/// second NIC, a keepalived VIP) as kube-proxy's do, follow addresses added and removed while
/// running, adopt kube-proxy's NodePort virtual server on the second address without a
/// flap, and leave a foreign virtual server there alone. Fails on the old behaviour
/// (NodePorts only on the Node's IPs, read once).
#[test]
fn node_ports_follow_the_local_addresses_and_adopt_kube_proxys_on_a_second_nic() {
    use crate::fixtures::{cluster, http_backend, ip, service, tcp, with_ports};
    use crate::reconcile::{Observed, Op};
    use netlink_ipvs::{IpvsState, Protocol, RealServer, ServiceState, VirtualServer};

    let with_backend = |key, backend| {
        let mut state = ServiceState {
            service: VirtualServer::new(key),
            real_servers: Default::default(),
        };
        let rs = RealServer::masq(ip(backend), 8080);
        state.real_servers.insert(rs.key, rs);
        (key, state)
    };
    // What kube-proxy left: its NodePort on the second NIC, and someone else's virtual
    // server (its own backend) in the NodePort range on the same address.
    let kube_proxys = tcp("192.168.50.1", 30080);
    let foreign = tcp("192.168.50.1", 30999);
    let kernel = Observed {
        ipvs: IpvsState {
            services: [
                with_backend(kube_proxys, "10.244.1.5"),
                with_backend(foreign, "10.9.9.9"),
            ]
            .into(),
        },
        addresses: Default::default(),
    };
    let web = with_ports(
        service("web", &["10.96.0.80"], &[("http", Protocol::Tcp, 80)]),
        |p| p.node_port = Some(30080),
    );
    let node = NodeContext {
        name: "node-a".into(),
        node_ips: vec![ip("10.0.1.1")],
        zone: None,
    };
    let mut proxier = Proxier::new(
        Planner::new(node, Config::default()),
        FakeDataplane::with_state(kernel),
    );
    *proxier.cluster_mut() = cluster(vec![web], vec![http_backend("web", "10.244.1.5")]);
    let local = |extra: &[&str]| {
        let mut all = vec![ip("10.0.1.1"), ip("192.168.50.1"), ip("127.0.0.1")];
        all.extend(extra.iter().map(|a| ip(a)));
        all
    };
    let node_ports = |p: &Proxier<FakeDataplane>| -> Vec<String> {
        p.dataplane()
            .state
            .ipvs
            .services
            .keys()
            .filter(|k| k.to_string().contains(":30"))
            .map(ToString::to_string)
            .collect()
    };

    proxier.dataplane_mut().local_addresses = Some(local(&[]));
    assert!(proxier.poll_node_addresses());
    proxier.full_sync().unwrap();
    assert_eq!(
        node_ports(&proxier),
        [
            "TCP  10.0.1.1:30080",
            "TCP  192.168.50.1:30080",
            "TCP  192.168.50.1:30999"
        ]
    );
    assert!(
        !proxier.dataplane_mut().log.iter().any(|op| matches!(
            op,
            Op::DeleteVirtualServer(key) if *key == kube_proxys || *key == foreign
        )),
        "kube-proxy's NodePort is adopted in place and the foreign one kept: {:?}",
        proxier.dataplane_mut().log
    );

    // A keepalived VIP comes: NodePorts open there at the next sync.
    proxier.dataplane_mut().local_addresses = Some(local(&["192.168.50.100"]));
    assert!(proxier.poll_node_addresses());
    assert!(!proxier.poll_node_addresses(), "no notification, no change");
    proxier.incremental_sync();
    assert!(node_ports(&proxier).contains(&"TCP  192.168.50.100:30080".to_owned()));

    // It goes: its NodePort goes too; the foreign one stays.
    proxier.dataplane_mut().local_addresses = Some(local(&[]));
    assert!(proxier.poll_node_addresses());
    let outcome = proxier.incremental_sync();
    assert_eq!(outcome.failed, 0, "{:?}", outcome.failures);
    assert_eq!(
        node_ports(&proxier),
        [
            "TCP  10.0.1.1:30080",
            "TCP  192.168.50.1:30080",
            "TCP  192.168.50.1:30999"
        ]
    );
    let rules = proxier.dataplane_mut().packet_rules.clone().unwrap();
    assert_eq!(
        rules.node_ips,
        [ip("10.0.1.1"), ip("192.168.50.1")].into(),
        "the packet rules mark NodePort traffic on the current addresses only"
    );
    // An unchanged address list (our own VIP bindings notify too) changes nothing.
    proxier.dataplane_mut().local_addresses = Some(local(&[]));
    assert!(!proxier.poll_node_addresses());
}

/// A sync failure (the text of the `SyncFailed` Event and of the logs) carries its root
/// cause once: no layer formats the cause it also returns as its `source`.
#[cfg(feature = "kernel")]
#[test]
fn a_sync_failure_carries_its_root_cause_once() {
    use crate::error::Error;
    use crate::runtime::SyncFailure;
    let failure = SyncFailure::KernelUnreadable(Error::Ipvs {
        operation: "dump IPVS".into(),
        source: netlink_ipvs::IpvsError::Kernel {
            operation: "get services".into(),
            source: std::io::Error::from_raw_os_error(1),
        },
    });
    let chain = crate::Report::new(&failure).to_string();
    assert_eq!(
        chain,
        "kernel state unreadable: dump IPVS: get services: Operation not permitted (os error 1)"
    );
    assert_eq!(chain.matches("get services").count(), 1);
    assert_eq!(chain.matches("dump IPVS").count(), 1);
}

/// A proxy for node-a over a fake kernel holding `state`, with Service `web` at 10.96.0.1.
fn over_kernel(state: crate::reconcile::Observed) -> Proxier<FakeDataplane> {
    let mut proxier = node_a(FakeDataplane::with_state(state));
    let (objects, problems) = parse_documents("web", &cluster("10.96.0.1"));
    assert!(problems.is_empty(), "{problems:?}");
    SnapshotSync::new().poll(&objects, problems, proxier.cluster_mut());
    proxier
}

/// `plan --diff` (issue 14 item 3): over what kube-proxy programmed for the same Service (the
/// same virtual server, real server and address) a takeover applies no operation, and a
/// virtual server that is not ours is listed as kept; nothing is applied by the preview.
#[test]
fn preview_of_a_takeover_over_matching_state_has_no_operation_and_keeps_foreign_servers() {
    use netlink_ipvs::{Protocol, RealServer, ServiceKey, ServiceState, VirtualServer};
    let mut programmed = over_kernel(Default::default());
    programmed.full_sync().unwrap();
    let mut kube_proxy = programmed.dataplane().state.clone();
    let foreign = VirtualServer::new(ServiceKey::Address {
        protocol: Protocol::Tcp,
        address: "192.0.2.1".parse().unwrap(),
        port: 80,
    });
    kube_proxy.ipvs.services.insert(
        foreign.key,
        ServiceState {
            service: foreign.clone(),
            real_servers: Default::default(),
        },
    );
    let mut proxier = over_kernel(kube_proxy.clone());
    let sets = vec!["KUBE-CLUSTER-IP".to_owned(), "calico-ipam".to_owned()];
    proxier
        .dataplane_mut()
        .leftovers
        .sets
        .names
        .clone_from(&sets);
    let preview = proxier.preview().unwrap();
    assert_eq!(preview.ops, [], "{preview}");
    assert_eq!(preview.foreign, std::slice::from_ref(&foreign));
    let text = preview.to_string();
    assert!(text.starts_with("0 IPVS operations\n"), "{text}");
    assert!(text.contains("1 foreign virtual servers kept"), "{text}");
    assert!(text.contains("-A -t 192.0.2.1:80"), "{text}");
    assert_eq!(preview.leftovers.sets_destroyed, ["KUBE-CLUSTER-IP"]);
    assert!(
        text.contains("0 chains, 1 ipsets\n  ipset KUBE-CLUSTER-IP\n"),
        "{text}"
    );
    assert!(proxier.dataplane().log.is_empty(), "nothing applied");
    assert_eq!(
        proxier.dataplane().leftovers.sets.names,
        sets,
        "nothing destroyed"
    );
    assert_eq!(proxier.dataplane().state, kube_proxy);

    // A real server with another weight than planned: one update, shown as ipvsadm would.
    let service = kube_proxy
        .ipvs
        .services
        .values_mut()
        .find(|s| s.service.key != foreign.key)
        .unwrap();
    let real_server: &mut RealServer = service.real_servers.values_mut().next().unwrap();
    real_server.weight = 5;
    let preview = over_kernel(kube_proxy).preview().unwrap();
    assert_eq!(preview.ipvs_operations(), 1, "{preview}");
    assert!(
        preview
            .to_string()
            .contains("  -e -t 10.96.0.1:80 -r 10.244.1.5:8080"),
        "{preview}"
    );
}
