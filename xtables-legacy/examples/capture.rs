//! Captures legacy tables as byte fixtures: `capture DIR v4|v6 TABLE...` writes `DIR/v4-TABLE.bin`,
//! the table's `ipt_getinfo` (84 bytes) followed by its `IPT_SO_GET_ENTRIES` blob, as read from the
//! kernel of the calling network namespace. Needs `CAP_NET_ADMIN`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a capture tool panics on failure"
)]

use netlink_base::Family;
use xtables_legacy::LegacyTables;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (dir, family, tables) = (&args[0], &args[1], &args[2..]);
    let family = if family == "v6" {
        Family::V6
    } else {
        Family::V4
    };
    let handle = LegacyTables::open(family).expect("open");
    for name in tables {
        let table = handle.read(name).expect("read");
        let mut bytes = table.info().encode().expect("info").to_vec();
        bytes.extend(table.encode());
        let path = format!("{dir}/{}-{name}.bin", args[1]);
        std::fs::write(&path, &bytes).expect("write");
        println!(
            "{path}: {} entries, {} bytes",
            table.entries().len(),
            bytes.len()
        );
    }
}
