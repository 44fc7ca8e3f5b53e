//! The real [`Dataplane`]: IPVS through netlink-ipvs (batched), virtual IPs on our dummy
//! interface through rtnetlink, conntrack flushes through conntrack-gc (one pass for all the
//! filters of a sync). No external binary is ever executed.

mod cleanup;
mod interface;
mod sysctl;

pub use cleanup::{cleanup, CleanupReport};
pub use interface::{InterfaceHandle, RouteAnswer, RouteReply};
pub use sysctl::{
    apply_sysctls, kernel_release, kernel_version, wanted_sysctls, Sysctl, SysctlChange,
};

use std::net::IpAddr;
use std::sync::Arc;

use netlink_ipvs::{IpvsError, IpvsHandle, IpvsOperation};
use netlink_nftables::NftablesHandle;

use super::nftables::{
    replace_table, update_table, ExternalLocalMark, LoadBalancerSourceRange, PacketRules,
};
use super::{ApplyReport, Dataplane};
use crate::error::{Errno, Error};
use crate::plan::{DesiredState, VirtualServerRole};
use crate::reconcile::{ConntrackFilter, Observed, Op};

/// kube-proxy's name for the dummy interface, kept so that operators' tooling still works.
pub const DEFAULT_INTERFACE: &str = "kube-ipvs0";

/// Settings of the packet rules that do not come from the cluster objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketSettings {
    /// Our nftables table (family inet).
    pub table: String,
    /// `clusterCIDR` (IPv4 and/or IPv6): traffic from outside it to a service is masqueraded.
    pub cluster_cidrs: Vec<(IpAddr, u8)>,
    /// `masqueradeAll`.
    pub masquerade_all: bool,
}

impl Default for PacketSettings {
    fn default() -> Self {
        Self {
            table: PacketRules::default().table,
            cluster_cidrs: Vec::new(),
            masquerade_all: false,
        }
    }
}

/// The packet rules a plan needs under `settings`.
pub fn packet_rules(desired: &DesiredState, settings: &PacketSettings) -> PacketRules {
    let mut rules = PacketRules {
        table: settings.table.clone(),
        cluster_cidrs: settings.cluster_cidrs.clone(),
        masquerade_all: settings.masquerade_all,
        service_ips: desired.addresses.keys().copied().collect(),
        node_ips: desired.ownership.node_ips.clone(),
        hairpin_endpoints: desired.local_endpoints.keys().copied().collect(),
        ..PacketRules::default()
    };
    for (key, vs) in &desired.virtual_servers {
        let netlink_ipvs::ServiceKey::Address {
            protocol,
            address,
            port,
        } = *key
        else {
            continue;
        };
        match vs.role {
            VirtualServerRole::NodePort => {
                rules.node_ports.insert((protocol, port));
            }
            VirtualServerRole::LoadBalancer if !vs.allowed_sources.is_empty() => {
                rules
                    .load_balancer_source_ranges
                    .push(LoadBalancerSourceRange {
                        address,
                        protocol,
                        port,
                        allowed: vs.allowed_sources.clone(),
                    });
            }
            _ => {}
        }
    }
    for rule in desired.external_local.values() {
        rules
            .external_local
            .extend(
                rule.destinations
                    .iter()
                    .map(|(address, port)| ExternalLocalMark {
                        address: *address,
                        protocol: rule.protocol,
                        port: *port,
                        mark: rule.mark,
                    }),
            );
    }
    rules
}

