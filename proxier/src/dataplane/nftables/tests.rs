//! The shape of the ruleset: which messages, chains and rules [`PacketRules`] become. (Wire
//! fixtures, bytes per field, are `netlink-nftables`' own tests.)

use std::net::{IpAddr, Ipv4Addr};

use netlink_ipvs::Protocol;
use netlink_nftables::attr::{msg, Attr, NFTA_EXPR_NAME, NFTA_LIST_ELEM, NFTA_RULE_CHAIN};
use netlink_nftables::ELEMENTS_PER_MESSAGE;
use netlink_packet_core::NetlinkBuffer;

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn sample_rules() -> PacketRules {
    PacketRules {
        cluster_cidrs: vec![(ip("10.244.0.0"), 16), (ip("fd00:10:244::"), 56)],
        service_ips: [ip("10.96.0.1"), ip("10.96.0.10"), ip("fd00:96::1")].into(),
        node_ips: [ip("192.168.1.10")].into(),
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
            allowed: vec![(ip("198.51.100.0"), 24)],
        }],
        ..PacketRules::default()
    }
}

/// The names of a rule message's expressions, in order.
fn expression_names(message: &NftMessage) -> Vec<String> {
    let list = message
        .attrs
        .iter()
        .find_map(|a| match a {
            Attr::Nested(k, list) if *k == netlink_nftables::attr::NFTA_RULE_EXPRESSIONS => {
                Some(list)
            }
            _ => None,
        })
        .expect("a rule has expressions");
    list.iter()
        .map(|elem| match elem {
            Attr::Nested(NFTA_LIST_ELEM, inner) => inner
                .iter()
                .find_map(|a| match a {
                    Attr::Str(NFTA_EXPR_NAME, name) => Some(name.clone()),
                    _ => None,
                })
                .expect("expression name"),
            other => panic!("not a list element: {other:?}"),
        })
        .collect()
}

fn rule_chain(message: &NftMessage) -> &str {
    message
        .attrs
        .iter()
        .find_map(|a| match a {
            Attr::Str(NFTA_RULE_CHAIN, chain) => Some(chain.as_str()),
            _ => None,
        })
        .expect("rule chain")
}

fn rules_in<'a>(messages: &'a [NftMessage], chain: &str) -> Vec<&'a NftMessage> {
    messages
        .iter()
        .filter(|m| m.kind == msg::NEWRULE && rule_chain(m) == chain)
        .collect()
}

#[test]
fn the_batch_replaces_the_table_and_numbers_every_message() {
    let rules = sample_rules();
    let messages = replace_table_messages(&rules);
    let bytes = encode_replace_table(&rules, 100);
    let mut offset = 0;
    let mut seen = Vec::new();
    while offset < bytes.len() {
        let m = NetlinkBuffer::new_checked(&bytes[offset..]).unwrap();
        seen.push((m.message_type(), m.sequence_number(), m.flags()));
        offset += m.length() as usize;
    }
    assert_eq!(offset, bytes.len(), "messages tile the batch");
    assert_eq!(seen.len(), messages.len() + 2);
    assert_eq!(seen[0], (0x10, 100, 1));
    assert_eq!(seen.last().unwrap().0, 0x11);
    assert_eq!(seen.last().unwrap().1, 100 + messages.len() as u32 + 1);
    let types: Vec<u16> = seen[1..4].iter().map(|s| s.0).collect();
    assert_eq!(
        types,
        [0x0a00, 0x0a02, 0x0a00],
        "NEWTABLE, DELTABLE, NEWTABLE"
    );
    let last = seen.len() - 2;
    for (i, (_, seq, flags)) in seen[1..=last].iter().enumerate() {
        assert_eq!(*seq, 101 + i as u32);
        assert_eq!(
            flags & 4 != 0,
            i + 1 == last,
            "only the last message asks for an ACK"
        );
    }
}

