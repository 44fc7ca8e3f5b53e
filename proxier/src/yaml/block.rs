//! The fast path for block YAML as `kubectl` and people write Kubernetes objects: indented
//! mappings and sequences, one-line flow collections (`{name: web, port: 80}`, `[10.0.0.1]`),
//! plain and one-line quoted scalars, comments. serde-saphyr reads about 4 MB/s of such text
//! (host, the 10,000-Service scale cluster: 15.8 MB in 3.3 s, and under the VM's emulated CPU
//! ~50 s of a 57 s cold start); this path reads it an order of magnitude faster.
//!
//! Like the `json` module, it must not change what a text means: it takes only texts it reads
//! exactly as the YAML parser does, to the same values, and leaves every other text, including
//! every error, to the YAML path. So it gives up (`None`) on anything it does not need:
//!
//! - more than one document, a document that is a scalar, a directive, a tab, a carriage return, a character YAML does not
//!   allow in a stream;
//! - anchors, aliases, tags, block scalars (`|`, `>`), complex keys (`?`), merge keys, nested
//!   sequences on one line (`- - x`), a scalar or flow collection running over several lines;
//! - a repeated key (the YAML path refuses it), a key that is not a plain word or quoted, a
//!   mapping of more than [`MAX_KEYS`] keys;
//! - escapes in double-quoted scalars;
//! - a plain scalar whose meaning needs YAML's resolution rules beyond the obvious: only
//!   `null`/`~`/empty (null), `true`/`false`, decimal integers of up to 18 digits without a
//!   leading zero or `+`, dotted IPv4 addresses (strings) and words that start with a letter
//!   or `/` are taken; `yes`, `No`, `0x1f`, `1e3`, `2.5`, `007`, `.inf`, … are the parser's;
//! - nesting deeper than [`FAST_DEPTH`].
//!
//! Equivalence is tested by unit cases and by the `documents` fuzz target, which compares
//! [`crate::yaml::documents`] with serde-saphyr alone on arbitrary text.
//!
//! What it reads is a [`Node`] tree that borrows the text: a Kubernetes object is deserialized
//! from it directly (`de`), without the `serde_json::Value` tree in between, and the tree
//! becomes a `Value` only where one is asked for ([`Node::into_value`]).

use std::borrow::Cow;

use serde_json::Value;

use super::json::FAST_DEPTH;

mod de;

pub(crate) use de::typed;

/// One node of a document the block reader read, its scalars resolved as the YAML parser
/// resolves them, its strings borrowed from the text where they need no unescaping.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node<'a> {
    /// `null`, `~`, or nothing.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A non-negative integer.
    Unsigned(u64),
    /// A negative integer.
    Negative(i64),
    /// Any other scalar.
    Str(Cow<'a, str>),
    /// A sequence.
    Seq(Vec<Node<'a>>),
    /// A mapping, in the text's order, no key twice.
    Map(Vec<(Cow<'a, str>, Node<'a>)>),
}

impl Node<'_> {
    /// The node as the `serde_json::Value` the YAML parser reads the same text to.
    pub(crate) fn into_value(self) -> Value {
        match self {
            Node::Null => Value::Null,
            Node::Bool(b) => Value::Bool(b),
            Node::Unsigned(n) => Value::from(n),
            Node::Negative(n) => Value::from(n),
            Node::Str(s) => Value::String(s.into_owned()),
            Node::Seq(items) => Value::Array(items.into_iter().map(Node::into_value).collect()),
            Node::Map(entries) => Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.into_owned(), v.into_value()))
                    .collect(),
            ),
        }
    }

    /// The value of `key` when this is a mapping that has it.
    pub(crate) fn get(&self, key: &str) -> Option<&Self> {
        match self {
            Node::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The string this node is, if it is one.
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Node::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// `text` as its one document, or `None` when the YAML path must read it.
#[cfg(test)]
pub(crate) fn document(text: &str) -> Option<Value> {
    parse(text).map(Node::into_value)
}

/// `text` as its one document, read to nodes, or `None` when the YAML path must read it.
pub(crate) fn parse(text: &str) -> Option<Node<'_>> {
    let lines = content_lines(text)?;
    let first = lines.first()?;
    if first.indent != 0 {
        return None;
    }
    let mut parser = Parser {
        lines,
        at: 0,
        depth: 0,
    };
    let value = parser.node(0)?;
    // A scalar document is the parser's: it skips a null one (`~`, found by the `documents`
    // fuzz target), and Kubernetes objects are mappings.
    let collection = matches!(value, Node::Map(_) | Node::Seq(_));
    (collection && parser.at == parser.lines.len()).then_some(value)
}

/// One line that holds content (not blank, not only a comment), without its line break.
#[derive(Clone, Copy)]
struct Line<'a> {
    text: &'a str,
    /// Leading spaces.
    indent: usize,
}

