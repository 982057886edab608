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
pub mod series;

use crate::text::label_order;
use crate::units::ucum_for_word;
use sidekick_core::payload::Attrs;
use sidekick_core::util::{series_hasher, FastMap, KeyMap, KeySet};
use std::borrow::Cow;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    exemplar, metric, number_data_point, summary_data_point::ValueAtQuantile,
    AggregationTemporality, Exemplar, Gauge, Histogram, HistogramDataPoint, Metric,
    NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

use self::openmetrics::Role;
use self::series::{Cursor, Known, Seen, Shape, Tracker, NO_RECORDED_VALUE};
use crate::parse::{Entry, Format, Kind, ParseError, Parser, Sample};
use crate::relabel::{self, LabelSet, Rule};

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

#[derive(Default)]
struct Meta<'a> {
    kind: Option<Kind>,
    help: Option<Cow<'a, str>>,
    unit: Option<&'a str>,
}

/// Finds the family a series name belongs to and the part it plays in it. Counters and
/// info metrics are named by their series (`x_total`, `x_info`) so the name a Prometheus
/// user queries survives the trip; histograms and summaries by their family. Also returns
/// the name the family's metadata (`HELP`, `UNIT`) is under.
/// A sample's family name, kind, role and where its metadata is ([`family`]).
type FamilyOf<'n, 'a> = (Cow<'n, str>, Kind, Role, Option<&'a str>);

fn family<'a, 'n>(name: &'n str, meta: &FastMap<&'a str, Meta<'a>>) -> FamilyOf<'n, 'a> {
    let typed = |n: &str| meta.get_key_value(n).and_then(|(k, m)| Some((m.kind?, *k)));
    if let Some((kind, m)) = typed(name) {
        return (Cow::Borrowed(name), kind, Role::Value, Some(m));
    }
    const SUFFIXES: [(&str, Role); 8] = [
        ("_bucket", Role::Bucket),
        ("_count", Role::Count),
        ("_sum", Role::Sum),
        ("_gcount", Role::Count),
        ("_gsum", Role::Sum),
        ("_created", Role::Created),
        ("_total", Role::Value),
        ("_info", Role::Value),
    ];
    for (suffix, role) in SUFFIXES {
        let Some(base) = name.strip_suffix(suffix) else {
            continue;
        };
        let found = match (suffix, typed(base)) {
            ("_bucket", Some((k @ (Kind::Histogram | Kind::GaugeHistogram), m))) => {
                Some((Cow::Borrowed(base), k, m))
            }
            ("_count" | "_sum", Some((k @ (Kind::Histogram | Kind::Summary), m))) => {
                Some((Cow::Borrowed(base), k, m))
            }
            ("_gcount" | "_gsum", Some((k @ Kind::GaugeHistogram, m))) => {
                Some((Cow::Borrowed(base), k, m))
            }
            ("_created", Some((k @ (Kind::Histogram | Kind::Summary), m))) => {
                Some((Cow::Borrowed(base), k, m))
            }
            ("_created", Some((Kind::Counter, m))) => {
                Some((Cow::Owned(format!("{base}_total")), Kind::Counter, m))
            }
            ("_created", None) => {
                let total = format!("{base}_total");
                typed(&total)
                    .filter(|(k, _)| *k == Kind::Counter)
                    .map(|(k, m)| (Cow::Owned(total), k, m))
            }
            ("_total", Some((Kind::Counter, m))) => Some((Cow::Borrowed(name), Kind::Counter, m)),
            ("_info", Some((Kind::Info, m))) => Some((Cow::Borrowed(name), Kind::Info, m)),
            _ => None,
        };
        if let Some((family, kind, m)) = found {
            return (family, kind, role, Some(m));
        }
    }
    (Cow::Borrowed(name), Kind::Unknown, Role::Value, None)
}

