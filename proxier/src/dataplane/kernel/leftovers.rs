//! The kernel's side of removing kube-proxy's leftovers: iptables-nft's tables (`ip` and `ip6`
//! families, never `inet`, where our own table is) over nf_tables netlink, and ipsets over
//! nfnetlink. No binary is executed (ARCHITECTURE.md rule 1).

use netlink_ipvs::Family;
use netlink_nftables::attr::{msg, NFPROTO_IPV4, NFPROTO_IPV6};
use netlink_nftables::ipset::{Destroyed, SetName};
use netlink_nftables::{NftMessage, NftReply, NftablesError, NftablesHandle};

use crate::dataplane::{LeftoverBackend, SetBackend, SetDestroy};
use crate::error::Error;
use crate::plan::kube_proxy_leftovers::{Removal, XtChain, XtRule, XtRuleset};

/// `EINVAL`: nfnetlink's answer when the ipset subsystem is not in the kernel.
const EINVAL: i32 = 22;

/// How often a set found in use is asked again: nf_tables releases a deleted rule's
/// references (an `xt_set` match) after its transaction, from a work queue, so a set freed
/// by our own removal may still be held for a moment.
const IN_USE_ATTEMPTS: u32 = 10;
/// The pause between those attempts.
const IN_USE_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

/// iptables-nft: the `ip`/`ip6` tables iptables-nft writes, read and changed over nf_tables
/// netlink.
pub struct IptablesNft<'a>(pub &'a mut NftablesHandle);

fn nfproto(family: Family) -> u8 {
    match family {
        Family::V4 => NFPROTO_IPV4,
        Family::V6 => NFPROTO_IPV6,
    }
}

/// The transaction that removes `removal` from `family`: the rules jumping into the chains,
/// then every chain flushed, then every chain deleted (a flushed chain no longer holds the
/// others, so the order among chains does not matter).
pub fn removal_messages(family: Family, removal: &Removal) -> Vec<NftMessage> {
    let family = nfproto(family);
    let rules = removal
        .rules
        .iter()
        .map(|r| NftMessage::delete_rule(family, &r.table, &r.chain, r.handle));
    let flushes = removal
        .chains
        .iter()
        .map(|c| NftMessage::flush_chain(family, &c.table, &c.name));
    let deletions = removal
        .chains
        .iter()
        .map(|c| NftMessage::delete_chain(family, &c.table, &c.name));
    rules.chain(flushes).chain(deletions).collect()
}

/// Builds the ruleset from a chain dump and a rule dump of one family.
pub fn ruleset(chains: Vec<NftReply>, rules: Vec<NftReply>) -> XtRuleset {
    let mut ruleset = XtRuleset {
        chains: chains
            .into_iter()
            .filter_map(|reply| match reply {
                NftReply::Chain(c) => Some(XtChain {
                    table: c.table,
                    name: c.name,
                    rules: vec![],
                }),
                _ => None,
            })
            .collect(),
    };
    for reply in rules {
        let NftReply::Rule(rule) = reply else {
            continue;
        };
        let chain = ruleset
            .chains
            .iter_mut()
            .find(|c| c.table == rule.table && c.name == rule.chain);
        if let Some(chain) = chain {
            chain.rules.push(XtRule {
                handle: rule.handle,
                target: rule.target().map(str::to_owned),
            });
        }
    }
    ruleset
}

impl LeftoverBackend for IptablesNft<'_> {
    fn name(&self) -> &'static str {
        "iptables-nft"
    }

    fn read(&mut self, family: Family) -> Result<XtRuleset, Error> {
        let chains = self.0.dump(msg::GETCHAIN, nfproto(family))?;
        let rules = self.0.dump(msg::GETRULE, nfproto(family))?;
        Ok(ruleset(chains, rules))
    }

    fn remove(&mut self, family: Family, removal: &Removal) -> Result<(), Error> {
        Ok(self.0.transaction(&removal_messages(family, removal))?)
    }
}

/// The kernel's ipsets.
pub struct KernelIpsets(pub NftablesHandle);

impl SetBackend for KernelIpsets {
    fn list(&mut self) -> Result<Vec<String>, Error> {
        match self.0.ipset_names() {
            // No ipset subsystem in this kernel: no sets.
            Err(NftablesError::Refused { errno: EINVAL, .. }) => Ok(vec![]),
            other => Ok(other?),
        }
    }

    fn destroy(&mut self, name: &str) -> Result<SetDestroy, Error> {
        // A name the kernel listed is valid; anything else names no set.
        let Some(set) = SetName::new(name) else {
            return Ok(SetDestroy::Absent);
        };
        for attempt in 1..=IN_USE_ATTEMPTS {
            match self.0.destroy_ipset(&set) {
                Ok(Destroyed::Destroyed) => return Ok(SetDestroy::Destroyed),
                Ok(Destroyed::Absent) => return Ok(SetDestroy::Absent),
                Err(NftablesError::SetInUse { .. }) if attempt < IN_USE_ATTEMPTS => {
                    std::thread::sleep(IN_USE_PAUSE);
                }
                Err(NftablesError::SetInUse { .. }) => return Ok(SetDestroy::InUse),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(SetDestroy::InUse)
    }
}
