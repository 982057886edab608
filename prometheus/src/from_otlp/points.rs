//! One metric's points written as Prometheus samples: numbers, histograms (buckets,
//! sum, count, exemplars), summaries, each under its family's name and unit suffix.

use super::*;

pub(super) fn exemplar(e: &opentelemetry_proto::tonic::metrics::v1::Exemplar) -> Exemplar {
    let mut labels = Vec::new();
    if e.trace_id.len() == 16 {
        labels.push(("trace_id".into(), sidekick_core::util::hex(&e.trace_id)));
    }
    if e.span_id.len() == 8 {
        labels.push(("span_id".into(), sidekick_core::util::hex(&e.span_id)));
    }
    labels_from(&e.filtered_attributes, &mut labels);
    Exemplar {
        labels,
        value: exemplar_value(e),
        timestamp_ms: ms(e.time_unix_nano),
    }
}

pub(super) fn exemplar_value(e: &opentelemetry_proto::tonic::metrics::v1::Exemplar) -> f64 {
    match e.value {
        Some(opentelemetry_proto::tonic::metrics::v1::exemplar::Value::AsDouble(d)) => d,
        Some(opentelemetry_proto::tonic::metrics::v1::exemplar::Value::AsInt(i)) => i as f64,
        None => 0.0,
    }
}

/// What a metric's translation reuses from one point to the next.
#[derive(Default)]
pub(super) struct Scratch {
    /// `le` texts for `bounds`, the last bucket bounds seen.
    pub(super) bounds: Vec<f64>,
    pub(super) bound_texts: Vec<String>,
}

impl Scratch {
    /// The `le` label values for `bounds` (made again only when the bounds change).
    pub(super) fn bound_texts(&mut self, bounds: &[f64]) -> &[String] {
        if self.bounds != bounds {
            self.bounds.clear();
            self.bounds.extend_from_slice(bounds);
            self.bound_texts = bounds.iter().map(|b| format_bound(*b)).collect();
        }
        &self.bound_texts
    }
}

/// Translates one metric; returns the latest point time seen (ms).
#[allow(clippy::too_many_arguments)]
pub(super) fn translate_metric(
    m: &Metric,
    detached: &[Arc<Attrs>],
    ctx: &Ctx<'_>,
    t: &mut Translation,
    index: &mut HashMap<(String, Kind), usize>,
    acc: &mut Accumulator,
    now_ms: i64,
    scratch: &mut Scratch,
    emit: &mut dyn FnMut(&Sample<'_>),
    next_point: &mut usize,
) -> i64 {
    let delta = |temporality: i32| temporality == AggregationTemporality::Delta as i32;
    let kind = match &m.data {
        Some(metric::Data::Gauge(_)) => Kind::Gauge,
        Some(metric::Data::Sum(s)) if s.is_monotonic => Kind::Counter,
        Some(metric::Data::Sum(_)) => Kind::Gauge,
        Some(metric::Data::Histogram(_)) => Kind::Histogram,
        Some(metric::Data::Summary(_)) => Kind::Summary,
        Some(metric::Data::ExponentialHistogram(h)) => {
            let why = if delta(h.aggregation_temporality) {
                Some("exponential histograms of delta temporality are not translated")
            } else {
                None
            };
            if let Some(why) = why {
                t.dropped.push((h.data_points.len(), why));
                *next_point += h.data_points.len();
                return 0;
            }
            Kind::Histogram
        }
        None => return 0,
    };
    let (name, family) = family_of(m, kind, ctx.settings, t, index);
    let out = &mut Out {
        at: Of {
            family,
            def: &t.families[family],
            name: &name,
            now_ms,
        },
        latest: 0,
        point: *next_point,
        detached,
        emit,
    };
    match &m.data {
        Some(metric::Data::Gauge(g)) => numbers(&g.data_points, false, ctx, acc, out),
        Some(metric::Data::Sum(s)) => numbers(
            &s.data_points,
            delta(s.aggregation_temporality),
            ctx,
            acc,
            out,
        ),
        Some(metric::Data::Histogram(h)) => {
            histogram(h, delta(h.aggregation_temporality), ctx, acc, scratch, out)
        }
        Some(metric::Data::Summary(s)) => summary(s, ctx, out),
        Some(metric::Data::ExponentialHistogram(h)) if ctx.settings.native_histograms => {
            for (points, why) in exponential(h, ctx, out) {
                t.dropped.push((points, why));
            }
        }
        Some(metric::Data::ExponentialHistogram(h)) => {
            let classic = Histogram {
                data_points: h.data_points.iter().map(classic_of).collect(),
                aggregation_temporality: h.aggregation_temporality,
            };
            histogram(&classic, false, ctx, acc, scratch, out)
        }
        None => {}
    }
    *next_point = out.point;
    out.latest
}

/// What the translation of one metric's points shares.
pub(super) struct Out<'m, 'e> {
    pub(super) at: Of<'m>,
    /// The latest point time seen (ms).
    pub(super) latest: i64,
    /// The number the next data point gets.
    pub(super) point: usize,
    /// The request's detached attributes, by point number.
    pub(super) detached: &'m [Arc<Attrs>],
    pub(super) emit: &'e mut dyn FnMut(&Sample<'_>),
}

