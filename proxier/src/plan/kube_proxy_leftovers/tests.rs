use super::*;

/// A chain of `(handle, jump target)` rules (shared with the engine's tests).
pub(crate) fn chain(table: &str, name: &str, rules: &[(u64, Option<&str>)]) -> XtChain {
    XtChain {
        table: table.into(),
        name: name.into(),
        rules: rules
            .iter()
            .map(|(handle, target)| XtRule {
                handle: *handle,
                target: target.map(str::to_owned),
            })
            .collect(),
    }
}

fn chain_ref(table: &str, name: &str) -> ChainRef {
    ChainRef {
        table: table.into(),
        name: name.into(),
    }
}

/// A node after kube-proxy (IPVS mode), kubelet and a CNI wrote their rules.
fn node_ruleset() -> XtRuleset {
    XtRuleset {
        chains: vec![
            chain(
                "nat",
                "PREROUTING",
                &[(2, Some("KUBE-SERVICES")), (3, Some("CNI-HOSTPORT-DNAT"))],
            ),
            chain("nat", "OUTPUT", &[(4, Some("KUBE-SERVICES"))]),
            chain(
                "nat",
                "POSTROUTING",
                &[
                    (5, Some("KUBE-POSTROUTING")),
                    (6, Some("CNI-SNAT")),
                    (7, None),
                ],
            ),
            chain(
                "nat",
                "KUBE-SERVICES",
                &[(8, Some("KUBE-MARK-MASQ")), (9, Some("KUBE-NODE-PORT"))],
            ),
            chain("nat", "KUBE-POSTROUTING", &[(10, None)]),
            chain("nat", "KUBE-MARK-MASQ", &[(11, None)]),
            chain("nat", "KUBE-NODE-PORT", &[]),
            chain("nat", "KUBE-MARK-DROP", &[(12, None)]),
            chain("nat", "KUBE-KUBELET-CANARY", &[]),
            chain("nat", "CNI-HOSTPORT-DNAT", &[(13, Some("KUBE-MARK-MASQ"))]),
            chain("nat", "CNI-SNAT", &[]),
            chain(
                "filter",
                "INPUT",
                &[
                    (20, Some("KUBE-IPVS-FILTER")),
                    (21, Some("KUBE-PROXY-FIREWALL")),
                    (22, Some("KUBE-NODE-PORT")),
                    (23, Some("KUBE-FIREWALL")),
                ],
            ),
            chain(
                "filter",
                "FORWARD",
                &[(24, Some("KUBE-FORWARD")), (25, Some("CNI-FORWARD"))],
            ),
            chain(
                "filter",
                "OUTPUT",
                &[
                    (26, Some("KUBE-IPVS-OUT-FILTER")),
                    (27, Some("KUBE-FIREWALL")),
                ],
            ),
            chain("filter", "KUBE-FIREWALL", &[(28, None)]),
            chain("filter", "KUBE-IPVS-FILTER", &[(29, None)]),
            chain("filter", "KUBE-IPVS-OUT-FILTER", &[]),
            chain(
                "filter",
                "KUBE-PROXY-FIREWALL",
                &[(30, Some("KUBE-SOURCE-RANGES-FIREWALL"))],
            ),
            chain("filter", "KUBE-SOURCE-RANGES-FIREWALL", &[(31, None)]),
            chain("filter", "KUBE-NODE-PORT", &[]),
            chain("filter", "KUBE-FORWARD", &[]),
            chain("filter", "CNI-FORWARD", &[]),
            chain("filter", "KUBE-SVC-ABCDEF", &[]),
        ],
    }
}

#[test]
fn kube_proxys_chains_and_the_jumps_into_them_are_selected() {
    let removal = select(&node_ruleset(), Family::V4);
    let rules: Vec<(&str, &str, u64)> = removal
        .rules
        .iter()
        .map(|r| (r.table.as_str(), r.chain.as_str(), r.handle))
        .collect();
    assert_eq!(
        rules,
        [
            ("nat", "PREROUTING", 2),
            ("nat", "OUTPUT", 4),
            ("nat", "POSTROUTING", 5),
            // A CNI's rule that marks for kube-proxy's masquerade goes: the chain goes.
            ("nat", "CNI-HOSTPORT-DNAT", 13),
            ("filter", "INPUT", 20),
            ("filter", "INPUT", 21),
            ("filter", "INPUT", 22),
            ("filter", "FORWARD", 24),
            ("filter", "OUTPUT", 26),
        ]
    );
    assert_eq!(
        removal.chains,
        [
            chain_ref("nat", "KUBE-SERVICES"),
            chain_ref("nat", "KUBE-POSTROUTING"),
            chain_ref("nat", "KUBE-MARK-MASQ"),
            chain_ref("nat", "KUBE-NODE-PORT"),
            chain_ref("filter", "KUBE-IPVS-FILTER"),
            chain_ref("filter", "KUBE-IPVS-OUT-FILTER"),
            chain_ref("filter", "KUBE-PROXY-FIREWALL"),
            chain_ref("filter", "KUBE-SOURCE-RANGES-FIREWALL"),
            chain_ref("filter", "KUBE-NODE-PORT"),
            chain_ref("filter", "KUBE-FORWARD"),
        ]
    );
}

