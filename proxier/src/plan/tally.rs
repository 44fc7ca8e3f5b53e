//! What a re-plan of one Service changed beyond its virtual servers, without looking at the
//! others (ARCHITECTURE.md rule 4): the Service's share of the real-server and
//! no-local-endpoint counts (kept per Service, summed by the [`super::Planner`]), and its
//! packet-rule footprint (compared before and after, so that packet rules are rebuilt only
//! when a Service changed what they are made of, not on a weight flip).

use std::collections::BTreeMap;
use std::net::IpAddr;

use netlink_ipvs::ServiceKey;

use super::{
    DesiredState, DesiredVirtualServer, ExternalLocalRule, NoLocalEndpoints, RealServerCounts,
    RealServerIntent, ServiceHealthCheck, TrafficScope, VirtualServerRole,
};
use crate::model::ServiceName;

/// Counts the real servers of `virtual_servers` by intent.
pub(super) fn count_real_servers<'a>(
    virtual_servers: impl Iterator<Item = &'a DesiredVirtualServer>,
) -> RealServerCounts {
    let mut counts = RealServerCounts::default();
    for rs in virtual_servers.flat_map(|vs| vs.real_servers.values()) {
        match rs.intent {
            RealServerIntent::Serve => counts.serving += 1,
            RealServerIntent::Drain => counts.draining += 1,
            RealServerIntent::Remove => {}
        }
    }
    counts
}

/// Service ports of `virtual_servers` with a `Local` traffic policy and no serving real
/// server, counted once per (policy, family, port).
pub(super) fn count_no_local_endpoints<'a>(
    virtual_servers: impl Iterator<Item = (&'a ServiceKey, &'a DesiredVirtualServer)>,
) -> NoLocalEndpoints {
    let mut ports = std::collections::BTreeSet::new();
    for (key, vs) in virtual_servers {
        let policy = match vs.role {
            VirtualServerRole::ClusterIp if vs.local_only => TrafficScope::Internal,
            VirtualServerRole::ExternalLocal => TrafficScope::External,
            _ => continue,
        };
        let serving = vs
            .real_servers
            .values()
            .any(|rs| rs.intent == RealServerIntent::Serve);
        if !serving {
            ports.insert((policy, key.family(), &vs.owner));
        }
    }
    let mut counts = NoLocalEndpoints::new();
    for (policy, family, _) in ports {
        *counts.entry((policy, family)).or_default() += 1;
    }
    counts
}

/// One Service's share of the counts.
#[derive(Debug, Clone, Default)]
pub(super) struct ServiceTally {
    pub(super) real_servers: RealServerCounts,
    pub(super) no_local_endpoints: NoLocalEndpoints,
}

impl ServiceTally {
    /// The share of the virtual servers `keys` of `desired`.
    pub(super) fn of(desired: &DesiredState, keys: &[ServiceKey]) -> Self {
        let owned = || {
            keys.iter()
                .filter_map(|key| desired.virtual_servers.get_key_value(key))
        };
        Self {
            real_servers: count_real_servers(owned().map(|(_, vs)| vs)),
            no_local_endpoints: count_no_local_endpoints(owned()),
        }
    }

    /// Adds (`sign` true) or takes away this share from `total`.
    pub(super) fn add_to(&self, total: &mut ServiceTally, sign: bool) {
        let apply = |total: &mut u64, n: u64| {
            *total = if sign {
                *total + n
            } else {
                total.saturating_sub(n)
            };
        };
        apply(&mut total.real_servers.serving, self.real_servers.serving);
        apply(&mut total.real_servers.draining, self.real_servers.draining);
        for (entry, n) in &self.no_local_endpoints {
            let count = total.no_local_endpoints.entry(*entry).or_default();
            apply(count, *n);
            if *count == 0 {
                total.no_local_endpoints.remove(entry);
            }
        }
    }
}

/// What one virtual server puts into the packet rules: its key, role and allowed sources.
type RuleEntry = (ServiceKey, VirtualServerRole, Vec<(IpAddr, u8)>);

