//! Helpers for real-kernel tests: a fresh network namespace per test, and the outside witnesses
//! (`ipvsadm`, `conntrack`, `nft`, `ip`) run by absolute path.
//!
//! These tests run inside the VM that `cargo xtask vmtest` boots (a kernel with IPVS); they are
//! excluded from the host run.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test helpers panic on failure"
)]

use std::collections::BTreeSet;
use std::fs::File;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::process::Command;

use netlink_ipvs::{
    Family, IpvsOperation, IpvsState, Protocol, RealServer, ServiceFlags, ServiceKey, ServiceState,
    VirtualServer,
};

/// While alive, the current thread is in a new, empty network namespace with `lo` up.
/// Dropping it returns the thread to the namespace it came from.
pub struct NetNs {
    previous: File,
}

impl NetNs {
    /// Moves the calling thread into a new network namespace.
    pub fn fresh() -> Self {
        let previous = File::open("/proc/thread-self/ns/net").expect("open current netns");
        // SAFETY: unshare has no memory-safety preconditions; it affects only this thread's netns.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        );
        witness(IP, &["link", "set", "lo", "up"]);
        Self { previous }
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // SAFETY: the fd is a valid netns fd owned by `self.previous`.
        let rc = unsafe { libc::setns(self.previous.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            eprintln!("setns back failed: {}", std::io::Error::last_os_error());
        }
    }
}

/// `ipvsadm`, the outside witness of IPVS state.
pub const IPVSADM: &str = "/usr/sbin/ipvsadm";
/// `conntrack`, the outside witness of the conntrack table.
pub const CONNTRACK: &str = "/usr/sbin/conntrack";
/// `nft`, the outside witness of nftables.
pub const NFT: &str = "/usr/sbin/nft";
/// iproute2's `ip` (not busybox's).
pub const IP: &str = "/usr/sbin/ip";

/// Runs a witness tool in the caller's namespace and returns its stdout; panics if it fails.
pub fn witness(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {tool}: {e}"));
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The lines `ipvsadm -Sn` prints for `state` (as a set: ipvsadm's order is the kernel's hash order).
pub fn ipvsadm_save(state: &IpvsState) -> BTreeSet<String> {
    netlink_ipvs::ipvsadm::save(state)
}

/// `count` virtual servers with `per_service` real servers each: TCP/UDP/SCTP, IPv4 and IPv6,
/// a few persistent ones, schedulers rr/wrr/lc, and (when `with_fwmark`) one fwmark service.
pub fn sample(count: usize, per_service: usize, with_fwmark: bool) -> IpvsState {
    let mut state = IpvsState::default();
    for i in 0..count {
        let v6 = i % 5 == 4;
        let key = if with_fwmark && i == count - 1 {
            let family = if v6 { Family::V6 } else { Family::V4 };
            ServiceKey::FwMark { mark: 7, family }
        } else {
            let address: IpAddr = if v6 {
                format!("fd00::{:x}", i + 1)
                    .parse()
                    .expect("generated address")
            } else {
                format!("10.96.{}.{}", i / 250, i % 250 + 1)
                    .parse()
                    .unwrap()
            };
            ServiceKey::Address {
                protocol: [Protocol::Tcp, Protocol::Udp, Protocol::Sctp][i % 3],
                address,
                port: 80 + (i % 100) as u16,
            }
        };
        let mut service = VirtualServer::new(key);
        service.scheduler = ["rr", "wrr", "lc"][i % 3].into();
        if i % 10 == 3 {
            service.flags = ServiceFlags::PERSISTENT;
            service.timeout = 10800;
        }
        let real_servers = (0..per_service)
            .map(|j| {
                let address: IpAddr = if v6 {
                    format!("fd01::{:x}:{:x}", i + 1, j + 1)
                        .parse()
                        .expect("generated address")
                } else {
                    format!("10.{}.{}.{}", 100 + i / 250, i % 250, j + 1)
                        .parse()
                        .unwrap()
                };
                let mut rs = RealServer::masq(address, 8080);
                rs.weight = 1 + (j % 3) as u32;
                (rs.key, rs)
            })
            .collect();
        state.services.insert(
            key,
            ServiceState {
                service,
                real_servers,
            },
        );
    }
    state
}

/// The operations that create `state` from nothing.
pub fn create_ops(state: &IpvsState) -> Vec<IpvsOperation> {
    let mut ops = Vec::new();
    for s in state.services.values() {
        ops.push(IpvsOperation::AddService(s.service.clone()));
        ops.extend(
            s.real_servers
                .values()
                .map(|rs| IpvsOperation::AddDestination {
                    service: s.service.key,
                    real_server: *rs,
                }),
        );
    }
    ops
}

/// A small routed topology for real-packet tests: the calling thread's (fresh) namespace is the
/// router, where IPVS lives; each host is a named namespace joined to it by a veth pair, with a
/// default route back through the router. Namespaces are deleted on drop.
pub struct Lab {
    tag: String,
    hosts: Vec<String>,
}

impl Lab {
    /// A lab whose namespace names start with `tag` (keep it short and unique per test).
    pub fn new(tag: &str) -> Self {
        Self {
            tag: tag.to_owned(),
            hosts: Vec::new(),
        }
    }

    /// Adds host `name` at `host_ip` on the /24 shared with the router's `router_ip`; returns
    /// the host's namespace name.
    pub fn host(&mut self, name: &str, host_ip: &str, router_ip: &str) -> String {
        let netns = format!("{}-{name}", self.tag);
        let router_side = format!("v{}{}", self.tag, self.hosts.len());
        witness(IP, &["netns", "add", &netns]);
        self.hosts.push(netns.clone());
        witness(
            IP,
            &[
                "link",
                "add",
                &router_side,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &netns,
            ],
        );
        witness(
            IP,
            &[
                "addr",
                "add",
                &format!("{router_ip}/24"),
                "dev",
                &router_side,
            ],
        );
        witness(IP, &["link", "set", &router_side, "up"]);
        witness(
            IP,
            &[
                "-n",
                &netns,
                "addr",
                "add",
                &format!("{host_ip}/24"),
                "dev",
                "eth0",
            ],
        );
        witness(IP, &["-n", &netns, "link", "set", "eth0", "up"]);
        witness(IP, &["-n", &netns, "link", "set", "lo", "up"]);
        witness(
            IP,
            &["-n", &netns, "route", "add", "default", "via", router_ip],
        );
        netns
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for netns in &self.hosts {
            let _ = Command::new(IP).args(["netns", "del", netns]).status();
        }
    }
}

/// Runs `work` on a new thread inside the named namespace `netns`.
pub fn in_netns<T: Send + 'static>(
    netns: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{netns}");
    std::thread::spawn(move || {
        let target = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        // SAFETY: setns on a valid netns fd affects only this new thread.
        let rc = unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        work()
    })
}

/// A UDP server in `netns` on `port` answering every datagram with `reply(datagram)` until
/// `stop` is set.
fn udp_server(
    netns: &str,
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    reply: impl Fn(&[u8]) -> Vec<u8> + Send + 'static,
) -> std::thread::JoinHandle<()> {
    in_netns(netns, move || {
        let socket = std::net::UdpSocket::bind(("0.0.0.0", port)).expect("bind udp");
        socket
            .set_read_timeout(Some(std::time::Duration::from_millis(50)))
            .expect("timeout");
        let mut buffer = [0u8; 512];
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            if let Ok((n, peer)) = socket.recv_from(&mut buffer) {
                let _ = socket.send_to(&reply(&buffer[..n]), peer);
            }
        }
    })
}

