use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span};
use prost::Message;
use sidekick_collector::component::Sieve;
use sidekick_collector::config::Signal as SignalKind;
use sidekick_collector::payload::{Batch, LogsSignal, MetricsSignal, TracesSignal};

use sidekick_collector::config::from_node;
use sidekick_collector::config::node;

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

fn resource(service: &str) -> Option<Resource> {
    Some(Resource {
        attributes: vec![kv("service.name", service)],
        ..Default::default()
    })
}

fn spans(routes: &[(&str, &str)]) -> Vec<Span> {
    routes
        .iter()
        .map(|(name, route)| Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            name: name.to_string(),
            kind: span::SpanKind::Server as i32,
            attributes: vec![kv("http.route", route)],
            events: vec![
                span::Event {
                    name: "grpc.timeout".into(),
                    ..Default::default()
                },
                span::Event {
                    name: "log".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        })
        .collect()
}

fn traces() -> Batch<TracesSignal> {
    let request = ExportTraceServiceRequest {
        resource_spans: vec![
            ResourceSpans {
                resource: resource("app"),
                scope_spans: vec![ScopeSpans {
                    spans: spans(&[("a", "/healthz"), ("b", "/users"), ("c", "/healthz")]),
                    ..Default::default()
                }],
                ..Default::default()
            },
            ResourceSpans {
                resource: resource("sidecar"),
                scope_spans: vec![ScopeSpans {
                    spans: spans(&[("d", "/healthz")]),
                    ..Default::default()
                }],
                ..Default::default()
            },
        ],
    };
    Batch::from_encoded(Bytes::from(request.encode_to_vec())).unwrap()
}

fn config(yaml: &str) -> Config {
    let (root, _) = node::parse(yaml, &std::collections::HashMap::new()).unwrap();
    from_node(&root, "processors.filter").unwrap()
}

fn sift<S: sidekick_collector::payload::Signal>(
    yaml: &str,
    batch: &mut Batch<S>,
) -> Result<(), String> {
    let f = Filter::from_config(&config(yaml), S::KIND).unwrap_or_else(|e| panic!("{e:?}"));
    f.sift(batch)
}

fn span_names(batch: &Batch<TracesSignal>) -> Vec<String> {
    let r = ExportTraceServiceRequest::decode(batch.encoded()).unwrap();
    r.resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .map(|s| s.name.clone())
        .collect()
}

#[test]
fn spans_matching_a_condition_are_cut_out_and_empty_resources_go() {
    let mut b = traces();
    sift(
        r#"traces: {span: ['attributes["http.route"] == "/healthz"']}"#,
        &mut b,
    )
    .unwrap();
    assert_eq!(span_names(&b), ["b"]);
    assert_eq!(b.len(), 1);
    let r = ExportTraceServiceRequest::decode(b.encoded()).unwrap();
    assert_eq!(
        r.resource_spans.len(),
        1,
        "the resource left without spans is removed"
    );
    assert_eq!(r.resource_spans[0].resource, resource("app"));
}

#[test]
fn nothing_matching_leaves_the_bytes_as_they_were() {
    let mut b = traces();
    let before = b.encoded();
    sift(r#"traces: {span: ['name == "zzz"']}"#, &mut b).unwrap();
    assert_eq!(b.encoded(), before);
}

#[test]
fn resource_conditions_drop_everything_below() {
    let mut b = traces();
    sift(
        r#"traces: {resource: ['attributes["service.name"] == "app"']}"#,
        &mut b,
    )
    .unwrap();
    assert_eq!(span_names(&b), ["d"]);
}

#[test]
fn span_events_are_dropped_but_their_span_stays() {
    let mut b = traces();
    sift(
        r#"traces: {spanevent: ['IsMatch(name, ".*grpc.*")']}"#,
        &mut b,
    )
    .unwrap();
    let r = ExportTraceServiceRequest::decode(b.encoded()).unwrap();
    let all: Vec<_> = r
        .resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .collect();
    assert_eq!(all.len(), 4);
    assert!(all
        .iter()
        .all(|s| s.events.len() == 1 && s.events[0].name == "log"));
}

#[test]
fn flat_conditions_run_in_their_context() {
    let mut b = traces();
    sift(
        r#"trace_conditions: ['resource.attributes["service.name"] == "sidecar"', 'span.name == "a"']"#,
        &mut b,
    )
    .unwrap();
    assert_eq!(span_names(&b), ["b", "c"]);
    let e = Filter::from_config(
        &config(r#"trace_conditions: ['name == "a"']"#),
        SignalKind::Traces,
    )
    .err()
    .unwrap();
    assert!(e[0].message.contains("context"), "{:?}", e);
}

#[test]
fn the_older_match_form_includes_and_excludes() {
    let mut b = traces();
    sift(
        "spans: {include: {match_type: strict, services: [app]}, exclude: {match_type: regexp, span_names: ['^c$']}}",
        &mut b,
    )
    .unwrap();
    assert_eq!(span_names(&b), ["a", "b"]);
    let mut b = traces();
    sift("spans: {exclude: {match_type: strict, attributes: [{key: http.route, value: /healthz}], span_kinds: [SPAN_KIND_SERVER]}}", &mut b).unwrap();
    assert_eq!(span_names(&b), ["b"]);
}

#[test]
fn error_mode_decides_what_a_failing_condition_does() {
    // `name + 1` is math on a string: an error on every span.
    let mut b = traces();
    sift(
        r#"{error_mode: ignore, traces: {span: ['name + 1 > 0', 'name == "a"']}}"#,
        &mut b,
    )
    .unwrap();
    assert_eq!(
        span_names(&b),
        ["b", "c", "d"],
        "an error leaves the item to the other conditions"
    );
    let mut b = traces();
    let e = sift(
        r#"{error_mode: propagate, traces: {span: ['name + 1 > 0']}}"#,
        &mut b,
    )
    .unwrap_err();
    assert!(e.contains("math"), "{e}");
}

#[test]
fn metrics_and_data_points_go_with_their_conditions() {
    let point = |v: f64, dc: &str| NumberDataPoint {
        attributes: vec![kv("dc", dc)],
        value: Some(number_data_point::Value::AsDouble(v)),
        ..Default::default()
    };
    let gauge = |name: &str, points: Vec<NumberDataPoint>| Metric {
        name: name.into(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: points,
        })),
        ..Default::default()
    };
    let request = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource("app"),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![
                    gauge("keep", vec![point(1.0, "a"), point(2.0, "b")]),
                    gauge("drop.me", vec![point(3.0, "a")]),
                    gauge("emptied", vec![point(4.0, "b")]),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let mut b: Batch<MetricsSignal> =
        Batch::from_encoded(Bytes::from(request.encode_to_vec())).unwrap();
    sift(
        r#"metrics: {metric: ['name == "drop.me"'], datapoint: ['attributes["dc"] == "b" and metric.type == METRIC_DATA_TYPE_GAUGE']}"#,
        &mut b,
    )
    .unwrap();
    let r = ExportMetricsServiceRequest::decode(b.encoded()).unwrap();
    let metrics = &r.resource_metrics[0].scope_metrics[0].metrics;
    assert_eq!(
        metrics.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
        ["keep"],
        "a metric left without points goes"
    );
    assert_eq!(b.len(), 1);
}

#[test]
fn log_records_by_severity_and_body() {
    let log = |sev: i32, body: &str| LogRecord {
        severity_number: sev,
        body: Some(AnyValue {
            value: Some(any_value::Value::StringValue(body.into())),
        }),
        ..Default::default()
    };
    let request = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource("app"),
            scope_logs: vec![ScopeLogs {
                log_records: vec![
                    log(5, "debug"),
                    log(9, "user password=1"),
                    log(13, "warn"),
                    log(0, "unset"),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let batch = || -> Batch<LogsSignal> {
        Batch::from_encoded(Bytes::from(request.encode_to_vec())).unwrap()
    };
    let bodies = |b: &Batch<LogsSignal>| -> Vec<String> {
        let r = ExportLogsServiceRequest::decode(b.encoded()).unwrap();
        r.resource_logs[0].scope_logs[0]
            .log_records
            .iter()
            .map(|l| match &l.body.as_ref().unwrap().value {
                Some(any_value::Value::StringValue(s)) => s.clone(),
                _ => String::new(),
            })
            .collect()
    };
    let mut b = batch();
    sift(r#"logs: {log_record: ['IsMatch(body, ".*password.*")', 'severity_number < SEVERITY_NUMBER_INFO and severity_number != 0']}"#, &mut b).unwrap();
    assert_eq!(bodies(&b), ["warn", "unset"]);
    let mut b = batch();
    sift(
        "logs: {include: {severity_number: {min: INFO, match_undefined: true}}}",
        &mut b,
    )
    .unwrap();
    assert_eq!(bodies(&b), ["user password=1", "warn", "unset"]);
    let mut b = batch();
    sift(
        "logs: {exclude: {match_type: regexp, bodies: ['^w']}}",
        &mut b,
    )
    .unwrap();
    assert_eq!(bodies(&b), ["debug", "user password=1", "unset"]);
}

#[test]
fn bad_conditions_are_refused_at_load_with_where() {
    let errors = config(r#"traces: {span: ['attributes["a"] == ', 'Frob(name)']}"#).validate();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(errors[0].field, "traces.span[0]");
    assert!(
        errors[0].message.contains("at the end") && errors[0].message.contains("expected a value"),
        "{errors:?}"
    );
    assert!(
        errors[1].message.contains("unknown function `Frob`"),
        "{errors:?}"
    );
    let errors = config("spans: {exclude: {match_type: regexp, span_names: ['(']}}").validate();
    assert!(errors[0].message.contains("invalid regex"), "{errors:?}");
    assert!(
        !config("{}").validate().is_empty(),
        "a filter without conditions is refused"
    );
}

/// Consecutive per-batch processors run as one chain: each sees what the one before
/// it left, a batch emptied on the way goes no further, and a refused batch is dropped
/// without stopping the batches after it.
#[tokio::test]
async fn chained_per_batch_processors_run_in_order_in_one_task() {
    use sidekick_collector::component::{Chain, Processor};
    use sidekick_testkit::harness::run_processor;

    let sieve = |yaml: &str| -> Box<dyn Sieve<TracesSignal>> {
        Box::new(Filter::from_config(&config(yaml), SignalKind::Traces).unwrap())
    };
    let chain = Chain(vec![
        sieve(r#"traces: {span: ['attributes["http.route"] == "/healthz"']}"#),
        // Would refuse every /healthz span (a string is not a bool) had the first
        // filter not removed them; refuses a batch with "b" in it.
        sieve(
            r#"{error_mode: propagate, traces: {span: ['attributes["http.route"]', 'name == "zzz"']}}"#,
        ),
    ]);
    let mut h = run_processor::<TracesSignal>(Box::new(chain) as Box<dyn Processor<_>>);
    let only = |names: &[(&str, &str)]| -> Batch<TracesSignal> {
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: resource("app"),
                scope_spans: vec![ScopeSpans {
                    spans: spans(names),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        Batch::from_encoded(Bytes::from(request.encode_to_vec())).unwrap()
    };
    h.send(only(&[("a", "/healthz")])).await; // emptied by the first
    h.send(only(&[("b", "/users"), ("c", "/healthz")])).await; // refused by the second
    h.send(only(&[("d", "/healthz")])).await; // emptied
    h.close().await;
    let out = h.drain();
    assert!(out.is_empty(), "{} batches went on", out.len());

    let mut h = run_processor::<TracesSignal>(Box::new(Chain(vec![
        sieve(r#"traces: {span: ['attributes["http.route"] == "/healthz"']}"#),
        sieve(r#"traces: {span: ['name == "e"']}"#),
    ])));
    h.send(only(&[("e", "/users"), ("f", "/healthz"), ("g", "/users")]))
        .await;
    h.close().await;
    let out = h.drain();
    assert_eq!(out.len(), 1);
    assert_eq!(span_names(&out[0]), ["g"]);
}
