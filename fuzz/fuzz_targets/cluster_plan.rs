#![no_main]
//! Arbitrary text as a `--source` file through the file source's path to a plan: the YAML
//! limits and `parse_documents`, `load_cluster`, the planner for a node, and the `ipvsadm`
//! listing of what it wants (what `proxier plan` prints): errors are fine, panics are not.
//! Planning the same cluster again wants the same.

use libfuzzer_sys::fuzz_target;
use proxier::config::Config;
use proxier::plan::{NodeContext, Planner};
use proxier::source::{load_cluster, parse_documents};

fuzz_target!(|text: &str| {
    let (objects, _problems) = parse_documents("fuzz.yaml", text);
    let (mut cluster, _rejected) = load_cluster(&objects);
    let node = || NodeContext {
        name: "node-a".to_owned(),
        node_ips: vec!["192.168.1.10".parse().unwrap(), "fd00::10".parse().unwrap()],
        zone: Some("zone-a".to_owned()),
    };
    let mut planner = Planner::new(node(), Config::default());
    planner.plan_all(&mut cluster);
    let listing = netlink_ipvs::ipvsadm::listing(&planner.desired().to_ipvs_state());
    let (mut again, _) = load_cluster(&objects);
    let mut second = Planner::new(node(), Config::default());
    second.plan_all(&mut again);
    assert_eq!(
        netlink_ipvs::ipvsadm::listing(&second.desired().to_ipvs_state()),
        listing
    );
});
