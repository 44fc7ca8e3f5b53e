//! Table tests, one per planning rule; each names the kube-proxy behaviour it follows or fixes.

use std::collections::BTreeSet;

use netlink_ipvs::{Family, Protocol::*, ServiceFlags, ServiceKey};

use super::*;
use crate::config::{Config, NodePortAddress};
use crate::fixtures::*;
use crate::model::{SessionAffinity, TrafficPolicy};

const HTTP: &[(&str, netlink_ipvs::Protocol, u16)] = &[("http", Tcp, 80)];
const HTTP_TARGET: &[(&str, netlink_ipvs::Protocol, u16)] = &[("http", Tcp, 8080)];

fn web(f: impl Fn(&mut crate::model::ServicePort)) -> crate::model::Service {
    with_ports(service("web", &["10.96.0.20"], HTTP), f)
}

#[test]
fn one_virtual_server_per_cluster_ip_port_and_protocol() {
    // kube-proxy ipvs syncProxyRules: one VS per (ClusterIP, port, protocol).
    let dns = service(
        "dns",
        &["10.96.0.10"],
        &[("dns", Udp, 53), ("dns-tcp", Tcp, 53)],
    );
    let slices = vec![slice(
        "dns",
        "dns-1",
        &[("dns", Udp, 5353), ("dns-tcp", Tcp, 5353)],
        vec![ep("10.244.1.5", "node-a")],
    )];
    let desired = plan(cluster(vec![dns], slices));
    let keys: Vec<_> = desired.virtual_servers.keys().copied().collect();
    assert_eq!(keys, vec![tcp("10.96.0.10", 53), udp("10.96.0.10", 53)]);
    assert_eq!(
        serving(&desired, &udp("10.96.0.10", 53)),
        set(&["10.244.1.5:5353"])
    );
    assert_eq!(
        desired.addresses.keys().copied().collect::<Vec<_>>(),
        vec![ip("10.96.0.10")]
    );
}

#[test]
fn external_ips_load_balancer_ips_and_node_ports_per_node_ip() {
    // kube-proxy ipvs: VS for each externalIP, LB ingress IP and node IP:NodePort; the
    // external and LB IPs are bound to kube-ipvs0, node IPs are not.
    let svc = web(|p| {
        p.external_ips = vec![ip("198.51.100.7")];
        p.load_balancer_ips = vec![ip("203.0.113.10")];
        p.node_port = Some(30080);
    });
    let desired = plan(cluster(vec![svc], vec![]));
    let keys: Vec<_> = desired.virtual_servers.keys().copied().collect();
    assert_eq!(
        keys,
        vec![
            tcp("10.96.0.20", 80),
            tcp("192.168.1.10", 30080),
            tcp("198.51.100.7", 80),
            tcp("203.0.113.10", 80)
        ]
    );
    let bound: Vec<_> = desired.addresses.keys().copied().collect();
    assert_eq!(
        bound,
        vec![ip("10.96.0.20"), ip("198.51.100.7"), ip("203.0.113.10")]
    );
    let nothing_bound = (BTreeSet::new(), netlink_ipvs::IpvsState::default());
    let kernel = crate::plan::KernelView {
        bound: &nothing_bound.0,
        plan: None,
        ipvs: &nothing_bound.1,
    };
    assert!(desired.ownership.owns(&tcp("192.168.1.10", 30080), &kernel));
}

#[test]
fn node_port_addresses_select_node_ips() {
    // kube-proxy nodePortAddresses: NodePorts open only on node IPs inside the CIDRs.
    let config = Config {
        node_port_addresses: vec![NodePortAddress::parse("10.0.0.0/8").unwrap()],
        ..Config::default()
    };
    let desired = plan_with(
        cluster(vec![web(|p| p.node_port = Some(30080))], vec![]),
        config,
    );
    assert_eq!(
        desired.virtual_servers.len(),
        1,
        "no node IP in 10.0.0.0/8: ClusterIP only"
    );
}

