//! End to end: the real `sidekick` binary between the OpenTelemetry Rust SDK (over gRPC
//! and over HTTP) and a fake OTLP backend.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{attr, http_get, metric_value, runtime, Sidekick, TEST_TELEMETRY};
use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::{LogExporter, MetricExporter, SpanExporter, WithExportConfig};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use prost::Message;
use sidekick_testkit::gen::traces_request;
use sidekick_testkit::sink::OtlpSink;

const SPANS: usize = 300;
const LOGS: usize = 120;

fn pipeline_config(sink: &OtlpSink) -> String {
    format!(
        "receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:0
      http:
        endpoint: 127.0.0.1:0
processors:
  batch:
    send_batch_size: 100
    timeout: 100ms
exporters:
  otlp:
    endpoint: {url}
    compression: gzip
  otlphttp:
    endpoint: {url}
    compression: zstd
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [otlp]
    metrics:
      receivers: [otlp]
      processors: [batch]
      exporters: [otlphttp]
    logs:
      receivers: [otlp]
      processors: [batch]
      exporters: [otlp]
",
        url = sink.url()
    )
}

fn resource() -> Resource {
    Resource::builder()
        .with_service_name("e2e-app")
        .with_attribute(KeyValue::new("deployment.environment.name", "test"))
        .build()
}

fn string(s: &str) -> Value {
    Value::StringValue(s.to_string())
}

#[derive(Clone, Copy, PartialEq)]
enum Transport {
    Grpc,
    Http,
}

/// Sends traces, metrics and logs through Sidekick with the SDK and checks that the sink
/// got every item with names, attributes, ids and resources intact.
/// Which of the receiver's two listeners the SDK is pointed at: each serves both
/// protocols, so an SDK set to the other protocol's port still delivers.
#[derive(Clone, Copy)]
enum Port {
    Grpc,
    Http,
}

