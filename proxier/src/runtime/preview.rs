//! [`Preview`]: what a start on this node would change (`proxier plan --diff`), computed by the
//! same observe → plan → reconcile as the initial sync of `run`, without applying anything.

use std::fmt;

use netlink_ipvs::ipvsadm::Command;
use netlink_ipvs::VirtualServer;

use crate::reconcile::Op;

/// The operations the initial sync would apply, and the virtual servers it would keep because
/// they are not proxier's (ARCHITECTURE.md rule 2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preview {
    /// The operations, in the order the sync would apply them.
    pub ops: Vec<Op>,
    /// Observed virtual servers neither planned nor owned: left as they are.
    pub foreign: Vec<VirtualServer>,
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
        Ok(())
    }
}
