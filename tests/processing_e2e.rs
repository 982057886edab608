//! End to end: a typical Collector sidecar config's processing (filter, transform,
//! probabilistic_sampler, batch) in the real binary, fed by the OpenTelemetry Rust SDK,
//! checked at a fake OTLP backend item by item.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{attr, metric_value, runtime, Sidekick};
use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::{LogExporter, SpanExporter, WithExportConfig};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use sidekick_processors::probabilistic_sampler::decide::hash_seed_sampled;
use sidekick_testkit::sink::OtlpSink;

const SPANS: usize = 400;
const SEED: u32 = 22;

fn config(sink: &OtlpSink) -> String {
    format!(
        r#"receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:0
processors:
  filter:
    traces:
      span:
        - 'attributes["http.route"] == "/healthz"'
    logs:
      log_record:
        - 'severity_number < SEVERITY_NUMBER_INFO'
  transform:
    trace_statements:
      - context: span
        statements:
          - set(attributes["deployment.environment.name"], "prod")
          - delete_key(attributes, "http.request.header.authorization")
    log_statements:
      - set(log.attributes["kept"], Concat(["sev", log.severity_text], "-"))
  probabilistic_sampler:
    sampling_percentage: 50
    hash_seed: {SEED}
  batch:
    timeout: 100ms
exporters:
  otlp:
    endpoint: {url}
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [filter, transform, probabilistic_sampler, batch]
      exporters: [otlp]
    logs:
      receivers: [otlp]
      processors: [filter, transform, batch]
      exporters: [otlp]
"#,
        url = sink.url()
    )
}

#[test]
fn a_sidecar_configs_processing_runs_with_the_collectors_semantics() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = runtime();
    let sink = rt.block_on(OtlpSink::start());
    let mut sk = Sidekick::start(&config(&sink));
    let endpoint = format!("http://{}", sk.grpc.unwrap());

    let exporter = rt
        .block_on(async {
            SpanExporter::builder()
                .with_tonic()
                .with_endpoint(&endpoint)
                .build()
        })
        .unwrap();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .build();
    let tracer = provider.tracer("processing-e2e");
    // Every tenth span is a health check; every span carries a credential header.
    let mut expected = HashSet::new();
    let mut health = 0;
    for i in 0..SPANS {
        let mut span = tracer.start(format!("op-{i}"));
        let route = if i % 10 == 0 {
            "/healthz"
        } else {
            "/api/items"
        };
        span.set_attribute(KeyValue::new("http.route", route));
        span.set_attribute(KeyValue::new(
            "http.request.header.authorization",
            "Bearer secret",
        ));
        let cx = span.span_context().clone();
        span.end();
        if route == "/healthz" {
            health += 1;
        } else if hash_seed_sampled(SEED, 50.0, &cx.trace_id().to_bytes()) {
            expected.insert(cx.span_id().to_bytes().to_vec());
        }
    }
    provider.force_flush().unwrap();
    provider.shutdown().unwrap();

    let log_exporter = rt
        .block_on(async {
            LogExporter::builder()
                .with_tonic()
                .with_endpoint(&endpoint)
                .build()
        })
        .unwrap();
    let logs = SdkLoggerProvider::builder()
        .with_batch_exporter(log_exporter)
        .build();
    let logger = logs.logger("processing-e2e");
    for (i, (severity, text)) in [
        (Severity::Debug, "DEBUG"),
        (Severity::Info, "INFO"),
        (Severity::Error, "ERROR"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut record = logger.create_log_record();
        record.set_body(AnyValue::from(format!("log-{i}")));
        record.set_severity_number(severity);
        record.set_severity_text(text);
        logger.emit(record);
    }
    logs.force_flush().unwrap();
    logs.shutdown().unwrap();

    let arrived = rt.block_on(sink.wait_until(Duration::from_secs(20), |s| {
        s.span_count() >= expected.len() && s.log_count() >= 2
    }));
    assert!(
        arrived,
        "spans {} of {}, logs {}",
        sink.span_count(),
        expected.len(),
        sink.log_count()
    );
    // Let anything that should not arrive have its chance to.
    std::thread::sleep(Duration::from_millis(500));

    let mut seen = HashSet::new();
    for req in sink.traces() {
        for span in req
            .resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| &ss.spans)
        {
            assert_eq!(
                attr(&span.attributes, "http.route"),
                Some(&Value::StringValue("/api/items".into())),
                "health checks are filtered"
            );
            assert_eq!(
                attr(&span.attributes, "deployment.environment.name"),
                Some(&Value::StringValue("prod".into()))
            );
            assert_eq!(
                attr(&span.attributes, "http.request.header.authorization"),
                None
            );
            // The Collector's hash_seed mode writes the randomness and 50%'s threshold.
            assert!(
                span.trace_state.starts_with("ot=rv:") && span.trace_state.ends_with(";th:8"),
                "{}",
                span.trace_state
            );
            assert!(seen.insert(span.span_id.clone()), "a span arrived twice");
        }
    }
    assert_eq!(
        seen, expected,
        "exactly the spans the Collector's algorithm samples"
    );
    assert!(
        expected.len() > SPANS / 4 && expected.len() < SPANS * 3 / 4,
        "{}",
        expected.len()
    );

    let mut bodies = Vec::new();
    for req in sink.logs() {
        for l in req
            .resource_logs
            .iter()
            .flat_map(|rl| &rl.scope_logs)
            .flat_map(|sl| &sl.log_records)
        {
            let Some(Value::StringValue(body)) = l.body.as_ref().and_then(|b| b.value.clone())
            else {
                panic!("body")
            };
            assert_eq!(
                attr(&l.attributes, "kept"),
                Some(&Value::StringValue(format!("sev-{}", l.severity_text)))
            );
            bodies.push(body);
        }
    }
    bodies.sort();
    assert_eq!(bodies, ["log-1", "log-2"], "the debug record is filtered");

    let page = sk.metrics();
    assert_eq!(
        metric_value(
            &page,
            r#"otelcol_processor_filter_spans_filtered_total{filter="filter"}"#
        ),
        Some(health as f64),
        "{page}"
    );
    assert_eq!(
        metric_value(
            &page,
            r#"otelcol_processor_filter_logs_filtered_total{filter="filter"}"#
        ),
        Some(1.0),
        "{page}"
    );
    assert_eq!(
        metric_value(
            &page,
            r#"otelcol_processor_probabilistic_sampler_count_traces_sampled_total{processor="probabilistic_sampler",policy="trace_id_hash",sampled="true"}"#
        ),
        Some(expected.len() as f64),
        "{page}"
    );
    assert!(
        sk.terminate().success(),
        "nothing acknowledged was lost: filtered and unsampled items are not losses"
    );
}

