//! OTLP metrics → Prometheus series: the one translation both the `prometheusremotewrite`
//! exporter and the `prometheus` scrape endpoint use, so the two never disagree.
//!
//! Per the OpenTelemetry "Prometheus and OpenMetrics Compatibility" rules: names and label
//! keys sanitised to `[a-zA-Z_:][a-zA-Z0-9_:]*`; the unit as a word suffix (`s` →
//! `_seconds`) and `_total` for monotonic cumulative sums (unless
//! `translation_strategy: UnderscoreEscapingWithoutSuffixes`); non-monotonic sums as
//! gauges; histograms as cumulative `_bucket{le}` (with `+Inf`), `_sum`, `_count`;
//! summaries with `quantile`; non-string attribute values in the spec's string forms
//! (arrays and maps as JSON, bytes as base64: [`label_value`]); `job` from
//! `service.namespace/service.name` and `instance` from `service.instance.id`; the other
//! resource attributes on one `target_info` per job/instance;
//! `otel_scope_name`/`otel_scope_version` labels; `NoRecordedValue` → the Prometheus stale
//! NaN. Delta sums and histograms are accumulated into cumulative ones (see
//! [`Accumulator`]). Exponential histograms become native histograms
//! ([`Settings::native_histograms`], see [`native_histogram`]) or classic ones at powers of
//! two ([`classic_of`]); with delta temporality they are dropped and counted.

mod names;
mod points;

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use crate::names::label_name_cow;
use sidekick_core::payload::{Attrs, DecodeError};
use sidekick_core::util::KeyMap;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    exponential_histogram_data_point, metric, number_data_point, AggregationTemporality,
    ExponentialHistogram, ExponentialHistogramDataPoint, Histogram, HistogramDataPoint, Metric,
    NumberDataPoint, Summary,
};
use serde::Deserialize;

pub use names::{label_name, label_value, metric_name, unit_word};
use points::*;
pub use points::{classic_buckets, classic_of, classic_of_native, native_histogram};

pub use crate::text::escape_label_value;
pub use crate::{is_stale_nan, stale_nan, STALE_NAN};

/// `translation_strategy`, as the OpenTelemetry Collector's exporters name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum TranslationStrategy {
    /// `foo.bar` in seconds, a counter → `foo_bar_seconds_total`.
    #[default]
    UnderscoreEscapingWithSuffixes,
    /// → `foo_bar`.
    UnderscoreEscapingWithoutSuffixes,
}

/// `resource_to_telemetry_conversion`.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResourceToTelemetry {
    /// Copy every resource attribute onto every series as a label.
    pub enabled: bool,
}

/// How to name and label series.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub strategy: TranslationStrategy,
    /// Prefix for every metric name (`<namespace>_<name>`).
    pub namespace: String,
    pub resource_to_telemetry: bool,
    /// Added to every series unless it already has the label.
    pub extra_labels: Vec<(String, String)>,
    /// Emit `target_info` (default true).
    pub target_info: bool,
    /// Exponential histograms as native histograms ([`Sample::histogram`]), as both
    /// exporters take them. Without it they are classic histograms at powers of two
    /// ([`classic_of`]).
    pub native_histograms: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
    Summary,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
            Kind::Summary => "summary",
        }
    }
}

/// A metric family: what a `# TYPE` / `# HELP` / `# UNIT` block describes.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// The family name; for counters it ends in `_total`, like the series.
    pub name: String,
    pub kind: Kind,
    pub help: String,
    /// The unit word (`seconds`), empty if none.
    pub unit: String,
}

/// An exemplar as Prometheus carries it.
#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar {
    pub labels: Vec<(String, String)>,
    pub value: f64,
    pub timestamp_ms: i64,
}

/// One sample of one series.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Index into [`Translation::families`].
    pub family: usize,
    /// The series name (family name plus `_bucket`, `_sum`, `_count` where it applies).
    pub name: String,
    /// Labels without `__name__`, sorted by name.
    pub labels: Vec<(String, String)>,
    pub value: f64,
    pub timestamp_ms: i64,
    pub exemplar: Option<Exemplar>,
}

