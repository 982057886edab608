//! Deterministic OTLP data. Item `n` (counting from `first`) is named `span-n`,
//! `metric-n` or `log-n` and has ids derived from `n`, so tests can check that every item
//! arrived once and in order.

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use sidekick_collector::payload::{Logs, Metrics, Traces};

pub fn string_kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn resource(r: usize) -> Option<Resource> {
    Some(Resource {
        attributes: vec![
            string_kv("service.name", &format!("service-{r}")),
            string_kv("host.name", "node-1"),
        ],
        ..Default::default()
    })
}

fn scope() -> Option<InstrumentationScope> {
    Some(InstrumentationScope {
        name: "sidekick.testkit".into(),
        version: "1.0.0".into(),
        ..Default::default()
    })
}

/// A realistic span: 16-byte trace id, 8-byte span id, a few attributes.
pub fn span(n: u64) -> Span {
    let mut trace_id = [0u8; 16];
    trace_id[..8].copy_from_slice(&n.to_be_bytes());
    trace_id[8..].copy_from_slice(&(!n).to_be_bytes());
    Span {
        trace_id: trace_id.to_vec(),
        span_id: (n + 1).to_be_bytes().to_vec(),
        parent_span_id: Vec::new(),
        name: format!("span-{n}"),
        kind: span::SpanKind::Server as i32,
        start_time_unix_nano: 1_700_000_000_000_000_000 + n * 1000,
        end_time_unix_nano: 1_700_000_000_000_000_000 + n * 1000 + 500,
        attributes: vec![
            string_kv("http.request.method", "GET"),
            string_kv("url.path", "/api/v1/items"),
            KeyValue {
                key: "http.response.status_code".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::IntValue(200)),
                }),
                ..Default::default()
            },
        ],
        status: Some(Status {
            code: 1,
            message: String::new(),
        }),
        ..Default::default()
    }
}

