use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use sidekick_collector::component::Sieve;
use sidekick_collector::config::{from_node, node};
use sidekick_collector::payload::{Batch, LogsSignal, Signal, TracesSignal};

use super::*;

/// Trace ids from the decisions worked out in `decide`'s tests: with seed 0 the FNV
/// bucket of BASE+suffix is 3275 (sampled at 20%: rate 3276), 3276 (not), 8191
/// (sampled at 50%: rate 8192), 8192 (not).
const BASE: &str = "0af7651916cd43dd8448eb21";

fn tid(suffix: &str) -> Vec<u8> {
    let h = format!("{BASE}{suffix}");
    (0..16)
        .map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

fn span(suffix: &str, tracestate: &str, priority: Option<i64>) -> Span {
    Span {
        trace_id: tid(suffix),
        span_id: vec![7; 8],
        trace_state: tracestate.into(),
        name: suffix.into(),
        attributes: priority
            .map(|p| {
                vec![KeyValue {
                    key: "sampling.priority".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::IntValue(p)),
                    }),
                    ..Default::default()
                }]
            })
            .unwrap_or_default(),
        ..Default::default()
    }
}

fn traces(spans: Vec<Span>) -> Batch<TracesSignal> {
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    Batch::from_encoded(Bytes::from(request.encode_to_vec())).unwrap()
}

fn config(yaml: &str) -> Config {
    let (root, _) = node::parse(yaml, &std::collections::HashMap::new()).unwrap();
    from_node(&root, "processors.probabilistic_sampler").unwrap()
}

fn sample<S: Signal>(yaml: &str, batch: &mut Batch<S>) -> Telemetry {
    let telemetry = Telemetry::new();
    let s = Sampler::new(&config(yaml), S::KIND, &telemetry, "probabilistic_sampler");
    s.sift(batch).unwrap();
    telemetry
}

fn kept(b: &Batch<TracesSignal>) -> Vec<(String, String)> {
    let r = ExportTraceServiceRequest::decode(b.encoded()).unwrap();
    r.resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .map(|s| (s.name.clone(), s.trace_state.clone()))
        .collect()
}

