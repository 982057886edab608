//! The latest sample of every series that reached the `prometheus` exporter, and its
//! rendering as a Prometheus text or OpenMetrics page, or in the protobuf exposition
//! ([`Snapshot::protobuf`]). Native histograms are kept as such: the protobuf page
//! carries them, the text pages show them as classic histograms.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sidekick_collector::telemetry::Telemetry;
use sidekick_collector::util::{FastMap, KeyMap};

use sidekick_prometheus::text::{escape_label_value, push_family_header, push_series, push_value};

use crate::prom::{self, is_stale_nan, Family, Kind, Sample, Settings, Translation};
use sidekick_prometheus::exposition;
use sidekick_prometheus::prompb::Histogram;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`.
    Text,
    /// `application/openmetrics-text; version=1.0.0`.
    OpenMetrics,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

struct Entry {
    /// [`prom::Sample::key`].
    key: u64,
    /// The rendered `name{labels}` without the family's name, which every series of the
    /// family starts with (`_bucket{le="1"}`, `{code="200"}`): made once when the series
    /// first arrives.
    text: Arc<str>,
    value: f64,
    timestamp_ms: i64,
    /// When it was last updated: milliseconds since the store was made.
    updated_ms: u64,
    /// An exemplar or a native histogram, which most series have neither of (a thin
    /// pointer: the entry stays 56 bytes).
    extra: Option<Arc<Extra>>,
}

/// What a few series carry besides their value.
enum Extra {
    /// ` # {labels} value timestamp`, for OpenMetrics.
    Exemplar(String),
    /// A native histogram (an exponential one from OTLP), in place of the value.
    Native(Histogram),
}

impl Extra {
    fn native(extra: &Option<Arc<Extra>>) -> Option<&Histogram> {
        match extra.as_deref() {
            Some(Extra::Native(h)) => Some(h),
            _ => None,
        }
    }
}

const _: () = assert!(std::mem::size_of::<Entry>() == 56);

struct FamilyEntry {
    family: Arc<Family>,
    /// The series in the order they first came, `None` where one was removed. Batches
    /// bring a family's series in the same order time after time, so the place after
    /// the last one updated is where the next one usually is: updates read this list in
    /// order instead of hashing into a table at random.
    slots: Vec<Option<Entry>>,
    /// [`prom::Sample::key`] → place in `slots`, for the series the cursor misses.
    index: KeyMap<u32>,
    /// Where the series after the last one updated is expected.
    cursor: usize,
    /// Places in page order (by rendered text); may name removed series.
    order: Vec<u32>,
    /// False once a series was added since `order` was made: the next render sorts.
    ordered: bool,
}

impl FamilyEntry {
    fn new(family: &Family) -> Self {
        FamilyEntry {
            family: Arc::new(family.clone()),
            slots: Vec::new(),
            index: KeyMap::default(),
            cursor: 0,
            order: Vec::new(),
            ordered: true,
        }
    }

    /// The place of series `key`.
    fn find(&self, key: u64) -> Option<usize> {
        match self.slots.get(self.cursor) {
            Some(Some(e)) if e.key == key => Some(self.cursor),
            _ => self.index.get(&key).map(|&at| at as usize),
        }
    }

    fn remove(&mut self, at: usize) {
        if let Some(e) = self.slots[at].take() {
            self.index.remove(&e.key);
        }
        self.compact_if_sparse();
    }

    /// Closes the gaps removed series left once they are most of the list (series
    /// churn would otherwise grow it without end); page order is kept.
    fn compact_if_sparse(&mut self) {
        let live = self.index.len();
        if self.slots.len() < 2 * live + 1024 {
            return;
        }
        let mut moved = vec![u32::MAX; self.slots.len()];
        let mut kept = 0u32;
        let mut slots = Vec::with_capacity(live);
        for (at, slot) in self.slots.drain(..).enumerate() {
            if let Some(e) = slot {
                moved[at] = kept;
                kept += 1;
                slots.push(Some(e));
            }
        }
        self.slots = slots;
        self.index.clear();
        self.index.shrink_to(live);
        for (at, e) in self.slots.iter().enumerate() {
            if let Some(e) = e {
                self.index.insert(e.key, at as u32);
            }
        }
        self.order.retain_mut(|at| {
            *at = moved[*at as usize];
            *at != u32::MAX
        });
        self.cursor = 0;
    }

