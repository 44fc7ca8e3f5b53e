//! proxier's packet rules: one nftables table of our own (`inet proxier` by default), written
//! over nfnetlink from our own process. No `nft` binary, no libnftnl, and no rule, chain or set
//! of anyone else is used (incident I5); cleanup deletes this table and nothing else (I2).
//!
//! This module decides what the table contains ([`replace_table_messages`],
//! [`update_messages`]: pure); the wire (messages, batch encoding, the socket and its ACK) is
//! the `netlink-nftables` crate's.
//!
//! # What the table contains
//!
//! ```text
//! table inet proxier {
//!   set service-ips-v4 / service-ips-v6   ClusterIPs, ExternalIPs, LoadBalancer ingress IPs
//!   set node-ips-v4 / node-ips-v6         addresses where NodePorts open
//!   set node-ports                        inet_proto . inet_service
//!   set service-ports-v4 / -v6            daddr . inet_proto . inet_service of every service
//!   set masquerade-destinations-v4 / -v6  ETP=Cluster ExternalIP and LB IP:ports
//!   set health-check-ports                TCP healthCheckNodePorts
//!   chain source-ranges-N                 allowed source ranges of one LoadBalancer, then drop
//!   chain prerouting  { type filter hook prerouting priority mangle; policy accept; }
//!   chain input       { type filter hook input priority filter; policy accept; }
//!   chain output      { type route hook output priority mangle; policy accept; }
//!   chain postrouting { type nat hook postrouting priority srcnat; policy accept; }
//! }
//! ```
//!
//! prerouting, in order:
//! 1. traffic to a LoadBalancer IP:port with `loadBalancerSourceRanges` jumps to its
//!    `source-ranges-N` chain, which returns for allowed sources and drops the rest;
//! 2. `externalTrafficPolicy: Local` traffic that comes from outside the cluster CIDR(s) (and not
//!    from the node itself) gets `meta mark set MARK` and is accepted: the fwmark virtual server
//!    with local endpoints catches it, and it is not masqueraded (the client IP is kept);
//! 3. traffic to a node IP + NodePort, and to an ETP=Cluster ExternalIP or LoadBalancer
//!    IP:port, gets the masquerade bit (any source, whatever the cluster CIDR: kube-proxy's
//!    `KUBE-NODE-PORT`, `KUBE-EXTERNAL-IP`, `KUBE-LOAD-BALANCER`);
//! 4. traffic to a service IP from outside the cluster CIDR(s) of its family gets the masquerade
//!    bit; with `masquerade_all`, from any source. When no cluster CIDR of that family is known
//!    and `masquerade_all` is off, external traffic to service IPs is *not* masqueraded (as
//!    kube-proxy without `clusterCIDR`): only NodePort traffic and the node's own traffic are.
//!
//! input (kube-proxy's `KUBE-IPVS-FILTER`, kubernetes#72236): a packet to a known service
//! IP:port or to a health-check node port passes; a *new* connection to any other port of a
//! service IP (sshd, the kubelet on a ClusterIP) is rejected (ICMP port unreachable, as
//! iptables' `REJECT`). Established and related traffic is untouched. IPVS takes local-in
//! traffic at priority `NF_IP_PRI_NAT_SRC - 1`, after this chain.
//!
//! output (the node's own traffic) sets the masquerade bit for service IPs and NodePorts.
//! postrouting masquerades (`fully-random`) what carries the bit and clears the bit, as
//! kube-proxy's `KUBE-POSTROUTING` does. Being a nat chain, it also turns conntrack on in the
//! namespace, which IPVS needs to create conntrack entries.
//!
//! The transaction is `NEWTABLE, DELTABLE, NEWTABLE, ...`: the table is replaced whole and
//! atomically, so a packet sees either the old rules or the new ones, never a half-written table.

mod ruleset;
#[cfg(test)]
mod tests;

use std::net::IpAddr;

use netlink_ipvs::Family;
use netlink_nftables::{encode_batch, NftMessage, NftablesError, NftablesHandle};

pub use crate::plan::{
    ExternalLocalMark, LoadBalancerSourceRange, PacketRules, DEFAULT_MASQUERADE_MARK, DEFAULT_TABLE,
};

impl PacketRules {
    fn cluster_cidrs_of(&self, family: Family) -> Vec<(IpAddr, u8)> {
        self.cluster_cidrs
            .iter()
            .copied()
            .filter(|(net, _)| Family::of(net) == family)
            .collect()
    }
}

/// The messages of the transaction that replaces our table with `rules` (without the batch
/// delimiters), each with a description for error reports.
pub fn replace_table_messages(rules: &PacketRules) -> Vec<NftMessage> {
    ruleset::replace_table_messages(rules)
}

/// The whole netlink batch that atomically replaces our table: `BATCH_BEGIN` with `sequence`,
/// then the messages of [`replace_table_messages`] with `sequence + 1 ..`, then `BATCH_END`.
pub fn encode_replace_table(rules: &PacketRules, sequence: u32) -> Vec<u8> {
    encode_batch(&replace_table_messages(rules), sequence)
}

/// The messages that turn a table written from `old` into one for `new` by adding and
/// removing set elements only, or `None` when chains or rules differ (then the table is
/// replaced whole).
pub fn update_messages(old: &PacketRules, new: &PacketRules) -> Option<Vec<NftMessage>> {
    ruleset::update_messages(old, new)
}

/// Replaces our table with `rules` in one transaction (one `sendmsg`). On failure nothing
/// changed (the kernel aborts the whole batch) and the error names the refused message.
pub fn replace_table(nft: &mut NftablesHandle, rules: &PacketRules) -> Result<(), NftablesError> {
    nft.transaction(&replace_table_messages(rules))
}

/// The ruleset generation to remember after a packet-rule write, read `before` and `after`
/// it (`None`: not read): only when our transaction is the only commit between the reads,
/// and, for an update (not a whole-table replace, `replaced`), when the ruleset had not
/// moved since our `previous` write either; otherwise `None`, and the next resync replaces
/// the table. The kernel bumps the generation once per committed transaction, whoever sent
/// it.
pub fn written_generation(
    previous: Option<u32>,
    before: Option<u32>,
    after: Option<u32>,
    replaced: bool,
) -> Option<u32> {
    let (before, after) = (before?, after?);
    // An update with nothing to send commits nothing.
    let only_ours = after == before.wrapping_add(1) || (!replaced && after == before);
    let intact_before = replaced || previous == Some(before);
    (only_ours && intact_before).then_some(after)
}

/// Brings a table written from `old` in line with `new`: set elements added and removed in
/// one transaction when only set contents differ, the whole table replaced otherwise.
pub fn update_table(
    nft: &mut NftablesHandle,
    old: &PacketRules,
    new: &PacketRules,
) -> Result<(), NftablesError> {
    match update_messages(old, new) {
        Some(messages) => nft.transaction(&messages),
        None => replace_table(nft, new),
    }
}
