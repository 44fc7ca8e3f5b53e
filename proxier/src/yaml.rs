//! The one way proxier reads YAML: the cluster files of `--source`/`-f`, the
//! `KubeProxyConfiguration` of `--config` and an embedder's text all come through
//! [`read_file`] and then [`from_str`] or [`documents`].
//!
//! A YAML file is input from whoever can write it, and YAML can make a small file expensive:
//! an alias bomb (anchors that alias each other) expands a 10 KB file to gigabytes, a deep
//! `[[[[…` nesting costs the parser seconds per 100 KB, and a FIFO given as a file blocks the
//! reader for ever. So:
//!
//! - only a regular file is read, opened non-blocking (a FIFO or a device is refused without
//!   waiting for a writer) and at most [`MAX_FILE_BYTES`] long;
//! - the text is parsed once, by serde-saphyr's streaming parser, under a budget: nesting depth
//!   [`MAX_DEPTH`], at most [`MAX_ALIASES`] aliases and [`MAX_REPLAYED_EVENTS`] events replayed
//!   by alias expansion. Kubernetes objects nest about 10 deep and `kubectl` never writes
//!   aliases, so legitimate files are far inside these figures. Text over the budget is
//!   refused with [`Error::InputRefused`]; a syntax error is [`Error::Yaml`] with its line and
//!   column (documents before it are kept).
//! - JSON text is read by serde_json when that cannot change its meaning (the `json` module:
//!   one value, no repeated key, half the nesting budget); every other text, and every error,
//!   is the YAML parser's.
//! - Block YAML as `kubectl` writes it is read by a small reader of its own when that cannot
//!   change its meaning either (the `block` module: one document, no anchors, tags or
//!   multi-line scalars, scalars whose type is plain to see); every other text is the YAML
//!   parser's.
//!
//! ```
//! let (documents, error) = proxier::yaml::documents("example", "a: 1\n---\nb: [2, 3]\n");
//! assert!(error.is_none());
//! assert_eq!(documents[1]["b"][1], 3);
//!
//! let bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n";
//! assert!(proxier::yaml::check_limits("small", bomb).is_ok());
//! ```

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Deserialize as _;
use serde_saphyr::granit_parser::ErrorKind;
use serde_saphyr::localizer::ExternalMessageSource;

use crate::error::{Error, InputRefusal, YamlError};

/// The largest YAML file read, in bytes (64 MiB: ten thousand Services with their
/// EndpointSlices take about 40 MiB of YAML).
pub const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// The deepest nesting of mappings and sequences accepted.
pub const MAX_DEPTH: usize = 64;

/// The most aliases (`*name`) a file may hold.
pub const MAX_ALIASES: usize = 10_000;

/// The most events alias expansion may replay over a whole file (an alias of a 100-line
/// mapping replays about 200).
pub const MAX_REPLAYED_EVENTS: usize = 100_000;

fn refused(context: &str, reason: InputRefusal) -> Error {
    Error::InputRefused {
        context: context.to_owned(),
        reason,
    }
}

/// Reads the YAML (or JSON) file at `path` as text: a regular file of at most
/// [`MAX_FILE_BYTES`], opened without blocking. The text is then parsed under the budget by
/// [`from_str`] or [`documents`].
pub fn read_file(path: &Path) -> Result<String, Error> {
    let context = path.display().to_string();
    let unreadable = |e| refused(&context, InputRefusal::Unreadable(e));
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer; on a regular
    // file the flag changes nothing.
    let file = File::options()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .map_err(unreadable)?;
    let meta = file.metadata().map_err(unreadable)?;
    let kind = meta.file_type();
    if !kind.is_file() {
        let name = if kind.is_fifo() {
            "FIFO"
        } else if kind.is_char_device() || kind.is_block_device() {
            "device"
        } else if kind.is_socket() {
            "socket"
        } else if kind.is_dir() {
            "directory"
        } else {
            "special file"
        };
        return Err(refused(&context, InputRefusal::NotRegularFile(name)));
    }
    let too_large = |size| {
        refused(
            &context,
            InputRefusal::TooLarge {
                size,
                limit: MAX_FILE_BYTES,
            },
        )
    };
    if meta.len() > MAX_FILE_BYTES {
        return Err(too_large(meta.len()));
    }
    // The file may grow after the metadata was read: never read more than the limit.
    let mut text = String::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(unreadable)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large(text.len() as u64));
    }
    Ok(text)
}

