//! kube-proxy's leftovers removed at takeover: the metric by kind and the Event on the Node.

use std::time::Duration;

use super::*;
use crate::dataplane::{BackendRemoval, LeftoverReport};
use crate::plan::kube_proxy_leftovers::{ChainRef, Removal, RuleRef};
use crate::runtime::{SyncKind, SyncOutcome};

fn report() -> LeftoverReport {
    let rule = |chain: &str, handle| RuleRef {
        table: "nat".into(),
        chain: chain.into(),
        handle,
        target: "KUBE-SERVICES".into(),
    };
    LeftoverReport {
        removed: vec![BackendRemoval {
            backend: "iptables-nft",
            family: netlink_ipvs::Family::V4,
            removal: Removal {
                rules: vec![rule("PREROUTING", 1), rule("OUTPUT", 2)],
                chains: vec![ChainRef {
                    table: "nat".into(),
                    name: "KUBE-SERVICES".into(),
                }],
                kept: vec![],
            },
        }],
        sets_destroyed: vec!["KUBE-CLUSTER-IP".into()],
        sets_in_use: vec![],
        sets_kept: vec!["cni".into()],
        chains_kept: vec!["iptables-nft ipv4 filter KUBE-FIREWALL".into()],
        failures: vec![],
    }
}

#[tokio::test]
async fn removed_leftovers_are_metered_by_kind_and_reported_in_one_event() {
    let (sender, mut receiver) = tokio::sync::mpsc::channel(4);
    let observer = Observer::new(
        Metrics::new(),
        Duration::from_secs(30),
        EventPublisher::for_test(sender),
    );
    let outcome = SyncOutcome {
        leftovers: Some(report()),
        ..SyncOutcome::default()
    };
    observer.on_sync(SyncKind::Initial, &outcome);
    let text = observer.metrics.render();
    for line in [
        "proxier_kube_proxy_leftovers_removed_total{kind=\"rule\"} 2\n",
        "proxier_kube_proxy_leftovers_removed_total{kind=\"chain\"} 1\n",
        "proxier_kube_proxy_leftovers_removed_total{kind=\"ipset\"} 1\n",
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
    let (reference, event) = receiver.try_recv().expect("one Event");
    assert_eq!(reference.kind.as_deref(), Some("Node"));
    assert_eq!(event.reason, "KubeProxyLeftoversRemoved");
    let note = event.note.unwrap_or_default();
    assert!(
        note.contains("iptables-nft ipv4 nat KUBE-SERVICES"),
        "{note}"
    );
    assert!(
        note.contains("kept: chains [iptables-nft ipv4 filter KUBE-FIREWALL]"),
        "{note}"
    );
    // A later sync without a removal reports nothing more.
    observer.on_sync(SyncKind::Full, &SyncOutcome::default());
    assert!(receiver.try_recv().is_err());
}

#[tokio::test]
async fn a_set_still_in_use_is_a_warning() {
    let (sender, mut receiver) = tokio::sync::mpsc::channel(4);
    let observer = Observer::new(
        Metrics::new(),
        Duration::from_secs(30),
        EventPublisher::for_test(sender),
    );
    let mut busy = report();
    busy.sets_destroyed.clear();
    busy.sets_in_use = vec!["KUBE-LOOP-BACK".into()];
    observer.record_leftovers(&busy);
    let (_, event) = receiver.try_recv().expect("one Event");
    assert_eq!(event.reason, "KubeProxyLeftoversKept");
    assert!(event
        .note
        .unwrap_or_default()
        .contains("ipsets in use [KUBE-LOOP-BACK]"));
}
