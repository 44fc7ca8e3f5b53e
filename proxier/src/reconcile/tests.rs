//! Reconcile table tests and properties.

use std::collections::BTreeSet;

use netlink_ipvs::{
    Protocol::*, RealServer, RealServerKey, ServiceKey, ServiceState, VirtualServer,
};
use proptest::prelude::*;

use super::*;
use crate::dataplane::{Dataplane, FakeDataplane};
use crate::fixtures::*;
use crate::model::{Endpoint, TrafficPolicy};
use crate::plan::DesiredState;

const DNS: &[(&str, netlink_ipvs::Protocol, u16)] = &[("dns", Udp, 53)];

fn dns_plan(endpoints: Vec<Endpoint>) -> DesiredState {
    plan(cluster(
        vec![service("dns", &["10.96.0.10"], DNS)],
        vec![slice("dns", "dns-1", DNS, endpoints)],
    ))
}

/// Applies `ops` to a strict fake holding `observed`; every op must succeed.
fn apply(observed: &Observed, ops: &[Op]) -> Observed {
    let mut fake = FakeDataplane::with_state(observed.clone());
    let report = fake.apply(ops);
    let failures: Vec<String> = report
        .failures(ops)
        .map(|(op, e)| format!("{op}: {e}"))
        .collect();
    assert!(failures.is_empty(), "{failures:?}");
    fake.state
}

fn converge(desired: &DesiredState, observed: &Observed) -> Observed {
    apply(
        observed,
        &reconcile(desired, observed, &Terminations::new()),
    )
}

fn rs(address: &str, port: u16, weight: u32) -> RealServer {
    RealServer {
        weight,
        ..RealServer::masq(ip(address), port)
    }
}

/// A terminating endpoint's real server: carries the terminating mark.
fn terminating_rs(address: &str, port: u16, weight: u32) -> RealServer {
    RealServer {
        upper_threshold: crate::plan::TERMINATING_MARK,
        lower_threshold: crate::plan::TERMINATING_MARK,
        ..rs(address, port, weight)
    }
}

#[test]
fn nothing_changed_gives_no_operation() {
    let desired = dns_plan(vec![ep("10.244.1.5", "node-a"), ep("10.244.2.5", "node-b")]);
    let observed = converge(&desired, &Observed::default());
    assert_eq!(reconcile(&desired, &observed, &Terminations::new()), vec![]);
}

#[test]
fn creation_binds_first_then_service_then_real_servers() {
    let desired = dns_plan(vec![
        ep("10.244.1.5", "node-a"),
        terminating("10.244.2.5", "node-b", true),
    ]);
    let ops = reconcile(&desired, &Observed::default(), &Terminations::new());
    let key = udp("10.96.0.10", 53);
    assert_eq!(
        ops,
        vec![
            Op::BindAddress(ip("10.96.0.10")),
            Op::AddVirtualServer(VirtualServer::new(key)),
            // The terminating endpoint is not created at weight 0.
            Op::AddRealServer {
                service: key,
                real_server: rs("10.244.1.5", 53, 1)
            },
        ]
    );
}

#[test]
fn endpoint_lifecycle_terminating_back_and_gone() {
    // incident I3/I4: weight 0 only while terminating; deleted (with a conntrack flush
    // of its UDP flows) as soon as it leaves the slice, never "when connections reach 0".
    let key = udp("10.96.0.10", 53);
    let a = || ep("10.244.1.5", "node-a");
    let observed = converge(
        &dns_plan(vec![a(), ep("10.244.2.5", "node-b")]),
        &Observed::default(),
    );
    let t = Terminations::new();

    let draining = dns_plan(vec![a(), terminating("10.244.2.5", "node-b", true)]);
    let ops = reconcile(&draining, &observed, &t);
    assert_eq!(
        ops,
        vec![Op::UpdateRealServer {
            service: key,
            real_server: terminating_rs("10.244.2.5", 53, 0)
        }]
    );
    let drained = apply(&observed, &ops);

    let back = dns_plan(vec![a(), ep("10.244.2.5", "node-b")]);
    let ops = reconcile(&back, &drained, &t);
    assert_eq!(
        ops,
        vec![Op::UpdateRealServer {
            service: key,
            real_server: rs("10.244.2.5", 53, 1)
        }]
    );

    let gone = dns_plan(vec![a()]);
    let ops = reconcile(&gone, &drained, &t);
    assert_eq!(
        ops,
        vec![
            Op::DeleteRealServer {
                service: key,
                real_server: RealServerKey {
                    address: ip("10.244.2.5"),
                    port: 53
                }
            },
            // Only its flows through this service (issue 13 item 7).
            Op::FlushConntrack(ConntrackFilter::service_endpoint(
                conntrack_gc::Protocol::Udp,
                (ip("10.96.0.10"), 53),
                (ip("10.244.2.5"), 53)
            )),
        ]
    );
}