fn too_large(context: &str, text: &str) -> Result<(), Error> {
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(refused(
            context,
            InputRefusal::TooLarge {
                size: text.len() as u64,
                limit: MAX_FILE_BYTES,
            },
        ));
    }
    Ok(())
}

/// The budget every YAML text is parsed under.
fn options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_depth: MAX_DEPTH,
            // The scanner looks ahead through `[[[…` (each could open a key) before the parser
            // sees the depth: its own nesting limit is the one that trips there.
            flow_nesting_limit: MAX_DEPTH,
            max_aliases: MAX_ALIASES,
            // The size cap bounds everything else; these only must not refuse a big file.
            max_events: usize::MAX,
            max_nodes: usize::MAX,
            max_documents: usize::MAX,
            max_total_scalar_bytes: usize::MAX,
            max_reader_input_bytes: None,
            // Many aliases of one anchor are fine as long as the expansion stays small.
            enforce_alias_anchor_ratio: false,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: MAX_REPLAYED_EVENTS,
            max_replay_stack_depth: MAX_DEPTH,
        },
    }
}

/// A parser error as this crate's: over the budget → [`Error::InputRefused`], anything else
/// (syntax, a value of the wrong type) → [`Error::Yaml`].
fn parse_error(context: &str, error: serde_saphyr::Error) -> Error {
    if is_over_budget(&error) {
        refused(context, InputRefusal::OverBudget(Box::new(error)))
    } else {
        Error::Yaml {
            context: context.to_owned(),
            source: YamlError::Syntax(Box::new(error)),
        }
    }
}

/// Parses the one YAML (or JSON) document of `text` as a `T` under the budget; `context`
/// names the text in errors.
pub fn from_str<T: DeserializeOwned>(context: &str, text: &str) -> Result<T, Error> {
    too_large(context, text)?;
    serde_saphyr::from_str_with_options(text, options()).map_err(|e| parse_error(context, e))
}

/// Parses every document of `text` (`---`-separated; empty ones skipped) into untyped trees
/// under the budget. A document that cannot be read ends the stream (YAML cannot be
/// resynchronised after a syntax error): the documents before it are returned with the error.
pub fn documents(context: &str, text: &str) -> (Vec<serde_json::Value>, Option<Error>) {
    let (documents, error) = documents_from(context, text, StreamPosition::start(text));
    let values = documents.into_iter().map(Document::into_value).collect();
    (values, error)
}

/// One document of a text as read: a tree of values (serde_json's reading of JSON, the YAML
/// parser's of everything else) or the block reader's nodes, which borrow the text.
#[derive(Debug)]
pub(crate) enum Document<'a> {
    /// Read by serde_json or the YAML parser.
    Value(serde_json::Value),
    /// Read by the block reader.
    Block(block::Node<'a>),
}

impl<'a> Document<'a> {
    /// The document as a tree of values.
    pub(crate) fn into_value(self) -> serde_json::Value {
        match self {
            Document::Value(value) => value,
            Document::Block(node) => node.into_value(),
        }
    }

    /// The string at `key`, where the document is a mapping that has one there.
    pub(crate) fn str_field(&self, key: &str) -> Option<&str> {
        match self {
            Document::Value(value) => value.get(key)?.as_str(),
            Document::Block(node) => node.get(key)?.as_str(),
        }
    }

