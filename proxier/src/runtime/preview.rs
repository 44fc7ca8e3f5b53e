//! [`Preview`]: what a start on this node would change (`proxier plan --diff`), computed by the
//! same observe → plan → reconcile as the initial sync of `run`, without applying anything.

use std::fmt;

use netlink_ipvs::ipvsadm::Command;
use netlink_ipvs::VirtualServer;

use crate::dataplane::{family_name, LeftoverReport};
use crate::reconcile::Op;

/// The operations the initial sync would apply, the virtual servers it would keep because
/// they are not proxier's (ARCHITECTURE.md rule 2), and kube-proxy's leftovers it would remove
/// once its table is in place.
#[derive(Debug, Default)]
pub struct Preview {
    /// The operations, in the order the sync would apply them.
    pub ops: Vec<Op>,
    /// Observed virtual servers neither planned nor owned: left as they are.
    pub foreign: Vec<VirtualServer>,
    /// kube-proxy's leftovers as a removal pass would find them (`removed` and
    /// `sets_destroyed`: what it would remove); nothing was removed.
    pub leftovers: LeftoverReport,
}

impl Preview {
    /// How many of [`Preview::ops`] change IPVS (virtual and real servers).
    pub fn ipvs_operations(&self) -> usize {
        self.ops
            .iter()
            .filter(|op| op.ipvs_operation().is_some())
            .count()
    }
}

impl fmt::Display for Preview {
    /// One count line per kind, then each operation in `ipvsadm`/`ip` style, then the foreign
    /// virtual servers (as the `ipvsadm -A` line that would create them).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ipvs = self.ipvs_operations();
        writeln!(f, "{ipvs} IPVS operations")?;
        writeln!(
            f,
            "{} other operations (addresses, conntrack)",
            self.ops.len() - ipvs
        )?;
        for op in &self.ops {
            writeln!(f, "  {op}")?;
        }
        writeln!(
            f,
            "{} foreign virtual servers kept (not proxier's)",
            self.foreign.len()
        )?;
        for vs in &self.foreign {
            writeln!(f, "  {}", Command::AddVirtualServer(vs))?;
        }
        let leftovers = &self.leftovers;
        writeln!(
            f,
            "kube-proxy leftovers to remove once proxier's table is in place (unless --keep-kube-proxy-rules): {} rules jumping to its chains, {} chains, {} ipsets",
            leftovers.rules_removed(),
            leftovers.chains_removed(),
            leftovers.sets_destroyed.len()
        )?;
        for removal in &leftovers.removed {
            let family = family_name(removal.family);
            for chain in &removal.removal.chains {
                writeln!(f, "  chain {} {family} {chain}", removal.backend)?;
            }
        }
        for set in &leftovers.sets_destroyed {
            writeln!(f, "  ipset {set}")?;
        }
        for chain in &leftovers.chains_kept {
            writeln!(f, "  kept (not kube-proxy's): chain {chain}")?;
        }
        for failure in &leftovers.failures {
            writeln!(f, "  not read: {}: {}", failure.step, failure.error)?;
        }
        Ok(())
    }
}
