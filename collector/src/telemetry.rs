//! Sidekick's own metrics, rendered in the Prometheus text format under the
//! OpenTelemetry Collector's names so existing dashboards work unchanged.
//!
//! Components register a family under its OpenTelemetry name, without a suffix
//! (`otelcol_receiver_accepted_spans`); the page shows it the way the Collector's Prometheus
//! endpoint does: counters end in `_total` (`otelcol_receiver_accepted_spans_total`,
//! `otelcol_process_uptime_total`), gauges keep the plain name
//! (`otelcol_exporter_queue_size`, `otelcol_process_memory_rss`), no unit suffixes. The
//! `# HELP` and `# TYPE` lines name the family as its samples are named (`_total`
//! included), which is what `promtool check metrics` accepts. [`prometheus_name`] is that
//! one naming; the `prometheus` exporter's `include_self_metrics` page uses it too.
//!
//! Components register their series at build time and get cheap atomic handles; the hot
//! path only does relaxed atomic adds. This module is the registry alone: the handles and
//! log-burst limiting are `sidekick-core`'s, the count of dropped data is the service's
//! [`Account`](crate::base::Account), a listener's metrics are wired in
//! [`listener`](crate::listener), and the page is written with `sidekick-prometheus`.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub use sidekick_core::log::LogBurst;
pub use sidekick_core::metrics::{Counter, Gauge};
use sidekick_prometheus::{names, text};

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
    pairs: Vec<(String, String)>,
    source: Source,
}

/// One self-metric family's current values, for exporters that render them themselves.
#[derive(Debug, Clone, PartialEq)]
pub struct FamilySnapshot {
    /// The registered (OpenTelemetry) name, without `_total`.
    pub name: String,
    pub help: &'static str,
    pub counter: bool,
    /// Each series' labels (the constant labels first, then its own, as on the page) and
    /// value.
    pub series: Vec<(Vec<(String, String)>, f64)>,
}

impl FamilySnapshot {
    /// The name on a Prometheus page: see [`prometheus_name`].
    pub fn prometheus_name(&self) -> String {
        prometheus_name(&self.name, self.counter)
    }
}

/// The Prometheus name of a self-metric family registered as `name`: counters get `_total`
/// (unless they already end in it), gauges stay as they are. No unit suffixes, as on the
/// Collector's `:8888` page.
pub fn prometheus_name(name: &str, counter: bool) -> String {
    if counter && !name.ends_with("_total") {
        format!("{name}_total")
    } else {
        name.to_string()
    }
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
    /// What the pipelines hold, in bytes and items; lost holds count as dropped.
    account: Arc<crate::base::Account>,
    /// Labels on every series, sorted by name (see [`Telemetry::set_const_labels`]).
    const_labels: Mutex<Vec<(String, String)>>,
}

impl Series {
    fn has_labels(&self, labels: &[(&str, &str)]) -> bool {
        self.pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .eq(labels.iter().copied())
    }
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
                account: Arc::new(crate::base::Account::default()),
                const_labels: Mutex::new(Vec::new()),
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

    /// Takes over `old`'s counters, and the gauges whose labels `keep_gauge` accepts,
    /// before the components of a reloaded config register theirs: one that registers
    /// the same series continues it rather than starting again at 0, so a reload is no
    /// counter reset to whoever scrapes Sidekick. Gauges are levels a component sets
    /// for itself, so only those of components that keep running (receivers a reload
    /// left as they were) come along; computed series are registered anew.
    pub fn carry_over(&self, old: &Telemetry, keep_gauge: impl Fn(&[(String, String)]) -> bool) {
        let families = old.inner.families.lock().unwrap_or_else(|p| p.into_inner());
        for family in families.iter() {
            for series in &family.series {
                let source = match &series.source {
                    Source::Count(c) => Source::Count(Arc::clone(c)),
                    Source::Level(l) if keep_gauge(&series.pairs) => Source::Level(Arc::clone(l)),
                    _ => continue,
                };
                let labels: Vec<(&str, &str)> = series
                    .pairs
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                self.register(&family.name, family.help, family.kind, &labels, source);
            }
        }
    }