    /// The items of a `List` (the sequence at `items` of a mapping), each a document.
    pub(crate) fn into_items(self) -> Option<Vec<Document<'a>>> {
        match self {
            Document::Value(serde_json::Value::Object(mut list)) => match list.remove("items") {
                Some(serde_json::Value::Array(items)) => {
                    Some(items.into_iter().map(Document::Value).collect())
                }
                _ => None,
            },
            Document::Block(block::Node::Map(entries)) => {
                let (_, items) = entries.into_iter().find(|(key, _)| key == "items")?;
                match items {
                    block::Node::Seq(items) => {
                        Some(items.into_iter().map(Document::Block).collect())
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// The document as a `T`: `serde_json::from_value` of its tree (the block reader's nodes
    /// are read straight, as from their tree).
    pub(crate) fn typed<T: DeserializeOwned>(self) -> Result<T, serde_json::Error> {
        match self {
            Document::Value(value) => serde_json::from_value(value),
            Document::Block(node) => block::typed(&node),
        }
    }
}

/// Where a piece of a stream (one of [`split::documents`]) starts, for the document numbers
/// and lines errors name. The lines before it are counted only for an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StreamPosition<'s> {
    /// The whole stream.
    stream: &'s str,
    /// Where the piece starts in it, in bytes.
    offset: usize,
    /// The number of its first document (from 1).
    pub document: usize,
}

impl<'s> StreamPosition<'s> {
    /// The start of `stream`.
    pub fn start(stream: &'s str) -> Self {
        Self {
            stream,
            offset: 0,
            document: 1,
        }
    }

    /// The position after `piece`, the next piece of the stream from here, which holds
    /// `documents` documents.
    pub fn after(self, piece: &str, documents: usize) -> Self {
        Self {
            offset: self.offset + piece.len(),
            document: self.document + documents,
            ..self
        }
    }

    /// The lines of the stream before the piece.
    fn lines_before(&self) -> usize {
        let before = self.stream.get(..self.offset).unwrap_or_default();
        before.bytes().filter(|b| *b == b'\n').count()
    }
}

/// [`documents`] of a text that starts at `position` of a larger stream (one piece of
/// [`split::documents`]). A stream that can be cut into its documents exactly is read a
/// document at a time, so that each document the fast readers take is theirs even when others
/// of the stream are not.
pub(crate) fn documents_from<'a>(
    context: &str,
    text: &'a str,
    position: StreamPosition<'_>,
) -> (Vec<Document<'a>>, Option<Error>) {
    if let Err(e) = too_large(context, text) {
        return (Vec::new(), Some(e));
    }
    if let Some(document) = json::document(text) {
        return (vec![Document::Value(document)], None);
    }
    let Some(pieces) = split::documents(text).filter(|pieces| pieces.len() > 1) else {
        return one_document_text(context, text, position);
    };
    let mut documents = Vec::new();
    let mut position = position;
    for piece in pieces {
        let (mut more, error) = one_document_text(context, piece, position);
        position = position.after(piece, more.len());
        documents.append(&mut more);
        if error.is_some() {
            return (documents, error);
        }
    }
    (documents, None)
}

/// [`documents_from`] of a text that is one document (a piece of [`split::documents`]), or
/// cannot be cut: the block reader's when it takes it, the YAML parser's otherwise.
pub(crate) fn one_document_text<'a>(
    context: &str,
    text: &'a str,
    position: StreamPosition<'_>,
) -> (Vec<Document<'a>>, Option<Error>) {
    if let Some(node) = block::parse(text) {
        return (vec![Document::Block(node)], None);
    }
    // serde-saphyr's `&str` input scans the text in place; its reader input decodes it char
    // by char into a buffer. A text that does not read is read again by the reader, which
    // hands over the documents before the error.
    if let Ok(documents) = serde_saphyr::from_multiple_with_options(text, options()) {
        return (documents.into_iter().map(Document::Value).collect(), None);
    }
    // Blank lines before a document change nothing of it but the lines errors name.
    let padded = "\n".repeat(position.lines_before()) + text;
    let mut documents = Vec::new();
    let mut reader = padded.as_bytes();
    for document in serde_saphyr::read_with_options(&mut reader, options()) {
        match document {
            Ok(value) => documents.push(Document::Value(value)),
            Err(e) => {
                let at = format!("{context} document {}", position.document + documents.len());
                return (documents, Some(parse_error(&at, e)));
            }
        }
    }
    (documents, None)
}

/// Checks `text` (every document of it) against the nesting and alias budgets without keeping
/// anything; `context` names it in the error. Syntax errors pass: only the limits are judged.
pub fn check_limits(context: &str, text: &str) -> Result<(), Error> {
    too_large(context, text)?;
    match serde_saphyr::from_multiple_with_options::<Shape>(text, options()) {
        Err(error) if is_over_budget(&error) => {
            Err(refused(context, InputRefusal::OverBudget(Box::new(error))))
        }
        _ => Ok(()),
    }
}

fn is_over_budget(mut error: &serde_saphyr::Error) -> bool {
    use serde_saphyr::Error as E;
    // The cause, without the snippet and alias context serde-saphyr wraps it in.
    while let E::WithSnippet { error: inner, .. } | E::AliasError { error: inner, .. } = error {
        error = inner;
    }
    if let E::ExternalMessage { source, .. } = error {
        return matches!(
            source.as_ref(),
            ExternalMessageSource::Parser(scan)
                if matches!(scan.kind(), ErrorKind::RecursionLimitExceeded)
        );
    }
    matches!(
        error,
        E::Budget { .. }
            | E::AliasReplayCounterOverflow { .. }
            | E::AliasReplayLimitExceeded { .. }
            | E::AliasExpansionLimitExceeded { .. }
            | E::AliasReplayStackDepthExceeded { .. }
    )
}

/// Any YAML node, visited to the end (aliases replayed) and kept as nothing: what
/// [`check_limits`] deserializes into, so that alias expansion is counted without building a tree.
struct Shape;

impl<'de> serde::Deserialize<'de> for Shape {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ShapeVisitor)
    }
}

