//! [`PacketRules`] → the nf_tables messages of one transaction that replaces our table.
//! Pure: the policy of what the table contains lives here and only here.

use std::collections::BTreeSet;
use std::net::IpAddr;

use netlink_ipvs::{Family, Protocol};
use netlink_nftables::attr::{self, msg};
use netlink_nftables::expr::{CmpOp, Verdict};
use netlink_nftables::{address_bytes, NftMessage, Rule, SetKey, SetRef};
use netlink_packet_core::NLM_F_CREATE;

use super::PacketRules;
use crate::plan::Destination;

/// Chain names: one per hook we use, plus one regular chain per LoadBalancer with source ranges.
pub(super) const PREROUTING: &str = "prerouting";
pub(super) const INPUT: &str = "input";
pub(super) const ETP_LOCAL_MARK: &str = "etp-local-mark";
pub(super) const ETP_LOCAL_UNMARK: &str = "etp-local-unmark";
pub(super) const OUTPUT: &str = "output";
pub(super) const POSTROUTING: &str = "postrouting";
mod local_in;

const SOURCE_RANGES_PREFIX: &str = "source-ranges-";

/// nft's data type numbers (`enum datatypes` of nftables' `datatype.h`); the kernel stores them
/// only so that `nft list` can print the keys. A concatenation is `(a << 6) | b`.
const TYPE_IPADDR: u32 = 7;
const TYPE_IP6ADDR: u32 = 8;
const TYPE_INET_PROTOCOL: u32 = 12;
const TYPE_INET_SERVICE: u32 = 13;
const TYPE_MARK: u32 = 19;
const TYPE_BITS: u32 = 6;

/// The sets of our table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SetName {
    ServiceIps(Family),
    NodeIps(Family),
    NodePorts,
    Hairpin(Family),
    /// address . inet_proto . inet_service of every service IP:port.
    ServicePorts(Family),
    /// address . inet_proto . inet_service masqueraded from any source.
    MasqueradeDestinations(Family),
    /// TCP health-check node ports.
    HealthCheckPorts,
    /// The fwmarks of ETP=Local virtual servers.
    EtpLocalMarks,
}

impl SetName {
    pub(super) const ALL: [SetName; 13] = [
        SetName::ServiceIps(Family::V4),
        SetName::ServiceIps(Family::V6),
        SetName::NodeIps(Family::V4),
        SetName::NodeIps(Family::V6),
        SetName::NodePorts,
        SetName::Hairpin(Family::V4),
        SetName::Hairpin(Family::V6),
        SetName::ServicePorts(Family::V4),
        SetName::ServicePorts(Family::V6),
        SetName::MasqueradeDestinations(Family::V4),
        SetName::MasqueradeDestinations(Family::V6),
        SetName::HealthCheckPorts,
        SetName::EtpLocalMarks,
    ];