#[test]
fn ruleset_shape() {
    let messages = replace_table_messages(&sample_rules());
    let prerouting: Vec<String> = rules_in(&messages, "prerouting")
        .iter()
        .map(|m| m.description.clone())
        .collect();
    // Source ranges first, then the ETP=Local mark, then masquerade requests.
    assert!(prerouting[0].contains("LoadBalancer 203.0.113.8 source ranges"));
    assert!(prerouting[1].contains("externalTrafficPolicy=Local 203.0.113.7:80"));
    assert!(prerouting[2..].iter().all(|d| d.contains("masquerade")));
    // External destinations, NodePorts and service IPs for both families (both have a
    // cluster CIDR).
    assert_eq!(prerouting.len(), 2 + 6);
    let etp = rules_in(&messages, "prerouting")[1];
    let names = expression_names(etp);
    assert_eq!(
        names.last().unwrap(),
        "immediate",
        "ends in a verdict (accept)"
    );
    assert!(!names.contains(&"bitwise".to_owned()) || names.contains(&"payload".to_owned()));

    let postrouting = rules_in(&messages, "postrouting");
    assert_eq!(postrouting.len(), 3, "hairpin v4, hairpin v6, masquerade");
    assert_eq!(
        expression_names(postrouting[0]),
        ["meta", "cmp", "payload", "payload", "lookup", "masq"],
        "ip saddr . ip daddr @hairpin-v4 masquerade"
    );
    assert_eq!(
        expression_names(postrouting[2]),
        ["meta", "bitwise", "cmp", "meta", "bitwise", "meta", "masq"]
    );
    let ranges = rules_in(&messages, "source-ranges-0");
    assert_eq!(ranges.len(), 2, "one allowed range, then drop");
    assert_eq!(expression_names(ranges[1]), ["immediate"]);
    assert_eq!(rules_in(&messages, "output").len(), 4);
}

/// kube-proxy without `clusterCIDR`: ClusterIP traffic from outside is not masqueraded, but
/// NodePorts, ExternalIPs and LoadBalancer IPs are (whatever the source), and so is the
/// node's own traffic.
#[test]
fn unknown_cluster_cidr_masquerades_node_ports_external_destinations_and_local_traffic() {
    let rules = PacketRules {
        cluster_cidrs: vec![],
        ..sample_rules()
    };
    let messages = replace_table_messages(&rules);
    let prerouting = rules_in(&messages, "prerouting");
    let masq: Vec<_> = prerouting
        .iter()
        .filter(|m| m.description.contains("masquerade"))
        .collect();
    assert_eq!(
        masq.len(),
        4,
        "NodePorts and external destinations (v4, v6)"
    );
    assert!(masq.iter().all(|m| !m.description.contains("service IPs")));
    let external: Vec<_> = masq
        .iter()
        .filter(|m| m.description.contains("ExternalIPs and LoadBalancer IPs"))
        .collect();
    assert_eq!(external.len(), 2);
    // nfproto, daddr . l4proto . dport lookup (no source match), mark |= bit.
    assert_eq!(
        expression_names(external[0]),
        ["meta", "cmp", "payload", "meta", "payload", "lookup", "meta", "bitwise", "meta"]
    );
    assert_eq!(rules_in(&messages, "output").len(), 4);

    let all = PacketRules {
        masquerade_all: true,
        ..rules
    };
    let messages = replace_table_messages(&all);
    let service = rules_in(&messages, "prerouting")
        .into_iter()
        .filter(|m| m.description.contains("service IPs"))
        .collect::<Vec<_>>();
    assert_eq!(service.len(), 2);
    // nfproto (meta, cmp), daddr lookup (payload, lookup), mark (meta, bitwise, meta).
    assert_eq!(
        expression_names(service[0]),
        ["meta", "cmp", "payload", "lookup", "meta", "bitwise", "meta"]
    );
}

