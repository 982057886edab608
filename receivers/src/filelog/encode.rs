//! OTLP logs written straight as protobuf: a line becomes a `LogRecord` without passing
//! through the generated structs, so reading a file allocates per buffer, not per line.
//!
//! Field numbers (opentelemetry-proto `logs.proto`, `common.proto`, `resource.proto`):
//! `ExportLogsServiceRequest.resource_logs = 1`; `ResourceLogs.resource = 1`,
//! `scope_logs = 2`; `ScopeLogs.log_records = 2`; `LogRecord.time_unix_nano = 1`
//! (fixed64), `severity_number = 2`, `severity_text = 3`, `body = 5`, `attributes = 6`,
//! `observed_time_unix_nano = 11` (fixed64); `Resource.attributes = 1`;
//! `KeyValue.key = 1`, `value = 2`; `AnyValue.string_value = 1`, `bool_value = 2`,
//! `int_value = 3`, `double_value = 4`, `array_value = 5`, `kvlist_value = 6`,
//! `bytes_value = 7`; `ArrayValue.values = 1`; `KeyValueList.values = 1`.

use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};
use serde_json::{Map, Value};

/// Appends a length-delimited field holding `bytes`.
pub fn bytes_field(out: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// Appends a length-delimited field whose contents `write` produces (written once into
/// `scratch`, then framed).
pub fn message_field(
    out: &mut Vec<u8>,
    tag: u32,
    scratch: &mut Vec<u8>,
    write: impl FnOnce(&mut Vec<u8>),
) {
    scratch.clear();
    write(scratch);
    bytes_field(out, tag, scratch);
}

fn fixed64_field(out: &mut Vec<u8>, tag: u32, v: u64) {
    encode_key(tag, WireType::SixtyFourBit, out);
    out.extend_from_slice(&v.to_le_bytes());
}

fn varint_field(out: &mut Vec<u8>, tag: u32, v: u64) {
    encode_key(tag, WireType::Varint, out);
    encode_varint(v, out);
}

/// An `AnyValue` holding a string, as message contents.
pub fn string_value(out: &mut Vec<u8>, s: &[u8]) {
    bytes_field(out, 1, s);
}

/// A `KeyValue` with a string value, as message contents.
pub fn string_kv(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    bytes_field(out, 1, key.as_bytes());
    // AnyValue { string_value }: 1 byte key + varint length + bytes.
    encode_key(2, WireType::LengthDelimited, out);
    let inner = 1 + encoded_len_varint(value.len() as u64) + value.len();
    encode_varint(inner as u64, out);
    string_value(out, value);
}

/// An `AnyValue` for a JSON value, as message contents. `null` is an empty `AnyValue`.
pub fn any_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => {}
        Value::Bool(b) => varint_field(out, 2, u64::from(*b)),
        Value::Number(n) => match n.as_i64() {
            Some(i) => varint_field(out, 3, i as u64),
            None => {
                encode_key(4, WireType::SixtyFourBit, out);
                out.extend_from_slice(&n.as_f64().unwrap_or(f64::NAN).to_le_bytes());
            }
        },
        Value::String(s) => string_value(out, s.as_bytes()),
        Value::Array(items) => {
            let mut array = Vec::new();
            let mut scratch = Vec::new();
            for item in items {
                message_field(&mut array, 1, &mut scratch, |o| any_value(o, item));
            }
            bytes_field(out, 5, &array);
        }
        Value::Object(map) => {
            let mut list = Vec::new();
            attributes(&mut list, 1, map);
            bytes_field(out, 6, &list);
        }
    }
}

/// One `KeyValue` field per entry of `map`, under `tag`.
pub fn attributes(out: &mut Vec<u8>, tag: u32, map: &Map<String, Value>) {
    let mut kv = Vec::new();
    let mut value = Vec::new();
    for (k, v) in map {
        kv.clear();
        bytes_field(&mut kv, 1, k.as_bytes());
        message_field(&mut kv, 2, &mut value, |o| any_value(o, v));
        bytes_field(out, tag, &kv);
    }
}

/// A log record's fields besides its body and attributes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stamp {
    pub time_ns: Option<u64>,
    pub observed_ns: u64,
    pub severity: i32,
}

