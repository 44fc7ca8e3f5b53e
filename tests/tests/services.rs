//! Service shapes through the real kernel with real traffic: NodePort, ExternalIP, ClientIP
//! affinity, externalTrafficPolicy: Local, and dual-stack; witnesses `ipvsadm -Ln`, `ip addr`,
//! `nft list table inet proxier`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code panics on failure"
)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use proxier::dataplane::kernel::KernelDataplane;
use proxier::plan::PacketSettings;
use proxier::runtime::Proxier;
use proxier_kernel_tests::sysctl::{enable_forwarding, enable_ipv6_forwarding};
use proxier_kernel_tests::tcp::tcp_server;
use proxier_kernel_tests::udp::by_answer;
use proxier_kernel_tests::{tcp_reads, witness, Lab, NetNs, IP, IPVSADM, NFT};

/// A TCP server (both families) answering every connection with `name peer-ip`.
fn peer_reporter(
    netns: &str,
    port: u16,
    name: &'static str,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    let any = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
    tcp_server(netns, any, port, stop, move |peer| {
        let peer = match peer.ip() {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map_or(v6.to_string(), |v4| v4.to_string()),
            v4 => v4.to_string(),
        };
        format!("{name} {peer}")
    })
}

/// Connects `count` times from `netns` to `target`; returns the answers by count.
fn connect(netns: &str, target: &str, count: usize) -> BTreeMap<String, usize> {
    by_answer(&tcp_reads(netns, target, count))
}

/// The node: this namespace routes between a client (outside the cluster CIDR), pod `a`
/// (on this node) and pod `b` (on another node), each also reachable over IPv6.
struct Node {
    lab: Lab,
    client: String,
    pod_a: String,
    pod_b: String,
    stop: Arc<AtomicBool>,
    servers: Vec<JoinHandle<()>>,
}

impl Node {
    fn new(tag: &str) -> Self {
        enable_forwarding();
        enable_ipv6_forwarding();
        let mut lab = Lab::new(tag);
        let hosts = [
            ("client", "10.0.1", "fd00:1"),
            ("a", "10.244.1", "fd00:244:1"),
            ("b", "10.244.2", "fd00:244:2"),
        ];
        let mut names = Vec::new();
        for (name, v4, v6) in hosts {
            let netns = lab.host(name, &format!("{v4}.2"), &format!("{v4}.1"));
            lab.add_ipv6(&netns, &format!("{v6}::2"), &format!("{v6}::1"));
            names.push(netns);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let servers = vec![
            peer_reporter(&names[1], 8080, "a", stop.clone()),
            peer_reporter(&names[2], 8080, "b", stop.clone()),
        ];
        std::thread::sleep(Duration::from_millis(200));
        let [client, pod_a, pod_b] = <[String; 3]>::try_from(names).unwrap();
        Self {
            lab,
            client,
            pod_a,
            pod_b,
            stop,
            servers,
        }
    }

    /// Programs `yaml` with proxier's engine and the real dataplane; returns the proxier.
    fn program(&self, yaml: &str) -> Proxier<KernelDataplane> {
        let settings = PacketSettings {
            cluster_cidrs: vec![
                ("10.244.0.0".parse().unwrap(), 16),
                ("fd00:244::".parse().unwrap(), 32),
            ],
            ..PacketSettings::default()
        };
        proxier_kernel_tests::program_node(yaml, "10.0.1.1", settings)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for server in self.servers.drain(..) {
            let _ = server.join();
        }
        let _ = &self.lab;
    }
}

fn slice(name: &str, family: &str, endpoints: &[(&str, &str)]) -> String {
    let mut text = format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-{family}\n  namespace: default\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: {family}\nports: [{{name: http, port: 8080, protocol: TCP}}]\nendpoints:\n"
    );
    for (ip, node) in endpoints {
        text.push_str(&format!(
            "- addresses: ['{ip}']\n  conditions: {{ready: true}}\n  nodeName: {node}\n"
        ));
    }
    text
}

#[test]
fn nodeport_and_external_ip_carry_traffic() {
    let _ns = NetNs::fresh();
    let node = Node::new("np");
    let yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: default}}\nspec:\n  type: NodePort\n  clusterIP: 10.96.0.80\n  externalIPs: [192.0.2.10]\n  ports: [{{name: http, port: 80, protocol: TCP, targetPort: 8080, nodePort: 30080}}]\n---\n{}",
        slice("web", "IPv4", &[("10.244.1.2", "node-a"), ("10.244.2.2", "node-b")])
    );
    let _proxier = node.program(&yaml);
    let listing = witness(IPVSADM, &["-Ln"]);
    println!("{listing}");
    for line in [
        "TCP  10.0.1.1:30080 rr",
        "TCP  192.0.2.10:80 rr",
        "TCP  10.96.0.80:80 rr",
    ] {
        assert!(listing.contains(line), "{line} missing:\n{listing}");
    }
    let addresses = witness(IP, &["-o", "addr", "show", "dev", "kube-ipvs0"]);
    assert!(
        addresses.contains("192.0.2.10/32") && addresses.contains("10.96.0.80/32"),
        "{addresses}"
    );
    let table = witness(NFT, &["list", "table", "inet", "proxier"]);
    assert!(table.contains("30080"), "{table}");
    // From outside the cluster CIDR: both pods answer, and they see the node (masquerade).
    let via_node_port = connect(&node.client, "10.0.1.1:30080", 10);
    let via_external = connect(&node.client, "192.0.2.10:80", 10);
    println!("NodePort: {via_node_port:?}\nExternalIP: {via_external:?}");
    for answers in [&via_node_port, &via_external] {
        assert_eq!(answers.values().sum::<usize>(), 10);
        assert!(
            answers
                .keys()
                .all(|a| a == "a 10.244.1.1" || a == "b 10.244.2.1"),
            "{answers:?}"
        );
        assert_eq!(answers.len(), 2, "both pods: {answers:?}");
    }
}