/// kube-proxy's KUBE-IPVS-FILTER (#72236) in our own table: an input chain at filter priority
/// (IPVS takes local-in traffic after it) lets known service IP:ports and health-check node
/// ports through and rejects new connections to other ports of service IPs.
#[test]
fn input_filter_rejects_new_connections_to_unknown_ports_of_service_ips() {
    let mut rules = sample_rules();
    rules.service_ports = [(ip("10.96.0.1"), Protocol::Tcp, 443)].into();
    rules.health_check_node_ports = [31000].into();
    let messages = replace_table_messages(&rules);
    let input = rules_in(&messages, "input");
    let descriptions: Vec<&str> = input.iter().map(|m| m.description.as_str()).collect();
    assert_eq!(
        descriptions,
        [
            "add rule inet proxier input: service IP:ports",
            "add rule inet proxier input: service IP:ports",
            "add rule inet proxier input: health-check node ports",
            "add rule inet proxier input: reject other ports of service IPs",
            "add rule inet proxier input: reject other ports of service IPs",
        ]
    );
    assert_eq!(
        expression_names(input[0]),
        [
            "meta",
            "cmp",
            "payload",
            "meta",
            "payload",
            "lookup",
            "immediate"
        ]
    );
    assert_eq!(
        expression_names(input[3]),
        ["meta", "cmp", "ct", "bitwise", "cmp", "payload", "lookup", "reject"],
        "ct state new, ip daddr @service-ips-v4, reject"
    );
    let elements = |set: &str| {
        messages
            .iter()
            .find(|m| m.kind == msg::NEWSETELEM && m.description.ends_with(set))
            .map(|m| m.attrs.iter().flat_map(Attr::to_bytes).collect::<Vec<u8>>())
            .unwrap_or_else(|| panic!("{set} has elements"))
    };
    let key: Vec<u8> = [10, 96, 0, 1, 6, 0, 0, 0, 1, 187, 0, 0].into();
    assert!(
        elements("service-ports-v4")
            .windows(key.len())
            .any(|w| w == key.as_slice()),
        "10.96.0.1 . tcp . 443, each field in a 4-byte register"
    );
    assert!(elements("health-check-ports")
        .windows(2)
        .any(|w| w == 31000u16.to_be_bytes()));
}

/// Item 8: IPVS finds a firewall-mark virtual server only by the packet's whole mark, so the
/// ETP=Local fwmark is borrowed: prerouting only accepts (no mark), `etp-local-mark` (local-in,
/// just before IPVS) keeps the packet's own mark in `skb->priority` and sets the fwmark, and
/// `etp-local-unmark` (local-out, before everything: IPVS forwards through local-out) gives
/// the mark back. No rule of ours sets the whole mark anywhere else; the masquerade bit is
/// only OR-ed in and XOR-ed out (kube-proxy's `--or-mark`, `--xor-mark`).
#[test]
fn etp_local_borrows_the_mark_for_ipvs_and_gives_it_back() {
    let messages = replace_table_messages(&sample_rules());
    let etp = expression_names(rules_in(&messages, "prerouting")[1]);
    assert_eq!(
        etp[etp.len() - 3..],
        ["payload", "cmp", "immediate"],
        "prerouting: tcp dport 80 accept, no mark set"
    );
    let mark = rules_in(&messages, "etp-local-mark");
    assert_eq!(mark.len(), 1);
    assert_eq!(
        expression_names(mark[0])[expression_names(mark[0]).len() - 4..],
        ["meta", "meta", "immediate", "meta"],
        "meta priority set meta mark, meta mark set 0x100"
    );
    let unmark = rules_in(&messages, "etp-local-unmark");
    assert_eq!(unmark.len(), 1);
    assert_eq!(
        expression_names(unmark[0]),
        ["meta", "lookup", "meta", "meta", "immediate", "meta"],
        "meta mark @etp-local-marks meta mark set meta priority meta priority set 0"
    );
    let chains: Vec<&str> = messages
        .iter()
        .filter(|m| m.kind == msg::NEWCHAIN)
        .map(|m| m.description.as_str())
        .collect();
    assert!(chains.contains(&"add chain inet proxier etp-local-mark (type filter)"));
    assert!(chains.contains(&"add chain inet proxier etp-local-unmark (type filter)"));
    // Every mark write of the table: the ETP=Local borrow, or the masquerade bit OR-ed/XOR-ed.
    for m in messages.iter().filter(|m| m.kind == msg::NEWRULE) {
        let names = expression_names(m);
        let immediates = names.iter().filter(|n| *n == "immediate").count();
        let chain = rule_chain(m);
        if chain != "etp-local-mark" && chain != "etp-local-unmark" {
            assert!(
                immediates <= 1 && (immediates == 0 || names.last().unwrap() == "immediate"),
                "{}: no mark set from a constant outside the borrow",
                m.description
            );
        }
    }
}

