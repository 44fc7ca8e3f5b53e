//! Removing user chains and every rule that jumps or goes to them, as a plain function.

use crate::table::{Table, Target, Verdict};
use crate::Error;

/// The outcome of [`remove_chains`]: the new table and what left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    /// The table without the chains and the jumps to them.
    pub table: Table,
    /// The chains removed, in table order.
    pub chains: Vec<String>,
    /// Rules removed from the chains that stay (jumps and gotos to a removed chain).
    pub jumps: usize,
    /// For each entry of the new table, the index of the same entry in the old one (to carry its
    /// counters over).
    pub kept: Vec<usize>,
}

impl Removal {
    /// Whether anything was removed (otherwise there is nothing to replace).
    pub fn is_empty(&self) -> bool {
        self.chains.is_empty() && self.jumps == 0
    }
}

/// Removes the user chains of `table` named in `names` (names absent from the table are skipped)
/// and every rule of the remaining chains whose standard target jumps or goes to one of them.
/// Everything else keeps its bytes; jump offsets, hook entries and underflows are rewritten.
pub fn remove_chains<S: AsRef<str>>(table: &Table, names: &[S]) -> Result<Removal, Error> {
    let chains = table.chains();
    let mut keep = vec![true; table.entries().len()];
    let mut removed = Vec::new();
    for chain in &chains {
        if !names.iter().any(|n| n.as_ref() == chain.name) {
            continue;
        }
        if chain.builtin {
            return Err(Error::BuiltinChain {
                chain: chain.name.clone(),
            });
        }
        keep[chain.entries.clone()].fill(false);
        removed.push(chain.name.clone());
    }
    let entries = table.entries();
    let gone = |offset: u32| {
        entries
            .binary_search_by_key(&offset, |e| e.offset)
            .is_ok_and(|i| !keep[i])
    };
    let jumps: Vec<usize> = entries
        .iter()
        .enumerate()
        .filter(|(i, e)| {
            keep[*i] && matches!(e.target, Target::Standard(Verdict::Jump(to)) if gone(to))
        })
        .map(|(i, _)| i)
        .collect();
    for &i in &jumps {
        keep[i] = false;
    }
    let kept = (0..entries.len()).filter(|&i| keep[i]).collect();
    Ok(Removal {
        table: table.retain(&keep),
        chains: removed,
        jumps: jumps.len(),
        kept,
    })
}
