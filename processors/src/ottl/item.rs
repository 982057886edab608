//! The OTTL contexts over encoded OTLP: which paths each context has, where they are in
//! the protobuf, and how to read and write them without decoding the item.

use std::borrow::Cow;

use super::parse::{Key, Path};
use super::value::{decode_key_value, encode_key_value, Value};
use super::wire::{self, Reader};

/// An OTTL context: what one evaluation looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    Resource,
    Scope,
    Span,
    SpanEvent,
    Metric,
    DataPoint,
    Log,
}

impl Context {
    pub fn name(self) -> &'static str {
        match self {
            Context::Resource => "resource",
            Context::Scope => "scope",
            Context::Span => "span",
            Context::SpanEvent => "spanevent",
            Context::Metric => "metric",
            Context::DataPoint => "datapoint",
            Context::Log => "log",
        }
    }

    pub fn parse(name: &str) -> Option<Context> {
        Some(match name {
            "resource" => Context::Resource,
            "scope" | "instrumentation_scope" => Context::Scope,
            "span" => Context::Span,
            "spanevent" => Context::SpanEvent,
            "metric" => Context::Metric,
            "datapoint" => Context::DataPoint,
            "log" | "log_record" => Context::Log,
            _ => return None,
        })
    }
}

/// Which message of the evaluation a path reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum On {
    Item,
    Resource,
    Scope,
    /// The span around a span event; the metric around a data point.
    Parent,
}

/// How a field is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    Str,
    Bytes,
    /// An int or an enum in a varint.
    Int,
    Bool,
    /// Nanosecond timestamps, counts.
    Fixed64,
    SFixed64,
    Double,
    Fixed32,
    /// An `AnyValue` message (a log body).
    Any,
    /// Repeated `KeyValue`.
    Attributes,
}

/// Where a value lives: a field of one message, possibly inside a nested one
/// (`status.code` is field 3 of the span's field 15).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loc {
    pub on: On,
    pub nested: Option<u32>,
    pub number: u32,
    pub ty: Ty,
}

/// Values computed from several fields or from the surrounding messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Computed {
    /// `trace_id.string` and the like: lowercase hex of a bytes field.
    Hex(On, u32),
    /// The metric's data type (METRIC_DATA_TYPE_*).
    MetricType(On),
    AggregationTemporality(On),
    IsMonotonic(On),
}

/// A resolved path: a location or a computed value, then keys into it.
#[derive(Debug, Clone, PartialEq)]
pub struct Access {
    pub source: Source,
    pub keys: Vec<Key>,
    pub text: String,
    /// A search for the first key's bytes, made once: an item they do not occur in has
    /// no attribute of that key.
    pub finder: Option<KeyFinder>,
}

/// A compiled substring search for a key.
#[derive(Debug, Clone)]
pub struct KeyFinder(Box<memchr::memmem::Finder<'static>>);

impl KeyFinder {
    pub fn new(key: &str) -> Self {
        KeyFinder(Box::new(
            memchr::memmem::Finder::new(key.as_bytes()).into_owned(),
        ))
    }

    pub fn occurs_in(&self, msg: &[u8]) -> bool {
        self.0.needle().is_empty() || self.0.find(msg).is_some()
    }
}

/// Paths compare by their text and keys; the search follows from the key.
impl PartialEq for KeyFinder {
    fn eq(&self, other: &Self) -> bool {
        self.0.needle() == other.0.needle()
    }
}

impl Access {
    /// Whether the first key may be among `msg`'s attributes.
    fn mentioned_in(&self, msg: &[u8]) -> bool {
        self.finder.as_ref().is_none_or(|f| f.occurs_in(msg))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    Loc(Loc),
    Computed(Computed),
}

/// One item being evaluated: its message (copied on first edit) and the messages
/// around it.
#[derive(Debug, Clone)]
pub struct Item<'a> {
    pub context: Context,
    pub msg: Cow<'a, [u8]>,
    pub resource: &'a [u8],
    pub scope: &'a [u8],
    pub parent: &'a [u8],
    /// For a data point: the number of the field its metric keeps its data in (5 gauge,
    /// 7 sum, 9 histogram, 10 exponential histogram, 11 summary).
    pub data: u32,
    /// For a data point: its data message's aggregation temporality and monotonicity,
    /// read once per data message by the walk.
    pub data_kind: DataKind,
}

/// A metric data message's aggregation temporality (field 2) and monotonicity (field 3).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DataKind {
    pub temporality: u64,
    pub monotonic: bool,
}

