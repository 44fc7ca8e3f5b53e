//! A strict in-memory dataplane: the kernel's errnos (via [`Observed::apply`]), every
//! operation recorded, and failures injectable.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use netlink_ipvs::Family;

use super::{
    preview_leftovers, remove_leftovers, ApplyReport, Dataplane, LeftoverBackend, LeftoverReport,
    TableRead,
};
use super::{SetBackend, SetDestroy};
use crate::error::{Errno, Error};
use crate::plan::kube_proxy_leftovers::{Removal, XtRuleset};
use crate::plan::PacketRules;
use crate::reconcile::{ConntrackFilter, Observed, Op};

/// Strict recording fake.
#[derive(Debug, Default)]
pub struct FakeDataplane {
    /// What the "kernel" has.
    pub state: Observed,
    /// Every operation applied, successful or not, in order.
    pub log: Vec<Op>,
    /// Conntrack flushes performed.
    pub flushed: Vec<ConntrackFilter>,
    /// Operations that fail with the given errno (for failure tests).
    pub fail: Vec<(Op, Errno)>,
    /// The packet rules last programmed (the "table"), as the kernel dataplane would write them.
    pub packet_rules: Option<PacketRules>,
    /// How many times packet rules were written (unchanged rules are not rewritten).
    pub packet_rule_writes: usize,
    /// The node's local addresses, handed out once by the next
    /// [`Dataplane::local_addresses`] (as a change notification would).
    pub local_addresses: Option<Vec<std::net::IpAddr>>,
    /// kube-proxy's leftovers (and everyone else's rules and sets) on the "node".
    pub leftovers: FakeLeftovers,
}

/// The iptables rules and ipsets the fake node holds.
#[derive(Debug, Default)]
pub struct FakeLeftovers {
    /// The iptables-nft backend.
    pub nft: FakeXtables,
    /// The ipsets.
    pub sets: FakeIpsets,
    /// How many removal passes ran.
    pub passes: usize,
}

/// A strict iptables backend: removing a rule or chain it does not hold, or a chain that is
/// still jumped to, fails as the kernel does (`ENOENT`, `EBUSY`) and changes nothing.
#[derive(Debug, Default)]
pub struct FakeXtables {
    /// Per family.
    pub rulesets: BTreeMap<Family, XtRuleset>,
    /// Every removal applied, in order.
    pub removals: Vec<(Family, Removal)>,
}

/// Ipsets: names, and those a rule references (destroying one answers `InUse`).
#[derive(Debug, Default)]
pub struct FakeIpsets {
    /// Every set.
    pub names: Vec<String>,
    /// Sets referenced by a rule.
    pub in_use: Vec<String>,
}

const EBUSY: Errno = Errno(16);

impl LeftoverBackend for FakeXtables {
    fn name(&self) -> &'static str {
        "iptables-nft"
    }

    fn read(&mut self, family: Family) -> Result<XtRuleset, Error> {
        Ok(self.rulesets.get(&family).cloned().unwrap_or_default())
    }

    fn remove(&mut self, family: Family, removal: &Removal) -> Result<(), Error> {
        let refused = |what: String, errno| Err(Error::Kernel { op: what, errno });
        let mut ruleset = self.rulesets.get(&family).cloned().unwrap_or_default();
        for rule in &removal.rules {
            let chain = ruleset
                .chains
                .iter_mut()
                .find(|c| c.table == rule.table && c.name == rule.chain);
            let Some(chain) = chain.filter(|c| c.rules.iter().any(|r| r.handle == rule.handle))
            else {
                return refused(
                    format!(
                        "delete rule {} {} handle {}",
                        rule.table, rule.chain, rule.handle
                    ),
                    Errno::ENOENT,
                );
            };
            chain.rules.retain(|r| r.handle != rule.handle);
        }
        for gone in &removal.chains {
            let Some(at) = ruleset
                .chains
                .iter()
                .position(|c| c.table == gone.table && c.name == gone.name)
            else {
                return refused(format!("delete chain {gone}"), Errno::ENOENT);
            };
            ruleset.chains.remove(at);
        }
        let jumped_to = ruleset.chains.iter().any(|c| {
            c.rules.iter().any(|r| {
                removal.chains.iter().any(|gone| {
                    gone.table == c.table && r.target.as_deref() == Some(gone.name.as_str())
                })
            })
        });
        if jumped_to {
            return refused("delete chain still jumped to".to_owned(), EBUSY);
        }
        self.rulesets.insert(family, ruleset);
        self.removals.push((family, removal.clone()));
        Ok(())
    }
}

impl SetBackend for FakeIpsets {
    fn list(&mut self) -> Result<Vec<String>, Error> {
        Ok(self.names.clone())
    }

    fn destroy(&mut self, name: &str) -> Result<SetDestroy, Error> {
        if self.in_use.iter().any(|n| n == name) {
            return Ok(SetDestroy::InUse);
        }
        let before = self.names.len();
        self.names.retain(|n| n != name);
        Ok(if self.names.len() < before {
            SetDestroy::Destroyed
        } else {
            SetDestroy::Absent
        })
    }
}

impl FakeDataplane {
    /// A fake with this initial state (e.g. what a previous run left).
    pub fn with_state(state: Observed) -> Self {
        Self {
            state,
            ..Self::default()
        }
    }
}

impl Dataplane for FakeDataplane {
    fn observe(&mut self) -> Result<Observed, Error> {
        Ok(self.state.clone())
    }

    /// The table as it is now, handed over when the read thread runs.
    fn table_read(&mut self) -> Result<Option<TableRead>, Error> {
        let table = self.state.ipvs.clone();
        Ok(Some(Box::new(move || Ok(table))))
    }

    fn observe_addresses(&mut self) -> Result<BTreeSet<IpAddr>, Error> {
        Ok(self.state.addresses.clone())
    }

    fn apply(&mut self, ops: &[Op]) -> ApplyReport {
        let results = ops
            .iter()
            .map(|op| {
                self.log.push(op.clone());
                let injected = self.fail.iter().find(|(o, _)| o == op).map(|(_, e)| *e);
                let result = match injected {
                    Some(errno) => Err(errno),
                    None => self.state.apply(op),
                };
                if let (Ok(()), Op::FlushConntrack(filter)) = (&result, op) {
                    self.flushed.push(*filter);
                }
                result.map_err(|errno| Error::Kernel {
                    op: op.to_string(),
                    errno,
                })
            })
            .collect();
        ApplyReport { results }
    }

    fn program_packet_rules(&mut self, rules: &PacketRules) -> Result<bool, Error> {
        if self.packet_rules.as_ref() == Some(rules) {
            return Ok(false);
        }
        self.packet_rules = Some(rules.clone());
        self.packet_rule_writes += 1;
        Ok(true)
    }

    fn local_addresses(&mut self) -> Result<Option<Vec<std::net::IpAddr>>, Error> {
        Ok(self.local_addresses.take())
    }

    fn remove_kube_proxy_leftovers(&mut self) -> LeftoverReport {
        let leftovers = &mut self.leftovers;
        leftovers.passes += 1;
        remove_leftovers(&mut [&mut leftovers.nft], Some(&mut leftovers.sets))
    }

    fn preview_kube_proxy_leftovers(&mut self) -> LeftoverReport {
        let leftovers = &mut self.leftovers;
        preview_leftovers(&mut [&mut leftovers.nft], Some(&mut leftovers.sets))
    }
}