/// `resources` resources of one scope each, `per_resource` spans each, numbered from `first`.
pub fn traces_request(
    first: u64,
    resources: usize,
    per_resource: usize,
) -> ExportTraceServiceRequest {
    let mut n = first;
    ExportTraceServiceRequest {
        resource_spans: (0..resources)
            .map(|r| ResourceSpans {
                resource: resource(r),
                scope_spans: vec![ScopeSpans {
                    scope: scope(),
                    spans: (0..per_resource)
                        .map(|_| {
                            n += 1;
                            span(n - 1)
                        })
                        .collect(),
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            })
            .collect(),
    }
}

fn int_kv(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..Default::default()
    }
}

/// A span as an instrumented HTTP server's SDK sends it: a child span with ten
/// attributes of the HTTP semantic conventions, flags and an OK status, about 400 bytes
/// encoded.
pub fn http_span(n: u64) -> Span {
    let mut s = span(n);
    s.parent_span_id = (n + 2).to_be_bytes().to_vec();
    s.name = "GET /api/v1/items/{id}".into();
    s.flags = 0x101;
    s.attributes = vec![
        string_kv("http.request.method", "GET"),
        string_kv("http.route", "/api/v1/items/{id}"),
        string_kv("url.path", &format!("/api/v1/items/{n}")),
        string_kv("url.scheme", "https"),
        int_kv("http.response.status_code", 200),
        string_kv("server.address", "items.shop.svc.cluster.local"),
        int_kv("server.port", 8443),
        string_kv("network.protocol.version", "1.1"),
        string_kv(
            "user_agent.original",
            "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0",
        ),
        string_kv(
            "client.address",
            &format!("10.1.{}.{}", n / 256 % 256, n % 256),
        ),
    ];
    s
}

/// One request of `spans` [`http_span`]s from one service: the shape an SDK exports.
pub fn http_traces_request(first: u64, spans: usize) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource(0),
            scope_spans: vec![ScopeSpans {
                scope: scope(),
                spans: (first..first + spans as u64).map(http_span).collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

/// An encoded traces batch, as a receiver would make it.
pub fn traces(first: u64, resources: usize, per_resource: usize) -> Traces {
    let bytes = traces_request(first, resources, per_resource).encode_to_vec();
    Traces::from_encoded(Bytes::from(bytes)).expect("generated data is valid")
}

pub fn metrics_request(
    first: u64,
    resources: usize,
    per_resource: usize,
) -> ExportMetricsServiceRequest {
    let mut n = first;
    ExportMetricsServiceRequest {
        resource_metrics: (0..resources)
            .map(|r| ResourceMetrics {
                resource: resource(r),
                scope_metrics: vec![ScopeMetrics {
                    scope: scope(),
                    metrics: (0..per_resource)
                        .map(|_| {
                            n += 1;
                            Metric {
                                name: format!("metric-{}", n - 1),
                                unit: "1".into(),
                                data: Some(metric::Data::Gauge(Gauge {
                                    data_points: vec![NumberDataPoint {
                                        time_unix_nano: 1_700_000_000_000_000_000,
                                        value: Some(number_data_point::Value::AsInt(
                                            (n - 1) as i64,
                                        )),
                                        ..Default::default()
                                    }],
                                })),
                                ..Default::default()
                            }
                        })
                        .collect(),
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            })
            .collect(),
    }
}

pub fn metrics(first: u64, resources: usize, per_resource: usize) -> Metrics {
    let bytes = metrics_request(first, resources, per_resource).encode_to_vec();
    Metrics::from_encoded(Bytes::from(bytes)).expect("generated data is valid")
}

pub fn logs_request(first: u64, resources: usize, per_resource: usize) -> ExportLogsServiceRequest {
    let mut n = first;
    ExportLogsServiceRequest {
        resource_logs: (0..resources)
            .map(|r| ResourceLogs {
                resource: resource(r),
                scope_logs: vec![ScopeLogs {
                    scope: scope(),
                    log_records: (0..per_resource)
                        .map(|_| {
                            n += 1;
                            LogRecord {
                                time_unix_nano: 1_700_000_000_000_000_000,
                                severity_number: 9,
                                severity_text: "INFO".into(),
                                body: Some(AnyValue {
                                    value: Some(any_value::Value::StringValue(format!(
                                        "log-{}",
                                        n - 1
                                    ))),
                                }),
                                ..Default::default()
                            }
                        })
                        .collect(),
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            })
            .collect(),
    }
}

pub fn logs(first: u64, resources: usize, per_resource: usize) -> Logs {
    let bytes = logs_request(first, resources, per_resource).encode_to_vec();
    Logs::from_encoded(Bytes::from(bytes)).expect("generated data is valid")
}

/// Span names in order.
pub fn span_names(request: &ExportTraceServiceRequest) -> Vec<String> {
    request
        .resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .map(|s| s.name.clone())
        .collect()
}

/// A Prometheus text page of exactly `samples` samples (a multiple of 10,000 works
/// best): 30% counters, 30% gauges, 27.5% histogram lines (11 per series), 12.5% summary
/// lines (5 per series), each family with HELP and TYPE and three or four labels.
pub fn prometheus_page(samples: usize) -> String {
    use std::fmt::Write as _;
    let counters = samples * 3 / 10;
    let gauges = samples * 3 / 10;
    let histograms = samples * 275 / 1000 / 11;
    let summaries = (samples - counters - gauges - histograms * 11) / 5;
    let mut p = String::with_capacity(samples * 90);
    p.push_str("# HELP http_requests_total Requests served.\n# TYPE http_requests_total counter\n");
    for i in 0..counters {
        let _ = writeln!(
            p,
            "http_requests_total{{method=\"GET\",route=\"/api/v1/items/{}\",code=\"{}\"}} {}",
            i / 3,
            [200, 404, 500][i % 3],
            i * 7
        );
    }
    p.push_str("# HELP queue_depth Items waiting.\n# TYPE queue_depth gauge\n");
    for i in 0..gauges {
        let _ = writeln!(
            p,
            "queue_depth{{queue=\"q{i}\",shard=\"{}\",zone=\"eu-west-1a\"}} {}.5",
            i % 16,
            i % 100
        );
    }
    p.push_str(
        "# HELP request_duration_seconds Latency.\n# TYPE request_duration_seconds histogram\n",
    );
    for i in 0..histograms {
        let mut cumulative = 0;
        for le in [
            "0.005", "0.01", "0.05", "0.1", "0.5", "1", "5", "10", "+Inf",
        ] {
            cumulative += i % 7 + 1;
            let _ = writeln!(p, "request_duration_seconds_bucket{{route=\"/r{i}\",method=\"GET\",le=\"{le}\"}} {cumulative}");
        }
        let _ = writeln!(
            p,
            "request_duration_seconds_sum{{route=\"/r{i}\",method=\"GET\"}} {}.25",
            i
        );
        let _ = writeln!(
            p,
            "request_duration_seconds_count{{route=\"/r{i}\",method=\"GET\"}} {cumulative}"
        );
    }
    p.push_str("# HELP rpc_seconds RPC latency.\n# TYPE rpc_seconds summary\n");
    for i in 0..summaries {
        for q in ["0.5", "0.9", "0.99"] {
            let _ = writeln!(
                p,
                "rpc_seconds{{service=\"s{i}\",quantile=\"{q}\"}} 0.{}",
                i % 10
            );
        }
        let _ = writeln!(p, "rpc_seconds_sum{{service=\"s{i}\"}} {i}.5");
        let _ = writeln!(p, "rpc_seconds_count{{service=\"s{i}\"}} {}", i + 10);
    }
    p
}

/// `families` gauges with `series` data points each (distinct `series` attribute), in one
/// resource: the shape of a real scrape page.
pub fn metrics_families(families: usize, series: usize) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource(0),
            scope_metrics: vec![ScopeMetrics {
                scope: scope(),
                metrics: (0..families)
                    .map(|f| Metric {
                        name: format!("family_{f}"),
                        unit: "By".into(),
                        description: "Generated.".into(),
                        data: Some(metric::Data::Gauge(Gauge {
                            data_points: (0..series)
                                .map(|s| NumberDataPoint {
                                    attributes: vec![
                                        string_kv("series", &s.to_string()),
                                        string_kv("zone", "eu-west-1a"),
                                    ],
                                    time_unix_nano: 1_700_000_000_000_000_000,
                                    value: Some(number_data_point::Value::AsDouble(s as f64)),
                                    ..Default::default()
                                })
                                .collect(),
                        })),
                        ..Default::default()
                    })
                    .collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

/// A protobuf exposition page (`sidekick_prometheus::exposition`) of `series` native
/// histograms at schema 3 (each with a zero bucket, two spans on the positive side, one
/// on the negative, and an exemplar), plus a classic histogram, a summary and a counter
/// with an exemplar and a created timestamp.
pub fn protobuf_page(series: usize) -> Vec<u8> {
    use sidekick_prometheus::exposition::*;
    let label = |name: &str, value: &str| LabelPair {
        name: name.into(),
        value: value.into(),
    };
    let exemplar = |value: f64| Exemplar {
        label: vec![label("trace_id", "0102030405060708090a0b0c0d0e0f10")],
        value,
        timestamp: Some(Timestamp::from_ms(1_700_000_000_000)),
    };
    let natives = (0..series)
        .map(|i| Metric {
            label: vec![label("path", &format!("/api/{i}")), label("method", "GET")],
            histogram: Some(Histogram {
                // The buckets' total: 1 zero, 13 positive, 1 negative.
                sample_count: 15,
                sample_sum: 3.25,
                schema: 3,
                zero_threshold: 1e-9,
                zero_count: 1,
                positive_span: vec![
                    BucketSpan {
                        offset: -20 + i as i32 % 7,
                        length: 3,
                    },
                    BucketSpan {
                        offset: 4,
                        length: 2,
                    },
                ],
                positive_delta: vec![1, 2, -1, 0, 3],
                negative_span: vec![BucketSpan {
                    offset: 2,
                    length: 1,
                }],
                negative_delta: vec![1],
                created_timestamp: Some(Timestamp::from_ms(1_699_999_000_000)),
                exemplars: vec![exemplar(0.01)],
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    encode(&[
        MetricFamily {
            name: "http_request_duration_seconds".into(),
            help: "Request latency.".into(),
            r#type: MetricType::Histogram as i32,
            metric: natives,
            unit: String::new(),
        },
        MetricFamily {
            name: "payload_bytes".into(),
            help: "Payload sizes.".into(),
            r#type: MetricType::Histogram as i32,
            metric: vec![Metric {
                histogram: Some(Histogram {
                    sample_count: 5,
                    sample_sum: 900.0,
                    bucket: [(100.0, 2), (1000.0, 5)]
                        .iter()
                        .map(|&(upper_bound, cumulative_count)| Bucket {
                            cumulative_count,
                            upper_bound,
                            exemplar: Some(exemplar(upper_bound / 2.0)),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            unit: "bytes".into(),
        },
        MetricFamily {
            name: "rpc_duration_seconds".into(),
            help: String::new(),
            r#type: MetricType::Summary as i32,
            metric: vec![Metric {
                summary: Some(Summary {
                    sample_count: 3,
                    sample_sum: 1.5,
                    quantile: vec![Quantile {
                        quantile: 0.99,
                        value: 0.9,
                    }],
                    created_timestamp: None,
                }),
                timestamp_ms: 1_700_000_000_000,
                ..Default::default()
            }],
            unit: String::new(),
        },
        MetricFamily {
            name: "requests_total".into(),
            help: "Requests.".into(),
            r#type: MetricType::Counter as i32,
            metric: vec![Metric {
                label: vec![label("code", "200")],
                counter: Some(Counter {
                    value: 42.0,
                    exemplar: Some(exemplar(1.0)),
                    created_timestamp: Some(Timestamp::from_ms(1_699_999_000_000)),
                }),
                ..Default::default()
            }],
            unit: String::new(),
        },
    ])
}
