//! kube-proxy's host set-up for the baseline half of the incident tests, which replay
//! kube-proxy's IPVS behaviour next to proxier's: its IPVS sysctls, `kube-ipvs0` holding the
//! VIP, and an nftables rule standing in for its iptables rules (which keep the conntrack hooks
//! active). The IPVS programming itself is in `tests/src/lib.rs` (it needs netlink-ipvs).

use crate::sysctl::ipvs_knob;
use crate::witness::{witness, IP, NFT};

/// Sets kube-proxy's IPVS sysctls (`conntrack=1`, `expire_quiescent_template=1`, then
/// `extra`, e.g. `conn_reuse_mode=0`), binds `vip`/32 on a new dummy `kube-ipvs0` and
/// installs the nft rule that makes conntrack track new flows.
pub fn host_setup(vip: &str, extra: &[(&str, &str)]) {
    let defaults = [("conntrack", "1"), ("expire_quiescent_template", "1")];
    for (name, value) in defaults.iter().chain(extra) {
        let path = ipvs_knob(name);
        std::fs::write(&path, value).unwrap_or_else(|e| panic!("write {path}: {e}"));
    }
    witness(IP, &["link", "add", "kube-ipvs0", "type", "dummy"]);
    witness(
        IP,
        &["addr", "add", &format!("{vip}/32"), "dev", "kube-ipvs0"],
    );
    witness(
        NFT,
        &["add table ip kp; add chain ip kp post { type nat hook postrouting priority 100; }; add rule ip kp post ct state new counter"],
    );
}

/// A complete kube-proxy command line in the style of GCE's and kops' manifests: every flag
/// of `cmd/kube-proxy/app/options.go` and of component-base's logging flags set, except the
/// four that change what the process does (`--config`, `--write-config-to`, `--cleanup`,
/// `--init-only`). The values are ones kube-proxy's validation accepts; `--logging-format` is
/// `json` (so `--vmodule` stays empty and `--log-json-*` at their defaults, as kube-proxy
/// requires). The node is `node-a` with primary IP 10.0.1.1; pods are 10.244.0.0/16.
pub fn flag_line(kubeconfig: &str, master: &str) -> Vec<String> {
    let mut line: Vec<String> = vec![
        format!("--kubeconfig={kubeconfig}"),
        format!("--master={master}"),
    ];
    line.extend(
        [
            "--feature-gates=AllAlpha=false",
            "--kube-api-content-type=application/json",
            "--kube-api-burst=20",
            "--kube-api-qps=10",
            "--hostname-override=node-a",
            "--bind-address=10.0.1.1",
            "--healthz-bind-address=0.0.0.0:10256",
            "--metrics-bind-address=127.0.0.1:10249",
            "--bind-address-hard-fail=true",
            "--profiling=true",
            "--show-hidden-metrics-for-version=1.33",
            "--proxy-mode=ipvs",
            "--iptables-masquerade-bit=15",
            "--masquerade-all=false",
            "--iptables-localhost-nodeports=false",
            "--iptables-sync-period=1m",
            "--iptables-min-sync-period=10s",
            "--ipvs-sync-period=30s",
            "--ipvs-min-sync-period=100ms",
            "--ipvs-scheduler=rr",
            "--ipvs-exclude-cidrs=10.255.0.0/16",
            "--ipvs-strict-arp=true",
            "--ipvs-tcp-timeout=900s",
            "--ipvs-tcpfin-timeout=120s",
            "--ipvs-udp-timeout=300s",
            "--detect-local-mode=ClusterCIDR",
            "--pod-bridge-interface=cbr0",
            "--pod-interface-name-prefix=veth",
            "--cluster-cidr=10.244.0.0/16",
            "--nodeport-addresses=10.0.0.0/8",
            "--oom-score-adj=-999",
            "--conntrack-max-per-core=0",
            "--conntrack-min=131072",
            "--conntrack-tcp-timeout-established=0s",
            "--conntrack-tcp-timeout-close-wait=0s",
            "--conntrack-tcp-be-liberal=false",
            "--conntrack-udp-timeout=0s",
            "--conntrack-udp-timeout-stream=0s",
            "--config-sync-period=30m",
            "--healthz-port=10256",
            "--metrics-port=10249",
            "--logging-format=json",
            "--log-flush-frequency=10s",
            "--v=2",
            "--vmodule=",
            "--log-json-split-stream=false",
            "--log-json-info-buffer-size=0",
        ]
        .map(str::to_owned),
    );
    line
}