impl Series {
    /// Calls `f` with this series as a borrowed [`Sample`] of `family`.
    pub fn as_sample<R>(&self, family: &Family, f: impl FnOnce(&Sample<'_>) -> R) -> R {
        let labels: Vec<Label<'_>> = self
            .labels
            .iter()
            .map(|(k, v)| (Cow::Borrowed(k.as_str()), Cow::Borrowed(v.as_str())))
            .collect();
        f(&Sample {
            family: self.family,
            family_def: family,
            name: &self.name,
            labels: &labels,
            extra: None,
            value: self.value,
            histogram: None,
            timestamp_ms: self.timestamp_ms,
            start_ms: 0,
            exemplar: self.exemplar.as_ref(),
            point: None,
        })
    }

    /// A stable identity for the series (name and labels).
    pub fn key(&self) -> u64 {
        let mut h = SeriesHasher::new(&self.name);
        self.labels.iter().for_each(|(k, v)| h.label(k, v));
        h.finish()
    }
}

/// The result of translating one request.
#[derive(Debug, Default, Clone)]
pub struct Translation {
    pub families: Vec<Family>,
    pub series: Vec<Series>,
    /// OTLP data points that could not be translated, with the reason.
    pub dropped: Vec<(usize, &'static str)>,
}

impl Translation {
    fn family(&mut self, index: &mut HashMap<(String, Kind), usize>, f: Family) -> usize {
        *index.entry((f.name.clone(), f.kind)).or_insert_with(|| {
            self.families.push(f);
            self.families.len() - 1
        })
    }

