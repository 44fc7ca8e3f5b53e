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