impl DataKind {
    /// Reads them from the data message (a `Sum`, `Histogram`, `ExponentialHistogram`).
    pub fn of(msg: &[u8]) -> Self {
        let mut kind = DataKind::default();
        for f in Reader::new(msg) {
            match f.number {
                2 => kind.temporality = f.varint(),
                3 => kind.monotonic = f.varint() != 0,
                _ => {}
            }
        }
        kind
    }
}

impl<'a> Item<'a> {
    pub fn new(context: Context, msg: &'a [u8]) -> Self {
        Item {
            context,
            msg: Cow::Borrowed(msg),
            resource: &[],
            scope: &[],
            parent: &[],
            data: 0,
            data_kind: DataKind::default(),
        }
    }

    fn message(&self, on: On) -> &[u8] {
        match on {
            On::Item => &self.msg,
            On::Resource => self.resource,
            On::Scope => self.scope,
            On::Parent => self.parent,
        }
    }

    fn context_of(&self, on: On) -> Context {
        match on {
            On::Item => self.context,
            On::Resource => Context::Resource,
            On::Scope => Context::Scope,
            On::Parent if self.context == Context::SpanEvent => Context::Span,
            On::Parent => Context::Metric,
        }
    }

    /// Reads a path; missing fields and keys read as nil.
    pub fn read(&self, access: &Access) -> Value<'_> {
        let base = match &access.source {
            Source::Loc(loc) => {
                // `attributes["k"]`: found without decoding the other attributes.
                if loc.ty == Ty::Attributes {
                    if let Some(Key::Str(k)) = access.keys.first() {
                        let msg = self.message(loc.on);
                        if !access.mentioned_in(msg) {
                            return Value::Nil;
                        }
                        let v = scan_attribute(msg, attr_number(loc, self.data), k);
                        return index(v, &access.keys[1..]);
                    }
                }
                read_loc(self.message(loc.on), loc, self.data)
            }
            Source::Computed(c) => self.computed(*c),
        };
        index(base, &access.keys)
    }

    fn attribute(&self, loc: &Loc, key: &str) -> Value<'_> {
        attribute(self.message(loc.on), attr_number(loc, self.data), key)
    }

    fn computed(&self, c: Computed) -> Value<'_> {
        match c {
            Computed::Hex(on, number) => {
                let bytes = wire::last(self.message(on), number)
                    .map(|f| f.bytes())
                    .unwrap_or(&[]);
                Value::Str(Cow::Owned(super::funcs::hex(bytes)))
            }
            Computed::MetricType(on) => Value::Int(metric_type(self.metric_data(on).0)),
            Computed::AggregationTemporality(on) => match self.metric_data(on) {
                (7 | 9 | 10, kind) => Value::Int(kind.temporality as i64),
                _ => Value::Int(0),
            },
            Computed::IsMonotonic(on) => {
                let (data, kind) = self.metric_data(on);
                Value::Bool(data == 7 && kind.monotonic)
            }
        }
    }

    /// The metric's data field number and kind.
    fn metric_data(&self, on: On) -> (u32, DataKind) {
        if self.context == Context::DataPoint && on == On::Parent {
            return (self.data, self.data_kind);
        }
        let metric = self.message(on);
        Reader::new(metric)
            .filter(|f| matches!(f.number, 5 | 7 | 9 | 10 | 11))
            .map(|f| (f.number, DataKind::of(f.bytes())))
            .last()
            .unwrap_or_default()
    }

    /// Writes `value` at a path of the item itself (the compiler refused other paths).
    /// Nil leaves the path as it is, as in the Collector.
    pub fn write(&mut self, access: &Access, value: Value<'_>) -> Result<(), String> {
        let Source::Loc(loc) = &access.source else {
            return Err(format!("{} cannot be set", access.text));
        };
        if loc.on != On::Item {
            return Err(format!(
                "{} cannot be set in the {} context",
                access.text,
                self.context.name()
            ));
        }
        if matches!(value, Value::Nil) {
            return Ok(());
        }
        let number = attr_number(loc, self.data);
        if loc.ty == Ty::Attributes {
            return match access.keys.split_first() {
                None => match value {
                    Value::Map(entries) => {
                        let mut fields = Vec::new();
                        for (k, v) in &entries {
                            encode_key_value(&mut fields, number, k, v);
                        }
                        self.msg = Cow::Owned(wire::replace_field(&self.msg, number, &fields));
                        Ok(())
                    }
                    other => Err(format!(
                        "{} takes a map, not {}",
                        access.text,
                        other.type_name()
                    )),
                },
                Some((Key::Str(k), [])) => {
                    let present = access.mentioned_in(&self.msg);
                    self.set_attribute(number, k, &value, present);
                    Ok(())
                }
                Some((Key::Str(k), rest)) => {
                    let mut top = self.attribute(loc, k).into_owned();
                    set_in(&mut top, rest, value.into_owned())?;
                    self.set_attribute(number, k, &top, true);
                    Ok(())
                }
                Some((Key::Int(_), _)) => {
                    Err(format!("{}: attributes are keyed by strings", access.text))
                }
            };
        }
        let mut field = Vec::new();
        let value = if access.keys.is_empty() {
            value
        } else {
            let mut top = read_loc(&self.msg, loc, self.data).into_owned();
            set_in(&mut top, &access.keys, value.into_owned())?;
            top
        };
        encode_scalar(&mut field, loc.number, loc.ty, &value).ok_or_else(|| {
            format!(
                "{} takes {}, not {}",
                access.text,
                ty_name(loc.ty),
                value.type_name()
            )
        })?;
        self.msg = Cow::Owned(match loc.nested {
            None => wire::replace_field(&self.msg, loc.number, &field),
            Some(outer) => {
                let inner = wire::last(&self.msg, outer)
                    .map(|f| f.bytes())
                    .unwrap_or(&[]);
                let new_inner = wire::replace_field(inner, loc.number, &field);
                let mut wrapped = Vec::new();
                wire::put_bytes(&mut wrapped, outer, &new_inner);
                wire::replace_field(&self.msg, outer, &wrapped)
            }
        });
        Ok(())
    }

    /// Replaces attribute `key` (every entry with that key) with one entry, keeping the
    /// other attributes as bytes.
    /// `present` false says the key's bytes do not occur in the item.
    fn set_attribute(&mut self, number: u32, key: &str, value: &Value<'_>, present: bool) {
        let mut out = Vec::with_capacity(self.msg.len() + key.len() + 32);
        if present {
            wire::copy_without(&mut out, &self.msg, |f| {
                f.number == number && key_value_if(f.bytes(), key).is_some()
            });
        } else {
            out.extend_from_slice(&self.msg);
        }
        encode_key_value(&mut out, number, key, value);
        self.msg = Cow::Owned(out);
    }

    /// The context a path of this item reads (for messages in errors).
    pub fn describe(&self, on: On) -> &'static str {
        self.context_of(on).name()
    }
}

