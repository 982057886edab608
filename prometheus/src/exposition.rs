//! The Prometheus protobuf exposition (`io.prometheus.client.MetricFamily` messages, each
//! preceded by its length as a varint): the one scrape format that carries native
//! histograms. The messages are written by hand, as in [`crate::prompb`]; the same
//! structs encode a page (the `prometheus` exporter, tests) and decode one (the scrape
//! receiver).
//!
//! A native histogram is checked here and turned into OTLP's terms ([`Native`]): dense
//! bucket counts from an offset, OTLP's bucket index (one below Prometheus's, whose bucket
//! `i` ends at base^i where OTLP's bucket `i` starts at base^i).

use prost::Message as _;

/// The `Content-Type` of the delimited protobuf exposition, and what `Accept` names.
pub const CONTENT_TYPE: &str =
    "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited";

/// Whether a response's `Content-Type` is the delimited protobuf exposition.
pub fn is_protobuf(content_type: &str) -> bool {
    let ct = content_type.trim_start();
    ct.starts_with("application/vnd.google.protobuf")
        && ct.contains("io.prometheus.client.MetricFamily")
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricFamily {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub help: String,
    /// [`MetricType`].
    #[prost(int32, tag = "3")]
    pub r#type: i32,
    #[prost(message, repeated, tag = "4")]
    pub metric: Vec<Metric>,
    #[prost(string, tag = "5")]
    pub unit: String,
}

/// `MetricFamily.type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricType {
    Counter = 0,
    Gauge = 1,
    Summary = 2,
    Untyped = 3,
    Histogram = 4,
    GaugeHistogram = 5,
}

impl MetricType {
    pub fn from_i32(v: i32) -> Option<MetricType> {
        Some(match v {
            0 => MetricType::Counter,
            1 => MetricType::Gauge,
            2 => MetricType::Summary,
            3 => MetricType::Untyped,
            4 => MetricType::Histogram,
            5 => MetricType::GaugeHistogram,
            _ => return None,
        })
    }
}

#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct LabelPair {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Metric {
    #[prost(message, repeated, tag = "1")]
    pub label: Vec<LabelPair>,
    #[prost(message, optional, tag = "2")]
    pub gauge: Option<Value>,
    #[prost(message, optional, tag = "3")]
    pub counter: Option<Counter>,
    #[prost(message, optional, tag = "4")]
    pub summary: Option<Summary>,
    #[prost(message, optional, tag = "5")]
    pub untyped: Option<Value>,
    #[prost(message, optional, tag = "7")]
    pub histogram: Option<Histogram>,
    /// Milliseconds since the epoch; 0 when the page gave none.
    #[prost(int64, tag = "6")]
    pub timestamp_ms: i64,
}

