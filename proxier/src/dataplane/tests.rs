//! Engine sequences against the strict fake: a rollout of a 250-endpoint Service and the
//! adoption of kernel state after a restart.

use std::collections::BTreeSet;

use netlink_ipvs::{Family, Protocol::*, ServiceKey, ServiceState, VirtualServer};

use super::*;
use crate::config::Config;
use crate::fixtures::*;
use crate::model::{ClusterState, Endpoint, TrafficPolicy};
use crate::plan::Planner;
use crate::reconcile::{reconcile, reconcile_changes, ConntrackFilter, Terminations};

const DNS: &[(&str, netlink_ipvs::Protocol, u16)] = &[("dns", Udp, 53)];

struct Node {
    cluster: ClusterState,
    planner: Planner,
    fake: FakeDataplane,
    terminations: Terminations,
}

impl Node {
    /// One incremental sync: replan dirty Services, reconcile the changes, apply, then check
    /// that a full reconcile finds nothing left to do. Returns the ops.
    fn sync(&mut self) -> Vec<Op> {
        let changes = self.planner.replan(&mut self.cluster);
        let ops = reconcile_changes(
            self.planner.desired(),
            &self.fake.state,
            &self.terminations,
            &changes,
        );
        let report = self.fake.apply(&ops);
        let failures: Vec<String> = report
            .failures(&ops)
            .map(|(o, e)| format!("{o}: {e}"))
            .collect();
        assert!(failures.is_empty(), "{failures:?}");
        self.terminations.record(&ops, &report.results);
        let rest = reconcile(self.planner.desired(), &self.fake.state, &self.terminations);
        assert!(rest.is_empty(), "incremental sync left {rest:?}");
        ops
    }

    fn weights(&self, key: &ServiceKey) -> Vec<(String, u32)> {
        self.fake.state.ipvs.services[key]
            .real_servers
            .values()
            .map(|rs| (rs.key.address.to_string(), rs.weight))
            .collect()
    }
}

fn old_pod(i: usize) -> String {
    format!("10.244.{}.{}", i / 200, i % 200 + 1)
}

fn new_pod(i: usize) -> String {
    format!("10.245.{}.{}", i / 200, i % 200 + 1)
}

#[test]
fn rollout_of_a_250_endpoint_service() {
    // incident I3/I4 at scale: during a rolling update (maxSurge 1, maxUnavailable 0)
    // every step is the minimal operation, a terminating pod is drained (weight 0) and its
    // real server deleted with a conntrack flush the moment it leaves the slice.
    let key = udp("10.96.0.10", 53);
    let mut pods: Vec<Endpoint> = (0..250).map(|i| ep(&old_pod(i), "node-b")).collect();
    let mut node = Node {
        cluster: cluster(
            vec![service("dns", &["10.96.0.10"], DNS)],
            vec![slice("dns", "s", DNS, pods.clone())],
        ),
        planner: Planner::new(node_a(), Config::default()),
        fake: FakeDataplane::default(),
        terminations: Terminations::new(),
    };
    assert_eq!(
        node.sync().len(),
        1 + 1 + 250,
        "bind + service + 250 real servers"
    );
    let set_pods = |node: &mut Node, pods: &[Endpoint]| {
        node.cluster
            .upsert_slice(slice("dns", "s", DNS, pods.to_vec()));
        node.sync()
    };
    for i in 0..250 {
        // New pod created, not ready yet: nothing to do.
        let starting = Endpoint {
            ready: false,
            serving: false,
            ..ep(&new_pod(i), "node-b")
        };
        pods.push(starting);
        assert_eq!(set_pods(&mut node, &pods), vec![], "step {i}: starting pod");
        // Ready: one add.
        *pods.last_mut().unwrap() = ep(&new_pod(i), "node-b");
        let ops = set_pods(&mut node, &pods);
        assert!(
            matches!(ops.as_slice(), [Op::AddRealServer { real_server, .. }] if real_server.weight == 1),
            "step {i}: {ops:?}"
        );
        // Old pod terminating (still serving): one weight-0 update, no delete.
        pods[0] = terminating(&old_pod(i), "node-b", true);
        let ops = set_pods(&mut node, &pods);
        assert!(
            matches!(ops.as_slice(), [Op::UpdateRealServer { real_server, .. }] if real_server.weight == 0),
            "step {i}: {ops:?}"
        );
        let serving = node.weights(&key).iter().filter(|(_, w)| *w > 0).count();
        assert_eq!(serving, 250, "step {i}: capacity kept");
        // Old pod gone from the slice: delete now, flush its UDP flows.
        pods.remove(0);
        let ops = set_pods(&mut node, &pods);
        let gone = ConntrackFilter::service_endpoint(
            conntrack_gc::Protocol::Udp,
            (ip("10.96.0.10"), 53),
            (ip(&old_pod(i)), 53),
        );
        assert!(
            matches!(ops.as_slice(), [Op::DeleteRealServer { .. }, Op::FlushConntrack(f)] if *f == gone),
            "step {i}: {ops:?}"
        );
    }
    let weights = node.weights(&key);
    assert_eq!(weights.len(), 250);
    assert!(weights
        .iter()
        .all(|(a, w)| a.starts_with("10.245.") && *w == 1));
    assert_eq!(node.fake.flushed.len(), 250);
    assert!(!node
        .fake
        .log
        .iter()
        .any(|op| matches!(op, Op::DeleteVirtualServer(_))));
    assert!(!node
        .fake
        .log
        .iter()
        .any(|op| matches!(op, Op::AddRealServer { real_server, .. } if real_server.weight == 0)));
}