    pub(super) fn name(self) -> &'static str {
        match self {
            SetName::ServiceIps(Family::V4) => "service-ips-v4",
            SetName::ServiceIps(Family::V6) => "service-ips-v6",
            SetName::NodeIps(Family::V4) => "node-ips-v4",
            SetName::NodeIps(Family::V6) => "node-ips-v6",
            SetName::NodePorts => "node-ports",
            SetName::Hairpin(Family::V4) => "hairpin-v4",
            SetName::Hairpin(Family::V6) => "hairpin-v6",
            SetName::ServicePorts(Family::V4) => "service-ports-v4",
            SetName::ServicePorts(Family::V6) => "service-ports-v6",
            SetName::MasqueradeDestinations(Family::V4) => "masquerade-destinations-v4",
            SetName::MasqueradeDestinations(Family::V6) => "masquerade-destinations-v6",
            SetName::HealthCheckPorts => "health-check-ports",
            SetName::EtpLocalMarks => "etp-local-marks",
        }
    }

    /// `NFTA_SET_ID`: names the set inside the transaction that creates it.
    pub(super) fn id(self) -> u32 {
        match self {
            SetName::ServiceIps(Family::V4) => 1,
            SetName::ServiceIps(Family::V6) => 2,
            SetName::NodeIps(Family::V4) => 3,
            SetName::NodeIps(Family::V6) => 4,
            SetName::NodePorts => 5,
            SetName::Hairpin(Family::V4) => 6,
            SetName::Hairpin(Family::V6) => 7,
            SetName::ServicePorts(Family::V4) => 8,
            SetName::ServicePorts(Family::V6) => 9,
            SetName::MasqueradeDestinations(Family::V4) => 10,
            SetName::MasqueradeDestinations(Family::V6) => 11,
            SetName::HealthCheckPorts => 12,
            SetName::EtpLocalMarks => 13,
        }
    }

    /// The set as rules and element lists name it.
    pub(super) fn set_ref(self) -> SetRef<'static> {
        SetRef {
            name: self.name(),
            id: self.id(),
        }
    }

    fn key(self) -> SetKey {
        let (data_type, len) = match self {
            SetName::ServiceIps(Family::V4) | SetName::NodeIps(Family::V4) => (TYPE_IPADDR, 4),
            SetName::ServiceIps(Family::V6) | SetName::NodeIps(Family::V6) => (TYPE_IP6ADDR, 16),
            // inet_proto . inet_service: each field padded to a 4-byte register.
            SetName::NodePorts => ((TYPE_INET_PROTOCOL << TYPE_BITS) | TYPE_INET_SERVICE, 8),
            // saddr . daddr of the same endpoint.
            SetName::Hairpin(Family::V4) => ((TYPE_IPADDR << TYPE_BITS) | TYPE_IPADDR, 8),
            SetName::Hairpin(Family::V6) => ((TYPE_IP6ADDR << TYPE_BITS) | TYPE_IP6ADDR, 32),
            // daddr . inet_proto . inet_service, each padded to a 4-byte register.
            SetName::ServicePorts(family) | SetName::MasqueradeDestinations(family) => {
                let (address_type, address_len) = match family {
                    Family::V4 => (TYPE_IPADDR, 4),
                    Family::V6 => (TYPE_IP6ADDR, 16),
                };
                let data_type = (((address_type << TYPE_BITS) | TYPE_INET_PROTOCOL) << TYPE_BITS)
                    | TYPE_INET_SERVICE;
                (data_type, address_len + 8)
            }
            SetName::HealthCheckPorts => (TYPE_INET_SERVICE, 2),
            SetName::EtpLocalMarks => (TYPE_MARK, 4),
        };
        SetKey { data_type, len }
    }
}

/// The messages of the replacing transaction, in order (without the batch delimiters).
pub(super) fn replace_table_messages(rules: &PacketRules) -> Vec<NftMessage> {
    let table = rules.table.as_str();
    let mut out = vec![
        // Create-if-missing, delete, create: the delete cannot fail, and the kernel applies the
        // three (and all that follows) in one generation.
        NftMessage::table(msg::NEWTABLE, table, NLM_F_CREATE, "create"),
        NftMessage::table(msg::DELTABLE, table, 0, "delete"),
        NftMessage::table(msg::NEWTABLE, table, NLM_F_CREATE, "create"),
    ];
    for set in SetName::ALL {
        out.push(NftMessage::new_set(table, set.set_ref(), set.key()));
    }
    push_elements(&mut out, table, rules);
    push_chains(&mut out, rules);
    out
}

/// Every set of the table with its element keys.
fn set_keys(rules: &PacketRules) -> Vec<(SetName, BTreeSet<Vec<u8>>)> {
    let mut sets = Vec::new();
    for family in [Family::V4, Family::V6] {
        let keys = |ips: &BTreeSet<IpAddr>| -> BTreeSet<Vec<u8>> {
            ips.iter()
                .filter(|ip| Family::of(ip) == family)
                .map(|ip| address_bytes(*ip))
                .collect()
        };
        sets.push((SetName::ServiceIps(family), keys(&rules.service_ips)));
        sets.push((SetName::NodeIps(family), keys(&rules.node_ips)));
        let hairpin = keys(&rules.hairpin_endpoints)
            .into_iter()
            .map(|address| [address.clone(), address].concat())
            .collect();
        sets.push((SetName::Hairpin(family), hairpin));
        let destinations = |set: &BTreeSet<Destination>| -> BTreeSet<Vec<u8>> {
            set.iter()
                .filter(|(ip, _, _)| Family::of(ip) == family)
                .map(|(ip, protocol, port)| {
                    [address_bytes(*ip), port_key(*protocol, *port)].concat()
                })
                .collect()
        };
        sets.push((
            SetName::ServicePorts(family),
            destinations(&rules.service_ports),
        ));
        sets.push((
            SetName::MasqueradeDestinations(family),
            destinations(&rules.masquerade_destinations),
        ));
    }
    let ports = rules
        .node_ports
        .iter()
        .map(|(protocol, port)| port_key(*protocol, *port))
        .collect();
    sets.push((SetName::NodePorts, ports));
    let health = rules
        .health_check_node_ports
        .iter()
        .map(|port| port.to_be_bytes().to_vec())
        .collect();
    sets.push((SetName::HealthCheckPorts, health));
    let marks = rules
        .external_local
        .iter()
        .map(|mark| mark.mark.to_ne_bytes().to_vec())
        .collect();
    sets.push((SetName::EtpLocalMarks, marks));
    sets
}

