//! One scraped page → one OTLP metrics request, per the OpenTelemetry "Prometheus and
//! OpenMetrics Compatibility" rules:
//!
//! - counters → monotonic cumulative Sums; gauges and untyped → Gauges; info and
//!   stateset → non-monotonic Sums; histograms → Histograms (buckets de-cumulated, `+Inf`
//!   dropped, `_count` required); summaries → Summaries (`_count` required); gauge
//!   histograms are dropped;
//! - `target_info` → resource attributes; `otel_scope_*` labels → the scope;
//!   `job`/`instance` → `service.name`/`service.instance.id` (+ `server.address`,
//!   `server.port`, `url.scheme`);
//! - units from `# UNIT` or the name's unit suffix, in UCUM; `HELP` → description; the
//!   Prometheus type in `metadata["prometheus.type"]`;
//! - exemplars → OTLP exemplars (`trace_id`/`span_id` labels become ids).
//!
//! Start times and staleness need memory of earlier scrapes; that lives in
//! [`self::series::Tracker`].

pub mod openmetrics;
mod page;
pub mod proto;
pub mod series;

use crate::text::label_order;
use crate::units::ucum_for_word;
use page::*;
use sidekick_core::payload::Attrs;
use sidekick_core::util::{series_hasher, FastMap, KeyMap, KeySet};
use std::borrow::Cow;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    exemplar, exponential_histogram_data_point, metric, number_data_point,
    summary_data_point::ValueAtQuantile, AggregationTemporality, Exemplar, ExponentialHistogram,
    ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

use self::openmetrics::Role;
use self::series::{Cursor, Known, Seen, Shape, Tracker, NO_RECORDED_VALUE};
use crate::exposition::Native;
use crate::parse::{Entries, Entry, Format, Kind, ParseError, Parser, Sample};
use crate::relabel::{self, LabelSet, Rule};
use proto::ProtoPage;

/// The scope of metrics that carry no `otel_scope_name`: none (an empty name), so that
/// the series come back out of the Prometheus exporters with exactly the labels the page
/// had, plus `job` and `instance` — what Prometheus stores when it scrapes the app
/// itself. Only a real scope (`otel_scope_*` labels on the page) becomes labels again.
pub const SCOPE_NAME: &str = "";

/// Who was scraped, fixed for the target's lifetime.
#[derive(Debug, Clone)]
pub struct Target {
    pub job: String,
    pub instance: String,
    pub scheme: String,
    /// Target labels after relabeling (no `__` labels), including `job` and `instance`.
    pub labels: Vec<(String, String)>,
}

impl Target {
    /// An `http` target with no labels but `job` and `instance`.
    pub fn plain(job: &str, instance: &str) -> Target {
        Target {
            job: job.to_string(),
            instance: instance.to_string(),
            scheme: "http".into(),
            labels: vec![
                ("instance".into(), instance.to_string()),
                ("job".into(), job.to_string()),
            ],
        }
    }

    /// `service.name`, `service.instance.id`, `server.address`, `server.port`,
    /// `url.scheme`.
    pub fn resource_attributes(&self) -> Vec<KeyValue> {
        let mut attrs = vec![
            string_kv("service.name", &self.job),
            string_kv("service.instance.id", &self.instance),
        ];
        let (host, port) = match self.instance.rsplit_once(':') {
            Some((h, p)) if p.parse::<u16>().is_ok() => {
                (h.trim_start_matches('[').trim_end_matches(']'), Some(p))
            }
            _ => (self.instance.as_str(), None),
        };
        attrs.push(string_kv("server.address", host));
        if let Some(p) = port {
            attrs.push(string_kv("server.port", p));
        }
        attrs.push(string_kv("url.scheme", &self.scheme));
        attrs
    }
}

/// Per-scrape-config settings that shape translation.
pub struct Options<'a> {
    pub honor_labels: bool,
    pub honor_timestamps: bool,
    pub metric_relabel: &'a [Rule],
    /// Most samples left after metric relabeling; one more stops the page. 0: no limit.
    pub sample_limit: usize,
    /// Most labels per series after metric relabeling, `__name__`, `job`, `instance` and
    /// the target's labels included (as Prometheus counts). 0: no limit.
    pub label_limit: usize,
    /// Longest label name, in bytes. 0: no limit.
    pub label_name_length_limit: usize,
    /// Longest label value (and metric name, the value of `__name__`), in bytes. 0: no
    /// limit.
    pub label_value_length_limit: usize,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options {
            honor_labels: false,
            honor_timestamps: true,
            metric_relabel: &[],
            sample_limit: 0,
            label_limit: 0,
            label_name_length_limit: 0,
            label_value_length_limit: 0,
        }
    }
}

