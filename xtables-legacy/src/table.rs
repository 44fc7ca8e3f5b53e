//! A legacy table as the kernel hands it out and takes it back: the `ipt_getinfo` header and the
//! entry blob of `IPT_SO_GET_ENTRIES`, one [`Entry`] per `ipt_entry`/`ip6t_entry`.
//!
//! Entries keep their bytes exactly as read (matches, targets, counters); only the 4-byte verdict of
//! a standard target is ever rewritten, so a parsed table encodes back to the same bytes.
//!
//! Layout facts (uapi `x_tables.h`, `ip_tables.h`, `ip6_tables.h`, x86_64, native endian):
//! `ipt_entry` is 112 bytes (`target_offset` at 88, `next_offset` at 90, `ip.flags` at 82),
//! `ip6t_entry` 168 (140, 142, `ipv6.flags` at 131); `xt_entry_target` is 32 bytes (`u16` size,
//! 29-byte name, revision), followed by the standard target's `int verdict` or the error target's
//! 30-byte chain name. A verdict `>= 0` is the byte offset of the entry to jump to (libiptc's
//! `iptcc_compile_rule`: a user chain's head offset plus the size of its ERROR entry, i.e. the
//! chain's first rule; or, for a rule without target, the next entry); a negative one is
//! `-NF_x - 1` (`XT_RETURN` = -5).

use std::ops::Range;

use netlink_base::Family;

use crate::Error;

/// Netfilter hooks (`NF_INET_NUMHOOKS`).
pub const HOOKS: usize = 5;
/// Built-in chain names, by hook number.
pub const HOOK_NAMES: [&str; HOOKS] = ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"];
/// `XT_TABLE_MAXNAMELEN`.
pub(crate) const TABLE_NAME_LEN: usize = 32;
/// `XT_FUNCTION_MAXNAMELEN` - 1: the room for a target's name in `xt_entry_target`.
const TARGET_NAME_LEN: usize = 29;
/// The room for a chain name in `xt_error_target`.
pub(crate) const CHAIN_NAME_LEN: usize = 30;
/// `sizeof(struct ipt_getinfo)` (= `ip6t_getinfo`).
pub const INFO_LEN: usize = 84;
/// `sizeof(struct ipt_replace)` (= `ip6t_replace`): the header before the entries.
pub(crate) const REPLACE_HEADER_LEN: usize = 96;
/// Where `ipt_replace.counters` (a user pointer) sits in the replace header.
pub(crate) const REPLACE_COUNTERS_POINTER: usize = 88;
/// `sizeof(struct xt_entry_target)`.
const TARGET_HEADER_LEN: usize = 32;
/// `XT_ERROR_TARGET`: the target of a user chain's head and of the table's last entry.
const ERROR_TARGET: &str = "ERROR";

/// Where an entry's fields sit, per family.
struct EntryLayout {
    header: usize,
    target_offset: usize,
}

const fn layout(family: Family) -> EntryLayout {
    match family {
        Family::V4 => EntryLayout {
            header: 112,
            target_offset: 88,
        },
        Family::V6 => EntryLayout {
            header: 168,
            target_offset: 140,
        },
    }
}

/// What `IPT_SO_GET_INFO` answers: the table's name, hooks, and the size of its entry blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    /// `filter`, `nat`, `mangle`, `raw`, `security`.
    pub name: String,
    /// Bit `h` set when hook `h` has a built-in chain.
    pub valid_hooks: u32,
    /// Offset of each built-in chain's first entry.
    pub hook_entry: [u32; HOOKS],
    /// Offset of each built-in chain's policy entry.
    pub underflow: [u32; HOOKS],
    /// Number of entries.
    pub num_entries: u32,
    /// Size of the entry blob in bytes.
    pub size: u32,
}

