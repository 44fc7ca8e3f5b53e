//! Issue 13 items 3, 4 and 8 with real traffic through proxier's engine and the kernel
//! dataplane: ExternalIP and LoadBalancer traffic masqueraded with `clusterCIDR` empty (the
//! reply comes back though the endpoint's node routes straight to the client), the filter of
//! unknown ports on service IPs (kube-proxy's KUBE-IPVS-FILTER), and another component's mark
//! bits kept. Witnesses: `conntrack`, `nft`, `ipvsadm`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code panics on failure"
)]

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use proxier::dataplane::kernel::KernelDataplane;
use proxier::plan::PacketSettings;
use proxier::runtime::Proxier;
use proxier_kernel_tests::tcp::tcp_server;
use proxier_kernel_tests::witness::nft_script;
use proxier_kernel_tests::{
    enable_forwarding, in_netns, tcp_reads, witness, Lab, NetNs, CONNTRACK, IP, IPVSADM, NFT,
};

/// Prints witness output (shown by libtest when the test fails).
fn show(title: &str, text: &str) {
    println!("---- {title}\n{text}----");
}

/// Programs `yaml` with proxier's engine and the kernel dataplane (node IP 10.0.1.1).
fn program(yaml: &str, settings: PacketSettings) -> Proxier<KernelDataplane> {
    proxier_kernel_tests::program_node(yaml, "10.0.1.1", settings)
}

/// A Service `web` (`spec` lines indented by two) with one endpoint `endpoint`:8080 on
/// another node.
fn web(spec: &str, endpoint: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: default}}\nspec:\n{spec}\
         ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-1\n  \
         namespace: default\n  labels: {{kubernetes.io/service-name: web}}\naddressType: IPv4\n\
         ports: [{{name: http, port: 8080, protocol: TCP}}]\nendpoints:\n\
         - addresses: ['{endpoint}']\n  conditions: {{ready: true}}\n  nodeName: node-c\n"
    )
}

/// A TCP server in `netns` on :8080 answering every connection with the peer's address.
fn peer_reporter(netns: &str, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    named_peer_reporter(netns, "", stop)
}

/// A TCP server in `netns` on :8080 answering every connection with `NAME` and the peer's
/// address.
fn named_peer_reporter(
    netns: &str,
    name: &'static str,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    tcp_server(netns, any, 8080, stop, move |peer| {
        format!("{name}{}", peer.ip())
    })
}