/// `error_mode: propagate` on a processor that leads its pipeline: a request with an
/// item the statement fails on is refused to the SDK (gRPC `INVALID_ARGUMENT`, HTTP 400,
/// not retryable: it would fail the same way again) and none of its items goes on;
/// other requests pass. Nothing refused was acknowledged, so nothing is lost.
#[test]
fn propagate_refuses_the_request_to_the_sdk() {
    use opentelemetry::trace::{
        SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
    };
    use opentelemetry::InstrumentationScope;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
    use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
    use prost::Message;

    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = runtime();
    let sink = rt.block_on(OtlpSink::start());
    let mut sk = Sidekick::start(&format!(
        r#"receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:0
      http:
        endpoint: 127.0.0.1:0
processors:
  memory_limiter:
    limit_mib: 4000
  transform:
    error_mode: propagate
    trace_statements:
      - set(span.attributes["next"], span.attributes["count"] + 1)
  batch:
    timeout: 50ms
exporters:
  otlp:
    endpoint: {url}
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [memory_limiter, transform, batch]
      exporters: [otlp]
"#,
        url = sink.url()
    ));
    let mut next_id = 0u64;
    let mut span = |name: &str, count: opentelemetry::Value| {
        next_id += 1;
        SpanData {
            span_context: SpanContext::new(
                TraceId::from_bytes((next_id as u128).to_be_bytes()),
                SpanId::from_bytes(next_id.to_be_bytes()),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: name.to_string().into(),
            start_time: std::time::SystemTime::now(),
            end_time: std::time::SystemTime::now(),
            attributes: vec![KeyValue::new("count", count)],
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: InstrumentationScope::builder("propagate").build(),
        }
    };
    let good = vec![span("good-1", 1.into()), span("good-2", 41.into())];
    let bad = vec![span("with-good", 5.into()), span("bad", "seven".into())];

    let endpoint = format!("http://{}", sk.grpc.unwrap());
    let (ok, refused) = rt.block_on(async {
        let exporter = SpanExporter::builder()
            .with_tonic()
            .with_endpoint(&endpoint)
            .build()
            .unwrap();
        (exporter.export(good).await, exporter.export(bad).await)
    });
    ok.unwrap();
    let refused = refused.unwrap_err().to_string();
    assert!(refused.contains("InvalidArgument"), "{refused}");
    assert!(
        sk.lines()
            .iter()
            .any(|l| l.contains("error_mode: propagate") && l.contains("math")),
        "the refusal is logged with its reason:\n{}",
        sk.lines().join("\n")
    );

    // The same over OTLP/HTTP.
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![
                    opentelemetry_proto::tonic::trace::v1::Span {
                        trace_id: vec![9; 16],
                        span_id: vec![9; 8],
                        name: "http-bad".into(),
                        attributes: vec![opentelemetry_proto::tonic::common::v1::KeyValue {
                            key: "count".into(),
                            value: Some(opentelemetry_proto::tonic::common::v1::AnyValue {
                                value: Some(Value::BoolValue(true)),
                            }),
                            ..Default::default()
                        }],
                        ..Default::default()
                    };
                    1
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let http = sk.http.unwrap();
    let status = rt.block_on(async {
        reqwest::Client::new()
            .post(format!("http://{http}/v1/traces"))
            .header("content-type", "application/x-protobuf")
            .body(request.encode_to_vec())
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status, 400);

    assert!(rt.block_on(sink.wait_until(Duration::from_secs(10), |s| s.span_count() >= 2)));
    std::thread::sleep(Duration::from_millis(300));
    let mut names = Vec::new();
    for span in sink
        .traces()
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
    {
        let Some(Value::IntValue(count)) = attr(&span.attributes, "count").cloned() else {
            panic!("count");
        };
        assert_eq!(
            attr(&span.attributes, "next"),
            Some(&Value::IntValue(count + 1))
        );
        names.push(span.name.clone());
    }
    names.sort();
    assert_eq!(
        names,
        ["good-1", "good-2"],
        "nothing of a refused request goes on"
    );

    let page = sk.metrics();
    assert_eq!(
        metric_value(
            &page,
            r#"otelcol_receiver_refused_spans_total{receiver="otlp",transport="grpc"}"#
        ),
        Some(2.0),
        "{page}"
    );
    assert_eq!(
        metric_value(
            &page,
            r#"otelcol_receiver_refused_spans_total{receiver="otlp",transport="http"}"#
        ),
        Some(1.0),
        "{page}"
    );
    assert!(
        sk.terminate().success(),
        "a refused request was never acknowledged, so nothing was lost"
    );
}