    /// The series in page order. Sorts only when series were added since the last time:
    /// a page of unchanged series costs no string comparisons.
    fn in_order(&mut self) -> impl Iterator<Item = &Entry> {
        if !self.ordered {
            // Series were added: the list grew by doubling; give back what it will
            // likely not use (a page's series set settles after its first scrapes).
            if self.slots.capacity() > self.slots.len() + self.slots.len() / 4 + 64 {
                self.slots.shrink_to_fit();
            }
            let mut keyed: Vec<(&str, u32)> = self
                .slots
                .iter()
                .enumerate()
                .filter_map(|(at, e)| Some((&*e.as_ref()?.text, at as u32)))
                .collect();
            keyed.sort_unstable();
            self.order = keyed.into_iter().map(|(_, at)| at).collect();
            self.ordered = true;
        } else if self.order.len() > self.index.len() {
            let slots = &self.slots;
            self.order.retain(|&at| slots[at as usize].is_some());
        }
        self.order
            .iter()
            .filter_map(|&at| self.slots[at as usize].as_ref())
    }
}

/// One series as a render needs it.
struct SnapshotSeries {
    /// Its rendered name (without the family's) and labels.
    text: Arc<str>,
    value: f64,
    timestamp_ms: i64,
    extra: Option<Arc<Extra>>,
}

/// What a render needs, copied out under the lock (reference-counted text, no
/// formatting), so rendering itself does not hold up ingestion.
pub struct Snapshot {
    families: Vec<(Arc<Family>, Vec<SnapshotSeries>)>,
    send_timestamps: bool,
}

pub struct Store {
    families: Vec<FamilyEntry>,
    /// Family name → its place in `families`.
    by_name: FastMap<String, usize>,
    /// For the batch being ingested: its family index → the place in `families`
    /// (samples of a family come together; a name is looked up once a batch).
    this_batch: Vec<Option<usize>>,
    expiration: Duration,
    send_timestamps: bool,
    /// What [`Entry::updated_ms`] counts from.
    started: Instant,
}

/// `name{a="1",b="2"}`.
fn series_text(name: &str, labels: &[(String, String)]) -> String {
    let mut out = String::with_capacity(name.len() + labels.len() * 24);
    push_series(
        &mut out,
        name,
        labels.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    );
    out
}

fn exemplar_text(e: &prom::Exemplar) -> Option<String> {
    let mut labels = String::new();
    let mut chars = 0;
    for (i, (k, v)) in e.labels.iter().enumerate() {
        if i > 0 {
            labels.push(',');
        }
        chars += k.chars().count() + v.chars().count();
        labels.push_str(k);
        labels.push_str("=\"");
        escape_label_value(v, &mut labels);
        labels.push('"');
    }
    // OpenMetrics caps an exemplar's label set at 128 characters.
    if chars > 128 {
        return None;
    }
    let mut out = format!(" # {{{labels}}} ");
    push_value(&mut out, e.value);
    let _ = write!(out, " {}", e.timestamp_ms as f64 / 1000.0);
    Some(out)
}

impl Store {
    pub fn new(expiration: Duration, send_timestamps: bool) -> Self {
        Store {
            families: Vec::new(),
            by_name: FastMap::default(),
            this_batch: Vec::new(),
            expiration,
            send_timestamps,
            started: Instant::now(),
        }
    }