fn busy_cluster(endpoints: Vec<Endpoint>) -> ClusterState {
    let ingress = with_ports(
        service("ingress", &["10.96.0.50"], &[("https", Tcp, 443)]),
        |p| {
            p.node_port = Some(31443);
            p.load_balancer_ips = vec![ip("203.0.113.10")];
            p.external_policy = TrafficPolicy::Local;
        },
    );
    cluster(
        vec![service("dns", &["10.96.0.10", "fd00::10"], DNS), ingress],
        vec![
            slice("dns", "v4", DNS, endpoints),
            slice("dns", "v6", DNS, vec![ep("fd00:244::5", "node-a")]),
            slice(
                "ingress",
                "s",
                &[("https", Tcp, 8443)],
                vec![ep("10.244.1.30", "node-a"), ep("10.244.2.31", "node-b")],
            ),
        ],
    )
}

#[test]
fn restart_adopts_kernel_state_without_flaps() {
    // kube-proxy #92019/#131134: state kept only in memory is lost on restart. Here the
    // kernel is the only state: a new process with empty memory finds nothing to change,
    // applies what changed while it was down, and leaves a foreign service alone.
    let endpoints = || {
        vec![
            ep("10.244.1.5", "node-a"),
            ep("10.244.2.5", "node-b"),
            terminating("10.244.2.6", "node-b", true),
        ]
    };
    let mut first = Node {
        cluster: busy_cluster(vec![
            ep("10.244.1.5", "node-a"),
            ep("10.244.2.5", "node-b"),
            ep("10.244.2.6", "node-b"),
        ]),
        planner: Planner::new(node_a(), Config::default()),
        fake: FakeDataplane::default(),
        terminations: Terminations::new(),
    };
    first.sync();
    first
        .cluster
        .upsert_slice(slice("dns", "v4", DNS, endpoints()));
    assert_eq!(first.sync().len(), 1, "terminating pod drained");
    let keepalived = ServiceKey::FwMark {
        mark: 7,
        family: Family::V4,
    };
    let foreign = ServiceState {
        service: VirtualServer::new(keepalived),
        real_servers: Default::default(),
    };
    first
        .fake
        .state
        .ipvs
        .services
        .insert(keepalived, foreign.clone());
    let kernel = first.fake.observe().unwrap();

    // Restart with the same cluster: zero operations.
    let mut fake = FakeDataplane::with_state(kernel.clone());
    let mut planner = Planner::new(node_a(), Config::default());
    let mut cluster = busy_cluster(endpoints());
    planner.plan_all(&mut cluster);
    let observed = fake.observe().unwrap();
    assert_eq!(
        reconcile(planner.desired(), &observed, &Terminations::new()),
        vec![]
    );

    // While we were down the terminating pod left and the ingress Service was deleted.
    let mut cluster = busy_cluster(vec![ep("10.244.1.5", "node-a"), ep("10.244.2.5", "node-b")]);
    cluster.remove_service(&name("ingress"));
    let mut planner = Planner::new(node_a(), Config::default());
    planner.plan_all(&mut cluster);
    let ops = reconcile(planner.desired(), &observed, &Terminations::new());
    assert!(fake.apply(&ops).is_success());
    let deleted: BTreeSet<String> = ops
        .iter()
        .filter_map(|op| match op {
            Op::DeleteVirtualServer(k) => Some(k.to_string()),
            Op::DeleteRealServer { real_server, .. } => Some(real_server.to_string()),
            _ => None,
        })
        .collect();
    let fwmark = kernel
        .ipvs
        .services
        .keys()
        .find(|k| matches!(k, ServiceKey::FwMark { mark, .. } if *mark != 7))
        .unwrap();
    let expected: BTreeSet<String> = [
        "10.244.2.6:53".to_owned(),
        tcp("10.96.0.50", 443).to_string(),
        tcp("192.168.1.10", 31443).to_string(),
        tcp("203.0.113.10", 443).to_string(),
        fwmark.to_string(),
    ]
    .into();
    assert_eq!(deleted, expected);
    assert!(
        ops.iter().any(|op| matches!(op, Op::FlushConntrack(ConntrackFilter {
            selector: conntrack_gc::Selector::ServiceEndpoint { endpoint_ip, endpoint_port: 53, .. },
            ..
        }) if *endpoint_ip == ip("10.244.2.6"))),
        "{ops:?}"
    );
    assert!(ops.contains(&Op::UnbindAddress(ip("10.96.0.50"))));
    assert_eq!(fake.state.ipvs.services[&keepalived], foreign);
    assert_eq!(
        reconcile(planner.desired(), &fake.state, &Terminations::new()),
        vec![]
    );
}

