//! Removing kube-proxy's leftovers (its iptables chains, the jumps into them, its ipsets)
//! once proxier's own table is in place: the edge each iptables backend implements
//! ([`LeftoverBackend`]: iptables-nft over nf_tables netlink, iptables-legacy over x_tables
//! sockopts), the one for ipsets ([`SetBackend`]), and [`remove_leftovers`], which selects
//! by [`kube_proxy_leftovers`] and removes rules before sets (a set referenced by a rule
//! cannot be destroyed).

use netlink_ipvs::Family;

use crate::error::Error;
use crate::plan::kube_proxy_leftovers::{self, Removal, XtRuleset};

/// One iptables backend kube-proxy may have written through. Reads and removes; it decides
/// nothing ([`kube_proxy_leftovers::select`] does).
pub trait LeftoverBackend {
    /// `iptables-nft` or `iptables-legacy` (log lines, the report).
    fn name(&self) -> &'static str;
    /// The chains and rules of `family`'s `filter`, `nat` and `mangle` tables (empty when the
    /// backend holds none).
    fn read(&mut self, family: Family) -> Result<XtRuleset, Error>;
    /// Removes `removal` from `family`: its rules, then its chains (flushed, then deleted),
    /// all or nothing where the backend allows it.
    fn remove(&mut self, family: Family, removal: &Removal) -> Result<(), Error>;
}

/// What destroying one ipset did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetDestroy {
    /// Destroyed.
    Destroyed,
    /// A rule still references it (`EBUSY`): kept, reported.
    InUse,
    /// It was already gone.
    Absent,
}

/// The kernel's ipsets (both families share one namespace of names).
pub trait SetBackend {
    /// Every set's name.
    fn list(&mut self) -> Result<Vec<String>, Error>;
    /// Destroys set `name`.
    fn destroy(&mut self, name: &str) -> Result<SetDestroy, Error>;
}

/// What one backend removed from one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendRemoval {
    /// [`LeftoverBackend::name`].
    pub backend: &'static str,
    /// The family.
    pub family: Family,
    /// What was removed (and the `KUBE-*` chains kept).
    pub removal: Removal,
}

/// A step that failed (the others still ran).
#[derive(Debug)]
pub struct LeftoverFailure {
    /// What was being done, e.g. `iptables-nft ipv4: remove`.
    pub step: String,
    /// Why.
    pub error: Error,
}

/// What a removal pass did.
#[derive(Debug, Default)]
pub struct LeftoverReport {
    /// Per backend and family, what was removed (empty removals are left out).
    pub removed: Vec<BackendRemoval>,
    /// kube-proxy's ipsets destroyed.
    pub sets_destroyed: Vec<String>,
    /// kube-proxy's ipsets still referenced by a rule (`EBUSY`), kept.
    pub sets_in_use: Vec<String>,
    /// Other ipsets, kept.
    pub sets_kept: Vec<String>,
    /// `KUBE-*` chains that are not kube-proxy's (kubelet's, …), kept.
    pub chains_kept: Vec<String>,
    /// Steps that failed.
    pub failures: Vec<LeftoverFailure>,
}

impl LeftoverReport {
    /// Rules removed (jumps into kube-proxy's chains; a flushed chain's own rules not counted).
    pub fn rules_removed(&self) -> usize {
        self.removed.iter().map(|r| r.removal.rules.len()).sum()
    }

    /// Chains removed.
    pub fn chains_removed(&self) -> usize {
        self.removed.iter().map(|r| r.removal.chains.len()).sum()
    }

    /// Whether anything was removed.
    pub fn removed_anything(&self) -> bool {
        self.rules_removed() + self.chains_removed() + self.sets_destroyed.len() > 0
    }