/// The content lines of a one-document text: blank and comment lines left out, a leading
/// `---` line and a closing `...` line taken away.
fn content_lines(text: &str) -> Option<Vec<Line<'_>>> {
    if !text.chars().all(allowed) {
        return None;
    }
    let mut lines = Vec::new();
    let mut ended = false;
    for text in text.split('\n') {
        let content = text.trim_start_matches(' ');
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let marker = |m: &str| {
            text.strip_prefix(m)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(' '))
        };
        if ended || text.starts_with('%') {
            return None;
        }
        if marker("---") {
            // Only a bare leading marker: content on it, or a second document, is the parser's.
            if !lines.is_empty() || !end_of_line(&text[3..]) {
                return None;
            }
            continue;
        }
        if marker("...") {
            if !end_of_line(&text[3..]) {
                return None;
            }
            ended = true;
            continue;
        }
        lines.push(Line {
            text,
            indent: text.len() - content.len(),
        });
    }
    Some(lines)
}

/// Whether YAML allows `c` in a stream (its printable set), less the characters this path
/// leaves to the parser: tab, carriage return, NEL, byte order mark.
fn allowed(c: char) -> bool {
    matches!(c, '\n' | ' '..='~' | '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..)
        && c != '\u{feff}'
}

/// Whether `rest` (what follows a value on its line) is only blanks and a comment.
fn end_of_line(rest: &str) -> bool {
    let trimmed = rest.trim_start_matches(' ');
    trimmed.is_empty() || (trimmed.starts_with('#') && trimmed.len() < rest.len())
}

/// Whether `rest` (a line from a node's column) is a block sequence entry.
fn is_entry(rest: &str) -> bool {
    rest == "-" || rest.starts_with("- ")
}

struct Parser<'a> {
    lines: Vec<Line<'a>>,
    /// The line the next node starts on.
    at: usize,
    depth: usize,
}

/// The most keys a mapping the block reader reads may have: each new key is compared with
/// those before it (Kubernetes objects have a few dozen at most).
const MAX_KEYS: usize = 64;

/// Adds `key: value` to `entries` unless `key` is there already (a repeated key is the
/// parser's to refuse), or the mapping has [`MAX_KEYS`].
fn insert<'a>(
    entries: &mut Vec<(Cow<'a, str>, Node<'a>)>,
    key: Cow<'a, str>,
    value: Node<'a>,
) -> Option<()> {
    if entries.len() >= MAX_KEYS || entries.iter().any(|(k, _)| *k == key) {
        return None;
    }
    entries.push((key, value));
    Some(())
}