    fn ms_since_start(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.started).as_millis() as u64
    }

    pub fn series(&self) -> usize {
        self.families.iter().map(|f| f.index.len()).sum()
    }

    /// Starts a batch: [`Store::ingest`] calls until the next one take family indexes
    /// of the same translation.
    pub fn begin_batch(&mut self) {
        self.this_batch.clear();
    }

    /// Takes the latest samples of a translation; a stale marker removes its series.
    pub fn update(&mut self, t: Translation) {
        let now = Instant::now();
        self.begin_batch();
        for series in &t.series {
            series.as_sample(&t.families[series.family], |s| self.ingest(s, now));
        }
    }

    /// Takes one sample (borrowed: a series already on the page costs a hash and a
    /// lookup, only a new one is rendered); a stale marker removes its series.
    pub fn ingest(&mut self, s: &Sample<'_>, now: Instant) {
        let at = match self.this_batch.get(s.family).copied().flatten() {
            Some(at) => at,
            None => {
                let at = self.family_slot(s.family_def);
                if self.this_batch.len() <= s.family {
                    self.this_batch.resize(s.family + 1, None);
                }
                self.this_batch[s.family] = Some(at);
                at
            }
        };
        let now = self.ms_since_start(now);
        let entry = &mut self.families[at];
        let key = s.key();
        let found = entry.find(key);
        if is_stale_nan(s.value) || s.histogram.is_some_and(|h| is_stale_nan(h.sum)) {
            if let Some(at) = found {
                entry.remove(at);
            }
            return;
        }
        let extra = match s.histogram {
            Some(h) => Some(Arc::new(Extra::Native(h.clone()))),
            None => s
                .exemplar
                .and_then(exemplar_text)
                .map(|x| Arc::new(Extra::Exemplar(x))),
        };
        let at = match found {
            Some(at) => at,
            None => {
                entry.slots.push(Some(Entry {
                    key,
                    text: Arc::from(s.series_text_in_family()),
                    value: s.value,
                    timestamp_ms: s.timestamp_ms,
                    updated_ms: now,
                    extra: None,
                }));
                let at = entry.slots.len() - 1;
                entry.index.insert(key, at as u32);
                entry.ordered = false;
                at
            }
        };
        entry.cursor = at + 1;
        let Some(e) = entry.slots[at].as_mut() else {
            return;
        };
        // Samples older than what the page shows do not move it back.
        if s.timestamp_ms >= e.timestamp_ms {
            e.value = s.value;
            e.timestamp_ms = s.timestamp_ms;
            e.updated_ms = now;
            if extra.is_some() {
                e.extra = extra;
            }
        }
    }

    /// The place of family `f` in `families`: its entry (help brought up to date), or a
    /// new one when it is new or its type changed (a family has one type).
    fn family_slot(&mut self, f: &Family) -> usize {
        if let Some(&at) = self.by_name.get(f.name.as_str()) {
            let entry = &mut self.families[at];
            if entry.family.kind == f.kind {
                if !f.help.is_empty() && entry.family.help != f.help {
                    Arc::make_mut(&mut entry.family).help = f.help.clone();
                }
            } else {
                *entry = FamilyEntry::new(f);
                // The family this batch knew under that name is gone.
                for cached in &mut self.this_batch {
                    if *cached == Some(at) {
                        *cached = None;
                    }
                }
            }
            return at;
        }
        self.families.push(FamilyEntry::new(f));
        self.by_name.insert(f.name.clone(), self.families.len() - 1);
        self.families.len() - 1
    }

    /// Drops series not updated within the expiration. Reads the clock once: on some
    /// virtual machines each read is a system call.
    fn expire(&mut self) {
        let now = self.ms_since_start(Instant::now());
        let Some(cutoff) = now.checked_sub(self.expiration.as_millis() as u64) else {
            return;
        };
        for f in &mut self.families {
            for slot in &mut f.slots {
                if let Some(e) = slot.take_if(|e| e.updated_ms <= cutoff) {
                    f.index.remove(&e.key);
                }
            }
            f.compact_if_sparse();
        }
        let before = self.families.len();
        self.families.retain(|f| !f.index.is_empty());
        if self.families.len() != before {
            self.by_name = self
                .families
                .iter()
                .enumerate()
                .map(|(i, f)| (f.family.name.clone(), i))
                .collect();
            self.this_batch.clear();
        }
    }

    /// Copies out what a render needs (and drops expired series), families by name.
    pub fn snapshot(&mut self) -> Snapshot {
        self.expire();
        let mut families: Vec<&mut FamilyEntry> = self.families.iter_mut().collect();
        families.sort_unstable_by(|a, b| a.family.name.cmp(&b.family.name));
        Snapshot {
            families: families
                .into_iter()
                .map(|f| {
                    let series = f
                        .in_order()
                        .map(|e| SnapshotSeries {
                            text: Arc::clone(&e.text),
                            value: e.value,
                            timestamp_ms: e.timestamp_ms,
                            extra: e.extra.clone(),
                        })
                        .collect();
                    (Arc::clone(&f.family), series)
                })
                .collect(),
            send_timestamps: self.send_timestamps,
        }
    }

    /// The page, with `extra` (e.g. Sidekick's own metrics) after the stored families.
    pub fn render(&mut self, format: Format, extra: Translation) -> String {
        self.snapshot().render(format, extra)
    }
}

impl Snapshot {
    /// The page, with `extra` (e.g. Sidekick's own metrics) after the stored families.
    pub fn render(self, format: Format, extra: Translation) -> String {
        let mut pages = self.pages(format, extra);
        let mut out = String::new();
        while let Some(chunk) = pages.next_chunk(usize::MAX) {
            out.push_str(&chunk);
        }
        out
    }