impl TableInfo {
    /// Parses an `ipt_getinfo`.
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        need("ipt_getinfo", bytes, 0, INFO_LEN)?;
        let words =
            |at: usize| -> [u32; HOOKS] { std::array::from_fn(|h| u32_at(bytes, at + 4 * h)) };
        Ok(Self {
            name: c_string(&bytes[..TABLE_NAME_LEN]),
            valid_hooks: u32_at(bytes, 32),
            hook_entry: words(36),
            underflow: words(56),
            num_entries: u32_at(bytes, 76),
            size: u32_at(bytes, 80),
        })
    }

    /// Encodes an `ipt_getinfo` (also the request for it, which carries only the name).
    pub fn encode(&self) -> Result<[u8; INFO_LEN], Error> {
        let mut out = [0u8; INFO_LEN];
        put_name(&mut out[..TABLE_NAME_LEN], &self.name)?;
        out[32..36].copy_from_slice(&self.valid_hooks.to_ne_bytes());
        for h in 0..HOOKS {
            out[36 + 4 * h..40 + 4 * h].copy_from_slice(&self.hook_entry[h].to_ne_bytes());
            out[56 + 4 * h..60 + 4 * h].copy_from_slice(&self.underflow[h].to_ne_bytes());
        }
        out[76..80].copy_from_slice(&self.num_entries.to_ne_bytes());
        out[80..84].copy_from_slice(&self.size.to_ne_bytes());
        Ok(out)
    }

    /// Whether hook `h` has a built-in chain.
    pub fn has_hook(&self, h: usize) -> bool {
        self.valid_hooks & (1 << h) != 0
    }
}

/// What a standard target does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Continue at the entry at this byte offset (a jump or goto to a chain, or a fallthrough).
    Jump(u32),
    /// A built-in verdict: `-NF_x - 1` (ACCEPT -2, DROP -1, QUEUE -4, RETURN -5).
    Builtin(i32),
}

/// An entry's target, as far as chain structure needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The standard target (empty name): a verdict.
    Standard(Verdict),
    /// `ERROR`: a user chain's head (the chain's name) or the table's end (`ERROR`).
    Error(String),
    /// Any extension target (`MARK`, `MASQUERADE`, `REJECT`, …), kept as bytes.
    Other(String),
}

/// One `ipt_entry`/`ip6t_entry`: its bytes and its parsed target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Byte offset in the table's blob.
    pub offset: u32,
    /// The entry's bytes (header, matches, target), as read.
    bytes: Vec<u8>,
    /// Its target.
    pub target: Target,
    /// Where the verdict of a standard target sits in `bytes`.
    verdict_at: usize,
}

impl Entry {
    /// The entry's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Points a standard target's jump at `offset`.
    fn set_jump(&mut self, offset: u32) {
        // Only called on `Target::Standard(Verdict::Jump(_))`, whose verdict `parse` located.
        self.bytes[self.verdict_at..self.verdict_at + 4].copy_from_slice(&offset.to_ne_bytes());
        self.target = Target::Standard(Verdict::Jump(offset));
    }
}

/// A chain: its name and the entries it spans (a user chain's ERROR head and RETURN tail included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// The chain's name.
    pub name: String,
    /// Whether it is a built-in chain (hook entry point).
    pub builtin: bool,
    /// Indices into [`Table::entries`].
    pub entries: Range<usize>,
}

impl Chain {
    /// Indices of the chain's rules: without a user chain's ERROR head, and without the policy
    /// (built-in) or RETURN (user chain) entry that closes every chain.
    pub fn rules(&self) -> Range<usize> {
        let first = self.entries.start + usize::from(!self.builtin);
        first..self.entries.end.saturating_sub(1).max(first)
    }
}

/// A whole legacy table of one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// IPv4 (`ip_tables`) or IPv6 (`ip6_tables`).
    pub family: Family,
    /// Header; `num_entries` and `size` always match `entries`.
    info: TableInfo,
    entries: Vec<Entry>,
}