/// The unit from `# UNIT` (mapped to UCUM when it is a known word) or else from the
/// name's last word (`_seconds`, `_bytes`, …).
fn unit_for(family: &str, declared: Option<&str>) -> String {
    if let Some(u) = declared.filter(|u| !u.is_empty()) {
        return ucum_for_word(u)
            .map(str::to_string)
            .unwrap_or_else(|| u.to_string());
    }
    let base = family.strip_suffix("_total").unwrap_or(family);
    base.rsplit_once('_')
        .and_then(|(_, word)| ucum_for_word(word))
        .unwrap_or("")
        .to_string()
}

/// A data point being assembled from one or more samples (64 bytes: a page's points
/// are all held while it is read).
struct Point {
    /// The series' attributes, shared with the tracker and every batch that carries it.
    attrs: Arc<Attrs>,
    hash: u64,
    time_ms: i64,
    value: f64,
    /// From a `_created` line; [`NOT_CREATED`] when there was none ([`Point::created`]).
    created_ms: i64,
    /// A histogram's or summary's other parts, and exemplars (boxed: most points are
    /// single values without any).
    parts: Option<Box<Parts>>,
    /// The page line of its first sample.
    line: u32,
    /// Its place among the previous scrape's series, when it was there.
    known_at: Option<u32>,
}

const _: () = assert!(std::mem::size_of::<Point>() == 64);

/// The parts of a histogram or summary point, and any point's exemplars.
#[derive(Default)]
struct Parts {
    buckets: Vec<(f64, f64)>,
    sum: Option<f64>,
    count: Option<f64>,
    quantiles: Vec<(f64, f64)>,
    exemplars: Vec<Exemplar>,
}

static NO_PARTS: Parts = Parts {
    buckets: Vec::new(),
    sum: None,
    count: None,
    quantiles: Vec::new(),
    exemplars: Vec::new(),
};

struct Family {
    name: String,
    kind: Kind,
    help: String,
    unit: String,
    scope: usize,
    points: Vec<Point>,
    index: KeyMap<usize>,
}

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

fn exemplar_from(sample: &Sample<'_>, time_ms: i64) -> Option<Exemplar> {
    let e = sample.exemplar.as_ref()?;
    let mut out = Exemplar {
        time_unix_nano: e
            .timestamp
            .map(|s| (s * 1e9).max(0.0) as u64)
            .unwrap_or_else(|| ms_to_ns(time_ms)),
        value: Some(exemplar::Value::AsDouble(e.value)),
        ..Default::default()
    };
    for (k, v) in e.labels.iter() {
        match (k, hex(&v)) {
            ("trace_id", Some(id)) if id.len() == 16 => out.trace_id = id,
            ("span_id", Some(id)) if id.len() == 8 => out.span_id = id,
            _ => out.filtered_attributes.push(string_kv(k, &v)),
        }
    }
    Some(out)
}

fn hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
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
    let mut page = read_page(&text, format, time_ms, target, opts, tracker.known())?;
    // The points own what they took from the text: it goes before they become OTLP.
    drop(text);
    let (scraped, post_relabel) = (page.scraped, page.post_relabel);
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
    Ok(Translated {
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
    })
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
        _ => {}
    }
}

/// A page read and checked, its samples gathered into points, before any state is
/// touched.
struct Page {
    scopes: Vec<InstrumentationScope>,
    families: Vec<Family>,
    /// `target_info`'s labels, for the resource.
    resource_extra: Vec<KeyValue>,
    scraped: usize,
    post_relabel: usize,
}

impl Page {
    fn points(&self) -> usize {
        self.families.iter().map(|f| f.points.len()).sum()
    }

