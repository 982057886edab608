//! Remote-write requests written straight from the translation's borrowed samples.
//!
//! Each series' labels are encoded once, as protobuf, into one buffer for the whole batch;
//! samples of a series that comes back in the same batch join it (oldest first); requests
//! are cut per shard under the size limit and snappy-compressed. Nothing is allocated per
//! series, so the cost is the bytes written.
//!
//! One odd timestamp must not take a whole request down. Prometheus refuses a request
//! outright when one sample is older than its head block accepts (about an hour behind
//! its newest sample; the epoch, say), so such samples go in requests of their own at the
//! end of their shard, and `up` and the rest of the scrape do not go down with them. A
//! sample more than ten minutes ahead of the clock is not sent at all (counted as
//! dropped): a backend that accepted it would then refuse everything of that series
//! until real time caught up.

use bytes::Bytes;
use prost::encoding::{encode_varint, encoded_len_varint};
use sidekick_collector::util::KeyMap;

use crate::prom::{self, Sample, SeriesHasher};
use sidekick_collector::prometheus::prompb as proto;

/// One request ready to send: its compressed body and how many series it carries.
pub struct Request {
    pub body: Bytes,
    pub series: usize,
}

/// Samples older than this (relative to the batch's clock) are sent apart.
pub const APART_OLDER_MS: i64 = 3_600_000;
/// Samples this far ahead of the batch's clock are sent apart.
pub const APART_AHEAD_MS: i64 = 600_000;

const NONE: u32 = u32::MAX;

struct Entry {
    key: u64,
    /// The series' encoded labels: chunk, start, end in `Encoder::labels`.
    labels: (u32, u32, u32),
    value: f64,
    timestamp_ms: i64,
    /// The next sample of the same series in this batch.
    next: u32,
    /// The first sample of its series in this batch.
    first: bool,
    exemplar: u32,
}

/// Bytes per chunk of encoded labels: chunks are never grown, so no big buffer is ever
/// copied to grow it.
const CHUNK: usize = 1 << 20;

/// Gathers a batch's samples as encoded series.
#[derive(Default)]
pub struct Encoder {
    /// Encoded labels, series after series, in fixed-size chunks.
    labels: Vec<Vec<u8>>,
    /// One series' labels while they are written.
    scratch: Vec<u8>,
    entries: Vec<Entry>,
    /// Series key → its first and last entry.
    index: KeyMap<(u32, u32)>,
    exemplars: Vec<proto::Exemplar>,
}

impl Encoder {
    pub fn with_capacity(samples: usize) -> Self {
        Encoder {
            labels: Vec::new(),
            scratch: Vec::with_capacity(256),
            entries: Vec::with_capacity(samples),
            index: KeyMap::with_capacity_and_hasher(samples, Default::default()),
            exemplars: Vec::new(),
        }
    }

    /// Distinct series so far.
    pub fn series(&self) -> usize {
        self.index.len()
    }

    pub fn samples(&self) -> usize {
        self.entries.len()
    }

    pub fn push(&mut self, s: &Sample<'_>) {
        self.push_with(
            s.name,
            |f| s.for_each_label(f),
            s.value,
            s.timestamp_ms,
            s.exemplar,
        );
    }

    pub fn push_series(&mut self, s: &prom::Series) {
        self.push_with(
            &s.name,
            |f| s.labels.iter().for_each(|(k, v)| f(k, v)),
            s.value,
            s.timestamp_ms,
            s.exemplar.as_ref(),
        );
    }

