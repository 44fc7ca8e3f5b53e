//! The one seam to the kernel: [`Dataplane`] applies [`Op`]s and observes state. The real
//! implementation (netlink-ipvs, rtnetlink, conntrack-gc) comes with the runtime;
//! `FakeDataplane` (feature `fake`) is the strict recording fake the engine's sequence tests run
//! against.

#[cfg(any(test, feature = "fake"))]
mod fake;
#[cfg(feature = "kernel")]
pub mod kernel;
mod leftovers;
#[cfg(feature = "kernel")]
pub mod nftables;

#[cfg(any(test, feature = "fake"))]
pub use fake::{FakeDataplane, FakeIpsets, FakeLeftovers, FakeXtables};
pub use leftovers::{
    family_name, preview_leftovers, remove_leftovers, BackendRemoval, LeftoverBackend,
    LeftoverFailure, LeftoverReport, SetBackend, SetDestroy,
};

use std::collections::BTreeSet;
use std::net::IpAddr;

use netlink_ipvs::IpvsState;

use crate::error::Error;
use crate::plan::PacketRules;
use crate::reconcile::{Observed, Op};

/// What applying a batch did: one result per operation, in order. One failed operation never
/// stops the others.
#[derive(Debug, Default)]
pub struct ApplyReport {
    /// Result of each operation.
    pub results: Vec<Result<(), Error>>,
}

impl ApplyReport {
    /// The failed operations with their errors.
    pub fn failures<'a>(&'a self, ops: &'a [Op]) -> impl Iterator<Item = (&'a Op, &'a Error)> {
        ops.iter()
            .zip(&self.results)
            .filter_map(|(op, r)| r.as_ref().err().map(|e| (op, e)))
    }

    /// Whether every operation succeeded.
    pub fn is_success(&self) -> bool {
        self.results.iter().all(Result::is_ok)
    }
}

/// A read of the whole IPVS table (normalized, as [`Observed::ipvs`] holds it) that runs on
/// another thread, on its own socket, while the sync loop goes on applying changes: the
/// periodic resync's dump, which takes seconds at 10,000 virtual servers.
pub type TableRead = Box<dyn FnOnce() -> Result<IpvsState, Error> + Send>;

/// Applies operations to a node and reads its state back.
pub trait Dataplane {
    /// Reads the current state (a full dump: start-up, and resyncs of a dataplane without a
    /// [`Dataplane::table_read`]).
    fn observe(&mut self) -> Result<Observed, Error>;
    /// The IPVS half of a periodic resync's read, to run off the sync loop; `None` (the
    /// default): this dataplane is only read on the loop, through [`Dataplane::observe`].
    /// A dataplane that answers `Some` also reads the rest with
    /// [`Dataplane::observe_addresses`] once the table is in.
    fn table_read(&mut self) -> Result<Option<TableRead>, Error> {
        Ok(None)
    }
    /// The rest of a resync's read, on the loop, after a [`Dataplane::table_read`]: the
    /// addresses bound on our dummy interface (and whatever else a full read repairs
    /// besides the IPVS table).
    fn observe_addresses(&mut self) -> Result<BTreeSet<IpAddr>, Error> {
        self.observe().map(|observed| observed.addresses)
    }
    /// Applies `ops` in order.
    fn apply(&mut self, ops: &[Op]) -> ApplyReport;
    /// Brings packet rules (masquerade, NodePorts, ETP=Local marks) in line with the plan's
    /// packet-rule intent; returns whether anything was written.
    fn program_packet_rules(&mut self, rules: &PacketRules) -> Result<bool, Error>;
    /// Whether the packet rules last written are known to be in the kernel as written (no
    /// one can have changed them since): a resync then neither rebuilds nor rewrites them.
    /// `false` (the default) whenever that is not known.
    fn packet_rules_intact(&mut self) -> bool {
        false
    }
    /// The node's local addresses on every interface but our dummy one, when they changed
    /// since the last call (the first call of a dataplane that follows them always answers);
    /// `None` = unchanged, or not followed (then NodePorts stay on the node's given IPs).
    fn local_addresses(&mut self) -> Result<Option<Vec<std::net::IpAddr>>, Error> {
        Ok(None)
    }
    /// Removes kube-proxy's leftovers ([`remove_leftovers`] over this dataplane's backends);
    /// called once proxier's own table is in place. A dataplane without backends removes
    /// nothing.
    fn remove_kube_proxy_leftovers(&mut self) -> LeftoverReport {
        LeftoverReport::default()
    }
    /// What [`Dataplane::remove_kube_proxy_leftovers`] would remove now, removing nothing
    /// ([`preview_leftovers`]).
    fn preview_kube_proxy_leftovers(&mut self) -> LeftoverReport {
        LeftoverReport::default()
    }
}

#[cfg(test)]
mod tests;