/// `inet_proto . inet_service` as set key bytes: each field padded to a 4-byte register.
fn port_key(protocol: Protocol, port: u16) -> Vec<u8> {
    let mut key = vec![protocol.number(), 0, 0, 0];
    key.extend_from_slice(&port.to_be_bytes());
    key.extend_from_slice(&[0, 0]);
    key
}

fn push_elements(out: &mut Vec<NftMessage>, table: &str, rules: &PacketRules) {
    for (set, keys) in set_keys(rules) {
        let keys: Vec<Vec<u8>> = keys.into_iter().collect();
        out.extend(NftMessage::set_elements(
            table,
            set.set_ref(),
            msg::NEWSETELEM,
            &keys,
            true,
        ));
    }
}

/// The messages that turn a table written from `old` into one for `new` by adding and
/// removing set elements only, or `None` when chains or rules differ (then the table is
/// replaced). Endpoint churn thus changes a few elements instead of rewriting the table.
pub(super) fn update_messages(old: &PacketRules, new: &PacketRules) -> Option<Vec<NftMessage>> {
    let without_sets = |rules: &PacketRules| PacketRules {
        service_ips: BTreeSet::new(),
        node_ips: BTreeSet::new(),
        node_ports: BTreeSet::new(),
        hairpin_endpoints: BTreeSet::new(),
        service_ports: BTreeSet::new(),
        masquerade_destinations: BTreeSet::new(),
        health_check_node_ports: BTreeSet::new(),
        ..rules.clone()
    };
    if without_sets(old) != without_sets(new) {
        return None;
    }
    let table = new.table.as_str();
    let mut out = Vec::new();
    for ((set, old_keys), (_, new_keys)) in set_keys(old).into_iter().zip(set_keys(new)) {
        let removed: Vec<Vec<u8>> = old_keys.difference(&new_keys).cloned().collect();
        let added: Vec<Vec<u8>> = new_keys.difference(&old_keys).cloned().collect();
        out.extend(NftMessage::set_elements(
            table,
            set.set_ref(),
            msg::DELSETELEM,
            &removed,
            false,
        ));
        out.extend(NftMessage::set_elements(
            table,
            set.set_ref(),
            msg::NEWSETELEM,
            &added,
            false,
        ));
    }
    Some(out)
}