/// The last attribute `key` among the `KeyValue` fields `number` of `msg` (nil when
/// absent), without decoding the other attributes.
pub fn attribute<'m>(msg: &'m [u8], number: u32, key: &str) -> Value<'m> {
    if !mentions(msg, key) {
        return Value::Nil;
    }
    scan_attribute(msg, number, key)
}

/// [`attribute`] without the search first.
fn scan_attribute<'m>(msg: &'m [u8], number: u32, key: &str) -> Value<'m> {
    let mut found = Value::Nil;
    for f in Reader::new(msg).filter(|f| f.number == number) {
        if let Some(any) = key_value_if(f.bytes(), key) {
            found = Value::decode_any(any);
        }
    }
    found
}

/// Whether `key`'s bytes occur anywhere in `msg`: when they do not, no attribute of it
/// has that key, which one fast search says without reading a field.
#[inline]
pub fn mentions(msg: &[u8], key: &str) -> bool {
    key.is_empty() || memchr::memmem::find(msg, key.as_bytes()).is_some()
}

/// The value of a `KeyValue` payload whose key is `key`.
#[inline]
pub fn key_value_if<'b>(kv: &'b [u8], key: &str) -> Option<&'b [u8]> {
    // As encoders write it, a key and then a value ending the message: told apart
    // without the general loop.
    if let [0x0a, len, rest @ ..] = kv {
        let len = usize::from(*len);
        if len < 0x80 && rest.len() >= len {
            let (k, tail) = rest.split_at(len);
            let value = match tail {
                [] => Some(&[][..]),
                [0x12, more @ ..] => {
                    let mut pos = 0;
                    wire::varint(more, &mut pos)
                        .filter(|&n| n == (more.len() - pos) as u64)
                        .map(|_| &more[pos..])
                }
                _ => None,
            };
            if let Some(value) = value {
                return (k == key.as_bytes()).then_some(value);
            }
        }
    }
    let mut matched = false;
    let mut value: &[u8] = &[];
    for f in Reader::new(kv) {
        match f.number {
            1 => matched = f.bytes() == key.as_bytes(),
            2 => value = f.bytes(),
            _ => {}
        }
    }
    matched.then_some(value)
}

