use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span};
use prost::Message;
use sidekick_collector::component::Sieve;
use sidekick_collector::config::{from_node, node};
use sidekick_collector::payload::{Batch, LogsSignal, MetricsSignal, Signal, TracesSignal};

use super::*;

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn get<'a>(attrs: &'a [KeyValue], k: &str) -> Option<&'a str> {
    attrs.iter().rev().find(|a| a.key == k).and_then(|a| {
        match a.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        }
    })
}

fn config(yaml: &str) -> Config {
    let (root, _) = node::parse(yaml, &std::collections::HashMap::new()).unwrap();
    from_node(&root, "processors.transform").unwrap()
}

fn sift<S: Signal>(yaml: &str, batch: &mut Batch<S>) -> Result<(), String> {
    let telemetry = Telemetry::new();
    let t = Transform::new(&config(yaml), S::KIND, &telemetry, "transform")
        .unwrap_or_else(|e| panic!("{e:?}"));
    t.sift(batch)
}

fn traces() -> Batch<TracesSignal> {
    let span = |name: &str, kind: span::SpanKind| Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        name: name.into(),
        kind: kind as i32,
        attributes: vec![
            kv("http.request.header.authorization", "secret"),
            kv("http.route", "/users"),
        ],
        ..Default::default()
    };
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("k8s.namespace.name", "shop"), kv("host.name", "h")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![
                    span("server", span::SpanKind::Server),
                    span("client", span::SpanKind::Client),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    Batch::from_encoded(Bytes::from(request.encode_to_vec())).unwrap()
}

fn decode(b: &Batch<TracesSignal>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest::decode(b.encoded()).unwrap()
}

#[test]
fn groups_with_a_context_and_conditions() {
    let mut b = traces();
    sift(
        r#"
trace_statements:
  - context: span
    conditions: ['kind == SPAN_KIND_SERVER']
    statements:
      - set(attributes["deployment.environment.name"], "prod")
      - delete_key(attributes, "http.request.header.authorization")
  - context: resource
    statements:
      - set(attributes["namespace"], attributes["k8s.namespace.name"])
      - delete_key(attributes, "k8s.namespace.name")
"#,
        &mut b,
    )
    .unwrap();
    let r = decode(&b);
    let spans = &r.resource_spans[0].scope_spans[0].spans;
    assert_eq!(
        get(&spans[0].attributes, "deployment.environment.name"),
        Some("prod")
    );
    assert_eq!(
        get(&spans[0].attributes, "http.request.header.authorization"),
        None
    );
    assert_eq!(
        get(&spans[1].attributes, "deployment.environment.name"),
        None,
        "the condition held only for the server span"
    );
    assert_eq!(
        get(&spans[1].attributes, "http.request.header.authorization"),
        Some("secret")
    );
    let res = r.resource_spans[0].resource.as_ref().unwrap();
    assert_eq!(get(&res.attributes, "namespace"), Some("shop"));
    assert_eq!(get(&res.attributes, "k8s.namespace.name"), None);
    assert_eq!(get(&res.attributes, "host.name"), Some("h"));
    assert_eq!(b.len(), 2);
}

#[test]
fn the_flat_form_runs_each_statement_in_its_context() {
    let mut b = traces();
    sift(
        r#"
trace_statements:
  - keep_keys(resource.attributes, ["host.name"])
  - set(span.attributes["svc"], Concat([span.name, resource.attributes["host.name"]], "@"))
  - replace_pattern(span.attributes["http.request.header.authorization"], "^.*$", "***")
"#,
        &mut b,
    )
    .unwrap();
    let r = decode(&b);
    let res = r.resource_spans[0].resource.as_ref().unwrap();
    assert_eq!(res.attributes.len(), 1);
    let spans = &r.resource_spans[0].scope_spans[0].spans;
    assert_eq!(get(&spans[1].attributes, "svc"), Some("client@h"));
    assert_eq!(
        get(&spans[0].attributes, "http.request.header.authorization"),
        Some("***")
    );
}

#[test]
fn error_mode_ignore_goes_on_and_propagate_refuses() {
    let yaml = |mode: &str| {
        format!(
            r#"
error_mode: {mode}
trace_statements:
  - set(span.attributes["n"], span.name + 1)
  - set(span.attributes["after"], "yes")
"#
        )
    };
    let mut b = traces();
    sift(&yaml("ignore"), &mut b).unwrap();
    let r = decode(&b);
    let spans = &r.resource_spans[0].scope_spans[0].spans;
    assert_eq!(get(&spans[0].attributes, "n"), None);
    assert_eq!(
        get(&spans[0].attributes, "after"),
        Some("yes"),
        "the next statement still runs"
    );
    let mut b = traces();
    assert!(sift(&yaml("propagate"), &mut b).is_err());
}

