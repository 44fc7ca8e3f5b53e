//! kube-proxy's leftovers are removed once, after the first full sync, against the strict fake.

use netlink_ipvs::Family;

use super::Proxier;
use crate::config::Config;
use crate::dataplane::{FakeDataplane, FakeIpsets};
use crate::plan::kube_proxy_leftovers::tests::chain;
use crate::plan::kube_proxy_leftovers::XtRuleset;
use crate::plan::{NodeContext, Planner};

/// kube-proxy's chains and sets next to kubelet's and a CNI's.
fn node() -> FakeDataplane {
    let mut dataplane = FakeDataplane::default();
    let ruleset = XtRuleset {
        chains: vec![
            chain(
                "nat",
                "PREROUTING",
                &[(1, Some("KUBE-SERVICES")), (2, Some("CNI-DNAT"))],
            ),
            chain("nat", "KUBE-SERVICES", &[(3, Some("KUBE-MARK-MASQ"))]),
            chain("nat", "KUBE-MARK-MASQ", &[(4, None)]),
            chain("nat", "CNI-DNAT", &[]),
            chain(
                "filter",
                "INPUT",
                &[(5, Some("KUBE-IPVS-FILTER")), (6, Some("KUBE-FIREWALL"))],
            ),
            chain("filter", "KUBE-IPVS-FILTER", &[(7, None)]),
            chain("filter", "KUBE-FIREWALL", &[(8, None)]),
        ],
    };
    dataplane.leftovers.nft.rulesets.insert(Family::V4, ruleset);
    dataplane.leftovers.sets = FakeIpsets {
        names: [
            "KUBE-CLUSTER-IP",
            "KUBE-6-LOOP-BACK",
            "KUBE-NODE-PORT-TCP",
            "cni-pods",
        ]
        .map(str::to_owned)
        .to_vec(),
        in_use: vec!["KUBE-NODE-PORT-TCP".to_owned()],
    };
    dataplane
}

fn proxier(dataplane: FakeDataplane, remove: bool) -> Proxier<FakeDataplane> {
    let node = NodeContext {
        name: "node-a".into(),
        node_ips: vec![],
        zone: None,
    };
    Proxier::new(Planner::new(node, Config::default()), dataplane)
        .with_kube_proxy_leftovers_removed(remove)
}

fn chain_names(proxier: &Proxier<FakeDataplane>) -> Vec<String> {
    proxier.dataplane().leftovers.nft.rulesets[&Family::V4]
        .chains
        .iter()
        .map(|c| {
            format!(
                "{} {} {:?}",
                c.table,
                c.name,
                c.rules.iter().map(|r| r.handle).collect::<Vec<_>>()
            )
        })
        .collect()
}

#[test]
fn the_first_full_sync_removes_kube_proxys_leftovers_and_keeps_the_others() {
    let mut proxier = proxier(node(), true);
    let outcome = proxier.full_sync().expect("sync");
    assert!(
        proxier.dataplane().packet_rules.is_some(),
        "our table first"
    );
    let report = outcome
        .leftovers
        .expect("removal ran after the initial sync");
    assert_eq!(report.rules_removed(), 2);
    assert_eq!(report.chains_removed(), 3);
    assert_eq!(
        report.sets_destroyed,
        ["KUBE-CLUSTER-IP", "KUBE-6-LOOP-BACK"]
    );
    assert_eq!(report.sets_in_use, ["KUBE-NODE-PORT-TCP"]);
    assert_eq!(report.sets_kept, ["cni-pods"]);
    assert_eq!(
        report.chains_kept,
        ["iptables-nft ipv4 filter KUBE-FIREWALL"]
    );
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(
        chain_names(&proxier),
        [
            "nat PREROUTING [2]",
            "nat CNI-DNAT []",
            "filter INPUT [6]",
            "filter KUBE-FIREWALL [8]",
        ]
    );
    assert_eq!(
        proxier.dataplane().leftovers.sets.names,
        ["KUBE-NODE-PORT-TCP", "cni-pods"]
    );
    assert!(report
        .summary()
        .contains("kept: chains [iptables-nft ipv4 filter KUBE-FIREWALL]"));
}

#[test]
fn removal_runs_once_not_at_every_resync() {
    let mut proxier = proxier(node(), true);
    proxier.full_sync().expect("sync");
    let again = proxier.full_sync().expect("resync");
    assert!(again.leftovers.is_none());
    assert_eq!(proxier.dataplane().leftovers.passes, 1);
}

#[test]
fn keeping_kube_proxys_rules_removes_nothing() {
    let mut proxier = proxier(node(), false);
    let outcome = proxier.full_sync().expect("sync");
    assert!(outcome.leftovers.is_none());
    assert_eq!(proxier.dataplane().leftovers.passes, 0);
    assert_eq!(chain_names(&proxier).len(), 7);
    assert_eq!(proxier.dataplane().leftovers.sets.names.len(), 4);
}