/// Item 3. kube-proxy masquerades traffic to ExternalIPs and LoadBalancer IPs whatever
/// `clusterCIDR` is (kubeadm writes `clusterCIDR: ""` without a pod subnet). The endpoint's
/// node here routes straight to the client (a direct link, as between two nodes of a flat
/// network), so without masquerade its reply would bypass this node's IPVS and never match the
/// client's connection: the client would get no answer from the LB IP.
#[test]
fn lb_and_external_ips_without_cluster_cidr_are_masqueraded_and_the_reply_comes_back() {
    let _ns = NetNs::fresh();
    enable_forwarding();
    let mut lab = Lab::new("fa3");
    let client = lab.host("client", "10.0.1.2", "10.0.1.1");
    let endpoint = lab.host("ep", "10.0.2.2", "10.0.2.1");
    // The direct route from the endpoint's node to the client's.
    witness(
        IP,
        &[
            "link", "add", "fa3x", "type", "veth", "peer", "name", "fa3y",
        ],
    );
    witness(IP, &["link", "set", "fa3x", "netns", &client]);
    witness(IP, &["link", "set", "fa3y", "netns", &endpoint]);
    for (netns, link, address) in [
        (&client, "fa3x", "10.9.0.1/30"),
        (&endpoint, "fa3y", "10.9.0.2/30"),
    ] {
        witness(IP, &["-n", netns, "addr", "add", address, "dev", link]);
        witness(IP, &["-n", netns, "link", "set", link, "up"]);
    }
    witness(
        IP,
        &[
            "-n",
            &endpoint,
            "route",
            "add",
            "10.0.1.2/32",
            "via",
            "10.9.0.1",
        ],
    );
    let stop = Arc::new(AtomicBool::new(false));
    let server = peer_reporter(&endpoint, stop.clone());
    std::thread::sleep(Duration::from_millis(200));

    let spec = "  type: LoadBalancer\n  clusterIP: 10.96.0.30\n  externalIPs: [198.51.100.20]\n  \
                ports: [{name: http, port: 80, protocol: TCP, targetPort: 8080, nodePort: 30030}]\n\
                status:\n  loadBalancer:\n    ingress: [{ip: 203.0.113.10}]\n";
    let settings = PacketSettings::default();
    assert!(settings.cluster_cidrs.is_empty() && !settings.masquerade_all);
    let _proxier = program(&web(spec, "10.0.2.2"), settings);
    show("ipvsadm -Ln", &witness(IPVSADM, &["-Ln"]));
    show(
        "nft list table inet proxier",
        &witness(NFT, &["list", "table", "inet", "proxier"]),
    );

    for target in ["203.0.113.10:80", "198.51.100.20:80"] {
        let answers = tcp_reads(&client, target, 3);
        let flows = witness(CONNTRACK, &["-L", "-p", "tcp", "--dport", "80"]);
        show(
            &format!("client → {target}: endpoint saw"),
            &format!("{answers:?}\n"),
        );
        show("conntrack -L -p tcp --dport 80", &flows);
        assert_eq!(
            answers,
            ["10.0.2.1", "10.0.2.1", "10.0.2.1"],
            "{target}: the endpoint sees this node's address (masqueraded) and the reply comes back"
        );
        let vip = target.split(':').next().unwrap();
        assert!(
            flows.contains(&format!("src=10.0.1.2 dst={vip}"))
                && flows.contains("src=10.0.2.2 dst=10.0.2.1"),
            "reply tuple to this node's address:\n{flows}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    server.join().unwrap();
}

/// A line-echo TCP server on 0.0.0.0:22 in the calling (node's) namespace, answering
/// `sshd LINE` per line, for `connections` connections.
fn node_sshd(connections: usize) -> std::thread::JoinHandle<()> {
    let listener = TcpListener::bind("0.0.0.0:22").unwrap();
    std::thread::spawn(move || {
        for _ in 0..connections {
            let Ok((stream, _)) = listener.accept() else {
                return;
            };
            std::thread::spawn(move || {
                let mut writer = stream.try_clone().unwrap();
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { return };
                    if writer
                        .write_all(format!("sshd {line}\n").as_bytes())
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    })
}

/// One line sent on `stream`, one line read back.
fn round_trip(stream: &mut TcpStream, line: &str) -> std::io::Result<String> {
    stream.write_all(format!("{line}\n").as_bytes())?;
    let mut answer = String::new();
    BufReader::new(stream.try_clone()?).read_line(&mut answer)?;
    Ok(answer.trim_end().to_owned())
}

/// Item 4. kube-proxy's KUBE-IPVS-FILTER (kubernetes#72236): a new connection to a port of a
/// service IP that no Service serves (sshd on the node, here on 0.0.0.0:22) is rejected; the
/// service port keeps working, and a connection established before the filter came is not
/// cut (only new connections are filtered).
#[test]
fn unknown_ports_of_a_cluster_ip_are_rejected_while_the_service_port_works() {
    let _ns = NetNs::fresh();
    enable_forwarding();
    let mut lab = Lab::new("fa4");
    let client = lab.host("client", "10.0.1.2", "10.0.1.1");
    let pod = lab.host("pod", "10.244.2.2", "10.244.2.1");
    let stop = Arc::new(AtomicBool::new(false));
    let server = peer_reporter(&pod, stop.clone());
    let _sshd = node_sshd(2);
    // Conntrack is on before proxier starts, as on every Kubernetes node (the CNI's and the
    // container runtime's rules use it): the connection below is tracked from its SYN.
    nft_script(
        "table ip node-conntrack {\n  chain input {\n    type filter hook input priority 10;\n    \
         ct state established counter\n  }\n}\n",
    );
    // The ClusterIP is on kube-ipvs0 already (as after kube-proxy): sshd answers on it.
    witness(IP, &["link", "add", "kube-ipvs0", "type", "dummy"]);
    witness(IP, &["addr", "add", "10.96.0.40/32", "dev", "kube-ipvs0"]);
    let (go, wait) = mpsc::channel::<()>();
    let established = in_netns(&client, move || {
        let target: SocketAddr = "10.96.0.40:22".parse().unwrap();
        let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(2)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let before = round_trip(&mut stream, "before").unwrap();
        wait.recv().unwrap();
        let after = round_trip(&mut stream, "after").map_err(|e| e.to_string());
        (before, after)
    });
    std::thread::sleep(Duration::from_millis(300));

    let spec = "  clusterIP: 10.96.0.40\n  \
                ports: [{name: http, port: 80, protocol: TCP, targetPort: 8080}]\n";
    let settings = PacketSettings {
        cluster_cidrs: vec![("10.244.0.0".parse().unwrap(), 16)],
        ..PacketSettings::default()
    };
    let _proxier = program(&web(spec, "10.244.2.2"), settings);
    show(
        "nft list chain inet proxier input",
        &witness(NFT, &["list", "chain", "inet", "proxier", "input"]),
    );

    let service = tcp_reads(&client, "10.96.0.40:80", 3);
    show("client → 10.96.0.40:80", &format!("{service:?}\n"));
    assert_eq!(service, ["10.244.2.1", "10.244.2.1", "10.244.2.1"]);

    let refused = in_netns(&client, || {
        let target: SocketAddr = "10.96.0.40:22".parse().unwrap();
        TcpStream::connect_timeout(&target, Duration::from_secs(2)).map(|_| ())
    })
    .join()
    .unwrap();
    show("client → 10.96.0.40:22 (new)", &format!("{refused:?}\n"));
    assert_eq!(
        refused.unwrap_err().kind(),
        std::io::ErrorKind::ConnectionRefused,
        "rejected (ICMP port unreachable), as kube-proxy's REJECT"
    );

    go.send(()).unwrap();
    let (before, after) = established.join().unwrap();
    show(
        "connection established before the filter",
        &format!("{before} / {after:?}\n"),
    );
    assert_eq!(before, "sshd before");
    assert_eq!(after, Ok("sshd after".to_owned()), "established flows pass");
    // The node itself still reaches its sshd on its own address.
    let own = in_netns(&pod, || {
        let target: SocketAddr = "10.244.2.1:22".parse().unwrap();
        let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(2)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        round_trip(&mut stream, "node address")
    })
    .join()
    .unwrap();
    assert_eq!(
        own.unwrap(),
        "sshd node address",
        "only service IPs are filtered"
    );
    stop.store(true, Ordering::Relaxed);
    server.join().unwrap();
}

/// The packet count of the rule commented `comment` in `listing` (`nft list`).
fn counted(listing: &str, comment: &str) -> u64 {
    let line = listing
        .lines()
        .find(|l| l.contains(&format!("comment \"{comment}\"")))
        .unwrap_or_else(|| panic!("no rule {comment}:\n{listing}"));
    let after = line.split("packets ").nth(1).expect("a counter");
    after.split_whitespace().next().unwrap().parse().unwrap()
}

/// Item 8. kube-proxy only ORs its masquerade bit into the mark; CNIs keep state in other bits.
/// Here a "CNI" table sets bit 0x00100000 on traffic to an ETP=Local LoadBalancer IP at raw
/// priority and counts, at input and after srcnat, whether packets still carry it. IPVS finds
/// the local-only firewall-mark virtual server only by the packet's whole mark, so proxier
/// borrows the mark just before IPVS and gives it back as IPVS forwards: the bit is seen
/// everywhere, and the client still reaches only the local pod with its own address.
#[test]
fn another_components_mark_bit_survives_etp_local() {
    let _ns = NetNs::fresh();
    enable_forwarding();
    let mut lab = Lab::new("fa8");
    let client = lab.host("client", "10.0.1.2", "10.0.1.1");
    let pod_a = lab.host("a", "10.244.1.2", "10.244.1.1");
    let pod_b = lab.host("b", "10.244.2.2", "10.244.2.1");
    let stop = Arc::new(AtomicBool::new(false));
    let servers = [
        named_peer_reporter(&pod_a, "a ", stop.clone()),
        named_peer_reporter(&pod_b, "b ", stop.clone()),
    ];
    std::thread::sleep(Duration::from_millis(200));
    nft_script(
        "table inet cni {\n\
           chain pre { type filter hook prerouting priority raw;\n\
             ip daddr 203.0.113.20 tcp dport 80 meta mark set meta mark | 0x00100000 }\n\
           chain seen-in { type filter hook input priority filter + 10;\n\
             ip daddr 203.0.113.20 tcp dport 80 meta mark & 0x00100000 == 0x00100000 counter comment \"input-kept\"\n\
             ip daddr 203.0.113.20 tcp dport 80 meta mark & 0x00100000 == 0 counter comment \"input-lost\" }\n\
           chain seen-out { type filter hook postrouting priority srcnat + 10;\n\
             ip daddr 10.244.1.2 tcp dport 8080 meta mark & 0x00100000 == 0x00100000 counter comment \"forwarded-kept\"\n\
             ip daddr 10.244.1.2 tcp dport 8080 meta mark & 0x00100000 == 0 counter comment \"forwarded-lost\" }\n\
         }\n",
    );
    let yaml =
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\nspec:\n  \
        type: LoadBalancer\n  clusterIP: 10.96.0.50\n  externalTrafficPolicy: Local\n  \
        ports: [{name: http, port: 80, protocol: TCP, targetPort: 8080, nodePort: 30050}]\n\
        status:\n  loadBalancer:\n    ingress: [{ip: 203.0.113.20}]\n\
        ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-1\n  \
        namespace: default\n  labels: {kubernetes.io/service-name: web}\naddressType: IPv4\n\
        ports: [{name: http, port: 8080, protocol: TCP}]\nendpoints:\n\
        - addresses: ['10.244.1.2']\n  conditions: {ready: true}\n  nodeName: node-a\n\
        - addresses: ['10.244.2.2']\n  conditions: {ready: true}\n  nodeName: node-b\n";
    let settings = PacketSettings {
        cluster_cidrs: vec![("10.244.0.0".parse().unwrap(), 16)],
        ..PacketSettings::default()
    };
    let _proxier = program(yaml, settings);
    show("ipvsadm -Ln", &witness(IPVSADM, &["-Ln"]));

    let answers = tcp_reads(&client, "203.0.113.20:80", 5);
    let cni = witness(NFT, &["list", "table", "inet", "cni"]);
    show(
        "client → 203.0.113.20:80 (ETP=Local)",
        &format!("{answers:?}\n"),
    );
    show("nft list table inet cni", &cni);
    show(
        "nft list table inet proxier",
        &witness(NFT, &["list", "table", "inet", "proxier"]),
    );
    assert_eq!(
        answers, ["a 10.0.1.2"; 5],
        "the local pod only, with the client's address (the fwmark virtual server)"
    );
    let (input_kept, forwarded_kept) =
        (counted(&cni, "input-kept"), counted(&cni, "forwarded-kept"));
    assert!(
        input_kept >= 10,
        "every packet keeps the bit at input: {input_kept}"
    );
    assert!(forwarded_kept >= 10, "and after IPVS: {forwarded_kept}");
    assert_eq!(
        counted(&cni, "input-lost"),
        0,
        "no packet lost the bit at input"
    );
    assert_eq!(
        counted(&cni, "forwarded-lost"),
        0,
        "no packet lost the bit after IPVS"
    );
    stop.store(true, Ordering::Relaxed);
    for server in servers {
        server.join().unwrap();
    }
}