/// What one Service puts into the packet rules ([`super::packet_rules`]).
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct RuleFootprint {
    virtual_servers: Vec<RuleEntry>,
    addresses: Vec<IpAddr>,
    local_endpoints: Vec<IpAddr>,
    external_local: Vec<ExternalLocalRule>,
    health_check: Option<ServiceHealthCheck>,
}

impl RuleFootprint {
    /// The footprint of Service `name` in `desired`: its virtual servers `keys`, addresses,
    /// local endpoints, external-local `marks` and health check.
    pub(super) fn of(
        desired: &DesiredState,
        name: &ServiceName,
        keys: &[ServiceKey],
        addresses: &[IpAddr],
        local_endpoints: &[IpAddr],
        marks: impl Iterator<Item = u32>,
    ) -> Self {
        let external_local: BTreeMap<u32, ExternalLocalRule> = marks
            .filter_map(|mark| desired.external_local.get(&mark).map(|r| (mark, r.clone())))
            .collect();
        Self {
            virtual_servers: keys
                .iter()
                .filter_map(|key| desired.virtual_servers.get(key).map(|vs| (key, vs)))
                .map(|(key, vs)| (*key, vs.role, vs.allowed_sources.clone()))
                .collect(),
            addresses: addresses.to_vec(),
            local_endpoints: local_endpoints.to_vec(),
            external_local: external_local.into_values().collect(),
            health_check: desired.health_checks.get(name).cloned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use netlink_ipvs::Protocol;

    use crate::config::Config;
    use crate::fixtures::{ep, name, node_a, service, slice, terminating, with_ports};
    use crate::model::{ClusterState, TrafficPolicy};
    use crate::plan::Planner;

    fn web_slice(endpoints: Vec<crate::model::Endpoint>) -> crate::model::EndpointSlice {
        slice("web", "web-1", &[("http", Protocol::Tcp, 8080)], endpoints)
    }

    /// Issue 15 item 1: a weight flip re-plans one Service and does not ask for the packet
    /// rules to be rebuilt (before, any re-plan that touched a virtual server rebuilt them
    /// from the whole plan); a new cluster IP does; the counts the sync loop reports are kept
    /// per Service and always equal a walk of the whole plan.
    #[test]
    fn a_weight_flip_leaves_packet_rules_and_counts_stay_exact() {
        let mut cluster = ClusterState::new();
        let local = |svc| {
            with_ports(svc, |p| {
                p.internal_policy = TrafficPolicy::Local;
            })
        };
        cluster.upsert_service(local(service(
            "web",
            &["10.96.0.1"],
            &[("http", Protocol::Tcp, 80)],
        )));
        cluster.upsert_slice(web_slice(vec![
            ep("10.244.1.5", "node-a"),
            ep("10.244.2.5", "node-b"),
        ]));
        let mut planner = Planner::new(node_a(), Config::default());
        let exact = |planner: &Planner| {
            assert_eq!(
                planner.real_server_counts(),
                planner.desired().real_server_counts()
            );
            assert_eq!(
                planner.no_local_endpoints(),
                planner.desired().no_local_endpoints()
            );
        };
        assert!(planner.plan_all(&mut cluster).packet_rules);
        exact(&planner);
        // The local endpoint terminates (still serving: it keeps the traffic, KEP-1669).
        cluster.upsert_slice(web_slice(vec![
            terminating("10.244.1.5", "node-a", true),
            ep("10.244.2.5", "node-b"),
        ]));
        let changes = planner.replan(&mut cluster);
        assert_eq!(changes.services.len(), 1);
        assert!(!changes.packet_rules, "a weight flip: {changes:?}");
        exact(&planner);
        // A new cluster IP is a new address and virtual server: rules rebuilt.
        cluster.upsert_service(local(service(
            "web",
            &["10.96.0.2"],
            &[("http", Protocol::Tcp, 80)],
        )));
        assert!(planner.replan(&mut cluster).packet_rules);
        exact(&planner);
        cluster.remove_service(&name("web"));
        assert!(planner.replan(&mut cluster).packet_rules);
        exact(&planner);
        assert_eq!(planner.real_server_counts().serving, 0);
    }
}
