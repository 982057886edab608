//! Checks an encoded OTLP export request against the OTLP schema without decoding it,
//! counting its items on the way.
//!
//! [`wire::Schema::count`](super::wire::Schema::count) only checks framing, so a request
//! holding one span that prost cannot decode (a name that is not UTF-8, a field with
//! another wire type than the schema's) used to be acknowledged, batched with other
//! clients' data, and then failed as a whole wherever the batch was decoded. This walk
//! visits every field of every message the request holds and refuses the request when:
//!
//! - a field the schema knows has another wire type (a repeated number may come packed
//!   or not, as protobuf parsers accept both; a packed one must hold whole elements);
//! - a string field (names, keys, string values, units, schema URLs…) is not UTF-8;
//! - a span's `trace_id` is not 16 bytes or its `span_id` not 8 (they are required);
//!   a `parent_span_id`, or the ids of a link, log record or exemplar, are neither empty
//!   nor 16 / 8 bytes;
//! - messages nest deeper than prost decodes (see [`MAX_DEPTH`]): only `AnyValue` can
//!   nest that deep.
//!
//! Fields the schema does not know are allowed, for forward compatibility, and are only
//! checked to be well-formed. The tables below mirror opentelemetry-proto v1 as
//! generated in the `opentelemetry-proto` crate; a test walks fully populated requests
//! in a strict mode that refuses unknown fields, so a table that lost a field or gave it
//! the wrong type fails there.
//!
//! # Why the whole request is refused
//!
//! A request with any invalid item is refused whole (400 / `INVALID_ARGUMENT`), with the
//! problem and its byte offset in the message. OTLP also allows a partial success (take
//! the good items, report how many were rejected), but the sender would then see a
//! success it rarely inspects, while the bad item points at an encoder bug that breaks
//! every request it touches: a clear error at the SDK is what gets that bug fixed. The
//! walk also stays a check, never a rewrite: the accepted bytes are forwarded exactly as
//! they came, with nothing to cut out of them.

use sidekick_config::Signal as SignalKind;

use super::wire::{read_varint, Fields, WireError, FIXED32, FIXED64, LEN, VARINT};

/// How deep messages may nest, counting the request's own fields as depth 1. prost
/// refuses to decode past its recursion limit of 100: a message at depth 101, or any
/// unknown field inside a message at depth 100. Accepting what prost then cannot decode
/// would bring back the failure this check exists for. In a span attribute that leaves
/// room for 31 nested `kvlistValue`s or 47 nested `arrayValue`s, so this is also what
/// bounds `AnyValue` nesting, well under the 64 levels a limit on `AnyValue` alone would
/// allow.
pub const MAX_DEPTH: u32 = 100;

const WRONG_WIRE_TYPE: &str = "wrong wire type for a known field";
const INVALID_UTF8: &str = "invalid UTF-8 in a string field";
const TOO_DEEP: &str = "AnyValue nested too deeply (messages over 100 levels deep)";
const PARTIAL_ELEMENT: &str = "packed repeated field ends inside an element";

