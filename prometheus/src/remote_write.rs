//! Remote-write requests written straight from the translation's borrowed samples.
//!
//! Each sample's labels are encoded once, as protobuf, into a scratch buffer while the
//! series key is hashed; the key picks the shard, and the `TimeSeries` goes straight into
//! that shard's request buffer, cut under the size limit. Nothing is kept per series and
//! nothing is allocated per sample: the memory is the requests themselves, compressed
//! as they fill. Snappy compresses in independent 64 KiB blocks, so each full block is
//! compressed at once and only the last, partial one stays uncompressed; the body is
//! the total length and the blocks one after the other, exactly what one call over the
//! whole request would give. A series met twice in a batch (two scrapes batched
//! together) gets two `TimeSeries` in its shard, in the order met, which is time order.
//!
//! Remote-write 2.0 ([`Protocol::V2`]) writes the same series with every string replaced
//! by its index in the request's symbol table, which is built as the request fills and
//! written at its end (protobuf fields may come in any order, and the table must hold
//! every string the request's series name). Each series carries its own metadata (type,
//! help, unit) and created timestamp there, where 1.0 sends metadata once per family.
//!
//! One odd timestamp must not take a whole request down. Prometheus refuses a request
//! outright when one sample is older than its head block accepts (about an hour behind
//! its newest sample; the epoch, say), so such samples go in requests of their own at the
//! end of their shard, and `up` and the rest of the scrape do not go down with them. A
//! sample more than ten minutes ahead of the clock is not sent at all (counted as
//! dropped): a backend that accepted it would then refuse everything of that series
//! until real time caught up.

use crate::prompb as proto;
use bytes::Bytes;
use prost::encoding::{encode_varint, encoded_len_varint};

use crate::from_otlp::{self as prom, Sample, SeriesHasher};

/// Which remote-write message requests carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// `prometheus.WriteRequest`.
    #[default]
    V1,
    /// `io.prometheus.write.v2.Request`.
    V2,
}

impl Protocol {
    pub fn content_type(self) -> &'static str {
        match self {
            Protocol::V1 => "application/x-protobuf",
            Protocol::V2 => proto::v2::CONTENT_TYPE,
        }
    }

    /// `X-Prometheus-Remote-Write-Version`.
    pub fn version(self) -> &'static str {
        match self {
            Protocol::V1 => "0.1.0",
            Protocol::V2 => "2.0.0",
        }
    }
}

/// A series' exemplar, and its metadata and start as remote-write 2.0 sends them with
/// each series.
#[derive(Clone, Copy, Default)]
struct Meta<'a> {
    exemplar: Option<&'a prom::Exemplar>,
    /// `MetricMetadata.type` (0: unknown).
    kind: i32,
    help: &'a str,
    unit: &'a str,
    start_ms: i64,
}

/// `MetricMetadata.type` of a family kind.
pub fn metadata_type(kind: prom::Kind) -> i32 {
    match kind {
        prom::Kind::Counter => 1,
        prom::Kind::Gauge => 2,
        prom::Kind::Histogram => 3,
        prom::Kind::Summary => 5,
    }
}

/// A compressed 2.0 request as the compressed 1.0 request of the same series (for a
/// receiver that turns 2.0 down; 1.0 keeps metadata per family, so it is left out).
pub fn v2_as_v1(body: &[u8]) -> Result<Bytes, String> {
    use prost::Message as _;
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| e.to_string())?;
    let v2 = proto::v2::Request::decode(raw.as_slice()).map_err(|e| e.to_string())?;
    snap::raw::Encoder::new()
        .compress_vec(&v2.to_v1().encode_to_vec())
        .map(Bytes::from)
        .map_err(|e| e.to_string())
}

/// One request ready to send: its compressed body and how many series it carries.
pub struct Request {
    pub body: Bytes,
    pub series: usize,
}

/// Requests are cut at this many bytes (before compression) even when
/// `max_batch_size_bytes` allows more: each shard's buffer stays this small, and a big
/// scrape goes out as several requests per shard, sent one after the other.
pub const REQUEST_BYTES: usize = 1 << 20;

/// Samples older than this (relative to the batch's clock) are sent apart.
pub const APART_OLDER_MS: i64 = 3_600_000;
/// Samples this far ahead of the batch's clock are left out.
pub const APART_AHEAD_MS: i64 = 600_000;

/// Writes a batch's samples into sharded requests.
pub struct Encoder {
    /// Per shard: the usual requests, and those of old samples.
    shards: Vec<(Writer, Writer)>,
    protocol: Protocol,
    /// One series' labels while they are written.
    scratch: Vec<u8>,
    packer: Packer,
    now_ms: i64,
    samples: usize,
    apart_samples: usize,
    ahead_samples: usize,
    /// Data points with samples left out, and the last such point's number.
    ahead_points: usize,
    last_ahead: Option<usize>,
}

impl Encoder {
    /// An encoder for `shards` lists of requests of at most `max_bytes` each (before
    /// compression), that sends apart what is old at `now_ms`.
    pub fn new(shards: usize, max_bytes: usize, now_ms: i64) -> Self {
        Self::for_points(shards, max_bytes, now_ms, 0)
    }

    /// [`Encoder::new`] for a batch of about `points` data points: each shard's
    /// compressed request is given room for them at once (about 128 bytes a series before
    /// compression, a quarter after), so it is seldom grown by copying.
    pub fn for_points(shards: usize, max_bytes: usize, now_ms: i64, points: usize) -> Self {
        let shards = shards.max(1);
        let expected = (points.saturating_mul(128) / shards).min(max_bytes.min(REQUEST_BYTES));
        Encoder {
            shards: (0..shards)
                .map(|_| {
                    let mut normal = Writer::new(max_bytes);
                    // Snappy shrinks these requests to about a quarter.
                    normal.packed.reserve(PREAMBLE + expected / 4);
                    (normal, Writer::new(max_bytes))
                })
                .collect(),
            scratch: Vec::with_capacity(256),
            packer: Packer {
                snappy: snap::raw::Encoder::new(),
                out: Vec::new(),
            },
            now_ms,
            protocol: Protocol::V1,
            samples: 0,
            apart_samples: 0,
            ahead_samples: 0,
            ahead_points: 0,
            last_ahead: None,
        }
    }

