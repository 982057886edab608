use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point, summary_data_point::ValueAtQuantile, Exemplar as OtlpExemplar,
    ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint,
    Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

use super::*;

const T: u64 = 1_700_000_000_000_000_000;
const T_MS: i64 = 1_700_000_000_000;

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn number(v: f64, attrs: Vec<KeyValue>) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attrs,
        time_unix_nano: T,
        value: Some(number_data_point::Value::AsDouble(v)),
        ..Default::default()
    }
}

fn request(metrics: Vec<Metric>, resource: Vec<KeyValue>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: resource,
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "my.lib".into(),
                    version: "1.2".into(),
                    ..Default::default()
                }),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn service() -> Vec<KeyValue> {
    vec![
        kv("service.name", "checkout"),
        kv("service.namespace", "shop"),
        kv("service.instance.id", "pod-1"),
        kv("k8s.pod.name", "checkout-7d9f-abc"),
    ]
}

fn settings() -> Settings {
    Settings {
        target_info: true,
        ..Settings::default()
    }
}

fn run(req: &ExportMetricsServiceRequest, s: &Settings) -> Translation {
    translate(req, s, &mut Accumulator::default(), T_MS + 5)
}

/// `name{labels} value` lines, sorted, for compact assertions.
fn lines(t: &Translation) -> Vec<String> {
    let mut out: Vec<String> = t
        .series
        .iter()
        .map(|s| {
            let labels: Vec<String> = s
                .labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{v}\""))
                .collect();
            let v = if is_stale_nan(s.value) {
                "StaleNaN".to_string()
            } else {
                format!("{}", s.value)
            };
            format!("{}{{{}}} {v}", s.name, labels.join(","))
        })
        .collect();
    out.sort();
    out
}

const BASE: &str = "instance=\"pod-1\",job=\"shop/checkout\",otel_scope_name=\"my.lib\",otel_scope_version=\"1.2\"";

#[test]
fn gauges_and_sums() {
    let req = request(
        vec![
            Metric {
                name: "http.server.active_requests".into(),
                unit: "{request}".into(),
                description: "In flight.".into(),
                data: Some(Data::Gauge(Gauge {
                    data_points: vec![number(3.0, vec![kv("http.method", "GET")])],
                })),
                ..Default::default()
            },
            Metric {
                name: "http.server.requests".into(),
                data: Some(Data::Sum(Sum {
                    data_points: vec![number(7.0, vec![])],
                    aggregation_temporality: 2,
                    is_monotonic: true,
                })),
                ..Default::default()
            },
            Metric {
                name: "queue.size".into(),
                unit: "By".into(),
                data: Some(Data::Sum(Sum {
                    data_points: vec![number(-2.0, vec![])],
                    aggregation_temporality: 2,
                    is_monotonic: false,
                })),
                ..Default::default()
            },
        ],
        service(),
    );
    let t = run(&req, &settings());
    assert_eq!(
        lines(&t),
        vec![
            format!("http_server_active_requests{{http_method=\"GET\",{BASE}}} 3"),
            format!("http_server_requests_total{{{BASE}}} 7"),
            format!("queue_size_bytes{{{BASE}}} -2"),
            "target_info{instance=\"pod-1\",job=\"shop/checkout\",k8s_pod_name=\"checkout-7d9f-abc\"} 1".to_string(),
        ]
    );
    let kinds: Vec<(String, Kind, String)> = t
        .families
        .iter()
        .map(|f| (f.name.clone(), f.kind, f.unit.clone()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (
                "http_server_active_requests".into(),
                Kind::Gauge,
                String::new()
            ),
            (
                "http_server_requests_total".into(),
                Kind::Counter,
                String::new()
            ),
            ("queue_size_bytes".into(), Kind::Gauge, "bytes".into()),
            ("target_info".into(), Kind::Gauge, String::new()),
        ]
    );
    assert_eq!(t.families[0].help, "In flight.");
    assert!(t.series.iter().all(|s| s.timestamp_ms == T_MS));
}