/// Writes a `LogRecord`'s contents: stamp, severity text, `body` (already an `AnyValue`'s
/// contents), then `attrs` (already `KeyValue` fields with tag 6).
pub fn log_record(out: &mut Vec<u8>, stamp: Stamp, severity_text: &str, body: &[u8], attrs: &[u8]) {
    if let Some(t) = stamp.time_ns {
        fixed64_field(out, 1, t);
    }
    if stamp.severity != 0 {
        varint_field(out, 2, stamp.severity as u64);
    }
    if !severity_text.is_empty() {
        bytes_field(out, 3, severity_text.as_bytes());
    }
    bytes_field(out, 5, body);
    out.extend_from_slice(attrs);
    fixed64_field(out, 11, stamp.observed_ns);
}

/// Records gathered per resource, written as one `ExportLogsServiceRequest`.
pub struct RequestBuilder {
    /// (encoded `Resource` contents, the `log_records` fields of one `ScopeLogs`).
    groups: Vec<(Vec<u8>, Vec<u8>)>,
    /// The group the last record went to (records of one file share a resource).
    last: usize,
    records: usize,
    bytes: usize,
    /// Bytes a group's buffer is given at first: what one request holds, so it is not
    /// grown (and copied) record by record.
    capacity: usize,
    scratch: Vec<u8>,
}

impl Default for RequestBuilder {
    fn default() -> Self {
        RequestBuilder::new(64 << 10)
    }
}

impl RequestBuilder {
    pub fn new(capacity: usize) -> Self {
        RequestBuilder {
            groups: Vec::new(),
            last: 0,
            records: 0,
            bytes: 0,
            capacity,
            scratch: Vec::new(),
        }
    }

    /// Adds a record (its contents written by `write`) under `resource`.
    pub fn push(&mut self, resource: &[u8], write: impl FnOnce(&mut Vec<u8>)) {
        let i = match self.groups.get(self.last) {
            Some((r, _)) if r == resource => self.last,
            _ => match self.groups.iter().position(|(r, _)| r == resource) {
                Some(i) => i,
                None => {
                    let records = Vec::with_capacity(self.capacity);
                    self.groups.push((resource.to_vec(), records));
                    self.groups.len() - 1
                }
            },
        };
        self.last = i;
        let before = self.groups[i].1.len();
        message_field(&mut self.groups[i].1, 2, &mut self.scratch, write);
        self.bytes += self.groups[i].1.len() - before;
        self.records += 1;
    }

    pub fn records(&self) -> usize {
        self.records
    }

    /// Bytes of records gathered so far.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The request, in a buffer of exactly its size (queues count the bytes used; a
    /// half-empty buffer would hold twice that), and an empty builder left behind that
    /// keeps its buffers for the next request.
    pub fn take(&mut self) -> bytes::Bytes {
        self.records = 0;
        self.bytes = 0;
        self.last = 0;
        let heads: Vec<Vec<u8>> = self
            .groups
            .iter()
            .map(|(r, b)| header(r, b.len()))
            .collect();
        let total: usize = heads
            .iter()
            .zip(&self.groups)
            .map(|(h, (_, b))| h.len() + b.len())
            .sum();
        let mut out = Vec::with_capacity(total);
        for (head, (_, records)) in heads.iter().zip(&mut self.groups) {
            if !records.is_empty() {
                out.extend_from_slice(head);
                out.extend_from_slice(records);
            }
            records.clear();
        }
        // Buffers of resources not seen lately are let go; most files keep one.
        if self.groups.len() > 4 {
            self.groups.clear();
        }
        bytes::Bytes::from(out)
    }
}