#[test]
fn kubelets_and_foreign_chains_and_rules_are_kept() {
    let removal = select(&node_ruleset(), Family::V4);
    assert_eq!(
        removal.kept,
        [
            chain_ref("nat", "KUBE-MARK-DROP"),
            chain_ref("nat", "KUBE-KUBELET-CANARY"),
            chain_ref("filter", "KUBE-FIREWALL"),
            chain_ref("filter", "KUBE-SVC-ABCDEF"),
        ]
    );
    for chain in [
        "KUBE-FIREWALL",
        "CNI-FORWARD",
        "CNI-HOSTPORT-DNAT",
        "CNI-SNAT",
    ] {
        assert!(
            !removal.chains.iter().any(|c| c.name == chain),
            "{chain} is not kube-proxy's"
        );
    }
    // kubelet's jumps to its KUBE-FIREWALL and the CNI's jumps stay.
    for handle in [3, 6, 7, 23, 25, 27] {
        assert!(
            !removal.rules.iter().any(|r| r.handle == handle),
            "rule {handle} kept"
        );
    }
}

#[test]
fn the_nat_firewall_chain_is_kube_proxys_the_filter_one_kubelets() {
    assert!(is_kube_proxy_chain("nat", "KUBE-FIREWALL"));
    assert!(!is_kube_proxy_chain("filter", "KUBE-FIREWALL"));
    assert!(!is_kube_proxy_chain("mangle", "KUBE-SERVICES"));
    assert!(!is_kube_proxy_chain("nat", "KUBE-MARK-DROP"));
    assert!(!is_kube_proxy_chain("filter", "KUBE-KUBELET-CANARY"));
}

#[test]
fn an_empty_or_foreign_ruleset_selects_nothing() {
    assert!(select(&XtRuleset::default(), Family::V6).is_empty());
    let foreign = XtRuleset {
        chains: vec![chain("filter", "INPUT", &[(1, Some("CNI-INPUT"))])],
    };
    assert!(select(&foreign, Family::V4).is_empty());
}

#[test]
fn kube_proxys_sets_in_both_families_are_selected_others_kept() {
    let names: Vec<String> = [
        "KUBE-CLUSTER-IP",
        "KUBE-6-CLUSTER-IP",
        "KUBE-LOOP-BACK",
        "KUBE-6-LOAD-BALANCER-SOURCE-CID",
        "KUBE-6-NODE-PORT-LOCAL-SCTP-HAS",
        "KUBE-IPVS-IPS",
        "cali40all-ipam-pools",
        "KUBE-CLUSTER-IP-EXTRA",
        "KUBE-6-LOAD-BALANCER-SOURCE-CIDR",
    ]
    .map(str::to_owned)
    .to_vec();
    let (removed, kept) = select_sets(&names);
    assert_eq!(
        removed,
        [
            "KUBE-CLUSTER-IP",
            "KUBE-6-CLUSTER-IP",
            "KUBE-LOOP-BACK",
            "KUBE-6-LOAD-BALANCER-SOURCE-CID",
            "KUBE-6-NODE-PORT-LOCAL-SCTP-HAS",
            "KUBE-IPVS-IPS",
        ]
    );
    assert_eq!(
        kept,
        [
            "cali40all-ipam-pools",
            "KUBE-CLUSTER-IP-EXTRA",
            "KUBE-6-LOAD-BALANCER-SOURCE-CIDR",
        ]
    );
}

#[test]
fn ipv6_names_follow_kube_proxy_and_fit_ipset() {
    assert_eq!(ipv6_set_name("KUBE-CLUSTER-IP"), "KUBE-6-CLUSTER-IP");
    assert_eq!(
        ipv6_set_name("KUBE-LOAD-BALANCER-SOURCE-CIDR"),
        "KUBE-6-LOAD-BALANCER-SOURCE-CID"
    );
    assert!(KUBE_PROXY_SETS
        .iter()
        .all(|s| ipv6_set_name(s).len() <= IPSET_NAME_MAX));
}