#[test]
fn tcp_endpoint_removal_needs_no_flush() {
    let web = |eps| {
        plan(cluster(
            vec![service("web", &["10.96.0.20"], &[("http", Tcp, 80)])],
            vec![slice("web", "s", &[("http", Tcp, 8080)], eps)],
        ))
    };
    // The endpoint terminates before it leaves (its pod is going away): deleted at once.
    let serving = converge(
        &web(vec![ep("10.244.1.1", "a"), ep("10.244.1.2", "a")]),
        &Observed::default(),
    );
    let observed = converge(
        &web(vec![
            ep("10.244.1.1", "a"),
            terminating("10.244.1.2", "a", false),
        ]),
        &serving,
    );
    let ops = reconcile(
        &web(vec![ep("10.244.1.1", "a")]),
        &observed,
        &Terminations::new(),
    );
    assert_eq!(ops.len(), 1);
    assert!(matches!(ops[0], Op::DeleteRealServer { .. }));
}

fn web(eps: Vec<Endpoint>) -> DesiredState {
    plan(cluster(
        vec![service("web", &["10.96.0.20"], &[("http", Tcp, 80)])],
        vec![slice("web", "s", &[("http", Tcp, 8080)], eps)],
    ))
}

/// Issue 13 item 6: a TCP endpoint that leaves its slice while alive (selector switch,
/// relabel) drains at weight 0 with the drain's start on the real server, stays through
/// syncs and a restart (the mark is in the kernel), and is deleted once the bound is over;
/// one that was terminating first is deleted at once.
#[test]
fn tcp_endpoint_unselected_while_alive_drains_with_a_bound() {
    let key = tcp("10.96.0.20", 80);
    let observed = converge(
        &web(vec![ep("10.244.1.1", "a"), ep("10.244.1.2", "a")]),
        &Observed::default(),
    );
    let mut t = Terminations::new().with_drain_bound(std::time::Duration::from_secs(60));
    let start = std::time::UNIX_EPOCH
        + std::time::Duration::from_secs(departure::DRAIN_EPOCH_SECS + 30_000_000);
    t.set_now(start);
    let switched = web(vec![ep("10.244.1.1", "a")]);
    let ops = reconcile(&switched, &observed, &t);
    let marked = RealServer {
        upper_threshold: 30_000_000,
        lower_threshold: 30_000_000,
        ..rs("10.244.1.2", 8080, 0)
    };
    assert_eq!(
        ops,
        vec![Op::UpdateRealServer {
            service: key,
            real_server: marked
        }]
    );
    let draining = apply(&observed, &ops);
    // Later syncs (and a restart: a fresh Terminations, same kernel) leave it draining.
    t.set_now(start + std::time::Duration::from_secs(59));
    assert_eq!(reconcile(&switched, &draining, &t), vec![]);
    let mut restarted = Terminations::new().with_drain_bound(std::time::Duration::from_secs(60));
    restarted.set_now(start + std::time::Duration::from_secs(30));
    assert_eq!(reconcile(&switched, &draining, &restarted), vec![]);
    // Exactly the bound in whole seconds may be up to a second short of it: still draining.
    t.set_now(start + std::time::Duration::from_secs(60));
    assert_eq!(reconcile(&switched, &draining, &t), vec![]);
    // Over the bound: deleted, no flush (TCP).
    t.set_now(start + std::time::Duration::from_secs(61));
    assert_eq!(
        reconcile(&switched, &draining, &t),
        vec![Op::DeleteRealServer {
            service: key,
            real_server: marked.key
        }]
    );
    // Selected again while draining: serves again, the mark cleared.
    let back = web(vec![ep("10.244.1.1", "a"), ep("10.244.1.2", "a")]);
    assert_eq!(
        reconcile(&back, &draining, &t),
        vec![Op::UpdateRealServer {
            service: key,
            real_server: rs("10.244.1.2", 8080, 1)
        }]
    );
}

