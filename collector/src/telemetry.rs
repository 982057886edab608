//! Sidekick's own metrics, rendered in the Prometheus text format under the
//! OpenTelemetry Collector's names (`otelcol_receiver_accepted_spans`, …) so existing
//! dashboards work unchanged.
//!
//! Components register their series at build time and get cheap atomic handles; the hot
//! path only does relaxed atomic adds.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Counter,
    Gauge,
}

enum Source {
    Count(Arc<AtomicU64>),
    Level(Arc<AtomicI64>),
    Func(Box<dyn Fn() -> f64 + Send + Sync>),
}

struct Series {
    labels: String,
    pairs: Vec<(String, String)>,
    source: Source,
}

/// One self-metric family's current values, for exporters that render them themselves.
#[derive(Debug, Clone, PartialEq)]
pub struct FamilySnapshot {
    pub name: String,
    pub help: &'static str,
    pub counter: bool,
    pub series: Vec<(Vec<(String, String)>, f64)>,
}

struct Family {
    name: String,
    help: &'static str,
    kind: Kind,
    series: Vec<Series>,
}

/// The registry of self-metrics. Cheap to clone.
#[derive(Clone)]
pub struct Telemetry {
    inner: Arc<Inner>,
}

struct Inner {
    families: Mutex<Vec<Family>>,
    dropped: Arc<AtomicU64>,
}

/// A monotonically increasing count.
#[derive(Clone, Debug, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Clone, Debug, Default)]
pub struct Gauge(Arc<AtomicI64>);