#[test]
fn dual_stack_service_gets_a_virtual_server_per_family_with_that_familys_endpoints() {
    // kube-proxy runs one proxier per family (metaproxier); each sees its family's slices.
    let svc = service(
        "api",
        &["10.96.0.30", "fd00:96::30"],
        &[("https", Tcp, 443)],
    );
    let v4 = slice(
        "api",
        "api-v4",
        &[("https", Tcp, 8443)],
        vec![ep("10.244.1.40", "node-a")],
    );
    let v6 = slice(
        "api",
        "api-v6",
        &[("https", Tcp, 8443)],
        vec![ep("fd00:244::40", "node-a")],
    );
    let desired = plan(cluster(vec![svc], vec![v4, v6]));
    assert_eq!(
        serving(&desired, &tcp("10.96.0.30", 443)),
        set(&["10.244.1.40:8443"])
    );
    assert_eq!(
        serving(&desired, &tcp("fd00:96::30", 443)),
        set(&["[fd00:244::40]:8443"])
    );
}

#[test]
fn target_port_resolved_by_slice_port_name_and_protocol() {
    // kube-proxy EndpointSliceCache keys endpoints by (port name, protocol); a slice port
    // of another protocol with the same name does not match.
    let svc = service("web", &["10.96.0.20"], &[("http", Tcp, 80), ("", Udp, 80)]);
    let slices = vec![slice(
        "web",
        "web-1",
        &[("http", Udp, 9999), ("http", Tcp, 8080), ("", Udp, 8081)],
        vec![ep("10.244.1.5", "node-a")],
    )];
    let desired = plan(cluster(vec![svc], slices));
    assert_eq!(
        serving(&desired, &tcp("10.96.0.20", 80)),
        set(&["10.244.1.5:8080"])
    );
    assert_eq!(
        serving(&desired, &udp("10.96.0.20", 80)),
        set(&["10.244.1.5:8081"])
    );
}

#[test]
fn endpoints_are_deduplicated_across_slices_preferring_the_ready_copy() {
    // kube-proxy EndpointSliceCache dedups by IP:port across a Service's slices.
    let slices = vec![
        slice(
            "web",
            "web-a",
            HTTP_TARGET,
            vec![terminating("10.244.1.5", "node-a", true)],
        ),
        slice(
            "web",
            "web-b",
            HTTP_TARGET,
            vec![ep("10.244.1.5", "node-a"), ep("10.244.2.6", "node-b")],
        ),
    ];
    let desired = plan(cluster(vec![web(|_| {})], slices));
    assert_eq!(
        real_servers(&desired, &tcp("10.96.0.20", 80)),
        vec![
            ("10.244.1.5:8080".into(), true),
            ("10.244.2.6:8080".into(), true)
        ]
    );
}

#[test]
fn kep_1669_terminating_endpoints() {
    // kube-proxy CategorizeEndpoints: ready endpoints; if none, serving+terminating ones.
    // A terminating endpoint beside ready ones drains (weight 0 only if it exists).
    type Case = (
        &'static str,
        Vec<crate::model::Endpoint>,
        &'static [&'static str],
        &'static [&'static str],
    );
    let cases: Vec<Case> = vec![
        (
            "ready ones exist: terminating drains",
            vec![
                ep("10.244.1.1", "node-a"),
                terminating("10.244.1.2", "node-a", true),
            ],
            &["10.244.1.1:8080"],
            &["10.244.1.2:8080"],
        ),
        (
            "none ready: serving terminating ones serve",
            vec![
                terminating("10.244.1.2", "node-a", true),
                terminating("10.244.1.3", "node-b", false),
            ],
            &["10.244.1.2:8080"],
            &["10.244.1.3:8080"],
        ),
        (
            "not ready, not terminating: drains",
            vec![
                ep("10.244.1.1", "node-a"),
                crate::model::Endpoint {
                    ready: false,
                    serving: false,
                    ..ep("10.244.1.4", "node-b")
                },
            ],
            &["10.244.1.1:8080"],
            &["10.244.1.4:8080"],
        ),
    ];
    for (what, endpoints, serve, drain) in cases {
        let desired = plan(cluster(
            vec![web(|_| {})],
            vec![slice("web", "s", HTTP_TARGET, endpoints)],
        ));
        let key = tcp("10.96.0.20", 80);
        assert_eq!(serving(&desired, &key), set(serve), "{what}");
        let drained: BTreeSet<String> = real_servers(&desired, &key)
            .into_iter()
            .filter(|(_, s)| !s)
            .map(|(k, _)| k)
            .collect();
        assert_eq!(drained, set(drain), "{what}");
        // Never created: the IPVS table of an empty node does not have it.
        let table = desired.to_ipvs_state();
        assert_eq!(
            table.services[&key].real_servers.len(),
            serve.len(),
            "{what}"
        );
    }
}

