//! The real [`Dataplane`]: IPVS through netlink-ipvs (batched), virtual IPs on our dummy
//! interface through rtnetlink, conntrack flushes through conntrack-gc (one pass for all the
//! filters of a sync). No external binary is ever executed.

mod addresses;
mod binding;
mod cleanup;
mod interface;
#[cfg(test)]
mod leftover_tests;
mod leftovers;
mod legacy;
mod sysctl;

pub use addresses::{notifies_change, AddressWatch};
pub use cleanup::{cleanup, CleanupReport};
pub use interface::{InterfaceHandle, RouteAnswer, RouteReply};
pub use leftovers::{removal_messages, ruleset, IptablesNft, KernelIpsets};
pub use legacy::{legacy_chains, IptablesLegacy};
pub use sysctl::{
    apply_sysctls, kernel_release, kernel_version, wanted_sysctls, Sysctl, SysctlChange,
};

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use netlink_ipvs::{IpvsError, IpvsHandle, IpvsOperation, IpvsState, ServiceKey};

use binding::{AllAnsweredOnDrop, BindProgress, ADDRESS_WINDOW};
use netlink_nftables::NftablesHandle;

use super::nftables::{replace_table, update_table};
use super::{remove_leftovers, ApplyReport, Dataplane, LeftoverBackend, LeftoverReport, TableRead};
use crate::error::{Errno, Error};
use crate::plan::PacketRules;
use crate::reconcile::{Observed, Op};

/// Runs of at least this many operations are logged with their time.
const LARGE_RUN: usize = 1000;

/// The errno of an operation on an interface that does not exist.
const ENODEV: i32 = 19;

/// kube-proxy's name for the dummy interface, kept so that operators' tooling still works.
pub const DEFAULT_INTERFACE: &str = "kube-ipvs0";

/// The kernel of the network namespace the dataplane was opened in.
pub struct KernelDataplane {
    ipvs: IpvsHandle,
    links: InterfaceHandle,
    conntrack: conntrack_gc::Conntrack,
    nftables: NftablesHandle,
    written_rules: Option<PacketRules>,
    /// Set by a full resync ([`Dataplane::observe`]) unless the ruleset is known unchanged
    /// since our last write: the next write replaces our table whole, which repairs any drift
    /// in it (a flushed chain, a deleted set element).
    replace_rules: bool,
    /// The ruleset generation right after our last packet-rule write, when that write is
    /// known to be the only change since the table was last replaced (issue 15: a resync
    /// that finds the generation unchanged has no drift to repair and writes nothing).
    rules_generation: Option<u32>,
    interface: String,
    interface_index: u32,
    counters: Arc<KernelCounters>,
    /// Set by [`KernelDataplane::follow_node_addresses`].
    address_watch: Option<AddressWatch>,
    /// iptables-legacy (or another backend) for kube-proxy's leftovers, besides
    /// iptables-nft ([`KernelDataplane::add_leftover_backend`]).
    leftover_backends: Vec<Box<dyn LeftoverBackend + Send>>,
}