#[test]
fn histograms_are_cumulative_with_inf() {
    let req = request(
        vec![Metric {
            name: "rpc.duration".into(),
            unit: "ms".into(),
            data: Some(Data::Histogram(Histogram {
                data_points: vec![HistogramDataPoint {
                    time_unix_nano: T,
                    count: 10,
                    sum: Some(55.5),
                    bucket_counts: vec![2, 3, 5],
                    explicit_bounds: vec![1.0, 2.5],
                    exemplars: vec![OtlpExemplar {
                        value: Some(
                            opentelemetry_proto::tonic::metrics::v1::exemplar::Value::AsDouble(2.0),
                        ),
                        trace_id: vec![1; 16],
                        span_id: vec![2; 8],
                        time_unix_nano: T,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                aggregation_temporality: 2,
            })),
            ..Default::default()
        }],
        vec![kv("service.name", "svc")],
    );
    let t = run(&req, &settings());
    let base = "job=\"svc\",otel_scope_name=\"my.lib\",otel_scope_version=\"1.2\"";
    let scope = "otel_scope_name=\"my.lib\",otel_scope_version=\"1.2\"";
    assert_eq!(
        lines(&t),
        vec![
            format!("rpc_duration_milliseconds_bucket{{job=\"svc\",le=\"+Inf\",{scope}}} 10"),
            format!("rpc_duration_milliseconds_bucket{{job=\"svc\",le=\"1\",{scope}}} 2"),
            format!("rpc_duration_milliseconds_bucket{{job=\"svc\",le=\"2.5\",{scope}}} 5"),
            format!("rpc_duration_milliseconds_count{{{base}}} 10"),
            format!("rpc_duration_milliseconds_sum{{{base}}} 55.5"),
        ]
    );
    let bucket = t
        .series
        .iter()
        .find(|s| s.labels.iter().any(|(k, v)| k == "le" && v == "2.5"))
        .unwrap();
    let e = bucket
        .exemplar
        .as_ref()
        .expect("exemplar on the bucket it falls in");
    assert_eq!(e.labels[0], ("trace_id".into(), "01".repeat(16)));
    assert!(
        t.families.iter().all(|f| f.name != "target_info"),
        "no other resource attributes, no target_info"
    );
}

#[test]
fn summaries_staleness_and_exponential() {
    let req = request(
        vec![
            Metric {
                name: "latency".into(),
                unit: "s".into(),
                data: Some(Data::Summary(Summary {
                    data_points: vec![SummaryDataPoint {
                        time_unix_nano: T,
                        count: 4,
                        sum: 2.0,
                        quantile_values: vec![ValueAtQuantile {
                            quantile: 0.99,
                            value: 0.9,
                        }],
                        ..Default::default()
                    }],
                })),
                ..Default::default()
            },
            Metric {
                name: "gone".into(),
                data: Some(Data::Gauge(Gauge {
                    data_points: vec![NumberDataPoint {
                        flags: 1,
                        ..number(1.0, vec![])
                    }],
                })),
                ..Default::default()
            },
            Metric {
                name: "exp".into(),
                data: Some(Data::ExponentialHistogram(ExponentialHistogram {
                    // Delta: not translated, counted.
                    data_points: vec![ExponentialHistogramDataPoint::default(); 2],
                    aggregation_temporality: 1,
                })),
                ..Default::default()
            },
        ],
        vec![],
    );
    let t = run(&req, &settings());
    let base = "otel_scope_name=\"my.lib\",otel_scope_version=\"1.2\"";
    assert_eq!(
        lines(&t),
        vec![
            format!("gone{{{base}}} StaleNaN"),
            format!("latency_seconds_count{{{base}}} 4"),
            format!("latency_seconds_sum{{{base}}} 2"),
            format!("latency_seconds{{{base},quantile=\"0.99\"}} 0.9"),
        ]
    );
    assert_eq!(t.dropped_points(), 2);
}

#[test]
fn options_change_names_and_labels() {
    let req = request(
        vec![Metric {
            name: "db.calls".into(),
            unit: "{call}".into(),
            data: Some(Data::Sum(Sum {
                data_points: vec![number(
                    1.0,
                    vec![
                        kv("db.system", "pg"),
                        kv("db-system", "x"),
                        kv("cluster", "mine"),
                    ],
                )],
                aggregation_temporality: 2,
                is_monotonic: true,
            })),
            ..Default::default()
        }],
        service(),
    );
    let s = Settings {
        strategy: TranslationStrategy::UnderscoreEscapingWithoutSuffixes,
        namespace: "app".into(),
        resource_to_telemetry: true,
        extra_labels: vec![
            ("cluster".into(), "prod".into()),
            ("region".into(), "eu".into()),
        ],
        target_info: false,
        native_histograms: false,
    };
    let t = run(&req, &s);
    assert_eq!(
        lines(&t),
        vec![format!(
            "app_db_calls{{cluster=\"mine\",db_system=\"x;pg\",instance=\"pod-1\",job=\"shop/checkout\",k8s_pod_name=\"checkout-7d9f-abc\",otel_scope_name=\"my.lib\",otel_scope_version=\"1.2\",region=\"eu\",service_instance_id=\"pod-1\",service_name=\"checkout\",service_namespace=\"shop\"}} 1"
        )]
    );
}

#[test]
fn delta_sums_and_histograms_accumulate() {
    let delta_sum = |v: f64| {
        request(
            vec![Metric {
                name: "events".into(),
                data: Some(Data::Sum(Sum {
                    data_points: vec![number(v, vec![])],
                    aggregation_temporality: 1,
                    is_monotonic: true,
                })),
                ..Default::default()
            }],
            vec![kv("service.name", "a")],
        )
    };
    let mut acc = Accumulator::default();
    let s = settings();
    translate(&delta_sum(3.0), &s, &mut acc, T_MS);
    let t = translate(&delta_sum(4.0), &s, &mut acc, T_MS);
    assert_eq!(t.series[0].value, 7.0);
    let delta_hist = || {
        request(
            vec![Metric {
                name: "size".into(),
                data: Some(Data::Histogram(Histogram {
                    data_points: vec![HistogramDataPoint {
                        time_unix_nano: T,
                        count: 3,
                        sum: Some(6.0),
                        bucket_counts: vec![1, 2],
                        explicit_bounds: vec![5.0],
                        ..Default::default()
                    }],
                    aggregation_temporality: 1,
                })),
                ..Default::default()
            }],
            vec![kv("service.name", "a")],
        )
    };
    translate(&delta_hist(), &s, &mut acc, T_MS);
    let t = translate(&delta_hist(), &s, &mut acc, T_MS);
    let count = t.series.iter().find(|s| s.name == "size_count").unwrap();
    assert_eq!(count.value, 6.0);
    let le5 = t
        .series
        .iter()
        .find(|s| s.labels.iter().any(|(k, v)| k == "le" && v == "5"))
        .unwrap();
    assert_eq!(le5.value, 2.0);
    assert_eq!(acc.len(), 2);
}

fn any(v: any_value::Value) -> AnyValue {
    AnyValue { value: Some(v) }
}

fn array(values: Vec<any_value::Value>) -> any_value::Value {
    any_value::Value::ArrayValue(opentelemetry_proto::tonic::common::v1::ArrayValue {
        values: values.into_iter().map(any).collect(),
    })
}

fn kvlist(members: Vec<(&str, Option<any_value::Value>)>) -> any_value::Value {
    any_value::Value::KvlistValue(opentelemetry_proto::tonic::common::v1::KeyValueList {
        values: members
            .into_iter()
            .map(|(k, v)| KeyValue {
                key: k.into(),
                value: v.map(any),
                ..Default::default()
            })
            .collect(),
    })
}

/// Non-string attribute values become label values the way the OpenTelemetry common spec
/// ("AnyValue representation for non-OTLP protocols") says, not Rust debug text.
#[test]
fn label_values_follow_the_anyvalue_string_rules() {
    use any_value::Value::*;
    let lv = |v: any_value::Value| label_value(Some(&any(v)));
    // Primitives at the top level: as they are, JSON literals, base64.
    assert_eq!(lv(StringValue("a \"b\"\n".into())), "a \"b\"\n");
    assert_eq!(lv(BoolValue(true)), "true");
    assert_eq!(lv(BoolValue(false)), "false");
    assert_eq!(lv(IntValue(-42)), "-42");
    assert_eq!(lv(IntValue(i64::MAX)), "9223372036854775807");
    assert_eq!(lv(DoubleValue(3.25)), "3.25");
    assert_eq!(lv(DoubleValue(2.0)), "2");
    assert_eq!(lv(DoubleValue(-0.5)), "-0.5");
    assert_eq!(lv(DoubleValue(f64::NAN)), "NaN");
    assert_eq!(lv(DoubleValue(f64::INFINITY)), "Infinity");
    assert_eq!(lv(DoubleValue(f64::NEG_INFINITY)), "-Infinity");
    assert_eq!(lv(BytesValue(b"hello world".to_vec())), "aGVsbG8gd29ybGQ=");
    assert_eq!(lv(BytesValue(b"h".to_vec())), "aA==");
    assert_eq!(lv(BytesValue(b"he".to_vec())), "aGU=");
    assert_eq!(lv(BytesValue(b"hel".to_vec())), "aGVs");
    assert_eq!(lv(BytesValue(vec![0xfb, 0xff, 0xbf])), "+/+/");
    assert_eq!(lv(BytesValue(Vec::new())), "");
    // Empty values: the empty string.
    assert_eq!(label_value(None), "");
    assert_eq!(label_value(Some(&AnyValue { value: None })), "");
    // Arrays: JSON arrays, strings escaped inside.
    assert_eq!(lv(array(vec![])), "[]");
    assert_eq!(
        lv(array(vec![
            StringValue("/usr/bin/app".into()),
            StringValue("--name=\"x\"".into()),
            StringValue("a\\b\tc\u{1}".into()),
        ])),
        r#"["/usr/bin/app","--name=\"x\"","a\\b\tc\u0001"]"#
    );
    assert_eq!(lv(array(vec![IntValue(1), IntValue(-2)])), "[1,-2]");
    assert_eq!(
        lv(array(vec![
            DoubleValue(1.5),
            DoubleValue(f64::NEG_INFINITY),
            DoubleValue(f64::NAN),
            DoubleValue(f64::INFINITY),
        ])),
        r#"[1.5,"-Infinity","NaN","Infinity"]"#
    );
    assert_eq!(
        lv(array(vec![BoolValue(true), BoolValue(false)])),
        "[true,false]"
    );
    assert_eq!(
        lv(array(vec![BytesValue(b"hello world".to_vec())])),
        r#"["aGVsbG8gd29ybGQ="]"#
    );
    // The spec's own example: mixed, with a nested map.
    assert_eq!(
        lv(array(vec![
            IntValue(1),
            DoubleValue(f64::NEG_INFINITY),
            StringValue("a".into()),
            BoolValue(true),
            kvlist(vec![("nested", Some(BytesValue(b"hello world".to_vec())))]),
        ])),
        r#"[1,"-Infinity","a",true,{"nested":"aGVsbG8gd29ybGQ="}]"#
    );
    // An empty element is null.
    let with_empty =
        any_value::Value::ArrayValue(opentelemetry_proto::tonic::common::v1::ArrayValue {
            values: vec![any(IntValue(3)), AnyValue { value: None }],
        });
    assert_eq!(lv(with_empty), "[3,null]");
    // Maps: JSON objects, members sorted by key, nested values recursively.
    assert_eq!(lv(kvlist(vec![])), "{}");
    assert_eq!(
        lv(kvlist(vec![
            ("c", Some(array(vec![IntValue(3)]))),
            ("a", Some(DoubleValue(f64::NEG_INFINITY))),
            ("b", Some(IntValue(2))),
            ("d", None),
        ])),
        r#"{"a":"-Infinity","b":2,"c":[3],"d":null}"#
    );
    assert_eq!(
        lv(kvlist(vec![(
            "outer \"key\"",
            Some(kvlist(vec![
                (
                    "list",
                    Some(array(vec![kvlist(vec![("x", Some(BoolValue(false)))])]))
                ),
                ("s", Some(StringValue("line\nbreak".into()))),
            ]))
        )])),
        r#"{"outer \"key\"":{"list":[{"x":false}],"s":"line\nbreak"}}"#
    );
    // The same map in another order is the same label value (and so the same series).
    assert_eq!(
        lv(kvlist(vec![
            ("b", Some(IntValue(1))),
            ("a", Some(IntValue(2)))
        ])),
        lv(kvlist(vec![
            ("a", Some(IntValue(2))),
            ("b", Some(IntValue(1)))
        ]))
    );
}

/// `target_info` carries array and map resource attributes as JSON, and the page stays
/// valid text (the JSON quotes are escaped like any label value).
#[test]
fn target_info_shows_arrays_and_maps_as_json() {
    use any_value::Value::*;
    let mut resource = vec![kv("service.name", "app"), kv("service.instance.id", "i")];
    resource.push(KeyValue {
        key: "process.command_args".into(),
        value: Some(any(array(vec![
            StringValue("/bin/app".into()),
            StringValue("--port".into()),
            StringValue("8080".into()),
        ]))),
        ..Default::default()
    });
    resource.push(KeyValue {
        key: "app.limits".into(),
        value: Some(any(kvlist(vec![
            ("mem", Some(IntValue(512))),
            ("cpu", Some(DoubleValue(0.5))),
        ]))),
        ..Default::default()
    });
    resource.push(KeyValue {
        key: "app.token".into(),
        value: Some(any(BytesValue(vec![1, 2, 3]))),
        ..Default::default()
    });
    let req = request(
        vec![Metric {
            name: "up.gauge".into(),
            data: Some(Data::Gauge(Gauge {
                data_points: vec![number(1.0, vec![])],
            })),
            ..Default::default()
        }],
        resource,
    );
    let t = run(&req, &settings());
    let info = t
        .series
        .iter()
        .find(|s| s.name == "target_info")
        .expect("target_info");
    let label = |k: &str| {
        info.labels
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(
        label("process_command_args"),
        Some(r#"["/bin/app","--port","8080"]"#)
    );
    assert_eq!(label("app_limits"), Some(r#"{"cpu":0.5,"mem":512}"#));
    assert_eq!(label("app_token"), Some("AQID"));
    assert!(info
        .labels
        .iter()
        .all(|(_, v)| !v.contains("ArrayValue") && !v.contains("KvlistValue")));
}

fn exponential_point(
    scale: i32,
    zero_count: u64,
    positive: (i32, Vec<u64>),
    negative: (i32, Vec<u64>),
) -> ExponentialHistogramDataPoint {
    use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets;
    let count = zero_count + positive.1.iter().sum::<u64>() + negative.1.iter().sum::<u64>();
    ExponentialHistogramDataPoint {
        time_unix_nano: T,
        count,
        sum: Some(12.5),
        scale,
        zero_count,
        zero_threshold: 1e-9,
        positive: Some(Buckets {
            offset: positive.0,
            bucket_counts: positive.1,
        }),
        negative: Some(Buckets {
            offset: negative.0,
            bucket_counts: negative.1,
        }),
        ..Default::default()
    }
}

/// An exponential histogram metric of `temporality` (1 delta, 2 cumulative).
fn exponential_metric(
    name: &str,
    unit: &str,
    temporality: i32,
    points: Vec<ExponentialHistogramDataPoint>,
) -> Metric {
    Metric {
        name: name.into(),
        unit: unit.into(),
        data: Some(Data::ExponentialHistogram(ExponentialHistogram {
            data_points: points,
            aggregation_temporality: temporality,
        })),
        ..Default::default()
    }
}

fn span(offset: i32, length: u32) -> crate::prompb::BucketSpan {
    crate::prompb::BucketSpan { offset, length }
}

#[test]
fn an_exponential_point_is_a_native_histogram_one_index_up() {
    // OTLP bucket -1 at scale 2 covers (2^-0.25, 1]: Prometheus's bucket 0.
    let p = exponential_point(2, 2, (-1, vec![0, 1, 0, 3, 0]), (4, vec![4]));
    let h = native_histogram(&p, T_MS).unwrap();
    assert_eq!((h.schema, h.count_int, h.sum), (2, 10, 12.5));
    assert_eq!((h.zero_count_int, h.zero_threshold), (2, 1e-9));
    // Empty buckets at either end are left out; the one inside stays as a zero.
    assert_eq!(h.positive_spans, vec![span(1, 3)]);
    assert_eq!(h.positive_deltas, vec![1, -1, 3]);
    assert_eq!(h.negative_spans, vec![span(5, 1)]);
    assert_eq!(h.negative_deltas, vec![4]);
    assert_eq!(h.timestamp, T_MS);
}

#[test]
fn a_scale_above_eight_merges_buckets_and_one_below_minus_four_is_refused() {
    // Scale 10 → 8: four buckets make one. OTLP indexes 5..=9 → 1, 1, 1, 2, 2.
    let p = exponential_point(10, 0, (5, vec![1, 1, 1, 1, 1]), (-3, vec![1, 1, 1]));
    let h = native_histogram(&p, T_MS).unwrap();
    assert_eq!(h.schema, 8);
    assert_eq!(h.positive_spans, vec![span(2, 2)]);
    assert_eq!(h.positive_deltas, vec![3, -1]);
    // Negative indexes round down: -3, -2, -1 → -1, -1, -1.
    assert_eq!(h.negative_spans, vec![span(0, 1)]);
    assert_eq!(h.negative_deltas, vec![3]);
    assert_eq!(h.count_int, 8);

    let coarse = exponential_point(-5, 0, (0, vec![1]), (0, vec![]));
    assert!(native_histogram(&coarse, T_MS).is_err());
    let mut wrong = exponential_point(0, 0, (0, vec![1, 2]), (0, vec![]));
    wrong.count = 4;
    assert!(native_histogram(&wrong, T_MS).is_err());
    // No recorded value: the stale marker, whatever the counts say.
    wrong.flags = 1;
    assert!(is_stale_nan(native_histogram(&wrong, T_MS).unwrap().sum));
}

#[test]
fn exponential_histograms_translate_only_where_native_histograms_are_taken() {
    let metric = |temporality: i32, points: Vec<ExponentialHistogramDataPoint>| {
        exponential_metric("http.server.request.duration", "s", temporality, points)
    };
    let good = exponential_point(3, 1, (0, vec![2, 3]), (0, vec![]));
    let mut bad = good.clone();
    bad.count += 1;
    let req = request(
        vec![
            metric(2, vec![good.clone(), bad]),
            metric(1, vec![good.clone()]),
        ],
        vec![],
    );
    let native = Settings {
        native_histograms: true,
        ..settings()
    };
    let mut seen = Vec::new();
    let t = translate_with(&req, &native, &mut Accumulator::default(), T_MS, &mut |s| {
        if let Some(h) = s.histogram {
            let mut labels = Vec::new();
            s.for_each_label(|k, v| labels.push(format!("{k}={v}")));
            seen.push((s.name.to_string(), labels, h.clone(), s.point));
        }
    });
    assert_eq!(seen.len(), 1);
    let (name, labels, h, point) = &seen[0];
    assert_eq!(name, "http_server_request_duration_seconds");
    assert_eq!(
        labels,
        &["otel_scope_name=my.lib", "otel_scope_version=1.2"]
    );
    assert_eq!((h.count_int, h.zero_count_int), (6, 1));
    assert_eq!(*point, Some(0));
    let family = &t.families[0];
    assert_eq!(
        (family.kind, family.unit.as_str()),
        (Kind::Histogram, "seconds")
    );
    // The inconsistent point and the delta one are counted, with their reasons.
    assert_eq!(t.dropped_points(), 2);
    assert!(t
        .dropped
        .iter()
        .any(|(_, why)| why.contains("total of its buckets")));
    assert!(t.dropped.iter().any(|(_, why)| why.contains("delta")));
    // The text page's translation shows the cumulative ones as classic histograms and
    // leaves out the delta one, counted.
    assert_eq!(run(&req, &settings()).dropped_points(), 1);
}

#[test]
fn the_text_formats_show_an_exponential_histogram_as_classic_buckets_at_powers_of_two() {
    // Scale 1: bucket k covers (2^(k/2), 2^((k+1)/2)]. Positive buckets 0..=3 hold
    // 1, 2, 3, 4 observations: merged to scale 0 they are (1, 2] = 3 and (2, 4] = 7.
    // One negative bucket, -1 at scale 1, is [-1, -2^-0.5): at scale 0, [-1, -0.5).
    let mut p = exponential_point(1, 2, (0, vec![1, 2, 3, 4]), (-1, vec![5]));
    p.count += 1;
    let c = classic_of(&p);
    assert_eq!(c.explicit_bounds, vec![-0.5, 1e-9, 2.0, 4.0]);
    assert_eq!(c.bucket_counts, vec![5, 2, 3, 7, 1]);
    assert_eq!((c.count, c.sum), (18, Some(12.5)));
    // A point coarser than powers of two keeps its own bounds: scale -1, bucket 1 is
    // (4, 16].
    let coarse = exponential_point(-1, 0, (1, vec![6]), (0, vec![]));
    let c = classic_of(&coarse);
    assert_eq!(
        (c.explicit_bounds, c.bucket_counts),
        (vec![16.0], vec![6, 0])
    );

    let req = request(
        vec![exponential_metric(
            "rpc.duration",
            "s",
            2,
            vec![exponential_point(
                3,
                0,
                (-8, vec![1, 0, 0, 0, 0, 0, 0, 0, 1]),
                (0, vec![]),
            )],
        )],
        vec![],
    );
    let t = run(&req, &settings());
    let base = "otel_scope_name=\"my.lib\",otel_scope_version=\"1.2\"";
    // OTLP buckets -8 and 0 at scale 3: (0.5, 0.545] and (1, 1.09]; at scale 0, (0.5, 1]
    // and (1, 2].
    assert_eq!(
        lines(&t),
        vec![
            format!("rpc_duration_seconds_bucket{{le=\"+Inf\",{base}}} 2"),
            format!("rpc_duration_seconds_bucket{{le=\"1\",{base}}} 1"),
            format!("rpc_duration_seconds_bucket{{le=\"2\",{base}}} 2"),
            format!("rpc_duration_seconds_count{{{base}}} 2"),
            format!("rpc_duration_seconds_sum{{{base}}} 12.5"),
        ]
    );
    assert_eq!(t.dropped_points(), 0);
}
