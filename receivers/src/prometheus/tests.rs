use std::collections::HashMap;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValueKind;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point, Metric, NumberDataPoint,
};
use sidekick_collector::component::ReceiverConfig;
use sidekick_collector::config::{from_node, node};

use sidekick_collector::telemetry::Telemetry;

use super::config::parse_prom_duration;
use super::series::{Tracker, NO_RECORDED_VALUE};
use super::translate::{all_stale, translate, Options, PageError, Target, Translated};
use super::*;
use sidekick_prometheus::parse::Format;
use sidekick_prometheus::relabel::{self, RuleConfig};

const T0: i64 = 1_700_000_000_000;

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/../prometheus/testdata/prometheus/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn target() -> Target {
    Target {
        job: "app".into(),
        instance: "10.1.2.3:8080".into(),
        scheme: "http".into(),
        labels: vec![
            ("instance".into(), "10.1.2.3:8080".into()),
            ("job".into(), "app".into()),
            ("team".into(), "checkout".into()),
        ],
    }
}

fn opts() -> Options<'static> {
    Options::default()
}

fn run(text: &str, format: Format, time: i64, tracker: &mut Tracker) -> Translated {
    translate(text, format, time, &target(), &opts(), tracker)
        .unwrap()
        .attached()
}

fn metrics(r: &ExportMetricsServiceRequest) -> Vec<&Metric> {
    r.resource_metrics
        .iter()
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| &sm.metrics)
        .collect()
}

fn find<'a>(r: &'a ExportMetricsServiceRequest, name: &str) -> &'a Metric {
    metrics(r)
        .into_iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("no metric {name}"))
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            AnyValueKind::StringValue(s) => Some(s.as_str()),
            _ => None,
        }
    })
}

fn number_points(m: &Metric) -> &[NumberDataPoint] {
    match &m.data {
        Some(Data::Gauge(g)) => &g.data_points,
        Some(Data::Sum(s)) => &s.data_points,
        other => panic!("{} is not a number metric: {other:?}", m.name),
    }
}

fn value(p: &NumberDataPoint) -> f64 {
    match p.value {
        Some(number_data_point::Value::AsDouble(v)) => v,
        Some(number_data_point::Value::AsInt(v)) => v as f64,
        None => f64::NAN,
    }
}

#[test]
fn node_exporter_page_translates() {
    let mut tracker = Tracker::new(100_000);
    let out = run(
        &fixture("node_exporter.prom"),
        Format::Prometheus,
        T0,
        &mut tracker,
    );
    let r = &out.request;
    let res = r.resource_metrics[0].resource.as_ref().unwrap();
    assert_eq!(attr(&res.attributes, "service.name"), Some("app"));
    assert_eq!(
        attr(&res.attributes, "service.instance.id"),
        Some("10.1.2.3:8080")
    );
    assert_eq!(attr(&res.attributes, "server.address"), Some("10.1.2.3"));
    assert_eq!(attr(&res.attributes, "server.port"), Some("8080"));
    assert_eq!(attr(&res.attributes, "url.scheme"), Some("http"));

    // A counter: monotonic cumulative sum, name kept, start = time on first sight.
    let cpu = find(r, "node_cpu_seconds_total");
    let Some(Data::Sum(sum)) = &cpu.data else {
        panic!("counter is not a sum")
    };
    assert!(sum.is_monotonic);
    assert_eq!(sum.aggregation_temporality, 2);
    assert_eq!(cpu.unit, "s");
    let p = &sum.data_points[0];
    assert_eq!(attr(&p.attributes, "cpu"), Some("0"));
    assert_eq!(attr(&p.attributes, "team"), Some("checkout"));
    assert_eq!(
        attr(&p.attributes, "job"),
        None,
        "job lives on the resource"
    );
    assert_eq!(p.start_time_unix_nano, p.time_unix_nano);
    assert_eq!(p.time_unix_nano, T0 as u64 * 1_000_000);
    assert_eq!(attr(&cpu.metadata, "prometheus.type"), Some("counter"));

    // A gauge with a unit suffix.
    let mem = find(r, "node_memory_MemTotal_bytes");
    assert!(matches!(mem.data, Some(Data::Gauge(_))));
    assert_eq!(mem.unit, "By");
    assert!(value(&number_points(mem)[0]) > 0.0);

    // A summary with its quantiles, count and sum.
    let gc = find(r, "go_gc_duration_seconds");
    let Some(Data::Summary(s)) = &gc.data else {
        panic!("not a summary")
    };
    let p = &s.data_points[0];
    assert_eq!(
        p.quantile_values
            .iter()
            .map(|q| q.quantile)
            .collect::<Vec<_>>(),
        vec![0.0, 0.25, 0.5, 0.75, 1.0]
    );
    assert_eq!(p.count, 0, "as on the page");
    assert_eq!(
        gc.description,
        "A summary of the pause duration of garbage collection cycles."
    );

    // Every sample went somewhere.
    assert_eq!(out.samples_scraped, out.samples_post_relabel);
    assert_eq!(out.series_added, tracker_points(r));
}

fn tracker_points(r: &ExportMetricsServiceRequest) -> usize {
    metrics(r)
        .iter()
        .map(|m| match &m.data {
            Some(Data::Gauge(g)) => g.data_points.len(),
            Some(Data::Sum(s)) => s.data_points.len(),
            Some(Data::Histogram(h)) => h.data_points.len(),
            Some(Data::Summary(s)) => s.data_points.len(),
            _ => 0,
        })
        .sum()
}