#[test]
fn the_fake_is_strict_like_the_kernel() {
    let key = tcp("10.96.0.1", 80);
    let rs = netlink_ipvs::RealServer::masq(ip("10.244.1.1"), 80);
    let mut fake = FakeDataplane::default();
    let ops = [
        Op::AddRealServer {
            service: key,
            real_server: rs,
        },
        Op::AddVirtualServer(VirtualServer::new(key)),
        Op::AddVirtualServer(VirtualServer::new(key)),
        Op::UpdateRealServer {
            service: key,
            real_server: rs,
        },
        Op::DeleteRealServer {
            service: key,
            real_server: rs.key,
        },
        Op::UnbindAddress(ip("10.96.0.1")),
        Op::DeleteVirtualServer(key),
        Op::UpdateVirtualServer(VirtualServer::new(key)),
    ];
    let errnos: Vec<Option<crate::Errno>> = fake
        .apply(&ops)
        .results
        .into_iter()
        .map(|r| match r {
            Err(crate::Error::Kernel { errno, .. }) => Some(errno),
            _ => None,
        })
        .collect();
    use crate::Errno as E;
    assert_eq!(
        errnos,
        vec![
            Some(E::ESRCH),
            None,
            Some(E::EEXIST),
            Some(E::ENOENT),
            Some(E::ENOENT),
            Some(E::EADDRNOTAVAIL),
            None,
            Some(E::ESRCH)
        ]
    );
    assert_eq!(fake.log.len(), ops.len());
}
