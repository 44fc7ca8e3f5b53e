//! The chains of local-in traffic to service addresses: the filter of unknown ports on
//! service IPs and the ETP=Local fwmark borrowed for IPVS's lookup.

use netlink_ipvs::{Family, Protocol};
use netlink_nftables::expr::{CmpOp, Verdict};
use netlink_nftables::{NftMessage, Rule};

use super::{SetName, ETP_LOCAL_MARK, ETP_LOCAL_UNMARK, INPUT};
use crate::dataplane::nftables::{ExternalLocalMark, PacketRules};

/// The `input` chain's rules.
pub(super) fn input_filter(out: &mut Vec<NftMessage>, rules: &PacketRules) {
    let table = rules.table.as_str();
    // The filter of unknown ports on service IPs (kube-proxy's KUBE-IPVS-FILTER, #72236):
    // known service IP:ports and health-check node ports pass, then a new connection to any
    // other port of a service IP is rejected; established and related traffic is untouched.
    // IPVS takes local-in traffic after the filter priority, so this sees it first.
    for family in [Family::V4, Family::V6] {
        let known = Rule::default()
            .nfproto(family)
            .daddr_l4_port_in(family, SetName::ServicePorts(family).set_ref())
            .verdict(Verdict::Return);
        out.push(NftMessage::rule(table, INPUT, "service IP:ports", known));
    }
    let health = Rule::default()
        .port_in(Protocol::Tcp, SetName::HealthCheckPorts.set_ref())
        .verdict(Verdict::Return);
    out.push(NftMessage::rule(
        table,
        INPUT,
        "health-check node ports",
        health,
    ));
    for family in [Family::V4, Family::V6] {
        let reject = Rule::default()
            .nfproto(family)
            .ct_state_new()
            .daddr_in(family, SetName::ServiceIps(family).set_ref())
            .reject();
        out.push(NftMessage::rule(
            table,
            INPUT,
            "reject other ports of service IPs",
            reject,
        ));
    }
}

/// External traffic (not from the node itself, not from a cluster CIDR of its family) to the
/// ETP=Local destination of `mark`.
pub(super) fn external_to(rules: &PacketRules, mark: &ExternalLocalMark) -> Rule {
    let family = Family::of(&mark.address);
    let mut rule = Rule::default().not_from_loopback().nfproto(family);
    for net in rules.cluster_cidrs_of(family) {
        rule = rule.saddr_prefix(CmpOp::Neq, net);
    }
    rule.daddr(mark.address).l4_port(mark.protocol, mark.port)
}

/// ETP=Local's fwmark, without taking other components' mark bits (CNIs keep state in them).
/// IPVS finds a firewall-mark virtual server only by the packet's *whole* mark, so the mark
/// cannot just be OR-ed in; it is borrowed for the lookup alone:
/// - in `etp-local-mark` (local-in, just before IPVS), after every other component's
///   prerouting and input chains saw the packet's own mark, the mark is kept in
///   `skb->priority` (0 on a packet from the network) and set to the fwmark;
/// - in `etp-local-unmark` (local-out, first of all: IPVS sends what it forwards through
///   local-out), a packet carrying one of our fwmarks gets its own mark back and priority 0.
pub(super) fn etp_local_marks(out: &mut Vec<NftMessage>, rules: &PacketRules) {
    let table = rules.table.as_str();
    for mark in &rules.external_local {
        let rule = external_to(rules, mark)
            .mark_to_priority()
            .mark_set(mark.mark);
        let what = format!("externalTrafficPolicy=Local mark {:#x}", mark.mark);
        out.push(NftMessage::rule(table, ETP_LOCAL_MARK, &what, rule));
    }
    let unmark = Rule::default()
        .mark_in(SetName::EtpLocalMarks.set_ref())
        .mark_from_priority();
    out.push(NftMessage::rule(
        table,
        ETP_LOCAL_UNMARK,
        "give back the mark borrowed for IPVS",
        unmark,
    ));
}