    /// The page in pieces, written as they are asked for: a scrape of a big page holds
    /// one piece at a time, not the whole text.
    pub fn pages(self, format: Format, extra: Translation) -> Pages {
        let names: Vec<&str> = self.families.iter().map(|(f, _)| f.name.as_str()).collect();
        let mut grouped: BTreeMap<usize, Vec<prom::Series>> = BTreeMap::new();
        for s in extra.series {
            if !names.contains(&extra.families[s.family].name.as_str()) {
                grouped.entry(s.family).or_default().push(s);
            }
        }
        let extra = grouped
            .into_iter()
            .map(|(i, series)| (extra.families[i].clone(), series))
            .collect();
        Pages {
            snapshot: self,
            extra,
            om: format == Format::OpenMetrics,
            family: 0,
            series: 0,
            done: false,
        }
    }
}

/// A page being written piece by piece ([`Snapshot::pages`]).
pub struct Pages {
    snapshot: Snapshot,
    /// Sidekick's own families that the stored ones do not already name.
    extra: Vec<(Family, Vec<prom::Series>)>,
    om: bool,
    /// The family (stored ones first, then `extra`) and series to write next.
    family: usize,
    series: usize,
    done: bool,
}

impl Pages {
    /// About `max` bytes of the page (whole lines), or `None` when it is all written.
    pub fn next_chunk(&mut self, max: usize) -> Option<String> {
        if self.done {
            return None;
        }
        let mut out = String::with_capacity(max.min(1 << 20) + 512);
        let stored = self.snapshot.families.len();
        while out.len() < max {
            if self.family < stored {
                let (family, series) = &self.snapshot.families[self.family];
                if self.series == 0 {
                    header(&mut out, family, self.om);
                }
                match series.get(self.series) {
                    Some(s) => {
                        self.line(&mut out, self.family, s);
                        self.series += 1;
                    }
                    None => (self.family, self.series) = (self.family + 1, 0),
                }
            } else if let Some((family, series)) = self.extra.get(self.family - stored) {
                if self.series == 0 {
                    header(&mut out, family, self.om);
                }
                match series.get(self.series) {
                    Some(s) => {
                        out.push_str(&series_text(&s.name, &s.labels));
                        out.push(' ');
                        push_value(&mut out, s.value);
                        out.push('\n');
                        self.series += 1;
                    }
                    None => (self.family, self.series) = (self.family + 1, 0),
                }
            } else {
                if self.om {
                    out.push_str("# EOF\n");
                }
                self.done = true;
                break;
            }
        }
        Some(out)
    }

    /// One stored series' line (a native histogram's classic lines).
    fn line(&self, out: &mut String, family: usize, s: &SnapshotSeries) {
        let family = &self.snapshot.families[family].0;
        if let Some(h) = Extra::native(&s.extra) {
            return self.classic_lines(out, &family.name, s, h);
        }
        out.push_str(&family.name);
        out.push_str(&s.text);
        self.value(out, s.value, s.timestamp_ms);
        if self.om {
            let exemplar_ok = family.kind == Kind::Counter || s.text.starts_with("_bucket{");
            if let Some(Extra::Exemplar(x)) = s.extra.as_deref().filter(|_| exemplar_ok) {
                out.push_str(x);
            }
        }
        out.push('\n');
    }

    /// ` value[ timestamp]`, without the line's end.
    fn value(&self, out: &mut String, value: f64, timestamp_ms: i64) {
        out.push(' ');
        push_value(out, value);
        if self.snapshot.send_timestamps {
            if self.om {
                let _ = write!(out, " {}", timestamp_ms as f64 / 1000.0);
            } else {
                let _ = write!(out, " {timestamp_ms}");
            }
        }
    }

    /// A native histogram as the text formats show one: classic buckets at powers of two
    /// ([`prom::classic_of_native`]), `_sum` and `_count`.
    fn classic_lines(&self, out: &mut String, name: &str, s: &SnapshotSeries, h: &Histogram) {
        let (bounds, counts) = prom::classic_of_native(h);
        // `{a="1"}` → `{a="1",le="…"}`; no labels → `{le="…"}`.
        let open = s
            .text
            .strip_suffix('}')
            .map(|t| format!("{t},"))
            .unwrap_or_else(|| "{".into());
        let mut cumulative = 0u64;
        let last = bounds.len();
        for (i, c) in counts.iter().enumerate() {
            cumulative += c;
            let _ = write!(out, "{name}_bucket{open}le=\"");
            match bounds.get(i) {
                Some(b) => push_value(out, *b),
                None => out.push_str("+Inf"),
            }
            out.push_str("\"}");
            self.value(out, cumulative as f64, s.timestamp_ms);
            out.push('\n');
            debug_assert!(i <= last);
        }
        let _ = write!(out, "{name}_sum{}", s.text);
        self.value(out, h.sum, s.timestamp_ms);
        out.push('\n');
        let _ = write!(out, "{name}_count{}", s.text);
        self.value(out, cumulative as f64, s.timestamp_ms);
        out.push('\n');
    }
}