/// What the kernel dataplane counts for the metrics (shared with the `/metrics` handler).
#[derive(Debug, Default)]
pub struct KernelCounters {
    /// Conntrack entries deleted for removed endpoints and services.
    pub conntrack_flushed: AtomicU64,
    /// Virtual servers left out of an IPVS dump (unreadable or vanished while it was read).
    pub ipvs_dump_skipped: AtomicU64,
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
            written_rules: None,
            replace_rules: true,
            rules_generation: None,
            interface: interface.to_owned(),
            interface_index,
            counters: Arc::default(),
            address_watch: None,
            leftover_backends: vec![Box::new(IptablesLegacy)],
        })
    }

    /// Follows the node's local addresses (rtnetlink notifications), so that NodePorts open on
    /// the addresses `nodePortAddresses` selects as they come and go
    /// ([`Dataplane::local_addresses`]). Without it NodePorts stay on the node's given IPs.
    pub fn follow_node_addresses(&mut self) -> Result<(), Error> {
        self.address_watch = Some(AddressWatch::open()?);
        Ok(())
    }

    /// Adds a backend kube-proxy's leftovers are also removed from (iptables-legacy);
    /// iptables-nft and ipsets are always looked at.
    pub fn add_leftover_backend(&mut self, backend: Box<dyn LeftoverBackend + Send>) {
        self.leftover_backends.push(backend);
    }

    /// What this dataplane counts (shared, for metrics).
    pub fn counters(&self) -> Arc<KernelCounters> {
        self.counters.clone()
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
        let operations: Vec<IpvsOperation> = ops.iter().filter_map(Op::ipvs_operation).collect();
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
                Op::FlushConntrack(filter) => Some(*filter),
                _ => None,
            })
            .collect();
        match self.conntrack.flush(&filters) {
            Ok(report) => {
                self.counters
                    .conntrack_flushed
                    .fetch_add(report.deleted, Ordering::Relaxed);
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

    /// Whether the ruleset is known unchanged since our last packet-rule write (its
    /// generation still the one that write left); a generation that cannot be read is not.
    fn rules_unchanged(&mut self) -> bool {
        let Some(written) = self.rules_generation else {
            return false;
        };
        match self.nftables.generation() {
            Ok(now) => now == written,
            Err(error) => {
                tracing::debug!(%error, "ruleset generation not read; the resync replaces the table");
                false
            }
        }
    }

    /// Makes sure our dummy interface exists (someone may have deleted it: `ip link del`),
    /// recreating it by name, and keeps its index. A recreated interface has no address; the
    /// caller's next reconcile binds them again.
    fn ensure_interface(&mut self) -> Result<u32, Error> {
        ensure_interface(&mut self.links, &self.interface, &mut self.interface_index)
    }

    /// Applies a run of address operations: each run of bindings in windows
    /// ([`InterfaceHandle::add_addresses`]), an unbinding on its own.
    fn apply_addresses(&mut self, ops: &[Op], results: &mut Vec<Result<(), Error>>) {
        let mut start = 0;
        while start < ops.len() {
            let binds: Vec<IpAddr> = ops[start..].iter().map_while(bound_address).collect();
            if binds.is_empty() {
                let op = &ops[start];
                let outcome = match op {
                    Op::UnbindAddress(ip) => self.links.delete_address(self.interface_index, *ip),
                    _ => Ok(()),
                };
                results.push(outcome.map_err(|error| for_op(op, error)));
                start += 1;
                continue;
            }
            let outcomes = self.bind_all(&binds);
            let run = &ops[start..start + binds.len()];
            results.extend(
                run.iter()
                    .zip(outcomes)
                    .map(|(op, outcome)| outcome.map_err(|error| for_op(op, error))),
            );
            start += binds.len();
        }
    }

    /// Binds `ips` on our dummy interface ([`bind_windows`]).
    fn bind_all(&mut self, ips: &[IpAddr]) -> Vec<Result<(), Error>> {
        let progress = BindProgress::default();
        let mut interface = Interface {
            links: &mut self.links,
            name: &self.interface,
            index: &mut self.interface_index,
        };
        bind_windows(&mut interface, ips, &progress)
    }

    /// A run of bindings followed by a run of IPVS operations (a start-up, a resync's repair):
    /// the addresses are bound on a thread of their own while the IPVS operations go out
    /// (rtnetlink and IPVS take different kernel locks), each window of IPVS operations
    /// waiting until the virtual IPs of the virtual servers it creates are answered, so that
    /// a virtual server is still owned from the moment it exists (reconcile's order).
    fn bind_while_applying_ipvs(
        &mut self,
        binds: &[Op],
        ipvs: &[Op],
        results: &mut Vec<Result<(), Error>>,
    ) {
        let ips: Vec<IpAddr> = binds.iter().filter_map(bound_address).collect();
        let position: HashMap<IpAddr, usize> =
            ips.iter().enumerate().map(|(i, ip)| (*ip, i)).collect();
        let operations: Vec<IpvsOperation> = ipvs.iter().filter_map(Op::ipvs_operation).collect();
        let progress = BindProgress::default();
        let mut interface = Interface {
            links: &mut self.links,
            name: &self.interface,
            index: &mut self.interface_index,
        };
        let handle = &mut self.ipvs;
        let (bound, outcomes) = std::thread::scope(|scope| {
            let binder = scope.spawn(|| {
                let _finished = AllAnsweredOnDrop(&progress);
                bind_windows(&mut interface, &ips, &progress)
            });
            let outcomes = handle.apply_gated(&operations, |window| {
                let needed = window
                    .iter()
                    .filter_map(|op| match op {
                        IpvsOperation::AddVirtualServer(vs) => match vs.key {
                            ServiceKey::Address { address, .. } => position.get(&address),
                            ServiceKey::FwMark { .. } => None,
                        },
                        _ => None,
                    })
                    .max();
                if let Some(&last) = needed {
                    progress.wait_for(last + 1);
                }
            });
            let bound = binder
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (bound, outcomes)
        });
        results.extend(
            binds
                .iter()
                .zip(bound)
                .map(|(op, outcome)| outcome.map_err(|error| for_op(op, error))),
        );
        results.extend(
            ipvs.iter()
                .zip(outcomes)
                .map(|(op, outcome)| outcome.map_err(|e| ipvs_error(&op.to_string(), e))),
        );
    }
}

/// The address `op` binds, if it is a binding.
fn bound_address(op: &Op) -> Option<IpAddr> {
    match op {
        Op::BindAddress(ip) => Some(*ip),
        _ => None,
    }
}

/// Makes sure the dummy interface `name` exists (someone may have deleted it: `ip link del`),
/// recreating it by name, and keeps its `index`. A recreated interface has no address; the
/// caller's next reconcile binds them again.
fn ensure_interface(
    links: &mut InterfaceHandle,
    name: &str,
    index: &mut u32,
) -> Result<u32, Error> {
    let now = links.ensure_dummy(name)?;
    if now != *index {
        tracing::warn!(
            interface = %name,
            old_index = *index,
            new_index = now,
            "dummy interface was missing and has been recreated; its addresses are bound again"
        );
        *index = now;
    }
    Ok(now)
}

/// Our dummy interface, borrowed for binding addresses on it (from another thread).
struct Interface<'a> {
    links: &'a mut InterfaceHandle,
    name: &'a str,
    index: &'a mut u32,
}