/// A UDP server in `netns` on `port` answering every datagram with `name` until `stop` is set.
pub fn udp_responder(
    netns: &str,
    port: u16,
    name: &'static str,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    udp_server(netns, port, stop, move |_| name.as_bytes().to_vec())
}

/// A TCP server in `netns` on `port` writing `name` to every connection until `stop` is set.
pub fn tcp_responder(
    netns: &str,
    port: u16,
    name: &'static str,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    in_netns(netns, move || {
        use std::io::Write;
        let listener = std::net::TcpListener::bind(("0.0.0.0", port)).expect("bind tcp");
        listener.set_nonblocking(true).expect("nonblocking");
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    let _ = stream.write_all(name.as_bytes());
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
            }
        }
    })
}

/// The `proxier` binary inside the VM (put there by `cargo xtask vmtest`).
pub const PROXIER: &str = "/usr/local/bin/proxier";

/// `iptables-legacy` (x_tables, the flavour of older container images).
pub const IPTABLES_LEGACY: &str = "/usr/sbin/iptables-legacy";
/// `iptables-nft` (the nf_tables-backed flavour of current hosts).
pub const IPTABLES_NFT: &str = "/usr/sbin/iptables-nft";
/// `iptables-legacy-save`.
pub const IPTABLES_LEGACY_SAVE: &str = "/usr/sbin/iptables-legacy-save";
/// `iptables-nft-save`.
pub const IPTABLES_NFT_SAVE: &str = "/usr/sbin/iptables-nft-save";

