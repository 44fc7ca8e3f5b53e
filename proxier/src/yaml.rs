//! The one way proxier reads a YAML file: the cluster files of `--source`/`-f` and the
//! `KubeProxyConfiguration` of `--config` both come through [`read_file`] and [`check_limits`].
//!
//! A YAML file is input from whoever can write it, and YAML can make a small file expensive:
//! an alias bomb (anchors that alias each other) expands a 10 KB file to gigabytes, a deep
//! `[[[[…` nesting costs the parser seconds per 100 KB, and a FIFO given as a file blocks the
//! reader for ever. So, before `serde_yaml` sees a byte:
//!
//! - only a regular file is read, opened non-blocking (a FIFO or a device is refused without
//!   waiting for a writer) and at most [`MAX_FILE_BYTES`] long;
//! - the text is scanned by serde-saphyr's streaming parser (no tree is built) under a budget:
//!   nesting depth [`MAX_DEPTH`], at most [`MAX_ALIASES`] aliases and [`MAX_REPLAYED_EVENTS`]
//!   events replayed by alias expansion in total. Kubernetes objects nest about 10 deep and
//!   `kubectl` never writes aliases, so legitimate files are far inside these figures.
//!
//! A syntax error found by the scan is not reported from here: `serde_yaml` reads the same text
//! next and reports it with its own position (and keeps the documents before it).

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use serde::Deserialize as _;
use serde_saphyr::granit_parser::ErrorKind;
use serde_saphyr::localizer::ExternalMessageSource;

use crate::error::{Error, InputRefusal};

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
/// [`MAX_FILE_BYTES`], opened without blocking. The text still has to pass [`check_limits`]
/// (the parsers of this crate call it).
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

/// Scans `text` (every document of it) under the nesting and alias budgets; `context` names it
/// in the error. Syntax errors pass: the parser that follows reports them.
pub fn check_limits(context: &str, text: &str) -> Result<(), Error> {
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(refused(
            context,
            InputRefusal::TooLarge {
                size: text.len() as u64,
                limit: MAX_FILE_BYTES,
            },
        ));
    }
    let options = serde_saphyr::options! {
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
            // Many aliases of one anchor are fine as long as the expansion stays small.
            enforce_alias_anchor_ratio: false,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: MAX_REPLAYED_EVENTS,
            max_replay_stack_depth: MAX_DEPTH,
        },
    };
    match serde_saphyr::from_multiple_with_options::<Shape>(text, options) {
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

/// Any YAML node, visited to the end (aliases replayed) and kept as nothing: what the scan
/// deserializes into, so that alias expansion is counted without building a tree.
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

#[cfg(test)]
mod tests;