impl Iterator for Pages {
    type Item = String;

    /// Pieces of about 64 KiB.
    fn next(&mut self) -> Option<String> {
        self.next_chunk(64 << 10).filter(|c| !c.is_empty())
    }
}

impl Snapshot {
    /// The page in the protobuf exposition, with `extra` after the stored families: what
    /// a scraper asking for `application/vnd.google.protobuf` gets. A family's series
    /// come back together as the format has them: a classic histogram's buckets, sum and
    /// count as one histogram, a summary's quantiles as one summary; native histograms
    /// as they are.
    pub fn protobuf(self, extra: Translation) -> Vec<u8> {
        let mut families: Vec<exposition::MetricFamily> = Vec::new();
        for (family, series) in &self.families {
            let mut out = family_message(family);
            // A histogram's or summary's series by label set (its `le` or `quantile`
            // apart): one metric each.
            let grouped = matches!(family.kind, Kind::Histogram | Kind::Summary);
            let mut index: std::collections::HashMap<Vec<exposition::LabelPair>, usize> =
                Default::default();
            for s in series {
                let (suffix, inner) = match s.text.find('{') {
                    Some(at) => (&s.text[..at], &s.text[at + 1..s.text.len() - 1]),
                    None => (&*s.text, ""),
                };
                let mut labels: Vec<exposition::LabelPair> = Vec::new();
                let mut le = None;
                let mut quantile = None;
                for (k, v) in sidekick_prometheus::parse::Labels::Text(inner).iter() {
                    match k {
                        "le" if suffix == "_bucket" => {
                            le = sidekick_prometheus::parse::parse_value(&v)
                        }
                        "quantile" if family.kind == Kind::Summary => {
                            quantile = sidekick_prometheus::parse::parse_value(&v)
                        }
                        _ => labels.push(exposition::LabelPair {
                            name: k.to_string(),
                            value: v.into_owned(),
                        }),
                    }
                }
                let timestamp_ms = if self.send_timestamps {
                    s.timestamp_ms
                } else {
                    0
                };
                let known = grouped.then(|| index.get(&labels).copied()).flatten();
                let at = match known {
                    Some(at) => at,
                    None => {
                        if grouped {
                            index.insert(labels.clone(), out.metric.len());
                        }
                        out.metric.push(exposition::Metric {
                            label: labels,
                            timestamp_ms,
                            ..Default::default()
                        });
                        out.metric.len() - 1
                    }
                };
                fill(&mut out.metric[at], family.kind, suffix, le, quantile, s);
            }
            families.push(out);
        }
        let stored: Vec<String> = families.iter().map(|f| f.name.clone()).collect();
        let mut by_family: BTreeMap<usize, exposition::MetricFamily> = BTreeMap::new();
        for s in &extra.series {
            let family = &extra.families[s.family];
            if stored.contains(&family.name) {
                continue;
            }
            let out = by_family
                .entry(s.family)
                .or_insert_with(|| family_message(family));
            let mut metric = exposition::Metric {
                label: s
                    .labels
                    .iter()
                    .map(|(name, value)| exposition::LabelPair {
                        name: name.clone(),
                        value: value.clone(),
                    })
                    .collect(),
                ..Default::default()
            };
            let value = exposition::Value { value: s.value };
            match family.kind {
                Kind::Counter => {
                    metric.counter = Some(exposition::Counter {
                        value: s.value,
                        ..Default::default()
                    })
                }
                _ => metric.gauge = Some(value),
            }
            out.metric.push(metric);
        }
        families.extend(by_family.into_values());
        exposition::encode(&families)
    }
}

/// A family's message without its metrics.
fn family_message(f: &Family) -> exposition::MetricFamily {
    exposition::MetricFamily {
        name: f.name.clone(),
        help: f.help.clone(),
        r#type: match f.kind {
            Kind::Counter => exposition::MetricType::Counter,
            Kind::Gauge => exposition::MetricType::Gauge,
            Kind::Histogram => exposition::MetricType::Histogram,
            Kind::Summary => exposition::MetricType::Summary,
        } as i32,
        metric: Vec::new(),
        unit: String::new(),
    }
}