/// Issue 13 item 5: a UDP endpoint in its slice that stops serving loses its real server and
/// its flows through the service now; a serving one filtered out only drains; TCP drains.
#[test]
fn udp_endpoint_that_stops_serving_is_removed_with_its_flows() {
    let key = udp("10.96.0.10", 53);
    let observed = converge(
        &dns_plan(vec![ep("10.244.1.5", "node-a"), ep("10.244.2.5", "node-b")]),
        &Observed::default(),
    );
    let not_ready = Endpoint {
        ready: false,
        serving: false,
        ..ep("10.244.2.5", "node-b")
    };
    let ops = reconcile(
        &dns_plan(vec![ep("10.244.1.5", "node-a"), not_ready.clone()]),
        &observed,
        &Terminations::new(),
    );
    assert_eq!(
        ops,
        vec![
            Op::DeleteRealServer {
                service: key,
                real_server: rs("10.244.2.5", 53, 0).key
            },
            Op::FlushConntrack(ConntrackFilter::service_endpoint(
                conntrack_gc::Protocol::Udp,
                (ip("10.96.0.10"), 53),
                (ip("10.244.2.5"), 53)
            )),
        ]
    );
    // Terminating but still serving: weight 0, flows kept.
    let ops = reconcile(
        &dns_plan(vec![
            ep("10.244.1.5", "node-a"),
            terminating("10.244.2.5", "node-b", true),
        ]),
        &observed,
        &Terminations::new(),
    );
    assert_eq!(
        ops,
        vec![Op::UpdateRealServer {
            service: key,
            real_server: terminating_rs("10.244.2.5", 53, 0)
        }]
    );
    // Terminating and no longer serving: removed now.
    let ops = reconcile(
        &dns_plan(vec![
            ep("10.244.1.5", "node-a"),
            terminating("10.244.2.5", "node-b", false),
        ]),
        &observed,
        &Terminations::new(),
    );
    assert!(
        matches!(ops[0], Op::DeleteRealServer { .. }) && ops.len() == 2,
        "{ops:?}"
    );
    // The same for TCP only drains: its connections end by themselves.
    let observed = converge(
        &web(vec![ep("10.244.1.1", "a"), ep("10.244.1.2", "a")]),
        &Observed::default(),
    );
    let ops = reconcile(
        &web(vec![
            ep("10.244.1.1", "a"),
            Endpoint {
                ready: false,
                serving: false,
                ..ep("10.244.1.2", "a")
            },
        ]),
        &observed,
        &Terminations::new(),
    );
    assert_eq!(
        ops,
        vec![Op::UpdateRealServer {
            service: tcp("10.96.0.20", 80),
            real_server: rs("10.244.1.2", 8080, 0)
        }]
    );
}

#[test]
fn first_endpoint_of_a_udp_service_flushes_its_stale_flows() {
    // kube-proxy: UDP service going from 0 to >0 endpoints → flush entries to the VIP.
    let observed = converge(&dns_plan(vec![]), &Observed::default());
    let ops = reconcile(
        &dns_plan(vec![ep("10.244.1.5", "node-a")]),
        &observed,
        &Terminations::new(),
    );
    assert_eq!(ops.len(), 2);
    assert_eq!(
        ops[1],
        Op::FlushConntrack(ConntrackFilter::service_ip(
            conntrack_gc::Protocol::Udp,
            ip("10.96.0.10"),
            53
        ))
    );
}

