//! Issue 15 item 2: a periodic resync repairs the IPVS table in slices, with syncs in between;
//! each slice reconciles against the plan and mirror of its time, so a change applied
//! between slices is neither lost nor undone, and drift anywhere in the table is repaired.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Instant;

use netlink_ipvs::{Protocol, ServiceKey};

use super::Proxier;
use crate::config::Config;
use crate::dataplane::{ApplyReport, Dataplane, FakeDataplane, TableRead};
use crate::error::Error;
use crate::fixtures::{ep, http_backend, node_a, service, slice, tcp};
use crate::plan::{PacketRules, Planner};
use crate::reconcile::{Observed, Op};

/// Services svc-1 … svc-`n` at 10.96.0.1 … with one endpoint each, synced to the fake.
fn synced(n: u8) -> Proxier<FakeDataplane> {
    let mut proxier = Proxier::new(
        Planner::new(node_a(), Config::default()),
        FakeDataplane::default(),
    );
    for i in 1..=n {
        let name = format!("svc-{i}");
        let cluster = proxier.cluster_mut();
        cluster.upsert_service(service(
            &name,
            &[&format!("10.96.0.{i}")],
            &[("http", Protocol::Tcp, 80)],
        ));
        cluster.upsert_slice(http_backend(&name, &format!("10.244.{i}.5")));
    }
    let outcome = proxier.full_sync().unwrap();
    assert_eq!(outcome.failed, 0);
    proxier
}

fn vip(i: u8) -> ServiceKey {
    tcp(&format!("10.96.0.{i}"), 80)
}

fn real_servers(proxier: &Proxier<FakeDataplane>, key: ServiceKey) -> Vec<String> {
    proxier.dataplane().state.ipvs.services[&key]
        .real_servers
        .keys()
        .map(|k| k.address.to_string())
        .collect()
}

/// Reads the table off the "loop" and adopts it: the repair then runs in slices.
fn begin_repair(proxier: &mut Proxier<FakeDataplane>) {
    let started = Instant::now();
    let read = proxier
        .begin_resync()
        .unwrap()
        .expect("the fake reads off the loop");
    proxier.finish_resync(read(), started).unwrap();
    assert!(proxier.repairing());
}

#[test]
fn a_change_between_repair_slices_is_neither_lost_nor_undone_and_every_slice_repairs_drift() {
    let mut proxier = synced(4);
    // Someone else: svc-1 and svc-4 lose their real server, svc-3's virtual server goes.
    let kernel = &mut proxier.dataplane_mut().state.ipvs.services;
    kernel.get_mut(&vip(1)).unwrap().real_servers.clear();
    kernel.get_mut(&vip(4)).unwrap().real_servers.clear();
    kernel.remove(&vip(3));
    begin_repair(&mut proxier);

    // The first slice repairs svc-1 only.
    assert!(proxier.repair_slice(1).is_none());
    assert_eq!(real_servers(&proxier, vip(1)), ["10.244.1.5"]);
    assert!(real_servers(&proxier, vip(4)).is_empty(), "not yet");

    // Between slices: svc-1 (repaired) gains an endpoint, svc-4 (not yet) changes its only
    // one, svc-2 (not yet) is deleted.
    let http = [("http", Protocol::Tcp, 8080)];
    let cluster = proxier.cluster_mut();
    let svc1 = vec![ep("10.244.1.5", "node-a"), ep("10.244.1.6", "node-a")];
    cluster.upsert_slice(slice("svc-1", "svc-1-1", &http, svc1));
    let svc4 = vec![ep("10.244.4.9", "node-a")];
    cluster.upsert_slice(slice("svc-4", "svc-4-1", &http, svc4));
    let svc2 = service("svc-2", &["10.96.0.2"], &[("http", Protocol::Tcp, 80)]);
    cluster.remove_service(&svc2.name);
    let change = proxier.incremental_sync();
    assert_eq!(change.failed, 0);

    let mut slices = 1;
    let outcome = loop {
        slices += 1;
        if let Some(outcome) = proxier.repair_slice(1) {
            break outcome;
        }
        assert!(slices < 10, "the repair ends");
    };
    assert_eq!(outcome.failed, 0);
    assert!(!proxier.repairing());
    // svc-1, svc-2 (gone), svc-3, svc-4, and the last one that finds nothing more.
    assert_eq!(slices, 4, "one virtual server per slice");
    assert_eq!(real_servers(&proxier, vip(1)), ["10.244.1.5", "10.244.1.6"]);
    assert!(
        !proxier
            .dataplane()
            .state
            .ipvs
            .services
            .contains_key(&vip(2)),
        "svc-2's deletion not undone"
    );
    assert_eq!(real_servers(&proxier, vip(3)), ["10.244.3.5"], "recreated");
    assert_eq!(real_servers(&proxier, vip(4)), ["10.244.4.9"]);
    assert_eq!(
        &proxier.observed().ipvs,
        &proxier.dataplane().state.ipvs,
        "the mirror follows the kernel"
    );
    assert!(
        !proxier
            .observed()
            .addresses
            .contains(&"10.96.0.2".parse().unwrap()),
        "svc-2's address unbound by the last slice"
    );
}