/// The kernel of the network namespace the dataplane was opened in.
pub struct KernelDataplane {
    ipvs: IpvsHandle,
    links: InterfaceHandle,
    conntrack: conntrack_gc::Conntrack,
    nftables: NftablesHandle,
    packet_settings: PacketSettings,
    written_rules: Option<PacketRules>,
    interface: String,
    interface_index: u32,
    flushed: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl KernelDataplane {
    /// Opens the netlink sockets and creates the dummy interface `interface` if it is missing.
    pub fn connect(interface: &str) -> Result<Self, Error> {
        let ipvs = IpvsHandle::connect().map_err(|e| ipvs_error("connect to IPVS", e))?;
        let mut links = InterfaceHandle::connect()?;
        let interface_index = links.ensure_dummy(interface)?;
        let conntrack = conntrack_gc::Conntrack::open().map_err(|source| Error::Conntrack {
            operation: "connect to ctnetlink".into(),
            source: Arc::new(source),
        })?;
        Ok(Self {
            ipvs,
            links,
            conntrack,
            nftables: NftablesHandle::connect()?,
            packet_settings: PacketSettings::default(),
            written_rules: None,
            interface: interface.to_owned(),
            interface_index,
            flushed: Default::default(),
        })
    }

    /// The number of conntrack entries deleted so far (shared, for metrics).
    pub fn conntrack_flushed_counter(&self) -> std::sync::Arc<std::sync::atomic::AtomicU64> {
        self.flushed.clone()
    }

    /// Sets what the packet rules need beyond the plan (cluster CIDRs, masqueradeAll, table).
    pub fn with_packet_settings(mut self, settings: PacketSettings) -> Self {
        self.packet_settings = settings;
        self.written_rules = None;
        self
    }

    /// Writes the sysctls IPVS mode needs (see [`wanted_sysctls`]) under `root` (`/` on a node)
    /// for the running kernel, and sets the IPVS timeouts that are configured (0 leaves one as
    /// it is). Everything written is logged with its old value.
    pub fn prepare_host(
        &mut self,
        root: &conntrack_gc::FsRoot,
        strict_arp: bool,
        timeouts: netlink_ipvs::Timeouts,
    ) -> Result<Vec<SysctlChange>, Error> {
        // The kernel is shared: its release needs no host mount (only net sysctls are written).
        let changes = apply_sysctls(root, &wanted_sysctls(&kernel_release(), strict_arp));
        if timeouts != netlink_ipvs::Timeouts::default() {
            let before = self
                .ipvs
                .timeouts()
                .map_err(|e| ipvs_error("read IPVS timeouts", e))?;
            self.ipvs
                .set_timeouts(timeouts)
                .map_err(|e| ipvs_error("set IPVS timeouts", e))?;
            tracing::info!(?before, wanted = ?timeouts, "IPVS timeouts (0 = left as it was)");
        }
        Ok(changes)
    }

    /// The dummy interface's name.
    pub fn interface(&self) -> &str {
        &self.interface
    }

    /// The IPVS handle, for things outside the engine's operations (timeouts at start-up).
    pub fn ipvs(&mut self) -> &mut IpvsHandle {
        &mut self.ipvs
    }

    fn apply_ipvs(&mut self, ops: &[Op], results: &mut Vec<Result<(), Error>>) {
        let operations: Vec<IpvsOperation> = ops.iter().filter_map(ipvs_operation).collect();
        let outcomes = self.ipvs.apply(&operations);
        results.extend(
            ops.iter()
                .zip(outcomes)
                .map(|(op, outcome)| outcome.map_err(|e| ipvs_error(&op.to_string(), e))),
        );
    }

    fn apply_flushes(&mut self, ops: &[Op], results: &mut Vec<Result<(), Error>>) {
        let filters: Vec<conntrack_gc::ConntrackFilter> = ops
            .iter()
            .filter_map(|op| match op {
                Op::FlushConntrack(filter) => Some(conntrack_filter(filter)),
                _ => None,
            })
            .collect();
        match self.conntrack.flush(&filters) {
            Ok(report) => {
                self.flushed
                    .fetch_add(report.deleted, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(
                    examined = report.examined,
                    deleted = report.deleted,
                    filters = filters.len(),
                    "conntrack flush"
                );
                results.extend(ops.iter().map(|_| Ok(())));
            }
            Err(e) => {
                // One failed pass fails every flush of the run, with the same cause.
                let source = Arc::new(e);
                results.extend(ops.iter().map(|op| {
                    Err(Error::Conntrack {
                        operation: op.to_string(),
                        source: source.clone(),
                    })
                }));
            }
        }
    }

    fn apply_address(&mut self, op: &Op) -> Result<(), Error> {
        let outcome = match op {
            Op::BindAddress(ip) => self.links.add_address(self.interface_index, *ip),
            Op::UnbindAddress(ip) => self.links.delete_address(self.interface_index, *ip),
            _ => Ok(()),
        };
        // The kernel's answer is reported for the engine's operation.
        outcome.map_err(|error| match error {
            Error::Kernel { errno, .. } => Error::Kernel {
                op: op.to_string(),
                errno,
            },
            other => other,
        })
    }
}

impl Dataplane for KernelDataplane {
    fn observe(&mut self) -> Result<Observed, Error> {
        let mut ipvs = self.ipvs.state().map_err(|e| ipvs_error("dump IPVS", e))?;
        for service in ipvs.services.values_mut() {
            service.service = service.service.normalized();
        }
        let addresses = self.links.addresses(self.interface_index)?;
        // A full resync rewrites the table: drift in our own table is repaired like IPVS drift.
        if !self.nftables.table_exists(&self.packet_settings.table)? {
            self.written_rules = None;
        }
        Ok(Observed { ipvs, addresses })
    }

    /// Replaces our nftables table (atomically, one transaction) when the rules changed.
    fn program_packet_rules(&mut self, desired: &DesiredState) -> Result<bool, Error> {
        let rules = packet_rules(desired, &self.packet_settings);
        if self.written_rules.as_ref() == Some(&rules) {
            return Ok(false);
        }
        match &self.written_rules {
            Some(old) => update_table(&mut self.nftables, old, &rules)?,
            None => replace_table(&mut self.nftables, &rules)?,
        }
        tracing::info!(
            table = %rules.table,
            service_ips = rules.service_ips.len(),
            node_ports = rules.node_ports.len(),
            external_local = rules.external_local.len(),
            "packet rules written"
        );
        self.written_rules = Some(rules);
        Ok(true)
    }

    /// Applies `ops` in order; runs of IPVS operations go to the kernel as one batch and runs of
    /// conntrack flushes as one pass over the table.
    fn apply(&mut self, ops: &[Op]) -> ApplyReport {
        let mut results = Vec::with_capacity(ops.len());
        let mut start = 0;
        while start < ops.len() {
            let kind = OpKind::of(&ops[start]);
            let end = ops[start..]
                .iter()
                .position(|op| OpKind::of(op) != kind)
                .map_or(ops.len(), |n| start + n);
            let run = &ops[start..end];
            match kind {
                OpKind::Ipvs => self.apply_ipvs(run, &mut results),
                OpKind::Flush => self.apply_flushes(run, &mut results),
                OpKind::Address => {
                    for op in run {
                        let outcome = self.apply_address(op);
                        results.push(outcome);
                    }
                }
            }
            start = end;
        }
        ApplyReport { results }
    }
}

/// Which kernel interface an operation goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpKind {
    Ipvs,
    Flush,
    Address,
}

impl OpKind {
    fn of(op: &Op) -> Self {
        match op {
            Op::BindAddress(_) | Op::UnbindAddress(_) => OpKind::Address,
            Op::FlushConntrack(_) => OpKind::Flush,
            _ => OpKind::Ipvs,
        }
    }
}

/// The netlink-ipvs operation an engine operation is (None for non-IPVS operations).
pub fn ipvs_operation(op: &Op) -> Option<IpvsOperation> {
    Some(match op {
        Op::AddVirtualServer(vs) => IpvsOperation::AddService(vs.clone()),
        Op::UpdateVirtualServer(vs) => IpvsOperation::UpdateService(vs.clone()),
        Op::DeleteVirtualServer(key) => IpvsOperation::DeleteService(*key),
        Op::AddRealServer {
            service,
            real_server,
        } => IpvsOperation::AddDestination {
            service: *service,
            real_server: *real_server,
        },
        Op::UpdateRealServer {
            service,
            real_server,
        } => IpvsOperation::UpdateDestination {
            service: *service,
            real_server: *real_server,
        },
        Op::DeleteRealServer {
            service,
            real_server,
        } => IpvsOperation::DeleteDestination {
            service: *service,
            real_server: *real_server,
        },
        Op::BindAddress(_) | Op::UnbindAddress(_) | Op::FlushConntrack(_) => return None,
    })
}

fn conntrack_filter(filter: &ConntrackFilter) -> conntrack_gc::ConntrackFilter {
    match *filter {
        ConntrackFilter::ReplySource {
            protocol,
            address,
            port,
        } => conntrack_gc::ConntrackFilter::endpoint(protocol, address, port),
        ConntrackFilter::OriginalDestination {
            protocol,
            address,
            port,
        } => conntrack_gc::ConntrackFilter::service_ip(protocol, address, port),
    }
}

/// A kernel refusal becomes [`Error::Kernel`] (the engine reads its errno); anything else
/// (socket, timeout, malformed reply) keeps netlink-ipvs' error as its source.
fn ipvs_error(operation: &str, error: IpvsError) -> Error {
    match error.errno() {
        Some(errno) => Error::Kernel {
            op: operation.to_owned(),
            errno: Errno(errno),
        },
        None => Error::Ipvs {
            operation: operation.to_owned(),
            source: error,
        },
    }
}

#[cfg(test)]
mod tests {
    use netlink_ipvs::Protocol;