/// Polls `check` every 20 ms until it returns `Some`, and returns that; panics with `what` and
/// the last `Err` text once `timeout` has passed.
pub fn wait_for<T>(
    what: &str,
    timeout: std::time::Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match check() {
            Ok(value) => return value,
            Err(last) if std::time::Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen:\n{last}")
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    }
}

/// Waits until `ipvsadm -Ln` satisfies `check` and returns that listing.
pub fn wait_for_ipvs(
    what: &str,
    timeout: std::time::Duration,
    check: impl Fn(&str) -> bool,
) -> String {
    wait_for(what, timeout, || {
        let listing = witness(IPVSADM, &["-Ln"]);
        if check(&listing) {
            Ok(listing)
        } else {
            Err(listing)
        }
    })
}

/// Writes `text` to `path` the way a watcher must see it: a temporary file in the same
/// directory, then a rename over the target.
pub fn write_atomically(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
    std::fs::rename(&tmp, path).unwrap_or_else(|e| panic!("rename to {}: {e}", path.display()));
}

/// A running `proxier run` (or any proxier subcommand) in the calling thread's network
/// namespace, with an empty environment (`PATH=""`: it must execute nothing). Its stderr is
/// collected; the process is killed when the guard is dropped.
pub struct ProxierProcess {
    child: std::process::Child,
    log: std::sync::Arc<std::sync::Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl ProxierProcess {
    /// Spawns `proxier ARGS` with `env_clear()`, `PATH=""` and `PROXIER_LOG=info`.
    pub fn spawn(args: &[&str]) -> Self {
        let mut child = Command::new(PROXIER)
            .args(args)
            .env_clear()
            .env("PATH", "")
            .env("PROXIER_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {PROXIER} {args:?}: {e}"));
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr piped");
        let stdout = child.stdout.take().expect("stdout piped");
        let sink = log.clone();
        let reader = std::thread::spawn(move || {
            use std::io::BufRead;
            let sink2 = sink.clone();
            let out = std::thread::spawn(move || {
                for line in std::io::BufReader::new(stdout)
                    .lines()
                    .map_while(Result::ok)
                {
                    let mut log = sink2.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
            });
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
            let _ = out.join();
        });
        Self {
            child,
            log,
            reader: Some(reader),
        }
    }

    /// `proxier run --source DIR --node node-a --min-sync-period 0s` plus `extra`.
    pub fn run(source: &std::path::Path, extra: &[&str]) -> Self {
        let source = source.to_str().expect("utf-8 path");
        let mut args = vec![
            "run",
            "--source",
            source,
            "--node",
            "node-a",
            "--min-sync-period",
            "0s",
        ];
        args.extend_from_slice(extra);
        Self::spawn(&args)
    }

    /// Everything the process wrote to stderr and stdout so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Panics (with the log) if the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!("proxier exited early: {status}\n{}", self.log());
        }
    }

    /// Sends SIGTERM, waits for the exit and returns the exit status and the whole log.
    pub fn stop(mut self) -> (std::process::ExitStatus, String) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if std::time::Instant::now() >= deadline {
                let _ = self.child.kill();
                break self.child.wait().expect("wait");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        (status, self.log())
    }

    /// Runs `proxier ARGS` to completion (empty environment) and returns (success, output).
    pub fn oneshot(args: &[&str]) -> (bool, String) {
        let out = Command::new(PROXIER)
            .args(args)
            .env_clear()
            .env("PATH", "")
            .output()
            .unwrap_or_else(|e| panic!("run {PROXIER} {args:?}: {e}"));
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }
}

