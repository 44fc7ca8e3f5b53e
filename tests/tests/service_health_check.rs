//! Issue 13 item 2, through the binary (`proxier run --source DIR`): the `healthCheckNodePort`
//! of an `externalTrafficPolicy: Local` LoadBalancer Service answers a load balancer's probe
//! from another namespace as kube-proxy's service health server does (any path, JSON with the
//! local endpoint count, 200 while this node has a ready endpoint, 503 when it has none),
//! follows the EndpointSlice, and closes when the Service goes; with `nodePortAddresses` set
//! it listens only on the selected node IPs.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code panics on failure"
)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use proxier_kernel_tests::lab::PodNetwork;
use proxier_kernel_tests::yaml::kube_proxy_config;
use proxier_kernel_tests::{
    in_netns, slice_yaml, source_dir, wait_for, write_atomically, Endpoint, NetNs, ProxierProcess,
};

const HEALTH_PORT: u16 = 32100;

const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: lb, namespace: default}\nspec:\n  type: LoadBalancer\n  clusterIP: 10.96.0.95\n  clusterIPs: [10.96.0.95]\n  externalTrafficPolicy: Local\n  healthCheckNodePort: 32100\n  ports:\n  - {name: http, port: 80, protocol: TCP, targetPort: 8080, nodePort: 30095}\nstatus:\n  loadBalancer:\n    ingress: [{ip: 203.0.113.95}]\n";

/// Writes the Service and its slice with `endpoint` on node `node`.
fn write_source(source: &Path, endpoint: Endpoint, node: &str) {
    let slice = slice_yaml("lb", &[("http", "TCP", 8080)], &[endpoint])
        .replace("nodeName: node-a", &format!("nodeName: {node}"));
    write_atomically(&source.join("lb.yaml"), &format!("{SERVICE}---\n{slice}"));
}

/// A load balancer's probe from `netns`: `GET /` on `target`; the response or the error.
fn probe(netns: &str, target: &str) -> Result<String, String> {
    let target: SocketAddr = target.parse().unwrap();
    in_netns(netns, move || {
        let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(2))
            .map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(|e| e.to_string())?;
        write!(stream, "GET / HTTP/1.1\r\nHost: lb\r\n\r\n").map_err(|e| e.to_string())?;
        let mut text = String::new();
        stream
            .read_to_string(&mut text)
            .map_err(|e| e.to_string())?;
        Ok(text)
    })
    .join()
    .unwrap()
}

/// Waits until the probe's answer starts with `status` and holds `count` local endpoints.
fn wait_for_answer(client: &str, target: &str, status: &str, count: usize) -> String {
    let count = format!("\"localEndpoints\": {count},");
    wait_for(
        &format!("{status} with {count}"),
        Duration::from_secs(10),
        || match probe(client, target) {
            Ok(answer) if answer.starts_with(status) && answer.contains(&count) => Ok(answer),
            Ok(answer) => Err(answer),
            Err(error) => Err(error),
        },
    )
}

#[test]
fn health_check_node_port_answers_200_and_503_as_local_endpoints_come_and_go() {
    let _ns = NetNs::fresh();
    let network = PodNetwork::new("hck", 1);
    let client = network.client.clone();
    let target = format!("10.0.1.1:{HEALTH_PORT}");
    let source = source_dir("hck");
    let pod = PodNetwork::pod_ip(0);
    write_source(&source, Endpoint::ready(&pod), "node-a");
    let mut proxier = ProxierProcess::run(&source, &["--cluster-cidr", "10.0.0.0/8"]);

    let ok = wait_for_answer(&client, &target, "HTTP/1.1 200 OK", 1);
    println!("ready local endpoint:\n{ok}");
    assert!(ok.contains("Content-Type: application/json\r\n"), "{ok}");
    assert!(ok.contains("X-Content-Type-Options: nosniff\r\n"), "{ok}");
    assert!(
        ok.ends_with(
            "{\n\t\"service\": {\n\t\t\"namespace\": \"default\",\n\t\t\"name\": \"lb\"\n\t},\n\t\"localEndpoints\": 1,\n\t\"serviceProxyHealthy\": true\n}"
        ),
        "kube-proxy's body: {ok}"
    );

    let not_ready = Endpoint {
        ready: false,
        serving: false,
        ..Endpoint::ready(&pod)
    };
    write_source(&source, not_ready, "node-a");
    let unavailable = wait_for_answer(&client, &target, "HTTP/1.1 503 Service Unavailable", 0);
    println!("local endpoint not ready:\n{unavailable}");

    write_source(&source, Endpoint::ready(&pod), "node-b");
    wait_for_answer(&client, &target, "HTTP/1.1 503 Service Unavailable", 0);
    println!("ready endpoint on another node only: 503");

    write_source(&source, Endpoint::ready(&pod), "node-a");
    wait_for_answer(&client, &target, "HTTP/1.1 200 OK", 1);
    println!("ready local endpoint again: 200");

    std::fs::remove_file(source.join("lb.yaml")).unwrap();
    let refused = wait_for(
        "the health check closed",
        Duration::from_secs(10),
        || match probe(&client, &target) {
            Err(error) => Ok(error),
            Ok(answer) => Err(answer),
        },
    );
    println!("Service deleted: {refused}");
    proxier.assert_running();
}

#[test]
fn health_check_listens_only_where_node_port_addresses_select() {
    let _ns = NetNs::fresh();
    let network = PodNetwork::new("hcn", 1);
    let client = network.client.clone();
    let source = source_dir("hcn");
    write_source(&source, Endpoint::ready(&PodNetwork::pod_ip(0)), "node-a");
    let config = kube_proxy_config("hcn", "nodePortAddresses: [\"10.0.1.0/24\"]\n");
    let mut proxier = ProxierProcess::run(
        &source,
        &["--cluster-cidr", "10.0.0.0/8", "--config", &config],
    );
    wait_for_answer(
        &client,
        &format!("10.0.1.1:{HEALTH_PORT}"),
        "HTTP/1.1 200 OK",
        1,
    );
    let outside = probe(&client, &format!("10.0.2.1:{HEALTH_PORT}"));
    assert!(
        outside.is_err(),
        "10.0.2.1 is a node address outside nodePortAddresses: {outside:?}"
    );
    proxier.assert_running();
}