impl Table {
    /// Parses the entry blob of `IPT_SO_GET_ENTRIES` under the header of `IPT_SO_GET_INFO`.
    pub fn parse(family: Family, info: TableInfo, blob: &[u8]) -> Result<Self, Error> {
        let layout = layout(family);
        let mut entries = Vec::new();
        let mut at = 0usize;
        while at < blob.len() {
            need("entry", blob, at, layout.header)?;
            let offset = at as u32;
            let target_offset = u16_at(blob, at + layout.target_offset);
            let next_offset = u16_at(blob, at + layout.target_offset + 2);
            let (t, n) = (usize::from(target_offset), usize::from(next_offset));
            if t < layout.header || t + TARGET_HEADER_LEN > n || at + n > blob.len() {
                return Err(Error::BadEntryBounds {
                    offset,
                    target_offset,
                    next_offset,
                });
            }
            let bytes = blob[at..at + n].to_vec();
            let name = c_string(&bytes[t + 2..t + 2 + TARGET_NAME_LEN]);
            let payload = &bytes[t + TARGET_HEADER_LEN..];
            let target = if name.is_empty() {
                need("standard target", payload, 0, 4)?;
                let verdict = i32::from_ne_bytes([payload[0], payload[1], payload[2], payload[3]]);
                Target::Standard(match u32::try_from(verdict) {
                    Ok(jump) => Verdict::Jump(jump),
                    Err(_) => Verdict::Builtin(verdict),
                })
            } else if name == ERROR_TARGET {
                need("error target", payload, 0, CHAIN_NAME_LEN)?;
                Target::Error(c_string(&payload[..CHAIN_NAME_LEN]))
            } else {
                Target::Other(name)
            };
            entries.push(Entry {
                offset,
                bytes,
                target,
                verdict_at: t + TARGET_HEADER_LEN,
            });
            at += n;
        }
        let table = Self {
            family,
            info,
            entries,
        };
        table.check()?;
        Ok(table)
    }

    /// The table's structural invariants: the announced count and size, an ERROR entry at the end,
    /// every hook entry, underflow and jump on an entry boundary.
    fn check(&self) -> Result<(), Error> {
        if self.info.num_entries as usize != self.entries.len() {
            return Err(Error::EntryCount {
                table: self.info.name.clone(),
                announced: self.info.num_entries,
                found: self.entries.len(),
            });
        }
        if self.blob_len() != self.info.size {
            return Err(Error::Truncated {
                what: "entry blob",
                offset: self.blob_len() as usize,
                needed: self.info.size as usize,
                available: self.blob_len() as usize,
            });
        }
        if !matches!(self.entries.last(), Some(Entry { target: Target::Error(end), .. }) if end == ERROR_TARGET)
        {
            return Err(Error::MissingTableEnd {
                table: self.info.name.clone(),
            });
        }
        for h in (0..HOOKS).filter(|&h| self.info.has_hook(h)) {
            self.index_of("hook entry", self.info.hook_entry[h])?;
            self.index_of("underflow", self.info.underflow[h])?;
        }
        for entry in &self.entries {
            if let Target::Standard(Verdict::Jump(to)) = entry.target {
                self.index_of("jump", to)?;
            }
        }
        Ok(())
    }

    /// The table's name.
    pub fn name(&self) -> &str {
        &self.info.name
    }

    /// The header, with `num_entries` and `size` of these entries.
    pub fn info(&self) -> &TableInfo {
        &self.info
    }

    /// The entries, in table order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The entry blob: every entry's bytes, in order.
    pub fn encode(&self) -> Vec<u8> {
        self.entries
            .iter()
            .flat_map(|e| e.bytes.iter().copied())
            .collect()
    }

    /// An `ipt_replace` carrying this table, asking for `num_counters` old counters back. The
    /// counters pointer (at byte 88) is left 0 for the caller to fill.
    pub fn encode_replace(&self, num_counters: u32) -> Result<Vec<u8>, Error> {
        let mut out = vec![0u8; REPLACE_HEADER_LEN];
        put_name(&mut out[..TABLE_NAME_LEN], &self.info.name)?;
        out[32..36].copy_from_slice(&self.info.valid_hooks.to_ne_bytes());
        out[36..40].copy_from_slice(&self.info.num_entries.to_ne_bytes());
        out[40..44].copy_from_slice(&self.info.size.to_ne_bytes());
        for h in 0..HOOKS {
            out[44 + 4 * h..48 + 4 * h].copy_from_slice(&self.info.hook_entry[h].to_ne_bytes());
            out[64 + 4 * h..68 + 4 * h].copy_from_slice(&self.info.underflow[h].to_ne_bytes());
        }
        out[84..88].copy_from_slice(&num_counters.to_ne_bytes());
        out.extend(self.encode());
        Ok(out)
    }