impl Drop for ProxierProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One endpoint of a generated EndpointSlice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// The pod IP.
    pub ip: std::net::Ipv4Addr,
    /// `conditions.ready`.
    pub ready: bool,
    /// `conditions.serving`.
    pub serving: bool,
    /// `conditions.terminating`.
    pub terminating: bool,
}

impl Endpoint {
    /// A ready pod.
    pub fn ready(ip: &str) -> Self {
        Self {
            ip: ip.parse().expect("IPv4 address"),
            ready: true,
            serving: true,
            terminating: false,
        }
    }

    /// A pod that is shutting down but still serving (KEP-1669): weight 0 while others are ready.
    pub fn terminating(ip: &str) -> Self {
        Self {
            ready: false,
            serving: true,
            terminating: true,
            ..Self::ready(ip)
        }
    }
}

/// A Service `name` in namespace `default` with `cluster_ip` and `ports`
/// (`(name, protocol, port, target_port, node_port)`; a node port makes it `type: NodePort`).
pub fn service_yaml(
    name: &str,
    cluster_ip: &str,
    ports: &[(&str, &str, u16, u16, Option<u16>)],
) -> String {
    let node_port = ports.iter().any(|p| p.4.is_some());
    let mut text = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  type: {}\n  clusterIP: {cluster_ip}\n  clusterIPs: [{cluster_ip}]\n  ports:\n",
        if node_port { "NodePort" } else { "ClusterIP" }
    );
    for (port_name, protocol, port, target, node) in ports {
        text.push_str(&format!(
            "  - {{name: {port_name}, port: {port}, protocol: {protocol}, targetPort: {target}"
        ));
        if let Some(node) = node {
            text.push_str(&format!(", nodePort: {node}"));
        }
        text.push_str("}\n");
    }
    text
}

/// The EndpointSlice `{service}-eps` of Service `service` with `ports`
/// (`(name, protocol, target_port)`) and `endpoints`, all on node `node-a`.
pub fn slice_yaml(service: &str, ports: &[(&str, &str, u16)], endpoints: &[Endpoint]) -> String {
    let mut text = format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {service}-eps\n  namespace: default\n  labels: {{kubernetes.io/service-name: {service}}}\naddressType: IPv4\nports:\n"
    );
    for (name, protocol, port) in ports {
        text.push_str(&format!(
            "- {{name: {name}, port: {port}, protocol: {protocol}}}\n"
        ));
    }
    if endpoints.is_empty() {
        text.push_str("endpoints: []\n");
    } else {
        text.push_str("endpoints:\n");
    }
    for e in endpoints {
        text.push_str(&format!(
            "- addresses: [{}]\n  conditions: {{ready: {}, serving: {}, terminating: {}}}\n  nodeName: node-a\n",
            e.ip, e.ready, e.serving, e.terminating
        ));
    }
    text
}

/// A fresh, empty source directory for `proxier run` under `/tmp`.
pub fn source_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::path::PathBuf::from(format!("/tmp/proxier-src-{tag}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create source dir");
    dir
}

/// Turns IPv4 forwarding on in the calling thread's namespace (the router's).
pub fn enable_forwarding() {
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1\n").expect("ip_forward");
}

/// Sends one UDP datagram from `socket` to `to` and waits up to `timeout` for the answer.
pub fn udp_ask(
    socket: &std::net::UdpSocket,
    to: std::net::SocketAddr,
    payload: &[u8],
    timeout: std::time::Duration,
) -> Option<String> {
    socket.set_read_timeout(Some(timeout)).expect("timeout");
    socket.send_to(payload, to).ok()?;
    let mut buffer = [0u8; 512];
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match socket.recv(&mut buffer) {
            // The echo names the backend and repeats the query id; discard late answers to
            // earlier queries.
            Ok(n) => {
                let text = String::from_utf8_lossy(&buffer[..n]).into_owned();
                match text.split_once(' ') {
                    Some((name, id)) if id.as_bytes() == payload => return Some(name.to_owned()),
                    None if payload.is_empty() => return Some(text),
                    _ if std::time::Instant::now() >= deadline => return None,
                    _ => continue,
                }
            }
            Err(_) => return None,
        }
    }
}

/// A resolver-like UDP echo server in `netns` on `port`: answers every datagram with
/// `"{name} {payload}"` until `stop` is set, and counts what it answered.
pub fn udp_echo(
    netns: &str,
    port: u16,
    name: &'static str,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    answered: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> std::thread::JoinHandle<()> {
    udp_server(netns, port, stop, move |datagram| {
        answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut reply = format!("{name} ").into_bytes();
        reply.extend_from_slice(datagram);
        reply
    })
}