    pub fn dropped_points(&self) -> usize {
        self.dropped.iter().map(|(n, _)| n).sum()
    }
}

/// An attribute's value as a label value (arrays and maps as JSON, bytes as base64: see
/// [`label_value`]).
fn string_value(v: &Option<AnyValue>) -> String {
    label_value(v.as_ref())
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a KeyValue> {
    attrs.iter().find(|kv| kv.key == key)
}

/// Sanitised labels from attributes; keys that collide after sanitising get their values
/// joined with `;` in the order of the original keys.
fn labels_from(attrs: &[KeyValue], out: &mut Vec<(String, String)>) {
    let mut sorted: Vec<&KeyValue> = attrs.iter().collect();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    for kv in sorted {
        let name = label_name(&kv.key);
        let value = string_value(&kv.value);
        match out.iter_mut().find(|(k, _)| *k == name) {
            Some((_, v)) => {
                v.push(';');
                v.push_str(&value);
            }
            None => out.push((name, value)),
        }
    }
}

/// `job` and `instance` for a resource.
pub fn job_instance(resource: &[KeyValue]) -> (Option<String>, Option<String>) {
    let name = attr(resource, "service.name").map(|kv| string_value(&kv.value));
    let ns = attr(resource, "service.namespace").map(|kv| string_value(&kv.value));
    let job = match (ns, name) {
        (Some(ns), Some(n)) if !ns.is_empty() => Some(format!("{ns}/{n}")),
        (_, n) => n,
    };
    let instance = attr(resource, "service.instance.id").map(|kv| string_value(&kv.value));
    (job, instance)
}

fn ms(nanos: u64) -> i64 {
    (nanos / 1_000_000) as i64
}

fn format_bound(b: f64) -> String {
    if b.is_infinite() {
        if b > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        format!("{b}")
    }
}

/// Delta sums and histograms turned into cumulative ones: each delta is added to the
/// series' running total. The state lives as long as the exporter; series not updated
/// for an hour are forgotten.
#[derive(Default)]
pub struct Accumulator {
    sums: KeyMap<(f64, i64)>,
    histograms: KeyMap<(Vec<u64>, f64, u64, i64)>,
}

const ACCUMULATOR_TTL_MS: i64 = 3_600_000;

impl Accumulator {
    fn key(name: &str, attrs: &[KeyValue], resource: &[KeyValue]) -> u64 {
        let mut h = sidekick_core::util::series_hasher();
        name.hash(&mut h);
        for kv in resource.iter().chain(attrs) {
            kv.key.hash(&mut h);
            string_value(&kv.value).hash(&mut h);
        }
        h.finish()
    }

    fn add_sum(&mut self, key: u64, delta: f64, now_ms: i64) -> f64 {
        let e = self.sums.entry(key).or_insert((0.0, now_ms));
        e.0 += delta;
        e.1 = now_ms;
        e.0
    }

    fn add_histogram(
        &mut self,
        key: u64,
        counts: &[u64],
        sum: f64,
        count: u64,
        now_ms: i64,
    ) -> (Vec<u64>, f64, u64) {
        let e = self
            .histograms
            .entry(key)
            .or_insert_with(|| (vec![0; counts.len()], 0.0, 0, now_ms));
        if e.0.len() != counts.len() {
            // The buckets changed: start over.
            *e = (vec![0; counts.len()], 0.0, 0, now_ms);
        }
        e.0.iter_mut()
            .zip(counts)
            .for_each(|(a, b)| *a = a.saturating_add(*b));
        e.1 += sum;
        e.2 = e.2.saturating_add(count);
        e.3 = now_ms;
        (e.0.clone(), e.1, e.2)
    }

    fn expire(&mut self, now_ms: i64) {
        self.sums
            .retain(|_, (_, t)| now_ms - *t < ACCUMULATOR_TTL_MS);
        self.histograms
            .retain(|_, e| now_ms - e.3 < ACCUMULATOR_TTL_MS);
    }

    pub fn len(&self) -> usize {
        self.sums.len() + self.histograms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A label as the translation hands it out: borrowed from the batch where it can be.
pub type Label<'a> = (Cow<'a, str>, Cow<'a, str>);

/// One sample, borrowed from the batch while the translation hands it out.
pub struct Sample<'s> {
    /// Index into [`Translation::families`].
    pub family: usize,
    /// That family.
    pub family_def: &'s Family,
    /// The series name (family name plus `_bucket`, `_sum`, `_count` where it applies).
    pub name: &'s str,
    /// Sorted by name, without `__name__`; one named like `extra`'s is replaced by it.
    labels: &'s [Label<'s>],
    /// `le` or `quantile`, which goes where it sorts.
    extra: Option<(&'static str, &'s str)>,
    pub value: f64,
    /// A native histogram, in place of `value` (only with
    /// [`Settings::native_histograms`]).
    pub histogram: Option<&'s crate::prompb::Histogram>,
    pub timestamp_ms: i64,
    /// When a cumulative series (counter, histogram, summary) started, in milliseconds;
    /// 0 when unknown or not cumulative (remote-write 2.0's created timestamp).
    pub start_ms: i64,
    pub exemplar: Option<&'s Exemplar>,
    /// Which OTLP data point of the request it comes from (a histogram point makes many
    /// samples), numbered from 0; `None` for `target_info`, which comes from no point.
    pub point: Option<usize>,
}

impl<'s> Sample<'s> {
    /// Calls `f` with each label in name order (`__name__` not among them).
    pub fn for_each_label(&self, mut f: impl FnMut(&'s str, &'s str)) {
        let Some((ek, ev)) = self.extra else {
            self.labels.iter().for_each(|(k, v)| f(k, v));
            return;
        };
        let mut pending = true;
        for (k, v) in self.labels {
            let k: &'s str = k;
            if k == ek {
                continue;
            }
            if pending && k > ek {
                f(ek, ev);
                pending = false;
            }
            f(k, v);
        }
        if pending {
            f(ek, ev);
        }
    }

    /// The series' identity, as [`Series::key`] computes it.
    pub fn key(&self) -> u64 {
        let mut h = SeriesHasher::new(self.name);
        self.for_each_label(|k, v| h.label(k, v));
        h.finish()
    }

    /// `name{a="1",b="2"}` without the family's name, which every series name starts
    /// with (`_bucket{le="1"}`), label values escaped.
    pub fn series_text_in_family(&self) -> String {
        let family = self.family_def.name.as_str();
        debug_assert!(self.name.starts_with(family));
        let name = self.name.strip_prefix(family).unwrap_or(self.name);
        let mut labels: Vec<(&str, &str)> = Vec::with_capacity(self.labels.len() + 1);
        self.for_each_label(|k, v| labels.push((k, v)));
        let mut out = String::with_capacity(name.len() + self.labels.len() * 24 + 16);
        crate::text::push_series(&mut out, name, labels);
        out
    }

    /// An owned copy.
    pub fn to_series(&self) -> Series {
        let mut labels = Vec::with_capacity(self.labels.len() + 1);
        self.for_each_label(|k, v| labels.push((k.to_string(), v.to_string())));
        Series {
            family: self.family,
            name: self.name.to_string(),
            labels,
            value: self.value,
            timestamp_ms: self.timestamp_ms,
            exemplar: self.exemplar.cloned(),
        }
    }
}

/// Hashes a series' name and labels (a fixed seed: the same series gets the same key in
/// every batch, so it always lands in the same remote-write shard).
pub struct SeriesHasher(foldhash::fast::FoldHasher<'static>);

impl SeriesHasher {
    pub fn new(name: &str) -> Self {
        let mut h = sidekick_core::util::series_hasher();
        h.write(name.as_bytes());
        h.write_u8(0xff);
        SeriesHasher(h)
    }

    pub fn label(&mut self, k: &str, v: &str) {
        self.0.write(k.as_bytes());
        self.0.write_u8(0xfe);
        self.0.write(v.as_bytes());
        self.0.write_u8(0xff);
    }

    pub fn finish(&self) -> u64 {
        self.0.finish()
    }
}

/// A label value for an attribute value, borrowed when it is a string.
fn label_value_of(v: &Option<AnyValue>) -> Cow<'_, str> {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => Cow::Borrowed(s),
        _ => Cow::Owned(string_value(v)),
    }
}

struct Ctx<'a> {
    settings: &'a Settings,
    base_labels: Vec<(String, String)>,
    resource: &'a [KeyValue],
}

impl<'c> Ctx<'c> {
    /// A point's labels into `out`: its attributes (its own, then `detached`), then
    /// job/instance/scope, then the extra labels (which never override); empty values
    /// left out; sorted by name.
    fn labels<'a>(
        &'a self,
        attrs: &'a [KeyValue],
        detached: Option<&'a Attrs>,
        out: &mut Vec<Label<'a>>,
    ) {
        out.clear();
        out.extend(
            attrs
                .iter()
                .map(|kv| (label_name_cow(&kv.key), label_value_of(&kv.value))),
        );
        if let Some(d) = detached {
            out.extend(d.iter().map(|(k, v)| (label_name_cow(k), Cow::Borrowed(v))));
        }
        out.sort_by(|a, b| crate::text::label_order(&a.0, &b.0));
        if out.windows(2).any(|w| w[0].0 == w[1].0) {
            // Keys that collide once sanitised: their values joined, the slow way.
            let mut joined = Vec::new();
            labels_from(&with_detached(attrs, detached), &mut joined);
            out.clear();
            out.extend(
                joined
                    .into_iter()
                    .map(|(k, v)| (Cow::Owned(k), Cow::Owned(v))),
            );
        }
        let added = self.base_labels.iter().chain(&self.settings.extra_labels);
        for (k, v) in added {
            if !out.iter().any(|(ok, _)| ok == k) {
                out.push((Cow::Borrowed(k), Cow::Borrowed(v)));
            }
        }
        out.retain(|(_, v)| !v.is_empty());
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    }
}