/// Binds `ips` window by window; the addresses of a window refused with ENODEV (the interface
/// went away since the last resync) are bound again once it is recreated (if it cannot be,
/// they keep their ENODEV). `progress` counts the addresses answered.
fn bind_windows(
    interface: &mut Interface<'_>,
    ips: &[IpAddr],
    progress: &BindProgress,
) -> Vec<Result<(), Error>> {
    let mut outcomes = Vec::with_capacity(ips.len());
    for window in ips.chunks(ADDRESS_WINDOW) {
        let mut answers = interface.links.add_addresses(*interface.index, window);
        let gone: Vec<usize> = answers
            .iter()
            .enumerate()
            .filter(|(_, outcome)| {
                matches!(outcome, Err(Error::Kernel { errno, .. }) if errno.0 == ENODEV)
            })
            .map(|(i, _)| i)
            .collect();
        if !gone.is_empty() {
            match ensure_interface(interface.links, interface.name, interface.index) {
                Ok(index) => {
                    let again: Vec<IpAddr> = gone.iter().map(|&i| window[i]).collect();
                    let retried = interface.links.add_addresses(index, &again);
                    for (i, outcome) in gone.into_iter().zip(retried) {
                        answers[i] = outcome;
                    }
                }
                // The bindings keep their ENODEV and are retried at the next resync.
                Err(error) => {
                    tracing::warn!(error = %error.report(), interface = %interface.name, "dummy interface not recreated");
                }
            }
        }
        outcomes.extend(answers);
        progress.advance_to(outcomes.len());
    }
    outcomes
}