    /// One line for the log and the Event: what was removed and what was kept.
    pub fn summary(&self) -> String {
        let chains: Vec<String> = self
            .removed
            .iter()
            .flat_map(|r| {
                r.removal
                    .chains
                    .iter()
                    .map(move |c| format!("{} {} {c}", r.backend, family_name(r.family)))
            })
            .collect();
        format!(
            "removed {} rules jumping to kube-proxy's chains, {} chains [{}], {} ipsets [{}]; kept: chains [{}], ipsets in use [{}], other ipsets [{}]; {} failed",
            self.rules_removed(),
            self.chains_removed(),
            chains.join(", "),
            self.sets_destroyed.len(),
            self.sets_destroyed.join(", "),
            self.chains_kept.join(", "),
            self.sets_in_use.join(", "),
            self.sets_kept.join(", "),
            self.failures.len(),
        )
    }
}

/// `ipv4`/`ipv6` as iptables names the families.
pub fn family_name(family: Family) -> &'static str {
    match family {
        Family::V4 => "ipv4",
        Family::V6 => "ipv6",
    }
}

/// Reads every backend's rulesets (both families), removes kube-proxy's chains and the rules
/// jumping to them, then destroys kube-proxy's ipsets. A failed step is reported and the
/// others still run; running it again on a clean node removes nothing.
pub fn remove_leftovers(
    backends: &mut [&mut dyn LeftoverBackend],
    sets: Option<&mut dyn SetBackend>,
) -> LeftoverReport {
    leftover_pass(backends, sets, true)
}

/// What [`remove_leftovers`] would remove, reading only (`proxier plan --diff`): the report
/// lists as removed and destroyed what a removal pass would remove and destroy.
pub fn preview_leftovers(
    backends: &mut [&mut dyn LeftoverBackend],
    sets: Option<&mut dyn SetBackend>,
) -> LeftoverReport {
    leftover_pass(backends, sets, false)
}

/// [`remove_leftovers`]'s pass; with `remove` false nothing is removed or destroyed.
fn leftover_pass(
    backends: &mut [&mut dyn LeftoverBackend],
    sets: Option<&mut dyn SetBackend>,
    remove: bool,
) -> LeftoverReport {
    let mut report = LeftoverReport::default();
    for backend in backends.iter_mut() {
        for family in [Family::V4, Family::V6] {
            let name = backend.name();
            let step = |what: &str| format!("{name} {}: {what}", family_name(family));
            let ruleset = match backend.read(family) {
                Ok(ruleset) => ruleset,
                Err(error) => {
                    report.failures.push(LeftoverFailure {
                        step: step("read"),
                        error,
                    });
                    continue;
                }
            };
            let removal = kube_proxy_leftovers::select(&ruleset, family);
            report.chains_kept.extend(
                removal
                    .kept
                    .iter()
                    .map(|c| format!("{name} {} {c}", family_name(family))),
            );
            if removal.is_empty() {
                continue;
            }
            let removed = if remove {
                backend.remove(family, &removal)
            } else {
                Ok(())
            };
            match removed {
                Ok(()) => report.removed.push(BackendRemoval {
                    backend: name,
                    family,
                    removal,
                }),
                Err(error) => report.failures.push(LeftoverFailure {
                    step: step("remove"),
                    error,
                }),
            }
        }
    }
    if let Some(sets) = sets {
        match sets.list() {
            Ok(names) => {
                let (theirs, others) = kube_proxy_leftovers::select_sets(&names);
                report.sets_kept = others;
                for name in theirs {
                    let destroyed = if remove {
                        sets.destroy(&name)
                    } else {
                        Ok(SetDestroy::Destroyed)
                    };
                    match destroyed {
                        Ok(SetDestroy::Destroyed) => report.sets_destroyed.push(name),
                        Ok(SetDestroy::InUse) => report.sets_in_use.push(name),
                        Ok(SetDestroy::Absent) => {}
                        Err(error) => report.failures.push(LeftoverFailure {
                            step: format!("ipset: destroy {name}"),
                            error,
                        }),
                    }
                }
            }
            Err(error) => report.failures.push(LeftoverFailure {
                step: "ipset: list".to_owned(),
                error,
            }),
        }
    }
    report
}