fn sdk_round_trip(transport: Transport, port: Port) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = runtime();
    let sink = rt.block_on(OtlpSink::start());
    let mut sk = Sidekick::start(&pipeline_config(&sink));
    let (endpoint, path) = match transport {
        Transport::Grpc => (format!("http://{}", listener(&sk, port)), None),
        Transport::Http => (format!("http://{}", listener(&sk, port)), Some(())),
    };
    let url = |signal: &str| match path {
        Some(()) => format!("{endpoint}/v1/{signal}"),
        None => endpoint.clone(),
    };

    // The tonic exporters need a Tokio runtime when built; the HTTP (blocking) ones must
    // be built outside one.
    let span_exporter = match transport {
        Transport::Grpc => rt.block_on(async {
            SpanExporter::builder()
                .with_tonic()
                .with_endpoint(url("traces"))
                .build()
        }),
        Transport::Http => SpanExporter::builder()
            .with_http()
            .with_endpoint(url("traces"))
            .build(),
    }
    .unwrap();
    let metric_exporter = match transport {
        Transport::Grpc => rt.block_on(async {
            MetricExporter::builder()
                .with_tonic()
                .with_endpoint(url("metrics"))
                .build()
        }),
        Transport::Http => MetricExporter::builder()
            .with_http()
            .with_endpoint(url("metrics"))
            .build(),
    }
    .unwrap();
    let log_exporter = match transport {
        Transport::Grpc => rt.block_on(async {
            LogExporter::builder()
                .with_tonic()
                .with_endpoint(url("logs"))
                .build()
        }),
        Transport::Http => LogExporter::builder()
            .with_http()
            .with_endpoint(url("logs"))
            .build(),
    }
    .unwrap();

    // Traces.
    let tracer_provider = SdkTracerProvider::builder()
        .with_batch_exporter(span_exporter)
        .with_resource(resource())
        .build();
    let tracer = tracer_provider.tracer("e2e-tracer");
    let mut sent = Vec::new();
    for i in 0..SPANS {
        let mut span = tracer.start(format!("op-{i}"));
        span.set_attribute(KeyValue::new("item", i as i64));
        span.set_attribute(KeyValue::new("http.route", "/api/items"));
        let cx = span.span_context().clone();
        sent.push((
            cx.trace_id().to_bytes().to_vec(),
            cx.span_id().to_bytes().to_vec(),
        ));
        span.end();
    }
    tracer_provider.force_flush().unwrap();
    tracer_provider.shutdown().unwrap();

    // Metrics: a counter and a histogram.
    let meter_provider = SdkMeterProvider::builder()
        .with_periodic_exporter(metric_exporter)
        .with_resource(resource())
        .build();
    let meter = meter_provider.meter("e2e-meter");
    let counter = meter.u64_counter("requests").with_unit("{request}").build();
    counter.add(5, &[KeyValue::new("route", "/a")]);
    counter.add(3, &[KeyValue::new("route", "/b")]);
    let histogram = meter.f64_histogram("latency").with_unit("s").build();
    histogram.record(0.25, &[]);
    meter_provider.force_flush().unwrap();
    meter_provider.shutdown().unwrap();

    // Logs.
    let logger_provider = SdkLoggerProvider::builder()
        .with_batch_exporter(log_exporter)
        .with_resource(resource())
        .build();
    let logger = logger_provider.logger("e2e-logger");
    for i in 0..LOGS {
        let mut record = logger.create_log_record();
        record.set_body(AnyValue::from(format!("log-{i}")));
        record.set_severity_number(Severity::Warn);
        record.set_severity_text("WARN");
        record.add_attribute("item", i as i64);
        logger.emit(record);
    }
    logger_provider.force_flush().unwrap();
    logger_provider.shutdown().unwrap();

    let arrived = rt.block_on(sink.wait_until(Duration::from_secs(20), |s| {
        s.span_count() >= SPANS && s.log_count() >= LOGS && s.metric_point_count() >= 3
    }));
    assert!(
        arrived,
        "spans {}, logs {}, points {}",
        sink.span_count(),
        sink.log_count(),
        sink.metric_point_count()
    );

    // Every span once, with ids, name, attributes, scope and resource intact.
    let mut seen = HashSet::new();
    for req in sink.traces() {
        for rs in &req.resource_spans {
            let res = rs.resource.as_ref().unwrap();
            assert_eq!(
                attr(&res.attributes, "service.name"),
                Some(&string("e2e-app"))
            );
            assert_eq!(
                attr(&res.attributes, "deployment.environment.name"),
                Some(&string("test"))
            );
            for ss in &rs.scope_spans {
                assert_eq!(ss.scope.as_ref().unwrap().name, "e2e-tracer");
                for span in &ss.spans {
                    let i: usize = span.name.strip_prefix("op-").unwrap().parse().unwrap();
                    assert_eq!(
                        attr(&span.attributes, "item"),
                        Some(&Value::IntValue(i as i64))
                    );
                    assert_eq!(
                        attr(&span.attributes, "http.route"),
                        Some(&string("/api/items"))
                    );
                    assert_eq!((span.trace_id.clone(), span.span_id.clone()), sent[i]);
                    assert!(seen.insert(i), "span {i} arrived twice");
                }
            }
        }
    }
    assert_eq!(seen.len(), SPANS);

    // Logs: bodies, severity, attributes, resource.
    let mut logs_seen = HashSet::new();
    for req in sink.logs() {
        for rl in &req.resource_logs {
            assert_eq!(
                attr(&rl.resource.as_ref().unwrap().attributes, "service.name"),
                Some(&string("e2e-app"))
            );
            for sl in &rl.scope_logs {
                assert_eq!(sl.scope.as_ref().unwrap().name, "e2e-logger");
                for l in &sl.log_records {
                    let Some(Value::StringValue(body)) =
                        l.body.as_ref().and_then(|b| b.value.clone())
                    else {
                        panic!("log without a string body")
                    };
                    let i: usize = body.strip_prefix("log-").unwrap().parse().unwrap();
                    assert_eq!(l.severity_number, Severity::Warn as i32);
                    assert_eq!(l.severity_text, "WARN");
                    assert_eq!(
                        attr(&l.attributes, "item"),
                        Some(&Value::IntValue(i as i64))
                    );
                    assert!(logs_seen.insert(i), "log {i} arrived twice");
                }
            }
        }
    }
    assert_eq!(logs_seen.len(), LOGS);

    // Metrics: the counter's sums per route and the histogram, with units.
    let mut sums = Vec::new();
    let mut histogram_count = 0;
    for req in sink.metrics() {
        for rm in &req.resource_metrics {
            assert_eq!(
                attr(&rm.resource.as_ref().unwrap().attributes, "service.name"),
                Some(&string("e2e-app"))
            );
            for m in rm.scope_metrics.iter().flat_map(|sm| &sm.metrics) {
                match (&m.name[..], &m.data) {
                    ("requests", Some(metric::Data::Sum(s))) => {
                        assert_eq!(m.unit, "{request}");
                        assert!(s.is_monotonic);
                        for p in &s.data_points {
                            let Some(Value::StringValue(route)) =
                                attr(&p.attributes, "route").cloned()
                            else {
                                panic!()
                            };
                            let Some(number_data_point::Value::AsInt(v)) = p.value else {
                                panic!()
                            };
                            sums.push((route, v));
                        }
                    }
                    ("latency", Some(metric::Data::Histogram(h))) => {
                        assert_eq!(m.unit, "s");
                        histogram_count += h.data_points.iter().map(|p| p.count).max().unwrap_or(0);
                        assert_eq!(h.data_points[0].sum, Some(0.25));
                    }
                    (name, _) => panic!("unexpected metric {name}"),
                }
            }
        }
    }
    assert!(
        sums.contains(&("/a".to_string(), 5)) && sums.contains(&("/b".to_string(), 3)),
        "{sums:?}"
    );
    assert!(histogram_count >= 1);

    // Self-metrics count what went through, under the Collector's names.
    let label = match transport {
        Transport::Grpc => "grpc",
        Transport::Http => "http",
    };
    let page = sk.metrics();
    assert_eq!(
        metric_value(
            &page,
            &format!(
                "otelcol_receiver_accepted_spans_total{{receiver=\"otlp\",transport=\"{label}\"}}"
            )
        ),
        Some(SPANS as f64),
        "{page}"
    );
    assert_eq!(
        metric_value(
            &page,
            "otelcol_exporter_sent_spans_total{exporter=\"otlp\"}"
        ),
        Some(SPANS as f64)
    );
    assert_eq!(
        metric_value(
            &page,
            "otelcol_exporter_sent_log_records_total{exporter=\"otlp\"}"
        ),
        Some(LOGS as f64)
    );
    assert!(metric_value(&page, "otelcol_process_memory_rss").unwrap() > 0.0);
    assert_eq!(http_get(sk.admin, "/readyz").0, 200);
    assert_eq!(http_get(sk.admin, "/healthz").0, 200);

    assert!(sk.terminate().success());
}