/// One query of a load generator: which flow sent it, when, and who answered (None: lost).
#[derive(Debug, Clone)]
pub struct Query {
    /// The flow (client socket) index.
    pub flow: usize,
    /// When the query was sent.
    pub sent: std::time::Instant,
    /// The answering backend's name, or None when no answer came within the timeout.
    pub answer: Option<String>,
}

/// DNS-like UDP load from `netns` to `target`: `flows` clients, each sending a query, waiting up
/// to `timeout` for its answer, then pausing `interval`, until `stop` is set. With
/// `fixed_port_base`, flow `i` keeps source port `base + i` for its whole life (a long-lived
/// resolver socket); without, every query comes from a fresh ephemeral port.
pub fn udp_load(
    netns: &str,
    target: std::net::SocketAddr,
    flows: usize,
    fixed_port_base: Option<u16>,
    interval: std::time::Duration,
    timeout: std::time::Duration,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Vec<Query>> {
    in_netns(netns, move || {
        let workers: Vec<_> = (0..flows)
            .map(|flow| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let bind = |port: u16| {
                        std::net::UdpSocket::bind(("0.0.0.0", port)).expect("bind client udp")
                    };
                    let fixed = fixed_port_base.map(|base| bind(base + flow as u16));
                    let mut queries = Vec::new();
                    let mut id = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        id += 1;
                        let payload = format!("{flow}-{id}");
                        let fresh;
                        let socket = match &fixed {
                            Some(s) => s,
                            None => {
                                fresh = bind(0);
                                &fresh
                            }
                        };
                        let sent = std::time::Instant::now();
                        let answer = udp_ask(socket, target, payload.as_bytes(), timeout);
                        queries.push(Query { flow, sent, answer });
                        std::thread::sleep(interval);
                    }
                    queries
                })
            })
            .collect();
        let mut all: Vec<Query> = workers
            .into_iter()
            .flat_map(|w| w.join().expect("load worker"))
            .collect();
        all.sort_by_key(|q| q.sent);
        all
    })
}

/// Counts of `queries` sent at or after `from`: (total, answered by each name, lost).
pub fn tally(
    queries: &[Query],
    from: std::time::Instant,
) -> (usize, std::collections::BTreeMap<String, usize>, usize) {
    let mut by = std::collections::BTreeMap::new();
    let mut lost = 0;
    let mut total = 0;
    for q in queries.iter().filter(|q| q.sent >= from) {
        total += 1;
        match &q.answer {
            Some(name) => *by.entry(name.clone()).or_insert(0) += 1,
            None => lost += 1,
        }
    }
    (total, by, lost)
}

/// A TCP connection from the explicit source port `port` (with `SO_REUSEADDR`, so a port is
/// reused as soon as the previous connection on it is closed), to `target`, with a connect
/// timeout of `timeout`.
pub fn tcp_connect_from(
    port: u16,
    target: std::net::SocketAddrV4,
    timeout: std::time::Duration,
) -> std::io::Result<std::net::TcpStream> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: plain socket(2); the fd is owned right away.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh, valid fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let one: libc::c_int = 1;
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    let sockaddr = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let local = sockaddr(std::net::Ipv4Addr::UNSPECIFIED, port);
    let remote = sockaddr(*target.ip(), target.port());
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: valid fd, option values and sockaddr structures that outlive the calls.
    let rc = unsafe {
        if libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ) != 0
            || libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            ) != 0
            || libc::bind(
                fd.as_raw_fd(),
                (&local as *const libc::sockaddr_in).cast(),
                len,
            ) != 0
        {
            -1
        } else {
            libc::connect(
                fd.as_raw_fd(),
                (&remote as *const libc::sockaddr_in).cast(),
                len,
            )
        }
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(std::net::TcpStream::from(fd))
}

