use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    exemplar, metric::Data, number_data_point, Exemplar, Gauge, Histogram, HistogramDataPoint,
    Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

use super::*;
use crate::prom::Translation;

const T: u64 = 1_700_000_000_000_000_000;

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn request(flags: u32) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "checkout")],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![
                    Metric {
                        name: "http.requests".into(),
                        description: "Requests \"served\".\nAll of them.".into(),
                        data: Some(Data::Sum(Sum {
                            data_points: vec![NumberDataPoint {
                                attributes: vec![kv("path", "/a\"b\\c")],
                                time_unix_nano: T,
                                flags,
                                value: Some(number_data_point::Value::AsInt(5)),
                                exemplars: vec![Exemplar {
                                    trace_id: vec![0xab; 16],
                                    span_id: vec![0xcd; 8],
                                    time_unix_nano: T,
                                    value: Some(exemplar::Value::AsDouble(1.0)),
                                    ..Default::default()
                                }],
                                ..Default::default()
                            }],
                            aggregation_temporality: 2,
                            is_monotonic: true,
                        })),
                        ..Default::default()
                    },
                    Metric {
                        name: "latency".into(),
                        unit: "s".into(),
                        data: Some(Data::Histogram(Histogram {
                            data_points: vec![HistogramDataPoint {
                                time_unix_nano: T,
                                count: 3,
                                sum: Some(1.5),
                                bucket_counts: vec![1, 2],
                                explicit_bounds: vec![0.5],
                                ..Default::default()
                            }],
                            aggregation_temporality: 2,
                        })),
                        ..Default::default()
                    },
                    Metric {
                        name: "temperature".into(),
                        unit: "Cel".into(),
                        data: Some(Data::Gauge(Gauge {
                            data_points: vec![NumberDataPoint {
                                time_unix_nano: T,
                                value: Some(number_data_point::Value::AsDouble(f64::NAN)),
                                ..Default::default()
                            }],
                        })),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn store_with(req: &ExportMetricsServiceRequest, expiration: Duration) -> Store {
    let mut store = Store::new(expiration, false);
    let t = prom::translate(
        req,
        &Settings {
            target_info: true,
            ..Settings::default()
        },
        &mut Accumulator::default(),
        0,
    );
    store.update(t);
    store
}

#[test]
fn renders_the_text_format() {
    let mut store = store_with(&request(0), Duration::from_secs(300));
    let page = store.render(Format::Text, Translation::default());
    assert_eq!(
        page,
        "# HELP http_requests_total Requests \"served\".\\nAll of them.\n\
         # TYPE http_requests_total counter\n\
         http_requests_total{job=\"checkout\",path=\"/a\\\"b\\\\c\"} 5\n\
         # HELP latency_seconds latency_seconds\n\
         # TYPE latency_seconds histogram\n\
         latency_seconds_bucket{job=\"checkout\",le=\"+Inf\"} 3\n\
         latency_seconds_bucket{job=\"checkout\",le=\"0.5\"} 1\n\
         latency_seconds_count{job=\"checkout\"} 3\n\
         latency_seconds_sum{job=\"checkout\"} 1.5\n\
         # HELP temperature_celsius temperature_celsius\n\
         # TYPE temperature_celsius gauge\n\
         temperature_celsius{job=\"checkout\"} NaN\n"
    );
}

#[test]
fn renders_openmetrics_with_exemplars_and_eof() {
    let mut store = store_with(&request(0), Duration::from_secs(300));
    let page = store.render(Format::OpenMetrics, Translation::default());
    assert!(page.contains("# TYPE http_requests counter\n"), "{page}");
    assert!(
        page.contains("# HELP http_requests Requests \\\"served\\\".\\nAll of them.\n"),
        "{page}"
    );
    assert!(page.contains(
        "http_requests_total{job=\"checkout\",path=\"/a\\\"b\\\\c\"} 5 # {trace_id=\"abababababababababababababababab\",span_id=\"cdcdcdcdcdcdcdcd\"} 1 1700000000\n"
    ), "{page}");
    assert!(page.contains("# UNIT latency_seconds seconds\n"), "{page}");
    assert!(
        page.contains("# UNIT temperature_celsius celsius\n"),
        "{page}"
    );
    assert!(page.ends_with("# EOF\n"));
}

#[test]
fn stale_markers_and_expiry_remove_series() {
    let mut store = store_with(&request(0), Duration::from_secs(300));
    let stale = prom::translate(
        &request(1),
        &Settings::default(),
        &mut Accumulator::default(),
        0,
    );
    store.update(stale);
    let page = store.render(Format::Text, Translation::default());
    assert!(!page.contains("http_requests_total{"), "{page}");
    assert!(page.contains("latency_seconds_count"));
    let mut expiring = store_with(&request(0), Duration::ZERO);
    assert_eq!(expiring.render(Format::Text, Translation::default()), "");
}

/// A gauge `g` with one point per `paths` entry, valued `value` (the stale NaN with
/// `flags` 1).
fn paths(paths: &[&str], flags: u32) -> ExportMetricsServiceRequest {
    let data_points = paths
        .iter()
        .map(|p| NumberDataPoint {
            attributes: vec![kv("path", p)],
            time_unix_nano: T,
            flags,
            value: Some(number_data_point::Value::AsInt(1)),
            ..Default::default()
        })
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "g".into(),
                    data: Some(Data::Gauge(Gauge { data_points })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[test]
fn series_render_in_order_as_they_come_and_go() {
    let mut store = Store::new(Duration::from_secs(300), false);
    let mut send = |req: ExportMetricsServiceRequest| {
        store.update(prom::translate(
            &req,
            &Settings::default(),
            &mut Accumulator::default(),
            0,
        ));
        let page = store.render(Format::Text, Translation::default());
        page.lines()
            .filter_map(|l| l.strip_prefix("g{path=\""))
            .map(|l| l.split('"').next().unwrap_or("").to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(send(paths(&["c", "a"], 0)), ["a", "c"]);
    // Unchanged series keep their order without sorting; new ones take their place.
    assert_eq!(send(paths(&["a", "c"], 0)), ["a", "c"]);
    assert_eq!(send(paths(&["b"], 0)), ["a", "b", "c"]);
    assert_eq!(send(paths(&["a"], 1)), ["b", "c"]);
    assert_eq!(send(paths(&["a", "d"], 0)), ["a", "b", "c", "d"]);
}

#[test]
fn series_update_in_any_order_and_churn_keeps_the_page_whole() {
    let mut store = Store::new(Duration::from_secs(300), false);
    // Gauge `g`, one series a path, each with its value.
    let send = |store: &mut Store, points: &[(String, i64)], flags: u32| {
        let mut req = paths(&[], flags);
        let Some(Data::Gauge(g)) = &mut req.resource_metrics[0].scope_metrics[0].metrics[0].data
        else {
            unreachable!()
        };
        g.data_points = points
            .iter()
            .map(|(p, v)| NumberDataPoint {
                attributes: vec![kv("path", p)],
                time_unix_nano: T,
                flags,
                value: Some(number_data_point::Value::AsInt(*v)),
                ..Default::default()
            })
            .collect();
        store.update(prom::translate(
            &req,
            &Settings::default(),
            &mut Accumulator::default(),
            0,
        ));
    };
    let page = |store: &mut Store| -> Vec<(String, String)> {
        store
            .render(Format::Text, Translation::default())
            .lines()
            .filter_map(|l| l.strip_prefix("g{path=\""))
            .map(|l| {
                let (path, value) = l.split_once("\"} ").unwrap();
                (path.to_string(), value.to_string())
            })
            .collect()
    };
    let named = |names: &[&str], v: i64| -> Vec<(String, i64)> {
        names.iter().map(|n| (n.to_string(), v)).collect()
    };
    send(&mut store, &named(&["a", "b", "c"], 1), 0);
    // Another order, another value each: every series updated, none added.
    send(
        &mut store,
        &[("c".into(), 3), ("a".into(), 4), ("b".into(), 5)],
        0,
    );
    assert_eq!(
        page(&mut store),
        [("a", "4"), ("b", "5"), ("c", "3")].map(|(p, v)| (p.to_string(), v.to_string()))
    );

    // Churn: rounds of 1,000 new series, each round's predecessors going stale.
    let round = |r: usize| -> Vec<String> { (0..1000).map(|i| format!("r{r}-{i:04}")).collect() };
    for r in 0..6 {
        let new: Vec<(String, i64)> = round(r).into_iter().map(|p| (p, r as i64)).collect();
        send(&mut store, &new, 0);
        assert_eq!(page(&mut store).len(), 3 + 1000 * (1 + usize::from(r > 0)));
        if r > 0 {
            let old: Vec<(String, i64)> = round(r - 1).into_iter().map(|p| (p, 0)).collect();
            send(&mut store, &old, 1);
        }
        // Rendered after the gaps closed, with no series added since.
        let shown = page(&mut store);
        assert_eq!(shown.len(), 1003);
        assert!(shown[3..]
            .iter()
            .all(|(p, _)| p.starts_with(&format!("r{r}-"))));
        assert!(shown.windows(2).all(|w| w[0] < w[1]), "page order");
        // Updating the survivors after a gap closed still finds each of them.
        let again: Vec<(String, i64)> = round(r).into_iter().map(|p| (p, 10 + r as i64)).collect();
        send(&mut store, &again, 0);
    }
    let shown = page(&mut store);
    let mut want: Vec<(String, String)> = named(&["a", "b", "c"], 0)
        .into_iter()
        .zip(["4", "5", "3"])
        .map(|((p, _), v)| (p, v.to_string()))
        .chain(round(5).into_iter().map(|p| (p, "15".to_string())))
        .collect();
    want.sort();
    assert_eq!(shown, want);
    assert_eq!(store.series(), 1003);
}

#[test]
fn a_page_written_in_pieces_is_the_whole_page() {
    let many: Vec<String> = (0..500).map(|i| format!("/p{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let mut store = store_with(&request(0), Duration::from_secs(300));
    store.update(prom::translate(
        &paths(&many, 0),
        &Settings::default(),
        &mut Accumulator::default(),
        0,
    ));
    let telemetry = Telemetry::new();
    telemetry
        .counter("sidekick_test", "A test counter.", &[])
        .add(2);
    for format in [Format::Text, Format::OpenMetrics] {
        // Once: the process figures change from one call to the next.
        let once = store::self_metrics(&telemetry, &Settings::default());
        let extra = || once.clone();
        let whole = store.snapshot().render(format, extra());
        assert!(whole.contains("sidekick_test_total 2\n"), "{whole}");
        let mut pages = store.snapshot().pages(format, extra());
        let mut pieces = Vec::new();
        while let Some(piece) = pages.next_chunk(1_000) {
            pieces.push(piece);
        }
        assert!(pieces.len() >= 8, "{} pieces", pieces.len());
        // Whole lines, each piece at most one line over.
        assert!(pieces
            .iter()
            .all(|p| p.ends_with('\n') && p.len() < 1_000 + 200));
        assert_eq!(pieces.concat(), whole);
        assert_eq!(
            store.snapshot().pages(format, extra()).collect::<String>(),
            whole
        );
    }
}

#[test]
fn self_metrics_get_prometheus_names() {
    let telemetry = Telemetry::new();
    telemetry
        .counter(
            "otelcol_exporter_sent_spans",
            "Spans sent.",
            &[("exporter", "otlp")],
        )
        .add(3);
    let extra = store::self_metrics(&telemetry, &Settings::default());
    let mut store = Store::new(Duration::from_secs(1), false);
    let page = store.render(Format::Text, extra);
    assert!(
        page.contains("# TYPE otelcol_exporter_sent_spans_total counter\n"),
        "{page}"
    );
    assert!(
        page.contains("otelcol_exporter_sent_spans_total{exporter=\"otlp\"} 3\n"),
        "{page}"
    );
    assert!(
        page.contains("# TYPE otelcol_process_memory_rss gauge\n"),
        "{page}"
    );
}

/// The `# TYPE` lines and the series (name and sorted labels, without the value) of a
/// text page.
fn page_shape(page: &str) -> (Vec<String>, Vec<String>) {
    let mut types: Vec<String> = page
        .lines()
        .filter(|l| l.starts_with("# TYPE "))
        .map(str::to_string)
        .collect();
    types.sort();
    let mut series: Vec<String> = page
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let head = l.rsplit_once(' ').map(|(h, _)| h).unwrap_or(l);
            match head.split_once('{') {
                Some((name, labels)) => {
                    let mut labels: Vec<&str> = labels
                        .trim_end_matches('}')
                        .split("\",")
                        .map(|l| l.trim_end_matches('"'))
                        .collect();
                    labels.sort();
                    format!("{name}{{{}}}", labels.join("|"))
                }
                None => head.to_string(),
            }
        })
        .collect();
    series.sort();
    (types, series)
}

/// `include_self_metrics` shows the very names (and labels) the admin endpoint shows,
/// whatever the exporter's own naming settings.
#[test]
fn self_metrics_match_the_admin_page() {
    let telemetry = Telemetry::new();
    telemetry
        .counter(
            "otelcol_receiver_accepted_spans",
            "Spans accepted.",
            &[("receiver", "otlp"), ("transport", "grpc")],
        )
        .add(2);
    telemetry
        .counter("sidekick_scrape_failures", "Failures.", &[("job", "j")])
        .add(1);
    telemetry
        .gauge(
            "otelcol_exporter_queue_size",
            "Queue size.",
            &[("exporter", "otlp")],
        )
        .set(4);
    for consts in [
        Vec::new(),
        vec![("service_name".to_string(), "sidekick".to_string())],
    ] {
        telemetry.set_const_labels(consts.clone());
        for settings in [
            Settings::default(),
            Settings {
                strategy: prom::TranslationStrategy::UnderscoreEscapingWithoutSuffixes,
                namespace: "ns".into(),
                extra_labels: vec![("cluster".into(), "c".into())],
                ..Settings::default()
            },
        ] {
            let admin = telemetry.render();
            let mut store = Store::new(Duration::from_secs(1), false);
            let page = store.render(Format::Text, store::self_metrics(&telemetry, &settings));
            assert_eq!(
                page_shape(&page),
                page_shape(&admin),
                "{page}\n---\n{admin}"
            );
            assert!(page.contains("# TYPE otelcol_receiver_accepted_spans_total counter\n"));
            assert!(page.contains("# TYPE otelcol_process_uptime_total counter\n"));
            assert!(page.contains("# TYPE otelcol_exporter_queue_size gauge\n"));
            if consts.is_empty() {
                assert!(page.contains("sidekick_scrape_failures_total{job=\"j\"} 1\n"));
            } else {
                assert!(page.contains(
                    "sidekick_scrape_failures_total{job=\"j\",service_name=\"sidekick\"} 1\n"
                ));
            }
        }
    }
}

/// One batch with metric `x` as a gauge, then a histogram, then a gauge again (three
/// resources): the page shows one family under one type, never samples of one type under
/// another's `TYPE` line.
#[test]
fn a_family_whose_type_changes_within_a_batch_keeps_one_type() {
    let gauge = |service: &str| Metric {
        name: "x".into(),
        data: Some(Data::Gauge(Gauge {
            data_points: vec![NumberDataPoint {
                attributes: vec![kv("from", service)],
                time_unix_nano: T,
                value: Some(number_data_point::Value::AsDouble(1.0)),
                ..Default::default()
            }],
        })),
        ..Default::default()
    };
    let histogram = Metric {
        name: "x".into(),
        data: Some(Data::Histogram(Histogram {
            data_points: vec![HistogramDataPoint {
                time_unix_nano: T,
                count: 1,
                bucket_counts: vec![1, 0],
                explicit_bounds: vec![1.0],
                ..Default::default()
            }],
            aggregation_temporality: 2,
        })),
        ..Default::default()
    };
    let resource = |service: &str, metric: Metric| ResourceMetrics {
        resource: Some(Resource {
            attributes: vec![kv("service.name", service)],
            ..Default::default()
        }),
        scope_metrics: vec![ScopeMetrics {
            metrics: vec![metric],
            ..Default::default()
        }],
        ..Default::default()
    };
    let req = ExportMetricsServiceRequest {
        resource_metrics: vec![
            resource("a", gauge("a")),
            resource("b", histogram),
            resource("c", gauge("c")),
        ],
    };
    let page =
        store_with(&req, Duration::from_secs(60)).render(Format::Text, Translation::default());
    let types: Vec<&str> = page
        .lines()
        .filter(|l| l.starts_with("# TYPE x "))
        .collect();
    assert_eq!(types.len(), 1, "{page}");
    let kind = types[0].rsplit(' ').next().unwrap();
    let samples: Vec<&str> = page
        .lines()
        .filter(|l| l.starts_with("x{") || l.starts_with("x_"))
        .collect();
    match kind {
        "gauge" => assert!(samples.iter().all(|l| l.starts_with("x{")), "{page}"),
        "histogram" => assert!(samples.iter().all(|l| l.starts_with("x_")), "{page}"),
        other => panic!("unexpected type {other}: {page}"),
    }
    assert!(!samples.is_empty(), "{page}");
}

#[test]
fn credentials_in_clear_text_from_the_network_are_warned_about() {
    let with = |endpoint: &str| Config {
        endpoint: endpoint.into(),
        auth: Some(sidekick_collector::config::AuthRef {
            authenticator: "bearertokenauth".into(),
        }),
        ..Config::default()
    };
    let open = with("0.0.0.0:8889").validate();
    assert_eq!(open.len(), 1, "{open:?}");
    assert!(open[0].warning && open[0].field == "auth", "{open:?}");
    assert!(open[0].message.contains("clear text on 0.0.0.0:8889"));
    assert!(with("127.0.0.1:8889").validate().is_empty());
    assert!(Config::default().validate().is_empty());
    let tls = Config {
        tls: Some(sidekick_collector::config::ServerTls {
            cert_file: Some("/nonexistent/tls.crt".into()),
            key_file: Some("/nonexistent/tls.key".into()),
            ..Default::default()
        }),
        ..with("0.0.0.0:8889")
    }
    .validate();
    assert_eq!(tls.len(), 1, "{tls:?}");
    assert!(
        !tls[0].warning && tls[0].field == "tls.cert_file",
        "{tls:?}"
    );
}

/// [`request`] and an exponential histogram `rpc.duration` (seconds) of 17 observations
/// at scale 1: positive buckets 0..=3 with 1, 2, 3, 4, negative bucket -1 with 5, and 2
/// in the zero bucket.
fn with_exponential() -> ExportMetricsServiceRequest {
    use opentelemetry_proto::tonic::metrics::v1::{
        exponential_histogram_data_point::Buckets, ExponentialHistogram,
        ExponentialHistogramDataPoint,
    };
    let mut req = request(0);
    req.resource_metrics[0].scope_metrics[0]
        .metrics
        .push(Metric {
            name: "rpc.duration".into(),
            unit: "s".into(),
            data: Some(Data::ExponentialHistogram(ExponentialHistogram {
                data_points: vec![ExponentialHistogramDataPoint {
                    attributes: vec![kv("path", "/a")],
                    time_unix_nano: T,
                    count: 17,
                    sum: Some(12.5),
                    scale: 1,
                    zero_count: 2,
                    zero_threshold: 0.001,
                    positive: Some(Buckets {
                        offset: 0,
                        bucket_counts: vec![1, 2, 3, 4],
                    }),
                    negative: Some(Buckets {
                        offset: -1,
                        bucket_counts: vec![5],
                    }),
                    ..Default::default()
                }],
                aggregation_temporality: 2,
            })),
            ..Default::default()
        });
    req
}

/// A store fed as the exporter feeds it (native histograms kept).
fn ingested(req: &ExportMetricsServiceRequest) -> Store {
    let mut store = Store::new(Duration::from_secs(300), false);
    let settings = Settings {
        target_info: true,
        native_histograms: true,
        ..Settings::default()
    };
    store.begin_batch();
    let now = std::time::Instant::now();
    prom::translate_with(req, &settings, &mut Accumulator::default(), 0, &mut |s| {
        store.ingest(s, now)
    });
    store
}

/// An exponential histogram is a native histogram in the protobuf page, bucket for
/// bucket, and a classic one at powers of two on the text page; the other families are
/// the same in both.
#[test]
fn exponential_histograms_are_native_in_protobuf_and_classic_in_text() {
    let mut store = ingested(&with_exponential());
    let text = store.render(Format::Text, Translation::default());
    // Scale 1 merged to 0: negative bucket -1 is [-1, -0.5); positive 0, 1 are (1, 2],
    // 2, 3 are (2, 4]; the zero bucket ends at 0.001.
    let classic = "# HELP rpc_duration_seconds rpc_duration_seconds\n\
         # TYPE rpc_duration_seconds histogram\n\
         rpc_duration_seconds_bucket{job=\"checkout\",path=\"/a\",le=\"-0.5\"} 5\n\
         rpc_duration_seconds_bucket{job=\"checkout\",path=\"/a\",le=\"0.001\"} 7\n\
         rpc_duration_seconds_bucket{job=\"checkout\",path=\"/a\",le=\"2\"} 10\n\
         rpc_duration_seconds_bucket{job=\"checkout\",path=\"/a\",le=\"4\"} 17\n\
         rpc_duration_seconds_bucket{job=\"checkout\",path=\"/a\",le=\"+Inf\"} 17\n\
         rpc_duration_seconds_sum{job=\"checkout\",path=\"/a\"} 12.5\n\
         rpc_duration_seconds_count{job=\"checkout\",path=\"/a\"} 17\n";
    assert!(text.contains(classic), "{text}");

    let page = store.snapshot().protobuf(Translation::default());
    let families = sidekick_prometheus::exposition::decode(&page).unwrap();
    let family = |name: &str| {
        families
            .iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("no {name} in {families:#?}"))
    };
    let h = family("rpc_duration_seconds").metric[0]
        .histogram
        .clone()
        .unwrap();
    assert!(h.is_native());
    let native = sidekick_prometheus::exposition::native(&h).unwrap();
    assert_eq!((native.scale, native.count, native.zero_count), (1, 17, 2));
    assert_eq!(
        (native.positive.offset, native.positive.counts),
        (0, vec![1, 2, 3, 4])
    );
    assert_eq!(
        (native.negative.offset, native.negative.counts),
        (-1, vec![5])
    );
    let labels: Vec<(&str, &str)> = family("rpc_duration_seconds").metric[0]
        .label
        .iter()
        .map(|l| (l.name.as_str(), l.value.as_str()))
        .collect();
    assert_eq!(labels, [("job", "checkout"), ("path", "/a")]);
    // The classic histogram: its bucket, sum and count series as one histogram.
    let latency = &family("latency_seconds").metric;
    assert_eq!(latency.len(), 1);
    let classic = latency[0].histogram.clone().unwrap();
    assert!(!classic.is_native());
    assert_eq!((classic.sample_count, classic.sample_sum), (3, 1.5));
    let bounds: Vec<(f64, u64)> = classic
        .bucket
        .iter()
        .map(|b| (b.upper_bound, b.cumulative_count))
        .collect();
    assert_eq!(bounds, [(0.5, 1)]);
    let counter = &family("http_requests_total").metric[0];
    assert_eq!(counter.counter.as_ref().unwrap().value, 5.0);
    assert_eq!(counter.label[1].value, "/a\"b\\c");
    assert!(family("temperature_celsius").metric[0]
        .gauge
        .as_ref()
        .unwrap()
        .value
        .is_nan());
}

#[test]
fn the_protobuf_page_goes_to_scrapers_that_prefer_it() {
    let proto = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited";
    for (accept, wanted) in [
        (
            format!("{proto};q=0.6,application/openmetrics-text;version=1.0.0;q=0.5,*/*;q=0.1"),
            true,
        ),
        (format!("{proto},text/plain;version=0.0.4;q=0.5"), true),
        (format!("text/plain;version=0.0.4,{proto};q=0.8"), false),
        (
            format!("application/openmetrics-text;version=1.0.0,{proto}"),
            false,
        ),
        (
            "application/vnd.google.protobuf;proto=other.Message".to_string(),
            false,
        ),
        ("text/plain".to_string(), false),
        (String::new(), false),
    ] {
        assert_eq!(protobuf_first(&accept), wanted, "{accept}");
    }
}