fn listener(sk: &Sidekick, port: Port) -> std::net::SocketAddr {
    match port {
        Port::Grpc => sk.grpc.unwrap(),
        Port::Http => sk.http.unwrap(),
    }
}

#[test]
fn sdk_over_grpc_reaches_the_backend_intact() {
    sdk_round_trip(Transport::Grpc, Port::Grpc);
}

#[test]
fn sdk_over_http_to_the_grpc_port_reaches_the_backend() {
    sdk_round_trip(Transport::Http, Port::Grpc);
}

#[test]
fn sdk_over_grpc_to_the_http_port_reaches_the_backend() {
    sdk_round_trip(Transport::Grpc, Port::Http);
}

#[test]
fn sdk_over_http_reaches_the_backend_intact() {
    sdk_round_trip(Transport::Http, Port::Http);
}

/// POSTs an encoded traces request to the OTLP/HTTP receiver.
async fn post_traces(
    client: &reqwest::Client,
    addr: std::net::SocketAddr,
    first: u64,
    spans: usize,
) -> u16 {
    let body = traces_request(first, 1, spans).encode_to_vec();
    client
        .post(format!("http://{addr}/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[test]
fn data_sent_just_before_sigterm_reaches_the_backend() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = runtime();
    let sink = rt.block_on(OtlpSink::start());
    // A batch processor that would hold data for a minute: only the shutdown flush can
    // deliver it in time.
    let mut sk = Sidekick::start(&format!(
        "receivers:\n  otlp:\n    protocols:\n      http:\n        endpoint: 127.0.0.1:0\nprocessors:\n  batch:\n    send_batch_size: 100000\n    timeout: 60s\nexporters:\n  otlp:\n    endpoint: {}\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [batch]\n      exporters: [otlp]\n",
        sink.url()
    ));
    let client = reqwest::Client::new();
    for i in 0..5 {
        assert_eq!(
            rt.block_on(post_traces(&client, sk.http.unwrap(), i * 10, 10)),
            200
        );
    }
    assert_eq!(
        sink.span_count(),
        0,
        "the batch processor should still hold the data"
    );
    let status = sk.terminate();
    assert!(status.success(), "exit {status}");
    assert_eq!(sink.span_count(), 50);
    assert!(sk
        .lines()
        .iter()
        .any(|l| l.contains("all accepted data was delivered")));
}

#[test]
fn exit_code_says_when_data_was_dropped() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = runtime();
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut sk = Sidekick::start(&format!(
        "receivers:\n  otlp:\n    protocols:\n      http:\n        endpoint: 127.0.0.1:0\nexporters:\n  otlp:\n    endpoint: http://127.0.0.1:{dead_port}\n    retry_on_failure:\n      initial_interval: 100ms\nservice:\n  shutdown_timeout: 1s\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [otlp]\n"
    ));
    let client = reqwest::Client::new();
    assert_eq!(
        rt.block_on(post_traces(&client, sk.http.unwrap(), 0, 7)),
        200
    );
    std::thread::sleep(Duration::from_millis(300));
    let page = sk.metrics();
    assert_eq!(
        metric_value(
            &page,
            "otelcol_exporter_sent_spans_total{exporter=\"otlp\"}"
        ),
        Some(0.0)
    );
    let status = sk.terminate();
    assert_eq!(status.code(), Some(3), "{}", sk.lines().join("\n"));
    let lines = sk.lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("dropped") && l.contains("\"dropped_items\":7")),
        "{}",
        lines.join("\n")
    );
}