    /// The OTLP metrics, one `ScopeMetrics` per scope with its points' attributes kept
    /// apart: `see` is told of each series built (what its staleness marker would need)
    /// and gives its start time ([`Keep`]).
    fn build(self, see: &mut dyn FnMut(&Point, Seen, Option<f64>) -> i64) -> Scoped {
        let mut scopes: Scoped = self
            .scopes
            .into_iter()
            .map(|s| {
                let scope = ScopeMetrics {
                    scope: Some(s),
                    ..Default::default()
                };
                (scope, Vec::new())
            })
            .collect();
        for f in self.families {
            let scope = f.scope;
            let (metrics, detached) = &mut scopes[scope];
            let family = Arc::new(Shape {
                scope: metrics.scope.clone().unwrap_or_default(),
                name: f.name.clone(),
                kind: f.kind,
                unit: f.unit.clone(),
                help: f.help.clone(),
                parts: Vec::new(),
                sum: false,
            });
            // The family's shape, with the bounds or quantiles of its first series with
            // any; a series whose differ gets a shape of its own.
            let mut common: Option<Arc<Shape>> = None;
            let mut keep = |p: &Point, parts: &[(f64, f64)], sum: bool, value: Option<f64>| {
                let fits = |s: &Shape| {
                    s.sum == sum
                        && s.parts.len() == parts.len()
                        && s.parts.iter().zip(parts).all(|(a, (b, _))| a == b)
                };
                let shape = match &common {
                    _ if parts.is_empty() && !sum => Arc::clone(&family),
                    Some(c) if fits(c) => Arc::clone(c),
                    _ => {
                        let own = Arc::new(Shape {
                            parts: parts.iter().map(|(at, _)| *at).collect(),
                            sum,
                            ..Shape::clone(&family)
                        });
                        common.get_or_insert_with(|| Arc::clone(&own));
                        own
                    }
                };
                let seen = Seen {
                    attrs: Arc::clone(&p.attrs),
                    shape,
                };
                see(p, seen, value)
            };
            let before = detached.len();
            match build_metric(f, &mut keep, detached) {
                Some(metric) if metric_has_points(&metric) => metrics.metrics.push(metric),
                _ => detached.truncate(before),
            }
        }
        scopes
    }
}

/// Takes note of a series' point as it is built and gives its start time: (the point,
/// its histogram buckets or summary quantiles as (bound or quantile, value), sorted,
/// whether it has a `_sum`, and the value a reset shows in, `None` when the point has no
/// start time of its own).
type Keep<'a> = dyn FnMut(&Point, &[(f64, f64)], bool, Option<f64>) -> i64 + 'a;

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