#[test]
fn prometheus_server_page_histogram() {
    let mut tracker = Tracker::new(100_000);
    let out = run(
        &fixture("prometheus.prom"),
        Format::Prometheus,
        T0,
        &mut tracker,
    );
    let h = find(&out.request, "prometheus_http_request_duration_seconds");
    let Some(Data::Histogram(h)) = &h.data else {
        panic!("not a histogram")
    };
    let p = h
        .data_points
        .iter()
        .find(|p| attr(&p.attributes, "handler") == Some("/metrics"))
        .expect("a /metrics handler series");
    // Buckets de-cumulated, +Inf dropped from the bounds, counts sum to the count.
    assert_eq!(p.bucket_counts.len(), p.explicit_bounds.len() + 1);
    assert!(!p.explicit_bounds.iter().any(|b| b.is_infinite()));
    assert!(p.explicit_bounds.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(p.bucket_counts.iter().sum::<u64>(), p.count);
    assert!(p.count >= 1);
    assert!(p.sum.is_some());
    assert_eq!(attr(&p.attributes, "le"), None);
}

#[test]
fn openmetrics_page_translates() {
    let mut tracker = Tracker::new(100);
    let out = run(
        &fixture("openmetrics.txt"),
        Format::OpenMetrics,
        T0,
        &mut tracker,
    );
    let r = &out.request;

    // Counter: named by its series, start from _created, exemplar with ids.
    let c = find(r, "http_requests_total");
    let Some(Data::Sum(sum)) = &c.data else {
        panic!()
    };
    assert_eq!(c.description, "Requests served.");
    let get = sum
        .data_points
        .iter()
        .find(|p| attr(&p.attributes, "method") == Some("GET"))
        .unwrap();
    assert_eq!(value(get), 1027.0);
    assert_eq!(get.start_time_unix_nano, 1_699_999_000_250_000_000);
    let e = &get.exemplars[0];
    assert_eq!(e.trace_id, hex("5b8efff798038103d269b633813fc60c"));
    assert_eq!(e.span_id, hex("eee19b7ec3c1b174"));
    assert_eq!(e.time_unix_nano, 1_700_000_000_500_000_000);
    assert_eq!(attr(&e.filtered_attributes, "user"), Some("a\"b"));
    let post = sum
        .data_points
        .iter()
        .find(|p| attr(&p.attributes, "method") == Some("POST"))
        .unwrap();
    assert_eq!(
        post.start_time_unix_nano, post.time_unix_nano,
        "no _created: first sight"
    );

    // Histogram with UNIT, exemplar on a bucket, start from _created.
    let h = find(r, "request_duration_seconds");
    assert_eq!(h.unit, "s");
    let Some(Data::Histogram(hist)) = &h.data else {
        panic!()
    };
    let p = &hist.data_points[0];
    assert_eq!(p.explicit_bounds, vec![0.1, 0.5]);
    assert_eq!(p.bucket_counts, vec![5, 3, 2]);
    assert_eq!((p.count, p.sum), (10, Some(4.5)));
    assert_eq!(p.start_time_unix_nano, 1_699_999_000_000_000_000);
    assert_eq!(p.exemplars[0].span_id, hex("b7ad6b7169203331"));

    // Summary with NaN quantile.
    let s = find(r, "rpc_latency_seconds");
    let Some(Data::Summary(sm)) = &s.data else {
        panic!()
    };
    assert_eq!(sm.data_points[0].count, 250);
    assert!(sm.data_points[0].quantile_values[1].value.is_nan());

    // Gauge with an escaped label, -Inf and its own timestamp; custom UNIT kept.
    let g = find(r, "queue_depth");
    assert_eq!(g.unit, "items");
    let gp = &number_points(g)[0];
    assert_eq!(attr(&gp.attributes, "queue"), Some("a\\b\nc"));
    assert_eq!(value(gp), f64::NEG_INFINITY);
    assert_eq!(gp.time_unix_nano, 1_700_000_000_123_000_000);

    // Info and stateset: non-monotonic sums; unknown: gauge; gauge histogram dropped.
    for name in ["build_info", "feature"] {
        let Some(Data::Sum(s)) = &find(r, name).data else {
            panic!("{name}")
        };
        assert!(!s.is_monotonic, "{name}");
    }
    assert!(matches!(find(r, "mystery").data, Some(Data::Gauge(_))));
    assert!(metrics(r).iter().all(|m| !m.name.starts_with("pending")));

    // target_info → resource; otel_scope_* → scope.
    let res = r.resource_metrics[0].resource.as_ref().unwrap();
    assert_eq!(attr(&res.attributes, "env"), Some("prod"));
    assert_eq!(attr(&res.attributes, "region"), Some("eu-west-1"));
    assert!(metrics(r).iter().all(|m| m.name != "target_info"));
    let scoped = r.resource_metrics[0]
        .scope_metrics
        .iter()
        .find(|s| s.scope.as_ref().unwrap().name == "my.lib")
        .expect("my.lib scope");
    let scope = scoped.scope.as_ref().unwrap();
    assert_eq!(scope.version, "2.0");
    assert_eq!(attr(&scope.attributes, "team"), Some("core"));
    let sp = number_points(&scoped.metrics[0]);
    assert_eq!(attr(&sp[0].attributes, "path"), Some("/x"));
    assert!(attr(&sp[0].attributes, "otel_scope_name").is_none());
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn resets_start_new_streams_and_vanished_series_get_one_stale_marker() {
    let mut tracker = Tracker::new(100);
    let page = |a: f64, with_b: bool| {
        let mut p = format!("# TYPE req_total counter\nreq_total{{path=\"/a\"}} {a}\n");
        if with_b {
            p.push_str("req_total{path=\"/b\"} 1\n");
        }
        p
    };
    let scrape =
        |tracker: &mut Tracker, text: String, t: i64| run(&text, Format::Prometheus, t, tracker);
    let first = scrape(&mut tracker, page(10.0, true), T0);
    assert_eq!(first.series_added, 2);
    let second = scrape(&mut tracker, page(15.0, true), T0 + 15_000);
    assert_eq!(second.series_added, 0);
    let a = |out: &Translated| {
        metrics(&out.request)
            .iter()
            .flat_map(|m| number_points(m).to_vec())
            .find(|p| attr(&p.attributes, "path") == Some("/a") && p.flags == 0)
            .unwrap()
    };
    assert_eq!(a(&second).start_time_unix_nano, T0 as u64 * 1_000_000);
    // The app restarted: /a fell to 2, and /b is gone.
    let third = scrape(&mut tracker, page(2.0, false), T0 + 30_000);
    assert_eq!(
        a(&third).start_time_unix_nano,
        (T0 + 15_001) as u64 * 1_000_000
    );
    let stale: Vec<_> = metrics(&third.request)
        .iter()
        .flat_map(|m| number_points(m).to_vec())
        .filter(|p| p.flags & NO_RECORDED_VALUE != 0)
        .collect();
    assert_eq!(stale.len(), 1);
    assert_eq!(attr(&stale[0].attributes, "path"), Some("/b"));
    assert_eq!(stale[0].time_unix_nano, (T0 + 30_000) as u64 * 1_000_000);
    // Once only.
    let fourth = scrape(&mut tracker, page(3.0, false), T0 + 45_000);
    assert!(metrics(&fourth.request)
        .iter()
        .flat_map(|m| number_points(m).to_vec())
        .all(|p| p.flags == 0));
    // Target down: everything goes stale once.
    let markers = all_stale(&mut tracker, T0 + 60_000);
    assert_eq!(markers.iter().map(|s| s.0.metrics.len()).sum::<usize>(), 1);
    assert!(all_stale(&mut tracker, T0 + 75_000).is_empty());
}

#[test]
fn series_keep_their_identity_when_the_page_reorders_adds_and_drops_them() {
    // A counter and a histogram; `keep` lists the series on the page, in page order.
    let page = |keep: &[usize], value: f64| {
        let mut p = String::from("# TYPE req_total counter\n");
        for &i in keep {
            p.push_str(&format!("req_total{{path=\"/{i}\"}} {value}\n"));
        }
        p.push_str("# TYPE lat_seconds histogram\n");
        for &i in keep {
            for le in ["0.1", "+Inf"] {
                p.push_str(&format!(
                    "lat_seconds_bucket{{route=\"/{i}\",le=\"{le}\"}} {value}\n"
                ));
            }
            p.push_str(&format!("lat_seconds_count{{route=\"/{i}\"}} {value}\n"));
        }
        p
    };
    // Each series' shared attributes, by its one label's value.
    let attrs_of =
        |out: &Translated| -> HashMap<String, std::sync::Arc<sidekick_collector::payload::Attrs>> {
            out.detached
                .iter()
                .map(|a| (a.iter().next().unwrap().1.to_string(), a.clone()))
                .collect()
        };
    let markers = |out: &Translated| -> Vec<String> {
        let r = out.clone().attached().request;
        let mut gone: Vec<String> = metrics(&r)
            .iter()
            .flat_map(|m| match &m.data {
                Some(Data::Sum(s)) => s
                    .data_points
                    .iter()
                    .filter(|p| p.flags & NO_RECORDED_VALUE != 0)
                    .map(|p| attr(&p.attributes, "path").unwrap().to_string())
                    .collect::<Vec<_>>(),
                Some(Data::Histogram(h)) => h
                    .data_points
                    .iter()
                    .filter(|p| p.flags & NO_RECORDED_VALUE != 0)
                    .map(|p| attr(&p.attributes, "route").unwrap().to_string())
                    .collect(),
                _ => Vec::new(),
            })
            .collect();
        gone.sort();
        gone
    };
    let mut tracker = Tracker::new(1000);
    let scrape = |tracker: &mut Tracker, keep: &[usize], value: f64, t: i64| {
        translate(
            page(keep, value),
            Format::Prometheus,
            t,
            &target(),
            &opts(),
            tracker,
        )
        .unwrap()
    };
    let first = scrape(&mut tracker, &[0, 1, 2, 3, 4, 5], 1.0, T0);
    assert_eq!(first.series_added, 12);
    let before = attrs_of(&first);

    // Reversed, /2 dropped, /9 added between /4 and /3.
    let second = scrape(&mut tracker, &[5, 4, 9, 3, 1, 0], 2.0, T0 + 15_000);
    assert_eq!(second.series_added, 2, "/9 in both families");
    assert_eq!(
        markers(&second),
        ["/2", "/2"],
        "/2 in both families, once each"
    );
    let after = attrs_of(&second);
    for key in ["/0", "/1", "/3", "/4", "/5"] {
        assert!(
            std::sync::Arc::ptr_eq(&before[key], &after[key]),
            "{key} keeps its attributes"
        );
    }
    // A counter that kept going keeps its start.
    let r = second.clone().attached().request;
    let start = number_points(find(&r, "req_total"))
        .iter()
        .find(|p| attr(&p.attributes, "path") == Some("/0"))
        .unwrap()
        .start_time_unix_nano;
    assert_eq!(start, T0 as u64 * 1_000_000);

    // The same order again: nothing new, nothing gone.
    let third = scrape(&mut tracker, &[5, 4, 9, 3, 1, 0], 3.0, T0 + 30_000);
    assert_eq!(third.series_added, 0);
    assert!(markers(&third).is_empty());
    assert!(std::sync::Arc::ptr_eq(
        &after["/9"],
        &attrs_of(&third)["/9"]
    ));

    // A page that lists a series twice is refused and the next good one still matches.
    let doubled = translate(
        page(&[0, 1, 0], 4.0),
        Format::Prometheus,
        T0 + 45_000,
        &target(),
        &opts(),
        &mut tracker,
    );
    assert!(matches!(doubled, Err(PageError::Duplicate { .. })));
    let fourth = scrape(&mut tracker, &[0, 1], 5.0, T0 + 60_000);
    assert_eq!(fourth.series_added, 0);
    assert_eq!(
        markers(&fourth),
        ["/3", "/3", "/4", "/4", "/5", "/5", "/9", "/9"]
    );
}

#[test]
fn a_series_whose_samples_are_apart_on_the_page_is_one_point() {
    // Each series' samples together, then the same series with every `_count` last.
    let together = "# TYPE h histogram\n\
        h_bucket{r=\"a\",le=\"1\"} 1\nh_bucket{r=\"a\",le=\"+Inf\"} 2\nh_count{r=\"a\"} 2\n\
        h_bucket{r=\"b\",le=\"1\"} 3\nh_bucket{r=\"b\",le=\"+Inf\"} 4\nh_count{r=\"b\"} 4\n";
    let apart = "# TYPE h histogram\n\
        h_bucket{r=\"a\",le=\"1\"} 5\nh_bucket{r=\"b\",le=\"1\"} 7\n\
        h_bucket{r=\"a\",le=\"+Inf\"} 6\nh_bucket{r=\"b\",le=\"+Inf\"} 8\n\
        h_count{r=\"b\"} 8\nh_count{r=\"a\"} 6\n";
    let mut tracker = Tracker::new(100);
    let points = |out: &Translated| {
        let Some(Data::Histogram(h)) = &find(&out.request, "h").data else {
            panic!("not a histogram")
        };
        let mut p: Vec<(String, u64, Vec<u64>)> = h
            .data_points
            .iter()
            .map(|p| {
                let r = attr(&p.attributes, "r").unwrap().to_string();
                (r, p.count, p.bucket_counts.clone())
            })
            .collect();
        p.sort();
        p
    };
    let first = run(together, Format::Prometheus, T0, &mut tracker);
    assert_eq!(
        points(&first),
        [("a".into(), 2, vec![1, 1]), ("b".into(), 4, vec![3, 1])]
    );
    let second = run(apart, Format::Prometheus, T0 + 15_000, &mut tracker);
    assert_eq!(
        points(&second),
        [("a".into(), 6, vec![5, 1]), ("b".into(), 8, vec![7, 1])]
    );
    assert_eq!(second.series_added, 0);
}

#[test]
fn markers_keep_each_vanished_series_family_shape_and_scope() {
    let mut tracker = Tracker::new(100);
    let full = "# HELP lat_seconds Latency.\n# TYPE lat_seconds histogram\n\
        lat_seconds_bucket{r=\"a\",le=\"0.1\"} 1\nlat_seconds_bucket{r=\"a\",le=\"1\"} 2\n\
        lat_seconds_bucket{r=\"a\",le=\"+Inf\"} 3\nlat_seconds_sum{r=\"a\"} 1.5\nlat_seconds_count{r=\"a\"} 3\n\
        # TYPE rpc summary\nrpc{s=\"x\",quantile=\"0.5\"} 1\nrpc{s=\"x\",quantile=\"0.9\"} 2\n\
        rpc_sum{s=\"x\"} 3\nrpc_count{s=\"x\"} 4\n\
        # TYPE lib_total counter\nlib_total{otel_scope_name=\"lib\",otel_scope_version=\"2\",k=\"v\"} 5\n\
        # TYPE kept gauge\nkept 1\n";
    let first = run(full, Format::Prometheus, T0, &mut tracker);
    let second = run(
        "# TYPE kept gauge\nkept 2\n",
        Format::Prometheus,
        T0 + 15_000,
        &mut tracker,
    );
    let find_in = |out: &Translated, name: &str| {
        let scopes = &out.request.resource_metrics[0].scope_metrics;
        scopes
            .iter()
            .find_map(|s| {
                s.metrics
                    .iter()
                    .find(|m| m.name == name)
                    .map(|m| (s.scope.clone(), m.clone()))
            })
            .unwrap_or_else(|| panic!("{name} missing"))
    };
    let marker_time = (T0 + 15_000) as u64 * 1_000_000;
    for name in ["lat_seconds", "rpc", "lib_total"] {
        let (scope_was, was) = find_in(&first, name);
        let (scope, marker) = find_in(&second, name);
        assert_eq!(scope, scope_was, "{name}");
        assert_eq!(
            (&marker.unit, &marker.description, &marker.metadata),
            (&was.unit, &was.description, &was.metadata),
            "{name}"
        );
        match (&was.data, &marker.data) {
            (Some(Data::Histogram(w)), Some(Data::Histogram(m))) => {
                let (w, m) = (&w.data_points[0], &m.data_points[0]);
                assert_eq!(m.explicit_bounds, w.explicit_bounds);
                // Its `_sum` goes stale with it.
                assert!(w.sum.is_some() && m.sum.is_some());
                assert_eq!(m.bucket_counts.len(), w.bucket_counts.len());
                assert_eq!(
                    (m.flags, m.time_unix_nano),
                    (NO_RECORDED_VALUE, marker_time)
                );
                assert_eq!(m.attributes, w.attributes);
            }
            (Some(Data::Summary(w)), Some(Data::Summary(m))) => {
                let (w, m) = (&w.data_points[0], &m.data_points[0]);
                let qs = |p: &opentelemetry_proto::tonic::metrics::v1::SummaryDataPoint| {
                    p.quantile_values
                        .iter()
                        .map(|q| q.quantile)
                        .collect::<Vec<_>>()
                };
                assert_eq!(qs(m), qs(w));
                assert_eq!(
                    (m.flags, m.time_unix_nano),
                    (NO_RECORDED_VALUE, marker_time)
                );
                assert_eq!(m.attributes, w.attributes);
            }
            (Some(Data::Sum(w)), Some(Data::Sum(m))) => {
                assert_eq!(m.data_points[0].flags, NO_RECORDED_VALUE);
                assert_eq!(m.data_points[0].attributes, w.data_points[0].attributes);
                assert_eq!(
                    (m.is_monotonic, m.aggregation_temporality),
                    (w.is_monotonic, w.aggregation_temporality)
                );
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    // The series still there is no marker.
    let (_, kept) = find_in(&second, "kept");
    assert_eq!(number_points(&kept)[0].flags, 0);
}

#[test]
fn bad_pages_are_refused() {
    let mut tracker = Tracker::new(100);
    let dup = "a{x=\"1\"} 1\nb 2\na{x=\"1\"} 3\n";
    match translate(
        dup,
        Format::Prometheus,
        T0,
        &target(),
        &opts(),
        &mut tracker,
    ) {
        Err(PageError::Duplicate { line, series }) => {
            assert_eq!(line, 3);
            assert!(series.starts_with("a{"), "{series}");
        }
        other => panic!("{other:?}"),
    }
    let two_types = "# TYPE a gauge\n# TYPE a counter\na 1\n";
    assert!(matches!(
        translate(
            two_types,
            Format::Prometheus,
            T0,
            &target(),
            &opts(),
            &mut tracker
        ),
        Err(PageError::DuplicateType { line: 2, .. })
    ));
    let limited = Options {
        sample_limit: 1,
        ..opts()
    };
    assert!(matches!(
        translate(
            "a 1\nb 2\n",
            Format::Prometheus,
            T0,
            &target(),
            &limited,
            &mut tracker
        ),
        Err(PageError::SampleLimit { line: 2, limit: 1 })
    ));
}

#[test]
fn honor_labels_and_metric_relabeling() {
    let mut tracker = Tracker::new(100);
    let page = "x{job=\"inner\",team=\"other\"} 1\ngo_gc_x 2\n";
    let out = run(page, Format::Prometheus, T0, &mut tracker);
    let p = &number_points(find(&out.request, "x"))[0];
    assert_eq!(attr(&p.attributes, "exported_job"), Some("inner"));
    assert_eq!(attr(&p.attributes, "exported_team"), Some("other"));
    assert_eq!(attr(&p.attributes, "team"), Some("checkout"));
    let honored = Options {
        honor_labels: true,
        ..opts()
    };
    let out = translate(
        page,
        Format::Prometheus,
        T0,
        &target(),
        &honored,
        &mut Tracker::new(10),
    )
    .unwrap()
    .attached();
    let p = &number_points(find(&out.request, "x"))[0];
    assert_eq!(attr(&p.attributes, "team"), Some("other"));
    assert_eq!(attr(&p.attributes, "exported_team"), None);

    let rules = vec![
        RuleConfig {
            source_labels: vec!["__name__".into()],
            regex: "go_gc_.*".into(),
            action: relabel::Action::Drop,
            ..RuleConfig::default()
        }
        .compile()
        .unwrap(),
        RuleConfig {
            source_labels: vec!["__name__".into()],
            regex: "x".into(),
            target_label: Some("__name__".into()),
            replacement: "renamed".into(),
            ..RuleConfig::default()
        }
        .compile()
        .unwrap(),
    ];
    let relabeled = Options {
        metric_relabel: &rules,
        ..opts()
    };
    let out = translate(
        page,
        Format::Prometheus,
        T0,
        &target(),
        &relabeled,
        &mut Tracker::new(10),
    )
    .unwrap()
    .attached();
    assert_eq!(out.samples_scraped, 2);
    assert_eq!(out.samples_post_relabel, 1);
    assert_eq!(
        metrics(&out.request)
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>(),
        vec!["renamed"]
    );
}

fn load(yaml: &str) -> Result<Config, String> {
    let (root, _) = node::parse(yaml, &HashMap::new()).map_err(|e| e.to_string())?;
    let c: Config = from_node(&root, "receivers.prometheus").map_err(|e| e.to_string())?;
    let problems = c.validate();
    if problems.is_empty() {
        Ok(c)
    } else {
        Err(problems
            .iter()
            .map(|p| format!("{}: {}", p.field, p.message))
            .collect::<Vec<_>>()
            .join("\n"))
    }
}

#[test]
fn config_example_parses() {
    let c = load(
        "config:\n  global:\n    scrape_interval: 15s\n  scrape_configs:\n    - job_name: app\n      static_configs:\n        - targets: [\"localhost:8080\"]\n          labels:\n            team: checkout\n      metric_relabel_configs:\n        - source_labels: [__name__]\n          regex: \"go_gc_.*\"\n          action: drop\n",
    )
    .unwrap();
    assert_eq!(
        c.config.global.scrape_interval.0,
        std::time::Duration::from_secs(15)
    );
    assert_eq!(
        c.config.scrape_configs[0].static_configs[0].labels["team"],
        "checkout"
    );
}

#[test]
fn unsupported_keys_are_named() {
    let err = load(
        "config:\n  scrape_configs:\n    - job_name: k8s\n      kubernetes_sd_configs:\n        - role: pod\n      scrape_interval: 10s\n      scrape_timeout: 20s\n      relabel_configs:\n        - regex: \"(\"\n          target_label: x\n      static_configs:\n        - targets: [\"http://app:8080/metrics\"]\n",
    )
    .unwrap_err();
    assert_eq!(
        err,
        "config.scrape_configs[0].kubernetes_sd_configs: kubernetes_sd_configs is not supported by Sidekick's prometheus receiver; use static_configs\n\
         config.scrape_configs[0].scrape_timeout: scrape_timeout (20s) must not exceed scrape_interval (10s)\n\
         config.scrape_configs[0].relabel_configs[0].regex: invalid regex \"(\": unclosed group\n\
         config.scrape_configs[0].static_configs[0].targets[0]: target \"http://app:8080/metrics\" must be host:port (set scheme and metrics_path separately)"
    );
    let err = load("config:\n  scrape_configs:\n    - job_name: a\n      scrape_intervall: 5s\n")
        .unwrap_err();
    assert!(
        err.contains("unknown field \"scrape_intervall\"; did you mean \"scrape_interval\"?"),
        "{err}"
    );
    assert!(parse_prom_duration("1h30m").is_ok());
    assert_eq!(parse_size("10MB"), Ok(10 << 20));
}

#[test]
fn pod_annotations_become_a_scrape_config() {
    let text = "prometheus.io/scrape=\"true\"\nprometheus.io/port=\"9102\"\nprometheus.io/path=\"/custom\"\nother=\"x\"\n";
    let sc = from_annotations(text, "app", "prometheus.io")
        .unwrap()
        .unwrap();
    assert_eq!(sc.static_configs[0].targets, vec!["127.0.0.1:9102"]);
    assert_eq!(
        (
            sc.metrics_path.as_str(),
            sc.scheme.as_str(),
            sc.job_name.as_str()
        ),
        ("/custom", "http", "app")
    );
    assert!(
        from_annotations("prometheus.io/scrape=\"false\"\n", "app", "prometheus.io")
            .unwrap()
            .is_none()
    );
    assert!(from_annotations("", "app", "prometheus.io")
        .unwrap()
        .is_none());
    assert_eq!(
        from_annotations("prometheus.io/scrape=\"true\"\n", "app", "prometheus.io").unwrap_err(),
        "prometheus.io/scrape is true but prometheus.io/port is missing"
    );
    assert!(from_annotations(
        "prometheus.io/scrape=\"true\"\nprometheus.io/port=\"http\"\n",
        "app",
        "prometheus.io"
    )
    .is_err());
    let other =
        "sidekick.io/scrape=\"true\"\nsidekick.io/port=\"8080\"\nprometheus.io/port=\"8889\"\n";
    let sc = from_annotations(other, "app", "sidekick.io")
        .unwrap()
        .unwrap();
    assert_eq!(sc.static_configs[0].targets, vec!["127.0.0.1:8080"]);
    let c = load("pod_annotations: true\n").unwrap();
    assert!(c.pod_annotations);
}

mod never_panics {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// Translation of any page that parses never panics, whatever the types and
        /// suffixes claim; repeated scrapes exercise resets and staleness too.
        #[test]
        fn translating_odd_pages(lines in prop::collection::vec(
            prop_oneof![
                Just("# TYPE h histogram".to_string()),
                Just("# TYPE s summary".to_string()),
                Just("# TYPE c counter".to_string()),
                Just("# TYPE g gaugehistogram".to_string()),
                Just("# UNIT h seconds".to_string()),
                "(h_bucket|h_count|h_sum|h_created|s|s_sum|s_count|c_total|c_created|g_bucket|target_info|x)(\\{(le|quantile|otel_scope_name|job|instance|a)=\"[-+a-zA-Z0-9.]{0,4}\"\\})? (NaN|\\+Inf|-Inf|-?[0-9]{1,4}(\\.[0-9])?)",
            ],
            0..16,
        ), times in prop::collection::vec(0i64..100_000, 1..3)) {
            let page = lines.join("\n") + "\n";
            let mut tracker = Tracker::new(50);
            for t in times {
                let _ = translate(&page, Format::Prometheus, T0 + t, &target(), &opts(), &mut tracker);
            }
        }
    }
}

// ---- Limits: sample_limit, label limits, body_size_limit, the series-state budget. ----

/// `n` gauge samples, then a line that does not parse.
fn page_with_malformed_tail(n: usize) -> String {
    let mut page = String::from("# HELP g A gauge.\n# TYPE g gauge\n");
    for i in 0..n {
        page.push_str(&format!("g{{i=\"{i}\"}} {i}\n"));
    }
    page.push_str("g{i=\"unterminated} 1\n");
    page
}

#[test]
fn sample_limit_stops_parsing_at_the_first_sample_over_it() {
    let page = page_with_malformed_tail(100);
    let mut tracker = Tracker::new(1000);
    // Without a limit the page is refused for its last line...
    let whole = translate(
        &page,
        Format::Prometheus,
        T0,
        &target(),
        &opts(),
        &mut tracker,
    );
    assert!(
        matches!(whole, Err(PageError::Parse(ref e)) if e.line == 103),
        "{whole:?}"
    );
    // ...with one, reading stops at sample 11 (line 13), long before that line.
    let limited = Options {
        sample_limit: 10,
        ..opts()
    };
    let err = translate(
        &page,
        Format::Prometheus,
        T0,
        &target(),
        &limited,
        &mut tracker,
    )
    .unwrap_err();
    assert_eq!(
        err,
        PageError::SampleLimit {
            line: 13,
            limit: 10
        }
    );
    assert_eq!(err.reason(), "sample_limit");
    assert_eq!(
        ScrapeErrorReason::of(err),
        "sample_limit",
        "the failure counter's reason"
    );
    // Nothing of the refused page reached the tracker.
    assert_eq!(tracker.tracked(), 0);
}

#[test]
fn sample_limit_counts_samples_after_metric_relabeling() {
    // Three samples dropped by relabeling, three kept: a limit of 3 passes.
    let page = "go_gc_a 1\nkeep_a 1\ngo_gc_b 1\nkeep_b 1\ngo_gc_c 1\nkeep_c 1\n";
    let rules = vec![RuleConfig {
        source_labels: vec!["__name__".into()],
        regex: "go_gc_.*".into(),
        action: relabel::Action::Drop,
        ..RuleConfig::default()
    }
    .compile()
    .unwrap()];
    let o = Options {
        metric_relabel: &rules,
        sample_limit: 3,
        ..opts()
    };
    let out = translate(
        page,
        Format::Prometheus,
        T0,
        &target(),
        &o,
        &mut Tracker::new(10),
    )
    .unwrap()
    .attached();
    assert_eq!((out.samples_scraped, out.samples_post_relabel), (6, 3));
    let o = Options {
        sample_limit: 2,
        ..o
    };
    assert_eq!(
        translate(
            page,
            Format::Prometheus,
            T0,
            &target(),
            &o,
            &mut Tracker::new(10)
        )
        .unwrap_err(),
        PageError::SampleLimit { line: 6, limit: 2 }
    );
}

/// The failure reason the scrape loop would count for a page error.
struct ScrapeErrorReason;

impl ScrapeErrorReason {
    fn of(e: PageError) -> &'static str {
        scrape::ScrapeError::Page(e).reason()
    }
}

/// Translates `page` with `o`, expecting the error.
fn refused(page: &str, o: &Options<'_>) -> PageError {
    translate(
        page,
        Format::Prometheus,
        T0,
        &target(),
        o,
        &mut Tracker::new(10),
    )
    .unwrap_err()
}

fn accepted(page: &str, o: &Options<'_>) -> Translated {
    translate(
        page,
        Format::Prometheus,
        T0,
        &target(),
        o,
        &mut Tracker::new(10),
    )
    .unwrap()
}

#[test]
fn label_limit_counts_name_and_target_labels_and_fails_the_scrape() {
    // `__name__`, `path`, and the target's `instance`, `job`, `team`: 5 labels.
    let page = "ok 1\nreq{path=\"/a\"} 1\n";
    let at = |limit| Options {
        label_limit: limit,
        ..opts()
    };
    assert_eq!(accepted(page, &at(5)).samples_post_relabel, 2);
    assert_eq!(
        accepted(page, &at(0)).samples_post_relabel,
        2,
        "0: no limit"
    );
    let err = refused(page, &at(4));
    assert_eq!(
        err,
        PageError::LabelLimit {
            line: 2,
            metric: "req".into(),
            labels: 5,
            limit: 4
        }
    );
    assert_eq!(ScrapeErrorReason::of(err), "label_limit");
    // Empty values are no labels, as in Prometheus.
    assert_eq!(
        accepted("req{path=\"\",x=\"\"} 1\n", &at(4)).samples_post_relabel,
        1
    );
}

#[test]
fn label_name_length_limit_fails_the_scrape() {
    let page = "a{short=\"1\"} 1\nb{a_rather_long_name=\"1\"} 1\n";
    let at = |limit| Options {
        label_name_length_limit: limit,
        ..opts()
    };
    accepted(page, &at(18));
    let err = refused(page, &at(17));
    assert_eq!(
        err,
        PageError::LabelNameLength {
            line: 2,
            metric: "b".into(),
            label: "a_rather_long_name".into(),
            length: 18,
            limit: 17
        }
    );
    assert_eq!(ScrapeErrorReason::of(err), "label_name_length_limit");
    // Names added by relabeling count too (they are checked after it).
    let rules = vec![RuleConfig {
        target_label: Some("a_much_longer_label_name".into()),
        replacement: "x".into(),
        ..RuleConfig::default()
    }
    .compile()
    .unwrap()];
    let o = Options {
        metric_relabel: &rules,
        ..at(18)
    };
    assert!(matches!(
        refused("a 1\n", &o),
        PageError::LabelNameLength { line: 1, .. }
    ));
}

#[test]
fn label_value_length_limit_fails_the_scrape_and_counts_the_metric_name() {
    let page = "a{v=\"12345\"} 1\nb{v=\"123456\"} 1\n";
    let at = |limit| Options {
        label_value_length_limit: limit,
        ..opts()
    };
    // The longest value is the target's instance, "10.1.2.3:8080" (13 bytes).
    accepted(page, &at(13));
    let err = refused(page, &at(12));
    assert!(
        matches!(&err, PageError::LabelValueLength { line: 1, label, length: 13, limit: 12, .. } if label == "instance"),
        "{err:?}"
    );
    assert_eq!(ScrapeErrorReason::of(err), "label_value_length_limit");
    // The metric name is the value of `__name__`.
    let long = format!("{} 1\n", "m".repeat(20));
    assert!(matches!(
        refused(&long, &at(19)),
        PageError::LabelValueLength { length: 20, ref label, .. } if label == "__name__"
    ));
}

#[test]
fn label_limit_keys_are_supported_config() {
    let c = load(
        "config:\n  scrape_configs:\n    - job_name: app\n      sample_limit: 1000\n      label_limit: 30\n      label_name_length_limit: 128\n      label_value_length_limit: 1024\n      static_configs:\n        - targets: [\"localhost:8080\"]\n",
    )
    .unwrap();
    let sc = &c.config.scrape_configs[0];
    assert_eq!(
        (
            sc.sample_limit,
            sc.label_limit,
            sc.label_name_length_limit,
            sc.label_value_length_limit
        ),
        (1000, 30, 128, 1024)
    );
    let _ = rustls::crypto::ring::default_provider().install_default();
    let targets =
        scrape::targets_for(&Global::default(), sc, "prometheus", &Telemetry::new()).unwrap();
    assert_eq!(targets.len(), 1);
}

#[test]
fn body_size_limit_defaults_to_16_mib() {
    let sc = |limit: Option<&str>| ScrapeConfig {
        body_size_limit: limit.map(str::to_string),
        ..ScrapeConfig::default()
    };
    assert_eq!(DEFAULT_BODY_SIZE_LIMIT, 16 << 20);
    assert_eq!(body_limit(&sc(None)), Ok(16 << 20));
    assert_eq!(
        body_limit(&sc(Some("100MB"))),
        Ok(100 << 20),
        "honored as set"
    );
    assert_eq!(body_limit(&sc(Some("0"))), Ok(usize::MAX), "0: no limit");
    assert!(body_limit(&sc(Some("ten"))).is_err());
    let err = load("config:\n  scrape_configs:\n    - job_name: app\n      body_size_limit: 10 parsecs\n      static_configs:\n        - targets: [\"localhost:8080\"]\n").unwrap_err();
    assert!(err.contains("body_size_limit"), "{err}");
}

#[test]
fn max_series_state_is_configured_and_checked() {
    let c = load("pod_annotations: true\nmax_series_state: 1000\n").unwrap();
    assert_eq!(c.max_series_state, Some(1000));
    let err = load("pod_annotations: true\nmax_series_state: 0\n").unwrap_err();
    assert!(
        err.starts_with("max_series_state: must be at least 1"),
        "{err}"
    );
    assert_eq!(series::DEFAULT_MAX_SERIES_STATE, 500_000);
}

/// A counter page of `names` series.
fn counters(names: &[&str]) -> String {
    let mut page = String::new();
    for n in names {
        page.push_str(&format!("# TYPE {n} counter\n{n}_total 5\n"));
    }
    page
}

fn start_of(r: &ExportMetricsServiceRequest, name: &str) -> u64 {
    number_points(find(r, name))[0].start_time_unix_nano
}

#[test]
fn series_state_is_capped_across_targets_with_an_overflow_counter() {
    let telemetry = Telemetry::new();
    let budget = std::sync::Arc::new(series_budget(&telemetry, "prometheus", 3));
    let overflow = || {
        telemetry
            .counter(
                "sidekick_scrape_series_state_overflow",
                "",
                &[("receiver", "prometheus")],
            )
            .get()
    };
    let mut a = Tracker::with_budget(budget.clone(), "http://a/metrics");
    let mut b = Tracker::with_budget(budget.clone(), "http://b/metrics");
    // Target a takes two entries, target b the last one; b's second series overflows.
    run(&counters(&["a1", "a2"]), Format::Prometheus, T0, &mut a);
    assert_eq!((a.tracked(), budget.used()), (2, 2));
    let first = run(&counters(&["b1", "b2"]), Format::Prometheus, T0, &mut b);
    assert_eq!((b.tracked(), budget.used()), (1, 3));
    assert_eq!(overflow(), 1, "one series over the cap in that scrape");
    assert_eq!(budget.overflowed(), 1);
    // Over the cap the series is still delivered, starting at its scrape time on every
    // scrape; the tracked one keeps its start.
    let t1 = T0 + 15_000;
    let second = run(&counters(&["b1", "b2"]), Format::Prometheus, t1, &mut b);
    let ns = |ms: i64| ms as u64 * 1_000_000;
    assert_eq!(start_of(&first.request, "b2_total"), ns(T0));
    assert_eq!(start_of(&second.request, "b1_total"), ns(T0));
    assert_eq!(start_of(&second.request, "b2_total"), ns(t1));
    assert_eq!(overflow(), 2, "counted once per scrape");
    // A target that goes away hands its entries back; b's next new series gets one.
    drop(a);
    assert_eq!(budget.used(), 1);
    run(
        &counters(&["b1", "b2"]),
        Format::Prometheus,
        t1 + 15_000,
        &mut b,
    );
    assert_eq!((b.tracked(), budget.used(), overflow()), (2, 2, 2));
    // Forgotten series hand theirs back too.
    run(
        "",
        Format::Prometheus,
        t1 + 15_000 + series::FORGET_AFTER_MS + 1,
        &mut b,
    );
    assert_eq!((b.tracked(), budget.used()), (0, 0));
}

// ---- Scrapes over HTTP: the failure reasons and how much of the body is read. ----

mod over_http {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use sidekick_collector::telemetry::{Gauge, Telemetry};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// What the test server answers: headers and a body it writes in 64 KiB pieces, at
    /// most `total` bytes (repeating `body`), counting what the socket took.
    #[derive(Clone)]
    struct Answer {
        headers: String,
        body: Vec<u8>,
        total: usize,
    }

    async fn serve(answer: Answer) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let written = Arc::new(AtomicUsize::new(0));
        let w = written.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let answer = answer.clone();
                let w = w.clone();
                tokio::spawn(async move {
                    let mut req = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !req.windows(4).any(|x| x == b"\r\n\r\n") {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    if sock.write_all(answer.headers.as_bytes()).await.is_err() {
                        return;
                    }
                    let mut sent = 0;
                    while sent < answer.total {
                        let mut piece = Vec::with_capacity(64 << 10);
                        while piece.len() < (64 << 10) && sent + piece.len() < answer.total {
                            let take = answer.body.len().min(answer.total - sent - piece.len());
                            piece.extend_from_slice(&answer.body[..take]);
                        }
                        if sock.write_all(&piece).await.is_err() {
                            return;
                        }
                        sent += piece.len();
                        w.fetch_add(piece.len(), Ordering::Relaxed);
                    }
                });
            }
        });
        (addr, written)
    }

    fn scrape_config(addr: &str, extra: impl FnOnce(&mut ScrapeConfig)) -> ScrapeConfig {
        let mut sc = ScrapeConfig {
            job_name: "app".into(),
            static_configs: vec![StaticConfig {
                targets: vec![addr.to_string()],
                labels: BTreeMap::new(),
            }],
            ..ScrapeConfig::default()
        };
        extra(&mut sc);
        sc
    }

    /// One scrape of `sc`'s target: `up`, and the failure reasons counted.
    async fn scrape_once(sc: &ScrapeConfig) -> (f64, Vec<&'static str>, Duration) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let telemetry = Telemetry::new();
        let targets =
            scrape::targets_for(&Global::default(), sc, "prometheus", &telemetry).unwrap();
        let target = &targets[0];
        let counters = scrape::Counters::new(&telemetry, "prometheus");
        let mut tracker = Tracker::new(1000);
        let started = Instant::now();
        let batch = target
            .scrape_once(&mut tracker, &mut None, &Gauge::default(), &counters)
            .await;
        let took = started.elapsed();
        let up = value(&number_points(find(&batch.to_request().unwrap(), "up"))[0]);
        let instance = sc.static_configs[0].targets[0].as_str();
        let reasons = [
            "timeout",
            "connection",
            "http_status",
            "body_size_limit",
            "malformed_page",
            "invalid_series",
            "sample_limit",
            "label_limit",
            "label_name_length_limit",
            "label_value_length_limit",
        ]
        .into_iter()
        .filter(|reason| {
            telemetry
                .counter(
                    "sidekick_scrape_failures",
                    "",
                    &[
                        ("receiver", "prometheus"),
                        ("job", "app"),
                        ("instance", instance),
                        ("reason", reason),
                    ],
                )
                .get()
                > 0
        })
        .collect();
        (up, reasons, took)
    }

    fn plain(len: Option<usize>) -> String {
        match len {
            Some(n) => format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n"),
            None => "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nConnection: close\r\n\r\n".into(),
        }
    }

    /// One scrape of `page`, served as `content_type`, by a target of a scrape config
    /// `set` adjusts: the batch as a request, the telemetry its counters went to, and the
    /// target's address.
    async fn scrape_page(
        content_type: &str,
        page: Vec<u8>,
        set: impl FnOnce(&mut ScrapeConfig),
    ) -> (ExportMetricsServiceRequest, Telemetry, String) {
        let (addr, _) = serve(Answer {
            headers: format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                page.len()
            ),
            total: page.len(),
            body: page,
        })
        .await;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let telemetry = Telemetry::new();
        let sc = scrape_config(&addr, set);
        let targets =
            scrape::targets_for(&Global::default(), &sc, "prometheus", &telemetry).unwrap();
        let counters = scrape::Counters::new(&telemetry, "prometheus");
        let batch = targets[0]
            .scrape_once(
                &mut Tracker::new(100),
                &mut None,
                &Gauge::default(),
                &counters,
            )
            .await;
        (batch.to_request().unwrap(), telemetry, addr)
    }

    /// What counter `name` counted as left out of `addr`'s page.
    fn left_out(telemetry: &Telemetry, name: &str, addr: &str) -> u64 {
        let labels = [
            ("receiver", "prometheus"),
            ("job", "app"),
            ("instance", addr),
            ("reason", "invalid_series"),
        ];
        telemetry.counter(name, "", &labels).get()
    }

    /// `up` and `scrape_*` carry no scope, even when every series of the page has one.
    #[tokio::test]
    async fn up_stays_unscoped_beside_scoped_series() {
        let page = b"# TYPE g gauge\ng{otel_scope_name=\"lib\",i=\"1\"} 1\n".to_vec();
        let (addr, _) = serve(Answer {
            headers: plain(Some(page.len())),
            total: page.len(),
            body: page,
        })
        .await;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let telemetry = Telemetry::new();
        let sc = scrape_config(&addr, |_| {});
        let targets =
            scrape::targets_for(&Global::default(), &sc, "prometheus", &telemetry).unwrap();
        let counters = scrape::Counters::new(&telemetry, "prometheus");
        let batch = targets[0]
            .scrape_once(
                &mut Tracker::new(10),
                &mut None,
                &Gauge::default(),
                &counters,
            )
            .await;
        let scope_of = |metric: &str| {
            batch.to_request().unwrap().resource_metrics[0]
                .scope_metrics
                .iter()
                .find(|s| s.metrics.iter().any(|m| m.name == metric))
                .and_then(|s| s.scope.as_ref())
                .map(|s| s.name.clone())
        };
        assert_eq!(scope_of("g").as_deref(), Some("lib"));
        assert_eq!(scope_of("up").as_deref(), Some(""));
        assert_eq!(scope_of("scrape_duration_seconds").as_deref(), Some(""));
    }

    /// A protobuf page whose one family is inconsistent: the target is up, the other
    /// families arrive (the native histogram as an exponential one), and the family left
    /// out is counted under `invalid_series`.
    #[tokio::test]
    async fn a_protobuf_page_with_a_bad_family_scrapes_the_rest() {
        use sidekick_prometheus::exposition::{self, BucketSpan, MetricFamily};
        let mut families: Vec<MetricFamily> =
            exposition::decode(&sidekick_testkit::gen::protobuf_page(3)).unwrap();
        let mut bad = families[0].clone();
        bad.name = "broken_seconds".into();
        let h = bad.metric[0].histogram.as_mut().unwrap();
        h.positive_span = vec![BucketSpan {
            offset: 0,
            length: 9,
        }];
        families.push(bad);
        let page = exposition::encode(&families);
        let (request, telemetry, addr) = scrape_page(exposition::CONTENT_TYPE, page, |sc| {
            sc.scrape_native_histograms = true
        })
        .await;
        assert_eq!(value(&number_points(find(&request, "up"))[0]), 1.0);
        let Some(Data::ExponentialHistogram(h)) =
            &find(&request, "http_request_duration_seconds").data
        else {
            panic!("no exponential histogram")
        };
        assert_eq!(h.data_points.len(), 3);
        find(&request, "requests_total");
        assert!(metrics(&request).iter().all(|m| m.name != "broken_seconds"));
        let refused = left_out(&telemetry, "sidekick_scrape_refused_families", &addr);
        assert_eq!(refused, 1);
    }

    /// An OpenMetrics page repeating a series' timestamp is taken; the repeat is left
    /// out and counted.
    #[tokio::test]
    async fn a_repeated_timestamp_is_counted_and_the_page_taken() {
        let page = b"# TYPE g gauge\ng 1 1700000000\ng 2 1700000000\n# EOF\n".to_vec();
        let (request, telemetry, addr) =
            scrape_page("application/openmetrics-text; version=1.0.0", page, |_| {}).await;
        assert_eq!(value(&number_points(find(&request, "up"))[0]), 1.0);
        assert_eq!(number_points(find(&request, "g")).len(), 1);
        let counted = left_out(
            &telemetry,
            "sidekick_scrape_duplicate_timestamp_samples",
            &addr,
        );
        assert_eq!(counted, 1);
    }

    #[tokio::test]
    async fn a_page_within_limits_scrapes() {
        let page = b"# TYPE g gauge\ng{i=\"1\"} 1\n".to_vec();
        let (addr, _) = serve(Answer {
            headers: plain(Some(page.len())),
            total: page.len(),
            body: page,
        })
        .await;
        let (up, reasons, _) = scrape_once(&scrape_config(&addr, |_| {})).await;
        assert_eq!((up, reasons), (1.0, vec![]));
    }

    #[tokio::test]
    async fn sample_limit_fails_the_scrape_before_the_malformed_tail() {
        let page = page_with_malformed_tail(10_000).into_bytes();
        let (addr, _) = serve(Answer {
            headers: plain(Some(page.len())),
            total: page.len(),
            body: page,
        })
        .await;
        let (up, reasons, _) = scrape_once(&scrape_config(&addr, |_| {})).await;
        assert_eq!((up, reasons), (0.0, vec!["malformed_page"]));
        let limited = scrape_config(&addr, |sc| sc.sample_limit = 100);
        let (up, reasons, _) = scrape_once(&limited).await;
        assert_eq!((up, reasons), (0.0, vec!["sample_limit"]));
    }

    #[tokio::test]
    async fn label_limits_fail_the_scrape() {
        let page = b"req{path=\"/a/long/path\"} 1\n".to_vec();
        let (addr, _) = serve(Answer {
            headers: plain(Some(page.len())),
            total: page.len(),
            body: page,
        })
        .await;
        for (set, reason) in [
            (
                (|sc: &mut ScrapeConfig| sc.label_limit = 2) as fn(&mut ScrapeConfig),
                "label_limit",
            ),
            (
                |sc: &mut ScrapeConfig| sc.label_name_length_limit = 3,
                "label_name_length_limit",
            ),
            (
                |sc: &mut ScrapeConfig| sc.label_value_length_limit = 8,
                "label_value_length_limit",
            ),
        ] {
            let (up, reasons, _) = scrape_once(&scrape_config(&addr, set)).await;
            assert_eq!((up, reasons), (0.0, vec![reason]));
        }
    }

    #[tokio::test]
    async fn an_announced_length_over_body_size_limit_fails_without_reading() {
        let (addr, written) = serve(Answer {
            headers: plain(Some(64 << 20)),
            body: b"g 1\n".to_vec(),
            total: 64 << 20,
        })
        .await;
        let sc = scrape_config(&addr, |sc| sc.body_size_limit = Some("1MB".into()));
        let (up, reasons, _) = scrape_once(&sc).await;
        assert_eq!((up, reasons), (0.0, vec!["body_size_limit"]));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let sent = written.load(Ordering::Relaxed);
        assert!(sent < 16 << 20, "the server got {sent} bytes out");
    }

    #[tokio::test]
    async fn an_endless_body_fails_at_the_default_limit_without_reading_the_rest() {
        // No length announced: read until the limit, then stop (not a timeout).
        let (addr, written) = serve(Answer {
            headers: plain(None),
            body: b"a_gauge_with_a_long_name{label=\"value\"} 1\n".to_vec(),
            total: 1 << 30,
        })
        .await;
        let (up, reasons, took) = scrape_once(&scrape_config(&addr, |_| {})).await;
        assert_eq!((up, reasons), (0.0, vec!["body_size_limit"]));
        assert!(took < Duration::from_secs(5), "{took:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let sent = written.load(Ordering::Relaxed);
        assert!(
            sent < DEFAULT_BODY_SIZE_LIMIT + (8 << 20),
            "the server got {sent} bytes out of 1 GiB"
        );
    }

    #[tokio::test]
    async fn a_gzip_page_is_limited_by_its_uncompressed_size() {
        use std::io::Write as _;
        let mut page = String::new();
        while page.len() < 2 << 20 {
            page.push_str(&format!("g{{i=\"{}\"}} 1\n", page.len()));
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(page.as_bytes()).unwrap();
        let gz = gz.finish().unwrap();
        assert!(gz.len() < 1 << 20, "compressed under the limit");
        let (addr, _) = serve(Answer {
            headers: format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", gz.len()),
            total: gz.len(),
            body: gz.clone(),
        })
        .await;
        let over = scrape_config(&addr, |sc| sc.body_size_limit = Some("1MB".into()));
        let (up, reasons, _) = scrape_once(&over).await;
        assert_eq!((up, reasons), (0.0, vec!["body_size_limit"]));
        let (up, reasons, _) = scrape_once(&scrape_config(&addr, |_| {})).await;
        assert_eq!((up, reasons), (1.0, vec![]), "the whole page fits 16 MiB");
        // A cut gzip stream is an error, not a shorter page.
        let cut = gz[..gz.len() / 2].to_vec();
        let (addr, _) = serve(Answer {
            headers: format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", cut.len()),
            total: cut.len(),
            body: cut,
        })
        .await;
        let (up, reasons, _) = scrape_once(&scrape_config(&addr, |_| {})).await;
        assert_eq!((up, reasons), (0.0, vec!["connection"]));
    }
}

/// One page per OpenMetrics rule: refused as OpenMetrics with that rule named, and (where
/// the page is valid Prometheus text) accepted as Prometheus text, as Prometheus does.
#[test]
fn openmetrics_rules_are_followed_both_ways() {
    let long = "x".repeat(130);
    let long_exemplar = format!("# TYPE c counter\nc_total 1 # {{a=\"{long}\"}} 1\n");
    let cases: Vec<(&str, &str, bool)> = vec![
        (
            "# TYPE a gauge\na{x=\"1\"} 1\n# TYPE b gauge\nb 1\na{x=\"2\"} 2\n",
            "interleaved",
            true,
        ),
        (
            "# TYPE a gauge\na 1\n# HELP a late\n",
            "metadata after",
            true,
        ),
        (
            "# HELP a one\n# HELP a two\na 1\n",
            "second HELP or UNIT",
            true,
        ),
        (
            "# UNIT a_seconds seconds\n# UNIT a_seconds seconds\na_seconds 1\n",
            "second HELP or UNIT",
            true,
        ),
        ("# TYPE c counter\nc_total -1\n", "counter's value", true),
        ("# TYPE c counter\nc_total NaN\n", "counter's value", true),
        (
            "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_count 1\nh_sum 1\n",
            "+Inf bucket",
            true,
        ),
        (
            "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n",
            "not cumulative",
            true,
        ),
        (
            "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\n",
            "_sum but no _count",
            true,
        ),
        (
            "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 1\n",
            "differs from its +Inf",
            true,
        ),
        (
            "# TYPE h histogram\nh_bucket{le=\"+Inf\"} -1\nh_count -1\n",
            "bucket or count is negative",
            true,
        ),
        (
            "# TYPE q summary\nq{quantile=\"1.5\"} 1\nq_count 1\nq_sum 1\n",
            "quantile",
            true,
        ),
        (
            "# TYPE q summary\nq{quantile=\"0.5\"} 1\nq_sum 1\n",
            "summary with _sum",
            true,
        ),
        ("# TYPE q summary\nq_count NaN\n", "summary count", true),
        ("# TYPE s stateset\ns{s=\"a\"} 2\n", "stateset", false),
        ("# TYPE i info\ni_info{v=\"1\"} 2\n", "info value", false),
        (
            "# TYPE g gauge\ng 1 # {trace_id=\"ab\"} 1\n",
            "cannot carry one",
            false,
        ),
        (&long_exemplar, "longer than 128", false),
    ];
    for (page, rule, valid_text) in &cases {
        let mut tracker = Tracker::new(100);
        let om = format!("{page}# EOF\n");
        match translate(
            &om,
            Format::OpenMetrics,
            T0,
            &target(),
            &opts(),
            &mut tracker,
        ) {
            Err(PageError::OpenMetrics { rule: got, .. }) => {
                assert!(
                    got.contains(rule),
                    "{page:?}: refused for {got:?}, not {rule:?}"
                )
            }
            other => panic!("{page:?} must be refused for {rule:?}: {other:?}"),
        }
        if *valid_text {
            translate(
                *page,
                Format::Prometheus,
                T0,
                &target(),
                &opts(),
                &mut tracker,
            )
            .unwrap_or_else(|e| panic!("{page:?} as Prometheus text: {e}"));
        }
    }
    // What the rules allow: a histogram done right, exemplars where they belong, a
    // stateset, an info metric.
    let good = "# TYPE h histogram\n# UNIT h seconds\nh_bucket{le=\"1\"} 1 # {trace_id=\"0102030405060708090a0b0c0d0e0f10\"} 0.5\nh_bucket{le=\"+Inf\"} 2\nh_count 2\nh_sum -3\n# TYPE c counter\nc_total 4 # {span_id=\"0102030405060708\"} 1\n# TYPE s stateset\ns{s=\"a\"} 1\ns{s=\"b\"} 0\n# TYPE i info\ni_info{v=\"1\"} 1\n# EOF\n";
    let mut tracker = Tracker::new(100);
    translate(
        good,
        Format::OpenMetrics,
        T0,
        &target(),
        &opts(),
        &mut tracker,
    )
    .unwrap();
}

#[test]
fn openmetrics_samples_of_one_series_with_their_own_timestamps_are_points_apart() {
    let page = "# TYPE a gauge\na{x=\"1\"} 1 1700000000\na{x=\"1\"} 2 1700000005.5\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1 1700000000\nh_count 1 1700000000\nh_bucket{le=\"+Inf\"} 3 1700000005\nh_count 3 1700000005\n# EOF\n";
    let mut tracker = Tracker::new(100);
    let out = run(page, Format::OpenMetrics, T0, &mut tracker);
    let points = number_points(find(&out.request, "a"));
    let got: Vec<(u64, f64)> = points
        .iter()
        .map(|p| (p.time_unix_nano / 1_000_000, value(p)))
        .collect();
    assert_eq!(got, [(1_700_000_000_000, 1.0), (1_700_000_005_500, 2.0)]);
    let Some(opentelemetry_proto::tonic::metrics::v1::metric::Data::Histogram(h)) =
        &find(&out.request, "h").data
    else {
        panic!("h is a histogram")
    };
    let counts: Vec<u64> = h.data_points.iter().map(|p| p.count).collect();
    assert_eq!(counts, [1, 3]);
    // Timestamps equal to the millisecond (here apart by a microsecond) are allowed: the
    // page is taken, the first sample of the millisecond stays (Prometheus stores no
    // second one), and the others are counted.
    let same =
        "# TYPE g gauge\ng 1 1700000000.000001\ng 2 1700000000.000002\ng 3 1700000001\n# EOF\n";
    let out = run(same, Format::OpenMetrics, T0, &mut Tracker::new(100));
    let got: Vec<(u64, f64)> = number_points(find(&out.request, "g"))
        .iter()
        .map(|p| (p.time_unix_nano / 1_000_000, value(p)))
        .collect();
    assert_eq!(got, [(1_700_000_000_000, 1.0), (1_700_000_001_000, 3.0)]);
    assert_eq!((out.samples_scraped, out.duplicate_timestamps), (3, 1));
    // Still refused: going back in time, no timestamps, or one sample with a timestamp
    // and one without, either way round.
    for bad in [
        "a 1 1700000005\na 2 1700000000\n# EOF\n",
        "a 1\na 2\n# EOF\n",
        "a 1\na 2 1700000000\n# EOF\n",
        "a 1 1700000000\na 2\n# EOF\n",
    ] {
        let mut tracker = Tracker::new(100);
        let err = translate(
            bad,
            Format::OpenMetrics,
            T0,
            &target(),
            &opts(),
            &mut tracker,
        );
        assert!(
            matches!(err, Err(PageError::Duplicate { .. })),
            "{bad:?}: {err:?}"
        );
    }
    // The Prometheus text format has no such thing.
    let mut tracker = Tracker::new(100);
    let err = translate(
        "a 1 1700000000000\na 2 1700000005000\n",
        Format::Prometheus,
        T0,
        &target(),
        &opts(),
        &mut tracker,
    );
    assert!(matches!(err, Err(PageError::Duplicate { .. })), "{err:?}");
}

/// Lines the real Prometheus refuses in an OpenMetrics page (its scrape goes down), and
/// Sidekick with it, naming the line: an exemplar timestamp that is not a finite number,
/// an exemplar's value glued to its labels, and a space too many anywhere on a sample
/// line. The Prometheus text format stays lenient about spaces.
#[test]
fn openmetrics_lines_prometheus_refuses_are_refused() {
    for (line, why) in [
        (
            "c_total 1 # {a=\"b\"} 0.5 +Inf",
            "invalid exemplar timestamp",
        ),
        (
            "c_total 1 # {a=\"b\"} 0.5 NaN",
            "invalid exemplar timestamp",
        ),
        (
            "c_total 1 # {a=\"b\"} 0.5 -Inf",
            "invalid exemplar timestamp",
        ),
        ("c_total 1 # {a=\"b\"}0.5", "exactly one space"),
        ("c_total 1 # {a=\"b\"} 0.5 ", "exactly one space"),
        ("c_total 1 # {a=\"b\"} 0.5 1700000000 ", "exactly one space"),
        ("c_total 1 # {a=\"b\"}  0.5", "exactly one space"),
        ("c_total  1", "exactly one space"),
        ("c_total 1 ", "exactly one space"),
        ("c_total 1 1700000000 ", "exactly one space"),
        ("c_total 1\t1700000000", "exactly one space"),
    ] {
        let page = format!("# TYPE c counter\n{line}\n# EOF\n");
        let err = translate(
            page.as_str(),
            Format::OpenMetrics,
            T0,
            &target(),
            &opts(),
            &mut Tracker::new(100),
        )
        .err()
        .unwrap_or_else(|| panic!("{line:?} must be refused"));
        let text = err.to_string();
        assert!(
            text.starts_with("line 2: ") && text.contains(why),
            "{line:?}: {text}"
        );
    }
    // Where the rules allow it: an exemplar with and without its timestamp.
    for line in [
        "c_total 1 # {a=\"b\"} 0.5 1700000000.5",
        "c_total 1 1700000000 # {a=\"b\"} 0.5",
    ] {
        let page = format!("# TYPE c counter\n{line}\n# EOF\n");
        run(&page, Format::OpenMetrics, T0, &mut Tracker::new(100));
    }
    run(
        "c_total  1 \n",
        Format::Prometheus,
        T0,
        &mut Tracker::new(100),
    );
}

#[test]
fn credentials_scraped_over_plain_http_from_another_host_are_warned_about() {
    let yaml = |target: &str, scheme: &str| {
        format!("config:\n  scrape_configs:\n    - job_name: app\n      scheme: {scheme}\n      authorization:\n        credentials: s3cret\n      static_configs:\n        - targets: [\"{target}\"]\n")
    };
    let err = load(&yaml("10.0.0.5:8080", "http")).unwrap_err();
    assert!(
        err.starts_with("config.scrape_configs[0].authorization: a credential sent in clear text over http:// to 10.0.0.5:8080"),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "{err}");
    let (root, _) = node::parse(&yaml("10.0.0.5:8080", "http"), &HashMap::new()).unwrap();
    let c: Config = from_node(&root, "receivers.prometheus").unwrap();
    assert!(
        c.validate().iter().all(|p| p.warning),
        "a warning, not an error"
    );
    // The app next door, or https: nothing to say.
    load(&yaml("127.0.0.1:8080", "http")).unwrap();
    load(&yaml("localhost:8080", "http")).unwrap();
    load(&yaml("10.0.0.5:8080", "https")).unwrap();
}

/// Found by the fuzz smoke run: a timestamp past the end of time (saturated to i64::MAX
/// ms) followed, on the next scrape, by a lower value (a reset) overflowed the start time.
#[test]
fn timestamps_at_the_ends_of_time_neither_overflow_nor_panic() {
    let page = "# TYPE c counter\nc_total 4 1700000000\nc_total 5 19223372036854775807700000005\n# TYPE g gauge\ng -1 -19223372036854775807700000005\n# EOF\n";
    let mut tracker = Tracker::new(100);
    for t in [T0, T0 + 5_000, i64::MAX, i64::MIN] {
        let out = run(page, Format::OpenMetrics, t, &mut tracker);
        assert_eq!(out.samples_scraped, 3);
    }
    // And the forgetting of old series with such times.
    let _ = translate(
        "",
        Format::Prometheus,
        i64::MIN,
        &target(),
        &opts(),
        &mut tracker,
    );
}

/// A series that an OpenMetrics page gave several timestamped points gets one staleness
/// marker when it vanishes, not one per point.
#[test]
fn a_series_with_several_points_goes_stale_once() {
    let mut tracker = Tracker::new(100);
    let page = "# TYPE a gauge\na 1 1700000000\na 2 1700000005\n# TYPE b gauge\nb 1\n# EOF\n";
    run(page, Format::OpenMetrics, T0, &mut tracker);
    let out = run(
        "# TYPE b gauge\nb 1\n# EOF\n",
        Format::OpenMetrics,
        T0 + 5_000,
        &mut tracker,
    );
    let markers: Vec<_> = metrics(&out.request)
        .into_iter()
        .filter(|m| m.name == "a")
        .flat_map(|m| number_points(m).to_vec())
        .collect();
    assert_eq!(markers.len(), 1, "{markers:?}");
    assert_eq!(markers[0].flags & NO_RECORDED_VALUE, NO_RECORDED_VALUE);
}

#[test]
fn scrape_protocols_set_what_a_scrape_asks_for() {
    use super::config::accept_header;
    let sc = |extra: &str| {
        let c = load(&format!(
            "config:\n  scrape_configs:\n    - job_name: a\n{extra}      static_configs:\n        - targets: [\"localhost:8080\"]\n"
        ))?;
        Ok::<_, String>(accept_header(&c.config.scrape_configs[0]))
    };
    // By default: OpenMetrics, then text; no protobuf.
    let plain = sc("").unwrap();
    assert!(
        plain.starts_with("application/openmetrics-text;version=1.0.0,"),
        "{plain}"
    );
    assert!(!plain.contains("protobuf"), "{plain}");
    // Native histograms: the protobuf format first.
    let native = sc("      scrape_native_histograms: true\n").unwrap();
    assert!(
        native.starts_with(
            "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited,application/openmetrics-text;version=1.0.0;q=0.8,"
        ),
        "{native}"
    );
    // An explicit list, in its order, each less wanted than the one before.
    let listed = sc("      scrape_protocols: [PrometheusText0.0.4, PrometheusProto]\n").unwrap();
    assert_eq!(
        listed,
        "text/plain;version=0.0.4,application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.8,*/*;q=0.1"
    );
    let err = sc("      scrape_protocols: [PrometheusProto, OpenMetricsText2]\n").unwrap_err();
    assert!(
        err.starts_with("config.scrape_configs[0].scrape_protocols: unknown scrape protocol \"OpenMetricsText2\"; write one of PrometheusProto,"),
        "{err}"
    );
    let err = sc("      scrape_protocols: [PrometheusProto, PrometheusProto]\n").unwrap_err();
    assert!(err.contains("listed twice"), "{err}");
}