impl<'a> Parser<'a> {
    /// The node that starts at `column` of the current line.
    fn node(&mut self, column: usize) -> Option<Node<'a>> {
        self.depth += 1;
        if self.depth > FAST_DEPTH {
            return None;
        }
        let rest = self.lines[self.at].text.get(column..)?;
        let value = if is_entry(rest) {
            self.sequence(column)
        } else if mapping_key(rest).is_some() {
            self.mapping(column)
        } else {
            self.at += 1;
            inline(rest, self.depth)
        };
        self.depth -= 1;
        value
    }

    /// The node under a key or an entry whose line ends after its indicator: on the next line
    /// when that is indented deeper than `indent` (or, under a key, a sequence at `indent`);
    /// null otherwise.
    fn nested(&mut self, indent: usize, sequence_at_indent: bool) -> Option<Node<'a>> {
        self.at += 1;
        match self.lines.get(self.at) {
            Some(next) if next.indent > indent => self.node(next.indent),
            Some(next)
                if sequence_at_indent
                    && next.indent == indent
                    && is_entry(&next.text[indent..]) =>
            {
                self.node(indent)
            }
            _ => Some(Node::Null),
        }
    }

    /// A block sequence whose `-` indicators stand at `indent`.
    fn sequence(&mut self, indent: usize) -> Option<Node<'a>> {
        let mut items = Vec::new();
        loop {
            let after = &self.lines[self.at].text[indent + 1..];
            let content = after.trim_start_matches(' ');
            let item = if end_of_line(after) {
                self.nested(indent, false)?
            } else if is_entry(content) {
                return None;
            } else {
                self.node(indent + 1 + after.len() - content.len())?
            };
            items.push(item);
            match self.lines.get(self.at) {
                Some(next) if next.indent == indent && is_entry(&next.text[indent..]) => {}
                // Deeper: a scalar running on, or a syntax error.
                Some(next) if next.indent > indent => return None,
                // The enclosing node's (a key of a mapping at this same indent), or the end.
                _ => return Some(Node::Seq(items)),
            }
        }
    }

    /// A block mapping whose first key starts at `column` of the current line and whose
    /// other keys start lines indented by `column`.
    fn mapping(&mut self, column: usize) -> Option<Node<'a>> {
        let mut entries = Vec::new();
        loop {
            let rest = self.lines[self.at].text.get(column..)?;
            let (key, after) = mapping_key(rest)?;
            let value = if end_of_line(after) {
                self.nested(column, true)?
            } else {
                self.at += 1;
                inline(after.trim_start_matches(' '), self.depth)?
            };
            insert(&mut entries, key, value)?;
            match self.lines.get(self.at) {
                Some(next) if next.indent == column => {}
                Some(next) if next.indent > column => return None,
                _ => return Some(Node::Map(entries)),
            }
        }
    }
}

/// The key of a block mapping entry at the start of `rest`, and what follows its `:` (empty,
/// or starting with a space); `None` where `rest` is not such an entry (or its key is not one
/// this path reads).
fn mapping_key(rest: &str) -> Option<(Cow<'_, str>, &str)> {
    let (key, after) = if rest.starts_with(['"', '\'']) {
        quoted(rest)?
    } else {
        let end = rest.find(|c: char| !is_word(c))?;
        match plain(&rest[..end])? {
            Node::Str(key) => (key, &rest[end..]),
            _ => return None,
        }
    };
    let after = after.strip_prefix(':')?;
    (after.is_empty() || after.starts_with(' ')).then_some((key, after))
}

/// A character of a key or a flow scalar.
fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-')
}

/// A scalar or flow collection that fills the rest of its line (`text` starts with it).
fn inline(text: &str, depth: usize) -> Option<Node<'_>> {
    let (value, rest) = match text.as_bytes().first()? {
        b'"' | b'\'' => {
            let (s, rest) = quoted(text)?;
            (Node::Str(s), rest)
        }
        b'{' | b'[' => flow(text, depth + 1)?,
        _ => {
            let end = text.find(" #").unwrap_or(text.len());
            let scalar = text[..end].trim_end_matches(' ');
            let block_plain = |c: char| {
                is_word(c) || matches!(c, ' ' | ':' | '+' | '=' | '@' | ',' | '(' | ')' | '~')
            };
            if !scalar.chars().all(block_plain) || scalar.contains(": ") || scalar.ends_with(':') {
                return None;
            }
            (plain(scalar)?, &text[end..])
        }
    };
    end_of_line(rest).then_some(value)
}

/// A one-line quoted scalar at the start of `text`, and the text after its closing quote.
fn quoted(text: &str) -> Option<(Cow<'_, str>, &str)> {
    if let Some(body) = text.strip_prefix('"') {
        let end = body.find('"')?;
        let value = &body[..end];
        return (!value.contains('\\')).then_some((Cow::Borrowed(value), &body[end + 1..]));
    }
    let body = text.strip_prefix('\'')?;
    let end = body.find('\'')?;
    if !body[end + 1..].starts_with('\'') {
        // No `''` in it: the text itself.
        return Some((Cow::Borrowed(&body[..end]), &body[end + 1..]));
    }
    let mut value = String::new();
    let mut rest = body;
    loop {
        let end = rest.find('\'')?;
        value.push_str(&rest[..end]);
        rest = &rest[end + 1..];
        match rest.strip_prefix('\'') {
            // `''` is one quote.
            Some(after) => {
                value.push('\'');
                rest = after;
            }
            None => return Some((Cow::Owned(value), rest)),
        }
    }
}