/// The chains and their rules. See the module documentation of `nftables` for the policy.
fn push_chains(out: &mut Vec<NftMessage>, rules: &PacketRules) {
    let table = rules.table.as_str();
    let masq = rules.masquerade_mark;
    out.push(NftMessage::base_chain(
        table,
        PREROUTING,
        "filter",
        attr::NF_INET_PRE_ROUTING,
        attr::PRIORITY_MANGLE,
    ));
    out.push(NftMessage::base_chain(
        table,
        INPUT,
        "filter",
        attr::NF_INET_LOCAL_IN,
        attr::PRIORITY_FILTER,
    ));
    out.push(NftMessage::base_chain(
        table,
        ETP_LOCAL_MARK,
        "filter",
        attr::NF_INET_LOCAL_IN,
        attr::PRIORITY_BEFORE_IPVS,
    ));
    out.push(NftMessage::base_chain(
        table,
        ETP_LOCAL_UNMARK,
        "filter",
        attr::NF_INET_LOCAL_OUT,
        attr::PRIORITY_RAW - 10,
    ));
    out.push(NftMessage::base_chain(
        table,
        OUTPUT,
        "route",
        attr::NF_INET_LOCAL_OUT,
        attr::PRIORITY_MANGLE,
    ));
    out.push(NftMessage::base_chain(
        table,
        POSTROUTING,
        "nat",
        attr::NF_INET_POST_ROUTING,
        attr::PRIORITY_SRCNAT,
    ));

    // 1. LoadBalancer source ranges: traffic to LB IP:port from outside the ranges is dropped.
    let mut index = 0;
    for range in &rules.load_balancer_source_ranges {
        let family = Family::of(&range.address);
        let allowed: Vec<(IpAddr, u8)> = range
            .allowed
            .iter()
            .copied()
            .filter(|(net, _)| Family::of(net) == family)
            .collect();
        if allowed.is_empty() {
            // Nothing allowed of this family: Kubernetes reads an empty list as "no filter".
            continue;
        }
        let chain = format!("{SOURCE_RANGES_PREFIX}{index}");
        index += 1;
        out.push(NftMessage::regular_chain(table, &chain));
        for net in &allowed {
            let rule = Rule::default()
                .nfproto(family)
                .saddr_prefix(CmpOp::Eq, *net)
                .verdict(Verdict::Return);
            out.push(NftMessage::rule(
                table,
                &chain,
                "allowed source range",
                rule,
            ));
        }
        let drop = Rule::default().verdict(Verdict::Drop);
        out.push(NftMessage::rule(table, &chain, "drop other sources", drop));
        let jump = Rule::default()
            .nfproto(family)
            .daddr(range.address)
            .l4_port(range.protocol, range.port)
            .verdict(Verdict::Jump(chain.clone()));
        let what = format!("LoadBalancer {} source ranges", range.address);
        out.push(NftMessage::rule(table, PREROUTING, &what, jump));
    }

    // 2. ETP=Local: external traffic is accepted here, so it never gets the masquerade bit
    //    (the client address is kept). Its fwmark is set later, just before IPVS
    //    (`local_in::etp_local_marks`).
    for mark in &rules.external_local {
        let rule = local_in::external_to(rules, mark).verdict(Verdict::Accept);
        let what = format!(
            "externalTrafficPolicy=Local {}:{}: client address kept",
            mark.address, mark.port
        );
        out.push(NftMessage::rule(table, PREROUTING, &what, rule));
    }
    local_in::etp_local_marks(out, rules);

    // 3. Masquerade requests.
    for family in [Family::V4, Family::V6] {
        let external = Rule::default()
            .nfproto(family)
            .daddr_l4_port_in(family, SetName::MasqueradeDestinations(family).set_ref())
            .mark_or(masq);
        let what = "masquerade ExternalIPs and LoadBalancer IPs (any source)";
        out.push(NftMessage::rule(table, PREROUTING, what, external));

        let node_ports = Rule::default()
            .nfproto(family)
            .daddr_in(family, SetName::NodeIps(family).set_ref())
            .l4_port_in(SetName::NodePorts.set_ref())
            .mark_or(masq);
        out.push(NftMessage::rule(
            table,
            PREROUTING,
            "masquerade NodePorts",
            node_ports,
        ));

        let cidrs = rules.cluster_cidrs_of(family);
        if rules.masquerade_all || !cidrs.is_empty() {
            let mut rule = Rule::default().nfproto(family);
            if !rules.masquerade_all {
                for net in cidrs {
                    rule = rule.saddr_prefix(CmpOp::Neq, net);
                }
            }
            let rule = rule
                .daddr_in(family, SetName::ServiceIps(family).set_ref())
                .mark_or(masq);
            let what = "masquerade service IPs from outside the cluster";
            out.push(NftMessage::rule(table, PREROUTING, what, rule));
        }

        // The node's own traffic to services and NodePorts is always masqueraded.
        let local = Rule::default()
            .nfproto(family)
            .daddr_in(family, SetName::ServiceIps(family).set_ref())
            .mark_or(masq);
        out.push(NftMessage::rule(
            table,
            OUTPUT,
            "masquerade service IPs",
            local,
        ));
        let local_node_ports = Rule::default()
            .nfproto(family)
            .daddr_in(family, SetName::NodeIps(family).set_ref())
            .l4_port_in(SetName::NodePorts.set_ref())
            .mark_or(masq);
        out.push(NftMessage::rule(
            table,
            OUTPUT,
            "masquerade NodePorts",
            local_node_ports,
        ));
    }

    local_in::input_filter(out, rules);

    // 4. Hairpin: a local pod that reached itself through a Service (IPVS rewrote the
    //    destination to the pod's own address) is masqueraded, or its reply would bypass IPVS.
    for family in [Family::V4, Family::V6] {
        let rule = Rule::default()
            .nfproto(family)
            .saddr_daddr_in(family, SetName::Hairpin(family).set_ref())
            .masquerade_fully_random();
        out.push(NftMessage::rule(
            table,
            POSTROUTING,
            "masquerade hairpin",
            rule,
        ));
    }

    // 5. Masquerade what asked for it, clearing the bit (as kube-proxy does).
    let masquerade = Rule::default()
        .mark_has(masq)
        .mark_xor(masq)
        .masquerade_fully_random();
    out.push(NftMessage::rule(
        table,
        POSTROUTING,
        "masquerade",
        masquerade,
    ));
}
