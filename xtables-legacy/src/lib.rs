//! iptables-legacy tables without the `iptables` binary: read a table with
//! `IPT_SO_GET_INFO`/`IPT_SO_GET_ENTRIES` (IPv6: `IP6T_SO_*`), remove user chains and the rules that
//! jump to them as a plain function over the entry blob, write it back with `IPT_SO_SET_REPLACE`
//! and carry the kept rules' counters over with `IPT_SO_SET_ADD_COUNTERS` — what libiptc does.
//!
//! The model ([`Table`], [`remove_chains`]) is pure and tested on byte fixtures taken from real
//! `iptables-legacy-restore` tables; [`LegacyTables`] is the thin socket edge.

#![deny(unsafe_code)]

mod error;
#[expect(
    unsafe_code,
    reason = "the socket, getsockopt, setsockopt and flock calls of the edge"
)]
mod handle;
mod remove;
mod table;
#[cfg(test)]
mod tests;

pub use error::Error;
pub use handle::{existing_tables, LegacyTables, RemovalReport, MAX_ATTEMPTS, XTABLES_LOCK};
pub use netlink_base::Family;
pub use remove::{remove_chains, Removal};
pub use table::{Chain, Entry, Table, TableInfo, Target, Verdict, HOOKS, HOOK_NAMES, INFO_LEN};