#[test]
fn one_receiver_feeds_two_pipelines_and_each_exporter_gets_a_copy() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = runtime();
    let sink = rt.block_on(OtlpSink::start());
    let mut sk = Sidekick::start(&format!(
        "receivers:\n  otlp:\n    protocols:\n      http:\n        endpoint: 127.0.0.1:0\nprocessors:\n  batch:\n    timeout: 50ms\nexporters:\n  otlp/a:\n    endpoint: {url}\n  otlphttp/b:\n    endpoint: {url}\n  otlp/c:\n    endpoint: {url}\n    compression: none\nservice:\n  pipelines:\n    traces/one:\n      receivers: [otlp]\n      processors: [batch]\n      exporters: [otlp/a, otlphttp/b]\n    traces/two:\n      receivers: [otlp]\n      exporters: [otlp/c]\n",
        url = sink.url()
    ));
    let client = reqwest::Client::new();
    assert_eq!(
        rt.block_on(post_traces(&client, sk.http.unwrap(), 0, 10)),
        200
    );
    assert!(rt.block_on(sink.wait_until(Duration::from_secs(10), |s| s.span_count() >= 30)));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(sink.span_count(), 30);
    let page = sk.metrics();
    for exporter in ["otlp/a", "otlphttp/b", "otlp/c"] {
        assert_eq!(
            metric_value(
                &page,
                &format!("otelcol_exporter_sent_spans_total{{exporter=\"{exporter}\"}}")
            ),
            Some(10.0),
            "{page}"
        );
    }
    assert!(sk.terminate().success());
}

/// With the backend down, accepted data waits everywhere: in the exporter's one slot,
/// in flight, in the batch processor's buffer and in the queues in front of it and of
/// the memory limiter. At the shutdown deadline every accepted span is counted as
/// dropped, in the last log line and the exit code; none disappears uncounted.
#[test]
fn shutdown_counts_data_held_anywhere_as_dropped() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = runtime();
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut sk = Sidekick::start(&format!(
        "receivers:\n  otlp:\n    protocols:\n      http:\n        endpoint: 127.0.0.1:0\nprocessors:\n  memory_limiter:\n    limit_mib: 1000\n  batch:\n    send_batch_size: 5\n    timeout: 10ms\nexporters:\n  otlp:\n    endpoint: http://127.0.0.1:{dead_port}\n    sending_queue:\n      num_consumers: 1\n      sizer: requests\n      queue_size: 1\n    retry_on_failure:\n      initial_interval: 50ms\n      max_elapsed_time: 0s\nservice:\n  shutdown_timeout: 1s\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [memory_limiter, batch]\n      exporters: [otlp]\n"
    ));
    let client = reqwest::Client::new();
    let mut accepted = 0;
    for i in 0..12 {
        if rt.block_on(post_traces(&client, sk.http.unwrap(), i * 5, 5)) == 200 {
            accepted += 5;
        }
    }
    assert!(accepted >= 20, "{accepted}");
    let status = sk.terminate();
    assert_eq!(status.code(), Some(3), "{}", sk.lines().join("\n"));
    let lines = sk.lines();
    let last = lines
        .iter()
        .rev()
        .find(|l| l.contains("stopped;"))
        .unwrap_or_else(|| panic!("no final line:\n{}", lines.join("\n")));
    assert!(
        last.contains(&format!("\"dropped_items\":{accepted}")),
        "{accepted} accepted:\n{}",
        lines.join("\n")
    );
}