#[test]
fn internal_traffic_policy_local_keeps_cluster_ip_on_local_endpoints_only() {
    // Kubernetes ITP=Local semantics (kube-proxy ipvs leaks to all endpoints when the
    // Service is also external; proxier does not).
    let svc = web(|p| {
        p.internal_policy = TrafficPolicy::Local;
        p.node_port = Some(30080);
    });
    let endpoints = vec![ep("10.244.1.1", "node-a"), ep("10.244.2.1", "node-b")];
    let desired = plan(cluster(
        vec![svc.clone()],
        vec![slice("web", "s", HTTP_TARGET, endpoints)],
    ));
    assert_eq!(
        serving(&desired, &tcp("10.96.0.20", 80)),
        set(&["10.244.1.1:8080"])
    );
    // ETP=Cluster: the NodePort keeps all endpoints.
    assert_eq!(serving(&desired, &tcp("192.168.1.10", 30080)).len(), 2);
    // No local endpoint: no serving real server (kube-proxy ipvs would use all).
    let remote_only = vec![ep("10.244.2.1", "node-b")];
    let desired = plan(cluster(
        vec![svc],
        vec![slice("web", "s", HTTP_TARGET, remote_only)],
    ));
    assert!(serving(&desired, &tcp("10.96.0.20", 80)).is_empty());
}

#[test]
fn external_traffic_policy_local_splits_external_traffic_onto_a_fwmark_service() {
    // iptables-mode semantics: external traffic → local endpoints only; traffic from pods
    // and the node to the same destinations → all endpoints. kube-proxy ipvs instead
    // serves ETP=Local with all endpoints when none is local (PR #97081, issue #71596).
    let svc = web(|p| {
        p.external_policy = TrafficPolicy::Local;
        p.node_port = Some(30080);
        p.load_balancer_ips = vec![ip("203.0.113.10")];
    });
    let endpoints = vec![ep("10.244.1.1", "node-a"), ep("10.244.2.1", "node-b")];
    let desired = plan(cluster(
        vec![svc],
        vec![slice("web", "s", HTTP_TARGET, endpoints)],
    ));
    for key in [
        tcp("10.96.0.20", 80),
        tcp("192.168.1.10", 30080),
        tcp("203.0.113.10", 80),
    ] {
        assert_eq!(
            serving(&desired, &key).len(),
            2,
            "{key}: internal traffic, all endpoints"
        );
    }
    let (mark, rule) = desired.external_local.iter().next().unwrap();
    let fwm = ServiceKey::FwMark {
        mark: *mark,
        family: Family::V4,
    };
    assert_eq!(serving(&desired, &fwm), set(&["10.244.1.1:8080"]));
    assert_eq!(
        desired.virtual_servers[&fwm].role,
        VirtualServerRole::ExternalLocal
    );
    assert_eq!(
        rule.destinations,
        vec![(ip("203.0.113.10"), 80), (ip("192.168.1.10"), 30080)]
    );
    let nothing_bound = (BTreeSet::new(), netlink_ipvs::IpvsState::default());
    let kernel = crate::plan::KernelView {
        bound: &nothing_bound.0,
        plan: None,
        ipvs: &nothing_bound.1,
    };
    assert!(desired.ownership.owns(&fwm, &kernel));
}