/// A point's own attributes followed by its detached ones, as one owned list.
fn with_detached<'a>(attrs: &'a [KeyValue], detached: Option<&Attrs>) -> Cow<'a, [KeyValue]> {
    match detached {
        Some(d) if !d.is_empty() => {
            let mut all = attrs.to_vec();
            d.push_key_values(&mut all);
            Cow::Owned(all)
        }
        _ => Cow::Borrowed(attrs),
    }
}

/// A batch's request and its points' detached attributes: borrowed when the batch is
/// decoded, decoded here when it arrived encoded.
pub fn request_of(
    batch: &sidekick_core::payload::Metrics,
) -> Result<(Cow<'_, ExportMetricsServiceRequest>, &[Arc<Attrs>]), DecodeError> {
    match batch.decoded_detached() {
        Some((r, detached)) => Ok((Cow::Borrowed(r), detached)),
        None => batch.to_request().map(|r| (Cow::Owned(r), &[][..])),
    }
}

/// Translates a batch with the exporter's shared delta accumulator, handing each sample
/// to `emit`.
pub fn translate_batch_with(
    batch: &sidekick_core::payload::Metrics,
    settings: &Settings,
    acc: &std::sync::Mutex<Accumulator>,
    emit: &mut dyn FnMut(&Sample<'_>),
) -> Result<Translation, DecodeError> {
    let (request, detached) = request_of(batch)?;
    let mut acc = acc.lock().unwrap_or_else(|p| p.into_inner());
    Ok(translate_detached(
        &request,
        detached,
        settings,
        &mut acc,
        sidekick_core::util::now_ms(),
        emit,
    ))
}

/// Translates a request into owned series. `now_ms` stamps points without a time and
/// drives the accumulator's expiry.
pub fn translate(
    request: &ExportMetricsServiceRequest,
    settings: &Settings,
    acc: &mut Accumulator,
    now_ms: i64,
) -> Translation {
    let mut series = Vec::new();
    let mut t = translate_with(request, settings, acc, now_ms, &mut |s| {
        series.push(s.to_series())
    });
    t.series = series;
    t
}

/// Translates a request, handing each sample to `emit` as it is made (borrowed: nothing
/// per sample is allocated unless a name or value must be rewritten). The result holds
/// the families and what was dropped; its `series` is empty.
pub fn translate_with(
    request: &ExportMetricsServiceRequest,
    settings: &Settings,
    acc: &mut Accumulator,
    now_ms: i64,
    emit: &mut dyn FnMut(&Sample<'_>),
) -> Translation {
    translate_detached(request, &[], settings, acc, now_ms, emit)
}

/// [`translate_with`] for a request whose data points have attributes kept apart:
/// `detached[i]` follows the own attributes of point `i` (empty: none kept apart).
pub fn translate_detached(
    request: &ExportMetricsServiceRequest,
    detached: &[Arc<Attrs>],
    settings: &Settings,
    acc: &mut Accumulator,
    now_ms: i64,
    emit: &mut dyn FnMut(&Sample<'_>),
) -> Translation {
    let mut t = Translation::default();
    let mut index = HashMap::new();
    let mut target_infos: Vec<(Option<String>, Option<String>)> = Vec::new();
    // The number of the next OTLP data point, for [`Sample::point`].
    let mut next_point = 0;
    for rm in &request.resource_metrics {
        let resource: &[KeyValue] = rm
            .resource
            .as_ref()
            .map(|r| &r.attributes[..])
            .unwrap_or(&[]);
        let (job, instance) = job_instance(resource);
        let mut base = Vec::new();
        if settings.resource_to_telemetry {
            labels_from(resource, &mut base);
        }
        base.retain(|(k, _)| k != "job" && k != "instance");
        if let Some(j) = &job {
            base.push(("job".into(), j.clone()));
        }
        if let Some(i) = &instance {
            base.push(("instance".into(), i.clone()));
        }
        // One target_info per job/instance, with the resource's other attributes.
        let info_attrs: Vec<KeyValue> = resource
            .iter()
            .filter(|kv| {
                !matches!(
                    kv.key.as_str(),
                    "service.name" | "service.namespace" | "service.instance.id"
                )
            })
            .cloned()
            .collect();
        let mut latest_ms = 0;
        for sm in &rm.scope_metrics {
            let mut ctx = Ctx {
                settings,
                base_labels: base.clone(),
                resource,
            };
            if let Some(scope) = sm.scope.as_ref().filter(|s| !s.name.is_empty()) {
                ctx.base_labels
                    .push(("otel_scope_name".into(), scope.name.clone()));
                if !scope.version.is_empty() {
                    ctx.base_labels
                        .push(("otel_scope_version".into(), scope.version.clone()));
                }
            }
            let mut scratch = Scratch::default();
            for m in &sm.metrics {
                let seen = translate_metric(
                    m,
                    detached,
                    &ctx,
                    &mut t,
                    &mut index,
                    acc,
                    now_ms,
                    &mut scratch,
                    emit,
                    &mut next_point,
                );
                latest_ms = latest_ms.max(seen);
            }
        }
        let key = (job.clone(), instance.clone());
        if settings.target_info
            && !info_attrs.is_empty()
            && (job.is_some() || instance.is_some())
            && !target_infos.contains(&key)
        {
            target_infos.push(key);
            let family = t.family(
                &mut index,
                Family {
                    name: metric_name(
                        "target_info",
                        "",
                        Kind::Gauge,
                        &Settings {
                            namespace: String::new(),
                            ..settings.clone()
                        },
                    ),
                    kind: Kind::Gauge,
                    help: "Target metadata".into(),
                    unit: String::new(),
                },
            );
            let ctx = Ctx {
                settings,
                base_labels: base
                    .iter()
                    .filter(|(k, _)| k == "job" || k == "instance")
                    .cloned()
                    .collect(),
                resource,
            };
            let mut labels = Vec::new();
            ctx.labels(&info_attrs, None, &mut labels);
            let def = &t.families[family];
            emit(&Sample {
                family,
                family_def: def,
                name: &def.name,
                labels: &labels,
                extra: None,
                value: 1.0,
                histogram: None,
                timestamp_ms: if latest_ms > 0 { latest_ms } else { now_ms },
                start_ms: 0,
                exemplar: None,
                point: None,
            });
        }
    }
    acc.expire(now_ms);
    t
}

#[cfg(test)]
mod tests;
