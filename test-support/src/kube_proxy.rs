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