/// Parses, relabels and checks a page and gathers its samples into points.
/// `known` holds the attributes of series seen before, to share rather than build again.
fn read_page<'a>(
    text: &'a str,
    format: Format,
    time_ms: i64,
    target: &'a Target,
    opts: &Options<'_>,
    known: &Known,
) -> Result<Page, PageError> {
    let mut meta: FastMap<&str, Meta<'_>> = FastMap::default();
    let mut scopes: Vec<InstrumentationScope> =
        vec![default_scope_metrics().scope.unwrap_or_default()];
    let mut families: Vec<Family> = Vec::new();
    // Per family, where its `HELP` and `UNIT` are, read when the page is done (they may
    // follow the first sample; `TYPE` may not, as both formats say).
    let mut metas: Vec<Option<&str>> = Vec::new();
    // Per scope: family name → index in `families`.
    let mut family_index: Vec<FastMap<String, usize>> = vec![FastMap::default()];
    // Finds the series of the previous scrape, which most often come in the same order.
    let mut cursor = Cursor::default();
    // Per series of the previous scrape, its point on this page once made: (family, point).
    let mut made: Vec<(u32, u32)> = vec![(u32::MAX, 0); known.len()];
    // Sized for the page (about 80 bytes a sample) so it is not rehashed as it fills.
    let mut seen = Shown::with_capacity((text.len() / 80).min(1 << 20));
    // The last sample name's family: a family's samples come together.
    let mut last_family: Option<(&str, FamilyOf<'_, '_>)> = None;
    let mut resource_extra: Vec<KeyValue> = Vec::new();
    let mut scraped = 0;
    let mut post_relabel = 0;
    let mut labels: LabelSet<'_> = Vec::new();
    let openmetrics = format == Format::OpenMetrics;
    let mut checker = openmetrics::Checker::default();
    let mut parser = Parser::new(text, format);
    let violation = |line, rule, name: &str| PageError::OpenMetrics {
        line,
        rule,
        name: cut(name),
    };
    while let Some(entry) = parser.next() {
        let line = parser.line();
        let Some(sample) = note_metadata(entry?, &mut meta, &mut checker, openmetrics, line)?
        else {
            // Metadata may change what a name it follows belongs to.
            last_family = None;
            continue;
        };
        if openmetrics {
            let (_, kind, role, m) = family(sample.name, &meta);
            let quantile = sample
                .labels
                .iter()
                .find(|(k, _)| *k == "quantile")
                .map(|(_, v)| v);
            checker
                .sample(&sample, m, kind, role, quantile.as_deref())
                .map_err(|rule| violation(line, rule, sample.name))?;
        }
        scraped += 1;
        labels.clear();
        labels.extend(
            sample
                .labels
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (Cow::Borrowed(k), v)),
        );
        merge_target_labels(&mut labels, target, opts.honor_labels);
        let mut name: Cow<'_, str> = Cow::Borrowed(sample.name);
        if !opts.metric_relabel.is_empty() {
            labels.push((Cow::Borrowed("__name__"), name.clone()));
            if !relabel::apply(opts.metric_relabel, &mut labels) {
                continue;
            }
            let pos = labels.iter().position(|(k, _)| k == "__name__");
            match pos {
                Some(p) => name = labels.swap_remove(p).1,
                None => continue,
            }
        }
        // Prometheus's order: label limits, then sample_limit, both after relabeling.
        check_label_limits(&name, &labels, opts, line)?;
        post_relabel += 1;
        if opts.sample_limit > 0 && post_relabel > opts.sample_limit {
            return Err(PageError::SampleLimit {
                line,
                limit: opts.sample_limit,
            });
        }
        labels.sort_unstable_by(|a, b| label_order(&a.0, &b.0));
        // A page may not hold the same series twice, but OpenMetrics may give a series
        // several samples with increasing explicit timestamps.
        let mut h = series_hasher();
        name.hash(&mut h);
        labels.hash(&mut h);
        if !seen.first(h.finish(), sample.timestamp_ms, openmetrics) {
            return Err(PageError::Duplicate {
                line,
                series: render_series(&name, &labels),
            });
        }

        let (family_name, kind, role, m) = match name {
            Cow::Borrowed(n) => match &last_family {
                Some((last, found)) if *last == n => found.clone(),
                _ => {
                    let found = family(n, &meta);
                    last_family = Some((n, found.clone()));
                    found
                }
            },
            Cow::Owned(ref n) => {
                let (f, kind, role, m) = family(n, &meta);
                (Cow::Owned(f.into_owned()), kind, role, m)
            }
        };
        if family_name == "target_info" {
            if resource_extra.is_empty() {
                resource_extra = labels
                    .iter()
                    .filter(|(k, _)| k != "job" && k != "instance")
                    .map(|(k, v)| string_kv(k, v))
                    .collect();
            }
            continue;
        }
        let Split {
            scope_name,
            scope_version,
            mut scope_attrs,
            le,
            quantile,
        } = split_labels(&labels, kind, role);
        let scope = match scope_name {
            None => 0,
            Some(n) => match scopes
                .iter()
                .position(|s| s.name == n && s.version == scope_version)
            {
                Some(i) => i,
                None => {
                    scopes.push(InstrumentationScope {
                        name: n.to_string(),
                        version: scope_version.to_string(),
                        attributes: std::mem::take(&mut scope_attrs),
                        ..Default::default()
                    });
                    scopes.len() - 1
                }
            },
        };
        let fi = family_slot(
            &mut families,
            &mut metas,
            &mut family_index,
            scope,
            family_name,
            kind,
            m,
        );
        let fam = &mut families[fi];
        let attrs = attr_pairs(&labels, kind, role);
        let hash = series_hash(&scopes[scope], &fam.name, attrs.clone());
        let time = match (opts.honor_timestamps, sample.timestamp_ms) {
            (true, Some(t)) => t,
            _ => time_ms,
        };
        // Samples of one series with their own timestamps (OpenMetrics) are points apart.
        let point_key = match sample.timestamp_ms {
            Some(t) if openmetrics => {
                hash.wrapping_add((t as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
            }
            _ => hash,
        };
        // A series of the previous scrape is found by the cursor (in page order, no
        // hashing) and its point here through `made`; the others through the family's index.
        let at = cursor.find(known, hash);
        let apart = openmetrics && sample.timestamp_ms.is_some();
        let pi = match at.map(|at| made[at]) {
            Some((f, p)) if !apart && f == fi as u32 => p as usize,
            _ => {
                let make = || {
                    // Shared when the series is the one the previous scrape had under
                    // this hash (checked: a colliding hash must not lend another series
                    // its labels).
                    let (attrs, known_at) = match at {
                        Some(at) if known.at(at).attrs.iter().eq(attrs.clone()) => {
                            (Arc::clone(&known.at(at).attrs), Some(at as u32))
                        }
                        _ => (Arc::new(Attrs::new(attrs)), None),
                    };
                    fam.points.push(Point {
                        line: u32::try_from(line).unwrap_or(u32::MAX),
                        attrs,
                        known_at,
                        hash,
                        time_ms: time,
                        value: f64::NAN,
                        created_ms: NOT_CREATED,
                        parts: None,
                    });
                    fam.points.len() - 1
                };
                match at {
                    // Not when another family's series took the place (a colliding
                    // hash): that one keeps it, this one goes by the family's index.
                    Some(at) if !apart && made[at].0 == u32::MAX => {
                        let pi = make();
                        made[at] = (fi as u32, pi as u32);
                        pi
                    }
                    _ => *fam.index.entry(point_key).or_insert_with(make),
                }
            }
        };
        let p = &mut fam.points[pi];
        p.add(kind, role, le, quantile, sample.value);
        if let Some(e) = exemplar_from(&sample, time_ms) {
            p.parts().exemplars.push(e);
        }
    }
    drop(seen);
    if openmetrics {
        check_shapes(&families).map_err(|(line, rule, name)| violation(line, rule, name))?;
    }
    for (f, m) in families.iter_mut().zip(metas) {
        let m = m.and_then(|k| meta.get(k));
        f.unit = unit_for(&f.name, m.and_then(|m| m.unit));
        f.help = m.and_then(|m| m.help.as_deref()).unwrap_or("").to_string();
    }
    Ok(Page {
        scopes,
        families,
        resource_extra,
        scraped,
        post_relabel,
    })
}

/// Takes a `TYPE`, `HELP` or `UNIT` line into `meta` (checking the OpenMetrics rules on
/// it); hands a sample back.
fn note_metadata<'a>(
    entry: Entry<'a>,
    meta: &mut FastMap<&'a str, Meta<'a>>,
    checker: &mut openmetrics::Checker<'a>,
    openmetrics: bool,
    line: usize,
) -> Result<Option<Sample<'a>>, PageError> {
    let (name, keyword) = match &entry {
        Entry::Type { name, .. } => (*name, "TYPE"),
        Entry::Help { name, .. } => (*name, "HELP"),
        Entry::Unit { name, .. } => (*name, "UNIT"),
        Entry::Sample(_) => ("", ""),
    };
    if openmetrics && !keyword.is_empty() {
        checker
            .metadata(name, keyword)
            .map_err(|rule| PageError::OpenMetrics {
                line,
                rule,
                name: cut(name),
            })?;
    }
    match entry {
        Entry::Type { name, kind } => {
            let m = meta.entry(name).or_default();
            if m.kind.is_some() {
                return Err(PageError::DuplicateType {
                    line,
                    name: name.to_string(),
                });
            }
            m.kind = Some(kind);
        }
        Entry::Help { name, text } => meta.entry(name).or_default().help = Some(text),
        Entry::Unit { name, unit } => meta.entry(name).or_default().unit = Some(unit),
        Entry::Sample(s) => return Ok(Some(s)),
    }
    Ok(None)
}