/// What a field of the schema holds.
#[derive(Clone, Copy)]
enum Kind {
    /// Not in the schema: any well-formed field.
    Unknown,
    /// int32, int64, uint32, uint64, sint32, bool, enum.
    Varint,
    /// fixed64, sfixed64, double.
    Fixed64,
    /// fixed32.
    Fixed32,
    /// A string; a repeated string is one such field per element.
    Str,
    Bytes,
    Id(&'static IdRule),
    Nested(&'static Message),
    /// repeated fixed64 or double: packed, or one field per element.
    RepeatedFixed64,
    /// repeated uint64: packed, or one field per element.
    RepeatedVarint,
}

use Kind::*;

/// A trace or span id: `len` bytes, or empty when `empty_ok`.
struct IdRule {
    len: usize,
    empty_ok: bool,
    reason: &'static str,
}

/// A message type.
struct Message {
    /// What each field holds, from field 1 on; field numbers past the end are unknown.
    fields: &'static [Kind],
    /// Field numbers (as bits) that must be present: absent ids are empty ids.
    required: u32,
    /// Counts as one item (span, data point, log record).
    item: bool,
}

impl Message {
    const fn new(fields: &'static [Kind]) -> Self {
        Message {
            fields,
            required: 0,
            item: false,
        }
    }

    const fn item(fields: &'static [Kind]) -> Self {
        Message {
            fields,
            required: 0,
            item: true,
        }
    }
}

// The field tables, one per message, from field 1 on; the comment on each line gives
// the field's number and name. Reserved numbers are `Unknown`.

const TRACE_ID: Kind = Id(&IdRule {
    len: 16,
    empty_ok: false,
    reason: "trace_id must be 16 bytes",
});
const SPAN_ID: Kind = Id(&IdRule {
    len: 8,
    empty_ok: false,
    reason: "span_id must be 8 bytes",
});
const PARENT_SPAN_ID: Kind = Id(&IdRule {
    len: 8,
    empty_ok: true,
    reason: "parent_span_id must be empty or 8 bytes",
});
const OPTIONAL_TRACE_ID: Kind = Id(&IdRule {
    len: 16,
    empty_ok: true,
    reason: "trace_id must be empty or 16 bytes",
});
const OPTIONAL_SPAN_ID: Kind = Id(&IdRule {
    len: 8,
    empty_ok: true,
    reason: "span_id must be empty or 8 bytes",
});

// opentelemetry.proto.common.v1 and resource.v1

static ANY_VALUE: Message = Message::new(&[
    Str,                     // 1 string_value
    Varint,                  // 2 bool_value
    Varint,                  // 3 int_value
    Fixed64,                 // 4 double_value
    Nested(&ARRAY_VALUE),    // 5 array_value
    Nested(&KEY_VALUE_LIST), // 6 kvlist_value
    Bytes,                   // 7 bytes_value
    Varint,                  // 8 string_value_strindex
]);
static ARRAY_VALUE: Message = Message::new(&[
    Nested(&ANY_VALUE), // 1 values
]);
static KEY_VALUE_LIST: Message = Message::new(&[
    Nested(&KEY_VALUE), // 1 values
]);
static KEY_VALUE: Message = Message::new(&[
    Str,                // 1 key
    Nested(&ANY_VALUE), // 2 value
    Varint,             // 3 key_strindex
]);
static SCOPE: Message = Message::new(&[
    Str,                // 1 name
    Str,                // 2 version
    Nested(&KEY_VALUE), // 3 attributes
    Varint,             // 4 dropped_attributes_count
]);
static ENTITY_REF: Message = Message::new(&[
    Str, // 1 schema_url
    Str, // 2 type
    Str, // 3 id_keys
    Str, // 4 description_keys
]);
static RESOURCE: Message = Message::new(&[
    Nested(&KEY_VALUE),  // 1 attributes
    Varint,              // 2 dropped_attributes_count
    Nested(&ENTITY_REF), // 3 entity_refs
]);

// opentelemetry.proto.trace.v1

static TRACES_REQUEST: Message = Message::new(&[
    Nested(&RESOURCE_SPANS), // 1 resource_spans
]);
static RESOURCE_SPANS: Message = Message::new(&[
    Nested(&RESOURCE),    // 1 resource
    Nested(&SCOPE_SPANS), // 2 scope_spans
    Str,                  // 3 schema_url
]);
static SCOPE_SPANS: Message = Message::new(&[
    Nested(&SCOPE), // 1 scope
    Nested(&SPAN),  // 2 spans
    Str,            // 3 schema_url
]);
static SPAN: Message = Message {
    fields: &[
        TRACE_ID,           // 1 trace_id
        SPAN_ID,            // 2 span_id
        Str,                // 3 trace_state
        PARENT_SPAN_ID,     // 4 parent_span_id
        Str,                // 5 name
        Varint,             // 6 kind
        Fixed64,            // 7 start_time_unix_nano
        Fixed64,            // 8 end_time_unix_nano
        Nested(&KEY_VALUE), // 9 attributes
        Varint,             // 10 dropped_attributes_count
        Nested(&EVENT),     // 11 events
        Varint,             // 12 dropped_events_count
        Nested(&LINK),      // 13 links
        Varint,             // 14 dropped_links_count
        Nested(&STATUS),    // 15 status
        Fixed32,            // 16 flags
    ],
    required: 1 << 1 | 1 << 2,
    item: true,
};
static EVENT: Message = Message::new(&[
    Fixed64,            // 1 time_unix_nano
    Str,                // 2 name
    Nested(&KEY_VALUE), // 3 attributes
    Varint,             // 4 dropped_attributes_count
]);
static LINK: Message = Message::new(&[
    OPTIONAL_TRACE_ID,  // 1 trace_id
    OPTIONAL_SPAN_ID,   // 2 span_id
    Str,                // 3 trace_state
    Nested(&KEY_VALUE), // 4 attributes
    Varint,             // 5 dropped_attributes_count
    Fixed32,            // 6 flags
]);
static STATUS: Message = Message::new(&[
    Unknown, // 1 reserved
    Str,     // 2 message
    Varint,  // 3 code
]);

// opentelemetry.proto.logs.v1

static LOGS_REQUEST: Message = Message::new(&[
    Nested(&RESOURCE_LOGS), // 1 resource_logs
]);
static RESOURCE_LOGS: Message = Message::new(&[
    Nested(&RESOURCE),   // 1 resource
    Nested(&SCOPE_LOGS), // 2 scope_logs
    Str,                 // 3 schema_url
]);
static SCOPE_LOGS: Message = Message::new(&[
    Nested(&SCOPE),      // 1 scope
    Nested(&LOG_RECORD), // 2 log_records
    Str,                 // 3 schema_url
]);
static LOG_RECORD: Message = Message::item(&[
    Fixed64,            // 1 time_unix_nano
    Varint,             // 2 severity_number
    Str,                // 3 severity_text
    Unknown,            // 4 reserved
    Nested(&ANY_VALUE), // 5 body
    Nested(&KEY_VALUE), // 6 attributes
    Varint,             // 7 dropped_attributes_count
    Fixed32,            // 8 flags
    OPTIONAL_TRACE_ID,  // 9 trace_id
    OPTIONAL_SPAN_ID,   // 10 span_id
    Fixed64,            // 11 observed_time_unix_nano
    Str,                // 12 event_name
]);

// opentelemetry.proto.metrics.v1

static METRICS_REQUEST: Message = Message::new(&[
    Nested(&RESOURCE_METRICS), // 1 resource_metrics
]);
static RESOURCE_METRICS: Message = Message::new(&[
    Nested(&RESOURCE),      // 1 resource
    Nested(&SCOPE_METRICS), // 2 scope_metrics
    Str,                    // 3 schema_url
]);
static SCOPE_METRICS: Message = Message::new(&[
    Nested(&SCOPE),  // 1 scope
    Nested(&METRIC), // 2 metrics
    Str,             // 3 schema_url
]);
static METRIC: Message = Message::new(&[
    Str,                            // 1 name
    Str,                            // 2 description
    Str,                            // 3 unit
    Unknown,                        // 4 reserved
    Nested(&GAUGE),                 // 5 gauge
    Unknown,                        // 6 reserved
    Nested(&SUM),                   // 7 sum
    Unknown,                        // 8 reserved
    Nested(&HISTOGRAM),             // 9 histogram
    Nested(&EXPONENTIAL_HISTOGRAM), // 10 exponential_histogram
    Nested(&SUMMARY),               // 11 summary
    Nested(&KEY_VALUE),             // 12 metadata
]);
static GAUGE: Message = Message::new(&[
    Nested(&NUMBER_DATA_POINT), // 1 data_points
]);
static SUM: Message = Message::new(&[
    Nested(&NUMBER_DATA_POINT), // 1 data_points
    Varint,                     // 2 aggregation_temporality
    Varint,                     // 3 is_monotonic
]);
static HISTOGRAM: Message = Message::new(&[
    Nested(&HISTOGRAM_DATA_POINT), // 1 data_points
    Varint,                        // 2 aggregation_temporality
]);
static EXPONENTIAL_HISTOGRAM: Message = Message::new(&[
    Nested(&EXPONENTIAL_HISTOGRAM_DATA_POINT), // 1 data_points
    Varint,                                    // 2 aggregation_temporality
]);
static SUMMARY: Message = Message::new(&[
    Nested(&SUMMARY_DATA_POINT), // 1 data_points
]);
static NUMBER_DATA_POINT: Message = Message::item(&[
    Unknown,            // 1 reserved
    Fixed64,            // 2 start_time_unix_nano
    Fixed64,            // 3 time_unix_nano
    Fixed64,            // 4 as_double
    Nested(&EXEMPLAR),  // 5 exemplars
    Fixed64,            // 6 as_int
    Nested(&KEY_VALUE), // 7 attributes
    Varint,             // 8 flags
]);
static HISTOGRAM_DATA_POINT: Message = Message::item(&[
    Unknown,            // 1 reserved
    Fixed64,            // 2 start_time_unix_nano
    Fixed64,            // 3 time_unix_nano
    Fixed64,            // 4 count
    Fixed64,            // 5 sum
    RepeatedFixed64,    // 6 bucket_counts
    RepeatedFixed64,    // 7 explicit_bounds
    Nested(&EXEMPLAR),  // 8 exemplars
    Nested(&KEY_VALUE), // 9 attributes
    Varint,             // 10 flags
    Fixed64,            // 11 min
    Fixed64,            // 12 max
]);
static EXPONENTIAL_HISTOGRAM_DATA_POINT: Message = Message::item(&[
    Nested(&KEY_VALUE), // 1 attributes
    Fixed64,            // 2 start_time_unix_nano
    Fixed64,            // 3 time_unix_nano
    Fixed64,            // 4 count
    Fixed64,            // 5 sum
    Varint,             // 6 scale
    Fixed64,            // 7 zero_count
    Nested(&BUCKETS),   // 8 positive
    Nested(&BUCKETS),   // 9 negative
    Varint,             // 10 flags
    Nested(&EXEMPLAR),  // 11 exemplars
    Fixed64,            // 12 min
    Fixed64,            // 13 max
    Fixed64,            // 14 zero_threshold
]);
static BUCKETS: Message = Message::new(&[
    Varint,         // 1 offset
    RepeatedVarint, // 2 bucket_counts
]);
static SUMMARY_DATA_POINT: Message = Message::item(&[
    Unknown,                    // 1 reserved
    Fixed64,                    // 2 start_time_unix_nano
    Fixed64,                    // 3 time_unix_nano
    Fixed64,                    // 4 count
    Fixed64,                    // 5 sum
    Nested(&VALUE_AT_QUANTILE), // 6 quantile_values
    Nested(&KEY_VALUE),         // 7 attributes
    Varint,                     // 8 flags
]);
static VALUE_AT_QUANTILE: Message = Message::new(&[
    Fixed64, // 1 quantile
    Fixed64, // 2 value
]);
static EXEMPLAR: Message = Message::new(&[
    Unknown,            // 1 reserved
    Fixed64,            // 2 time_unix_nano
    Fixed64,            // 3 as_double
    OPTIONAL_SPAN_ID,   // 4 span_id
    OPTIONAL_TRACE_ID,  // 5 trace_id
    Fixed64,            // 6 as_int
    Nested(&KEY_VALUE), // 7 filtered_attributes
]);

/// Checks an encoded export request of `signal` and counts its items (spans, metric
/// data points, log records).
pub fn check(signal: SignalKind, buf: &[u8]) -> Result<usize, WireError> {
    Walk::new(false).request(signal, buf)
}

/// Walks one request, counting items.
struct Walk {
    items: usize,
    /// Refuses fields the schema does not know: for tests that the tables are complete.
    strict: bool,
}

impl Walk {
    fn new(strict: bool) -> Self {
        Walk { items: 0, strict }
    }

    fn request(mut self, signal: SignalKind, buf: &[u8]) -> Result<usize, WireError> {
        let request = match signal {
            SignalKind::Traces => &TRACES_REQUEST,
            SignalKind::Metrics => &METRICS_REQUEST,
            SignalKind::Logs => &LOGS_REQUEST,
        };
        self.message(request, buf, 0, 0)?;
        Ok(self.items)
    }

    /// Checks the fields of `buf`, a `message` at `depth` found at `base` in the request.
    fn message(
        &mut self,
        message: &'static Message,
        buf: &[u8],
        base: usize,
        depth: u32,
    ) -> Result<(), WireError> {
        if message.item {
            self.items += 1;
        }
        let mut seen = 0u32;
        for field in Fields::new(buf, base) {
            let field = field?;
            // Field numbers start at 1 (`Fields` refuses 0).
            let kind = message
                .fields
                .get(field.number as usize - 1)
                .copied()
                .unwrap_or(Unknown);
            let payload = &buf[field.payload_start..field.end];
            let fail = |reason| WireError {
                offset: base + field.start,
                reason,
            };
            let wire_type = field.wire_type;
            match kind {
                Unknown => {
                    if self.strict {
                        return Err(fail("field not in the schema"));
                    }
                    if depth >= MAX_DEPTH {
                        return Err(fail(TOO_DEEP));
                    }
                }
                Varint | Fixed64 | Fixed32 => {
                    let expected = match kind {
                        Varint => VARINT,
                        Fixed64 => FIXED64,
                        _ => FIXED32,
                    };
                    if wire_type != expected {
                        return Err(fail(WRONG_WIRE_TYPE));
                    }
                }
                Str => {
                    if wire_type != LEN {
                        return Err(fail(WRONG_WIRE_TYPE));
                    }
                    if !is_utf8(payload) {
                        return Err(fail(INVALID_UTF8));
                    }
                }
                Bytes => {
                    if wire_type != LEN {
                        return Err(fail(WRONG_WIRE_TYPE));
                    }
                }
                Id(rule) => {
                    if wire_type != LEN {
                        return Err(fail(WRONG_WIRE_TYPE));
                    }
                    if payload.len() != rule.len && !(rule.empty_ok && payload.is_empty()) {
                        return Err(fail(rule.reason));
                    }
                    seen |= 1 << field.number;
                }
                Nested(inner) => {
                    if wire_type != LEN {
                        return Err(fail(WRONG_WIRE_TYPE));
                    }
                    // Attributes are most of a request's fields: the common shape is
                    // checked straight through. Its `value` sits at depth + 2.
                    if std::ptr::eq(inner, &KEY_VALUE)
                        && depth + 1 < MAX_DEPTH
                        && plain_key_value(payload)
                    {
                        continue;
                    }
                    // Spans are most of a traces request, and an SDK writes them in one
                    // shape (they always sit at depth 3).
                    if std::ptr::eq(inner, &SPAN) && plain_span(payload) {
                        self.items += 1;
                        continue;
                    }
                    if depth >= MAX_DEPTH {
                        return Err(fail(TOO_DEEP));
                    }
                    self.message(inner, payload, base + field.payload_start, depth + 1)?;
                }
                RepeatedFixed64 => match wire_type {
                    FIXED64 => {}
                    LEN if payload.len().is_multiple_of(8) => {}
                    LEN => return Err(fail(PARTIAL_ELEMENT)),
                    _ => return Err(fail(WRONG_WIRE_TYPE)),
                },
                RepeatedVarint => match wire_type {
                    VARINT => {}
                    LEN => {
                        let mut pos = 0;
                        while pos < payload.len() {
                            read_varint(payload, &mut pos)
                                .map_err(|e| fail(e.reason(PARTIAL_ELEMENT)))?;
                        }
                    }
                    _ => return Err(fail(WRONG_WIRE_TYPE)),
                },
            }
        }
        let missing = message.required & !seen;
        if missing != 0 {
            // An absent id is an empty one: name the first, at the message's start.
            let number = missing.trailing_zeros() as usize;
            if let Some(Id(IdRule { reason, .. })) = message.fields.get(number - 1) {
                return Err(WireError {
                    offset: base,
                    reason,
                });
            }
        }
        Ok(())
    }
}

/// Whether `buf` is a `KeyValue` of the usual shape, and valid: a UTF-8 `key` (field 1)
/// then a `value` (field 2) that is empty or holds one string (UTF-8), bool, int or
/// double. This is what the general walk accepts for such bytes, without its table
/// dispatch per field. Any other shape, valid or not, is `false` and left to the general
/// walk, which then gives the exact error, if there is one.
#[inline(always)]
fn plain_key_value(buf: &[u8]) -> bool {
    const KEY: u8 = 1 << 3 | LEN;
    const VALUE: u8 = 2 << 3 | LEN;
    const STRING: u8 = 1 << 3 | LEN;
    const BOOL: u8 = 2 << 3 | VARINT;
    const INT: u8 = 3 << 3 | VARINT;
    const DOUBLE: u8 = 4 << 3 | FIXED64;
    let mut pos = 1;
    if buf.first() != Some(&KEY) {
        return false;
    }
    let Some(key) = len_delimited(buf, &mut pos) else {
        return false;
    };
    if !is_utf8(key) || buf.get(pos) != Some(&VALUE) {
        return false;
    }
    pos += 1;
    let Some(value) = len_delimited(buf, &mut pos) else {
        return false;
    };
    if pos != buf.len() {
        return false;
    }
    let mut at = 1;
    match value.first() {
        None => true,
        Some(&STRING) => len_delimited(value, &mut at).is_some_and(is_utf8) && at == value.len(),
        Some(&BOOL | &INT) => read_varint(value, &mut at).is_ok() && at == value.len(),
        Some(&DOUBLE) => value.len() == 9,
        Some(_) => false,
    }
}

/// Whether `buf` is a `Span` of the usual shape, and valid: any of its fields but
/// `events` and `links`, in any order, each of the kind and size the general walk
/// requires, with attributes of the shape [`plain_key_value`] takes and a status of a
/// message and a code. Checking that with one dispatch on the tag byte and no table, no
/// recursion and no error to build is what makes it cheaper than the general walk; any
/// other shape, valid or not, is `false` and left to the general walk, which then gives
/// the exact error, if there is one.
#[inline]
fn plain_span(buf: &[u8]) -> bool {
    const fn tag(number: u8, wire_type: u8) -> u8 {
        number << 3 | wire_type
    }
    const TRACE_ID: u8 = tag(1, LEN);
    const SPAN_ID: u8 = tag(2, LEN);
    const TRACE_STATE: u8 = tag(3, LEN);
    const PARENT_SPAN_ID: u8 = tag(4, LEN);
    const NAME: u8 = tag(5, LEN);
    const KIND: u8 = tag(6, VARINT);
    const START: u8 = tag(7, FIXED64);
    const END: u8 = tag(8, FIXED64);
    const ATTRIBUTE: u8 = tag(9, LEN);
    const DROPPED_ATTRIBUTES: u8 = tag(10, VARINT);
    const DROPPED_EVENTS: u8 = tag(12, VARINT);
    const DROPPED_LINKS: u8 = tag(14, VARINT);
    const STATUS: u8 = tag(15, LEN);
    // Field 16 needs a two-byte tag: 16 << 3 | FIXED32 as a varint.
    const FLAGS: [u8; 2] = [0x80 | FIXED32, 0x01];
    let mut pos = 0;
    let mut ids = 0u8;
    while let Some(&tag) = buf.get(pos) {
        pos += 1;
        let ok = match tag {
            TRACE_ID => {
                ids |= 1;
                len_delimited(buf, &mut pos).is_some_and(|id| id.len() == 16)
            }
            SPAN_ID => {
                ids |= 2;
                len_delimited(buf, &mut pos).is_some_and(|id| id.len() == 8)
            }
            PARENT_SPAN_ID => {
                len_delimited(buf, &mut pos).is_some_and(|id| id.is_empty() || id.len() == 8)
            }
            TRACE_STATE | NAME => len_delimited(buf, &mut pos).is_some_and(is_utf8),
            ATTRIBUTE => len_delimited(buf, &mut pos).is_some_and(plain_key_value),
            KIND | DROPPED_ATTRIBUTES | DROPPED_EVENTS | DROPPED_LINKS => {
                read_varint(buf, &mut pos).is_ok()
            }
            START | END => {
                pos += 8;
                pos <= buf.len()
            }
            STATUS => len_delimited(buf, &mut pos).is_some_and(plain_status),
            _ if tag == FLAGS[0] && buf.get(pos) == Some(&FLAGS[1]) => {
                pos += 5;
                pos <= buf.len()
            }
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    ids == 3
}

/// Whether `buf` is a valid `Status` of a UTF-8 message and a code, each optional.
#[inline]
fn plain_status(buf: &[u8]) -> bool {
    const MESSAGE: u8 = 2 << 3 | LEN;
    const CODE: u8 = 3 << 3 | VARINT;
    let mut pos = 0;
    while let Some(&tag) = buf.get(pos) {
        pos += 1;
        let ok = match tag {
            MESSAGE => len_delimited(buf, &mut pos).is_some_and(is_utf8),
            CODE => read_varint(buf, &mut pos).is_ok(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

/// The length-delimited payload at `pos` (its length varint first), moving past it.
#[inline(always)]
fn len_delimited<'a>(buf: &'a [u8], pos: &mut usize) -> Option<&'a [u8]> {
    let len = usize::try_from(read_varint(buf, pos).ok()?).ok()?;
    let end = pos.checked_add(len)?;
    let payload = buf.get(*pos..end)?;
    *pos = end;
    Some(payload)
}

/// Most strings are ASCII, and checking that inline is cheaper than a call for the short
/// ones.
#[inline(always)]
fn is_utf8(bytes: &[u8]) -> bool {
    is_ascii(bytes) || std::str::from_utf8(bytes).is_ok()
}

/// Whether `bytes` is ASCII: strings of up to 32 bytes (most keys and values) are read as
/// a few overlapping words, with no call and no loop.
#[inline(always)]
fn is_ascii(bytes: &[u8]) -> bool {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
    let half = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    match bytes.len() {
        n @ 16..=32 => (word(0) | word(8) | word(n - 16) | word(n - 8)) & HIGH == 0,
        n @ 8..16 => (word(0) | word(n - 8)) & HIGH == 0,
        n @ 4..8 => (half(0) | half(n - 4)) & HIGH as u32 == 0,
        0..4 => bytes.iter().all(|b| b.is_ascii()),
        _ => bytes.is_ascii(),
    }
}

/// Like [`check`], but also refuses fields the schema does not know.
#[cfg(test)]
pub(super) fn check_strict(signal: SignalKind, buf: &[u8]) -> Result<usize, WireError> {
    Walk::new(true).request(signal, buf)
}

#[cfg(test)]
mod fast_path_tests {
    use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::trace::v1::{Span, Status};
    use proptest::prelude::*;
    use prost::Message as _;

    use super::*;

    fn general(buf: &[u8]) -> bool {
        Walk::new(true).message(&KEY_VALUE, buf, 0, 1).is_ok()
    }

    fn encoded(value: Option<Value>) -> Vec<u8> {
        KeyValue {
            key: "http.méthod".into(),
            value: Some(AnyValue { value }),
            ..KeyValue::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn the_usual_attributes_take_the_fast_path() {
        for value in [
            None,
            Some(Value::StringValue("GET ✓".into())),
            Some(Value::BoolValue(true)),
            Some(Value::IntValue(-1)),
            Some(Value::DoubleValue(0.5)),
        ] {
            let buf = encoded(value.clone());
            assert!(plain_key_value(&buf), "{value:?}");
            assert!(general(&buf), "{value:?}");
        }
        // Other shapes go the general way.
        let bytes = encoded(Some(Value::BytesValue(vec![1, 2])));
        assert!(!plain_key_value(&bytes) && general(&bytes));
    }

    /// Changes (0), cuts (1) or inserts (2) a byte at each place.
    fn apply(buf: &mut Vec<u8>, edits: Vec<(prop::sample::Index, u8, u8)>) {
        for (at, byte, op) in edits {
            let i = at.index(buf.len().max(1));
            match op {
                0 if i < buf.len() => buf[i] = byte,
                1 if i < buf.len() => buf.truncate(i),
                _ => buf.insert(i.min(buf.len()), byte),
            }
        }
    }

    fn general_span(buf: &[u8]) -> bool {
        Walk::new(true).message(&SPAN, buf, 0, 3).is_ok()
    }

    fn sdk_span() -> Span {
        Span {
            trace_id: vec![7; 16],
            span_id: vec![8; 8],
            trace_state: "vendor=ü".into(),
            parent_span_id: vec![9; 8],
            name: "GET /items/{id}".into(),
            kind: 2,
            start_time_unix_nano: 1,
            end_time_unix_nano: 2,
            attributes: vec![
                KeyValue {
                    key: "http.route".into(),
                    value: Some(AnyValue {
                        value: Some(Value::StringValue("/items/{id}".into())),
                    }),
                    ..KeyValue::default()
                },
                KeyValue {
                    key: "http.response.status_code".into(),
                    value: Some(AnyValue {
                        value: Some(Value::IntValue(404)),
                    }),
                    ..KeyValue::default()
                },
            ],
            dropped_attributes_count: 1,
            dropped_events_count: 2,
            dropped_links_count: 3,
            status: Some(Status {
                message: "not found".into(),
                code: 2,
            }),
            flags: 0x301,
            ..Span::default()
        }
    }

    #[test]
    fn the_usual_spans_take_the_fast_path() {
        let full = sdk_span();
        let root = Span {
            parent_span_id: Vec::new(),
            status: None,
            flags: 0,
            ..sdk_span()
        };
        for span in [
            full,
            root,
            Span {
                trace_id: vec![1; 16],
                span_id: vec![2; 8],
                ..Span::default()
            },
        ] {
            let buf = span.encode_to_vec();
            assert!(plain_span(&buf), "{span:?}");
            assert!(general_span(&buf), "{span:?}");
        }
        // Spans with events or links go the general way, valid or not.
        let with_event = Span {
            events: vec![Default::default()],
            ..sdk_span()
        };
        let buf = with_event.encode_to_vec();
        assert!(!plain_span(&buf) && general_span(&buf));
        // What the fast path refuses, the general walk refuses too, with its reason.
        for bad in [
            Span {
                trace_id: vec![1; 15],
                ..sdk_span()
            },
            Span {
                span_id: Vec::new(),
                ..sdk_span()
            },
            Span {
                parent_span_id: vec![1; 16],
                ..sdk_span()
            },
        ] {
            let buf = bad.encode_to_vec();
            assert!(!plain_span(&buf) && !general_span(&buf), "{bad:?}");
        }
        let mut bad_utf8 = sdk_span().encode_to_vec();
        let at = bad_utf8.windows(5).position(|w| w == b"GET /").unwrap();
        bad_utf8[at] = 0xff;
        assert!(!plain_span(&bad_utf8) && !general_span(&bad_utf8));
    }

    #[test]
    fn the_ascii_check_reads_every_byte() {
        for len in 0..40 {
            let ascii = vec![b'a'; len];
            assert!(is_ascii(&ascii));
            for at in 0..len {
                let mut high = ascii.clone();
                high[at] = 0x80;
                assert!(!is_ascii(&high), "{len} {at}");
            }
        }
    }

    proptest! {
        /// The span fast path never accepts what the general walk refuses: fields of the
        /// tags the fast path knows (and a few others) around any bytes, and valid spans
        /// with bytes changed, cut or added anywhere.
        #[test]
        fn span_fast_path_accepts_nothing_the_walk_refuses(
            fields in proptest::collection::vec(
                (
                    prop::sample::select(vec![
                        0x0a_u8, 0x12, 0x1a, 0x22, 0x2a, 0x30, 0x39, 0x41, 0x4a, 0x50, 0x5a,
                        0x60, 0x70, 0x7a, 0x85, 0x08, 0x31,
                    ]),
                    prop::sample::select(vec![0_usize, 1, 4, 7, 8, 9, 15, 16, 17]),
                    any::<u8>(),
                ),
                0..12,
            ),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 0..4),
        ) {
            let mut framed = Vec::new();
            for (tag, len, fill) in fields {
                framed.push(tag);
                if tag & 7 == LEN {
                    framed.push(len as u8);
                }
                framed.extend(std::iter::repeat_n(fill, len));
            }
            if plain_span(&framed) {
                prop_assert!(general_span(&framed), "{framed:?}");
            }
            let mut buf = sdk_span().encode_to_vec();
            apply(&mut buf, edits);
            if plain_span(&buf) {
                prop_assert!(general_span(&buf), "{buf:?}");
            }
        }

        /// The fast path never accepts what the general walk refuses: a well-framed
        /// `KeyValue` around any key bytes and any value bytes (most starting with one of
        /// the tags the fast path knows), and valid attributes with bytes changed, cut or
        /// added anywhere.
        #[test]
        fn fast_path_accepts_nothing_the_walk_refuses(
            key in proptest::collection::vec(any::<u8>(), 0..6),
            tag in prop::sample::select(vec![0x0a_u8, 0x10, 0x18, 0x21, 0x2a, 0x12, 0x09]),
            value in proptest::collection::vec(any::<u8>(), 0..12),
            kind in 0usize..5,
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 0..4),
        ) {
            let mut framed = vec![0x0a, key.len() as u8];
            framed.extend(&key);
            framed.extend([0x12, value.len() as u8 + 1, tag]);
            framed.extend(&value);
            if plain_key_value(&framed) {
                prop_assert!(general(&framed), "{framed:?}");
            }
            let values = [
                None,
                Some(Value::StringValue("v".repeat(3))),
                Some(Value::BoolValue(false)),
                Some(Value::IntValue(300)),
                Some(Value::DoubleValue(1.0)),
            ];
            let mut buf = encoded(values[kind].clone());
            apply(&mut buf, edits);
            if plain_key_value(&buf) {
                prop_assert!(general(&buf), "{buf:?}");
            }
        }
    }
}