/// Data points keep their attributes in different fields by type.
fn attr_number(loc: &Loc, data: u32) -> u32 {
    if loc.ty == Ty::Attributes && loc.number == DATAPOINT_ATTRIBUTES {
        match data {
            9 => 9,
            10 => 1,
            _ => 7,
        }
    } else {
        loc.number
    }
}

/// A marker number: a data point's attributes, resolved by type at read time.
const DATAPOINT_ATTRIBUTES: u32 = u32::MAX;

fn read_loc<'b>(msg: &'b [u8], loc: &Loc, data: u32) -> Value<'b> {
    let msg = match loc.nested {
        Some(outer) => wire::last(msg, outer).map(|f| f.bytes()).unwrap_or(&[]),
        None => msg,
    };
    if loc.ty == Ty::Attributes {
        let number = attr_number(loc, data);
        return Value::Map(
            Reader::new(msg)
                .filter(|f| f.number == number)
                .map(|f| decode_key_value(f.bytes(), 1))
                .collect(),
        );
    }
    let field = wire::last(msg, loc.number);
    match (loc.ty, field) {
        (Ty::Str, f) => Value::Str(String::from_utf8_lossy(f.map(|f| f.bytes()).unwrap_or(&[]))),
        (Ty::Bytes, f) => Value::Bytes(Cow::Borrowed(f.map(|f| f.bytes()).unwrap_or(&[]))),
        (Ty::Int, f) => Value::Int(f.map(|f| f.varint()).unwrap_or(0) as i64),
        (Ty::Bool, f) => Value::Bool(f.is_some_and(|f| f.varint() != 0)),
        (Ty::Fixed64, f) => Value::Int(f.map(|f| f.fixed64()).unwrap_or(0) as i64),
        (Ty::SFixed64, f) => Value::Int(f.map(|f| f.fixed64()).unwrap_or(0) as i64),
        (Ty::Double, f) => Value::Double(f64::from_bits(f.map(|f| f.fixed64()).unwrap_or(0))),
        (Ty::Fixed32, f) => Value::Int(i64::from(f.map(|f| f.fixed32()).unwrap_or(0))),
        (Ty::Any, Some(f)) => Value::decode_any(f.bytes()),
        (Ty::Any, None) => Value::Nil,
        (Ty::Attributes, _) => Value::Nil,
    }
}

fn ty_name(ty: Ty) -> &'static str {
    match ty {
        Ty::Str => "a string",
        Ty::Bytes => "bytes",
        Ty::Int | Ty::Fixed64 | Ty::SFixed64 | Ty::Fixed32 => "an int",
        Ty::Bool => "a bool",
        Ty::Double => "a double",
        Ty::Any => "any value",
        Ty::Attributes => "a map",
    }
}