/// The metric being translated.
#[derive(Clone, Copy)]
pub(super) struct Of<'m> {
    pub(super) family: usize,
    pub(super) def: &'m Family,
    /// The series name (the family's).
    pub(super) name: &'m str,
    pub(super) now_ms: i64,
}

impl<'m> Out<'m, '_> {
    /// Takes the next point's number.
    pub(super) fn next_point(&mut self) -> Option<usize> {
        self.point += 1;
        Some(self.point - 1)
    }

    /// Point `point`'s detached attributes.
    pub(super) fn detached(&self, point: Option<usize>) -> Option<&'m Attrs> {
        point.and_then(|p| self.detached.get(p)).map(|a| &**a)
    }

    /// A point's time in ms (`now_ms` when it has none), noted as seen.
    pub(super) fn time(&mut self, nanos: u64) -> i64 {
        let ms = if nanos == 0 {
            self.at.now_ms
        } else {
            ms(nanos)
        };
        self.latest = self.latest.max(ms);
        ms
    }
}

impl<'m> Of<'m> {
    pub(super) fn sample<'s>(
        &self,
        labels: &'s [Label<'s>],
        timestamp_ms: i64,
        point: Option<usize>,
    ) -> Sample<'s>
    where
        'm: 's,
    {
        Sample {
            family: self.family,
            family_def: self.def,
            name: self.name,
            labels,
            extra: None,
            value: 0.0,
            histogram: None,
            timestamp_ms,
            start_ms: 0,
            exemplar: None,
            point,
        }
    }
}

/// The value a point shows: the stale NaN for a point flagged as having none.
pub(super) fn shown(flags: u32, value: f64) -> f64 {
    if flags & 1 != 0 {
        stale_nan()
    } else {
        value
    }
}

/// Gauges and sums: one sample a point (deltas accumulated into totals).
pub(super) fn numbers(
    points: &[NumberDataPoint],
    delta: bool,
    ctx: &Ctx<'_>,
    acc: &mut Accumulator,
    out: &mut Out<'_, '_>,
) {
    let mut labels: Vec<Label<'_>> = Vec::new();
    for p in points {
        let mut value = match p.value {
            Some(number_data_point::Value::AsDouble(d)) => d,
            Some(number_data_point::Value::AsInt(i)) => i as f64,
            None => f64::NAN,
        };
        let ts = out.time(p.time_unix_nano);
        let point = out.next_point();
        let detached = out.detached(point);
        if delta && p.flags & 1 == 0 {
            let attrs = with_detached(&p.attributes, detached);
            let key = Accumulator::key(out.at.name, &attrs, ctx.resource);
            value = acc.add_sum(key, value, out.at.now_ms);
        }
        ctx.labels(&p.attributes, detached, &mut labels);
        let ex = p.exemplars.last().map(exemplar);
        let cumulative = out.at.def.kind == Kind::Counter && !delta;
        let sample = Sample {
            value: shown(p.flags, value),
            exemplar: ex.as_ref(),
            start_ms: if cumulative {
                ms(p.start_time_unix_nano)
            } else {
                0
            },
            ..out.at.sample(&labels, ts, point)
        };
        (out.emit)(&sample);
    }
}