#[test]
fn client_ip_affinity_sticks_to_one_pod() {
    let _ns = NetNs::fresh();
    let node = Node::new("af");
    let yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: default}}\nspec:\n  clusterIP: 10.96.0.81\n  sessionAffinity: ClientIP\n  sessionAffinityConfig: {{clientIP: {{timeoutSeconds: 600}}}}\n  ports: [{{name: http, port: 80, protocol: TCP, targetPort: 8080}}]\n---\n{}",
        slice("web", "IPv4", &[("10.244.1.2", "node-a"), ("10.244.2.2", "node-b")])
    );
    let _proxier = node.program(&yaml);
    let listing = witness(IPVSADM, &["-Ln"]);
    assert!(
        listing.contains("TCP  10.96.0.81:80 rr persistent 600"),
        "{listing}"
    );
    let answers = connect(&node.client, "10.96.0.81:80", 10);
    println!("ClientIP affinity: {answers:?}");
    assert_eq!(
        answers.len(),
        1,
        "all ten connections on one pod: {answers:?}"
    );
    assert_eq!(answers.values().sum::<usize>(), 10);
}

#[test]
fn external_traffic_policy_local_keeps_the_client_ip_and_the_node_local_pod() {
    let _ns = NetNs::fresh();
    let node = Node::new("lp");
    let yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: default}}\nspec:\n  type: NodePort\n  clusterIP: 10.96.0.82\n  externalTrafficPolicy: Local\n  ports: [{{name: http, port: 80, protocol: TCP, targetPort: 8080, nodePort: 30082}}]\n---\n{}",
        slice("web", "IPv4", &[("10.244.1.2", "node-a"), ("10.244.2.2", "node-b")])
    );
    let _proxier = node.program(&yaml);
    let listing = witness(IPVSADM, &["-Ln"]);
    println!("{listing}");
    assert!(
        listing.contains("FWM  "),
        "fwmark virtual server for external traffic:\n{listing}"
    );
    // External client → NodePort: only the local pod, and it sees the client's own address.
    let external = connect(&node.client, "10.0.1.1:30082", 10);
    println!("external → NodePort (Local): {external:?}");
    assert_eq!(external.get("a 10.0.1.2"), Some(&10), "{external:?}");
    // A pod of this node → ClusterIP: every endpoint, as with iptables mode, including itself
    // (hairpin: masqueraded, so its reply to itself comes back through IPVS).
    let internal = connect(&node.pod_a, "10.96.0.82:80", 10);
    println!("local pod a → ClusterIP: {internal:?}");
    assert_eq!(internal.values().sum::<usize>(), 10);
    assert!(
        internal.keys().all(|a| !a.starts_with("failed")),
        "{internal:?}"
    );
    assert!(
        internal.keys().any(|a| a.starts_with("a "))
            && internal.keys().any(|a| a.starts_with("b ")),
        "{internal:?}"
    );
    let _ = &node.pod_b;
}

#[test]
fn dual_stack_service_answers_on_both_families() {
    let _ns = NetNs::fresh();
    let node = Node::new("ds");
    let yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: default}}\nspec:\n  clusterIP: 10.96.0.83\n  clusterIPs: [10.96.0.83, 'fd00:96::83']\n  ipFamilies: [IPv4, IPv6]\n  ipFamilyPolicy: RequireDualStack\n  ports: [{{name: http, port: 80, protocol: TCP, targetPort: 8080}}]\n---\n{}---\n{}",
        slice("web", "IPv4", &[("10.244.1.2", "node-a"), ("10.244.2.2", "node-b")]),
        slice("web", "IPv6", &[("fd00:244:1::2", "node-a"), ("fd00:244:2::2", "node-b")])
    );
    let _proxier = node.program(&yaml);
    let listing = witness(IPVSADM, &["-Ln"]);
    println!("{listing}");
    assert!(
        listing.contains("TCP  10.96.0.83:80 rr") && listing.contains("TCP  [fd00:96::83]:80 rr"),
        "{listing}"
    );
    assert!(listing.contains("-> [fd00:244:1::2]:8080"), "{listing}");
    let v4 = connect(&node.client, "10.96.0.83:80", 6);
    let v6 = connect(&node.client, "[fd00:96::83]:80", 6);
    println!("IPv4: {v4:?}\nIPv6: {v6:?}");
    assert_eq!(v4.values().sum::<usize>(), 6);
    assert!(v4.keys().all(|a| !a.starts_with("failed")), "{v4:?}");
    assert!(v6.keys().all(|a| !a.starts_with("failed")), "{v6:?}");
    assert_eq!(v6.len(), 2, "both IPv6 pods: {v6:?}");
}