/// Why a scrape's page was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PageError {
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error("line {line}: duplicate series {series}")]
    Duplicate { line: usize, series: String },
    #[error("line {line}: second TYPE line for {name}")]
    DuplicateType { line: usize, name: String },
    /// A page served as OpenMetrics that breaks one of its rules.
    #[error("line {line}: {name}: {rule} (OpenMetrics 1.0)")]
    OpenMetrics {
        line: usize,
        rule: openmetrics::Violation,
        name: String,
    },
    /// More than `limit` samples were left after metric relabeling; parsing stopped at
    /// `line`, the first sample over the limit.
    #[error("line {line}: more than sample_limit ({limit}) samples after metric relabeling; stopped parsing the page here")]
    SampleLimit { line: usize, limit: usize },
    #[error("line {line}: {metric} has {labels} labels, more than label_limit ({limit})")]
    LabelLimit {
        line: usize,
        metric: String,
        labels: usize,
        limit: usize,
    },
    #[error("line {line}: {metric} has a label name {label:?} of {length} bytes, more than label_name_length_limit ({limit})")]
    LabelNameLength {
        line: usize,
        metric: String,
        label: String,
        length: usize,
        limit: usize,
    },
    #[error("line {line}: {metric} has a value of {length} bytes for label {label}, more than label_value_length_limit ({limit})")]
    LabelValueLength {
        line: usize,
        metric: String,
        label: String,
        length: usize,
        limit: usize,
    },
}

impl PageError {
    /// The label for `sidekick_scrape_failures{reason}`.
    pub fn reason(&self) -> &'static str {
        match self {
            PageError::Parse(_) | PageError::OpenMetrics { .. } => "malformed_page",
            PageError::Duplicate { .. } | PageError::DuplicateType { .. } => "invalid_series",
            PageError::SampleLimit { .. } => "sample_limit",
            PageError::LabelLimit { .. } => "label_limit",
            PageError::LabelNameLength { .. } => "label_name_length_limit",
            PageError::LabelValueLength { .. } => "label_value_length_limit",
        }
    }
}

/// A name for error messages: at most 120 characters.
fn cut(s: &str) -> String {
    s.chars().take(120).collect()
}

/// Prometheus's label limits, checked on a series' labels after metric relabeling
/// (`labels` holds everything but `__name__`, which is `name`).
fn check_label_limits(
    name: &str,
    labels: &LabelSet<'_>,
    opts: &Options<'_>,
    line: usize,
) -> Result<(), PageError> {
    if opts.label_limit > 0 && labels.len() + 1 > opts.label_limit {
        return Err(PageError::LabelLimit {
            line,
            metric: cut(name),
            labels: labels.len() + 1,
            limit: opts.label_limit,
        });
    }
    if opts.label_name_length_limit == 0 && opts.label_value_length_limit == 0 {
        return Ok(());
    }
    let all = std::iter::once(("__name__", name))
        .chain(labels.iter().map(|(k, v)| (k.as_ref(), v.as_ref())));
    for (k, v) in all {
        let limit = opts.label_name_length_limit;
        if limit > 0 && k.len() > limit {
            return Err(PageError::LabelNameLength {
                line,
                metric: cut(name),
                label: cut(k),
                length: k.len(),
                limit,
            });
        }
        let limit = opts.label_value_length_limit;
        if limit > 0 && v.len() > limit {
            return Err(PageError::LabelValueLength {
                line,
                metric: cut(name),
                label: cut(k),
                length: v.len(),
                limit,
            });
        }
    }
    Ok(())
}

/// The result of one scrape.
#[derive(Debug, Default, Clone)]
pub struct Translated {
    /// The points' attributes are kept apart, in `detached`.
    pub request: ExportMetricsServiceRequest,
    /// One entry per data point of `request`, in order.
    pub detached: Vec<Arc<Attrs>>,
    pub samples_scraped: usize,
    pub samples_post_relabel: usize,
    pub series_added: usize,
    /// Samples left out for repeating a timestamp their series already had on the page
    /// (OpenMetrics; the first sample stays, as in Prometheus).
    pub duplicate_timestamps: usize,
}

