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
//! flow collection) is not cut either. Those texts are parsed whole, as before.

use std::hash::{DefaultHasher, Hash as _, Hasher as _};

/// The 64-bit digest of one document's bytes (SipHash-1-3 with fixed keys, so equal in every
/// poll of one process), the key under which its objects are remembered. A leading bare `---`
/// line is left out: the first document of a file usually has none, and reads the same.
pub(crate) fn digest(document: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    document
        .strip_prefix("---\n")
        .unwrap_or(document)
        .hash(&mut hasher);
    hasher.finish()
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
    if start.starts_with(['{', '[']) || text.contains('*') {
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
