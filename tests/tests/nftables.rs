//! proxier's nftables table against the real kernel: `nft` is the outside witness, and real TCP
//! through an IPVS virtual server shows the masquerade and the ETP=Local fwmark taking effect.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code panics on failure"
)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::thread::JoinHandle;
use std::time::Duration;

use netlink_ipvs::{Family, IpvsHandle, Protocol, RealServer, ServiceKey, VirtualServer};
use netlink_nftables::{NftablesError, NftablesHandle};
use proxier::dataplane::nftables::{
    replace_table, ExternalLocalMark, LoadBalancerSourceRange, PacketRules,
};
use proxier_kernel_tests::{witness, NetNs, CONNTRACK, IP, NFT};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Prints witness output (libtest shows it when the test fails; uncaptured output would split
/// the `test NAME ... ok` lines the VM runner reads).
fn show(title: &str, text: &str) {
    println!("---- {title}\n{text}----");
}

fn sample_rules() -> PacketRules {
    PacketRules {
        cluster_cidrs: vec![(ip("10.244.0.0"), 16), (ip("fd00:10:244::"), 56)],
        service_ips: [ip("10.96.0.1"), ip("10.96.0.10"), ip("fd00:96::1")].into(),
        node_ips: [ip("192.168.1.10"), ip("fd00:1::10")].into(),
        node_ports: [(Protocol::Tcp, 30080), (Protocol::Udp, 30053)].into(),
        external_local: vec![ExternalLocalMark {
            address: ip("203.0.113.7"),
            protocol: Protocol::Tcp,
            port: 80,
            mark: 0x100,
        }],
        load_balancer_source_ranges: vec![LoadBalancerSourceRange {
            address: ip("203.0.113.8"),
            protocol: Protocol::Tcp,
            port: 443,
            allowed: vec![(ip("198.51.100.0"), 24), (ip("192.0.2.128"), 25)],
        }],
        hairpin_endpoints: [ip("10.244.1.5")].into(),
        ..PacketRules::default()
    }
}

/// What `nft list table inet proxier` must print for [`sample_rules`]. (nft prints the
/// protocols of the `inet_proto . inet_service` keys as numbers: the set carries no nft
/// userdata, only the kernel's key type. For the same reason it reads the host-order mark
/// 0x100 of `etp-local-marks`, stored as the register holds it, byte-swapped: 0x00010000.)
const SAMPLE_LISTING: &str = "table inet proxier {
	set service-ips-v4 {
		type ipv4_addr
		elements = { 10.96.0.1, 10.96.0.10 }
	}

	set service-ips-v6 {
		type ipv6_addr
		elements = { fd00:96::1 }
	}

	set node-ips-v4 {
		type ipv4_addr
		elements = { 192.168.1.10 }
	}

	set node-ips-v6 {
		type ipv6_addr
		elements = { fd00:1::10 }
	}

	set node-ports {
		type inet_proto . inet_service
		elements = { 17 . 30053,
			     6 . 30080 }
	}

	set hairpin-v4 {
		type ipv4_addr . ipv4_addr
		elements = { 10.244.1.5 . 10.244.1.5 }
	}

	set hairpin-v6 {
		type ipv6_addr . ipv6_addr
	}

	set service-ports-v4 {
		type ipv4_addr . inet_proto . inet_service
	}

	set service-ports-v6 {
		type ipv6_addr . inet_proto . inet_service
	}

	set masquerade-destinations-v4 {
		type ipv4_addr . inet_proto . inet_service
	}

	set masquerade-destinations-v6 {
		type ipv6_addr . inet_proto . inet_service
	}

	set health-check-ports {
		type inet_service
	}

	set etp-local-marks {
		type mark
		elements = { 0x00010000 }
	}

	chain prerouting {
		type filter hook prerouting priority mangle; policy accept;
		ip daddr 203.0.113.8 tcp dport 443 jump source-ranges-0
		iif != \"lo\" ip saddr != 10.244.0.0/16 ip daddr 203.0.113.7 tcp dport 80 accept
		ip daddr . meta l4proto . th dport @masquerade-destinations-v4 meta mark set meta mark | 0x00004000
		ip daddr @node-ips-v4 meta l4proto . th dport @node-ports meta mark set meta mark | 0x00004000
		ip saddr != 10.244.0.0/16 ip daddr @service-ips-v4 meta mark set meta mark | 0x00004000
		ip6 daddr . meta l4proto . th dport @masquerade-destinations-v6 meta mark set meta mark | 0x00004000
		ip6 daddr @node-ips-v6 meta l4proto . th dport @node-ports meta mark set meta mark | 0x00004000
		ip6 saddr != fd00:10:244::/56 ip6 daddr @service-ips-v6 meta mark set meta mark | 0x00004000
	}

	chain input {
		type filter hook input priority filter; policy accept;
		ip daddr . meta l4proto . th dport @service-ports-v4 return
		ip6 daddr . meta l4proto . th dport @service-ports-v6 return
		tcp dport @health-check-ports return
		ct state new ip daddr @service-ips-v4 reject
		ct state new ip6 daddr @service-ips-v6 reject
	}

	chain etp-local-mark {
		type filter hook input priority 97; policy accept;
		iif != \"lo\" ip saddr != 10.244.0.0/16 ip daddr 203.0.113.7 tcp dport 80 meta priority set meta mark meta mark set 0x00000100
	}

	chain etp-local-unmark {
		type filter hook output priority raw - 10; policy accept;
		meta mark @etp-local-marks meta mark set meta priority meta priority set none
	}

	chain output {
		type route hook output priority mangle; policy accept;
		ip daddr @service-ips-v4 meta mark set meta mark | 0x00004000
		ip daddr @node-ips-v4 meta l4proto . th dport @node-ports meta mark set meta mark | 0x00004000
		ip6 daddr @service-ips-v6 meta mark set meta mark | 0x00004000
		ip6 daddr @node-ips-v6 meta l4proto . th dport @node-ports meta mark set meta mark | 0x00004000
	}

	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		ip saddr . ip daddr @hairpin-v4 masquerade fully-random
		ip6 saddr . ip6 daddr @hairpin-v6 masquerade fully-random
		meta mark & 0x00004000 == 0x00004000 meta mark set meta mark ^ 0x00004000 masquerade fully-random
	}

	chain source-ranges-0 {
		ip saddr 198.51.100.0/24 return
		ip saddr 192.0.2.128/25 return
		drop
	}
}
";