impl Translated {
    /// With the detached attributes put back into the request (plain OTLP).
    pub fn attached(mut self) -> Self {
        let batch = sidekick_core::payload::Metrics::from_detached(
            std::mem::take(&mut self.request),
            std::mem::take(&mut self.detached),
        );
        self.request = batch.to_request().unwrap_or_default();
        self
    }
}

/// The scope of metrics without `otel_scope_name`, with no metrics yet.
pub fn default_scope_metrics() -> ScopeMetrics {
    ScopeMetrics {
        scope: Some(InstrumentationScope {
            name: SCOPE_NAME.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A request with the target's resource and nothing else (a failed scrape).
pub fn empty_request(target: &Target) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: target.resource_attributes(),
                ..Default::default()
            }),
            scope_metrics: Vec::new(),
            schema_url: String::new(),
        }],
    }
}

pub fn string_kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
        ..Default::default()
    }
}

fn ms_to_ns(ms: i64) -> u64 {
    (ms.max(0) as u64).saturating_mul(1_000_000)
}

static NO_PARTS: Parts = Parts {
    buckets: Vec::new(),
    sum: None,
    count: None,
    quantiles: Vec::new(),
    exemplars: Vec::new(),
    native: None,
};

/// The hash that identifies a series across scrapes: scope, metric and attributes.
pub fn series_hash<'a>(
    scope: &InstrumentationScope,
    metric: &str,
    attrs: impl Iterator<Item = (&'a str, &'a str)>,
) -> u64 {
    let mut h = series_hasher();
    scope.name.hash(&mut h);
    scope.version.hash(&mut h);
    metric.hash(&mut h);
    for (k, v) in attrs {
        k.hash(&mut h);
        v.hash(&mut h);
    }
    h.finish()
}

/// Translates one page. `tracker` supplies start times, counts resets and adds the
/// staleness markers for series that were in the previous scrape but not in this one;
/// it keeps each series' attributes and family ([`Seen`]) to build those markers from
/// when the series vanish.
///
/// One pass: each sample is parsed, relabeled, checked against the limits and added to
/// its point before the next line is read, so a page over `sample_limit` or a label limit
/// stops at the first sample over it (the rest of the page is never parsed) and whatever
/// was built is dropped. The tracker is only touched once the whole page has passed.
pub fn translate(
    text: impl Into<String>,
    format: Format,
    time_ms: i64,
    target: &Target,
    opts: &Options<'_>,
    tracker: &mut Tracker,
) -> Result<Translated, PageError> {
    let text = text.into();
    let openmetrics = format == Format::OpenMetrics;
    let parser = Parser::new(&text, format);
    let page = read_page(
        parser,
        text.len(),
        openmetrics,
        time_ms,
        target,
        opts,
        tracker.known(),
    )?;
    // The points own what they took from the text: it goes before they become OTLP.
    drop(text);
    Ok(finish(page, time_ms, target, tracker))
}

/// A protobuf page's translation, and the families it left out (name, why): a family
/// whose native histogram is inconsistent goes alone, the rest of the page goes on.
pub struct ProtoTranslated {
    pub translated: Translated,
    pub refused: Vec<(String, &'static str)>,
}

/// Translates one protobuf exposition page ([`crate::exposition`]) the way [`translate`]
/// does a text page; native histograms become OTLP exponential histograms.
pub fn translate_protobuf(
    bytes: &[u8],
    time_ms: i64,
    target: &Target,
    opts: &Options<'_>,
    tracker: &mut Tracker,
) -> Result<ProtoTranslated, PageError> {
    let families = crate::exposition::decode(bytes).map_err(|e| {
        PageError::Parse(ParseError {
            line: e.family,
            message: "invalid protobuf exposition",
            text: e.to_string(),
        })
    })?;
    let proto = ProtoPage::new(families);
    let page = read_page(
        proto.entries(),
        proto.size_hint(),
        false,
        time_ms,
        target,
        opts,
        tracker.known(),
    )?;
    let refused = proto.refused;
    Ok(ProtoTranslated {
        translated: finish(page, time_ms, target, tracker),
        refused,
    })
}

/// A page read: its points' start times and staleness from the tracker, as a request.
fn finish(mut page: Page, time_ms: i64, target: &Target, tracker: &mut Tracker) -> Translated {
    let (scraped, post_relabel, duplicates) = (page.scraped, page.post_relabel, page.duplicates);
    let mut resource_attrs = target.resource_attributes();
    resource_attrs.append(&mut page.resource_extra);
    let mut scrape = tracker.scrape(page.points());
    let mut scopes = page.build(&mut |p, seen, value| {
        let at = scrape.see(p.hash, p.known_at, seen, value.is_some());
        match value {
            Some(v) => scrape.start_time(at, p.time_ms, v, p.created()),
            None => p.time_ms,
        }
    });
    let series_added = scrape.added();
    scopes.extend(stale_markers(scrape.gone(), time_ms));
    scrape.finish(time_ms);
    let (scope_metrics, detached) = flatten(scopes);
    Translated {
        detached,
        request: ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: resource_attrs,
                    ..Default::default()
                }),
                scope_metrics,
                schema_url: String::new(),
            }],
        },
        samples_scraped: scraped,
        samples_post_relabel: post_relabel,
        series_added,
        duplicate_timestamps: duplicates,
    }
}