    /// Writes `protocol`'s message (1.0 unless told otherwise).
    pub fn with_protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        for (normal, apart) in &mut self.shards {
            normal.set_protocol(protocol);
            apart.set_protocol(protocol);
        }
        self
    }

    /// Samples taken so far (those left out too).
    pub fn samples(&self) -> usize {
        self.samples
    }

    pub fn push(&mut self, s: &Sample<'_>) {
        let f = s.family_def;
        let meta = Meta {
            kind: metadata_type(f.kind),
            help: &f.help,
            unit: &f.unit,
            start_ms: s.start_ms,
            exemplar: s.exemplar,
        };
        self.push_with(
            s.name,
            |f| s.for_each_label(f),
            Value::of(s),
            s.timestamp_ms,
            s.point,
            meta,
        );
    }

    /// An owned series, counted as a data point of its own.
    pub fn push_series(&mut self, s: &prom::Series) {
        self.push_with(
            &s.name,
            |f| s.labels.iter().for_each(|(k, v)| f(k, v)),
            Value::Float(s.value),
            s.timestamp_ms,
            None,
            Meta {
                exemplar: s.exemplar.as_ref(),
                ..Meta::default()
            },
        );
    }

    /// Adds one sample; `labels` calls its argument with each label in name order,
    /// `__name__` not among them.
    fn push_with(
        &mut self,
        name: &str,
        labels: impl FnOnce(&mut dyn FnMut(&str, &str)),
        value: Value<'_>,
        timestamp_ms: i64,
        point: Option<usize>,
        meta: Meta<'_>,
    ) {
        let exemplar = meta.exemplar;
        self.samples += 1;
        if timestamp_ms > self.now_ms.saturating_add(APART_AHEAD_MS) {
            self.ahead_samples += 1;
            // Points are what the pipeline counts: a histogram's samples are one.
            if point.is_none() || point != self.last_ahead {
                self.ahead_points += 1;
                self.last_ahead = point;
            }
            return;
        }
        let mut hash = SeriesHasher::new(name);
        let mut named = false;
        let buf = &mut self.scratch;
        buf.clear();
        labels(&mut |k, v| {
            if !named && k > "__name__" {
                write_label(buf, "__name__", name);
                named = true;
            }
            write_label(buf, k, v);
            hash.label(k, v);
        });
        if !named {
            write_label(buf, "__name__", name);
        }
        let shard = (hash.finish() % self.shards.len() as u64) as usize;
        let old = timestamp_ms <= 0 || timestamp_ms < self.now_ms - APART_OLDER_MS;
        let (normal, apart) = &mut self.shards[shard];
        let writer = if old {
            self.apart_samples += 1;
            apart
        } else {
            normal
        };
        if self.protocol == Protocol::V2 {
            writer.series_v2(
                &self.scratch,
                value,
                timestamp_ms,
                exemplar,
                meta,
                &mut self.packer,
            );
            return;
        }
        let exemplar = exemplar.map(|e| proto::Exemplar {
            labels: e
                .labels
                .iter()
                .map(|(name, value)| proto::Label {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
            value: e.value,
            timestamp: e.timestamp_ms,
        });
        writer.series(
            &self.scratch,
            value,
            timestamp_ms,
            exemplar.as_ref(),
            &mut self.packer,
        );
    }

    /// The requests, one list per shard; `metadata` goes with the last request of the
    /// first shard (or alone when there is nothing else to send).
    pub fn finish(mut self, metadata: Vec<proto::MetricMetadata>) -> Finished {
        let mut lanes = Vec::with_capacity(self.shards.len());
        for (i, (mut normal, mut apart)) in std::mem::take(&mut self.shards).into_iter().enumerate()
        {
            // 2.0 sends metadata with each series.
            if i == 0 && !metadata.is_empty() && self.protocol == Protocol::V1 {
                let target = if normal.series == 0 && apart.series > 0 {
                    &mut apart
                } else {
                    &mut normal
                };
                let bytes: usize = metadata
                    .iter()
                    .map(|m| prost::encoding::message::encoded_len(3, m))
                    .sum();
                if target.series > 0 && target.len() + bytes > target.max_bytes {
                    target.cut(&mut self.packer);
                }
                target.metadata(&metadata, &mut self.packer);
            }
            let mut lane = Vec::with_capacity(1);
            normal.flush(&mut lane, &mut self.packer);
            apart.flush(&mut lane, &mut self.packer);
            lanes.push(lane);
        }
        Finished {
            lanes,
            apart_samples: self.apart_samples,
            ahead_samples: self.ahead_samples,
            ahead_points: self.ahead_points,
        }
    }
}

/// A batch's requests.
pub struct Finished {
    /// One list per shard.
    pub lanes: Vec<Vec<Request>>,
    /// Samples sent in requests of their own, being old.
    pub apart_samples: usize,
    /// Samples left out, being too far ahead.
    pub ahead_samples: usize,
    /// The data points they came from.
    pub ahead_points: usize,
}

/// Snappy's block: the compressor starts afresh every this many bytes.
const BLOCK: usize = 1 << 16;
/// Room left before the compressed blocks for the body's length (a varint).
const PREAMBLE: usize = 10;

/// Compresses full blocks.
struct Packer {
    snappy: snap::raw::Encoder,
    /// One block's compressed form, with its own length in front.
    out: Vec<u8>,
}

impl Packer {
    /// Appends `block` compressed, without the length snappy puts in front of it.
    fn pack(&mut self, block: &[u8], to: &mut Vec<u8>) {
        let max = snap::raw::max_compress_len(block.len());
        if self.out.len() < max {
            self.out.resize(max, 0);
        }
        // Only an input over 4 GiB fails, and a block is at most 64 KiB.
        let n = self.snappy.compress(block, &mut self.out).unwrap_or(0);
        let own = encoded_len_varint(block.len() as u64);
        to.extend_from_slice(&self.out[own.min(n)..n]);
    }
}

/// Fills one request after another.
struct Writer {
    /// The request's last, partial block, not yet compressed.
    buf: Vec<u8>,
    /// The request's full blocks, compressed, after `PREAMBLE` bytes kept for its length.
    packed: Vec<u8>,
    /// Bytes compressed into `packed` so far.
    packed_len: usize,
    series: usize,
    max_bytes: usize,
    /// Requests cut so far.
    done: Vec<Request>,
    /// The open request's symbol table (remote-write 2.0 only).
    symbols: Option<Symbols>,
    /// One series' label references while they are written (2.0).
    refs: Vec<u32>,
}

impl Writer {
    fn new(max_bytes: usize) -> Self {
        Writer {
            buf: Vec::new(),
            packed: Vec::new(),
            packed_len: 0,
            series: 0,
            max_bytes: max_bytes.min(REQUEST_BYTES),
            done: Vec::new(),
            symbols: None,
            refs: Vec::new(),
        }
    }

    fn set_protocol(&mut self, protocol: Protocol) {
        self.symbols = (protocol == Protocol::V2).then(Symbols::new);
    }

    /// The request's size so far, before compression (its symbol table too).
    fn len(&self) -> usize {
        self.packed_len + self.buf.len() + self.symbols.as_ref().map_or(0, |s| s.buf.len())
    }

    /// Writes one 2.0 `TimeSeries` (field 5 of the request), its strings interned: the
    /// labels (`labels`, 1.0 `Label` messages as the encoder wrote them), the exemplar's,
    /// and the metadata's. A request cut for it gets a fresh table, so the series is
    /// interned again there.
    fn series_v2(
        &mut self,
        labels: &[u8],
        value: Value<'_>,
        timestamp_ms: i64,
        exemplar: Option<&prom::Exemplar>,
        meta: Meta<'_>,
        packer: &mut Packer,
    ) {
        let mut fresh = false;
        loop {
            let Some(symbols) = self.symbols.as_mut() else {
                return;
            };
            let before = symbols.buf.len();
            self.refs.clear();
            for (name, value) in label_pairs(labels) {
                self.refs.push(symbols.intern(name));
                self.refs.push(symbols.intern(value));
            }
            let label_refs = self.refs.len();
            if let Some(e) = exemplar {
                for (name, value) in &e.labels {
                    self.refs.push(symbols.intern(name.as_bytes()));
                    self.refs.push(symbols.intern(value.as_bytes()));
                }
            }
            let help = symbols.intern(meta.help.as_bytes());
            let unit = symbols.intern(meta.unit.as_bytes());
            let added = symbols.buf.len() - before;
            let (series_refs, exemplar_refs) = self.refs.split_at(label_refs);
            let refs_len = packed_len(series_refs);
            let mut len = field_len(refs_len);
            len += match value {
                Value::Float(v) => field_len(sample_len(v, timestamp_ms)),
                Value::Histogram(h) => prost::encoding::message::encoded_len(3, h),
            };
            let exemplar_len = exemplar.map(|e| {
                let refs = packed_len(exemplar_refs);
                let mut n = if refs > 0 { field_len(refs) } else { 0 };
                n += if e.value != 0.0 { 9 } else { 0 };
                n += varint_field_len(e.timestamp_ms as u64);
                n
            });
            if let Some(n) = exemplar_len {
                len += field_len(n);
            }
            let meta_len = varint_field_len(meta.kind as u64)
                + varint_field_len(u64::from(help))
                + varint_field_len(u64::from(unit));
            if meta_len > 0 {
                len += field_len(meta_len);
            }
            len += varint_field_len(meta.start_ms.max(0) as u64);
            let total = field_len(len);
            if !fresh && self.series > 0 && self.len() + total > self.max_bytes {
                // The strings just interned belong to the next request.
                if let Some(s) = self.symbols.as_mut() {
                    s.forget_after(before, added);
                }
                self.cut(packer);
                fresh = true;
                continue;
            }
            if self.buf.capacity() == 0 {
                self.buf.reserve(BLOCK + total.max(1024));
            }
            let buf = &mut self.buf;
            buf.push(0x2a);
            encode_varint(len as u64, buf);
            if refs_len > 0 {
                buf.push(0x0a);
                encode_varint(refs_len as u64, buf);
                series_refs
                    .iter()
                    .for_each(|&r| encode_varint(u64::from(r), buf));
            }
            match value {
                Value::Float(v) => {
                    buf.push(0x12);
                    encode_varint(sample_len(v, timestamp_ms) as u64, buf);
                    write_sample(buf, v, timestamp_ms);
                }
                Value::Histogram(h) => prost::encoding::message::encode(3, h, buf),
            }
            if let (Some(e), Some(n)) = (exemplar, exemplar_len) {
                buf.push(0x22);
                encode_varint(n as u64, buf);
                let refs = packed_len(exemplar_refs);
                if refs > 0 {
                    buf.push(0x0a);
                    encode_varint(refs as u64, buf);
                    exemplar_refs
                        .iter()
                        .for_each(|&r| encode_varint(u64::from(r), buf));
                }
                if e.value != 0.0 {
                    buf.push(0x11);
                    buf.extend_from_slice(&e.value.to_le_bytes());
                }
                put_varint_field(buf, 0x18, e.timestamp_ms as u64);
            }
            if meta_len > 0 {
                buf.push(0x2a);
                encode_varint(meta_len as u64, buf);
                put_varint_field(buf, 0x08, meta.kind as u64);
                put_varint_field(buf, 0x18, u64::from(help));
                put_varint_field(buf, 0x20, u64::from(unit));
            }
            put_varint_field(buf, 0x30, meta.start_ms.max(0) as u64);
            self.series += 1;
            self.pack_full(packer);
            return;
        }
    }

    fn metadata(&mut self, metadata: &[proto::MetricMetadata], packer: &mut Packer) {
        for m in metadata {
            prost::encoding::message::encode(3, m, &mut self.buf);
            self.pack_full(packer);
        }
    }

    /// Writes one `TimeSeries` of one sample, cutting a request first if it would not
    /// fit.
    fn series(
        &mut self,
        labels: &[u8],
        value: Value<'_>,
        timestamp_ms: i64,
        exemplar: Option<&proto::Exemplar>,
        packer: &mut Packer,
    ) {
        let sample = match value {
            Value::Float(value) => sample_len(value, timestamp_ms),
            Value::Histogram(_) => 0,
        };
        let mut len = labels.len()
            + match value {
                Value::Float(_) => 1 + encoded_len_varint(sample as u64) + sample,
                Value::Histogram(h) => prost::encoding::message::encoded_len(4, h),
            };
        if let Some(e) = exemplar {
            len += prost::encoding::message::encoded_len(3, e);
        }
        let total = 1 + encoded_len_varint(len as u64) + len;
        if self.series > 0 && self.len() + total > self.max_bytes {
            self.cut(packer);
        }
        if self.buf.capacity() == 0 {
            // A block and a series or two past it; a bigger series grows it.
            self.buf.reserve(BLOCK + total.max(1024));
        }
        self.buf.push(0x0a);
        encode_varint(len as u64, &mut self.buf);
        self.buf.extend_from_slice(labels);
        match value {
            Value::Float(value) => {
                self.buf.push(0x12);
                encode_varint(sample as u64, &mut self.buf);
                write_sample(&mut self.buf, value, timestamp_ms);
            }
            Value::Histogram(h) => prost::encoding::message::encode(4, h, &mut self.buf),
        }
        if let Some(e) = exemplar {
            prost::encoding::message::encode(3, e, &mut self.buf);
        }
        self.series += 1;
        self.pack_full(packer);
    }

    /// Compresses the full blocks in `buf`, keeping the rest.
    fn pack_full(&mut self, packer: &mut Packer) {
        if self.buf.len() >= BLOCK {
            self.pack(self.buf.len() / BLOCK * BLOCK, packer);
        }
    }

    /// Compresses the first `len` bytes of `buf` a block at a time, after the room kept
    /// for the request's length.
    fn pack(&mut self, len: usize, packer: &mut Packer) {
        if self.packed.is_empty() {
            self.packed.resize(PREAMBLE, 0);
        }
        for block in self.buf[..len].chunks(BLOCK) {
            packer.pack(block, &mut self.packed);
        }
        self.packed_len += len;
        self.buf.drain(..len);
    }

    fn cut(&mut self, packer: &mut Packer) {
        if let Some(symbols) = self.symbols.as_mut() {
            // The table ends the request; the next one starts its own.
            self.buf.extend_from_slice(&symbols.buf);
            symbols.clear();
        }
        self.pack(self.buf.len(), packer);
        let total = self.packed_len as u64;
        let mut packed = std::mem::take(&mut self.packed);
        // The length goes right before the blocks, in the room kept for it.
        let start = PREAMBLE - encoded_len_varint(total);
        let mut length = &mut packed[start..PREAMBLE];
        encode_varint(total, &mut length);
        self.done.push(Request {
            body: Bytes::from(packed).slice(start..),
            series: self.series,
        });
        self.packed_len = 0;
        self.series = 0;
    }

    /// Cuts what is left (a request with only metadata too; a symbol table alone is
    /// nothing to send).
    fn flush(&mut self, lane: &mut Vec<Request>, packer: &mut Packer) {
        if self.packed_len + self.buf.len() > 0 {
            self.cut(packer);
        }
        lane.append(&mut self.done);
    }
}

/// What one `TimeSeries` carries: a sample or a native histogram (which has its own
/// timestamp).
#[derive(Clone, Copy)]
enum Value<'a> {
    Float(f64),
    Histogram(&'a proto::Histogram),
}

impl<'a> Value<'a> {
    fn of(s: &Sample<'a>) -> Self {
        match s.histogram {
            Some(h) => Value::Histogram(h),
            None => Value::Float(s.value),
        }
    }
}

/// A `Sample` message's fields (proto3: zero fields are left out).
fn write_sample(buf: &mut Vec<u8>, value: f64, timestamp_ms: i64) {
    if value != 0.0 {
        buf.push(0x09);
        buf.extend_from_slice(&value.to_le_bytes());
    }
    if timestamp_ms != 0 {
        buf.push(0x10);
        encode_varint(timestamp_ms as u64, buf);
    }
}

/// A length-delimited field of `len` bytes, tag included.
fn field_len(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

/// A varint field's length, tag included; 0 for a zero value (left out).
fn varint_field_len(v: u64) -> usize {
    if v == 0 {
        0
    } else {
        1 + encoded_len_varint(v)
    }
}

fn put_varint_field(buf: &mut Vec<u8>, tag: u8, v: u64) {
    if v != 0 {
        buf.push(tag);
        encode_varint(v, buf);
    }
}

/// The payload length of packed varints.
fn packed_len(refs: &[u32]) -> usize {
    refs.iter().map(|&r| encoded_len_varint(u64::from(r))).sum()
}

/// The (name, value) pairs of 1.0 `Label` messages as [`write_label`] wrote them.
fn label_pairs(mut buf: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    fn varint(buf: &mut &[u8]) -> usize {
        prost::encoding::decode_varint(buf).unwrap_or(0) as usize
    }
    std::iter::from_fn(move || {
        if buf.first() != Some(&0x0a) {
            return None;
        }
        buf = &buf[1..];
        let len = varint(&mut buf).min(buf.len());
        let (mut label, rest) = buf.split_at(len);
        buf = rest;
        let (mut name, mut value): (&[u8], &[u8]) = (&[], &[]);
        while let Some(&tag) = label.first() {
            label = &label[1..];
            let n = varint(&mut label).min(label.len());
            let (field, rest) = label.split_at(n);
            label = rest;
            match tag {
                0x0a => name = field,
                _ => value = field,
            }
        }
        Some((name, value))
    })
}

/// A request's symbol table (remote-write 2.0) as it fills: the encoded `symbols`
/// fields, ready to end the request, and an index by hash. The empty string is symbol 0.
struct Symbols {
    /// `symbols` fields (tag 4), one per string.
    buf: Vec<u8>,
    /// Where each string's bytes are in `buf`.
    at: Vec<(u32, u32)>,
    /// String hash → symbol. Two strings of one 64-bit hash would both be kept, the
    /// second under its own index: a duplicate in the table, never a wrong reference.
    index: sidekick_core::util::KeyMap<u32>,
}

impl Symbols {
    fn new() -> Self {
        let mut s = Symbols {
            buf: Vec::new(),
            at: Vec::new(),
            index: Default::default(),
        };
        s.clear();
        s
    }

    fn clear(&mut self) {
        self.buf.clear();
        self.at.clear();
        self.index.clear();
        self.buf.extend_from_slice(&[0x22, 0x00]);
        self.at.push((2, 0));
    }

    fn intern(&mut self, s: &[u8]) -> u32 {
        if s.is_empty() {
            return 0;
        }
        use std::hash::BuildHasher;
        let hash = foldhash::fast::FixedState::with_seed(0).hash_one(s);
        if let Some(&i) = self.index.get(&hash) {
            let (start, len) = self.at[i as usize];
            if &self.buf[start as usize..(start + len) as usize] == s {
                return i;
            }
        }
        self.buf.push(0x22);
        put_varint(&mut self.buf, s.len());
        let start = self.buf.len() as u32;
        self.buf.extend_from_slice(s);
        let i = self.at.len() as u32;
        self.at.push((start, s.len() as u32));
        self.index.insert(hash, i);
        i
    }

    /// Takes back the strings added since the table was `len` bytes long (`added` bytes).
    fn forget_after(&mut self, len: usize, added: usize) {
        if added == 0 {
            return;
        }
        while self
            .at
            .last()
            .is_some_and(|&(start, _)| start as usize > len)
        {
            self.at.pop();
        }
        let kept = self.at.len() as u32;
        self.index.retain(|_, i| *i < kept);
        self.buf.truncate(len);
    }
}

/// A `Sample` message's length (proto3: zero fields are left out).
fn sample_len(value: f64, timestamp_ms: i64) -> usize {
    let v = if value != 0.0 { 9 } else { 0 };
    let ts = if timestamp_ms != 0 {
        1 + encoded_len_varint(timestamp_ms as u64)
    } else {
        0
    };
    v + ts
}

/// A `Label` as field 1 of a `TimeSeries`.
/// One `Label` (field 1 of a `TimeSeries`): room for it is made once, and the lengths
/// (almost always under 128) are written a byte at a time.
fn write_label(buf: &mut Vec<u8>, name: &str, value: &str) {
    let field = |n: usize| {
        if n == 0 {
            0
        } else {
            1 + encoded_len_varint(n as u64) + n
        }
    };
    let len = field(name.len()) + field(value.len());
    buf.reserve(1 + encoded_len_varint(len as u64) + len);
    buf.push(0x0a);
    put_varint(buf, len);
    if !name.is_empty() {
        buf.push(0x0a);
        put_varint(buf, name.len());
        buf.extend_from_slice(name.as_bytes());
    }
    if !value.is_empty() {
        buf.push(0x12);
        put_varint(buf, value.len());
        buf.extend_from_slice(value.as_bytes());
    }
}

#[inline]
fn put_varint(buf: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        buf.push(n as u8 | 0x80);
        n >>= 7;
    }
    buf.push(n as u8);
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::from_otlp::{Exemplar, Series};

    #[test]
    fn labels_encode_as_prost_does_at_every_length() {
        let long = |c: char, n: usize| std::iter::repeat_n(c, n).collect::<String>();
        for (name, value) in [
            ("job".to_string(), "app".to_string()),
            ("a".into(), long('x', 127)),
            ("a".into(), long('x', 128)),
            (long('b', 200), long('y', 20_000)),
            (String::new(), "z".into()),
            ("k".into(), String::new()),
        ] {
            let mut ours = b"before".to_vec();
            write_label(&mut ours, &name, &value);
            let mut theirs = b"before".to_vec();
            prost::encoding::message::encode(1, &proto::Label { name, value }, &mut theirs);
            assert_eq!(ours, theirs);
        }
    }

    const NOW: i64 = 1_800_000_000_000;

    /// A request of one metric, `latency` in seconds, holding `data`.
    fn latency(
        data: opentelemetry_proto::tonic::metrics::v1::metric::Data,
    ) -> opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest {
        use opentelemetry_proto::tonic::metrics::v1::{Metric, ResourceMetrics, ScopeMetrics};
        opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![Metric {
                        name: "latency".into(),
                        unit: "s".into(),
                        data: Some(data),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn decode(body: &[u8]) -> proto::WriteRequest {
        let raw = snap::raw::Decoder::new().decompress_vec(body).unwrap();
        proto::WriteRequest::decode(raw.as_slice()).unwrap()
    }

    fn series(name: &str, labels: &[(&str, &str)], value: f64, t: i64) -> Series {
        Series {
            family: 0,
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            value,
            timestamp_ms: t,
            exemplar: None,
        }
    }

    fn label(name: &str, value: &str) -> proto::Label {
        proto::Label {
            name: name.into(),
            value: value.into(),
        }
    }

    fn all(f: &Finished) -> Vec<proto::TimeSeries> {
        f.lanes
            .iter()
            .flatten()
            .flat_map(|r| decode(&r.body).timeseries)
            .collect()
    }

    #[test]
    fn writes_what_prost_reads_each_sample_in_the_order_met() {
        let mut e = Encoder::new(1, 1 << 20, NOW);
        e.push_series(&series("up", &[("Zone", "a"), ("job", "app")], 1.0, NOW));
        e.push_series(&series("req_total", &[("path", "/")], 0.0, NOW - 10));
        let mut with_exemplar = series("req_total", &[("path", "/")], 7.5, NOW - 5);
        with_exemplar.exemplar = Some(Exemplar {
            labels: vec![("trace_id".into(), "ab".into())],
            value: 2.0,
            timestamp_ms: NOW - 6,
        });
        e.push_series(&with_exemplar);
        assert_eq!(e.samples(), 3);
        let metadata = vec![proto::MetricMetadata {
            r#type: 1,
            metric_family_name: "req_total".into(),
            help: "Requests.".into(),
            unit: String::new(),
        }];
        let f = e.finish(metadata.clone());
        assert_eq!(f.lanes.len(), 1);
        assert_eq!(f.lanes[0].len(), 1);
        let request = decode(&f.lanes[0][0].body);
        assert_eq!(request.metadata, metadata);
        let req_total = || vec![label("__name__", "req_total"), label("path", "/")];
        let expected = vec![
            proto::TimeSeries {
                // `__name__` sorts after upper-case names and before lower-case ones.
                labels: vec![
                    label("Zone", "a"),
                    label("__name__", "up"),
                    label("job", "app"),
                ],
                samples: vec![proto::Sample {
                    value: 1.0,
                    timestamp: NOW,
                }],
                exemplars: vec![],
                histograms: vec![],
            },
            proto::TimeSeries {
                labels: req_total(),
                samples: vec![proto::Sample {
                    value: 0.0,
                    timestamp: NOW - 10,
                }],
                exemplars: vec![],
                histograms: vec![],
            },
            proto::TimeSeries {
                labels: req_total(),
                samples: vec![proto::Sample {
                    value: 7.5,
                    timestamp: NOW - 5,
                }],
                exemplars: vec![proto::Exemplar {
                    labels: vec![label("trace_id", "ab")],
                    value: 2.0,
                    timestamp: NOW - 6,
                }],
                histograms: vec![],
            },
        ];
        assert_eq!(request.timeseries, expected);
        assert_eq!(f.lanes[0][0].series, 3);
    }

    #[test]
    fn cuts_requests_under_the_limit_and_keeps_a_series_in_its_shard_in_order() {
        let mut e = Encoder::new(3, 2_000, NOW);
        for round in 0..2 {
            for i in 0..300 {
                let id = i.to_string();
                e.push_series(&series("m", &[("id", &id)], 1.0, NOW + round));
            }
        }
        let f = e.finish(Vec::new());
        assert_eq!(f.lanes.len(), 3);
        let mut seen: std::collections::HashMap<String, (usize, Vec<i64>)> = Default::default();
        for (shard, lane) in f.lanes.iter().enumerate() {
            for r in lane {
                let raw = snap::raw::Decoder::new().decompress_vec(&r.body).unwrap();
                assert!(raw.len() <= 2_000, "{} bytes", raw.len());
                let request = proto::WriteRequest::decode(raw.as_slice()).unwrap();
                assert_eq!(request.timeseries.len(), r.series);
                for ts in request.timeseries {
                    let id = ts.labels[1].value.clone();
                    let entry = seen.entry(id).or_insert((shard, Vec::new()));
                    assert_eq!(entry.0, shard, "a series stays in its shard");
                    entry.1.push(ts.samples[0].timestamp);
                }
            }
        }
        assert_eq!(seen.len(), 300);
        assert!(seen.values().all(|(_, t)| t == &[NOW, NOW + 1]));
    }

    /// Blocks end inside series, one series is bigger than a block, and requests are
    /// cut between blocks: each body is still byte for byte what one snappy call over
    /// the whole request gives.
    #[test]
    fn a_request_compressed_block_by_block_is_the_whole_compressed_at_once() {
        let max = 3 * BLOCK + 1_000;
        let mut e = Encoder::new(1, max, NOW);
        let mut sent = Vec::new();
        for i in 0..6_000usize {
            let value = if i == 2_500 {
                "v".repeat(BLOCK + 300)
            } else {
                "x".repeat(i % 97)
            };
            let s = series("m", &[("a", &value), ("i", &i.to_string())], i as f64, NOW);
            e.push_series(&s);
            sent.push(proto::TimeSeries {
                labels: vec![
                    label("__name__", "m"),
                    label("a", &value),
                    label("i", &i.to_string()),
                ],
                samples: vec![proto::Sample {
                    value: i as f64,
                    timestamp: NOW,
                }],
                histograms: vec![],
                exemplars: vec![],
            });
        }
        let f = e.finish(Vec::new());
        let requests = &f.lanes[0];
        assert!(requests.len() >= 3, "{} requests", requests.len());
        let mut next = 0;
        for r in requests {
            let whole = proto::WriteRequest {
                timeseries: sent[next..next + r.series].to_vec(),
                metadata: vec![],
            }
            .encode_to_vec();
            assert!(whole.len() <= max);
            let at_once = snap::raw::Encoder::new().compress_vec(&whole).unwrap();
            assert_eq!(r.body[..], at_once[..], "request of {} series", r.series);
            next += r.series;
        }
        assert_eq!(next, sent.len());
    }

    /// A request cut exactly at a block's end (nothing partial left to compress), and
    /// one of metadata alone, are what one snappy call gives too.
    #[test]
    fn requests_cut_at_a_block_end_and_metadata_alone_compress_as_one_call() {
        let one = |pad: usize, i: usize| proto::TimeSeries {
            labels: vec![
                label("__name__", "m"),
                label("i", &format!("{i:05}")),
                label("p", &"x".repeat(pad)),
            ],
            samples: vec![proto::Sample {
                value: 1.0,
                timestamp: NOW,
            }],
            histograms: vec![],
            exemplars: vec![],
        };
        // A padding that makes each series exactly 64 bytes on the wire, so that 1,024
        // of them fill a block to its last byte.
        let pad = (0..64)
            .find(|&pad| {
                let len = one(pad, 0).encoded_len();
                1 + encoded_len_varint(len as u64) + len == 64
            })
            .unwrap();
        let mut e = Encoder::new(1, 2 * BLOCK, NOW);
        let sent: Vec<_> = (0..5_000).map(|i| one(pad, i)).collect();
        for ts in &sent {
            let labels: Vec<_> = ts.labels[1..]
                .iter()
                .map(|l| (l.name.as_str(), l.value.as_str()))
                .collect();
            e.push_series(&series("m", &labels, 1.0, NOW));
        }
        let f = e.finish(Vec::new());
        let sizes: Vec<_> = f.lanes[0].iter().map(|r| r.series).collect();
        assert_eq!(sizes, [2_048, 2_048, 904]);
        let mut next = 0;
        for r in &f.lanes[0] {
            let whole = proto::WriteRequest {
                timeseries: sent[next..next + r.series].to_vec(),
                metadata: vec![],
            }
            .encode_to_vec();
            let at_once = snap::raw::Encoder::new().compress_vec(&whole).unwrap();
            assert_eq!(r.body[..], at_once[..]);
            next += r.series;
        }

        let metadata: Vec<_> = (0..3_000)
            .map(|i| proto::MetricMetadata {
                r#type: 1,
                metric_family_name: format!("family_{i}_total"),
                help: "Requests served, by path and code.".into(),
                unit: String::new(),
            })
            .collect();
        let f = Encoder::new(1, REQUEST_BYTES, NOW).finish(metadata.clone());
        let whole = proto::WriteRequest {
            timeseries: vec![],
            metadata,
        }
        .encode_to_vec();
        assert!(whole.len() > BLOCK);
        assert_eq!(f.lanes[0].len(), 1);
        let at_once = snap::raw::Encoder::new().compress_vec(&whole).unwrap();
        assert_eq!(f.lanes[0][0].body[..], at_once[..]);
    }

    /// A histogram point from the future is many samples left out, but one point: what
    /// the pipeline counts as dropped.
    #[test]
    fn a_point_from_the_future_counts_once_however_many_samples_it_makes() {
        use opentelemetry_proto::tonic::metrics::v1::{metric, Histogram, HistogramDataPoint};
        let point = |t: i64| HistogramDataPoint {
            time_unix_nano: t as u64 * 1_000_000,
            count: 3,
            sum: Some(1.0),
            bucket_counts: vec![1, 1, 1],
            explicit_bounds: vec![0.1, 1.0],
            ..Default::default()
        };
        let request = latency(metric::Data::Histogram(Histogram {
            data_points: vec![point(NOW + APART_AHEAD_MS + 1), point(NOW)],
            aggregation_temporality: 2,
        }));
        let mut e = Encoder::new(2, 1 << 20, NOW);
        let mut acc = prom::Accumulator::default();
        prom::translate_with(
            &request,
            &prom::Settings::default(),
            &mut acc,
            NOW,
            &mut |s| e.push(s),
        );
        let f = e.finish(Vec::new());
        // Two buckets, +Inf, _sum and _count a point.
        assert_eq!((f.ahead_samples, f.ahead_points), (5, 1));
        assert_eq!(all(&f).len(), 5, "the point from now is sent");
    }

    #[test]
    fn old_samples_go_apart_and_samples_from_the_future_stay_out() {
        let mut e = Encoder::new(1, 1 << 20, NOW);
        e.push_series(&series("up", &[], 1.0, NOW));
        e.push_series(&series("epoch", &[], 1.0, 0));
        e.push_series(&series("old", &[], 1.0, NOW - APART_OLDER_MS - 1));
        e.push_series(&series("mixed", &[], 1.0, NOW - APART_OLDER_MS - 1));
        e.push_series(&series("mixed", &[], 2.0, NOW));
        e.push_series(&series("future", &[], 1.0, NOW + APART_AHEAD_MS + 1));
        let f = e.finish(Vec::new());
        assert_eq!(
            (f.apart_samples, f.ahead_samples, f.ahead_points),
            (3, 1, 1)
        );
        let lane = &f.lanes[0];
        assert_eq!(lane.len(), 2, "the usual request, then the old samples'");
        let names = |r: &Request| -> Vec<String> {
            decode(&r.body)
                .timeseries
                .iter()
                .map(|ts| ts.labels[0].value.clone())
                .collect()
        };
        assert_eq!(names(&lane[0]), ["up", "mixed"]);
        assert_eq!(names(&lane[1]), ["epoch", "old", "mixed"]);
        assert!(all(&f).iter().all(|ts| ts.labels[0].value != "future"));
    }

    /// An exponential histogram goes out as a `TimeSeries` of one native histogram (no
    /// samples), under the family's own name, readable by prost.
    #[test]
    fn an_exponential_histogram_is_written_as_a_native_histogram() {
        use opentelemetry_proto::tonic::metrics::v1::{
            exponential_histogram_data_point::Buckets, metric, ExponentialHistogram,
            ExponentialHistogramDataPoint,
        };
        let point = ExponentialHistogramDataPoint {
            time_unix_nano: NOW as u64 * 1_000_000,
            count: 5,
            sum: Some(2.5),
            scale: 1,
            zero_count: 1,
            positive: Some(Buckets {
                offset: -2,
                bucket_counts: vec![3, 1],
            }),
            ..Default::default()
        };
        let request = latency(metric::Data::ExponentialHistogram(ExponentialHistogram {
            data_points: vec![point.clone()],
            aggregation_temporality: 2,
        }));
        let mut e = Encoder::new(1, 1 << 20, NOW);
        let settings = prom::Settings {
            native_histograms: true,
            ..prom::Settings::default()
        };
        let t = prom::translate_with(
            &request,
            &settings,
            &mut prom::Accumulator::default(),
            NOW,
            &mut |s| e.push(s),
        );
        assert_eq!(t.dropped_points(), 0);
        let sent = all(&e.finish(Vec::new()));
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].labels, vec![label("__name__", "latency_seconds")]);
        assert!(sent[0].samples.is_empty());
        assert_eq!(
            sent[0].histograms,
            vec![prom::native_histogram(&point, NOW).unwrap()]
        );
        assert_eq!(sent[0].histograms[0].positive_deltas, vec![3, -2]);
    }

    /// One OTLP request of every kind, as a batch the remote-write exporter would
    /// translate: a counter with a start, a gauge with an exemplar, a classic histogram,
    /// a summary and an exponential histogram, over `n` series each.
    fn every_kind(
        n: usize,
    ) -> opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest {
        use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
        use opentelemetry_proto::tonic::metrics::v1::{
            exemplar, exponential_histogram_data_point::Buckets, metric::Data, number_data_point,
            summary_data_point::ValueAtQuantile, ExponentialHistogram,
            ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint, Metric,
            NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint,
        };
        let t = NOW as u64 * 1_000_000;
        let start = t - 60_000_000_000;
        let attrs = |i: usize| {
            vec![KeyValue {
                key: "path".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(format!("/api/{i}"))),
                }),
                ..Default::default()
            }]
        };
        let metric = |name: &str, help: &str, unit: &str, data| Metric {
            name: name.into(),
            description: help.into(),
            unit: unit.into(),
            data: Some(data),
            ..Default::default()
        };
        let number = |i: usize, v: f64| NumberDataPoint {
            attributes: attrs(i),
            start_time_unix_nano: start,
            time_unix_nano: t,
            value: Some(number_data_point::Value::AsDouble(v)),
            ..Default::default()
        };
        let metrics = vec![
            metric(
                "requests",
                "Requests served.",
                "{request}",
                Data::Sum(Sum {
                    data_points: (0..n).map(|i| number(i, i as f64 + 1.0)).collect(),
                    aggregation_temporality: 2,
                    is_monotonic: true,
                }),
            ),
            metric(
                "queue.depth",
                "",
                "",
                Data::Gauge(Gauge {
                    data_points: (0..n)
                        .map(|i| NumberDataPoint {
                            exemplars: vec![opentelemetry_proto::tonic::metrics::v1::Exemplar {
                                time_unix_nano: t - 1_000_000,
                                value: Some(exemplar::Value::AsDouble(3.0)),
                                trace_id: vec![7; 16],
                                span_id: vec![8; 8],
                                ..Default::default()
                            }],
                            ..number(i, 3.0)
                        })
                        .collect(),
                }),
            ),
            metric(
                "latency",
                "Request latency.",
                "s",
                Data::Histogram(Histogram {
                    data_points: (0..n)
                        .map(|i| HistogramDataPoint {
                            attributes: attrs(i),
                            start_time_unix_nano: start,
                            time_unix_nano: t,
                            count: 6,
                            sum: Some(1.5),
                            bucket_counts: vec![1, 2, 3],
                            explicit_bounds: vec![0.1, 1.0],
                            ..Default::default()
                        })
                        .collect(),
                    aggregation_temporality: 2,
                }),
            ),
            metric(
                "rpc",
                "",
                "s",
                Data::Summary(Summary {
                    data_points: (0..n)
                        .map(|i| SummaryDataPoint {
                            attributes: attrs(i),
                            start_time_unix_nano: start,
                            time_unix_nano: t,
                            count: 4,
                            sum: 2.0,
                            quantile_values: vec![ValueAtQuantile {
                                quantile: 0.5,
                                value: 0.4,
                            }],
                            ..Default::default()
                        })
                        .collect(),
                }),
            ),
            metric(
                "size",
                "",
                "By",
                Data::ExponentialHistogram(ExponentialHistogram {
                    data_points: (0..n)
                        .map(|i| ExponentialHistogramDataPoint {
                            attributes: attrs(i),
                            start_time_unix_nano: start,
                            time_unix_nano: t,
                            count: 4,
                            sum: Some(9.0),
                            scale: 2,
                            positive: Some(Buckets {
                                offset: 3,
                                bucket_counts: vec![1, 0, 3],
                            }),
                            ..Default::default()
                        })
                        .collect(),
                    aggregation_temporality: 2,
                }),
            ),
        ];
        opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn encode_both(
        request: &opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest,
        max_bytes: usize,
    ) -> (Finished, Finished) {
        let settings = prom::Settings {
            native_histograms: true,
            ..prom::Settings::default()
        };
        let run = |protocol: Protocol| {
            let mut e = Encoder::new(2, max_bytes, NOW).with_protocol(protocol);
            prom::translate_with(
                request,
                &settings,
                &mut prom::Accumulator::default(),
                NOW,
                &mut |s| e.push(s),
            );
            e.finish(Vec::new())
        };
        (run(Protocol::V1), run(Protocol::V2))
    }

    fn decode_v2(body: &[u8]) -> proto::v2::Request {
        let raw = snap::raw::Decoder::new().decompress_vec(body).unwrap();
        proto::v2::Request::decode(raw.as_slice()).unwrap()
    }

    /// Remote-write 2.0 carries exactly what 1.0 does, series by series and shard by
    /// shard; each series has its metadata and created timestamp, and each request its
    /// own table, starting with "", every string once, every reference inside it.
    #[test]
    fn remote_write_2_carries_what_1_does_with_metadata_per_series() {
        let request = every_kind(30);
        // Small requests: many cuts, each with its own table.
        let (v1, v2) = encode_both(&request, 4096);
        assert!(v2.lanes.iter().map(Vec::len).sum::<usize>() > 4);
        for (lane1, lane2) in v1.lanes.iter().zip(&v2.lanes) {
            let one: Vec<proto::TimeSeries> = lane1
                .iter()
                .flat_map(|r| decode(&r.body).timeseries)
                .collect();
            let mut two = Vec::new();
            for r in lane2 {
                let req = decode_v2(&r.body);
                assert_eq!(req.symbols.first().map(String::as_str), Some(""));
                let mut unique = req.symbols.clone();
                unique.sort();
                unique.dedup();
                assert_eq!(unique.len(), req.symbols.len(), "a symbol twice");
                for ts in &req.timeseries {
                    let refs = ts
                        .labels_refs
                        .iter()
                        .chain(ts.exemplars.iter().flat_map(|e| &e.labels_refs));
                    assert!(refs.clone().all(|&r| (r as usize) < req.symbols.len()));
                    let labels = req.labels(&ts.labels_refs);
                    let name = &labels.iter().find(|(k, _)| k == "__name__").unwrap().1;
                    let meta = ts.metadata.clone().unwrap();
                    let (kind, help, unit, created) = (
                        meta.r#type,
                        req.symbol(meta.help_ref),
                        req.symbol(meta.unit_ref),
                        ts.created_timestamp,
                    );
                    let start = NOW - 60_000;
                    let expected = match name.as_str() {
                        "requests_total" => (1, "Requests served.", "", start),
                        "queue_depth" => (2, "", "", 0),
                        n if n.starts_with("latency_seconds") => {
                            (3, "Request latency.", "seconds", start)
                        }
                        n if n.starts_with("rpc_seconds") => (5, "", "seconds", start),
                        "size_bytes" => (3, "", "bytes", start),
                        other => panic!("unexpected series {other}"),
                    };
                    assert_eq!((kind, help, unit, created), expected, "{name}");
                }
                two.extend(req.to_v1().timeseries);
            }
            assert_eq!(one, two);
        }
        let sent: usize = v1.lanes.iter().flatten().map(|r| r.series).sum();
        // 30 each: counter, gauge, 4 histogram series (2 buckets, +Inf... and sum, count),
        // summary (quantile, sum, count), native histogram.
        assert_eq!(sent, 30 * (1 + 1 + 5 + 3 + 1));
        assert_eq!(
            sent,
            v2.lanes.iter().flatten().map(|r| r.series).sum::<usize>()
        );
    }

    /// The symbol table is the point of 2.0: each string once a request, so the same
    /// series take far fewer bytes before compression. After snappy the difference
    /// mostly goes, since snappy finds 1.0's repeated strings itself: on this batch of
    /// near-identical series 2.0 is even a little larger on the wire (a reference that
    /// grows with every series compresses worse than a repeated string); the figures for
    /// a scraped page are in BENCHMARKS.md.
    #[test]
    fn remote_write_2_requests_are_smaller_than_1s() {
        let request = every_kind(2000);
        let (v1, v2) = encode_both(&request, 3_000_000);
        let sizes = |f: &Finished| {
            f.lanes.iter().flatten().fold((0, 0), |(wire, raw), r| {
                let plain = snap::raw::Decoder::new().decompress_vec(&r.body).unwrap();
                (wire + r.body.len(), raw + plain.len())
            })
        };
        let ((wire1, raw1), (wire2, raw2)) = (sizes(&v1), sizes(&v2));
        assert!(
            raw2 * 10 < raw1 * 7,
            "uncompressed: 2.0 {raw2} bytes, 1.0 {raw1}"
        );
        assert!(
            wire2 * 10 < wire1 * 12,
            "compressed: 2.0 {wire2} bytes, 1.0 {wire1}"
        );
    }
}