#[test]
fn both_policies_local_use_local_endpoints_for_external_destinations_too() {
    // kube-proxy CategorizeEndpoints: with ITP and ETP Local no cluster endpoint set exists.
    let svc = web(|p| {
        p.external_policy = TrafficPolicy::Local;
        p.internal_policy = TrafficPolicy::Local;
        p.node_port = Some(30080);
    });
    let endpoints = vec![ep("10.244.1.1", "node-a"), ep("10.244.2.1", "node-b")];
    let desired = plan(cluster(
        vec![svc],
        vec![slice("web", "s", HTTP_TARGET, endpoints)],
    ));
    assert_eq!(
        serving(&desired, &tcp("192.168.1.10", 30080)),
        set(&["10.244.1.1:8080"])
    );
}

fn hinted(address: &str, node: &str, zones: &[&str]) -> crate::model::Endpoint {
    crate::model::Endpoint {
        hints: crate::model::Hints::boxed(set(zones), BTreeSet::new()),
        ..ep(address, node)
    }
}

#[test]
fn topology_hints_with_kube_proxy_fallbacks() {
    // kube-proxy reads the hints only, never spec.trafficDistribution (topologyModeFromHints:
    // the EndpointSlice controller turns trafficDistribution into hints), so the model has no
    // such field.
    // kube-proxy canUseTopology: use zone hints only if every ready endpoint has hints and
    // one is for our zone; otherwise all endpoints.
    let cases: Vec<(&str, Vec<crate::model::Endpoint>, usize)> = vec![
        (
            "hints for our zone",
            vec![
                hinted("10.244.1.1", "n1", &["zone-a"]),
                hinted("10.244.2.1", "n2", &["zone-b"]),
            ],
            1,
        ),
        (
            "one ready endpoint without hints",
            vec![
                hinted("10.244.1.1", "n1", &["zone-a"]),
                hinted("10.244.2.1", "n2", &[]),
            ],
            2,
        ),
        (
            "no endpoint for our zone",
            vec![
                hinted("10.244.1.1", "n1", &["zone-c"]),
                hinted("10.244.2.1", "n2", &["zone-b"]),
            ],
            2,
        ),
    ];
    for (what, endpoints, expected) in cases {
        let desired = plan(cluster(
            vec![web(|_| {})],
            vec![slice("web", "s", HTTP_TARGET, endpoints)],
        ));
        assert_eq!(
            serving(&desired, &tcp("10.96.0.20", 80)).len(),
            expected,
            "{what}"
        );
    }
    // PreferSameNode: node hints win over zone hints when all have them and one is ours.
    let by_node = vec![
        crate::model::Endpoint {
            hints: crate::model::Hints::boxed(set(&["zone-a"]), set(&["node-a"])),
            ..ep("10.244.1.1", "node-a")
        },
        crate::model::Endpoint {
            hints: crate::model::Hints::boxed(set(&["zone-a"]), set(&["node-c"])),
            ..ep("10.244.1.2", "node-c")
        },
    ];
    let desired = plan(cluster(
        vec![web(|_| {})],
        vec![slice("web", "s", HTTP_TARGET, by_node)],
    ));
    assert_eq!(
        serving(&desired, &tcp("10.96.0.20", 80)),
        set(&["10.244.1.1:8080"])
    );
}

#[test]
fn client_ip_affinity_and_scheduler_flags() {
    // kube-proxy ipvs: ClientIP → FlagPersistent + timeout; scheduler mh → FlagSourceHash
    // (0x10, mh-port).
    let svc = web(|p| {
        p.affinity = SessionAffinity::ClientIp {
            timeout_seconds: 600,
        }
    });
    let config = Config {
        scheduler: "mh".into(),
        ..Config::default()
    };
    let desired = plan_with(cluster(vec![svc], vec![]), config);
    let vs = &desired.virtual_servers[&tcp("10.96.0.20", 80)].service;
    assert_eq!(vs.scheduler, "mh");
    assert_eq!(vs.flags, ServiceFlags::PERSISTENT | ServiceFlags::SCHED2);
    assert_eq!(vs.timeout, 600);
    let plain = plan(cluster(vec![web(|_| {})], vec![]));
    let vs = &plain.virtual_servers[&tcp("10.96.0.20", 80)].service;
    assert_eq!(
        (vs.scheduler.name(), vs.flags, vs.timeout),
        ("rr", ServiceFlags(0), 0)
    );
}