/// The index of family `name` of `scope` in `families`, added when new.
fn family_slot<'a>(
    families: &mut Vec<Family>,
    metas: &mut Vec<Option<&'a str>>,
    index: &mut Vec<FastMap<String, usize>>,
    scope: usize,
    name: Cow<'_, str>,
    kind: Kind,
    meta: Option<&'a str>,
) -> usize {
    if index.len() <= scope {
        index.resize_with(scope + 1, FastMap::default);
    }
    if let Some(&i) = index[scope].get(name.as_ref()) {
        return i;
    }
    metas.push(meta);
    families.push(Family {
        help: String::new(),
        unit: String::new(),
        name: name.to_string(),
        kind,
        scope,
        points: Vec::new(),
        index: KeyMap::default(),
    });
    index[scope].insert(name.into_owned(), families.len() - 1);
    families.len() - 1
}

/// The series a page has shown so far (a sample's name and labels, hashed), to refuse a
/// second sample of one. OpenMetrics allows one again with a later explicit timestamp:
/// those series keep their last timestamp, apart, so the others cost 8 bytes each.
struct Shown {
    plain: KeySet,
    stamped: KeyMap<i64>,
}

impl Shown {
    fn with_capacity(n: usize) -> Self {
        Shown {
            plain: KeySet::with_capacity_and_hasher(n, Default::default()),
            stamped: KeyMap::default(),
        }
    }