    /// A counter series; registering the same name and labels again returns the same one.
    pub fn counter(&self, name: &str, help: &'static str, labels: &[(&str, &str)]) -> Counter {
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
                .find(|s| s.has_labels(labels))
            {
                if let Source::Count(c) = &existing.source {
                    return Counter::shared(Arc::clone(c));
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
        Counter::shared(value)
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
        Gauge::shared(value)
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

    /// The account every queue of this service counts its data in.
    pub fn account(&self) -> &Arc<crate::base::Account> {
        &self.inner.account
    }

    /// Labels put on every series when rendered (and in [`Telemetry::snapshot`]), before
    /// each series' own labels; e.g. `service.telemetry.resource` as the Collector does.
    /// Names should already be valid Prometheus label names (anything else becomes `_`);
    /// the labels are sorted by name, a repeated name keeps its first value, and a series
    /// that has a label of the same name keeps its own. Replaces the previous set.
    pub fn set_const_labels(&self, labels: Vec<(String, String)>) {
        let mut labels: Vec<(String, String)> = labels
            .into_iter()
            .map(|(k, v)| (names::label_name(&k), v))
            .collect();
        labels.sort_by(|a, b| a.0.cmp(&b.0));
        labels.dedup_by(|later, first| later.0 == first.0);
        *self
            .inner
            .const_labels
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = labels;
    }

    /// The constant labels, sorted by name.
    pub fn const_labels(&self) -> Vec<(String, String)> {
        self.inner
            .const_labels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Every family's current values, with the constant labels on each series.
    pub fn snapshot(&self) -> Vec<FamilySnapshot> {
        let consts = self.const_labels();
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
                    .map(|s| {
                        let mut pairs: Vec<(String, String)> = consts
                            .iter()
                            .filter(|(k, _)| !s.pairs.iter().any(|(sk, _)| sk == k))
                            .cloned()
                            .collect();
                        pairs.extend(s.pairs.iter().cloned());
                        (pairs, read(&s.source))
                    })
                    .collect(),
            })
            .collect()
    }

    /// The Prometheus text exposition (format 0.0.4), under the names
    /// [`prometheus_name`] gives.
    pub fn render(&self) -> String {
        let consts = self.const_labels();
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
            let name = prometheus_name(&f.name, f.kind == Kind::Counter);
            text::push_family_header(&mut out, &name, f.help, kind, "", false);
            for s in &f.series {
                // The constant labels first, less any the series sets itself.
                let labels = consts
                    .iter()
                    .filter(|(k, _)| !s.pairs.iter().any(|(sk, _)| sk == k))
                    .chain(&s.pairs)
                    .map(|(k, v)| (k.as_str(), v.as_str()));
                text::push_series(&mut out, &name, labels);
                out.push(' ');
                text::push_value(&mut out, read(&s.source));
                out.push('\n');
            }
        }
        out
    }

    fn register_process_metrics(&self) {
        // The process's uptime: a config reload makes a new registry, not a new process.
        static STARTED: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        let started = *STARTED.get_or_init(Instant::now);
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
            || sidekick_core::process::rss_bytes().unwrap_or(0) as f64,
        );
        self.counter_fn(
            "otelcol_process_cpu_seconds",
            "Total CPU user and system time in seconds.",
            &[],
            || sidekick_core::process::cpu_seconds().unwrap_or(0.0),
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

#[cfg(test)]
mod tests {
    use super::*;

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
        // Counters carry `_total` on the HELP, TYPE and sample lines alike.
        assert!(text.contains("# HELP otelcol_receiver_accepted_spans_total Spans accepted.\n"));
        assert!(text.contains("# TYPE otelcol_receiver_accepted_spans_total counter\n"));
        assert!(text.contains(
            "otelcol_receiver_accepted_spans_total{receiver=\"otlp\",transport=\"grpc\"} 5\n"
        ));
        assert_eq!(
            text.matches("otelcol_receiver_accepted_spans_total{")
                .count(),
            1
        );
        assert!(!text.contains("otelcol_receiver_accepted_spans{"));
        assert!(!text.contains("otelcol_receiver_accepted_spans counter"));
        // Gauges do not.
        assert!(text.contains("# TYPE otelcol_exporter_queue_size gauge\n"));
        assert!(text.contains("otelcol_exporter_queue_size{exporter=\"a\\\"b\"} 7\n"));
        // The process metrics, as the Collector names them.
        assert!(text.contains("# TYPE otelcol_process_uptime_total counter\n"));
        assert!(text.contains("\notelcol_process_uptime_total "));
        assert!(text.contains("# TYPE otelcol_process_cpu_seconds_total counter\n"));
        assert!(text.contains("\notelcol_process_cpu_seconds_total "));
        assert!(text.contains("# TYPE otelcol_process_memory_rss gauge\n"));
        assert!(text.contains("\notelcol_process_memory_rss "));
        assert!(!text.contains("otelcol_process_memory_rss_total"));
    }

    #[test]
    fn names_get_total_once_and_only_for_counters() {
        assert_eq!(prometheus_name("a_b", true), "a_b_total");
        assert_eq!(prometheus_name("a_total", true), "a_total");
        assert_eq!(prometheus_name("a_b", false), "a_b");
        assert_eq!(prometheus_name("a_total", false), "a_total");
    }

    /// Every family and series name on the page is the one the snapshot (which the
    /// `prometheus` exporter renders) reports, so the two pages cannot drift apart.
    #[test]
    fn snapshot_names_match_the_page() {
        let t = Telemetry::new();
        t.counter("sidekick_scrape_failures", "Failures.", &[("job", "j")])
            .add(1);
        t.gauge("otelcol_exporter_queue_capacity", "Capacity.", &[])
            .set(10);
        t.set_const_labels(vec![("service_name".into(), "sidekick".into())]);
        let text = t.render();
        for f in t.snapshot() {
            let name = f.prometheus_name();
            let kind = if f.counter { "counter" } else { "gauge" };
            assert!(
                text.contains(&format!("# TYPE {name} {kind}\n")),
                "{name}\n{text}"
            );
            for (labels, _) in &f.series {
                let rendered: Vec<String> = labels
                    .iter()
                    .map(|(k, v)| {
                        let mut s = format!("{k}=\"");
                        text::escape_label_value(v, &mut s);
                        s + "\""
                    })
                    .collect();
                let series = format!("{name}{{{}}} ", rendered.join(","));
                assert!(text.contains(&series), "{series}\n{text}");
            }
        }
    }

    #[test]
    fn const_labels_go_first_on_every_series() {
        let t = Telemetry::new();
        t.counter(
            "otelcol_exporter_sent_spans",
            "Sent.",
            &[("exporter", "otlp")],
        )
        .add(4);
        t.counter(
            "sidekick_scrape_failures",
            "Failures.",
            &[("receiver", "prometheus"), ("service_name", "own")],
        )
        .add(1);
        t.set_const_labels(vec![
            ("service_name".into(), "sidekick".into()),
            ("k8s_pod_name".into(), "p\"1\n".into()),
            ("service_name".into(), "ignored".into()),
            ("bad.name".into(), "x".into()),
        ]);
        assert_eq!(
            t.const_labels(),
            vec![
                ("bad_name".to_string(), "x".to_string()),
                ("k8s_pod_name".to_string(), "p\"1\n".to_string()),
                ("service_name".to_string(), "sidekick".to_string()),
            ]
        );
        let text = t.render();
        let consts = "bad_name=\"x\",k8s_pod_name=\"p\\\"1\\n\",service_name=\"sidekick\"";
        assert!(
            text.contains(&format!(
                "otelcol_exporter_sent_spans_total{{{consts},exporter=\"otlp\"}} 4\n"
            )),
            "{text}"
        );
        // Series without labels of their own get the constant ones alone.
        assert!(text.contains(&format!("otelcol_process_memory_rss{{{consts}}} ")));
        // A series' own label wins over a constant one of the same name.
        assert!(text.contains(
            "sidekick_scrape_failures_total{bad_name=\"x\",k8s_pod_name=\"p\\\"1\\n\",\
             receiver=\"prometheus\",service_name=\"own\"} 1\n"
        ));
        let failures = t
            .snapshot()
            .into_iter()
            .find(|f| f.name == "sidekick_scrape_failures")
            .unwrap();
        assert_eq!(
            failures.series[0].0,
            vec![
                ("bad_name".to_string(), "x".to_string()),
                ("k8s_pod_name".to_string(), "p\"1\n".to_string()),
                ("receiver".to_string(), "prometheus".to_string()),
                ("service_name".to_string(), "own".to_string()),
            ]
        );
        // Replacing the set replaces it; an empty set removes them.
        t.set_const_labels(Vec::new());
        assert!(t
            .render()
            .contains("otelcol_exporter_sent_spans_total{exporter=\"otlp\"} 4\n"));
    }
}