/// The kernel's answer is reported for the engine's operation.
fn for_op(op: &Op, error: Error) -> Error {
    match error {
        Error::Kernel { errno, .. } => Error::Kernel {
            op: op.to_string(),
            errno,
        },
        other => other,
    }
}

impl KernelDataplane {
    /// `pass` ([`remove_leftovers`] or its preview) over iptables-nft, the other backends and
    /// the kernel's ipsets.
    fn leftover_pass(
        &mut self,
        pass: fn(
            &mut [&mut dyn LeftoverBackend],
            Option<&mut dyn super::SetBackend>,
        ) -> LeftoverReport,
    ) -> LeftoverReport {
        let mut nft = IptablesNft(&mut self.nftables);
        let mut backends: Vec<&mut dyn LeftoverBackend> = vec![&mut nft];
        for backend in &mut self.leftover_backends {
            backends.push(backend.as_mut());
        }
        // Sets last, on their own socket: a set referenced by a rule cannot be destroyed.
        match NftablesHandle::connect() {
            Ok(handle) => pass(&mut backends, Some(&mut KernelIpsets(handle))),
            Err(error) => {
                let mut report = pass(&mut backends, None);
                report.failures.push(super::LeftoverFailure {
                    step: "ipset: connect".to_owned(),
                    error: error.into(),
                });
                report
            }
        }
    }
}

impl Dataplane for KernelDataplane {
    fn remove_kube_proxy_leftovers(&mut self) -> LeftoverReport {
        self.leftover_pass(remove_leftovers)
    }

    fn preview_kube_proxy_leftovers(&mut self) -> LeftoverReport {
        self.leftover_pass(super::preview_leftovers)
    }

    fn observe(&mut self) -> Result<Observed, Error> {
        let ipvs = read_table(&mut self.ipvs, &self.counters)?;
        let addresses = self.observe_addresses()?;
        Ok(Observed { ipvs, addresses })
    }

    /// A dump on a socket of its own (opened here, in this thread's network namespace), so
    /// that the loop's socket stays free for the changes that come meanwhile.
    fn table_read(&mut self) -> Result<Option<TableRead>, Error> {
        let mut ipvs = IpvsHandle::connect().map_err(|e| ipvs_error("connect to IPVS", e))?;
        let counters = self.counters.clone();
        Ok(Some(Box::new(move || read_table(&mut ipvs, &counters))))
    }

    /// The addresses on our dummy interface; kube-ipvs0 deleted by someone else is recreated
    /// here, once per full resync, and the next packet-rule write replaces our table whole.
    fn observe_addresses(&mut self) -> Result<BTreeSet<IpAddr>, Error> {
        let before = self.interface_index;
        let index = self.ensure_interface()?;
        let addresses = self.links.addresses(index)?;
        self.replace_rules = index != before || !self.rules_unchanged();
        Ok(addresses)
    }

    fn local_addresses(&mut self) -> Result<Option<Vec<std::net::IpAddr>>, Error> {
        let Some(watch) = &mut self.address_watch else {
            return Ok(None);
        };
        if !watch.changed(self.interface_index)? {
            return Ok(None);
        }
        self.links.addresses_outside(self.interface_index).map(Some)
    }