/// Histograms: cumulative `_bucket{le}` series with `+Inf`, `_sum`, `_count`.
pub(super) fn histogram(
    h: &Histogram,
    delta: bool,
    ctx: &Ctx<'_>,
    acc: &mut Accumulator,
    scratch: &mut Scratch,
    out: &mut Out<'_, '_>,
) {
    let name = out.at.name;
    let (bucket, sum_name, count_name) = (
        format!("{name}_bucket"),
        format!("{name}_sum"),
        format!("{name}_count"),
    );
    let mut labels: Vec<Label<'_>> = Vec::new();
    for p in &h.data_points {
        let ts = out.time(p.time_unix_nano);
        let point = out.next_point();
        let detached = out.detached(point);
        let accumulated;
        let (counts, sum, count) = if delta && p.flags & 1 == 0 {
            accumulated = acc.add_histogram(
                Accumulator::key(name, &with_detached(&p.attributes, detached), ctx.resource),
                &p.bucket_counts,
                p.sum.unwrap_or(0.0),
                p.count,
                out.at.now_ms,
            );
            (&accumulated.0[..], accumulated.1, accumulated.2)
        } else {
            (&p.bucket_counts[..], p.sum.unwrap_or(0.0), p.count)
        };
        let v = |x: f64| shown(p.flags, x);
        ctx.labels(&p.attributes, detached, &mut labels);
        let base = Sample {
            name: &bucket,
            start_ms: if delta { 0 } else { ms(p.start_time_unix_nano) },
            ..out.at.sample(&labels, ts, point)
        };
        let mut cumulative = 0u64;
        let texts = scratch.bound_texts(&p.explicit_bounds);
        for (i, bound) in p.explicit_bounds.iter().enumerate() {
            cumulative = cumulative.saturating_add(counts.get(i).copied().unwrap_or(0));
            let ex = p
                .exemplars
                .iter()
                .rfind(|e| {
                    let ev = exemplar_value(e);
                    ev <= *bound && (i == 0 || ev > p.explicit_bounds[i - 1])
                })
                .map(exemplar);
            (out.emit)(&Sample {
                extra: Some(("le", &texts[i])),
                value: v(cumulative as f64),
                exemplar: ex.as_ref(),
                ..base
            });
        }
        (out.emit)(&Sample {
            extra: Some(("le", "+Inf")),
            value: v(count as f64),
            ..base
        });
        if p.sum.is_some() || delta {
            (out.emit)(&Sample {
                name: &sum_name,
                value: v(sum),
                ..base
            });
        }
        (out.emit)(&Sample {
            name: &count_name,
            value: v(count as f64),
            ..base
        });
    }
}