/// Scopes with their metrics and, per data point in order, its detached attributes.
pub type Scoped = Vec<(ScopeMetrics, Vec<Arc<Attrs>>)>;

/// The scopes that have metrics, and their points' detached attributes in order.
pub fn flatten(scopes: Scoped) -> (Vec<ScopeMetrics>, Vec<Arc<Attrs>>) {
    let mut detached = Vec::with_capacity(scopes.iter().map(|(_, d)| d.len()).sum());
    let mut out = Vec::with_capacity(scopes.len());
    for (scope, attrs) in scopes {
        if !scope.metrics.is_empty() {
            detached.extend(attrs);
            out.push(scope);
        }
    }
    (out, detached)
}

/// After a failed scrape: a staleness marker for every series of the last good one, once.
pub fn all_stale(tracker: &mut Tracker, time_ms: i64) -> Scoped {
    let gone = tracker.forget_previous();
    stale_markers(gone.iter(), time_ms)
}

/// Markers for the `gone` series, built from what the tracker kept of them: a point with
/// no recorded value, stamped `time_ms`, one a series; families and scopes in name order,
/// series in attribute order.
fn stale_markers<'s>(gone: impl Iterator<Item = &'s Seen>, time_ms: i64) -> Scoped {
    let mut gone: Vec<&Seen> = gone.collect();
    if gone.is_empty() {
        return Vec::new();
    }
    let scope_key = |s: &Seen| (s.shape.scope.name.clone(), s.shape.scope.version.clone());
    // By scope and family, the series of one shape together, then by attributes.
    gone.sort_by(|a, b| {
        fn key(s: &Seen) -> (&str, &str, &str, usize) {
            let shape = &*s.shape;
            let at = shape as *const Shape as usize;
            (&shape.scope.name, &shape.scope.version, &shape.name, at)
        }
        key(a)
            .cmp(&key(b))
            .then_with(|| a.attrs.iter().cmp(b.attrs.iter()))
    });
    let mut scopes: Scoped = Vec::new();
    let mut scope_of: Vec<(String, String)> = Vec::new();
    let mut i = 0;
    while i < gone.len() {
        let shape = &gone[i].shape;
        let same = gone[i..]
            .iter()
            .take_while(|s| Arc::ptr_eq(&s.shape, shape))
            .count();
        let key = scope_key(gone[i]);
        let at = match scope_of.iter().position(|k| *k == key) {
            Some(at) => at,
            None => {
                scope_of.push(key);
                let scope = ScopeMetrics {
                    scope: Some(shape.scope.clone()),
                    ..Default::default()
                };
                scopes.push((scope, Vec::new()));
                scopes.len() - 1
            }
        };
        let points = gone[i..i + same]
            .iter()
            .map(|s| Point {
                line: 0,
                attrs: Arc::clone(&s.attrs),
                known_at: None,
                hash: 0,
                time_ms,
                value: f64::NAN,
                created_ms: NOT_CREATED,
                parts: match shape.kind {
                    Kind::Histogram if shape.native => Some(Box::new(Parts {
                        native: Some(Box::default()),
                        ..Parts::default()
                    })),
                    Kind::Histogram => Some(Box::new(Parts {
                        buckets: shape.parts.iter().map(|&le| (le, 0.0)).collect(),
                        count: Some(0.0),
                        sum: shape.sum.then_some(0.0),
                        ..Parts::default()
                    })),
                    Kind::Summary => Some(Box::new(Parts {
                        quantiles: shape.parts.iter().map(|&q| (q, f64::NAN)).collect(),
                        count: Some(0.0),
                        ..Parts::default()
                    })),
                    _ => None,
                },
            })
            .collect();
        let family = Family {
            name: shape.name.clone(),
            kind: shape.kind,
            help: shape.help.clone(),
            unit: shape.unit.clone(),
            scope: at,
            points,
            index: KeyMap::default(),
        };
        let (metrics, detached) = &mut scopes[at];
        if let Some(mut m) = build_metric(family, &mut |p, _, _, _| p.time_ms, detached) {
            mark_stale(&mut m, ms_to_ns(time_ms));
            metrics.metrics.push(m);
        }
        i += same;
    }
    scopes
}