impl Gauge {
    pub fn add(&self, n: i64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn set(&self, n: i64) {
        self.0.store(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Escapes a label value for the text format.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn render_labels(labels: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{k}=\"{}\"", escape(v));
    }
    out
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    pub fn new() -> Self {
        let t = Telemetry {
            inner: Arc::new(Inner {
                families: Mutex::new(Vec::new()),
                dropped: Arc::new(AtomicU64::new(0)),
            }),
        };
        t.register_process_metrics();
        t
    }

    fn register(
        &self,
        name: &str,
        help: &'static str,
        kind: Kind,
        labels: &[(&str, &str)],
        source: Source,
    ) {
        let mut families = self
            .inner
            .families
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let series = Series {
            labels: render_labels(labels),
            pairs: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            source,
        };
        match families.iter_mut().find(|f| f.name == name) {
            Some(f) => {
                debug_assert_eq!(f.kind, kind, "{name} registered with two types");
                f.series.push(series);
            }
            None => families.push(Family {
                name: name.to_string(),
                help,
                kind,
                series: vec![series],
            }),
        }
    }

    /// A counter series; registering the same name and labels again returns the same one.
    pub fn counter(&self, name: &str, help: &'static str, labels: &[(&str, &str)]) -> Counter {
        let rendered = render_labels(labels);
        {
            let families = self
                .inner
                .families
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(existing) = families
                .iter()
                .filter(|f| f.name == name)
                .flat_map(|f| &f.series)
                .find(|s| s.labels == rendered)
            {
                if let Source::Count(c) = &existing.source {
                    return Counter(Arc::clone(c));
                }
            }
        }
        let value = Arc::new(AtomicU64::new(0));
        self.register(
            name,
            help,
            Kind::Counter,
            labels,
            Source::Count(Arc::clone(&value)),
        );
        Counter(value)
    }

    pub fn gauge(&self, name: &str, help: &'static str, labels: &[(&str, &str)]) -> Gauge {
        let value = Arc::new(AtomicI64::new(0));
        self.register(
            name,
            help,
            Kind::Gauge,
            labels,
            Source::Level(Arc::clone(&value)),
        );
        Gauge(value)
    }

    /// A gauge computed when rendered.
    pub fn gauge_fn(
        &self,
        name: &str,
        help: &'static str,
        labels: &[(&str, &str)],
        f: impl Fn() -> f64 + Send + Sync + 'static,
    ) {
        self.register(name, help, Kind::Gauge, labels, Source::Func(Box::new(f)));
    }

    /// A counter computed when rendered.
    pub fn counter_fn(
        &self,
        name: &str,
        help: &'static str,
        labels: &[(&str, &str)],
        f: impl Fn() -> f64 + Send + Sync + 'static,
    ) {
        self.register(name, help, Kind::Counter, labels, Source::Func(Box::new(f)));
    }

    /// Records items that were accepted but will never reach a backend. Every drop path
    /// calls this besides its own counter, so the exit code can say whether data was lost.
    pub fn record_dropped(&self, n: u64) {
        self.inner.dropped.fetch_add(n, Ordering::Relaxed);
    }

    /// Items dropped since start, over all components.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Every family's current values.
    pub fn snapshot(&self) -> Vec<FamilySnapshot> {
        let families = self
            .inner
            .families
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        families
            .iter()
            .map(|f| FamilySnapshot {
                name: f.name.clone(),
                help: f.help,
                counter: f.kind == Kind::Counter,
                series: f
                    .series
                    .iter()
                    .map(|s| (s.pairs.clone(), read(&s.source)))
                    .collect(),
            })
            .collect()
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let families = self
            .inner
            .families
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut out = String::with_capacity(4096);
        for f in families.iter() {
            let kind = match f.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
            };
            let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
            let _ = writeln!(out, "# TYPE {} {kind}", f.name);
            for s in &f.series {
                let value = read(&s.source);
                if s.labels.is_empty() {
                    let _ = writeln!(out, "{} {}", f.name, value);
                } else {
                    let _ = writeln!(out, "{}{{{}}} {}", f.name, s.labels, value);
                }
            }
        }
        out
    }

    fn register_process_metrics(&self) {
        let started = Instant::now();
        self.counter_fn(
            "otelcol_process_uptime",
            "Uptime of the process in seconds.",
            &[],
            move || started.elapsed().as_secs_f64(),
        );
        self.gauge_fn(
            "otelcol_process_memory_rss",
            "Total physical memory (resident set size) in bytes.",
            &[],
            || process_rss_bytes().unwrap_or(0) as f64,
        );
        self.counter_fn(
            "otelcol_process_cpu_seconds",
            "Total CPU user and system time in seconds.",
            &[],
            || process_cpu_seconds().unwrap_or(0.0),
        );
    }
}

fn read(source: &Source) -> f64 {
    match source {
        Source::Count(c) => c.load(Ordering::Relaxed) as f64,
        Source::Level(g) => g.load(Ordering::Relaxed) as f64,
        Source::Func(func) => func(),
    }
}

/// Lets a repeated log line through at most once per interval, counting the ones it held
/// back, so a backend that rejects every batch produces one line per burst, not a flood.
pub struct LogBurst {
    every: std::time::Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl LogBurst {
    pub fn new(every: std::time::Duration) -> Self {
        LogBurst {
            every,
            state: Mutex::new((None, 0)),
        }
    }

    /// `Some(held_back)` when this occurrence should be logged; `None` to stay quiet.
    pub fn check(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match state.0 {
            Some(last) if now.duration_since(last) < self.every => {
                state.1 += 1;
                None
            }
            _ => {
                let held = state.1;
                *state = (Some(now), 0);
                Some(held)
            }
        }
    }
}

/// Resident set size from `/proc/self/status` (Linux only; `None` elsewhere).
pub fn process_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// User + system CPU time from `/proc/self/stat`, assuming the usual 100 ticks/s.
pub fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may contain spaces) start after ") ".
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_bursts_are_collapsed() {
        let burst = LogBurst::new(std::time::Duration::from_secs(3600));
        assert_eq!(burst.check(), Some(0));
        assert_eq!(burst.check(), None);
        assert_eq!(burst.check(), None);
        let quick = LogBurst::new(std::time::Duration::ZERO);
        assert_eq!(quick.check(), Some(0));
        assert_eq!(quick.check(), Some(0));
    }

    #[test]
    fn renders_text_format() {
        let t = Telemetry::new();
        let c = t.counter(
            "otelcol_receiver_accepted_spans",
            "Spans accepted.",
            &[("receiver", "otlp"), ("transport", "grpc")],
        );
        c.add(3);
        t.counter(
            "otelcol_receiver_accepted_spans",
            "Spans accepted.",
            &[("receiver", "otlp"), ("transport", "grpc")],
        )
        .add(2);
        let g = t.gauge(
            "otelcol_exporter_queue_size",
            "Queue size.",
            &[("exporter", "a\"b")],
        );
        g.set(7);
        let text = t.render();
        assert!(text.contains("# TYPE otelcol_receiver_accepted_spans counter\n"));
        assert!(text
            .contains("otelcol_receiver_accepted_spans{receiver=\"otlp\",transport=\"grpc\"} 5\n"));
        assert!(text.contains("otelcol_exporter_queue_size{exporter=\"a\\\"b\"} 7\n"));
        assert!(text.contains("otelcol_process_memory_rss "));
        assert_eq!(text.matches("otelcol_receiver_accepted_spans{").count(), 1);
    }
}
