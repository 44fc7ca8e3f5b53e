//! Health checks against kube-proxy's service health server (pkg/proxy/healthcheck/
//! service_health.go, endpointsmap `LocalReadyEndpoints`, `NeedsHealthCheck`).

use k8s_openapi::api::core::v1 as core;

use super::ServiceHealthCheck;
use crate::fixtures::{cluster, ep, name, node_a, service, slice, terminating};
use crate::model::{service_from_k8s, EndpointSlice};
use crate::plan::Planner;
use netlink_ipvs::Protocol;

fn health_check_port(yaml: &str) -> Option<u16> {
    let object: core::Service = serde_saphyr::from_str(yaml).unwrap();
    service_from_k8s(&object, &mut Vec::new())
        .unwrap()
        .health_check_node_port
}

#[test]
fn only_etp_local_load_balancers_have_a_health_check() {
    let yaml = |kind: &str, policy: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: shop}}\nspec:\n  \
             type: {kind}\n  clusterIP: 10.96.0.20\n  externalTrafficPolicy: {policy}\n  \
             healthCheckNodePort: 32123\n  ports: [{{name: http, port: 80, nodePort: 30080}}]\n"
        )
    };
    assert_eq!(
        health_check_port(&yaml("LoadBalancer", "Local")),
        Some(32123)
    );
    assert_eq!(health_check_port(&yaml("LoadBalancer", "Cluster")), None);
    assert_eq!(health_check_port(&yaml("NodePort", "Local")), None);
}

fn web_slices() -> Vec<EndpointSlice> {
    let ports = [
        ("http", Protocol::Tcp, 8080),
        ("admin", Protocol::Tcp, 9090),
    ];
    vec![
        slice(
            "web",
            "web-1",
            &ports,
            vec![
                ep("10.244.1.5", "node-a"),
                ep("10.244.2.5", "node-b"),
                terminating("10.244.1.6", "node-a", true),
            ],
        ),
        // The same pod in a second slice counts once.
        slice("web", "web-2", &ports, vec![ep("10.244.1.5", "node-a")]),
    ]
}

#[test]
fn local_ready_endpoints_are_counted_by_ip_and_follow_replans() {
    let mut web = service("web", &["10.96.0.80"], &[("http", Protocol::Tcp, 80)]);
    web.health_check_node_port = Some(32123);
    let mut cluster = cluster(vec![web], web_slices());
    let mut planner = Planner::new(node_a(), crate::config::Config::default());
    planner.plan_all(&mut cluster);
    let checks = planner.health_checks();
    assert_eq!(
        checks.services.get(&name("web")),
        Some(&ServiceHealthCheck {
            node_port: 32123,
            local_endpoints: 1
        }),
        "node-b's pod and the terminating one do not count"
    );
    assert_eq!(checks.node_ports(), [32123].into());
    assert_eq!(
        planner.packet_rules().health_check_node_ports,
        [32123].into(),
        "the filter lets the health check through"
    );

    // The local pod leaves: 0 local endpoints (503).
    let only_remote = slice(
        "web",
        "web-1",
        &[("http", Protocol::Tcp, 8080)],
        vec![ep("10.244.2.5", "node-b")],
    );
    cluster.upsert_slice(only_remote);
    cluster.remove_slice(&name("web"), "web-2");
    planner.replan(&mut cluster);
    let check = planner.health_checks().services[&name("web")];
    assert_eq!(check.local_endpoints, 0);
    assert_eq!(check.status(true), 503);

    // The Service goes: no health check, nothing let through.
    cluster.remove_service(&name("web"));
    planner.replan(&mut cluster);
    assert!(planner.health_checks().services.is_empty());
    assert!(planner.packet_rules().health_check_node_ports.is_empty());
}

#[test]
fn status_and_body_are_kube_proxys() {
    let check = ServiceHealthCheck {
        node_port: 32123,
        local_endpoints: 2,
    };
    assert_eq!(check.status(true), 200);
    assert_eq!(check.status(false), 503, "an unhealthy proxy fails it too");
    assert_eq!(
        check.body(&name("web"), true),
        "{\n\t\"service\": {\n\t\t\"namespace\": \"default\",\n\t\t\"name\": \"web\"\n\t},\n\t\"localEndpoints\": 2,\n\t\"serviceProxyHealthy\": true\n}"
    );
}
