//! What kube-proxy's IPVS mode leaves on a node when proxier takes over, recognised by name
//! only (ARCHITECTURE.md rule 2): its iptables chains (per table), the rules of any chain that
//! jump or go to one of them, and its ipsets. Pure: a backend reads an [`XtRuleset`], this
//! module selects, the backend removes ([`crate::dataplane::LeftoverBackend`]).
//!
//! The names are kube-proxy's (`pkg/proxy/ipvs/proxier.go`: `iptablesCleanupChains`, the
//! chains its own `--cleanup` removes; `ipset.go`: `ipsetInfo`). What is *not* kube-proxy's
//! is kept, even under a `KUBE-` name:
//! - `filter KUBE-FIREWALL`, `KUBE-KUBELET-CANARY` (any table): kubelet's
//!   (`pkg/kubelet/kubelet_network_linux.go`); kubelet re-creates them and they guard the
//!   node, not Services.
//! - `nat KUBE-MARK-DROP`: kubelet's (older kubelets; kube-proxy's IPVS mode never listed it
//!   for cleanup).
//! - `KUBE-SVC-*`, `KUBE-SEP-*`, `KUBE-EXT-*`, `KUBE-FW-*`, `KUBE-XLB-*`: iptables mode's, not
//!   IPVS mode's; not ours to judge.
//!
//! `nat KUBE-MARK-MASQ` and `nat KUBE-POSTROUTING` are removed: kube-proxy's IPVS mode creates
//! and cleans them up (`iptablesCleanupChains`), and kubelets since 1.28
//! (`IPTablesOwnershipCleanup`, GA) no longer create them; an older kubelet that still does
//! re-creates them at its next sync. `nat KUBE-FIREWALL` (not filter) is the load-balancer
//! firewall chain of kube-proxy's IPVS mode before 1.26, listed in its cleanup then.

use netlink_ipvs::Family;

/// An iptables table kube-proxy writes.
pub const TABLE_FILTER: &str = "filter";
/// The `nat` table.
pub const TABLE_NAT: &str = "nat";

/// kube-proxy IPVS mode's chains, by table (its `iptablesCleanupChains` across releases).
pub const KUBE_PROXY_CHAINS: &[(&str, &str)] = &[
    (TABLE_NAT, "KUBE-SERVICES"),
    (TABLE_NAT, "KUBE-POSTROUTING"),
    (TABLE_NAT, "KUBE-NODE-PORT"),
    (TABLE_NAT, "KUBE-LOAD-BALANCER"),
    (TABLE_NAT, "KUBE-MARK-MASQ"),
    (TABLE_NAT, "KUBE-FIREWALL"),
    (TABLE_FILTER, "KUBE-FORWARD"),
    (TABLE_FILTER, "KUBE-NODE-PORT"),
    (TABLE_FILTER, "KUBE-PROXY-FIREWALL"),
    (TABLE_FILTER, "KUBE-SOURCE-RANGES-FIREWALL"),
    (TABLE_FILTER, "KUBE-IPVS-FILTER"),
    (TABLE_FILTER, "KUBE-IPVS-OUT-FILTER"),
];

/// kube-proxy IPVS mode's IPv4 ipset names (`ipset.go`, across releases). The IPv6 proxier
/// names the same sets `KUBE-6-…`, cut to 31 characters ([`ipv6_set_name`]).
pub const KUBE_PROXY_SETS: &[&str] = &[
    "KUBE-LOOP-BACK",
    "KUBE-CLUSTER-IP",
    "KUBE-EXTERNAL-IP",
    "KUBE-EXTERNAL-IP-LOCAL",
    "KUBE-LOAD-BALANCER",
    "KUBE-LOAD-BALANCER-LOCAL",
    "KUBE-LOAD-BALANCER-FW",
    "KUBE-LOAD-BALANCER-SOURCE-IP",
    "KUBE-LOAD-BALANCER-SOURCE-CIDR",
    "KUBE-LOAD-BALANCER-MASQ",
    "KUBE-NODE-PORT-TCP",
    "KUBE-NODE-PORT-LOCAL-TCP",
    "KUBE-NODE-PORT-UDP",
    "KUBE-NODE-PORT-LOCAL-UDP",
    "KUBE-NODE-PORT-SCTP-HASH",
    "KUBE-NODE-PORT-LOCAL-SCTP-HASH",
    "KUBE-HEALTH-CHECK-NODE-PORT",
    "KUBE-IPVS-IPS",
];

