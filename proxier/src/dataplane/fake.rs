//! A strict in-memory dataplane: the kernel's errnos (via [`Observed::apply`]), every
//! operation recorded, and failures injectable.

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::{ApplyReport, Dataplane, TableRead};
use crate::error::{Errno, Error};
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
}