    /// Notes a sample of the series `hash`; false when the page already had it.
    fn first(&mut self, hash: u64, ts: Option<i64>, openmetrics: bool) -> bool {
        match ts.filter(|_| openmetrics) {
            None => {
                (self.stamped.is_empty() || !self.stamped.contains_key(&hash))
                    && self.plain.insert(hash)
            }
            Some(_) if self.plain.contains(&hash) => false,
            Some(t) => match self.stamped.entry(hash) {
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(t);
                    true
                }
                std::collections::hash_map::Entry::Occupied(mut e) if t > *e.get() => {
                    e.insert(t);
                    true
                }
                std::collections::hash_map::Entry::Occupied(_) => false,
            },
        }
    }
}

/// A sample's labels sorted out: its scope (from `otel_scope_*`) and the `le` /
/// `quantile` its role reads. The rest are its attributes ([`attr_pairs`]).
struct Split<'l> {
    scope_name: Option<&'l str>,
    scope_version: &'l str,
    scope_attrs: Vec<KeyValue>,
    le: Option<&'l str>,
    quantile: Option<&'l str>,
}

fn split_labels<'l>(labels: &'l LabelSet<'_>, kind: Kind, role: Role) -> Split<'l> {
    let mut split = Split {
        scope_name: None,
        scope_version: "",
        scope_attrs: Vec::new(),
        le: None,
        quantile: None,
    };
    for (k, v) in labels {
        match k.as_ref() {
            "otel_scope_name" => split.scope_name = Some(v.as_ref()),
            "otel_scope_version" => split.scope_version = v,
            "otel_scope_schema_url" => {}
            "le" if role == Role::Bucket => split.le = Some(v.as_ref()),
            "quantile" if kind == Kind::Summary && role == Role::Value => {
                split.quantile = Some(v.as_ref())
            }
            other => {
                if let Some(attr) = other.strip_prefix("otel_scope_") {
                    split.scope_attrs.push(string_kv(attr, v));
                }
            }
        }
    }
    split
}