    /// The chains in table order: built-in chains from the hook entries, user chains from their
    /// ERROR heads; each spans the entries up to the next chain (or the table's end).
    pub fn chains(&self) -> Vec<Chain> {
        let mut starts: Vec<(usize, String, bool)> = (0..HOOKS)
            .filter(|&h| self.info.has_hook(h))
            .filter_map(|h| {
                let index = self.index_of("hook entry", self.info.hook_entry[h]).ok()?;
                Some((index, HOOK_NAMES[h].to_owned(), true))
            })
            .collect();
        let end = self.entries.len().saturating_sub(1);
        starts.extend(self.entries[..end].iter().enumerate().filter_map(
            |(i, e)| match &e.target {
                Target::Error(name) => Some((i, name.clone(), false)),
                _ => None,
            },
        ));
        starts.sort_by_key(|(i, _, _)| *i);
        let bounds: Vec<usize> = starts
            .iter()
            .map(|(i, _, _)| *i)
            .skip(1)
            .chain([end])
            .collect();
        starts
            .into_iter()
            .zip(bounds)
            .map(|((start, name, builtin), stop)| Chain {
                name,
                builtin,
                entries: start..stop,
            })
            .collect()
    }

    /// The user chain `entry`'s standard target jumps or goes to (`None` for a built-in verdict
    /// or a fallthrough to the next entry): a jump lands on the entry after the chain's ERROR head.
    pub fn jump_target(&self, entry: &Entry) -> Option<&str> {
        let Target::Standard(Verdict::Jump(to)) = entry.target else {
            return None;
        };
        let landing = self.index_of("jump", to).ok()?;
        match &self.entries[landing.checked_sub(1)?].target {
            Target::Error(name) => Some(name),
            _ => None,
        }
    }

    /// Index of the entry starting at byte `offset`.
    fn index_of(&self, what: &'static str, offset: u32) -> Result<usize, Error> {
        self.entries
            .binary_search_by_key(&offset, |e| e.offset)
            .map_err(|_| Error::NotAnEntry { what, offset })
    }

    fn blob_len(&self) -> u32 {
        self.entries
            .last()
            .map_or(0, |e| e.offset + e.bytes.len() as u32)
    }

    /// A table of the kept entries (`keep[i]` for old entry `i`), every jump, hook entry and
    /// underflow moved to the first kept entry at or after its old target.
    pub(crate) fn retain(&self, keep: &[bool]) -> Self {
        // New offset of each kept entry, then, walking backwards, the new offset of the first kept
        // entry at or after each old entry (the table's ERROR end is always kept).
        let mut size = 0u32;
        let mut new_offset = Vec::with_capacity(self.entries.len());
        for (entry, kept) in self.entries.iter().zip(keep) {
            new_offset.push(size);
            if *kept {
                size += entry.bytes.len() as u32;
            }
        }
        let mut forward = vec![size; self.entries.len()];
        let mut following = size;
        for i in (0..self.entries.len()).rev() {
            if keep[i] {
                following = new_offset[i];
            }
            forward[i] = following;
        }
        let moved = |offset: u32| -> u32 {
            // `check` proved every jump, hook entry and underflow is an entry's offset.
            self.index_of("jump", offset).map_or(size, |i| forward[i])
        };
        let entries: Vec<Entry> = self
            .entries
            .iter()
            .zip(keep)
            .zip(&new_offset)
            .filter(|((_, kept), _)| **kept)
            .map(|((entry, _), offset)| {
                let mut entry = entry.clone();
                entry.offset = *offset;
                if let Target::Standard(Verdict::Jump(to)) = entry.target {
                    entry.set_jump(moved(to));
                }
                entry
            })
            .collect();
        let mut info = self.info.clone();
        for h in (0..HOOKS).filter(|&h| self.info.has_hook(h)) {
            info.hook_entry[h] = moved(info.hook_entry[h]);
            info.underflow[h] = moved(info.underflow[h]);
        }
        info.num_entries = entries.len() as u32;
        info.size = size;
        Self {
            family: self.family,
            info,
            entries,
        }
    }
}

fn need(what: &'static str, bytes: &[u8], offset: usize, needed: usize) -> Result<(), Error> {
    let available = bytes.len().saturating_sub(offset);
    if available < needed {
        return Err(Error::Truncated {
            what,
            offset,
            needed,
            available,
        });
    }
    Ok(())
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([bytes[at], bytes[at + 1]])
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// A NUL-terminated (or full-width) name.
fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// Writes `name` NUL-terminated into `field` (all zero before).
fn put_name(field: &mut [u8], name: &str) -> Result<(), Error> {
    if name.len() >= field.len() {
        return Err(Error::NameTooLong {
            name: name.to_owned(),
            max: field.len() - 1,
        });
    }
    field[..name.len()].copy_from_slice(name.as_bytes());
    Ok(())
}