struct ShapeVisitor;

impl<'de> serde::de::Visitor<'de> for ShapeVisitor {
    type Value = Shape;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any YAML node")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Shape, E> {
        Ok(Shape)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Shape, E> {
        Ok(Shape)
    }
    fn visit_i128<E>(self, _: i128) -> Result<Shape, E> {
        Ok(Shape)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Shape, E> {
        Ok(Shape)
    }
    fn visit_u128<E>(self, _: u128) -> Result<Shape, E> {
        Ok(Shape)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Shape, E> {
        Ok(Shape)
    }
    fn visit_str<E>(self, _: &str) -> Result<Shape, E> {
        Ok(Shape)
    }
    fn visit_bytes<E>(self, _: &[u8]) -> Result<Shape, E> {
        Ok(Shape)
    }
    fn visit_none<E>(self) -> Result<Shape, E> {
        Ok(Shape)
    }
    fn visit_unit<E>(self) -> Result<Shape, E> {
        Ok(Shape)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Shape, D::Error> {
        Shape::deserialize(d)
    }
    fn visit_newtype_struct<D: serde::Deserializer<'de>>(self, d: D) -> Result<Shape, D::Error> {
        Shape::deserialize(d)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
        while seq.next_element::<Shape>()?.is_some() {}
        Ok(Shape)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
        while map.next_entry::<Shape, Shape>()?.is_some() {}
        Ok(Shape)
    }
    fn visit_enum<A: serde::de::EnumAccess<'de>>(self, data: A) -> Result<Shape, A::Error> {
        use serde::de::VariantAccess;
        let (Shape, variant) = data.variant::<Shape>()?;
        variant.newtype_variant::<Shape>()
    }
}

mod block;
mod json;
pub(crate) mod split;

#[cfg(test)]
mod tests;