/// A flow collection at the start of `text` (on one line), at nesting `depth`, and the text
/// after it.
fn flow(text: &str, depth: usize) -> Option<(Node<'_>, &str)> {
    if depth > FAST_DEPTH {
        return None;
    }
    let (close, mut rest) = match text.as_bytes().first()? {
        b'[' => (']', &text[1..]),
        b'{' => ('}', &text[1..]),
        _ => return None,
    };
    let mut items = Vec::new();
    let mut entries = Vec::new();
    rest = rest.trim_start_matches(' ');
    let mut first = true;
    loop {
        if let Some(after) = rest.strip_prefix(close) {
            let value = if close == ']' {
                Node::Seq(items)
            } else {
                Node::Map(entries)
            };
            return Some((value, after));
        }
        if !first {
            // A `,` and then an entry (a trailing `,` is the parser's).
            rest = rest.strip_prefix(',')?.trim_start_matches(' ');
            if rest.starts_with([']', '}', ',']) {
                return None;
            }
        }
        first = false;
        let (node, after) = flow_node(rest, depth)?;
        rest = after.trim_start_matches(' ');
        if close == '}' {
            let Node::Str(key) = node else {
                return None;
            };
            let after = rest.strip_prefix(": ")?.trim_start_matches(' ');
            let (value, after) = flow_node(after, depth)?;
            insert(&mut entries, key, value)?;
            rest = after.trim_start_matches(' ');
        } else {
            items.push(node);
        }
    }
}

/// One entry of a flow collection at the start of `text`, and the text after it.
fn flow_node(text: &str, depth: usize) -> Option<(Node<'_>, &str)> {
    match text.as_bytes().first()? {
        b'[' | b'{' => flow(text, depth + 1),
        b'"' | b'\'' => quoted(text).map(|(s, rest)| (Node::Str(s), rest)),
        _ => {
            let end = text.find(|c: char| !is_word(c)).unwrap_or(text.len());
            // An empty entry (`[a, , b]`, `{a: }`) is the parser's.
            (end > 0).then_some(())?;
            Some((plain(&text[..end])?, &text[end..]))
        }
    }
}

/// What a plain scalar means, where that is plain to see (see the module documentation).
fn plain(scalar: &str) -> Option<Node<'_>> {
    match scalar {
        "" | "~" | "null" | "Null" | "NULL" => return Some(Node::Null),
        "true" => return Some(Node::Bool(true)),
        "false" => return Some(Node::Bool(false)),
        _ => {}
    }
    // YAML 1.1 booleans and other spellings of these words: the parser's to judge.
    if ["y", "yes", "on", "n", "no", "off", "true", "false", "null"]
        .iter()
        .any(|word| scalar.eq_ignore_ascii_case(word))
    {
        return None;
    }
    let first = scalar.as_bytes()[0];
    if first.is_ascii_alphabetic() || first == b'/' {
        return Some(Node::Str(Cow::Borrowed(scalar)));
    }
    let (negative, digits) = match scalar.strip_prefix('-') {
        Some(digits) => (true, digits),
        None => (false, scalar),
    };
    let decimal = !digits.is_empty()
        && digits.len() <= 18
        && digits.bytes().all(|b| b.is_ascii_digit())
        && ((digits == "0" && !negative) || !digits.starts_with('0'));
    if decimal {
        // At most 18 digits: within both i64 and u64.
        let n: u64 = digits.parse().ok()?;
        return Some(if negative {
            Node::Negative(-(n as i64))
        } else {
            Node::Unsigned(n)
        });
    }
    let mut parts = scalar.split('.');
    let ipv4 = parts
        .by_ref()
        .take(4)
        .filter(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
        .count()
        == 4
        && parts.next().is_none();
    ipv4.then_some(Node::Str(Cow::Borrowed(scalar)))
}

#[cfg(test)]
mod tests;