/// Posts an OTLP/HTTP protobuf traces request and returns the status.
async fn post_request(
    client: &reqwest::Client,
    addr: std::net::SocketAddr,
    request: &opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
) -> u16 {
    client
        .post(format!("http://{addr}/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(request.encode_to_vec())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn batching_pipeline(sink: &OtlpSink) -> String {
    format!(
        "receivers:\n  otlp:\n    protocols:\n      http:\n        endpoint: 127.0.0.1:0\nprocessors:\n  batch:\n    send_batch_size: 100000\n    timeout: 300ms\nexporters:\n  otlp:\n    endpoint: {}\n    compression: none\n    retry_on_failure:\n      initial_interval: 50ms\nservice:\n  shutdown_timeout: 5s\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [batch]\n      exporters: [otlp]\n",
        sink.url()
    )
}

/// A backend refuses any request holding one bad span. Five clients' requests share a
/// batch; only the bad span is dropped and counted, every other acknowledged span
/// arrives, and acknowledged = delivered + counted dropped, exactly.
#[test]
fn one_rejected_span_costs_only_itself() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = runtime();
    let sink = rt.block_on(OtlpSink::start());
    sink.reject_spans_named("bad");
    let mut sk = Sidekick::start(&batching_pipeline(&sink));
    let client = reqwest::Client::new();
    for i in 0..5u64 {
        let mut request = traces_request(i * 100, 1, 20);
        if i == 2 {
            request.resource_spans[0].scope_spans[0].spans[7].name = "bad".into();
        }
        assert_eq!(
            rt.block_on(post_request(&client, sk.http.unwrap(), &request)),
            200
        );
    }
    assert!(rt.block_on(sink.wait_until(Duration::from_secs(10), |s| s.span_count() == 99)));
    std::thread::sleep(Duration::from_millis(300));
    let page = sk.metrics();
    let value = |series: &str| metric_value(&page, series).unwrap_or(-1.0);
    let accepted =
        value("otelcol_receiver_accepted_spans_total{receiver=\"otlp\",transport=\"http\"}");
    let sent = value("otelcol_exporter_sent_spans_total{exporter=\"otlp\"}");
    let failed = value("otelcol_exporter_send_failed_spans_total{exporter=\"otlp\"}");
    assert_eq!((accepted, sent, failed), (100.0, 99.0, 1.0), "{page}");
    assert_eq!(sink.span_count(), 99);
    assert!(
        sink.rejected() >= 2,
        "the batch and the halves holding the bad span"
    );
    let status = sk.terminate();
    assert_eq!(status.code(), Some(3), "one span was dropped");
}

/// A backend with a small message size limit refuses the batch as too large; it is
/// split until every request fits, and everything arrives. The batch, over 1 MiB, is
/// split off the worker thread at first.
#[test]
fn a_backend_size_limit_is_met_by_splitting() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = runtime();
    let sink = rt.block_on(OtlpSink::start());
    sink.limit_request_size(16 << 10);
    let mut sk = Sidekick::start(&batching_pipeline(&sink));
    let client = reqwest::Client::new();
    let mut sent = 0;
    for i in 0..10u64 {
        let request = traces_request(i * 10_000, 1, 1000);
        sent += request.encoded_len();
        assert_eq!(
            rt.block_on(post_request(&client, sk.http.unwrap(), &request)),
            200
        );
    }
    assert!(sent > 1 << 20, "{sent} bytes");
    assert!(rt.block_on(sink.wait_until(Duration::from_secs(20), |s| s.span_count() == 10_000)));
    assert!(sink.rejected() >= 1);
    let page = sk.metrics();
    assert_eq!(
        metric_value(
            &page,
            "otelcol_exporter_send_failed_spans_total{exporter=\"otlp\"}"
        ),
        Some(0.0)
    );
    assert!(sk.terminate().success());
}