/// Exponential histograms: one native histogram a point, under the family's own name.
/// Returns the points left out, by reason.
pub(super) fn exponential(
    h: &ExponentialHistogram,
    ctx: &Ctx<'_>,
    out: &mut Out<'_, '_>,
) -> Vec<(usize, &'static str)> {
    let mut dropped: Vec<(usize, &'static str)> = Vec::new();
    let mut labels: Vec<Label<'_>> = Vec::new();
    for p in &h.data_points {
        let ts = out.time(p.time_unix_nano);
        let point = out.next_point();
        let native = match native_histogram(p, ts) {
            Ok(native) => native,
            Err(why) => {
                match dropped.iter_mut().find(|(_, w)| *w == why) {
                    Some((n, _)) => *n += 1,
                    None => dropped.push((1, why)),
                }
                continue;
            }
        };
        ctx.labels(&p.attributes, out.detached(point), &mut labels);
        let ex = p.exemplars.last().map(exemplar);
        (out.emit)(&Sample {
            histogram: Some(&native),
            exemplar: ex.as_ref(),
            start_ms: ms(p.start_time_unix_nano),
            ..out.at.sample(&labels, ts, point)
        });
    }
    dropped
}

/// The finest scale of the classic buckets an exponential histogram is shown with
/// ([`classic_of`]): powers of two.
const CLASSIC_SCALE: i32 = 0;

/// An exponential histogram point as a classic one, for the text formats (which have no
/// native histograms): [`classic_buckets`] of its buckets.
pub fn classic_of(p: &ExponentialHistogramDataPoint) -> HistogramDataPoint {
    let sparse = |b: &Option<exponential_histogram_data_point::Buckets>| -> Vec<(i64, u64)> {
        b.iter()
            .flat_map(|b| {
                let offset = i64::from(b.offset);
                b.bucket_counts
                    .iter()
                    .enumerate()
                    .map(move |(i, &c)| (offset + i as i64, c))
            })
            .collect()
    };
    let (bounds, counts) = classic_buckets(
        p.scale,
        p.zero_threshold,
        p.zero_count,
        p.count,
        &sparse(&p.positive),
        &sparse(&p.negative),
    );
    let total: u64 = counts.iter().sum();
    HistogramDataPoint {
        attributes: p.attributes.clone(),
        start_time_unix_nano: p.start_time_unix_nano,
        time_unix_nano: p.time_unix_nano,
        count: p.count.max(total),
        sum: p.sum,
        bucket_counts: counts,
        explicit_bounds: bounds,
        exemplars: p.exemplars.clone(),
        flags: p.flags,
        min: p.min,
        max: p.max,
    }
}

/// A Prometheus native histogram's classic buckets ([`classic_buckets`]): bounds, and
/// each bucket's own count, `+Inf`'s last. Spans and deltas that do not add up give
/// what they do name (a histogram Sidekick wrote itself always adds up).
pub fn classic_of_native(h: &crate::prompb::Histogram) -> (Vec<f64>, Vec<u64>) {
    let sparse = |spans: &[crate::prompb::BucketSpan], deltas: &[i64]| {
        crate::exposition::integer_buckets(spans, deltas).unwrap_or_default()
    };
    classic_buckets(
        h.schema,
        h.zero_threshold,
        h.zero_count_int,
        h.count_int,
        &sparse(&h.positive_spans, &h.positive_deltas),
        &sparse(&h.negative_spans, &h.negative_deltas),
    )
}

/// Exponential buckets at `scale`, given as (OTLP index, count) in index order, as
/// classic ones: merged to powers of two (scale 0, or `scale` when coarser), so every
/// classic bound is one of the histogram's own bucket bounds and no count is split or
/// guessed. The bounds run from the lowest non-empty bucket to the highest: negative
/// buckets, the zero bucket (up to `zero_threshold`), positive buckets; the counts have
/// one more, `+Inf`'s, with whatever `count` has beyond the buckets.
pub fn classic_buckets(
    scale: i32,
    zero_threshold: f64,
    zero_count: u64,
    count: u64,
    positive: &[(i64, u64)],
    negative: &[(i64, u64)],
) -> (Vec<f64>, Vec<u64>) {
    let classic = scale.min(CLASSIC_SCALE);
    let shift = (scale - classic) as u32;
    // 2^(2^-scale): a power of two for scales of 0 and below, so every bound is exact.
    let base_log2 = f64::powi(2.0, -classic);
    let bound = |k: i64| (k as f64 * base_log2).exp2();
    let merged = |side: &[(i64, u64)]| -> Vec<(i64, u64)> {
        let mut out: Vec<(i64, u64)> = Vec::new();
        for &(i, c) in side.iter().filter(|(_, c)| *c > 0) {
            let k = i >> shift;
            match out.last_mut() {
                Some(last) if last.0 == k => last.1 += c,
                _ => out.push((k, c)),
            }
        }
        out
    };
    let (positive, negative) = (merged(positive), merged(negative));
    let mut bounds = Vec::with_capacity(positive.len() + negative.len() + 1);
    let mut counts = Vec::with_capacity(bounds.capacity() + 1);
    // Negative bucket `k` holds [-base^(k+1), -base^k): most negative first.
    for &(k, c) in negative.iter().rev() {
        bounds.push(-bound(k));
        counts.push(c);
    }
    if zero_count > 0 || !negative.is_empty() {
        bounds.push(zero_threshold);
        counts.push(zero_count);
    }
    for &(k, c) in &positive {
        bounds.push(bound(k + 1));
        counts.push(c);
    }
    let total: u64 = counts.iter().sum();
    counts.push(count.saturating_sub(total));
    (bounds, counts)
}

/// The largest and smallest schemas Prometheus takes.
const MAX_SCHEMA: i32 = 8;
const MIN_SCHEMA: i32 = -4;

/// An OTLP exponential histogram point as a Prometheus native histogram at `timestamp_ms`,
/// or why it cannot be one.
///
/// The two share their bucket layout: at scale (schema) `s` a bucket's bounds grow by
/// 2^(2^-s). OTLP's bucket `i` covers (base^i, base^(i+1)], Prometheus's (base^(i-1),
/// base^i], so an index moves up by one. A scale above 8 is brought down to 8 by merging
/// neighbouring buckets (each step down merges pairs, as a coarser scale's buckets are
/// exactly pairs of the finer one's); one below -4 has no Prometheus equivalent. The
/// buckets are written as one span per side from the first to the last non-empty
/// bucket. Prometheus refuses (with the whole request) a histogram whose count is not the
/// zero bucket's plus every bucket's, so such a point is refused here, alone. A point
/// flagged as having no recorded value becomes the stale marker.
pub fn native_histogram(
    p: &ExponentialHistogramDataPoint,
    timestamp_ms: i64,
) -> Result<crate::prompb::Histogram, &'static str> {
    use crate::prompb::Histogram as Native;
    if p.scale < MIN_SCHEMA {
        return Err("exponential histogram scale below -4, the coarsest Prometheus takes");
    }
    let shift = (p.scale - MAX_SCHEMA).max(0) as u32;
    let side = |b: &Option<exponential_histogram_data_point::Buckets>| match b {
        Some(b) => native_buckets(b.offset, &b.bucket_counts, shift),
        None => Ok((Vec::new(), Vec::new(), 0)),
    };
    let (positive_spans, positive_deltas, positive) = side(&p.positive)?;
    let (negative_spans, negative_deltas, negative) = side(&p.negative)?;
    let stale = p.flags & 1 != 0;
    let total = positive
        .checked_add(negative)
        .and_then(|n| n.checked_add(p.zero_count));
    if !stale && total != Some(p.count) {
        return Err("exponential histogram count is not the total of its buckets");
    }
    Ok(Native {
        count_int: p.count,
        sum: shown(p.flags, p.sum.unwrap_or(0.0)),
        schema: p.scale.min(MAX_SCHEMA),
        zero_threshold: p.zero_threshold,
        zero_count_int: p.zero_count,
        negative_spans,
        negative_deltas,
        positive_spans,
        positive_deltas,
        reset_hint: 0,
        timestamp: timestamp_ms,
    })
}