#[test]
fn replanning_touches_only_the_dirty_service_and_equals_a_full_plan() {
    let mut state = cluster(
        vec![
            web(|_| {}),
            service("db", &["10.96.0.40"], &[("sql", Tcp, 5432)]),
        ],
        vec![slice(
            "web",
            "s",
            HTTP_TARGET,
            vec![ep("10.244.1.1", "node-a")],
        )],
    );
    let mut planner = Planner::new(node_a(), Config::default());
    planner.plan_all(&mut state);
    state.upsert_slice(slice(
        "web",
        "s",
        HTTP_TARGET,
        vec![ep("10.244.1.2", "node-a")],
    ));
    let changes = planner.replan(&mut state);
    assert_eq!(
        changes.services.into_iter().collect::<Vec<_>>(),
        vec![tcp("10.96.0.20", 80)]
    );
    let mut fresh = Planner::new(node_a(), Config::default());
    fresh.plan_all(&mut state);
    assert_eq!(planner.desired(), fresh.desired());
    // Deleting a Service removes its virtual servers and addresses.
    state.remove_service(&name("db"));
    planner.replan(&mut state);
    assert!(!planner
        .desired()
        .virtual_servers
        .contains_key(&tcp("10.96.0.40", 5432)));
    assert!(!planner.desired().addresses.contains_key(&ip("10.96.0.40")));
}

#[test]
fn a_contested_virtual_server_stays_with_its_first_service() {
    let a = with_ports(service("a", &["10.96.0.1"], HTTP), |p| {
        p.external_ips = vec![ip("198.51.100.7")]
    });
    let b = with_ports(service("b", &["10.96.0.2"], HTTP), |p| {
        p.external_ips = vec![ip("198.51.100.7")]
    });
    let mut state = cluster(vec![a, b], vec![]);
    let mut planner = Planner::new(node_a(), Config::default());
    planner.plan_all(&mut state);
    assert_eq!(planner.conflicts().len(), 1);
    assert_eq!(
        planner.desired().virtual_servers[&tcp("198.51.100.7", 80)]
            .owner
            .service,
        name("a")
    );
    // The shared address is bound while either uses it.
    assert_eq!(planner.desired().addresses[&ip("198.51.100.7")], 2);
}

#[test]
fn fwmarks_are_stable_across_planners() {
    let svc = web(|p| {
        p.external_policy = TrafficPolicy::Local;
        p.node_port = Some(30080);
    });
    let first = plan(cluster(vec![svc.clone()], vec![]));
    let second = plan(cluster(vec![svc], vec![]));
    assert_eq!(
        first.external_local.keys().collect::<Vec<_>>(),
        second.external_local.keys().collect::<Vec<_>>()
    );
    let mark = *first.external_local.keys().next().unwrap();
    assert!((crate::config::DEFAULT_FWMARK_BASE
        ..crate::config::DEFAULT_FWMARK_BASE + crate::config::FWMARK_COUNT)
        .contains(&mark));
}

/// (case, given IPs, primary IP, Node object, wanted node IPs).
type NodeAddressCase<'a> = (
    &'a str,
    Vec<IpAddr>,
    Option<IpAddr>,
    Option<&'a crate::model::Node>,
    Vec<IpAddr>,
);