#[test]
fn metrics_and_logs_are_edited_in_their_contexts() {
    let request = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "kube_pod_count".into(),
                    data: Some(metric::Data::Sum(Sum {
                        data_points: vec![NumberDataPoint {
                            attributes: vec![kv("pod", "a")],
                            value: Some(number_data_point::Value::AsInt(3)),
                            ..Default::default()
                        }],
                        aggregation_temporality: 2,
                        is_monotonic: true,
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let mut b: Batch<MetricsSignal> =
        Batch::from_encoded(Bytes::from(request.encode_to_vec())).unwrap();
    sift(
        r#"
metric_statements:
  - context: metric
    statements:
      - set(description, "Sum") where type == METRIC_DATA_TYPE_SUM and is_monotonic
      - replace_pattern(name, "^kube_([0-9A-Za-z]+_)", "k8s.$$1.")
  - context: datapoint
    statements:
      - set(attributes["doubled"], String(value_int * 2)) where metric.aggregation_temporality == AGGREGATION_TEMPORALITY_CUMULATIVE
"#,
        &mut b,
    )
    .unwrap();
    let r = ExportMetricsServiceRequest::decode(b.encoded()).unwrap();
    let m = &r.resource_metrics[0].scope_metrics[0].metrics[0];
    assert_eq!(m.description, "Sum");
    assert_eq!(m.name, "k8s.pod_.count");
    let Some(metric::Data::Sum(sum)) = &m.data else {
        panic!("sum")
    };
    assert_eq!(get(&sum.data_points[0].attributes, "doubled"), Some("6"));
    assert!(sum.is_monotonic);

    let logs = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    body: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("request failed".into())),
                    }),
                    attributes: vec![kv("http.route", "/pay")],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let mut b: Batch<LogsSignal> = Batch::from_encoded(Bytes::from(logs.encode_to_vec())).unwrap();
    sift(
        r#"
log_statements:
  - set(log.severity_text, "FAIL") where log.body == "request failed"
  - set(log.severity_number, SEVERITY_NUMBER_ERROR) where log.severity_text == "FAIL"
  - set(log.body, log.attributes["http.route"])
"#,
        &mut b,
    )
    .unwrap();
    let r = ExportLogsServiceRequest::decode(b.encoded()).unwrap();
    let l = &r.resource_logs[0].scope_logs[0].log_records[0];
    assert_eq!((l.severity_text.as_str(), l.severity_number), ("FAIL", 17));
    assert_eq!(
        l.body.as_ref().unwrap().value,
        Some(any_value::Value::StringValue("/pay".into()))
    );
}

#[test]
fn bad_statements_are_refused_at_load() {
    let errors = config(
        r#"
trace_statements:
  - context: span
    statements:
      - set(attributes["a"], UUID())
      - set(resource.attributes["a"], "b")
  - context: datapoint
    statements: ['set(attributes["a"], "b")']
  - 'set(name, "x")'
"#,
    )
    .validate();
    let text = format!("{errors:?}");
    assert!(
        text.contains("trace_statements[0].statements[0]") && text.contains("`UUID`"),
        "{text}"
    );
    assert!(
        text.contains("trace_statements[0].statements[1]") && text.contains("context: resource"),
        "{text}"
    );
    assert!(text.contains("trace_statements[1].context"), "{text}");
    assert!(
        text.contains("trace_statements[2]") && text.contains("context"),
        "{text}"
    );
}

/// `set` of an attribute that exists replaces every entry of it; of one that does not
/// (even where its name occurs in a value) adds one entry and keeps the rest as bytes.
#[test]
fn set_replaces_an_existing_attribute_and_adds_a_new_one_once() {
    let mut b = traces();
    sift(
        r#"
trace_statements:
  - set(span.attributes["http.route"], "/items")
  - set(span.attributes["secret"], "x")
  - set(span.attributes["new"], "y")
"#,
        &mut b,
    )
    .unwrap();
    let r = ExportTraceServiceRequest::decode(b.encoded()).unwrap();
    for span in &r.resource_spans[0].scope_spans[0].spans {
        let keys: Vec<&str> = span.attributes.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "http.request.header.authorization",
                "http.route",
                "secret",
                "new"
            ],
            "{}",
            span.name
        );
        assert_eq!(get(&span.attributes, "http.route"), Some("/items"));
        assert_eq!(
            get(&span.attributes, "http.request.header.authorization"),
            Some("secret")
        );
        assert_eq!(get(&span.attributes, "secret"), Some("x"));
    }
}