    /// Adds one sample; `labels` calls its argument with each label in name order,
    /// `__name__` not among them.
    fn push_with(
        &mut self,
        name: &str,
        labels: impl FnOnce(&mut dyn FnMut(&str, &str)),
        value: f64,
        timestamp_ms: i64,
        exemplar: Option<&prom::Exemplar>,
    ) {
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
        let key = hash.finish();
        let me = self.entries.len() as u32;
        let (labels, first) = match self.index.get_mut(&key) {
            Some((first, last)) => {
                self.entries[*last as usize].next = me;
                *last = me;
                (self.entries[*first as usize].labels, false)
            }
            None => {
                self.index.insert(key, (me, me));
                (self.keep_labels(), true)
            }
        };
        let exemplar = match exemplar {
            Some(e) => {
                self.exemplars.push(proto::Exemplar {
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
                (self.exemplars.len() - 1) as u32
            }
            None => NONE,
        };
        self.entries.push(Entry {
            key,
            labels,
            value,
            timestamp_ms,
            next: NONE,
            first,
            exemplar,
        });
    }

    /// Moves the series' labels from the scratch buffer into the chunks.
    fn keep_labels(&mut self) -> (u32, u32, u32) {
        let n = self.scratch.len();
        let fits = self
            .labels
            .last()
            .is_some_and(|c| c.capacity() - c.len() >= n);
        if !fits {
            self.labels.push(Vec::with_capacity(CHUNK.max(n)));
        }
        let chunk = self.labels.len() - 1;
        let c = &mut self.labels[chunk];
        let start = c.len();
        c.extend_from_slice(&self.scratch);
        (chunk as u32, start as u32, c.len() as u32)
    }

    fn labels_of(&self, e: &Entry) -> &[u8] {
        let (chunk, start, end) = e.labels;
        &self.labels[chunk as usize][start as usize..end as usize]
    }

    /// The requests, one list per shard (series spread by their key), each under
    /// `max_bytes` before compression; `metadata` goes in the first. Samples older than
    /// [`APART_OLDER_MS`] before `now_ms` go in requests of their own; those more than
    /// [`APART_AHEAD_MS`] ahead are left out.
    pub fn finish(
        self,
        metadata: Vec<proto::MetricMetadata>,
        shards: usize,
        max_bytes: usize,
        now_ms: i64,
    ) -> Finished {
        let shards = shards.max(1);
        let mut per_shard: Vec<Vec<u32>> = vec![Vec::new(); shards];
        // About the bytes each shard's requests will take, to size their buffers once.
        let mut bytes = vec![0usize; shards];
        for (i, e) in self.entries.iter().enumerate() {
            let shard = (e.key % shards as u64) as usize;
            if e.first {
                per_shard[shard].push(i as u32);
                bytes[shard] += (e.labels.2 - e.labels.1) as usize + 4;
            }
            bytes[shard] += 2 + sample_len(e);
        }
        let ahead = |e: &&Entry| e.timestamp_ms > now_ms.saturating_add(APART_AHEAD_MS);
        let old = |e: &&Entry| e.timestamp_ms <= 0 || e.timestamp_ms < now_ms - APART_OLDER_MS;
        let mut snappy = snap::raw::Encoder::new();
        let mut out = Vec::with_capacity(shards);
        let mut metadata = Some(metadata);
        let mut chain: Vec<u32> = Vec::new();
        let (mut apart_samples, mut ahead_samples) = (0, 0);
        for (firsts, bytes) in per_shard.into_iter().zip(bytes) {
            let mut lane = Vec::with_capacity(1);
            let mut normal = Writer::new(max_bytes, bytes);
            let mut apart = Writer::new(max_bytes, 0);
            for first in firsts {
                chain.clear();
                let mut i = first;
                while i != NONE {
                    chain.push(i);
                    i = self.entries[i as usize].next;
                }
                if chain.len() > 1 {
                    chain.sort_by_key(|&i| self.entries[i as usize].timestamp_ms);
                }
                let labels = self.labels_of(&self.entries[first as usize]);
                let entries = chain.iter().map(|&i| &self.entries[i as usize]);
                if !entries.clone().any(|e| old(&e) || ahead(&e)) {
                    normal.series(labels, entries, &self.exemplars, &mut metadata, &mut snappy);
                    continue;
                }
                ahead_samples += entries.clone().filter(ahead).count();
                let kept = entries.filter(|e| !ahead(e));
                let (past, now): (Vec<&Entry>, Vec<&Entry>) = kept.partition(old);
                apart_samples += past.len();
                if !now.is_empty() {
                    normal.series(
                        labels,
                        now.into_iter(),
                        &self.exemplars,
                        &mut metadata,
                        &mut snappy,
                    );
                }
                if !past.is_empty() {
                    apart.series(
                        labels,
                        past.into_iter(),
                        &self.exemplars,
                        &mut metadata,
                        &mut snappy,
                    );
                }
            }
            normal.flush(&mut lane, &mut snappy);
            apart.flush(&mut lane, &mut snappy);
            out.push(lane);
        }
        // Nothing to send but metadata: a request of its own.
        if let Some(md) = metadata.filter(|m| !m.is_empty()) {
            let mut w = Writer::new(max_bytes, 0);
            w.metadata(&md);
            w.flush(&mut out[0], &mut snappy);
        }
        Finished {
            lanes: out,
            apart_samples,
            ahead_samples,
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
}

/// Fills one request after another.
struct Writer {
    buf: Vec<u8>,
    series: usize,
    max_bytes: usize,
    /// Requests cut so far.
    done: Vec<Request>,
}

impl Writer {
    /// A writer whose requests will hold about `expected` bytes in all.
    fn new(max_bytes: usize, expected: usize) -> Self {
        Writer {
            buf: Vec::with_capacity(expected.min(max_bytes) + 64),
            series: 0,
            max_bytes,
            done: Vec::new(),
        }
    }

    fn metadata(&mut self, metadata: &[proto::MetricMetadata]) {
        for m in metadata {
            prost::encoding::message::encode(3, m, &mut self.buf);
        }
    }

    /// Writes one `TimeSeries`, cutting a request first if it would not fit. The
    /// batch's `metadata` goes with the first series written, whichever writer has it.
    fn series<'e>(
        &mut self,
        labels: &[u8],
        entries: impl Iterator<Item = &'e Entry> + Clone,
        exemplars: &[proto::Exemplar],
        metadata: &mut Option<Vec<proto::MetricMetadata>>,
        snappy: &mut snap::raw::Encoder,
    ) {
        let mut len = labels.len();
        for e in entries.clone() {
            let n = sample_len(e);
            len += 1 + encoded_len_varint(n as u64) + n;
            if e.exemplar != NONE {
                len += prost::encoding::message::encoded_len(3, &exemplars[e.exemplar as usize]);
            }
        }
        let total = 1 + encoded_len_varint(len as u64) + len;
        if self.series > 0 && self.buf.len() + total > self.max_bytes {
            self.cut(snappy);
        }
        if let Some(md) = metadata.take() {
            self.metadata(&md);
        }
        self.buf.reserve(total);
        self.buf.push(0x0a);
        encode_varint(len as u64, &mut self.buf);
        self.buf.extend_from_slice(labels);
        for e in entries.clone() {
            self.buf.push(0x12);
            encode_varint(sample_len(e) as u64, &mut self.buf);
            if e.value != 0.0 {
                self.buf.push(0x09);
                self.buf.extend_from_slice(&e.value.to_le_bytes());
            }
            if e.timestamp_ms != 0 {
                self.buf.push(0x10);
                encode_varint(e.timestamp_ms as u64, &mut self.buf);
            }
        }
        for e in entries {
            if e.exemplar != NONE {
                prost::encoding::message::encode(3, &exemplars[e.exemplar as usize], &mut self.buf);
            }
        }
        self.series += 1;
    }

    fn cut(&mut self, snappy: &mut snap::raw::Encoder) {
        let body = snappy.compress_vec(&self.buf).unwrap_or_default();
        self.done.push(Request {
            body: Bytes::from(body),
            series: self.series,
        });
        self.buf.clear();
        self.series = 0;
    }

    /// Cuts what is left (a request with only metadata too).
    fn flush(&mut self, lane: &mut Vec<Request>, snappy: &mut snap::raw::Encoder) {
        if !self.buf.is_empty() {
            self.cut(snappy);
        }
        lane.append(&mut self.done);
    }
}

/// A `Sample` message's length (proto3: zero fields are left out).
fn sample_len(e: &Entry) -> usize {
    let value = if e.value != 0.0 { 9 } else { 0 };
    let ts = if e.timestamp_ms != 0 {
        1 + encoded_len_varint(e.timestamp_ms as u64)
    } else {
        0
    };
    value + ts
}

/// A `Label` as field 1 of a `TimeSeries`.
fn write_label(buf: &mut Vec<u8>, name: &str, value: &str) {
    let mut len = 0;
    if !name.is_empty() {
        len += 1 + encoded_len_varint(name.len() as u64) + name.len();
    }
    if !value.is_empty() {
        len += 1 + encoded_len_varint(value.len() as u64) + value.len();
    }
    buf.push(0x0a);
    encode_varint(len as u64, buf);
    if !name.is_empty() {
        buf.push(0x0a);
        encode_varint(name.len() as u64, buf);
        buf.extend_from_slice(name.as_bytes());
    }
    if !value.is_empty() {
        buf.push(0x12);
        encode_varint(value.len() as u64, buf);
        buf.extend_from_slice(value.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::prom::{Exemplar, Series};

    const NOW: i64 = 1_800_000_000_000;

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
    fn writes_what_prost_reads_with_one_series_per_label_set_oldest_first() {
        let mut e = Encoder::default();
        e.push_series(&series("up", &[("Zone", "a"), ("job", "app")], 1.0, NOW));
        e.push_series(&series("req_total", &[("path", "/")], 0.0, NOW - 5));
        let mut with_exemplar = series("req_total", &[("path", "/")], 7.5, NOW - 10);
        with_exemplar.exemplar = Some(Exemplar {
            labels: vec![("trace_id".into(), "ab".into())],
            value: 2.0,
            timestamp_ms: NOW - 11,
        });
        e.push_series(&with_exemplar);
        assert_eq!((e.series(), e.samples()), (2, 3));
        let metadata = vec![proto::MetricMetadata {
            r#type: 1,
            metric_family_name: "req_total".into(),
            help: "Requests.".into(),
            unit: String::new(),
        }];
        let f = e.finish(metadata.clone(), 1, 1 << 20, NOW);
        assert_eq!(f.lanes.len(), 1);
        assert_eq!(f.lanes[0].len(), 1);
        let request = decode(&f.lanes[0][0].body);
        assert_eq!(request.metadata, metadata);
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
            },
            proto::TimeSeries {
                labels: vec![label("__name__", "req_total"), label("path", "/")],
                samples: vec![
                    proto::Sample {
                        value: 7.5,
                        timestamp: NOW - 10,
                    },
                    proto::Sample {
                        value: 0.0,
                        timestamp: NOW - 5,
                    },
                ],
                exemplars: vec![proto::Exemplar {
                    labels: vec![label("trace_id", "ab")],
                    value: 2.0,
                    timestamp: NOW - 11,
                }],
            },
        ];
        assert_eq!(request.timeseries, expected);
        assert_eq!(f.lanes[0][0].series, 2);
    }

    #[test]
    fn cuts_requests_under_the_limit_and_keeps_a_series_in_its_shard() {
        let mut e = Encoder::default();
        for round in 0..2 {
            for i in 0..300 {
                let id = i.to_string();
                e.push_series(&series("m", &[("id", &id)], 1.0, NOW + round));
            }
        }
        let f = e.finish(Vec::new(), 3, 2_000, NOW);
        assert_eq!(f.lanes.len(), 3);
        let mut seen = std::collections::HashMap::new();
        for (shard, lane) in f.lanes.iter().enumerate() {
            for r in lane {
                let raw = snap::raw::Decoder::new().decompress_vec(&r.body).unwrap();
                assert!(raw.len() <= 2_000, "{} bytes", raw.len());
                let request = proto::WriteRequest::decode(raw.as_slice()).unwrap();
                assert_eq!(request.timeseries.len(), r.series);
                for ts in request.timeseries {
                    assert_eq!(ts.samples.len(), 2, "both samples of a series together");
                    assert!(ts.samples[0].timestamp < ts.samples[1].timestamp);
                    let id = ts.labels[1].value.clone();
                    assert!(seen.insert(id, shard).is_none(), "a series appears once");
                }
            }
        }
        assert_eq!(seen.len(), 300);
    }

    #[test]
    fn old_samples_go_apart_and_samples_from_the_future_stay_out() {
        let mut e = Encoder::default();
        e.push_series(&series("up", &[], 1.0, NOW));
        e.push_series(&series("epoch", &[], 1.0, 0));
        e.push_series(&series("old", &[], 1.0, NOW - APART_OLDER_MS - 1));
        e.push_series(&series("mixed", &[], 1.0, NOW - APART_OLDER_MS - 1));
        e.push_series(&series("mixed", &[], 2.0, NOW));
        e.push_series(&series("future", &[], 1.0, NOW + APART_AHEAD_MS + 1));
        let f = e.finish(Vec::new(), 1, 1 << 20, NOW);
        assert_eq!((f.apart_samples, f.ahead_samples), (3, 1));
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
}