/// The flags of [`flag_line`] that proxier does not implement, set there to values other than
/// kube-proxy's defaults: each must be logged once as a warning.
pub const UNIMPLEMENTED_IN_FLAG_LINE: &[&str] = &[
    "feature-gates",
    "kube-api-content-type",
    "kube-api-burst",
    "kube-api-qps",
    "bind-address-hard-fail",
    "profiling",
    "show-hidden-metrics-for-version",
    "iptables-masquerade-bit",
    "iptables-localhost-nodeports",
    "iptables-sync-period",
    "iptables-min-sync-period",
    "pod-bridge-interface",
    "pod-interface-name-prefix",
    "config-sync-period",
    "log-flush-frequency",
];

/// Which iptables kube-proxy's image ran: `iptables-nft` (nf_tables tables `ip nat`/`ip
/// filter`) or `iptables-legacy` (x_tables).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Iptables {
    /// `iptables-nft-restore`.
    Nft,
    /// `iptables-legacy-restore`.
    Legacy,
}

impl Iptables {
    /// The `*-restore` binary of this flavour.
    pub fn restore(self) -> &'static str {
        match self {
            Iptables::Nft => "/usr/sbin/iptables-nft-restore",
            Iptables::Legacy => "/usr/sbin/iptables-legacy-restore",
        }
    }

    /// The `*-save` binary of this flavour.
    pub fn save(self) -> &'static str {
        match self {
            Iptables::Nft => crate::witness::IPTABLES_NFT_SAVE,
            Iptables::Legacy => crate::witness::IPTABLES_LEGACY_SAVE,
        }
    }
}

/// `ipset`, which kube-proxy's IPVS mode drives (and the witness of its sets).
pub const IPSET: &str = "/usr/sbin/ipset";

/// One Service port as kube-proxy's IPVS mode sees it: a ClusterIP (and for a LoadBalancer an
/// ingress IP, with its `loadBalancerSourceRanges`), its endpoints (all on this node).
#[derive(Debug, Clone)]
pub struct ServicePort {
    /// `tcp` or `udp`.
    pub protocol: &'static str,
    /// The ClusterIP.
    pub cluster_ip: &'static str,
    /// The Service port.
    pub port: u16,
    /// The endpoints' port.
    pub target_port: u16,
    /// The endpoints' addresses (ready, on this node).
    pub endpoints: Vec<&'static str>,
    /// A LoadBalancer's ingress IP and its source ranges (CIDRs; empty: any source).
    pub load_balancer: Option<(&'static str, Vec<&'static str>)>,
}

/// The ipsets of kube-proxy's `ipsetInfo` (pkg/proxy/ipvs/proxier.go) with their types.
const IPSETS: &[(&str, &str)] = &[
    ("KUBE-LOOP-BACK", "hash:ip,port,ip"),
    ("KUBE-CLUSTER-IP", "hash:ip,port"),
    ("KUBE-EXTERNAL-IP", "hash:ip,port"),
    ("KUBE-EXTERNAL-IP-LOCAL", "hash:ip,port"),
    ("KUBE-LOAD-BALANCER", "hash:ip,port"),
    ("KUBE-LOAD-BALANCER-FW", "hash:ip,port"),
    ("KUBE-LOAD-BALANCER-LOCAL", "hash:ip,port"),
    ("KUBE-LOAD-BALANCER-SOURCE-IP", "hash:ip,port,ip"),
    ("KUBE-LOAD-BALANCER-SOURCE-CIDR", "hash:ip,port,net"),
    ("KUBE-NODE-PORT-TCP", "bitmap:port"),
    ("KUBE-NODE-PORT-LOCAL-TCP", "bitmap:port"),
    ("KUBE-NODE-PORT-UDP", "bitmap:port"),
    ("KUBE-NODE-PORT-LOCAL-UDP", "bitmap:port"),
    ("KUBE-NODE-PORT-SCTP-HASH", "hash:ip,port"),
    ("KUBE-NODE-PORT-LOCAL-SCTP-HASH", "hash:ip,port"),
    ("KUBE-HEALTH-CHECK-NODE-PORT", "bitmap:port"),
    ("KUBE-IPVS-IPS", "hash:ip"),
];