#[test]
fn only_owned_virtual_servers_are_deleted() {
    // ARCHITECTURE.md rule 2 (and incident I2): a keepalived service on another address,
    // or on a node IP outside the NodePort range, is never touched.
    let desired = dns_plan(vec![]);
    let mut observed = converge(&desired, &Observed::default());
    // keepalived on a node IP inside the NodePort range: no NodePort of ours, and its real
    // servers are not ours either.
    let foreign = [
        tcp("10.0.0.99", 80),
        tcp("192.168.1.10", 443),
        tcp("192.168.1.10", 30500),
        ServiceKey::FwMark {
            mark: 7,
            family: netlink_ipvs::Family::V4,
        },
    ];
    // A NodePort virtual server left by a Service deleted before a restart: it forwards to
    // the same endpoint as the ClusterIP virtual server on our bound VIP.
    let ours = [
        tcp("10.96.0.10", 80),
        tcp("192.168.1.10", 30080),
        ServiceKey::FwMark {
            mark: crate::config::DEFAULT_FWMARK_BASE + 1,
            family: netlink_ipvs::Family::V4,
        },
    ];
    let endpoint = |address: &str| {
        let real_server = RealServer::masq(ip(address), 8080);
        [(real_server.key, real_server)].into_iter().collect()
    };
    for key in foreign.iter().chain(&ours) {
        let real_servers = match *key {
            ServiceKey::Address { port: 30500, .. } => endpoint("192.168.50.20"),
            ServiceKey::Address {
                port: 80 | 30080, ..
            } => endpoint("10.244.9.9"),
            _ => Default::default(),
        };
        let state = ServiceState {
            service: VirtualServer::new(*key),
            real_servers,
        };
        observed.ipvs.services.insert(*key, state);
    }
    observed.addresses.insert(ip("10.96.0.10"));
    let ops = reconcile(&desired, &observed, &Terminations::new());
    let deleted: BTreeSet<ServiceKey> = ops
        .iter()
        .filter_map(|op| match op {
            Op::DeleteVirtualServer(k) => Some(*k),
            _ => None,
        })
        .collect();
    assert_eq!(deleted, ours.into_iter().collect());
    let after = apply(&observed, &ops);
    for key in foreign {
        assert_eq!(after.ipvs.services[&key], observed.ipvs.services[&key]);
    }
}

#[test]
fn removed_service_deletes_virtual_server_flushes_and_then_unbinds() {
    let observed = converge(
        &dns_plan(vec![ep("10.244.1.5", "node-a")]),
        &Observed::default(),
    );
    let empty = plan(cluster(vec![], vec![]));
    let ops = reconcile(&empty, &observed, &Terminations::new());
    assert_eq!(
        ops,
        vec![
            Op::FlushConntrack(ConntrackFilter::service_ip(
                conntrack_gc::Protocol::Udp,
                ip("10.96.0.10"),
                53
            )),
            Op::DeleteVirtualServer(udp("10.96.0.10", 53)),
            Op::UnbindAddress(ip("10.96.0.10")),
        ]
    );
}

#[test]
fn kernel_set_hashed_flag_is_not_a_difference_and_scheduler_change_is_an_update() {
    let desired = dns_plan(vec![]);
    let mut observed = converge(&desired, &Observed::default());
    let key = udp("10.96.0.10", 53);
    let service = &mut observed.ipvs.services.get_mut(&key).unwrap().service;
    service.flags = service.flags | netlink_ipvs::ServiceFlags::HASHED;
    assert_eq!(reconcile(&desired, &observed, &Terminations::new()), vec![]);
    observed
        .ipvs
        .services
        .get_mut(&key)
        .unwrap()
        .service
        .scheduler = "wrr".into();
    assert_eq!(
        reconcile(&desired, &observed, &Terminations::new()),
        vec![Op::UpdateVirtualServer(VirtualServer::new(key))]
    );
}

#[test]
fn a_failed_flush_is_owed_until_it_succeeds() {
    let filter = ConntrackFilter::endpoint(conntrack_gc::Protocol::Udp, ip("10.244.2.5"), 53);
    let desired = dns_plan(vec![]);
    let observed = converge(&desired, &Observed::default());
    let mut terminations = Terminations::new();
    let flush = [Op::FlushConntrack(filter)];
    terminations.record(&flush, &[Err(crate::Errno(1))]);
    assert_eq!(
        reconcile(&desired, &observed, &terminations),
        flush.to_vec()
    );
    terminations.record(&flush, &[Ok::<(), ()>(())]);
    assert_eq!(reconcile(&desired, &observed, &terminations), vec![]);
}