fn list_ours() -> String {
    witness(NFT, &["list", "table", "inet", "proxier"])
}

/// Foreign objects made with the nft CLI: a docker-like MASQUERADE rule in `ip foreign`, and a
/// table with our name in another family (`ip proxier`) holding a set and a counter.
fn install_foreign() -> String {
    let script = r#"
table ip foreign {
	chain post {
		type nat hook postrouting priority srcnat; policy accept;
		ip saddr 172.17.0.0/16 oifname != "docker0" masquerade
	}
}
table ip proxier {
	set keep {
		type ipv4_addr
		elements = { 10.1.2.3 }
	}
	chain input {
		type filter hook input priority filter; policy accept;
		ip saddr @keep counter accept
	}
}
"#;
    let path = format!("/tmp/foreign-{}.nft", std::process::id());
    std::fs::write(&path, script).unwrap();
    witness(NFT, &["-f", &path]);
    foreign_listing()
}

/// The whole ruleset minus our table, with handles (`-a`) so a re-created object would differ.
fn foreign_listing() -> String {
    let a = witness(NFT, &["-a", "list", "table", "ip", "foreign"]);
    let b = witness(NFT, &["-a", "list", "table", "ip", "proxier"]);
    format!("{a}{b}")
}

#[test]
fn replace_table_writes_what_nft_lists() {
    let _ns = NetNs::fresh();
    let mut nft = NftablesHandle::connect().unwrap();
    assert!(!nft.table_exists("proxier").unwrap());
    replace_table(&mut nft, &sample_rules()).unwrap();
    assert!(nft.table_exists("proxier").unwrap());
    let listing = list_ours();
    show("nft list table inet proxier", &listing);
    assert_eq!(listing, SAMPLE_LISTING);
    let json = witness(NFT, &["-j", "list", "table", "inet", "proxier"]);
    show("nft -j list table inet proxier", &json);
    assert!(
        json.contains(r#""family": "inet", "name": "proxier""#),
        "{json}"
    );
    assert_eq!(
        witness(NFT, &["list", "tables"]),
        "table inet proxier\n",
        "nothing else created"
    );
}

#[test]
fn replace_table_is_idempotent_and_replaces_everything() {
    let _ns = NetNs::fresh();
    let mut nft = NftablesHandle::connect().unwrap();
    let rules = sample_rules();
    replace_table(&mut nft, &rules).unwrap();
    let first = list_ours();
    replace_table(&mut nft, &rules).unwrap();
    assert_eq!(list_ours(), first, "same rules, same table");
    assert_eq!(witness(NFT, &["list", "tables"]), "table inet proxier\n");

    // A smaller desired state leaves nothing of the old one behind.
    let smaller = PacketRules {
        service_ips: [ip("10.96.0.10")].into(),
        external_local: vec![],
        load_balancer_source_ranges: vec![],
        ..rules
    };
    replace_table(&mut nft, &smaller).unwrap();
    let listing = list_ours();
    show("after replacing with a smaller state", &listing);
    assert!(listing.contains("elements = { 10.96.0.10 }"), "{listing}");
    for gone in ["10.96.0.1,", "source-ranges-0", "0x00000100"] {
        assert!(!listing.contains(gone), "{gone} left over:\n{listing}");
    }

    // A refused transaction reports the message the kernel refused (here every message names
    // a table whose name is too long: ERANGE) and leaves our table as it was.
    let bad = PacketRules {
        table: "x".repeat(300),
        ..PacketRules::default()
    };
    match replace_table(&mut nft, &bad) {
        Err(NftablesError::Refused { message, errno, .. }) => {
            show("refused", &format!("{message}: errno {errno}\n"));
            assert!(message.starts_with("create table inet xxx"), "{message}");
        }
        other => panic!("expected a kernel refusal, got {other:?}"),
    }
    assert_eq!(list_ours(), listing);
}

#[test]
fn foreign_tables_survive_replace_and_delete_byte_for_byte() {
    let _ns = NetNs::fresh();
    let before = install_foreign();
    show("foreign objects", &before);
    let mut nft = NftablesHandle::connect().unwrap();
    replace_table(&mut nft, &sample_rules()).unwrap();
    replace_table(&mut nft, &sample_rules()).unwrap();
    assert_eq!(
        foreign_listing(),
        before,
        "replace_table touched a foreign table"
    );
    assert_eq!(
        witness(NFT, &["list", "tables"]),
        "table ip foreign\ntable ip proxier\ntable inet proxier\n"
    );

    assert!(nft.delete_table("proxier").unwrap());
    assert_eq!(
        foreign_listing(),
        before,
        "delete_table touched a foreign table"
    );
    assert_eq!(
        witness(NFT, &["list", "tables"]),
        "table ip foreign\ntable ip proxier\n"
    );
    assert!(!nft.table_exists("proxier").unwrap());
    assert!(!nft.delete_table("proxier").unwrap(), "ENOENT is false");
    assert_eq!(foreign_listing(), before);
}

/// A named network namespace, removed on drop.
struct NamedNs(String);

impl NamedNs {
    fn add(name: &str) -> Self {
        witness(IP, &["netns", "add", name]);
        witness(IP, &["-n", name, "link", "set", "lo", "up"]);
        Self(name.to_owned())
    }

    /// Runs `f` on a new thread inside this namespace.
    fn spawn<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
        let path = format!("/run/netns/{}", self.0);
        std::thread::spawn(move || {
            let ns = File::open(&path).unwrap();
            // SAFETY: setns has no memory-safety preconditions; it moves only this thread.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
    }
}

impl Drop for NamedNs {
    fn drop(&mut self) {
        let _ = std::process::Command::new(IP)
            .args(["netns", "del", &self.0])
            .status();
    }
}

/// Serves `count` TCP connections on :8080, answering each with "LOCAL PEER" (addresses only).
fn serve(listener: TcpListener, count: usize) {
    for _ in 0..count {
        let (mut stream, peer) = listener.accept().unwrap();
        let local = stream.local_addr().unwrap();
        let _ = write!(stream, "{} {}", local.ip(), peer.ip());
    }
}

fn request(client: &NamedNs, vip: &str) -> String {
    let target = format!("{vip}:80");
    client
        .spawn(move || {
            let addr = target.parse().unwrap();
            let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("connect {target}: {e}"));
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut answer = String::new();
            stream.read_to_string(&mut answer).unwrap();
            answer
        })
        .join()
        .unwrap()
}

fn sysctl(path: &str, value: &str) {
    std::fs::write(format!("/proc/sys/{path}"), value).unwrap_or_else(|e| panic!("{path}: {e}"));
}

/// client (10.0.1.2) → this namespace as router (IPVS, our table) → backend (10.0.2.2 and
/// 10.0.2.3). The VIP 10.96.0.10 is on a dummy interface; 10.96.0.10:80 → 10.0.2.2:8080, and
/// fwmark 7 → 10.0.2.3:8080 stands for the local-only virtual server of an ETP=Local service.
#[test]
fn real_tcp_through_ipvs_is_masqueraded_and_etp_local_keeps_the_client_ip() {
    let _ns = NetNs::fresh();
    let id = std::process::id();
    let client = NamedNs::add(&format!("nftc{id}"));
    let backend = NamedNs::add(&format!("nftb{id}"));
    for (peer, ns, router, host) in [
        ("vc", &client, "10.0.1.1/24", "10.0.1.2/24"),
        ("vb", &backend, "10.0.2.1/24", "10.0.2.2/24"),
    ] {
        witness(
            IP,
            &[
                "link", "add", peer, "type", "veth", "peer", "name", "eth0", "netns", &ns.0,
            ],
        );
        witness(IP, &["addr", "add", router, "dev", peer]);
        witness(IP, &["link", "set", peer, "up"]);
        witness(IP, &["-n", &ns.0, "addr", "add", host, "dev", "eth0"]);
        witness(IP, &["-n", &ns.0, "link", "set", "eth0", "up"]);
        let gateway = router.split('/').next().unwrap();
        witness(
            IP,
            &["-n", &ns.0, "route", "add", "default", "via", gateway],
        );
    }
    witness(
        IP,
        &[
            "-n",
            &backend.0,
            "addr",
            "add",
            "10.0.2.3/24",
            "dev",
            "eth0",
        ],
    );
    witness(IP, &["link", "add", "kube-ipvs0", "type", "dummy"]);
    witness(IP, &["addr", "add", "10.96.0.10/32", "dev", "kube-ipvs0"]);
    witness(IP, &["link", "set", "kube-ipvs0", "up"]);
    sysctl("net/ipv4/ip_forward", "1");

    let mut ipvs = IpvsHandle::connect().unwrap();
    sysctl("net/ipv4/vs/conntrack", "1");
    let vip = ServiceKey::Address {
        protocol: Protocol::Tcp,
        address: ip("10.96.0.10"),
        port: 80,
    };
    ipvs.add_virtual_server(&VirtualServer::new(vip)).unwrap();
    ipvs.add_real_server(&vip, &RealServer::masq(ip("10.0.2.2"), 8080))
        .unwrap();
    let local_only = ServiceKey::FwMark {
        mark: 7,
        family: Family::V4,
    };
    ipvs.add_virtual_server(&VirtualServer::new(local_only))
        .unwrap();
    ipvs.add_real_server(&local_only, &RealServer::masq(ip("10.0.2.3"), 8080))
        .unwrap();

    let server = backend.spawn(|| {
        let listener = TcpListener::bind("0.0.0.0:8080").unwrap();
        serve(listener, 3);
    });
    // Wait until the backend listens.
    std::thread::sleep(Duration::from_millis(200));

    // 1. The client is outside the cluster CIDR: masqueraded to the router's address.
    let mut rules = PacketRules {
        cluster_cidrs: vec![(ip("10.244.0.0"), 16)],
        service_ips: [ip("10.96.0.10")].into(),
        // The input filter lets new connections to a service IP through on its ports only.
        service_ports: [(ip("10.96.0.10"), Protocol::Tcp, 80)].into(),
        ..PacketRules::default()
    };
    let mut nft = NftablesHandle::connect().unwrap();
    replace_table(&mut nft, &rules).unwrap();
    let answer = request(&client, "10.96.0.10");
    let flows = witness(CONNTRACK, &["-L", "-p", "tcp", "--dport", "80"]);
    show(
        "masquerade: backend saw (local peer)",
        &format!("{answer}\n"),
    );
    show("conntrack -L -p tcp --dport 80", &flows);
    assert_eq!(
        answer, "10.0.2.2 10.0.2.1",
        "backend sees the router's address"
    );
    assert!(
        flows.contains("src=10.0.1.2 dst=10.96.0.10")
            && flows.contains("src=10.0.2.2 dst=10.0.2.1"),
        "reply tuple goes back to the router's address:\n{flows}"
    );

    // 2. ETP=Local: external traffic gets fwmark 7, reaches the local-only real server, and
    //    keeps the client's address.
    rules.external_local = vec![ExternalLocalMark {
        address: ip("10.96.0.10"),
        protocol: Protocol::Tcp,
        port: 80,
        mark: 7,
    }];
    replace_table(&mut nft, &rules).unwrap();
    witness(CONNTRACK, &["-F"]);
    let answer = request(&client, "10.96.0.10");
    let flows = witness(CONNTRACK, &["-L", "-p", "tcp", "--dport", "80"]);
    show(
        "ETP=Local: backend saw (local peer)",
        &format!("{answer}\n"),
    );
    show("conntrack -L -p tcp --dport 80", &flows);
    show("nft list table inet proxier", &list_ours());
    assert_eq!(answer, "10.0.2.3 10.0.1.2", "fwmark server, client IP kept");
    assert!(
        flows.contains("src=10.0.2.3 dst=10.0.1.2"),
        "reply tuple goes back to the client:\n{flows}"
    );

    // 3. loadBalancerSourceRanges: a client outside the ranges is dropped, inside it passes.
    rules.external_local = vec![];
    rules.load_balancer_source_ranges = vec![LoadBalancerSourceRange {
        address: ip("10.96.0.10"),
        protocol: Protocol::Tcp,
        port: 80,
        allowed: vec![(ip("192.0.2.0"), 24)],
    }];
    replace_table(&mut nft, &rules).unwrap();
    let refused = client
        .spawn(|| {
            let addr = "10.96.0.10:80".parse().unwrap();
            TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map(|_| ())
        })
        .join()
        .unwrap();
    show("outside the source ranges", &format!("{refused:?}\n"));
    assert_eq!(
        refused.unwrap_err().kind(),
        std::io::ErrorKind::TimedOut,
        "dropped, not refused"
    );
    rules.load_balancer_source_ranges[0]
        .allowed
        .push((ip("10.0.1.0"), 24));
    replace_table(&mut nft, &rules).unwrap();
    let answer = request(&client, "10.96.0.10");
    show(
        "inside the source ranges: backend saw (local peer)",
        &format!("{answer}\n"),
    );
    assert_eq!(answer, "10.0.2.2 10.0.2.1");
    server.join().unwrap();
}

#[test]
fn deleting_or_asking_for_a_missing_table_is_not_an_error() {
    let _ns = NetNs::fresh();
    let mut nft = NftablesHandle::connect().unwrap();
    assert!(!nft.table_exists("never-created").unwrap());
    assert!(!nft.delete_table("never-created").unwrap());
    assert_eq!(witness(NFT, &["list", "tables"]), "");
}

/// Issue 12 item 1: a transaction of thousands of messages (each ETP=Local destination is one
/// rule) is reported written. Only its last message asks for an ACK, so the answers cannot
/// overflow the receive buffer (ENOBUFS) as one ACK per message did above ~234 messages.
#[test]
fn thousands_of_etp_local_destinations_are_written_and_reported_written() {
    const DESTINATIONS: u16 = 2_000;
    let _ns = NetNs::fresh();
    let mut nft = NftablesHandle::connect().unwrap();
    let rules = PacketRules {
        external_local: (0..DESTINATIONS)
            .map(|i| ExternalLocalMark {
                address: ip(&format!("203.0.{}.{}", 113 + i / 250, 1 + i % 250)),
                protocol: Protocol::Tcp,
                port: 80,
                mark: 0x100 + u32::from(i),
            })
            .collect(),
        ..PacketRules::default()
    };
    let messages = proxier::dataplane::nftables::replace_table_messages(&rules).len();
    assert!(messages > 2_000, "{messages} messages in one transaction");
    replace_table(&mut nft, &rules).unwrap();
    let listing = list_ours();
    let marks = listing.matches("meta mark set 0x").count();
    show(
        "nft list table inet proxier (summary)",
        &format!("{messages} messages; {marks} `meta mark set 0x…` rules\n"),
    );
    assert_eq!(
        marks,
        usize::from(DESTINATIONS),
        "every ETP=Local rule is in the kernel"
    );
    // Written again (the table replaced whole): still reported written, still all there.
    replace_table(&mut nft, &rules).unwrap();
    assert_eq!(
        list_ours().matches("meta mark set 0x").count(),
        usize::from(DESTINATIONS)
    );
}

/// Issue 15: a periodic resync no longer replaces our table when the ruleset generation is
/// the one our last write left (nothing can have changed it), and still repairs it when
/// another tool changed the ruleset (`nft` both makes the change and witnesses the repair).
/// Fails on the old dataplane, which replaced the table at every resync.
#[test]
fn a_resync_writes_nothing_over_an_unchanged_ruleset_and_repairs_a_foreign_change() {
    use proxier::dataplane::kernel::KernelDataplane;
    use proxier::dataplane::Dataplane;

    let _ns = NetNs::fresh();
    let mut dataplane = KernelDataplane::connect("kube-ipvs0").unwrap();
    let rules = sample_rules();
    assert!(
        dataplane.program_packet_rules(&rules).unwrap(),
        "first write"
    );
    let mut nft = NftablesHandle::connect().unwrap();
    let written = nft.generation().unwrap();

    // Resyncs with nothing changed: nothing written, the generation stays.
    for _ in 0..2 {
        dataplane.observe_addresses().unwrap();
        assert!(!dataplane.program_packet_rules(&rules).unwrap());
        assert_eq!(nft.generation().unwrap(), written, "no transaction");
    }

    // Another tool flushes our prerouting chain: the next resync replaces the table.
    witness(NFT, &["flush", "chain", "inet", "proxier", "prerouting"]);
    assert_ne!(list_ours(), SAMPLE_LISTING, "drift made");
    dataplane.observe_addresses().unwrap();
    assert!(dataplane.program_packet_rules(&rules).unwrap(), "repaired");
    let listing = list_ours();
    show("after the repair", &listing);
    assert_eq!(listing, SAMPLE_LISTING);

    // A change elsewhere in the ruleset also moves the generation: replaced again (it
    // cannot tell), then quiet once more.
    witness(NFT, &["add", "table", "ip", "foreign"]);
    dataplane.observe_addresses().unwrap();
    assert!(dataplane.program_packet_rules(&rules).unwrap());
    let quiet = nft.generation().unwrap();
    dataplane.observe_addresses().unwrap();
    assert!(!dataplane.program_packet_rules(&rules).unwrap());
    assert_eq!(nft.generation().unwrap(), quiet);
}