fn encode_scalar(out: &mut Vec<u8>, number: u32, ty: Ty, value: &Value<'_>) -> Option<()> {
    match (ty, value) {
        (Ty::Str, Value::Str(s)) => wire::put_bytes(out, number, s.as_bytes()),
        (Ty::Bytes, Value::Bytes(b)) => wire::put_bytes(out, number, b),
        (Ty::Int, Value::Int(i)) => wire::put_varint_field(out, number, *i as u64),
        (Ty::Bool, Value::Bool(b)) => wire::put_varint_field(out, number, u64::from(*b)),
        (Ty::Fixed64 | Ty::SFixed64, Value::Int(i)) => {
            wire::put_fixed64_field(out, number, *i as u64)
        }
        (Ty::Fixed32, Value::Int(i)) => wire::put_fixed32_field(out, number, *i as u32),
        (Ty::Double, Value::Double(d)) => wire::put_fixed64_field(out, number, d.to_bits()),
        (Ty::Double, Value::Int(i)) => wire::put_fixed64_field(out, number, (*i as f64).to_bits()),
        (Ty::Any, v) => {
            let mut any = Vec::new();
            v.encode_any(&mut any);
            wire::put_bytes(out, number, &any);
        }
        _ => return None,
    }
    Some(())
}

/// Keys into a value: map keys and list indexes; anything missing is nil.
pub fn index<'b>(value: Value<'b>, keys: &[Key]) -> Value<'b> {
    let mut v = value;
    for k in keys {
        v = match (v, k) {
            (Value::Map(entries), Key::Str(s)) => entries
                .into_iter()
                .rev()
                .find(|(key, _)| key == s)
                .map(|(_, v)| v)
                .unwrap_or(Value::Nil),
            (Value::List(items), Key::Int(i)) => usize::try_from(*i)
                .ok()
                .and_then(|i| items.into_iter().nth(i))
                .unwrap_or(Value::Nil),
            _ => Value::Nil,
        };
    }
    v
}

/// Sets `keys` inside `target` (creating maps on the way, as the Collector does).
fn set_in(target: &mut Value<'static>, keys: &[Key], value: Value<'static>) -> Result<(), String> {
    let Some((first, rest)) = keys.split_first() else {
        *target = value;
        return Ok(());
    };
    match (target, first) {
        (Value::Map(entries), Key::Str(k)) => {
            if let Some(pos) = entries.iter().rposition(|(key, _)| key == k) {
                set_in(&mut entries[pos].1, rest, value)
            } else {
                let mut child = Value::Map(Vec::new());
                set_in(&mut child, rest, value)?;
                entries.push((Cow::Owned(k.clone()), child));
                Ok(())
            }
        }
        (Value::List(items), Key::Int(i)) => {
            let slot = usize::try_from(*i).ok().and_then(|i| items.get_mut(i));
            match slot {
                Some(slot) => set_in(slot, rest, value),
                None => Err(format!("index {i} is out of range")),
            }
        }
        (t @ Value::Nil, Key::Str(_)) => {
            *t = Value::Map(Vec::new());
            set_in(t, keys, value)
        }
        (t, _) => Err(format!("cannot index into {}", t.type_name())),
    }
}

fn metric_type(data: u32) -> i64 {
    match data {
        5 => 1,
        7 => 2,
        9 => 3,
        10 => 4,
        11 => 5,
        _ => 0,
    }
}

/// Resolves a path in a context, or says what paths there are.
pub fn resolve(context: Context, path: &Path) -> Result<Access, String> {
    let names: Vec<&str> = path.names.iter().map(String::as_str).collect();
    let text = path.to_string();
    let (on, ctx, rest) = split_prefix(context, &names);
    let source = field(ctx, on, rest).ok_or_else(|| {
        format!(
            "the {} context has no path `{}`; it has {}",
            context.name(),
            names.join("."),
            paths_of(context)
        )
    })?;
    if !path.keys.is_empty() {
        let keyed = matches!(
            &source,
            Source::Loc(Loc {
                ty: Ty::Attributes | Ty::Any,
                ..
            })
        );
        if !keyed {
            return Err(format!(
                "`{}` cannot be indexed with [...]",
                names.join(".")
            ));
        }
    }
    let finder = match (&source, path.keys.first()) {
        (Source::Loc(loc), Some(Key::Str(k))) if loc.ty == Ty::Attributes => {
            Some(KeyFinder::new(k))
        }
        _ => None,
    };
    Ok(Access {
        source,
        keys: path.keys.clone(),
        text,
        finder,
    })
}