#[test]
fn node_addresses_resolve_the_same_way_for_every_command() {
    // kube-proxy: --node-ip wins; otherwise the primary IP (bindAddress) then the Node's IPs.
    let node = crate::model::Node {
        name: "node-a".into(),
        internal_ips: vec![ip("10.0.1.1"), ip("10.0.1.2")],
        zone: Some("zone-a".into()),
    };
    let cases: [NodeAddressCase<'_>; 4] = [
        (
            "given IPs win",
            vec![ip("192.0.2.1")],
            Some(ip("10.0.1.9")),
            Some(&node),
            vec![ip("192.0.2.1")],
        ),
        (
            "primary first, no duplicate",
            vec![],
            Some(ip("10.0.1.2")),
            Some(&node),
            vec![ip("10.0.1.2"), ip("10.0.1.1")],
        ),
        (
            "the Node's IPs",
            vec![],
            None,
            Some(&node),
            vec![ip("10.0.1.1"), ip("10.0.1.2")],
        ),
        ("no Node", vec![], None, None, vec![]),
    ];
    for (case, given, primary, node_object, want) in cases {
        let context = NodeContext::resolve("node-a".into(), given, primary, node_object);
        assert_eq!(context.node_ips, want, "{case}");
        let zone = node_object.and_then(|n| n.zone.clone());
        assert_eq!(context.zone, zone, "{case}");
    }
}

/// Issue 12 item 9: virtual servers on 0.0.0.0, 127.0.0.1, 224.0.0.1 and 255.255.255.255
/// (and ::, ::1), and real servers on 127.0.0.1, are not planned (kube-proxy skips them);
/// the rest of the Service is.
#[test]
fn unroutable_addresses_are_never_planned() {
    let svc = web(|p| {
        p.external_ips = [
            "0.0.0.0",
            "127.0.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "198.51.100.7",
        ]
        .iter()
        .map(|a| ip(a))
        .collect();
        p.load_balancer_ips = vec![ip("127.0.0.2")];
    });
    let slices = vec![slice(
        "web",
        "web-1",
        HTTP,
        vec![ep("127.0.0.1", "node-a"), ep("10.244.1.5", "node-a")],
    )];
    let desired = plan(cluster(vec![svc], slices));
    let keys: Vec<String> = desired
        .virtual_servers
        .keys()
        .map(ToString::to_string)
        .collect();
    assert_eq!(keys, ["TCP  10.96.0.20:80", "TCP  198.51.100.7:80"]);
    let addresses: Vec<String> = desired.addresses.keys().map(ToString::to_string).collect();
    assert_eq!(addresses, ["10.96.0.20", "198.51.100.7"]);
    for vs in desired.virtual_servers.values() {
        let rs: Vec<String> = vs.real_servers.keys().map(ToString::to_string).collect();
        assert_eq!(rs, ["10.244.1.5:80"], "{}", vs.service.key);
    }
    for address in [
        "::",
        "::1",
        "ff02::1",
        "0.0.0.0",
        "127.0.0.1",
        "224.0.0.1",
        "255.255.255.255",
    ] {
        assert!(!crate::plan::routable(&ip(address)), "{address}");
    }
    assert!(crate::plan::routable(&ip("10.96.0.1")));
}

/// Issue 13 item 5: the fate of an endpoint of one virtual server, per protocol and state
/// (kube-proxy deletes unselected UDP/SCTP real servers at once and flushes flows whose reply
/// source is not serving; TCP drains).
#[test]
fn real_server_intent_by_protocol_and_state() {
    use crate::plan::{real_server_intent, RealServerIntent::*};
    use netlink_ipvs::Protocol::{Sctp, Tcp, Udp};
    let table = [
        // (protocol, chosen, serving, intent)
        (Tcp, true, true, Serve),
        (Udp, true, true, Serve),
        (Sctp, true, false, Serve),
        (Tcp, false, true, Drain),
        (Tcp, false, false, Drain),
        (Udp, false, true, Drain),
        (Sctp, false, true, Drain),
        (Udp, false, false, Remove),
        (Sctp, false, false, Remove),
    ];
    for (protocol, chosen, serving, want) in table {
        assert_eq!(
            real_server_intent(protocol, chosen, serving),
            want,
            "{protocol:?} chosen {chosen} serving {serving}"
        );
    }
}