/// Writes the node state kube-proxy's IPVS mode leaves for `services` (no NodePorts, cluster
/// CIDR `cluster_cidr`, masquerade bit 14 = mark 0x4000), from its source
/// (pkg/proxy/ipvs/proxier.go `syncProxyRules`, `writeIptablesRules`, `createAndLinkKubeChain`,
/// `ipsetInfo`, `ipsetWithIptablesChain`): its IPVS sysctls; the dummy `kube-ipvs0` holding
/// every ClusterIP and ingress IP; one `rr` virtual server per address:port with masq real
/// servers of weight 1 (`ipvsadm -R`); the 17 ipsets and their entries (`ipset restore`); the
/// `nat` and `filter` chains and jumps (`iptables-restore --noflush`, of `flavour`).
pub fn write_ipvs_mode_state(services: &[ServicePort], cluster_cidr: &str, flavour: Iptables) {
    for (name, value) in [
        ("conntrack", "1"),
        ("expire_nodest_conn", "1"),
        ("expire_quiescent_template", "1"),
    ] {
        let path = ipvs_knob(name);
        std::fs::write(&path, value).unwrap_or_else(|e| panic!("write {path}: {e}"));
    }
    // ipset names protocols through getprotobyname(3), as on a node; the VM has no
    // /etc/protocols of its own. One written here is removed once ipset has read it: later
    // tests in the same VM compare `nft` listings, which name protocols when the file exists.
    let protocols = std::path::Path::new("/etc/protocols");
    let wrote_protocols = !protocols.exists();
    if wrote_protocols {
        std::fs::create_dir_all("/etc").expect("create /etc");
        std::fs::write(protocols, "tcp 6 TCP\nudp 17 UDP\nsctp 132 SCTP\n")
            .expect("write /etc/protocols");
    }
    witness(IP, &["link", "add", "kube-ipvs0", "type", "dummy"]);
    let mut ipvs = String::new();
    let mut sets: Vec<(&str, String)> = Vec::new();
    let mut bound: Vec<&str> = Vec::new();
    let flag = |protocol: &str| if protocol == "udp" { "-u" } else { "-t" };
    for s in services {
        let mut vips = vec![s.cluster_ip];
        sets.push((
            "KUBE-CLUSTER-IP",
            format!("{},{}:{}", s.cluster_ip, s.protocol, s.port),
        ));
        if let Some((ingress, ranges)) = &s.load_balancer {
            vips.push(ingress);
            let entry = format!("{ingress},{}:{}", s.protocol, s.port);
            sets.push(("KUBE-LOAD-BALANCER", entry.clone()));
            if !ranges.is_empty() {
                sets.push(("KUBE-LOAD-BALANCER-FW", entry.clone()));
            }
            for range in ranges {
                sets.push(("KUBE-LOAD-BALANCER-SOURCE-CIDR", format!("{entry},{range}")));
            }
        }
        for endpoint in &s.endpoints {
            // Local endpoints: hairpin traffic (a pod to its own Service) is masqueraded.
            let hairpin = format!("{endpoint},{}:{},{endpoint}", s.protocol, s.target_port);
            sets.push(("KUBE-LOOP-BACK", hairpin));
        }
        for vip in vips {
            if !bound.contains(&vip) {
                bound.push(vip);
                witness(
                    IP,
                    &["addr", "add", &format!("{vip}/32"), "dev", "kube-ipvs0"],
                );
                sets.push(("KUBE-IPVS-IPS", vip.to_owned()));
            }
            let service = format!("{} {vip}:{}", flag(s.protocol), s.port);
            ipvs.push_str(&format!("-A {service} -s rr\n"));
            for endpoint in &s.endpoints {
                let real = format!("{endpoint}:{}", s.target_port);
                ipvs.push_str(&format!("-a {service} -r {real} -m -w 1\n"));
            }
        }
    }
    feed(crate::witness::IPVSADM, &["-R"], &ipvs);
    let mut restore = String::new();
    for (name, kind) in IPSETS {
        let options = if kind.starts_with("bitmap") {
            "range 0-65535"
        } else {
            "family inet hashsize 1024 maxelem 65536"
        };
        restore.push_str(&format!("create {name} {kind} {options}\n"));
    }
    // A set holds an entry once (two Services' ports on one endpoint share a hairpin entry).
    let mut added = std::collections::BTreeSet::new();
    for (name, entry) in &sets {
        if added.insert((name, entry)) {
            restore.push_str(&format!("add {name} {entry}\n"));
        }
    }
    feed(IPSET, &["restore"], &restore);
    if wrote_protocols {
        std::fs::remove_file(protocols).expect("remove /etc/protocols");
    }
    let has = |set: &str| sets.iter().any(|(name, _)| *name == set);
    feed(
        flavour.restore(),
        &["--noflush"],
        &iptables_rules(cluster_cidr, &has),
    );
}