    use super::{packet_rules, PacketSettings};
    use crate::fixtures::{cluster, ep, ip, plan, service, slice, with_ports};

    #[test]
    fn packet_rules_follow_the_plan() {
        let web = with_ports(
            service("web", &["10.96.0.80"], &[("http", Protocol::Tcp, 80)]),
            |p| {
                p.node_port = Some(30080);
                p.load_balancer_ips = vec![ip("203.0.113.7")];
                p.load_balancer_source_ranges = vec![(ip("198.51.100.0"), 24)];
            },
        );
        let open = with_ports(
            service("open", &["10.96.0.81"], &[("http", Protocol::Tcp, 80)]),
            |p| p.load_balancer_ips = vec![ip("203.0.113.8")],
        );
        let slices = vec![
            slice(
                "web",
                "web-1",
                &[("http", Protocol::Tcp, 8080)],
                vec![ep("10.244.1.5", "node-a")],
            ),
            slice(
                "open",
                "open-1",
                &[("http", Protocol::Tcp, 8080)],
                vec![ep("10.244.1.6", "node-a")],
            ),
        ];
        let desired = plan(cluster(vec![web, open], slices));
        let settings = PacketSettings {
            cluster_cidrs: vec![(ip("10.244.0.0"), 16)],
            ..PacketSettings::default()
        };
        let rules = packet_rules(&desired, &settings);
        assert!(rules.service_ips.contains(&ip("10.96.0.80")));
        assert!(rules.service_ips.contains(&ip("203.0.113.7")));
        assert!(rules.node_ports.contains(&(Protocol::Tcp, 30080)));
        assert_eq!(rules.cluster_cidrs, settings.cluster_cidrs);
        // Only the LoadBalancer with ranges is filtered; the other LB and the ClusterIP are not.
        assert_eq!(rules.load_balancer_source_ranges.len(), 1);
        let range = &rules.load_balancer_source_ranges[0];
        assert_eq!((range.address, range.port), (ip("203.0.113.7"), 80));
        assert_eq!(range.allowed, vec![(ip("198.51.100.0"), 24)]);
    }
}