/// A sample's attributes: its labels but `job`, `instance`, the scope's (`otel_scope_*`)
/// and the `le` / `quantile` its role reads, in label order.
fn attr_pairs<'l>(
    labels: &'l LabelSet<'_>,
    kind: Kind,
    role: Role,
) -> impl Iterator<Item = (&'l str, &'l str)> + Clone {
    labels.iter().filter_map(move |(k, v)| {
        let k: &str = k;
        let attr = match k {
            "job" | "instance" => false,
            "le" => role != Role::Bucket,
            "quantile" => !(kind == Kind::Summary && role == Role::Value),
            _ => !k.starts_with("otel_scope_"),
        };
        attr.then_some((k, v.as_ref()))
    })
}

/// [`Point::created_ms`] when the page gave no `_created` (an `Option` would make every
/// point 8 bytes bigger).
const NOT_CREATED: i64 = i64::MIN;

impl Point {
    /// When the series was created, from its `_created` line.
    fn created(&self) -> Option<i64> {
        (self.created_ms != NOT_CREATED).then_some(self.created_ms)
    }

    fn parts(&mut self) -> &mut Parts {
        self.parts.get_or_insert_with(Box::default)
    }

    /// Adds a sample that plays `role` in a family of `kind`.
    fn add(
        &mut self,
        kind: Kind,
        role: Role,
        le: Option<&str>,
        quantile: Option<&str>,
        value: f64,
    ) {
        use crate::parse::parse_value;
        match role {
            Role::Value if kind == Kind::Summary => {
                if let Some(q) = quantile.and_then(parse_value) {
                    self.parts().quantiles.push((q, value));
                }
            }
            Role::Value => self.value = value,
            Role::Bucket => {
                if let Some(le) = le.and_then(parse_value) {
                    self.parts().buckets.push((le, value));
                }
            }
            Role::Sum => self.parts().sum = Some(value),
            Role::Count => self.parts().count = Some(value),
            // `_created` is in seconds.
            Role::Created => self.created_ms = ((value * 1000.0) as i64).max(NOT_CREATED + 1),
        }
    }
}

/// The OpenMetrics rules on a point's shape (histogram buckets, `_sum` with `_count`):
/// the first point that breaks one, as (line, rule, family).
fn check_shapes(families: &[Family]) -> Result<(), (usize, openmetrics::Violation, &str)> {
    for f in families {
        for p in &f.points {
            let shape = match f.kind {
                Kind::Histogram | Kind::GaugeHistogram => {
                    let parts = p.parts.as_deref().unwrap_or(&NO_PARTS);
                    openmetrics::check_histogram(&parts.buckets, parts.sum, parts.count)
                }
                Kind::Summary => {
                    let parts = p.parts.as_deref().unwrap_or(&NO_PARTS);
                    openmetrics::check_summary(parts.sum, parts.count)
                }
                _ => Ok(()),
            };
            shape.map_err(|rule| (p.line as usize, rule, f.name.as_str()))?;
        }
    }
    Ok(())
}

fn render_series(name: &str, labels: &LabelSet<'_>) -> String {
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{name}{{{}}}", inner.join(","))
}

/// Adds the target's labels to a sample's. Without `honor_labels` the target wins and a
/// clashing scraped label is kept as `exported_<name>`; with it the page wins.
fn merge_target_labels<'a>(labels: &mut LabelSet<'a>, target: &'a Target, honor_labels: bool) {
    for (k, v) in &target.labels {
        match labels.iter().position(|(lk, _)| lk == k) {
            None => labels.push((Cow::Borrowed(k), Cow::Borrowed(v))),
            Some(_) if honor_labels => {}
            Some(i) => {
                let exported = format!("exported_{k}");
                labels[i].0 = Cow::Owned(exported);
                labels.push((Cow::Borrowed(k), Cow::Borrowed(v)));
            }
        }
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