/// One side's dense OTLP buckets from `offset`, merged `2^shift` to one, as one
/// Prometheus span of deltas (empty buckets at either end left out), with their total.
fn native_buckets(
    offset: i32,
    counts: &[u64],
    shift: u32,
) -> Result<(Vec<crate::prompb::BucketSpan>, Vec<i64>, u64), &'static str> {
    const OUT_OF_RANGE: &str = "exponential histogram bucket index out of range";
    let Some(first) = counts.iter().position(|&c| c > 0) else {
        return Ok((Vec::new(), Vec::new(), 0));
    };
    let last = counts.iter().rposition(|&c| c > 0).unwrap_or(first);
    // Indexes in i64: an offset near i32's ends plus the bucket count can pass them.
    let merged = |i: usize| (i64::from(offset) + i as i64) >> shift;
    let start = merged(first);
    let mut buckets: Vec<u64> = vec![0; (merged(last) - start + 1) as usize];
    let mut total = 0u64;
    for (i, &c) in counts.iter().enumerate().take(last + 1).skip(first) {
        let slot = &mut buckets[(merged(i) - start) as usize];
        *slot = slot.checked_add(c).ok_or(OUT_OF_RANGE)?;
        total = total.checked_add(c).ok_or(OUT_OF_RANGE)?;
    }
    let span = crate::prompb::BucketSpan {
        // Prometheus's index is OTLP's plus one.
        offset: i32::try_from(start + 1).map_err(|_| OUT_OF_RANGE)?,
        length: u32::try_from(buckets.len()).map_err(|_| OUT_OF_RANGE)?,
    };
    let mut previous = 0i64;
    let mut deltas = Vec::with_capacity(buckets.len());
    for c in buckets {
        let c = i64::try_from(c).map_err(|_| OUT_OF_RANGE)?;
        deltas.push(c - previous);
        previous = c;
    }
    Ok((vec![span], deltas, total))
}