/// Turns every point of `m` into a staleness marker at `time_ns`.
fn mark_stale(m: &mut Metric, time_ns: u64) {
    let nan = || Some(number_data_point::Value::AsDouble(f64::NAN));
    match &mut m.data {
        Some(metric::Data::Gauge(g)) => g.data_points.iter_mut().for_each(|p| {
            (p.time_unix_nano, p.flags, p.value) = (time_ns, NO_RECORDED_VALUE, nan());
            p.exemplars.clear();
        }),
        Some(metric::Data::Sum(s)) => s.data_points.iter_mut().for_each(|p| {
            (p.time_unix_nano, p.flags, p.value) = (time_ns, NO_RECORDED_VALUE, nan());
            p.exemplars.clear();
        }),
        Some(metric::Data::Histogram(h)) => h.data_points.iter_mut().for_each(|p| {
            (p.time_unix_nano, p.flags) = (time_ns, NO_RECORDED_VALUE);
            p.exemplars.clear();
        }),
        Some(metric::Data::Summary(s)) => s.data_points.iter_mut().for_each(|p| {
            (p.time_unix_nano, p.flags) = (time_ns, NO_RECORDED_VALUE);
        }),
        Some(metric::Data::ExponentialHistogram(h)) => h.data_points.iter_mut().for_each(|p| {
            (p.time_unix_nano, p.flags) = (time_ns, NO_RECORDED_VALUE);
            p.exemplars.clear();
        }),
        None => {}
    }
}

fn metric_has_points(m: &Metric) -> bool {
    point_count(m) > 0
}

/// A metric's data points.
pub fn point_count(m: &Metric) -> usize {
    match &m.data {
        Some(metric::Data::Gauge(g)) => g.data_points.len(),
        Some(metric::Data::Sum(s)) => s.data_points.len(),
        Some(metric::Data::Histogram(h)) => h.data_points.len(),
        Some(metric::Data::ExponentialHistogram(h)) => h.data_points.len(),
        Some(metric::Data::Summary(s)) => s.data_points.len(),
        None => 0,
    }
}

fn metadata(kind: Kind) -> Vec<KeyValue> {
    vec![string_kv("prometheus.type", kind.as_str())]
}