/// `Gauge` and `Untyped`: one value.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Value {
    #[prost(double, tag = "1")]
    pub value: f64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Counter {
    #[prost(double, tag = "1")]
    pub value: f64,
    #[prost(message, optional, tag = "2")]
    pub exemplar: Option<Exemplar>,
    #[prost(message, optional, tag = "3")]
    pub created_timestamp: Option<Timestamp>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Quantile {
    #[prost(double, tag = "1")]
    pub quantile: f64,
    #[prost(double, tag = "2")]
    pub value: f64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Summary {
    #[prost(uint64, tag = "1")]
    pub sample_count: u64,
    #[prost(double, tag = "2")]
    pub sample_sum: f64,
    #[prost(message, repeated, tag = "3")]
    pub quantile: Vec<Quantile>,
    #[prost(message, optional, tag = "4")]
    pub created_timestamp: Option<Timestamp>,
}

/// A classic histogram (`bucket`), a native one (`schema` and the spans), or both.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Histogram {
    #[prost(uint64, tag = "1")]
    pub sample_count: u64,
    /// Overrides `sample_count` when above 0 (float histograms).
    #[prost(double, tag = "4")]
    pub sample_count_float: f64,
    #[prost(double, tag = "2")]
    pub sample_sum: f64,
    /// Cumulative, by increasing upper bound; `+Inf` may be left out.
    #[prost(message, repeated, tag = "3")]
    pub bucket: Vec<Bucket>,
    #[prost(message, optional, tag = "15")]
    pub created_timestamp: Option<Timestamp>,
    #[prost(sint32, tag = "5")]
    pub schema: i32,
    #[prost(double, tag = "6")]
    pub zero_threshold: f64,
    #[prost(uint64, tag = "7")]
    pub zero_count: u64,
    #[prost(double, tag = "8")]
    pub zero_count_float: f64,
    #[prost(message, repeated, tag = "9")]
    pub negative_span: Vec<BucketSpan>,
    /// Each bucket's count as the difference to the previous bucket's.
    #[prost(sint64, repeated, tag = "10")]
    pub negative_delta: Vec<i64>,
    /// Each bucket's count (float histograms).
    #[prost(double, repeated, tag = "11")]
    pub negative_count: Vec<f64>,
    /// A native histogram with no observation yet has one span of offset 0, length 0.
    #[prost(message, repeated, tag = "12")]
    pub positive_span: Vec<BucketSpan>,
    #[prost(sint64, repeated, tag = "13")]
    pub positive_delta: Vec<i64>,
    #[prost(double, repeated, tag = "14")]
    pub positive_count: Vec<f64>,
    #[prost(message, repeated, tag = "16")]
    pub exemplars: Vec<Exemplar>,
}

impl Histogram {
    /// Whether this is (also) a native histogram: spans, or a zero bucket.
    pub fn is_native(&self) -> bool {
        !self.positive_span.is_empty()
            || !self.negative_span.is_empty()
            || self.zero_threshold != 0.0
            || self.zero_count != 0
            || self.zero_count_float != 0.0
    }

    /// The observation count, from whichever of the two fields the page used.
    pub fn count(&self) -> f64 {
        if self.sample_count_float > 0.0 {
            self.sample_count_float
        } else {
            self.sample_count as f64
        }
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Bucket {
    #[prost(uint64, tag = "1")]
    pub cumulative_count: u64,
    /// Overrides `cumulative_count` when above 0.
    #[prost(double, tag = "4")]
    pub cumulative_count_float: f64,
    #[prost(double, tag = "2")]
    pub upper_bound: f64,
    #[prost(message, optional, tag = "3")]
    pub exemplar: Option<Exemplar>,
}

impl Bucket {
    pub fn count(&self) -> f64 {
        if self.cumulative_count_float > 0.0 {
            self.cumulative_count_float
        } else {
            self.cumulative_count as f64
        }
    }
}

pub use crate::prompb::BucketSpan;

#[derive(Clone, PartialEq, prost::Message)]
pub struct Exemplar {
    #[prost(message, repeated, tag = "1")]
    pub label: Vec<LabelPair>,
    #[prost(double, tag = "2")]
    pub value: f64,
    #[prost(message, optional, tag = "3")]
    pub timestamp: Option<Timestamp>,
}

/// `google.protobuf.Timestamp`.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct Timestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

impl Timestamp {
    pub fn as_secs_f64(&self) -> f64 {
        self.seconds as f64 + f64::from(self.nanos) / 1e9
    }

    pub fn from_ms(ms: i64) -> Timestamp {
        Timestamp {
            seconds: ms.div_euclid(1000),
            nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
        }
    }
}

/// Why a protobuf page could not be read at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("protobuf page, metric family {family} (byte {at}): {message}")]
pub struct DecodeError {
    /// 1-based.
    pub family: usize,
    pub at: usize,
    pub message: String,
}

/// Reads a delimited page: every family, in page order.
pub fn decode(mut page: &[u8]) -> Result<Vec<MetricFamily>, DecodeError> {
    let total = page.len();
    let mut families = Vec::new();
    while !page.is_empty() {
        let fail = |message: String, families: &Vec<MetricFamily>, rest: &[u8]| DecodeError {
            family: families.len() + 1,
            at: total - rest.len(),
            message,
        };
        let before = page;
        let len = prost::encoding::decode_varint(&mut page)
            .map_err(|e| fail(format!("bad length prefix: {e}"), &families, before))?;
        let len = usize::try_from(len)
            .ok()
            .filter(|&n| n <= page.len())
            .ok_or_else(|| {
                fail(
                    format!("length {len} runs past the page's end"),
                    &families,
                    before,
                )
            })?;
        let family = MetricFamily::decode(&page[..len])
            .map_err(|e| fail(format!("not a MetricFamily: {e}"), &families, before))?;
        families.push(family);
        page = &page[len..];
    }
    Ok(families)
}

/// Writes families as a delimited page.
pub fn encode(families: &[MetricFamily]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in families {
        f.encode_length_delimited(&mut out)
            .expect("a Vec grows as needed");
    }
    out
}

/// A native histogram's buckets on one side of zero, dense: `counts[k]` is OTLP bucket
/// `offset + k`, covering (base^(offset+k), base^(offset+k+1)].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dense {
    pub offset: i32,
    pub counts: Vec<u64>,
}

/// A native histogram checked and in OTLP's terms.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Native {
    /// OTLP's scale: Prometheus's schema, or lower where the buckets spanned more than
    /// [`MAX_DENSE`] and were merged.
    pub scale: i32,
    pub zero_threshold: f64,
    pub zero_count: u64,
    pub count: u64,
    pub sum: f64,
    pub positive: Dense,
    pub negative: Dense,
    /// The page's exemplars for it (set by the reader of the page).
    pub exemplars: Vec<Exemplar>,
}

/// The most buckets one side of a dense histogram may span (populated or not); a page's
/// histogram whose buckets lie further apart is merged to a coarser scale until they fit,
/// so a hostile span offset cannot make Sidekick allocate gigabytes.
pub const MAX_DENSE: usize = 1 << 14;

/// Reads a page's native histogram, checking it as Prometheus does: a schema in −4…8,
/// one count per bucket the spans announce, no negative count, no span going backwards,
/// and (unless the sum is NaN) a count equal to the buckets' total. Float histograms are
/// taken when every count is a whole number, since OTLP's counts are integers.
pub fn native(h: &Histogram) -> Result<Native, &'static str> {
    if !(-4..=8).contains(&h.schema) {
        return Err("native histogram schema outside -4…8");
    }
    let whole = |v: f64| -> Result<u64, &'static str> {
        if v < 0.0 || !v.is_finite() {
            Err("native histogram with a negative or infinite count")
        } else if v.fract() != 0.0 || v > u64::MAX as f64 {
            Err("float native histogram with a count that is not a whole number")
        } else {
            Ok(v as u64)
        }
    };
    let float = h.sample_count_float > 0.0
        || h.zero_count_float > 0.0
        || !h.positive_count.is_empty()
        || !h.negative_count.is_empty();
    let count = whole(h.count())?;
    let zero_count = if h.zero_count_float > 0.0 {
        whole(h.zero_count_float)?
    } else {
        h.zero_count
    };
    if h.zero_threshold < 0.0 || h.zero_threshold.is_nan() {
        return Err("native histogram with a negative zero_threshold");
    }
    let positive = sparse(
        &h.positive_span,
        &h.positive_delta,
        &h.positive_count,
        float,
    )?;
    let negative = sparse(
        &h.negative_span,
        &h.negative_delta,
        &h.negative_count,
        float,
    )?;
    let total = positive
        .iter()
        .chain(&negative)
        .try_fold(zero_count, |t, &(_, c)| t.checked_add(c))
        .ok_or("native histogram bucket counts overflow")?;
    if total > count || (total != count && !h.sample_sum.is_nan()) {
        return Err("native histogram count is not the total of its buckets");
    }
    let mut scale = h.schema;
    let (mut pos, mut neg) = (positive, negative);
    while !fits(&pos) || !fits(&neg) {
        scale -= 1;
        merge(&mut pos);
        merge(&mut neg);
    }
    Ok(Native {
        scale,
        zero_threshold: h.zero_threshold,
        zero_count,
        count,
        sum: h.sample_sum,
        positive: dense(&pos),
        negative: dense(&neg),
        exemplars: Vec::new(),
    })
}

