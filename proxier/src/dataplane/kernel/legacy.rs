//! iptables-legacy's side of removing kube-proxy's leftovers: the x_tables tables read and
//! replaced through `IPT_SO_*` socket options by the `xtables-legacy` crate, as libiptc does,
//! without executing a binary (ARCHITECTURE.md rule 1).

use netlink_ipvs::Family;
use xtables_legacy::{existing_tables, LegacyTables, Table};

use crate::dataplane::LeftoverBackend;
use crate::error::Error;
use crate::plan::kube_proxy_leftovers::{Removal, XtChain, XtRule, XtRuleset};

/// The tables kube-proxy writes. Only those that exist are read: reading a legacy table by
/// name makes the kernel create it.
const TABLES: &[&str] = &["filter", "nat", "mangle"];

/// iptables-legacy (x_tables) in the calling thread's network namespace.
#[derive(Debug, Default, Clone, Copy)]
pub struct IptablesLegacy;

fn xtables(operation: &str) -> impl FnOnce(xtables_legacy::Error) -> Error + '_ {
    move |source| Error::Xtables {
        operation: operation.to_owned(),
        source,
    }
}

/// The chains of one legacy table as the leftover selection reads them: each rule's 1-based
/// position in its chain (iptables' rule number) and the user chain it jumps or goes to.
pub fn legacy_chains(table: &Table) -> Vec<XtChain> {
    table
        .chains()
        .into_iter()
        .map(|chain| XtChain {
            table: table.name().to_owned(),
            rules: table.entries()[chain.rules()]
                .iter()
                .zip(1..)
                .map(|(entry, handle)| XtRule {
                    handle,
                    target: table.jump_target(entry).map(str::to_owned),
                })
                .collect(),
            name: chain.name,
        })
        .collect()
}

impl LeftoverBackend for IptablesLegacy {
    fn name(&self) -> &'static str {
        "iptables-legacy"
    }

    fn read(&mut self, family: Family) -> Result<XtRuleset, Error> {
        let existing = existing_tables(family).map_err(xtables("list tables"))?;
        let mut ruleset = XtRuleset::default();
        let names: Vec<&str> = TABLES
            .iter()
            .copied()
            .filter(|t| existing.iter().any(|e| e == t))
            .collect();
        if names.is_empty() {
            return Ok(ruleset);
        }
        let tables = LegacyTables::open(family).map_err(xtables("open"))?;
        for name in names {
            let table = tables.read(name).map_err(xtables("read"))?;
            ruleset.chains.extend(legacy_chains(&table));
        }
        Ok(ruleset)
    }

    /// Per table, one replace without `removal`'s chains and every rule jumping or going to
    /// them, re-read under iptables' lock (rule positions from `read` are not trusted: the
    /// table may have changed since).
    fn remove(&mut self, family: Family, removal: &Removal) -> Result<(), Error> {
        let tables = LegacyTables::open(family).map_err(xtables("open"))?;
        let mut names: Vec<&str> = removal.chains.iter().map(|c| c.table.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        for table in names {
            let chains: Vec<&str> = removal
                .chains
                .iter()
                .filter(|c| c.table == table)
                .map(|c| c.name.as_str())
                .collect();
            tables
                .remove_chains(table, &chains)
                .map_err(xtables("replace"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code panics on failure")]

    use xtables_legacy::{Table, TableInfo, INFO_LEN};

    use super::*;
    use crate::plan::kube_proxy_leftovers::select;

    /// A table captured from `iptables-legacy-restore` (xtables-legacy's byte fixtures).
    fn fixture(family: Family, name: &str) -> Table {
        let path = format!(
            "{}/../xtables-legacy/tests/fixtures/{name}.bin",
            env!("CARGO_MANIFEST_DIR")
        );
        let bytes = std::fs::read(&path).unwrap();
        let info = TableInfo::parse(&bytes[..INFO_LEN]).unwrap();
        Table::parse(family, info, &bytes[INFO_LEN..]).unwrap()
    }

    #[test]
    fn kube_proxy_leftovers_are_recognised_in_real_legacy_tables() {
        let mut ruleset = XtRuleset::default();
        ruleset
            .chains
            .extend(legacy_chains(&fixture(Family::V4, "v4-filter")));
        ruleset
            .chains
            .extend(legacy_chains(&fixture(Family::V4, "v4-nat")));
        let removal = select(&ruleset, Family::V4);
        let chains: Vec<String> = removal.chains.iter().map(|c| c.to_string()).collect();
        assert_eq!(
            chains,
            [
                "filter KUBE-FORWARD",
                "filter KUBE-IPVS-FILTER",
                "filter KUBE-IPVS-OUT-FILTER",
                "filter KUBE-NODE-PORT",
                "filter KUBE-PROXY-FIREWALL",
                "filter KUBE-SOURCE-RANGES-FIREWALL",
                "nat KUBE-LOAD-BALANCER",
                "nat KUBE-MARK-MASQ",
                "nat KUBE-NODE-PORT",
                "nat KUBE-POSTROUTING",
                "nat KUBE-SERVICES",
            ]
        );
        let rules: Vec<(String, u64, String)> = removal
            .rules
            .iter()
            .map(|r| (r.chain.clone(), r.handle, r.target.clone()))
            .collect();
        let rule =
            |chain: &str, handle, target: &str| (chain.to_owned(), handle, target.to_owned());
        assert_eq!(
            rules,
            [
                rule("INPUT", 1, "KUBE-IPVS-FILTER"),
                rule("INPUT", 2, "KUBE-PROXY-FIREWALL"),
                rule("INPUT", 3, "KUBE-NODE-PORT"),
                rule("FORWARD", 1, "KUBE-PROXY-FIREWALL"),
                rule("FORWARD", 2, "KUBE-FORWARD"),
                rule("FORWARD", 3, "KUBE-FORWARD"),
                rule("OUTPUT", 1, "KUBE-IPVS-OUT-FILTER"),
                rule("PREROUTING", 1, "KUBE-SERVICES"),
                rule("OUTPUT", 1, "KUBE-SERVICES"),
                rule("POSTROUTING", 1, "KUBE-POSTROUTING"),
            ]
        );
        let kept: Vec<String> = removal.kept.iter().map(|c| c.to_string()).collect();
        assert_eq!(kept, ["filter KUBE-FIREWALL"]);
    }
}