/// One family's metric; each point's attributes go to the end of `detached`.
fn build_metric(f: Family, keep: &mut Keep<'_>, detached: &mut Vec<Arc<Attrs>>) -> Option<Metric> {
    let mut m = Metric {
        name: f.name.clone(),
        description: f.help,
        unit: f.unit,
        metadata: metadata(f.kind),
        ..Default::default()
    };
    let data = match f.kind {
        Kind::Counter | Kind::Gauge | Kind::Unknown | Kind::Info | Kind::StateSet => {
            let cumulative = matches!(f.kind, Kind::Counter | Kind::Info | Kind::StateSet);
            let mut points = Vec::with_capacity(f.points.len());
            for p in f.points {
                if p.value.is_nan() && p.created().is_some() && f.kind == Kind::Counter {
                    // Only a `_created` line, no value: nothing to report.
                    continue;
                }
                let start = keep(&p, &[], false, (f.kind == Kind::Counter).then_some(p.value));
                let exemplars = p.parts.map(|b| b.exemplars).unwrap_or_default();
                detached.push(p.attrs);
                points.push(NumberDataPoint {
                    attributes: Vec::new(),
                    start_time_unix_nano: if cumulative { ms_to_ns(start) } else { 0 },
                    time_unix_nano: ms_to_ns(p.time_ms),
                    exemplars,
                    value: Some(number_data_point::Value::AsDouble(p.value)),
                    ..Default::default()
                });
            }
            if cumulative {
                metric::Data::Sum(Sum {
                    data_points: points,
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    is_monotonic: f.kind == Kind::Counter,
                })
            } else {
                metric::Data::Gauge(Gauge {
                    data_points: points,
                })
            }
        }
        Kind::Histogram if f.points.first().is_some_and(Point::is_native) => {
            let mut points = Vec::with_capacity(f.points.len());
            for mut p in f.points {
                let count = p
                    .parts
                    .as_ref()
                    .and_then(|x| x.native.as_ref())
                    .map(|n| n.count);
                let Some(count) = count else { continue };
                let start = keep(&p, &[], true, Some(count as f64));
                let Some(parts) = p.parts.take() else {
                    continue;
                };
                let Parts {
                    native, exemplars, ..
                } = *parts;
                let Some(n) = native else { continue };
                detached.push(p.attrs);
                points.push(exponential_point(*n, exemplars, start, p.time_ms));
            }
            metric::Data::ExponentialHistogram(ExponentialHistogram {
                data_points: points,
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            })
        }
        Kind::Histogram => {
            let mut points = Vec::with_capacity(f.points.len());
            for mut p in f.points {
                let mut parts = p.parts.take().map(|b| *b).unwrap_or_default();
                // `_count` is required; without it the point is dropped.
                let Some(count) = parts.count else { continue };
                parts.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
                let start = keep(&p, &parts.buckets, parts.sum.is_some(), Some(count));
                let mut bounds = Vec::with_capacity(parts.buckets.len());
                let mut counts = Vec::with_capacity(parts.buckets.len() + 1);
                let mut below = 0.0;
                for (le, cumulative) in &parts.buckets {
                    if le.is_infinite() {
                        continue;
                    }
                    bounds.push(*le);
                    counts.push((cumulative - below).max(0.0) as u64);
                    below = *cumulative;
                }
                counts.push((count - below).max(0.0) as u64);
                detached.push(p.attrs);
                points.push(HistogramDataPoint {
                    attributes: Vec::new(),
                    start_time_unix_nano: ms_to_ns(start),
                    time_unix_nano: ms_to_ns(p.time_ms),
                    count: count.max(0.0) as u64,
                    sum: parts.sum,
                    bucket_counts: counts,
                    explicit_bounds: bounds,
                    exemplars: parts.exemplars,
                    ..Default::default()
                });
            }
            metric::Data::Histogram(Histogram {
                data_points: points,
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            })
        }
        Kind::Summary => {
            let mut points = Vec::with_capacity(f.points.len());
            for mut p in f.points {
                let mut parts = p.parts.take().map(|b| *b).unwrap_or_default();
                let Some(count) = parts.count else { continue };
                parts.quantiles.sort_by(|a, b| a.0.total_cmp(&b.0));
                let start = keep(&p, &parts.quantiles, true, Some(count));
                detached.push(p.attrs);
                points.push(SummaryDataPoint {
                    attributes: Vec::new(),
                    start_time_unix_nano: ms_to_ns(start),
                    time_unix_nano: ms_to_ns(p.time_ms),
                    count: count.max(0.0) as u64,
                    sum: parts.sum.unwrap_or(0.0),
                    quantile_values: parts
                        .quantiles
                        .iter()
                        .map(|&(quantile, value)| ValueAtQuantile { quantile, value })
                        .collect(),
                    ..Default::default()
                });
            }
            metric::Data::Summary(Summary {
                data_points: points,
            })
        }
        // The spec: gauge histograms MUST be dropped.
        Kind::GaugeHistogram => return None,
    };
    m.data = Some(data);
    Some(m)
}

/// A native histogram's OTLP point.
fn exponential_point(
    n: Native,
    exemplars: Vec<Exemplar>,
    start_ms: i64,
    time_ms: i64,
) -> ExponentialHistogramDataPoint {
    let side = |d: crate::exposition::Dense| exponential_histogram_data_point::Buckets {
        offset: d.offset,
        bucket_counts: d.counts,
    };
    ExponentialHistogramDataPoint {
        attributes: Vec::new(),
        start_time_unix_nano: ms_to_ns(start_ms),
        time_unix_nano: ms_to_ns(time_ms),
        count: n.count,
        sum: (!n.sum.is_nan()).then_some(n.sum),
        scale: n.scale,
        zero_count: n.zero_count,
        positive: Some(side(n.positive)),
        negative: Some(side(n.negative)),
        flags: 0,
        exemplars,
        min: None,
        max: None,
        zero_threshold: n.zero_threshold,
    }
}