/// (OTLP index, count) of each bucket integer spans and deltas name, in index order, or
/// why they do not add up.
pub fn integer_buckets(
    spans: &[BucketSpan],
    deltas: &[i64],
) -> Result<Vec<(i64, u64)>, &'static str> {
    sparse(spans, deltas, &[], false)
}

/// (OTLP index, count) of each bucket the spans name, in index order.
fn sparse(
    spans: &[BucketSpan],
    deltas: &[i64],
    counts: &[f64],
    float: bool,
) -> Result<Vec<(i64, u64)>, &'static str> {
    let announced: u64 = spans.iter().map(|s| u64::from(s.length)).sum();
    let given = if float { counts.len() } else { deltas.len() };
    if announced != given as u64 {
        return Err("native histogram spans and bucket counts disagree");
    }
    let mut out = Vec::with_capacity(given);
    // Prometheus's index of the next bucket, and the running count of the deltas.
    let mut index: i64 = 0;
    let mut running: i64 = 0;
    let mut at = 0;
    for (n, span) in spans.iter().enumerate() {
        if n > 0 && span.offset < 0 {
            return Err("native histogram span with a negative offset");
        }
        index += i64::from(span.offset);
        for _ in 0..span.length {
            let count = if float {
                let c = counts[at];
                if c < 0.0 || !c.is_finite() || c.fract() != 0.0 {
                    return Err("float native histogram bucket that is not a whole count");
                }
                c as u64
            } else {
                running = running
                    .checked_add(deltas[at])
                    .ok_or("native histogram bucket counts overflow")?;
                u64::try_from(running)
                    .map_err(|_| "native histogram with a negative bucket count")?
            };
            // Past 2^20 a bucket's bound is beyond any float, whatever the schema.
            if index.abs() > 1 << 20 {
                return Err("native histogram bucket index beyond the float range");
            }
            // OTLP's bucket `index - 1` is Prometheus's bucket `index`.
            out.push((index - 1, count));
            index += 1;
            at += 1;
        }
    }
    Ok(out)
}