/// Summaries: a series a quantile, `_sum`, `_count`.
pub(super) fn summary(s: &Summary, ctx: &Ctx<'_>, out: &mut Out<'_, '_>) {
    let name = out.at.name;
    let (sum_name, count_name) = (format!("{name}_sum"), format!("{name}_count"));
    let mut labels: Vec<Label<'_>> = Vec::new();
    for p in &s.data_points {
        let ts = out.time(p.time_unix_nano);
        let point = out.next_point();
        let v = |x: f64| shown(p.flags, x);
        ctx.labels(&p.attributes, out.detached(point), &mut labels);
        let base = Sample {
            start_ms: ms(p.start_time_unix_nano),
            ..out.at.sample(&labels, ts, point)
        };
        for q in &p.quantile_values {
            let text = format_bound(q.quantile);
            (out.emit)(&Sample {
                extra: Some(("quantile", &text)),
                value: v(q.value),
                ..base
            });
        }
        let sum = Sample {
            name: &sum_name,
            value: v(p.sum),
            ..base
        };
        (out.emit)(&sum);
        let count = Sample {
            name: &count_name,
            value: v(p.count as f64),
            ..base
        };
        (out.emit)(&count);
    }
}

/// The Prometheus name of a metric and its family's index, registering the family.
pub(super) fn family_of(
    m: &Metric,
    kind: Kind,
    settings: &Settings,
    t: &mut Translation,
    index: &mut HashMap<(String, Kind), usize>,
) -> (String, usize) {
    let name = metric_name(&m.name, &m.unit, kind, settings);
    let family = t.family(
        index,
        Family {
            name: name.clone(),
            kind,
            help: m.description.clone(),
            unit: unit_suffix_for(&m.unit, kind, settings),
        },
    );
    (name, family)
}

pub(super) fn unit_suffix_for(unit: &str, kind: Kind, settings: &Settings) -> String {
    match settings.strategy {
        TranslationStrategy::UnderscoreEscapingWithSuffixes => unit_word(unit, kind),
        TranslationStrategy::UnderscoreEscapingWithoutSuffixes => String::new(),
    }
}