#[test]
fn a_repair_over_matching_state_writes_no_ipvs_operation() {
    let mut proxier = synced(3);
    let writes = proxier.dataplane().log.len();
    begin_repair(&mut proxier);
    let outcome = loop {
        if let Some(outcome) = proxier.repair_slice(2) {
            break outcome;
        }
    };
    assert_eq!((outcome.operations, outcome.failed), (0, 0));
    assert_eq!(proxier.dataplane().log.len(), writes);
}

/// The fake, saying whether its packet rules are intact, counting their writes.
struct IntactRules {
    fake: FakeDataplane,
    intact: bool,
    writes: usize,
}

impl Dataplane for IntactRules {
    fn observe(&mut self) -> Result<Observed, Error> {
        self.fake.observe()
    }

    fn table_read(&mut self) -> Result<Option<TableRead>, Error> {
        self.fake.table_read()
    }

    fn observe_addresses(&mut self) -> Result<BTreeSet<IpAddr>, Error> {
        self.fake.observe_addresses()
    }

    fn apply(&mut self, ops: &[Op]) -> ApplyReport {
        self.fake.apply(ops)
    }

    fn program_packet_rules(&mut self, rules: &PacketRules) -> Result<bool, Error> {
        self.writes += 1;
        self.fake.program_packet_rules(rules)
    }

    fn packet_rules_intact(&mut self) -> bool {
        self.intact
    }
}

/// A resync over packet rules the dataplane knows intact neither rebuilds nor writes them,
/// unless a change since the last sync touched them; one over rules it cannot vouch for
/// rewrites them (the drift repair). Fails on the old engine, which rebuilt and wrote them at
/// every resync.
#[test]
fn a_resync_writes_packet_rules_only_when_they_may_have_drifted_or_changed() {
    let mut proxier = Proxier::new(
        Planner::new(node_a(), Config::default()),
        IntactRules {
            fake: FakeDataplane::default(),
            intact: true,
            writes: 0,
        },
    );
    let web = service("web", &["10.96.0.1"], &[("http", Protocol::Tcp, 80)]);
    proxier.cluster_mut().upsert_service(web);
    proxier.full_sync().unwrap();
    let resync = |proxier: &mut Proxier<IntactRules>| {
        let before = proxier.dataplane().writes;
        let started = Instant::now();
        let read = proxier.begin_resync().unwrap().unwrap();
        proxier.finish_resync(read(), started).unwrap();
        let outcome = loop {
            if let Some(outcome) = proxier.repair_slice(500) {
                break outcome;
            }
        };
        assert_eq!(outcome.failed, 0);
        proxier.dataplane().writes - before
    };
    assert_eq!(resync(&mut proxier), 0, "intact, unchanged: not written");

    // A new Service polled just before the read ends: its VIP goes into the rules.
    let db = service("db", &["10.96.0.2"], &[("http", Protocol::Tcp, 80)]);
    proxier.cluster_mut().upsert_service(db);
    assert_eq!(resync(&mut proxier), 1, "changed: written");
    let rules = proxier.dataplane().fake.packet_rules.clone().unwrap();
    assert!(rules.service_ips.contains(&"10.96.0.2".parse().unwrap()));

    proxier.dataplane_mut().intact = false;
    assert_eq!(resync(&mut proxier), 1, "may have drifted: rewritten");
}