/// The bytes before a group's records: `resource_logs` { `resource`, `scope_logs` {
/// empty `scope`, then the records } }.
fn header(resource: &[u8], records: usize) -> Vec<u8> {
    let resource_field = 1 + encoded_len_varint(resource.len() as u64) + resource.len();
    let scope_logs = 2 + records; // an empty `scope` (tag, length 0), then the records
    let scope_field = 1 + encoded_len_varint(scope_logs as u64) + scope_logs;
    let resource_logs = resource_field + scope_field;
    let mut h = Vec::with_capacity(32 + resource.len());
    encode_key(1, WireType::LengthDelimited, &mut h);
    encode_varint(resource_logs as u64, &mut h);
    bytes_field(&mut h, 1, resource);
    encode_key(2, WireType::LengthDelimited, &mut h);
    encode_varint(scope_logs as u64, &mut h);
    bytes_field(&mut h, 1, &[]);
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    use prost::Message;

    #[test]
    fn one_resource_is_framed_in_place_and_many_are_joined() {
        for resource in [Vec::new(), b"\x0a\x05\x0a\x01k\x12\x00".to_vec()] {
            let mut b = RequestBuilder::new(1 << 10);
            for i in 0..300 {
                b.push(&resource, |o| {
                    let mut body = Vec::new();
                    string_value(&mut body, format!("record {i}").as_bytes());
                    log_record(o, Stamp::default(), "", &body, &[]);
                });
            }
            let req = ExportLogsServiceRequest::decode(b.take()).unwrap();
            assert_eq!(req.resource_logs.len(), 1);
            let records = &req.resource_logs[0].scope_logs[0].log_records;
            assert_eq!(records.len(), 300);
            assert_eq!(
                records[299].body.as_ref().unwrap().value,
                Some(Any::StringValue("record 299".into()))
            );
            // The builder is empty and usable again.
            assert_eq!((b.records(), b.bytes()), (0, 0));
            b.push(&resource, |o| log_record(o, Stamp::default(), "", &[], &[]));
            let again = ExportLogsServiceRequest::decode(b.take()).unwrap();
            assert_eq!(again.resource_logs[0].scope_logs[0].log_records.len(), 1);
        }
    }

    #[test]
    fn written_records_decode_as_otlp() {
        let mut resource = Vec::new();
        let mut kv = Vec::new();
        string_kv(&mut kv, "k8s.pod.name", b"web-1");
        bytes_field(&mut resource, 1, &kv);
        let mut attrs = Vec::new();
        kv.clear();
        string_kv(&mut kv, "log.file.name", b"app.log");
        bytes_field(&mut attrs, 6, &kv);
        let json: Value =
            serde_json::json!({"n": 3, "f": 1.5, "ok": true, "list": [1, "a"], "obj": {"x": null}});
        attributes(&mut attrs, 6, json.as_object().unwrap());
        let mut b = RequestBuilder::default();
        for i in 0..3 {
            b.push(&resource, |o| {
                let mut body = Vec::new();
                string_value(&mut body, format!("line {i}").as_bytes());
                let stamp = Stamp {
                    time_ns: Some(7),
                    observed_ns: 9,
                    severity: 17,
                };
                log_record(o, stamp, "ERROR", &body, &attrs);
            });
        }
        b.push(&[], |o| log_record(o, Stamp::default(), "", &[], &[]));
        assert_eq!(b.records(), 4);
        let req = ExportLogsServiceRequest::decode(b.take()).unwrap();
        assert_eq!(b.records(), 0);
        assert_eq!(req.resource_logs.len(), 2);
        let rl = &req.resource_logs[0];
        assert_eq!(
            rl.resource.as_ref().unwrap().attributes[0].key,
            "k8s.pod.name"
        );
        let records = &rl.scope_logs[0].log_records;
        assert_eq!(records.len(), 3);
        let r = &records[1];
        assert_eq!(
            r.body.as_ref().unwrap().value,
            Some(Any::StringValue("line 1".into()))
        );
        assert_eq!((r.time_unix_nano, r.observed_time_unix_nano), (7, 9));
        assert_eq!((r.severity_number, r.severity_text.as_str()), (17, "ERROR"));
        let keys: Vec<&str> = r.attributes.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(keys, ["log.file.name", "f", "list", "n", "obj", "ok"]);
        let n = r.attributes.iter().find(|a| a.key == "n").unwrap();
        assert_eq!(n.value.as_ref().unwrap().value, Some(Any::IntValue(3)));
        let f = r.attributes.iter().find(|a| a.key == "f").unwrap();
        assert_eq!(f.value.as_ref().unwrap().value, Some(Any::DoubleValue(1.5)));
        let list = r.attributes.iter().find(|a| a.key == "list").unwrap();
        let Some(Any::ArrayValue(a)) = &list.value.as_ref().unwrap().value else {
            panic!("{list:?}")
        };
        assert_eq!(a.values.len(), 2);
    }
}
