//! Issue 15 item 2: the periodic resync's table read runs off the sync loop, so a change
//! arriving during it is applied at once, and the repair that follows neither undoes the
//! change nor misses drift elsewhere.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use netlink_ipvs::{IpvsState, Protocol};

use super::{run, Proxier, SyncKind, SyncTiming};
use crate::config::Config;
use crate::dataplane::{ApplyReport, Dataplane, FakeDataplane, TableRead};
use crate::error::{Errno, Error};
use crate::fixtures::{ep, http_backend, node_a, service, slice, tcp};
use crate::model::ClusterState;
use crate::plan::{PacketRules, Planner};
use crate::reconcile::{Observed, Op};
use crate::source::{Source, SourcePoll};

/// The [`Dataplane`] methods a test dataplane with a `fake: FakeDataplane` field hands to it
/// unchanged: everything but the reads under test.
macro_rules! writes_through_the_fake {
    () => {
        fn observe_addresses(&mut self) -> Result<BTreeSet<IpAddr>, Error> {
            self.fake.observe_addresses()
        }

        fn apply(&mut self, ops: &[Op]) -> ApplyReport {
            self.fake.apply(ops)
        }

        fn program_packet_rules(&mut self, rules: &PacketRules) -> Result<bool, Error> {
            self.fake.program_packet_rules(rules)
        }
    };
}

/// How long the slow read waits to be let go: long enough that a loop which waits for it
/// shows in the order of the syncs, short enough that such a loop still ends the test.
const READ_HOLD: Duration = Duration::from_secs(2);

/// The strict fake, with a periodic read that is slow: it takes the table, then waits until
/// the test lets it go (or [`READ_HOLD`] passes). Just before it takes the table, someone
/// else deletes db's real server (drift for the resync to repair).
struct SlowRead {
    fake: FakeDataplane,
    /// Set once the initial sync is done: from then on reads are slow.
    armed: bool,
    read_started: Arc<AtomicBool>,
    /// Taken by the first slow read.
    gate: Option<mpsc::Receiver<()>>,
}

impl SlowRead {
    fn slow_read(&mut self) -> impl FnOnce() -> IpvsState + Send {
        let db = tcp("10.96.0.2", 80);
        let drifted = self.fake.state.ipvs.services.get_mut(&db).map(|s| {
            s.real_servers.clear();
        });
        assert!(drifted.is_some(), "db is in the kernel before the read");
        let table = self.fake.state.ipvs.clone();
        let gate = self.gate.take();
        self.read_started.store(true, Ordering::SeqCst);
        move || {
            if let Some(gate) = gate {
                // Let go by the test, or timed out: either way the read ends.
                let _ = gate.recv_timeout(READ_HOLD);
            }
            table
        }
    }
}

impl Dataplane for SlowRead {
    fn observe(&mut self) -> Result<Observed, Error> {
        if !self.armed {
            self.armed = true;
            return self.fake.observe();
        }
        // A loop that reads on its own thread waits here.
        let ipvs = self.slow_read()();
        Ok(Observed {
            ipvs,
            addresses: self.fake.state.addresses.clone(),
        })
    }

    fn table_read(&mut self) -> Result<Option<TableRead>, Error> {
        let read = self.slow_read();
        Ok(Some(Box::new(move || Ok(read()))))
    }

    writes_through_the_fake!();
}

/// web and db, one endpoint each; once the resync's read has begun, web gains a second one.
struct ChangeDuringRead {
    step: usize,
    read_started: Arc<AtomicBool>,
    /// Set once the change has been handed to the loop.
    changed: Arc<AtomicBool>,
}

impl Source for ChangeDuringRead {
    fn poll_changes(&mut self, cluster: &mut ClusterState) -> Result<SourcePoll, Error> {
        let http = [("http", Protocol::Tcp, 8080)];
        let changed = match self.step {
            0 => {
                cluster.upsert_service(service(
                    "web",
                    &["10.96.0.1"],
                    &[("http", Protocol::Tcp, 80)],
                ));
                cluster.upsert_service(service(
                    "db",
                    &["10.96.0.2"],
                    &[("http", Protocol::Tcp, 80)],
                ));
                cluster.upsert_slice(http_backend("web", "10.244.1.5"));
                cluster.upsert_slice(http_backend("db", "10.244.2.5"));
                true
            }
            1 if self.read_started.load(Ordering::SeqCst) => {
                let endpoints = vec![ep("10.244.1.5", "node-a"), ep("10.244.1.6", "node-a")];
                cluster.upsert_slice(slice("web", "web-1", &http, endpoints));
                self.changed.store(true, Ordering::SeqCst);
                true
            }
            _ => false,
        };
        if changed {
            self.step += 1;
        }
        Ok(SourcePoll {
            changed,
            ..SourcePoll::default()
        })
    }
}