/// What a TCP load generator saw.
#[derive(Debug, Default, Clone)]
pub struct TcpStats {
    /// Connections attempted (client-side port clashes excluded).
    pub attempts: u64,
    /// Answers per backend name.
    pub answered: std::collections::BTreeMap<String, u64>,
    /// Connections that failed (refused, timed out, reset, or no answer).
    pub failed: u64,
    /// Connections that succeeded but took over 900 ms (a dropped SYN retransmitted).
    pub slow: u64,
    /// The first few failures, for the report.
    pub examples: Vec<String>,
    /// connect() refused locally because the previous connection on the port was still
    /// closing (EADDRNOTAVAIL/EADDRINUSE): a client-side retry, not a proxy failure.
    pub port_busy: u64,
}

/// Short TCP connections from `netns` to `target`, from source ports `ports` only, handed out
/// round-robin to `workers` threads, each connection reading the backend's name to EOF, until
/// `stop` is set.
pub fn tcp_port_load(
    netns: &str,
    target: std::net::SocketAddrV4,
    ports: std::ops::Range<u16>,
    workers: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<TcpStats> {
    in_netns(netns, move || {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let stop = stop.clone();
                let mine: Vec<u16> = ports.clone().filter(|p| p % workers == w).collect();
                std::thread::spawn(move || {
                    use std::io::Read;
                    let mut stats = TcpStats::default();
                    let mut next = 0;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let port = mine[next % mine.len()];
                        next += 1;
                        let started = std::time::Instant::now();
                        let result =
                            tcp_connect_from(port, target, std::time::Duration::from_secs(3))
                                .and_then(|mut s| {
                                    s.set_read_timeout(Some(std::time::Duration::from_secs(3)))?;
                                    let mut text = String::new();
                                    s.read_to_string(&mut text)?;
                                    Ok(text)
                                });
                        match result {
                            Err(e)
                                if matches!(
                                    e.raw_os_error(),
                                    Some(libc::EADDRNOTAVAIL | libc::EADDRINUSE)
                                ) =>
                            {
                                stats.port_busy += 1;
                                std::thread::sleep(std::time::Duration::from_millis(1));
                                continue;
                            }
                            Ok(text) if !text.is_empty() => {
                                stats.attempts += 1;
                                *stats.answered.entry(text).or_insert(0) += 1;
                                if started.elapsed() > std::time::Duration::from_millis(900) {
                                    stats.slow += 1;
                                }
                            }
                            other => {
                                stats.attempts += 1;
                                stats.failed += 1;
                                if stats.examples.len() < 5 {
                                    stats.examples.push(format!("port {port}: {other:?}"));
                                }
                            }
                        }
                    }
                    stats
                })
            })
            .collect();
        let mut total = TcpStats::default();
        for h in handles {
            let s = h.join().expect("tcp load worker");
            total.attempts += s.attempts;
            total.failed += s.failed;
            total.slow += s.slow;
            total.port_busy += s.port_busy;
            for (k, v) in s.answered {
                *total.answered.entry(k).or_insert(0) += v;
            }
            total.examples.extend(s.examples);
        }
        total
    })
}

/// The port list of the DNS-like Service the UDP scenarios use (`dns`, UDP, target 5353).
pub const DNS_PORTS: &[(&str, &str, u16)] = &[("dns", "UDP", 5353)];

/// Writes a UDP Service `dns` at `vip`:53 (→ 5353) with endpoints 10.0.2.2 and 10.0.3.2 into the
/// fresh source directory `tag`, starts `proxier run` on it (cluster CIDR 10.0.0.0/8) and waits
/// for both real servers; returns the slice file (rewrite it to change endpoints) and the process.
pub fn run_two_backend_dns(tag: &str, vip: &str) -> (std::path::PathBuf, ProxierProcess) {
    let source = source_dir(tag);
    write_atomically(
        &source.join("service.yaml"),
        &service_yaml("dns", vip, &[("dns", "UDP", 53, 5353, None)]),
    );
    let slice = source.join("slice.yaml");
    write_atomically(
        &slice,
        &slice_yaml(
            "dns",
            DNS_PORTS,
            &[Endpoint::ready("10.0.2.2"), Endpoint::ready("10.0.3.2")],
        ),
    );
    let proxier = ProxierProcess::run(&source, &["--cluster-cidr", "10.0.0.0/8"]);
    wait_for_ipvs(
        "both real servers",
        std::time::Duration::from_secs(20),
        |l| l.contains("10.0.2.2:5353") && l.contains("10.0.3.2:5353"),
    );
    (slice, proxier)
}