#[test]
fn hash_seed_keeps_the_trace_ids_the_collector_keeps() {
    let mut b = traces(vec![
        span("00000323", "", None),
        span("00001c07", "", None),
        span("00000969", "", None),
        span("00003d50", "", None),
    ]);
    let telemetry = sample("sampling_percentage: 20", &mut b);
    let got = kept(&b);
    assert_eq!(
        got.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["00000323"]
    );
    // The Collector writes the synthetic randomness and the threshold (20% → ccd).
    assert!(
        got[0].1.starts_with("ot=rv:") && got[0].1.ends_with(";th:ccd"),
        "{}",
        got[0].1
    );
    let page = telemetry.render();
    assert!(page.contains(r#"otelcol_processor_probabilistic_sampler_count_traces_sampled_total{processor="probabilistic_sampler",policy="trace_id_hash",sampled="true"} 1"#), "{page}");
    assert!(
        page.contains(r#"policy="trace_id_hash",sampled="false"} 3"#),
        "{page}"
    );

    let mut b = traces(vec![
        span("00000323", "", None),
        span("00001c07", "", None),
        span("00000969", "", None),
        span("00003d50", "", None),
    ]);
    sample("sampling_percentage: 50", &mut b);
    let names: Vec<_> = kept(&b).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["00000323", "00001c07", "00000969"]);
}

#[test]
fn proportional_decides_by_the_low_56_bits_and_writes_th() {
    // Randomness is the last 7 bytes: 80000000000000 is kept at 50% (threshold 8 <<
    // 52), 7fffffffffffff is not.
    let mut b = traces(vec![
        Span {
            trace_id: (0..16)
                .map(|i| {
                    if i == 9 {
                        0x80
                    } else if i > 9 {
                        0
                    } else {
                        0xfe
                    }
                })
                .collect(),
            name: "kept".into(),
            span_id: vec![1; 8],
            ..Default::default()
        },
        Span {
            trace_id: (0..16)
                .map(|i| {
                    if i == 9 {
                        0x7f
                    } else if i > 9 {
                        0xff
                    } else {
                        0xfe
                    }
                })
                .collect(),
            name: "dropped".into(),
            span_id: vec![1; 8],
            ..Default::default()
        },
    ]);
    sample("{sampling_percentage: 50, mode: proportional}", &mut b);
    assert_eq!(kept(&b), [("kept".to_string(), "ot=th:8".to_string())]);
    // An incoming 50% (th:8) sampled again at 50% becomes 25% (th:c).
    let mut b = traces(vec![Span {
        trace_id: vec![0xff; 16],
        trace_state: "ot=th:8".into(),
        name: "again".into(),
        span_id: vec![1; 8],
        ..Default::default()
    }]);
    sample("{sampling_percentage: 50, mode: proportional}", &mut b);
    assert_eq!(kept(&b), [("again".to_string(), "ot=th:c".to_string())]);
}

#[test]
fn sampling_priority_overrides_the_decision() {
    let mut b = traces(vec![
        span("00001c07", "", Some(1)),
        span("00000323", "", Some(0)),
    ]);
    sample("sampling_percentage: 20", &mut b);
    assert_eq!(
        kept(&b).into_iter().map(|(n, _)| n).collect::<Vec<_>>(),
        ["00001c07"]
    );
}

#[test]
fn fail_closed_decides_for_spans_without_randomness() {
    let no_id = || {
        traces(vec![Span {
            name: "no id".into(),
            trace_id: vec![0; 16],
            span_id: vec![1; 8],
            ..Default::default()
        }])
    };
    let mut b = no_id();
    sample("sampling_percentage: 50", &mut b);
    assert!(b.is_empty(), "fail_closed (the default) drops it");
    let mut b = no_id();
    sample("{sampling_percentage: 50, fail_closed: false}", &mut b);
    assert_eq!(b.len(), 1);
}

#[test]
fn logs_by_trace_id_or_attribute_with_a_priority() {
    let log = |suffix: Option<&str>, attrs: Vec<(&str, any_value::Value)>| LogRecord {
        trace_id: suffix.map(tid).unwrap_or_default(),
        attributes: attrs
            .into_iter()
            .map(|(k, v)| KeyValue {
                key: k.into(),
                value: Some(AnyValue { value: Some(v) }),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let s = |v: &str| any_value::Value::StringValue(v.into());
    let request = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![
                    log(Some("00000323"), vec![("n", s("a"))]),
                    log(Some("00001c07"), vec![("n", s("b"))]),
                    log(None, vec![("n", s("c"))]),
                    log(
                        Some("00001c07"),
                        vec![("n", s("d")), ("priority", any_value::Value::IntValue(100))],
                    ),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let mut b: Batch<LogsSignal> =
        Batch::from_encoded(Bytes::from(request.encode_to_vec())).unwrap();
    sample(
        "{sampling_percentage: 20, sampling_priority: priority}",
        &mut b,
    );
    let r = ExportLogsServiceRequest::decode(b.encoded()).unwrap();
    let records = &r.resource_logs[0].scope_logs[0].log_records;
    let names: Vec<_> = records
        .iter()
        .map(|l| match &l.attributes[0].value.as_ref().unwrap().value {
            Some(any_value::Value::StringValue(s)) => s.clone(),
            _ => String::new(),
        })
        .collect();
    // a: bucket 3275 < 3276; b: not; c: no trace id and no from_attribute (fail closed);
    // d: priority 100 keeps it.
    assert_eq!(names, ["a", "d"]);
    let th = records[0]
        .attributes
        .iter()
        .find(|a| a.key == "sampling.threshold")
        .unwrap();
    assert_eq!(th.value.as_ref().unwrap().value, Some(s("ccd")));
}

#[test]
fn bad_settings_are_refused() {
    assert!(!config("sampling_percentage: -1").validate().is_empty());
    assert!(!config("{sampling_percentage: 10, sampling_precision: 15}")
        .validate()
        .is_empty());
    assert!(
        !config("{sampling_percentage: 10, attribute_source: record}")
            .validate()
            .is_empty()
    );
    assert!(config("{sampling_percentage: 10, mode: equalizing}")
        .validate()
        .is_empty());
}

/// The hash_seed fast path (no tracestate, no priority) decides and writes exactly what
/// the general decision does, over many trace ids and the percentages whose `th` texts
/// differ in length.
#[test]
fn the_hash_seed_fast_path_agrees_with_the_general_decision() {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let ids: Vec<[u8; 16]> = (0..2000)
        .map(|_| {
            std::array::from_fn(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
        })
        .collect();
    for (pct, seed) in [
        (0.5, 0),
        (1.0, 7),
        (20.0, 22),
        (33.3, 1),
        (50.0, 0),
        (99.99, 5),
        (100.0, 3),
        (150.0, 0),
    ] {
        let spans = ids
            .iter()
            .enumerate()
            .map(|(i, id)| Span {
                trace_id: id.to_vec(),
                span_id: vec![1; 8],
                name: i.to_string(),
                ..Default::default()
            })
            .collect();
        let mut batch = traces(spans);
        sample(
            &format!("{{sampling_percentage: {pct}, hash_seed: {seed}}}"),
            &mut batch,
        );
        let cfg = Decider {
            percentage: pct,
            hash_seed: seed,
            ..Decider::default()
        };
        let expected: Vec<(String, String)> = ids
            .iter()
            .enumerate()
            .filter_map(|(i, id)| {
                let d = decide::decide(Mode::HashSeed, &cfg, id, "").unwrap();
                d.sampled
                    .then(|| (i.to_string(), d.new_tracestate.unwrap_or_default()))
            })
            .collect();
        assert!(!expected.is_empty(), "{pct}");
        assert_eq!(kept(&batch), expected, "{pct}% seed {seed}");
    }
}