    /// Writes our nftables table (atomically, one transaction): after a full resync it is
    /// replaced whole (drift repair: nothing of it is read back), otherwise only when the rules
    /// changed, by set element updates where possible. A failed update falls back to a
    /// whole-table replace (an element deleted by hand makes its DELSETELEM fail ENOENT).
    fn program_packet_rules(&mut self, rules: &PacketRules) -> Result<bool, Error> {
        if !self.replace_rules && self.written_rules.as_ref() == Some(rules) {
            return Ok(false);
        }
        let before = self.nftables.generation().ok();
        let (outcome, replaced) = match (&self.written_rules, self.replace_rules) {
            (Some(old), false) => match update_table(&mut self.nftables, old, rules) {
                Ok(()) => (Ok(()), false),
                Err(error) => {
                    tracing::warn!(%error, "nftables update failed; replacing the table whole");
                    (replace_table(&mut self.nftables, rules), true)
                }
            },
            _ => (replace_table(&mut self.nftables, rules), true),
        };
        if let Err(error) = outcome {
            // What the kernel holds is unknown now: the next write replaces the table.
            self.written_rules = None;
            self.rules_generation = None;
            return Err(error.into());
        }
        let after = self.nftables.generation().ok();
        self.rules_generation = crate::dataplane::nftables::written_generation(
            self.rules_generation,
            before,
            after,
            replaced,
        );
        let resync = std::mem::take(&mut self.replace_rules);
        if resync && self.written_rules.as_ref() == Some(rules) {
            tracing::debug!(table = %rules.table, "packet rules rewritten by the resync");
            return Ok(true);
        }
        tracing::info!(
            table = %rules.table,
            service_ips = rules.service_ips.len(),
            node_ports = rules.node_ports.len(),
            external_local = rules.external_local.len(),
            "packet rules written"
        );
        self.written_rules = Some(rules.clone());
        Ok(true)
    }

    /// Our table is as we wrote it when the resync's [`Dataplane::observe_addresses`] found
    /// the ruleset generation unchanged since that write.
    fn packet_rules_intact(&mut self) -> bool {
        !self.replace_rules && self.written_rules.is_some()
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
            let sending = std::time::Instant::now();
            // Bindings followed by IPVS operations: both at once, when there are enough
            // bindings to be worth a thread (a start-up, a repair; not one new Service).
            let ipvs_after = ops[end..]
                .iter()
                .position(|op| OpKind::of(op) != OpKind::Ipvs)
                .map_or(ops.len(), |n| end + n);
            let overlapped = kind == OpKind::Address
                && run.len() >= ADDRESS_WINDOW
                && ipvs_after > end
                && run.iter().all(|op| bound_address(op).is_some());
            let end = if overlapped {
                self.bind_while_applying_ipvs(run, &ops[end..ipvs_after], &mut results);
                ipvs_after
            } else {
                match kind {
                    OpKind::Ipvs => self.apply_ipvs(run, &mut results),
                    OpKind::Flush => self.apply_flushes(run, &mut results),
                    OpKind::Address => self.apply_addresses(run, &mut results),
                }
                end
            };
            // A start-up or a large repair: where its kernel time went (issue 15).
            if end - start >= LARGE_RUN {
                tracing::info!(kind = ?kind, overlapped, operations = end - start, elapsed = ?sending.elapsed(), "large run applied");
            }
            start = end;
        }
        ApplyReport { results }
    }
}

/// The whole IPVS table, normalized. One unreadable (foreign) or vanishing virtual server does
/// not fail the read: it is left out (an owned one is read again at the next resync), counted
/// and logged.
fn read_table(ipvs: &mut IpvsHandle, counters: &KernelCounters) -> Result<IpvsState, Error> {
    let report = ipvs
        .state_report()
        .map_err(|e| ipvs_error("dump IPVS", e))?;
    counters
        .ipvs_dump_skipped
        .fetch_add(report.skipped.len() as u64, Ordering::Relaxed);
    for skipped in &report.skipped {
        tracing::warn!(
            service = ?skipped.key,
            reason = %skipped.reason,
            "virtual server left out of the IPVS dump"
        );
    }
    let mut table = report.state;
    for service in table.services.values_mut() {
        service.service = service.service.normalized();
    }
    Ok(table)
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
