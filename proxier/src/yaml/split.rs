//! A YAML stream cut into its documents without parsing it, so that a changed file re-parses
//! only the documents whose bytes changed (the file source) and each document is parsed on
//! its own.
//!
//! A line that starts with `---` or `...` followed by a space, a tab or the end of the line
//! is a document marker wherever it stands: the YAML spec forbids such a line inside any
//! scalar (1.2.2, 9.1.4 "forbidden content"), and block content is always indented. So the
//! cut is exact where the stream has no directives (`%` at column 0: they belong to the next
//! document and change how it reads) and no aliases (`*`: the alias budget of [`crate::yaml`]
//! is per text, and would become per document). A text that starts with `{` or `[` (JSON, a
//! flow collection) is not cut either, nor one with a carriage return outside a CR LF pair
//! (YAML reads it as a line break, these lines do not). Those texts are parsed whole.

/// The 64-bit digest of one document's bytes, the key under which its objects are
/// remembered. A leading bare `---` line is left out: the first document of a file usually
/// has none, and reads the same.
///
/// Eight bytes per step, each step a bijection of the state for a given word (odd multiplier)
/// and of the word for a given state, the length mixed in first: two documents of one length
/// that differ in one word never share a digest, and a flip (a few words changed, usually the
/// length too) almost never (2^-64). One multiply per 8 bytes, cheaper than SipHash's rounds:
/// a changed file of 100 Services is hashed whole on every change.
pub(crate) fn digest(document: &str) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let bytes = document
        .strip_prefix("---\n")
        .unwrap_or(document)
        .as_bytes();
    let step = |hash: u64, word: u64| (hash.rotate_left(5) ^ word).wrapping_mul(K);
    let mut hash = (bytes.len() as u64).wrapping_mul(K);
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        // `chunks_exact(8)` hands over 8 bytes: the default is never taken.
        hash = step(
            hash,
            u64::from_le_bytes(word.try_into().unwrap_or_default()),
        );
    }
    let mut tail = [0u8; 8];
    let rest = words.remainder();
    tail[..rest.len()].copy_from_slice(rest);
    hash = step(hash, u64::from_le_bytes(tail));
    // Final avalanche (MurmurHash3's fmix64, a bijection).
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^ (hash >> 33)
}

/// Whether `text` holds a carriage return that is not part of a CR LF pair: YAML reads it as a
/// line break where these lines do not (`...\r)0` is an end marker, then a scalar; found by
/// the `documents` fuzz target).
fn lone_carriage_return(text: &str) -> bool {
    text.split('\r').skip(1).any(|rest| !rest.starts_with('\n'))
}

/// Whether `line` (with its line break) is the marker `marker` (`---` or `...`).
fn is_marker(line: &[u8], marker: &[u8; 3]) -> bool {
    line.starts_with(marker) && matches!(line.get(3), None | Some(b' ' | b'\t' | b'\n' | b'\r'))
}

/// The documents of `text` in order, each with its markers (a `---` line starts a document, a
/// `...` line ends one), covering all of `text`; `None` where cutting is not exact (see the
/// module documentation). A piece may hold no document (blank lines or comments only).
pub(crate) fn documents(text: &str) -> Option<Vec<&str>> {
    let start = text.trim_start_matches(['\u{feff}', ' ', '\t', '\r', '\n']);
    if start.starts_with(['{', '[']) || text.contains('*') || lone_carriage_return(text) {
        return None;
    }
    let mut pieces = Vec::new();
    let mut begin = 0;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let bytes = line.as_bytes();
        let end = offset + line.len();
        if bytes.first() == Some(&b'%') {
            return None;
        }
        if is_marker(bytes, b"---") {
            if offset > begin {
                pieces.push(&text[begin..offset]);
            }
            begin = offset;
        } else if is_marker(bytes, b"...") {
            pieces.push(&text[begin..end]);
            begin = end;
        }
        offset = end;
    }
    if begin < text.len() {
        pieces.push(&text[begin..]);
    }
    Some(pieces)
}