/// The longest ipset name (`IPSET_MAXNAMELEN` - 1).
const IPSET_NAME_MAX: usize = 31;

/// The IPv6 proxier's name for an IPv4 set name (`KUBE-` → `KUBE-6-`, cut to 31 characters,
/// as kube-proxy's `NewIPSet`).
pub fn ipv6_set_name(name: &str) -> String {
    let mut six = name.replacen("KUBE-", "KUBE-6-", 1);
    six.truncate(IPSET_NAME_MAX);
    six
}

/// Whether `table`/`chain` is one of kube-proxy IPVS mode's chains.
pub fn is_kube_proxy_chain(table: &str, chain: &str) -> bool {
    KUBE_PROXY_CHAINS.contains(&(table, chain))
}

/// Whether ipset `name` is one of kube-proxy IPVS mode's sets (either family).
pub fn is_kube_proxy_set(name: &str) -> bool {
    KUBE_PROXY_SETS
        .iter()
        .any(|set| *set == name || ipv6_set_name(set) == name)
}

/// One family's iptables rules as a backend read them (the tables kube-proxy writes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct XtRuleset {
    /// Every chain of every table read.
    pub chains: Vec<XtChain>,
}

/// One chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XtChain {
    /// Its table (`filter`, `nat`, `mangle`, …).
    pub table: String,
    /// Its name.
    pub name: String,
    /// Its rules, in order.
    pub rules: Vec<XtRule>,
}

/// One rule: what identifies it to its backend, and the chain it jumps or goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XtRule {
    /// The backend's identity of the rule: the nf_tables rule handle (iptables-nft), or the
    /// rule's position in its chain (iptables-legacy, which has no handles).
    pub handle: u64,
    /// The chain a `jump`/`goto` verdict names, if any.
    pub target: Option<String>,
}

/// A rule to delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleRef {
    /// Its table.
    pub table: String,
    /// Its chain.
    pub chain: String,
    /// Its handle ([`XtRule::handle`]).
    pub handle: u64,
    /// The kube-proxy chain it jumps to.
    pub target: String,
}

/// A chain, by table and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ChainRef {
    /// Its table.
    pub table: String,
    /// Its name.
    pub name: String,
}

impl std::fmt::Display for ChainRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.table, self.name)
    }
}

/// What to remove from one family's ruleset, in this order: `rules` (outside kube-proxy's
/// chains, jumping into them), then `chains` (flushed, then deleted). `kept` lists the
/// `KUBE-*` chains that are not kube-proxy's (kubelet's, iptables mode's), for the report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Removal {
    /// Rules of other chains that jump or go to a chain in `chains`.
    pub rules: Vec<RuleRef>,
    /// kube-proxy's chains present in the ruleset.
    pub chains: Vec<ChainRef>,
    /// `KUBE-*` chains left in place.
    pub kept: Vec<ChainRef>,
}

impl Removal {
    /// Whether there is nothing to remove.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty() && self.chains.is_empty()
    }
}

/// Selects kube-proxy's leftovers in `ruleset` (read for `family`; the names are the same in
/// both families).
pub fn select(ruleset: &XtRuleset, _family: Family) -> Removal {
    let mut removal = Removal::default();
    for chain in &ruleset.chains {
        let chain_ref = ChainRef {
            table: chain.table.clone(),
            name: chain.name.clone(),
        };
        if is_kube_proxy_chain(&chain.table, &chain.name) {
            removal.chains.push(chain_ref);
            continue;
        }
        if chain.name.starts_with("KUBE-") {
            removal.kept.push(chain_ref);
        }
        for rule in &chain.rules {
            let Some(target) = &rule.target else {
                continue;
            };
            if is_kube_proxy_chain(&chain.table, target) {
                removal.rules.push(RuleRef {
                    table: chain.table.clone(),
                    chain: chain.name.clone(),
                    handle: rule.handle,
                    target: target.clone(),
                });
            }
        }
    }
    removal
}

/// Splits ipset names into kube-proxy's (to destroy) and the others' (kept), each in the
/// order given.
pub fn select_sets(names: &[String]) -> (Vec<String>, Vec<String>) {
    names.iter().cloned().partition(|n| is_kube_proxy_set(n))
}

#[cfg(test)]
pub(crate) mod tests;