/// `sending_queue.batch`, as current Collector releases configure exporter-side batching:
/// small requests leave as one batch once `min_size` items wait, or after
/// `flush_timeout`.
#[test]
fn an_exporter_batches_in_front_of_its_queue() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = runtime();
    let sink = rt.block_on(OtlpSink::start());
    let mut sk = Sidekick::start(&format!(
        "receivers:\n  otlp:\n    protocols:\n      http:\n        endpoint: 127.0.0.1:0\nexporters:\n  otlp:\n    endpoint: {}\n    sending_queue:\n      batch:\n        flush_timeout: 300ms\n        min_size: 50\n        max_size: 60\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [otlp]\n",
        sink.url()
    ));
    let client = reqwest::Client::new();
    let http = sk.http.unwrap();
    // 7 requests of 10 spans: 50 go out together at once (60 at most), the other 20
    // after the flush timeout.
    for i in 0..7 {
        assert_eq!(rt.block_on(post_traces(&client, http, i * 10, 10)), 200);
    }
    let started = std::time::Instant::now();
    while sink.span_count() < 70 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "only {} spans",
            sink.span_count()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let sizes: Vec<usize> = sink
        .traces()
        .iter()
        .map(|r| {
            r.resource_spans
                .iter()
                .flat_map(|rs| &rs.scope_spans)
                .map(|ss| ss.spans.len())
                .sum()
        })
        .collect();
    assert!(
        sizes.len() <= 3 && sizes.iter().all(|n| (10..=60).contains(n)),
        "{sizes:?}"
    );
    assert_eq!(sizes[0], 50, "{sizes:?}");
    assert!(sk.terminate().success());
}

/// The names of the process's threads that serve its async work: tokio's workers and
/// the main thread (both named `sidekick`); the blocking pool's threads too, once any.
fn runtime_threads(sk: &Sidekick) -> usize {
    let tasks = std::fs::read_dir(format!("/proc/{}/task", sk.pid())).unwrap();
    tasks
        .filter_map(|t| std::fs::read_to_string(t.unwrap().path().join("comm")).ok())
        .filter(|name| name.trim() == "sidekick")
        .count()
}

/// Sidekick serves on one worker thread unless `SIDEKICK_WORKER_THREADS` asks for more,
/// and a batch large enough to be gzipped off that thread arrives whole.
#[test]
fn one_worker_thread_unless_told_and_large_batches_compressed_off_it() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = runtime();
    let sink = rt.block_on(OtlpSink::start());
    let config = batching_pipeline(&sink).replace("compression: none", "compression: gzip");

    let mut three = Sidekick::start_with_env(&config, &[("SIDEKICK_WORKER_THREADS", "3")]);
    assert_eq!(runtime_threads(&three), 1 + 3);
    assert!(three.terminate().success());

    let mut sk = Sidekick::start(&config);
    assert_eq!(runtime_threads(&sk), 1 + 1);
    let client = reqwest::Client::new();
    // About 500 KB of spans in one batch: far over what is compressed in place.
    for i in 0..5u64 {
        let request = traces_request(i * 1000, 1, 1000);
        assert_eq!(
            rt.block_on(post_request(&client, sk.http.unwrap(), &request)),
            200
        );
    }
    assert!(rt.block_on(sink.wait_until(Duration::from_secs(10), |s| s.span_count() == 5000)));
    let received: usize = sink.traces().iter().map(|r| r.encoded_len()).sum();
    assert!(received > 256 << 10, "{received} bytes");
    assert!(sk.terminate().success());

    let file = common::TempFile::new("sidekick.yaml", &format!("{config}{TEST_TELEMETRY}"));
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_sidekick"))
        .arg("--config")
        .arg(&file.0)
        .env("SIDEKICK_WORKER_THREADS", "many")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains(
            "SIDEKICK_WORKER_THREADS=\"many\" is not a thread count: write a whole number from 1 to 1024"
        ),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}
