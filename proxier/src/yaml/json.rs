//! The fast path for JSON text: `kubectl get … -o json` writes it, and serde_json reads it an
//! order of magnitude faster than a YAML parser reads the same bytes (host, the 10,000-Service
//! scale cluster as `kind: List` files: 0.26 s against 3.3 s). JSON is YAML, so this path must
//! not change what a text means; it only takes texts it can read exactly as the YAML parser
//! would, and leaves every other text — including every error — to the YAML path:
//!
//! - the text's first non-blank character is `{` or `[`, and the whole text is one JSON value;
//! - no mapping repeats a key (the YAML path refuses duplicated keys);
//! - it holds no number serde_json reads as a float (`-0`, `2.5`, `1e3`, integers beyond 64 bits):
//!   serde_json and YAML do not read all of them alike;
//! - it nests at most [`FAST_DEPTH`] deep, well inside the YAML budget's [`super::MAX_DEPTH`],
//!   so a text near the budget is judged by the YAML path alone.

use serde::de::{DeserializeSeed, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// The deepest nesting the fast path reads (Kubernetes objects nest about 10 deep).
pub(crate) const FAST_DEPTH: usize = super::MAX_DEPTH / 2;

/// `text` as one JSON value, or `None` when the YAML path must read it (not JSON, a syntax
/// error, a repeated key, deeper than [`FAST_DEPTH`]).
pub(crate) fn document(text: &str) -> Option<Value> {
    let start = text.trim_start_matches(|c: char| c.is_ascii_whitespace() || c == '\u{feff}');
    if !start.starts_with(['{', '[']) {
        return None;
    }
    let mut deserializer = serde_json::Deserializer::from_str(start);
    let value = Strict { depth: 0 }.deserialize(&mut deserializer).ok()?;
    deserializer.end().ok()?;
    Some(value)
}

/// A JSON value at nesting `depth`, read with the fast path's conditions.
#[derive(Clone, Copy)]
struct Strict {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Strict {
    fn nested<E: serde::de::Error>(self) -> Result<Self, E> {
        let depth = self.depth + 1;
        if depth > FAST_DEPTH {
            return Err(E::custom("deeper than the fast path reads"));
        }
        Ok(Self { depth })
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Value, E> {
        // Floats are the YAML path's to read (the `documents` fuzz target found both):
        // serde_json reads `-0` as the float -0.0 where YAML reads the integer 0, and rounds
        // long literals differently from Rust's own parser. Kubernetes objects hold no floats.
        Err(E::custom("a float"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element_seed(inner)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(inner)?;
            if object.insert(key, value).is_some() {
                return Err(A::Error::custom("a repeated key"));
            }
        }
        Ok(Value::Object(object))
    }
}