#[test]
fn reconcile_changes_sees_only_the_changed_keys() {
    let desired = dns_plan(vec![ep("10.244.1.5", "node-a")]);
    let mut observed = converge(&desired, &Observed::default());
    // Drift on the dns service is invisible to an incremental reconcile about another key...
    observed
        .ipvs
        .services
        .get_mut(&udp("10.96.0.10", 53))
        .unwrap()
        .real_servers
        .clear();
    let changes = crate::plan::Changes {
        services: [tcp("10.96.0.1", 1)].into(),
        addresses: BTreeSet::new(),
        packet_rules: false,
    };
    assert_eq!(
        reconcile_changes(&desired, &observed, &Terminations::new(), &changes),
        vec![]
    );
    // ...and repaired by the full one (periodic resync).
    let ops = reconcile(&desired, &observed, &Terminations::new());
    assert!(matches!(ops[0], Op::AddRealServer { .. }), "{ops:?}");
}

// ---- properties ----

fn arb_endpoint() -> impl Strategy<Value = Endpoint> {
    (1u8..6, prop::bool::ANY, 0u8..3, prop::bool::ANY).prop_map(|(host, local, state, serving)| {
        let node = if local { "node-a" } else { "node-b" };
        let address = format!("10.244.{}.{host}", u8::from(local) + 1);
        match state {
            0 => ep(&address, node),
            1 => terminating(&address, node, serving),
            _ => Endpoint {
                ready: false,
                serving: false,
                ..ep(&address, node)
            },
        }
    })
}

fn arb_desired() -> impl Strategy<Value = DesiredState> {
    let svc = (
        1u8..5,
        prop::bool::ANY,
        prop::bool::ANY,
        prop::bool::ANY,
        prop::collection::vec(arb_endpoint(), 0..6),
    );
    prop::collection::vec(svc, 0..4).prop_map(|services| {
        let mut svcs = Vec::new();
        let mut slices = Vec::new();
        for (i, (vip, is_udp, node_port, etp_local, endpoints)) in services.into_iter().enumerate()
        {
            let svc_name = format!("s{i}");
            let protocol = if is_udp { Udp } else { Tcp };
            let vip = format!("10.96.0.{vip}");
            svcs.push(with_ports(
                service(&svc_name, &[&vip], &[("p", protocol, 80)]),
                |p| {
                    p.node_port = node_port.then_some(30000 + i as u16);
                    if etp_local {
                        p.external_policy = TrafficPolicy::Local;
                    }
                },
            ));
            slices.push(slice(&svc_name, "s", &[("p", protocol, 8080)], endpoints));
        }
        plan(cluster(svcs, slices))
    })
}

/// Observed state: a mix of possibly-ours and foreign virtual servers and bound addresses.
fn arb_observed() -> impl Strategy<Value = Observed> {
    let key = prop_oneof![
        (1u8..5, prop::bool::ANY).prop_map(|(h, u)| if u {
            udp(&format!("10.96.0.{h}"), 80)
        } else {
            tcp(&format!("10.96.0.{h}"), 80)
        }),
        (0u16..3).prop_map(|p| tcp("192.168.1.10", 30000 + p)),
        (0u8..3).prop_map(|h| tcp(&format!("10.0.0.{h}"), 80)),
        (0u32..2).prop_map(|m| ServiceKey::FwMark {
            mark: m + 5,
            family: netlink_ipvs::Family::V4
        }),
    ];
    let real =
        (1u8..6, 1u8..3, 0u32..3).prop_map(|(h, n, w)| rs(&format!("10.244.{n}.{h}"), 8080, w));
    let service =
        (key, prop::collection::vec(real, 0..5), prop::bool::ANY).prop_map(|(key, rss, wrr)| {
            let mut vs = VirtualServer::new(key);
            if wrr {
                vs.scheduler = "wrr".into();
            }
            let real_servers = rss.into_iter().map(|r| (r.key, r)).collect();
            (
                key,
                ServiceState {
                    service: vs,
                    real_servers,
                },
            )
        });
    let addresses =
        prop::collection::btree_set((1u8..5).prop_map(|h| ip(&format!("10.96.0.{h}"))), 0..4);
    (prop::collection::vec(service, 0..6), addresses).prop_map(|(services, addresses)| Observed {
        ipvs: netlink_ipvs::IpvsState {
            services: services.into_iter().collect(),
        },
        addresses,
    })
}

fn touched(op: &Op) -> Option<ServiceKey> {
    match op {
        Op::AddVirtualServer(vs) | Op::UpdateVirtualServer(vs) => Some(vs.key),
        Op::DeleteVirtualServer(k) => Some(*k),
        Op::AddRealServer { service, .. }
        | Op::UpdateRealServer { service, .. }
        | Op::DeleteRealServer { service, .. } => Some(*service),
        _ => None,
    }
}