fn fits(buckets: &[(i64, u64)]) -> bool {
    match (buckets.first(), buckets.last()) {
        (Some(first), Some(last)) => last.0 - first.0 < MAX_DENSE as i64,
        _ => true,
    }
}

/// One scale coarser: OTLP buckets `2k` and `2k+1` become bucket `k`.
fn merge(buckets: &mut Vec<(i64, u64)>) {
    let mut out: Vec<(i64, u64)> = Vec::with_capacity(buckets.len());
    for &(i, c) in buckets.iter() {
        let i = i >> 1;
        match out.last_mut() {
            Some(last) if last.0 == i => last.1 += c,
            _ => out.push((i, c)),
        }
    }
    *buckets = out;
}

fn dense(buckets: &[(i64, u64)]) -> Dense {
    // Empty buckets at the edges are left out; a histogram without any has none.
    let populated = |b: &&(i64, u64)| b.1 > 0;
    let (Some(first), Some(last)) = (
        buckets.iter().find(populated),
        buckets.iter().rev().find(populated),
    ) else {
        return Dense::default();
    };
    let mut counts = vec![0; (last.0 - first.0 + 1) as usize];
    for &(i, c) in buckets {
        if (first.0..=last.0).contains(&i) {
            counts[(i - first.0) as usize] += c;
        }
    }
    Dense {
        offset: first.0 as i32,
        counts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(offset: i32, length: u32) -> BucketSpan {
        BucketSpan { offset, length }
    }

    fn hist(schema: i32, spans: Vec<BucketSpan>, deltas: Vec<i64>, count: u64) -> Histogram {
        Histogram {
            sample_count: count,
            sample_sum: 1.0,
            schema,
            positive_span: spans,
            positive_delta: deltas,
            ..Default::default()
        }
    }

    #[test]
    fn spans_and_deltas_become_dense_counts_one_index_down() {
        // Prometheus buckets 1, 2 (counts 2, 3), then a gap of 2, then bucket 5 (count 1).
        let h = hist(3, vec![span(1, 2), span(2, 1)], vec![2, 1, -2], 6);
        let n = native(&h).unwrap();
        assert_eq!(n.scale, 3);
        assert_eq!(n.count, 6);
        assert_eq!(
            n.positive,
            Dense {
                offset: 0,
                counts: vec![2, 3, 0, 0, 1]
            }
        );
        assert_eq!(n.negative, Dense::default());
    }

    #[test]
    fn an_empty_native_histogram_has_no_buckets() {
        let h = hist(0, vec![span(0, 0)], vec![], 0);
        assert!(h.is_native());
        let n = native(&h).unwrap();
        assert_eq!((n.count, n.positive.counts.len()), (0, 0));
    }

    #[test]
    fn inconsistent_histograms_are_refused() {
        let cases = [
            hist(9, vec![span(0, 1)], vec![1], 1),
            hist(-5, vec![span(0, 1)], vec![1], 1),
            // Two buckets announced, one count given.
            hist(0, vec![span(0, 2)], vec![1], 1),
            // A bucket count going below zero.
            hist(0, vec![span(0, 2)], vec![1, -2], 1),
            // A count that is not the buckets' total.
            hist(0, vec![span(0, 2)], vec![1, 0], 5),
            // A later span going backwards.
            hist(0, vec![span(0, 1), span(-3, 1)], vec![1, 0], 2),
        ];
        for h in cases {
            assert!(native(&h).is_err(), "{h:?}");
        }
        // With a NaN sum, the count may exceed the buckets (Prometheus's rule).
        let mut h = hist(0, vec![span(0, 2)], vec![1, 0], 5);
        h.sample_sum = f64::NAN;
        assert!(native(&h).is_ok());
    }

    #[test]
    fn buckets_too_far_apart_are_merged_to_a_coarser_scale() {
        let far = hist(8, vec![span(1 << 21, 1)], vec![1], 1);
        assert!(native(&far).is_err());
        let h = hist(8, vec![span(-100_000, 1), span(200_000, 1)], vec![1, 0], 2);
        let n = native(&h).unwrap();
        assert!(n.scale < 8);
        assert!(n.positive.counts.len() <= MAX_DENSE);
        assert_eq!(n.positive.counts.iter().sum::<u64>(), 2);
        // Each merge halves an index (rounding down): the first bucket's index follows.
        assert_eq!(n.positive.offset, (-100_001i64 >> (8 - n.scale)) as i32);
    }

    #[test]
    fn float_histograms_with_whole_counts_are_taken() {
        let h = Histogram {
            sample_count_float: 3.0,
            sample_sum: 2.0,
            schema: 1,
            positive_span: vec![span(0, 2)],
            positive_count: vec![1.0, 2.0],
            ..Default::default()
        };
        assert_eq!(native(&h).unwrap().positive.counts, vec![1, 2]);
        let h = Histogram {
            positive_count: vec![1.5, 1.5],
            ..h
        };
        assert!(native(&h).is_err());
    }

    #[test]
    fn a_delimited_page_round_trips_and_a_cut_one_is_refused() {
        let fam = MetricFamily {
            name: "x".into(),
            r#type: MetricType::Gauge as i32,
            metric: vec![Metric {
                gauge: Some(Value { value: 2.5 }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let page = encode(&[fam.clone(), fam.clone()]);
        assert_eq!(decode(&page).unwrap(), vec![fam.clone(), fam]);
        let err = decode(&page[..page.len() - 1]).unwrap_err();
        assert_eq!(err.family, 2);
    }
}