/// Which message a path's first names point at: `resource.`, `scope.` or
/// `instrumentation_scope.`, the parent's name, or the context's own name.
fn split_prefix<'n>(context: Context, names: &'n [&'n str]) -> (On, Context, &'n [&'n str]) {
    let parent = match context {
        Context::SpanEvent => Some(("span", Context::Span)),
        Context::DataPoint => Some(("metric", Context::Metric)),
        _ => None,
    };
    match names {
        [first, rest @ ..] if !rest.is_empty() => {
            if *first == "resource" && context != Context::Resource {
                return (On::Resource, Context::Resource, rest);
            }
            if matches!(*first, "scope" | "instrumentation_scope")
                && !matches!(context, Context::Resource | Context::Scope)
            {
                return (On::Scope, Context::Scope, rest);
            }
            if let Some((name, ctx)) = parent {
                if *first == name {
                    return (On::Parent, ctx, rest);
                }
            }
            if Context::parse(first) == Some(context) {
                return (On::Item, context, rest);
            }
            (On::Item, context, names)
        }
        _ => (On::Item, context, names),
    }
}

fn loc(on: On, number: u32, ty: Ty) -> Option<Source> {
    Some(Source::Loc(Loc {
        on,
        nested: None,
        number,
        ty,
    }))
}

fn field(context: Context, on: On, names: &[&str]) -> Option<Source> {
    use Ty::*;
    match (context, names) {
        (Context::Resource, ["attributes"]) => loc(on, 1, Attributes),
        (Context::Resource, ["dropped_attributes_count"]) => loc(on, 2, Int),
        (Context::Scope, ["name"]) => loc(on, 1, Str),
        (Context::Scope, ["version"]) => loc(on, 2, Str),
        (Context::Scope, ["attributes"]) => loc(on, 3, Attributes),
        (Context::Scope, ["dropped_attributes_count"]) => loc(on, 4, Int),
        (Context::Span, ["trace_id"]) => loc(on, 1, Bytes),
        (Context::Span, ["trace_id", "string"]) => Some(Source::Computed(Computed::Hex(on, 1))),
        (Context::Span, ["span_id"]) => loc(on, 2, Bytes),
        (Context::Span, ["span_id", "string"]) => Some(Source::Computed(Computed::Hex(on, 2))),
        (Context::Span, ["trace_state"]) => loc(on, 3, Str),
        (Context::Span, ["parent_span_id"]) => loc(on, 4, Bytes),
        (Context::Span, ["parent_span_id", "string"]) => {
            Some(Source::Computed(Computed::Hex(on, 4)))
        }
        (Context::Span, ["name"]) => loc(on, 5, Str),
        (Context::Span, ["kind"]) => loc(on, 6, Int),
        (Context::Span, ["start_time_unix_nano"]) => loc(on, 7, Fixed64),
        (Context::Span, ["end_time_unix_nano"]) => loc(on, 8, Fixed64),
        (Context::Span, ["attributes"]) => loc(on, 9, Attributes),
        (Context::Span, ["dropped_attributes_count"]) => loc(on, 10, Int),
        (Context::Span, ["dropped_events_count"]) => loc(on, 12, Int),
        (Context::Span, ["dropped_links_count"]) => loc(on, 14, Int),
        (Context::Span, ["flags"]) => loc(on, 16, Fixed32),
        (Context::Span, ["status", "code"]) => Some(Source::Loc(Loc {
            on,
            nested: Some(15),
            number: 3,
            ty: Int,
        })),
        (Context::Span, ["status", "message"]) => Some(Source::Loc(Loc {
            on,
            nested: Some(15),
            number: 2,
            ty: Str,
        })),
        (Context::SpanEvent, ["time_unix_nano"]) => loc(on, 1, Fixed64),
        (Context::SpanEvent, ["name"]) => loc(on, 2, Str),
        (Context::SpanEvent, ["attributes"]) => loc(on, 3, Attributes),
        (Context::SpanEvent, ["dropped_attributes_count"]) => loc(on, 4, Int),
        (Context::Log, ["time_unix_nano"]) => loc(on, 1, Fixed64),
        (Context::Log, ["observed_time_unix_nano"]) => loc(on, 11, Fixed64),
        (Context::Log, ["severity_number"]) => loc(on, 2, Int),
        (Context::Log, ["severity_text"]) => loc(on, 3, Str),
        (Context::Log, ["body"]) => loc(on, 5, Any),
        (Context::Log, ["attributes"]) => loc(on, 6, Attributes),
        (Context::Log, ["dropped_attributes_count"]) => loc(on, 7, Int),
        (Context::Log, ["flags"]) => loc(on, 8, Fixed32),
        (Context::Log, ["trace_id"]) => loc(on, 9, Bytes),
        (Context::Log, ["trace_id", "string"]) => Some(Source::Computed(Computed::Hex(on, 9))),
        (Context::Log, ["span_id"]) => loc(on, 10, Bytes),
        (Context::Log, ["span_id", "string"]) => Some(Source::Computed(Computed::Hex(on, 10))),
        (Context::Log, ["event_name"]) => loc(on, 12, Str),
        (Context::Metric, ["name"]) => loc(on, 1, Str),
        (Context::Metric, ["description"]) => loc(on, 2, Str),
        (Context::Metric, ["unit"]) => loc(on, 3, Str),
        (Context::Metric, ["type"]) => Some(Source::Computed(Computed::MetricType(on))),
        (Context::Metric, ["aggregation_temporality"]) => {
            Some(Source::Computed(Computed::AggregationTemporality(on)))
        }
        (Context::Metric, ["is_monotonic"]) => Some(Source::Computed(Computed::IsMonotonic(on))),
        (Context::DataPoint, ["attributes"]) => loc(on, DATAPOINT_ATTRIBUTES, Attributes),
        (Context::DataPoint, ["start_time_unix_nano"]) => loc(on, 2, Fixed64),
        (Context::DataPoint, ["time_unix_nano"]) => loc(on, 3, Fixed64),
        (Context::DataPoint, ["value_double"]) => loc(on, 4, Double),
        (Context::DataPoint, ["value_int"]) => loc(on, 6, SFixed64),
        (Context::DataPoint, ["count"]) => loc(on, 4, Fixed64),
        (Context::DataPoint, ["sum"]) => loc(on, 5, Double),
        _ => None,
    }
}

fn paths_of(context: Context) -> &'static str {
    match context {
        Context::Resource => "attributes, dropped_attributes_count",
        Context::Scope => "name, version, attributes, dropped_attributes_count, resource.attributes",
        Context::Span => "name, kind, attributes[\"k\"], status.code, status.message, trace_id, span_id, parent_span_id (each also .string), trace_state, start_time_unix_nano, end_time_unix_nano, flags, dropped_*_count, resource.attributes, instrumentation_scope.name/version/attributes",
        Context::SpanEvent => "name, time_unix_nano, attributes, dropped_attributes_count, span.<span path>, resource.attributes, instrumentation_scope.*",
        Context::Metric => "name, description, unit, type, aggregation_temporality, is_monotonic, resource.attributes, instrumentation_scope.*",
        Context::DataPoint => "attributes, start_time_unix_nano, time_unix_nano, value_double, value_int, count, sum, metric.<metric path>, resource.attributes, instrumentation_scope.*",
        Context::Log => "body, attributes, severity_number, severity_text, time_unix_nano, observed_time_unix_nano, trace_id, span_id (each also .string), flags, event_name, dropped_attributes_count, resource.attributes, instrumentation_scope.*",
    }
}