proptest! {
    #[test]
    fn applying_reconcile_converges(desired in arb_desired(), observed in arb_observed()) {
        let ops = reconcile(&desired, &observed, &Terminations::new());
        let after = apply(&observed, &ops);
        prop_assert_eq!(reconcile(&desired, &after, &Terminations::new()), vec![]);
        // Every desired virtual server exists with exactly its serving real servers plus
        // drained ones that already existed.
        for (key, want) in &desired.virtual_servers {
            let have = &after.ipvs.services[key];
            for (k, rs) in &want.real_servers {
                match (rs.intent, have.real_servers.get(k)) {
                    (crate::plan::RealServerIntent::Serve, Some(h)) => prop_assert_eq!(h.weight, 1),
                    (crate::plan::RealServerIntent::Serve, None) => prop_assert!(false, "missing {}", k),
                    (crate::plan::RealServerIntent::Drain, Some(h)) => prop_assert_eq!(h.weight, 0),
                    (crate::plan::RealServerIntent::Drain, None) => {}
                    (crate::plan::RealServerIntent::Remove, h) => prop_assert!(h.is_none(), "removed {} still there", k),
                }
            }
        }
    }

    #[test]
    fn ops_never_touch_foreign_objects(desired in arb_desired(), observed in arb_observed()) {
        let ops = reconcile(&desired, &observed, &Terminations::new());
        let foreign: BTreeSet<ServiceKey> = observed.ipvs.services.keys()
            .filter(|k| !owned(&desired, &observed, k) && !desired.virtual_servers.contains_key(k))
            .copied().collect();
        for op in &ops {
            if let Some(key) = touched(op) {
                prop_assert!(!foreign.contains(&key), "{} touches foreign {}", op, key);
            }
            if let Op::UnbindAddress(a) = op {
                prop_assert!(!desired.addresses.contains_key(a));
            }
        }
        let after = apply(&observed, &ops);
        for key in &foreign {
            prop_assert_eq!(&after.ipvs.services[key], &observed.ipvs.services[key]);
        }
    }

    #[test]
    fn services_exist_before_their_real_servers_and_binds_precede_them(desired in arb_desired(), observed in arb_observed()) {
        let ops = reconcile(&desired, &observed, &Terminations::new());
        let mut created = BTreeSet::new();
        let mut deleted = BTreeSet::new();
        let mut seen_vs_op = false;
        for op in &ops {
            match op {
                Op::BindAddress(_) => prop_assert!(!seen_vs_op, "bind after a service op"),
                Op::AddVirtualServer(vs) => { created.insert(vs.key); }
                Op::DeleteVirtualServer(k) => { deleted.insert(*k); }
                Op::AddRealServer { service, .. } | Op::UpdateRealServer { service, .. } | Op::DeleteRealServer { service, .. } => {
                    prop_assert!(created.contains(service) || observed.ipvs.services.contains_key(service));
                    prop_assert!(!deleted.contains(service), "real server op after its service was deleted");
                }
                _ => {}
            }
            seen_vs_op |= touched(op).is_some();
        }
    }

    #[test]
    fn incremental_reconcile_over_all_keys_equals_full(desired in arb_desired(), observed in arb_observed()) {
        let changes = crate::plan::Changes {
            services: desired.virtual_servers.keys().chain(observed.ipvs.services.keys()).copied().collect(),
            addresses: desired.addresses.keys().chain(observed.addresses.iter()).copied().collect(),
            packet_rules: true,
        };
        prop_assert_eq!(
            reconcile_changes(&desired, &observed, &Terminations::new(), &changes),
            reconcile(&desired, &observed, &Terminations::new())
        );
    }
}