#[test]
fn cluster_cidr_excludes_sources_with_mask_and_neq() {
    let messages = replace_table_messages(&sample_rules());
    let service_v4 = rules_in(&messages, "prerouting")
        .into_iter()
        .find(|m| m.description.contains("service IPs"))
        .unwrap();
    assert_eq!(
        expression_names(service_v4),
        [
            "meta", "cmp", "payload", "bitwise", "cmp", "payload", "lookup", "meta", "bitwise",
            "meta"
        ]
    );
    let bytes = service_v4.attrs[2].to_bytes();
    let mask = [255u8, 255, 0, 0];
    let network = [10u8, 244, 0, 0];
    assert!(bytes.windows(4).any(|w| w == mask), "mask 255.255.0.0");
    assert!(bytes.windows(4).any(|w| w == network), "network 10.244.0.0");
}

#[test]
fn large_sets_are_split_below_the_attribute_length_limit() {
    let mut rules = PacketRules::default();
    for i in 0..2500u32 {
        rules
            .service_ips
            .insert(IpAddr::V4(Ipv4Addr::from(0x0a60_0000 + i)));
        rules
            .service_ips
            .insert(format!("fd00:96::{i:x}").parse::<IpAddr>().unwrap());
    }
    let messages = replace_table_messages(&rules);
    let element_messages: Vec<_> = messages
        .iter()
        .filter(|m| m.kind == msg::NEWSETELEM)
        .collect();
    let expected = 2 * 2500usize.div_ceil(ELEMENTS_PER_MESSAGE);
    assert_eq!(element_messages.len(), expected);
    for m in element_messages {
        for a in &m.attrs {
            assert!(a.to_bytes().len() < 65536, "{}", m.description);
        }
    }
}

#[test]
fn endpoint_churn_updates_set_elements_only() {
    use std::collections::BTreeSet;
    let old = sample_rules();
    let mut new = old.clone();
    new.hairpin_endpoints = BTreeSet::from(["10.244.1.9".parse().unwrap()]);
    new.service_ips.insert("10.96.0.77".parse().unwrap());
    let messages = update_messages(&old, &new).expect("sets only");
    let descriptions: Vec<&str> = messages.iter().map(|m| m.description.as_str()).collect();
    assert!(
        descriptions.iter().all(|d| d.contains("elements of set")),
        "{descriptions:?}"
    );
    assert!(descriptions.contains(&"add 1 elements of set inet proxier service-ips-v4"));
    assert!(descriptions.contains(&"add 1 elements of set inet proxier hairpin-v4"));
    assert!(update_messages(&old, &old).unwrap().is_empty());
    // A rule change (cluster CIDR) replaces the table.
    let mut cidr = old.clone();
    cidr.cluster_cidrs.clear();
    assert!(update_messages(&old, &cidr).is_none());
}

/// The generation is kept only when our write is known to be the only change: a resync then
/// skips the table's replace (issue 15); any doubt makes it replace.
#[test]
fn the_generation_after_a_write_is_kept_only_when_the_write_is_the_only_change() {
    // A replace committed alone (one bump): kept, whatever came before.
    assert_eq!(written_generation(None, Some(7), Some(8), true), Some(8));
    assert_eq!(written_generation(Some(3), Some(7), Some(8), true), Some(8));
    // Someone else committed between the reads: not kept.
    assert_eq!(written_generation(Some(7), Some(7), Some(9), true), None);
    // An update over a ruleset that moved since our last write: the drift stays unknown.
    assert_eq!(written_generation(Some(6), Some(7), Some(8), false), None);
    assert_eq!(written_generation(None, Some(7), Some(8), false), None);
    // An update over our own last write: kept; one that sent nothing keeps it too.
    assert_eq!(
        written_generation(Some(7), Some(7), Some(8), false),
        Some(8)
    );
    assert_eq!(
        written_generation(Some(7), Some(7), Some(7), false),
        Some(7)
    );
    // A replace must commit: no bump is not ours.
    assert_eq!(written_generation(Some(7), Some(7), Some(7), true), None);
    // Unread generations: not kept.
    assert_eq!(written_generation(Some(7), None, Some(8), false), None);
    assert_eq!(written_generation(Some(7), Some(7), None, true), None);
    // Wrapping.
    assert_eq!(
        written_generation(None, Some(u32::MAX), Some(0), true),
        Some(0)
    );
}