/// Fails on the old loop, which read the kernel on the loop itself: there the change waited
/// for the whole read (the syncs came Initial, Full, Incremental).
#[test]
fn a_change_during_a_resync_read_is_applied_at_once_and_the_repair_keeps_it() {
    let read_started = Arc::new(AtomicBool::new(false));
    let (let_go, gate) = mpsc::channel();
    let dataplane = SlowRead {
        fake: FakeDataplane::default(),
        armed: false,
        read_started: read_started.clone(),
        gate: Some(gate),
    };
    let mut proxier = Proxier::new(Planner::new(node_a(), Config::default()), dataplane);
    let mut source = ChangeDuringRead {
        step: 0,
        read_started,
        changed: Arc::default(),
    };
    let timing = SyncTiming {
        min_sync_period: Duration::ZERO,
        sync_period: Duration::from_millis(200),
        poll_period: Duration::from_millis(1),
    };
    let mut syncs = Vec::new();
    let resynced = Arc::new(AtomicBool::new(false));
    let done = resynced.clone();
    let on_sync = |kind, outcome: &super::SyncOutcome| {
        syncs.push((kind, outcome.operations, outcome.failed));
        match kind {
            // The change is in: the read may end.
            SyncKind::Incremental => {
                let _ = let_go.send(());
            }
            SyncKind::Full => done.store(true, Ordering::SeqCst),
            SyncKind::Initial => {}
        }
    };
    run_until(
        &mut proxier,
        &mut source,
        timing,
        on_sync,
        &resynced,
        Duration::from_secs(10),
    );

    assert_eq!(
        syncs,
        [
            // Two addresses, two virtual servers, two real servers.
            (SyncKind::Initial, 6, 0),
            // web's new endpoint, while the read is still running.
            (SyncKind::Incremental, 1, 0),
            // Only db's drift: web's new real server, which the read may have missed, is
            // not added twice.
            (SyncKind::Full, 1, 0),
        ]
    );
    let kernel = &proxier.dataplane().fake.state.ipvs.services;
    let real_servers = |key| -> Vec<String> {
        kernel[&key]
            .real_servers
            .keys()
            .map(|k| k.address.to_string())
            .collect()
    };
    assert_eq!(
        real_servers(tcp("10.96.0.1", 80)),
        ["10.244.1.5", "10.244.1.6"]
    );
    assert_eq!(
        real_servers(tcp("10.96.0.2", 80)),
        ["10.244.2.5"],
        "db's drift repaired"
    );
    assert_eq!(
        proxier.observed().ipvs,
        proxier.dataplane().fake.state.ipvs,
        "the mirror follows the kernel"
    );
}

/// Runs the loop until `flag` is set (or `limit` passes).
fn run_until<D: Dataplane, S: Source>(
    proxier: &mut Proxier<D>,
    source: &mut S,
    timing: SyncTiming,
    on_sync: impl FnMut(SyncKind, &super::SyncOutcome),
    flag: &AtomicBool,
    limit: Duration,
) {
    let shutdown = async {
        let wait = async {
            while !flag.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        let _ = tokio::time::timeout(limit, wait).await;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime
        .block_on(run(proxier, source, timing, on_sync, shutdown))
        .unwrap();
}

/// The strict fake whose periodic reads all fail, each once the change has reached the loop.
struct FailingRead {
    fake: FakeDataplane,
    read_started: Arc<AtomicBool>,
    changed: Arc<AtomicBool>,
}

impl Dataplane for FailingRead {
    fn observe(&mut self) -> Result<Observed, Error> {
        self.fake.observe()
    }

    fn table_read(&mut self) -> Result<Option<TableRead>, Error> {
        self.read_started.store(true, Ordering::SeqCst);
        let changed = self.changed.clone();
        Ok(Some(Box::new(move || {
            let waited = std::time::Instant::now();
            while !changed.load(Ordering::SeqCst) && waited.elapsed() < READ_HOLD {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(Error::Kernel {
                op: "dump the IPVS table".into(),
                errno: Errno::ESRCH,
            })
        })))
    }

    writes_through_the_fake!();
}

/// A change polled while a resync's read runs, but held back by `minSyncPeriod`, is still
/// applied when that read fails. Fails on the first version of the off-loop read, which
/// forgot what was pending whenever a resync ended, read or not: the change then waited for
/// the next change (seen in the VM as the rollout soak's "old pod at weight 0" timeout).
#[test]
fn a_change_pending_when_a_resync_read_fails_is_still_applied() {
    let read_started = Arc::new(AtomicBool::new(false));
    let changed = Arc::new(AtomicBool::new(false));
    let dataplane = FailingRead {
        fake: FakeDataplane::default(),
        read_started: read_started.clone(),
        changed: changed.clone(),
    };
    let mut proxier = Proxier::new(Planner::new(node_a(), Config::default()), dataplane);
    let mut source = ChangeDuringRead {
        step: 0,
        read_started,
        changed,
    };
    let timing = SyncTiming {
        // Longer than the resync period: the change, polled just after the read began,
        // must wait for minSyncPeriod, by when the read has failed.
        min_sync_period: Duration::from_millis(300),
        sync_period: Duration::from_millis(200),
        poll_period: Duration::from_millis(1),
    };
    let mut syncs = Vec::new();
    let applied = Arc::new(AtomicBool::new(false));
    let done = applied.clone();
    let on_sync = |kind, outcome: &super::SyncOutcome| {
        syncs.push((kind, outcome.operations));
        if kind == SyncKind::Incremental {
            done.store(true, Ordering::SeqCst);
        }
    };
    run_until(
        &mut proxier,
        &mut source,
        timing,
        on_sync,
        &applied,
        Duration::from_secs(3),
    );

    assert!(
        syncs.contains(&(SyncKind::Incremental, 1)),
        "web's new endpoint applied after the failed read; syncs: {syncs:?}"
    );
    let web = &proxier.dataplane().fake.state.ipvs.services[&tcp("10.96.0.1", 80)];
    assert_eq!(
        web.real_servers.len(),
        2,
        "both of web's endpoints in the kernel"
    );
}