/// Puts one stored series into its protobuf metric: the value, or its part of a
/// histogram or summary.
fn fill(
    m: &mut exposition::Metric,
    kind: Kind,
    suffix: &str,
    le: Option<f64>,
    quantile: Option<f64>,
    s: &SnapshotSeries,
) {
    match kind {
        Kind::Counter => {
            m.counter = Some(exposition::Counter {
                value: s.value,
                ..Default::default()
            })
        }
        Kind::Gauge => m.gauge = Some(exposition::Value { value: s.value }),
        Kind::Histogram => {
            let h = m.histogram.get_or_insert_with(Default::default);
            if let Some(n) = Extra::native(&s.extra) {
                h.sample_count = n.count_int;
                h.sample_sum = n.sum;
                h.schema = n.schema;
                h.zero_threshold = n.zero_threshold;
                h.zero_count = n.zero_count_int;
                h.negative_span = n.negative_spans.clone();
                h.negative_delta = n.negative_deltas.clone();
                h.positive_span = n.positive_spans.clone();
                h.positive_delta = n.positive_deltas.clone();
                // The format's mark of a native histogram with no bucket yet.
                if h.positive_span.is_empty() && h.negative_span.is_empty() {
                    h.positive_span.push(exposition::BucketSpan {
                        offset: 0,
                        length: 0,
                    });
                }
                return;
            }
            match (suffix, le) {
                ("_bucket", Some(le)) if le != f64::INFINITY => {
                    h.bucket.push(exposition::Bucket {
                        cumulative_count: s.value.max(0.0) as u64,
                        upper_bound: le,
                        ..Default::default()
                    });
                    h.bucket
                        .sort_by(|a, b| a.upper_bound.total_cmp(&b.upper_bound));
                }
                ("_sum", _) => h.sample_sum = s.value,
                ("_count", _) => h.sample_count = s.value.max(0.0) as u64,
                _ => {}
            }
        }
        Kind::Summary => {
            let q = m.summary.get_or_insert_with(Default::default);
            match (suffix, quantile) {
                ("", Some(quantile)) => q.quantile.push(exposition::Quantile {
                    quantile,
                    value: s.value,
                }),
                ("_sum", _) => q.sample_sum = s.value,
                ("_count", _) => q.sample_count = s.value.max(0.0) as u64,
                _ => {}
            }
        }
    }
}

fn header(out: &mut String, f: &Family, om: bool) {
    let name = if om && f.kind == Kind::Counter {
        f.name.strip_suffix("_total").unwrap_or(&f.name)
    } else {
        f.name.as_str()
    };
    // Linters (promtool) want help on every family; a metric without a description
    // gets its own name.
    let help = if f.help.is_empty() {
        name
    } else {
        f.help.as_str()
    };
    let unit = if name.ends_with(&format!("_{}", f.unit)) {
        f.unit.as_str()
    } else {
        ""
    };
    push_family_header(out, name, help, f.kind.as_str(), unit, om);
}

/// Sidekick's own metrics as series, under exactly the names the admin endpoint's
/// `/metrics` (`:8888`) shows: [`sidekick_collector::telemetry::prometheus_name`], so
/// counters end in `_total` and gauges keep their name, whatever this exporter's
/// `namespace`, `const_labels` or `translation_strategy` (those apply to the pipeline's
/// metrics, not to Sidekick's own). The telemetry's constant labels come with each series.
pub fn self_metrics(telemetry: &Telemetry, _settings: &Settings) -> Translation {
    let mut t = Translation::default();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    for f in telemetry.snapshot() {
        let kind = if f.counter {
            Kind::Counter
        } else {
            Kind::Gauge
        };
        let name = f.prometheus_name();
        t.families.push(Family {
            name: name.clone(),
            kind,
            help: f.help.to_string(),
            unit: String::new(),
        });
        let family = t.families.len() - 1;
        for (labels, value) in f.series {
            let mut labels: Vec<(String, String)> = labels
                .into_iter()
                .map(|(k, v)| (prom::label_name(&k), v))
                .collect();
            labels.sort();
            t.series.push(prom::Series {
                family,
                name: name.clone(),
                labels,
                value,
                timestamp_ms: now,
                exemplar: None,
            });
        }
    }
    t
}