/// kube-proxy's `nat` and `filter` rules in `iptables-restore` form; `has(set)` says whether
/// an ipset has entries (kube-proxy writes a set's match rule only then).
fn iptables_rules(cluster_cidr: &str, has: &dyn Fn(&str) -> bool) -> String {
    let mut nat = vec![
        "*nat".to_owned(),
        ":KUBE-SERVICES - [0:0]".into(),
        ":KUBE-POSTROUTING - [0:0]".into(),
        ":KUBE-NODE-PORT - [0:0]".into(),
        ":KUBE-LOAD-BALANCER - [0:0]".into(),
        ":KUBE-MARK-MASQ - [0:0]".into(),
        "-I PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES".into(),
        "-I OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES".into(),
        "-I POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING"
            .into(),
        "-A KUBE-SERVICES -s 127.0.0.0/8 -j RETURN".into(),
    ];
    let mut filter = vec![
        "*filter".to_owned(),
        ":KUBE-FORWARD - [0:0]".into(),
        ":KUBE-NODE-PORT - [0:0]".into(),
        ":KUBE-PROXY-FIREWALL - [0:0]".into(),
        ":KUBE-SOURCE-RANGES-FIREWALL - [0:0]".into(),
        ":KUBE-IPVS-FILTER - [0:0]".into(),
        ":KUBE-IPVS-OUT-FILTER - [0:0]".into(),
        "-I FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD".into(),
        "-I INPUT -m comment --comment \"kubernetes health check rules\" -j KUBE-NODE-PORT".into(),
        "-I INPUT -m comment --comment \"kube-proxy firewall rules\" -j KUBE-PROXY-FIREWALL".into(),
        "-I FORWARD -m comment --comment \"kube-proxy firewall rules\" -j KUBE-PROXY-FIREWALL"
            .into(),
        "-I INPUT -m comment --comment \"kubernetes ipvs access filter\" -j KUBE-IPVS-FILTER"
            .into(),
        "-I OUTPUT -m comment --comment \"kubernetes ipvs access filter\" -j KUBE-IPVS-OUT-FILTER"
            .into(),
    ];
    // ipsetWithIptablesChain, in its order (no NodePorts here).
    for (set, table, from, to, match_type) in [
        (
            "KUBE-LOOP-BACK",
            0,
            "KUBE-POSTROUTING",
            "MASQUERADE",
            "dst,dst,src",
        ),
        (
            "KUBE-LOAD-BALANCER",
            0,
            "KUBE-SERVICES",
            "KUBE-LOAD-BALANCER",
            "dst,dst",
        ),
        (
            "KUBE-LOAD-BALANCER-LOCAL",
            0,
            "KUBE-LOAD-BALANCER",
            "RETURN",
            "dst,dst",
        ),
        (
            "KUBE-LOAD-BALANCER-FW",
            1,
            "KUBE-PROXY-FIREWALL",
            "KUBE-SOURCE-RANGES-FIREWALL",
            "dst,dst",
        ),
        (
            "KUBE-LOAD-BALANCER-SOURCE-CIDR",
            1,
            "KUBE-SOURCE-RANGES-FIREWALL",
            "RETURN",
            "dst,dst,src",
        ),
        (
            "KUBE-LOAD-BALANCER-SOURCE-IP",
            1,
            "KUBE-SOURCE-RANGES-FIREWALL",
            "RETURN",
            "dst,dst,src",
        ),
    ] {
        if has(set) {
            let rule = format!("-A {from} -m set --match-set {set} {match_type} -j {to}");
            if table == 0 {
                nat.push(rule)
            } else {
                filter.push(rule)
            }
        }
    }
    if has("KUBE-CLUSTER-IP") {
        nat.push(format!(
            "-A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst ! -s {cluster_cidr} -j KUBE-MARK-MASQ"
        ));
    }
    nat.extend([
        "-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT".to_owned(),
        "-A KUBE-LOAD-BALANCER -j KUBE-MARK-MASQ".into(),
    ]);
    filter.push("-A KUBE-SOURCE-RANGES-FIREWALL -j DROP".into());
    // acceptIPVSTraffic: the end of KUBE-SERVICES.
    for set in ["KUBE-CLUSTER-IP", "KUBE-LOAD-BALANCER"] {
        if has(set) {
            nat.push(format!(
                "-A KUBE-SERVICES -m set --match-set {set} dst,dst -j ACCEPT"
            ));
        }
    }
    filter.extend([
        "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark 0x4000/0x4000 -j ACCEPT".to_owned(),
        "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT".into(),
        "-A KUBE-NODE-PORT -m set --match-set KUBE-HEALTH-CHECK-NODE-PORT dst -j ACCEPT".into(),
        // Issue 72236: no access to the host's ports through a VIP.
        "-A KUBE-IPVS-FILTER -m set --match-set KUBE-LOAD-BALANCER dst,dst -j RETURN".into(),
        "-A KUBE-IPVS-FILTER -m set --match-set KUBE-CLUSTER-IP dst,dst -j RETURN".into(),
        "-A KUBE-IPVS-FILTER -m set --match-set KUBE-EXTERNAL-IP dst,dst -j RETURN".into(),
        "-A KUBE-IPVS-FILTER -m set --match-set KUBE-EXTERNAL-IP-LOCAL dst,dst -j RETURN".into(),
        "-A KUBE-IPVS-FILTER -m set --match-set KUBE-HEALTH-CHECK-NODE-PORT dst -j RETURN".into(),
        "-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set KUBE-IPVS-IPS dst -j REJECT".into(),
        "COMMIT".into(),
    ]);
    nat.extend([
        "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN".to_owned(),
        "-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000".into(),
        "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully".into(),
        "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000".into(),
        "COMMIT".into(),
    ]);
    let mut text = nat.join("\n");
    text.push('\n');
    text.push_str(&filter.join("\n"));
    text.push('\n');
    text
}

/// Runs `tool ARGS` with `input` on stdin; panics (with the input) if it fails.
fn feed(tool: &str, args: &[&str], input: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new(tool)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {tool}: {e}"));
    child
        .stdin
        .take()
        .expect("stdin piped")
        .write_all(input.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}\n{}\ninput:\n{input}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The names of the `KUBE-*` chains `flavour`'s `*-save` lists, and of the `KUBE-*` ipsets.
pub fn leftovers(flavour: Iptables) -> Vec<String> {
    let save = witness(flavour.save(), &[]);
    let mut names: Vec<String> = save
        .lines()
        .filter_map(|l| l.strip_prefix(':'))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|chain| chain.starts_with("KUBE-"))
        .map(|chain| format!("chain {chain}"))
        .collect();
    names.extend(
        witness(IPSET, &["list", "-n"])
            .lines()
            .filter(|set| set.starts_with("KUBE-"))
            .map(|set| format!("ipset {set}")),
    );
    names
}