/// Issue 12 item 3: the ownership rule as a table. The node 192.168.1.10 runs keepalived
/// (VIP 192.168.50.10, also a Service's externalIP) next to proxier; `excludeCIDRs` holds
/// 10.96.1.0/24. Every row: a virtual server the plan does not want, and whether it is ours.
/// Rows marked "old: ours" were deleted by the rule before this change.
#[test]
fn ownership_rule_table() {
    let svc = with_ports(service("web", &["10.96.0.20"], &[("http", Tcp, 80)]), |p| {
        p.external_ips = vec![ip("192.168.50.10")];
        p.node_port = Some(30080);
    });
    let slices = vec![slice(
        "web",
        "web-1",
        &[("http", Tcp, 8080)],
        vec![ep("10.244.1.5", "node-a")],
    )];
    let config = crate::config::Config {
        exclude_cidrs: vec![(ip("10.96.1.0"), 24)],
        ..crate::config::Config::default()
    };
    let desired = plan_with(cluster(vec![svc], slices), config);
    let mut observed = converge(&desired, &Observed::default());
    // Bound on kube-ipvs0 in the kernel: ours (ClusterIP, externalIP) and a stale/excluded one.
    for address in ["10.96.0.99", "10.96.1.7"] {
        observed.addresses.insert(ip(address));
    }
    let endpoint = |address: &str, port: u16| {
        let real_server = RealServer::masq(ip(address), port);
        [(real_server.key, real_server)].into_iter().collect()
    };
    // (virtual server, its one real server, ours?, why)
    let rows = [
        (
            tcp("192.168.50.10", 443),
            Some(("192.168.50.20", 443)),
            false,
            "keepalived on a shared VIP (old: ours)",
        ),
        (
            udp("192.168.50.10", 53),
            None,
            false,
            "keepalived on a shared VIP, no real server (old: ours)",
        ),
        (
            tcp("192.168.1.10", 30500),
            Some(("192.168.50.21", 80)),
            false,
            "keepalived on node IP, NodePort range (old: ours)",
        ),
        (
            tcp("192.168.1.10", 31000),
            None,
            false,
            "node IP, NodePort range, no evidence (old: ours)",
        ),
        (
            tcp("192.168.1.10", 443),
            None,
            false,
            "node IP outside the NodePort range",
        ),
        (
            tcp("10.0.0.99", 80),
            None,
            false,
            "an address not on kube-ipvs0",
        ),
        (
            tcp("10.96.1.7", 80),
            None,
            false,
            "bound, but inside excludeCIDRs (old: ours)",
        ),
        (
            tcp("10.96.0.99", 80),
            None,
            true,
            "stale, VIP bound on kube-ipvs0",
        ),
        (
            tcp("10.96.0.20", 8443),
            None,
            true,
            "stale port on our ClusterIP",
        ),
        (
            udp("192.168.1.10", 30080),
            None,
            false,
            "our NodePort number, other protocol",
        ),
        (
            tcp("192.168.1.10", 30999),
            Some(("10.244.1.5", 8080)),
            true,
            "NodePort left from before a restart: shares our endpoint",
        ),
        (
            tcp("192.168.1.10", 30998),
            Some(("10.244.1.5", 9999)),
            false,
            "same pod IP, other port: no evidence",
        ),
    ];
    for (key, real_server, _, _) in &rows {
        let state = ServiceState {
            service: VirtualServer::new(*key),
            real_servers: real_server.map_or_else(Default::default, |(a, p)| endpoint(a, p)),
        };
        observed.ipvs.services.insert(*key, state);
    }
    let mut wrong = Vec::new();
    for (key, _, ours, why) in &rows {
        if owned(&desired, &observed, key) != *ours {
            wrong.push(format!("{key}: expected ours={ours} ({why})"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    // The planned NodePort (present) and the planned externalIP key are ours; they are wanted.
    assert!(owned(&desired, &observed, &tcp("192.168.1.10", 30080)));
    assert!(owned(&desired, &observed, &tcp("192.168.50.10", 80)));
    let ops = reconcile(&desired, &observed, &Terminations::new());
    let deleted: Vec<String> = ops
        .iter()
        .filter_map(|op| match op {
            Op::DeleteVirtualServer(k) => Some(k.to_string()),
            _ => None,
        })
        .collect();
    println!("item 3 table: {} rows; deleted: {deleted:?}", rows.len());
    assert_eq!(
        deleted.len(),
        rows.iter().filter(|r| r.2).count(),
        "{deleted:?}"
    );
}

/// Issue 12 item 3 through the engine: kube-proxy left a virtual server for the same Service
/// (other scheduler, an old real server), and keepalived has virtual servers on the Service's
/// externalIP and on the node IP in the NodePort range. A full sync adopts and manages
/// kube-proxy's (updated in place, never deleted and re-created) and leaves keepalived's
/// byte-identical, also after the Service is deleted.
#[test]
fn adopts_kube_proxys_virtual_server_and_never_touches_keepalived() {
    use crate::config::Config;
    use crate::plan::Planner;
    use crate::runtime::Proxier;

    let svc = with_ports(service("web", &["10.96.0.20"], &[("http", Tcp, 80)]), |p| {
        p.external_ips = vec![ip("192.168.50.10")];
        p.node_port = Some(30080);
    });
    let slices = vec![slice(
        "web",
        "web-1",
        &[("http", Tcp, 8080)],
        vec![ep("10.244.1.5", "node-a")],
    )];
    let mut kernel = Observed::default();
    let mut put = |key: ServiceKey, scheduler: &str, real_servers: &[(&str, u16)]| {
        let mut vs = VirtualServer::new(key);
        vs.scheduler = scheduler.into();
        let real_servers = real_servers
            .iter()
            .map(|(a, p)| {
                let rs = RealServer::masq(ip(a), *p);
                (rs.key, rs)
            })
            .collect();
        kernel.ipvs.services.insert(
            key,
            ServiceState {
                service: vs,
                real_servers,
            },
        );
    };
    // kube-proxy's, for the same Service: an old endpoint.
    put(tcp("10.96.0.20", 80), "rr", &[("10.244.9.9", 8080)]);
    // keepalived's.
    put(tcp("192.168.50.10", 443), "wrr", &[("192.168.50.20", 443)]);
    put(tcp("192.168.1.10", 30500), "lc", &[("192.168.50.21", 80)]);
    kernel.addresses.insert(ip("10.96.0.20"));
    // keepalived's VIP is not on kube-ipvs0 (it is on eth0): proxier binds it for the
    // externalIP, as kube-proxy does.
    let foreign = [tcp("192.168.50.10", 443), tcp("192.168.1.10", 30500)];
    let before: Vec<ServiceState> = foreign
        .iter()
        .map(|k| kernel.ipvs.services[k].clone())
        .collect();

    let mut proxier = Proxier::new(
        Planner::new(node_a(), Config::default()),
        FakeDataplane::with_state(kernel),
    );
    *proxier.cluster_mut() = cluster(vec![svc], slices);
    let outcome = proxier.full_sync().unwrap();
    assert_eq!(outcome.failed, 0, "{outcome:?}");
    let log = proxier.dataplane_mut().log.clone();
    let adopted = tcp("10.96.0.20", 80);
    assert!(
        !log.iter().any(|op| matches!(op, Op::DeleteVirtualServer(k) | Op::AddVirtualServer(VirtualServer { key: k, .. }) if *k == adopted)),
        "kube-proxy's virtual server is adopted, not re-created: {log:#?}"
    );
    let state = &proxier.dataplane_mut().state;
    let adopted_rs: Vec<String> = state.ipvs.services[&adopted]
        .real_servers
        .values()
        .filter(|rs| rs.weight > 0)
        .map(|rs| rs.key.to_string())
        .collect();
    assert_eq!(
        adopted_rs,
        ["10.244.1.5:8080"],
        "managed: its serving real servers follow the slice"
    );
    // kube-proxy's old TCP endpoint left without a terminating phase we saw: it may be alive
    // (issue 13 item 6), so it drains at weight 0 for the bound instead of being cut.
    let old = &state.ipvs.services[&adopted].real_servers[&rs("10.244.9.9", 8080, 0).key];
    assert_eq!(old.weight, 0, "{old:?}");
    for (key, was) in foreign.iter().zip(&before) {
        assert_eq!(&state.ipvs.services[key], was, "{key} changed");
    }
    // The Service goes away: its objects are deleted, keepalived's still untouched.
    *proxier.cluster_mut() = cluster(vec![], vec![]);
    let outcome = proxier.full_sync().unwrap();
    assert_eq!(outcome.failed, 0, "{outcome:?}");
    let state = &proxier.dataplane_mut().state;
    let left: Vec<String> = state
        .ipvs
        .services
        .keys()
        .map(ToString::to_string)
        .collect();
    for (key, was) in foreign.iter().zip(&before) {
        assert_eq!(
            &state.ipvs.services[key], was,
            "{key} changed after the Service left"
        );
    }
    assert_eq!(left.len(), 2, "only keepalived's are left: {left:?}");
    println!("item 3 engine: adopted {adopted} without a flap; left after the Service's deletion: {left:?}");
}
