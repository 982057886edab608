//! OTTL values: what paths read, converters return and editors write. Strings and bytes
//! borrow from the encoded item where they can, so reading an attribute to compare it
//! allocates nothing.

use std::borrow::Cow;
use std::cmp::Ordering;

use super::wire::{self, Reader};

#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Nil,
    Bool(bool),
    Int(i64),
    Double(f64),
    Str(Cow<'a, str>),
    Bytes(Cow<'a, [u8]>),
    List(Vec<Value<'a>>),
    Map(Vec<(Cow<'a, str>, Value<'a>)>),
}

impl<'a> Value<'a> {
    pub fn str(s: impl Into<Cow<'a, str>>) -> Self {
        Value::Str(s.into())
    }

    pub fn into_owned(self) -> Value<'static> {
        match self {
            Value::Nil => Value::Nil,
            Value::Bool(b) => Value::Bool(b),
            Value::Int(i) => Value::Int(i),
            Value::Double(d) => Value::Double(d),
            Value::Str(s) => Value::Str(Cow::Owned(s.into_owned())),
            Value::Bytes(b) => Value::Bytes(Cow::Owned(b.into_owned())),
            Value::List(l) => Value::List(l.into_iter().map(Value::into_owned).collect()),
            Value::Map(m) => Value::Map(
                m.into_iter()
                    .map(|(k, v)| (Cow::Owned(k.into_owned()), v.into_owned()))
                    .collect(),
            ),
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Nil => "nil",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Double(_) => "double",
            Value::Str(_) => "string",
            Value::Bytes(_) => "bytes",
            Value::List(_) => "list",
            Value::Map(_) => "map",
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Looks up `key` in a map value.
    pub fn get(&self, key: &str) -> Option<&Value<'a>> {
        match self {
            Value::Map(m) => m.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The value as text the way OTTL's `String` converter writes it.
    pub fn to_text(&self) -> String {
        match self {
            Value::Nil => String::new(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Double(d) => format_double(*d),
            Value::Str(s) => s.to_string(),
            Value::Bytes(b) => crate::ottl::funcs::hex(b),
            Value::List(_) | Value::Map(_) => self.to_json(),
        }
    }

    /// JSON text of the value (maps and lists as the Collector renders them).
    pub fn to_json(&self) -> String {
        let mut out = String::new();
        self.write_json(&mut out);
        out
    }

    fn write_json(&self, out: &mut String) {
        match self {
            Value::Nil => out.push_str("null"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Int(i) => out.push_str(&i.to_string()),
            Value::Double(d) if d.is_finite() => out.push_str(&format_double(*d)),
            Value::Double(_) => out.push_str("null"),
            Value::Str(s) => json_string(s, out),
            Value::Bytes(b) => json_string(&crate::ottl::funcs::hex(b), out),
            Value::List(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    v.write_json(out);
                }
                out.push(']');
            }
            Value::Map(entries) => {
                // Sorted by key, as encoding/json writes maps, so the text is stable.
                let mut sorted: Vec<_> = entries.iter().collect();
                sorted.sort_by(|a, b| a.0.cmp(&b.0));
                sorted.dedup_by(|a, b| a.0 == b.0);
                out.push('{');
                for (i, (k, v)) in sorted.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    json_string(k, out);
                    out.push(':');
                    v.write_json(out);
                }
                out.push('}');
            }
        }
    }

    /// Compares as OTTL does: numbers across int and double, strings by bytes, bools
    /// and bytes for equality only; values of unlike types are unequal and unordered.
    pub fn compare(&self, other: &Value<'_>) -> Option<Ordering> {
        match (self, other) {
            (Value::Nil, Value::Nil) => Some(Ordering::Equal),
            (Value::Int(a), Value::Int(b)) => Some(a.cmp(b)),
            (Value::Int(a), Value::Double(b)) => (*a as f64).partial_cmp(b),
            (Value::Double(a), Value::Int(b)) => a.partial_cmp(&(*b as f64)),
            (Value::Double(a), Value::Double(b)) => a.partial_cmp(b),
            (Value::Str(a), Value::Str(b)) => Some(a.as_bytes().cmp(b.as_bytes())),
            (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
            (Value::Bytes(a), Value::Bytes(b)) => Some(a.cmp(b)),
            (Value::List(_), Value::List(_)) | (Value::Map(_), Value::Map(_)) => {
                (values_equal(self, other)).then_some(Ordering::Equal)
            }
            _ => None,
        }
    }

    /// Encodes the value as an `AnyValue` message's payload.
    pub fn encode_any(&self, out: &mut Vec<u8>) {
        match self {
            Value::Nil => {}
            Value::Str(s) => wire::put_bytes(out, 1, s.as_bytes()),
            Value::Bool(b) => wire::put_varint_field(out, 2, u64::from(*b)),
            Value::Int(i) => wire::put_varint_field(out, 3, *i as u64),
            Value::Double(d) => wire::put_fixed64_field(out, 4, d.to_bits()),
            Value::List(items) => {
                let mut list = Vec::new();
                for v in items {
                    let mut any = Vec::new();
                    v.encode_any(&mut any);
                    wire::put_bytes(&mut list, 1, &any);
                }
                wire::put_bytes(out, 5, &list);
            }
            Value::Map(entries) => {
                let mut map = Vec::new();
                for (k, v) in entries {
                    encode_key_value(&mut map, 1, k, v);
                }
                wire::put_bytes(out, 6, &map);
            }
            Value::Bytes(b) => wire::put_bytes(out, 7, b),
        }
    }

    /// Decodes an `AnyValue` payload, borrowing strings and bytes. Malformed bytes read
    /// as nil (the receiver's validation has already refused them).
    pub fn decode_any(buf: &'a [u8]) -> Value<'a> {
        Self::decode_any_at(buf, 0)
    }

    fn decode_any_at(buf: &'a [u8], depth: usize) -> Value<'a> {
        let mut value = Value::Nil;
        for f in Reader::new(buf) {
            value = match f.number {
                1 => Value::Str(String::from_utf8_lossy(f.bytes())),
                2 => Value::Bool(f.varint() != 0),
                3 => Value::Int(f.varint() as i64),
                4 => Value::Double(f64::from_bits(f.fixed64())),
                5 if depth < MAX_DEPTH => Value::List(
                    Reader::new(f.bytes())
                        .filter(|g| g.number == 1)
                        .map(|g| Value::decode_any_at(g.bytes(), depth + 1))
                        .collect(),
                ),
                6 if depth < MAX_DEPTH => Value::Map(
                    Reader::new(f.bytes())
                        .filter(|g| g.number == 1)
                        .map(|g| decode_key_value(g.bytes(), depth + 1))
                        .collect(),
                ),
                7 => Value::Bytes(Cow::Borrowed(f.bytes())),
                _ => continue,
            };
        }
        value
    }
}

/// Nesting this deep in an attribute value is read as nil rather than recursed into.
const MAX_DEPTH: usize = 64;

/// Decodes a `KeyValue` payload.
pub fn decode_key_value(buf: &[u8], depth: usize) -> (Cow<'_, str>, Value<'_>) {
    let mut key = Cow::Borrowed("");
    let mut value = Value::Nil;
    for f in Reader::new(buf) {
        match f.number {
            1 => key = String::from_utf8_lossy(f.bytes()),
            2 => value = Value::decode_any_at(f.bytes(), depth),
            _ => {}
        }
    }
    (key, value)
}

/// Appends a `KeyValue` as field `number`.
pub fn encode_key_value(out: &mut Vec<u8>, number: u32, key: &str, value: &Value<'_>) {
    let mut any = Vec::new();
    value.encode_any(&mut any);
    let mut kv = Vec::with_capacity(key.len() + any.len() + 8);
    wire::put_bytes(&mut kv, 1, key.as_bytes());
    wire::put_bytes(&mut kv, 2, &any);
    wire::put_bytes(out, number, &kv);
}

fn values_equal(a: &Value<'_>, b: &Value<'_>) -> bool {
    match (a, b) {
        (Value::List(x), Value::List(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| values_equal(a, b))
        }
        (Value::Map(x), Value::Map(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| b.get(k).is_some_and(|w| values_equal(v, w)))
        }
        _ => a.compare(b) == Some(Ordering::Equal),
    }
}

/// A double as Go's `strconv.FormatFloat(f, 'f', -1, 64)` writes it: shortest, no
/// exponent.
pub fn format_double(d: f64) -> String {
    if d.is_nan() {
        return "NaN".into();
    }
    if d.is_infinite() {
        return if d > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    let s = format!("{d}");
    s
}

fn json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}
