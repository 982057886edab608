use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

use super::*;

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

/// `shape[r][s]` spans in scope `s` of resource `r`, each span named uniquely.
fn traces(shape: &[&[usize]]) -> ExportTraceServiceRequest {
    let mut n = 0;
    ExportTraceServiceRequest {
        resource_spans: shape
            .iter()
            .enumerate()
            .map(|(r, scopes)| ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", &format!("svc-{r}"))],
                    ..Default::default()
                }),
                scope_spans: scopes
                    .iter()
                    .enumerate()
                    .map(|(s, &count)| ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: format!("scope-{s}"),
                            ..Default::default()
                        }),
                        spans: (0..count)
                            .map(|_| {
                                n += 1;
                                Span {
                                    name: format!("span-{n}"),
                                    trace_id: vec![n as u8; 16],
                                    span_id: vec![n as u8; 8],
                                    ..Default::default()
                                }
                            })
                            .collect(),
                        schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
                    })
                    .collect(),
                schema_url: String::new(),
            })
            .collect(),
    }
}

/// (resource, scope, span name) for every span, in order.
fn flatten(r: &ExportTraceServiceRequest) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for rs in &r.resource_spans {
        let svc = match &rs.resource.as_ref().unwrap().attributes[0]
            .value
            .as_ref()
            .unwrap()
            .value
        {
            Some(any_value::Value::StringValue(s)) => s.clone(),
            _ => unreachable!(),
        };
        for ss in &rs.scope_spans {
            assert_eq!(ss.schema_url, "https://opentelemetry.io/schemas/1.26.0");
            for span in &ss.spans {
                out.push((
                    svc.clone(),
                    ss.scope.as_ref().unwrap().name.clone(),
                    span.name.clone(),
                ));
            }
        }
    }
    out
}

#[test]
fn counts_encoded_requests() {
    let req = traces(&[&[2, 3], &[0], &[4]]);
    let batch = Traces::from_encoded(Bytes::from(req.encode_to_vec())).unwrap();
    assert_eq!(batch.len(), 9);
    assert_eq!(batch.to_request().unwrap(), req);
    assert_eq!(Traces::from_encoded(Bytes::new()).unwrap().len(), 0);
}

#[test]
fn split_at_every_point_keeps_order_and_context() {
    let req = traces(&[&[2, 3], &[0], &[4, 1]]);
    let all = flatten(&req);
    let encoded = Bytes::from(req.encode_to_vec());
    for at in 0..=all.len() {
        let mut first = Traces::from_encoded(encoded.clone()).unwrap();
        let rest = first.split_off(at);
        assert_eq!(first.len(), at);
        assert_eq!(rest.len(), all.len() - at);
        // Each half must be a valid request that counts the same as it claims.
        assert_eq!(TracesSignal::count(&first.to_request().unwrap()), at);
        let mut joined = flatten(&first.to_request().unwrap());
        joined.extend(flatten(&rest.to_request().unwrap()));
        assert_eq!(joined, all, "split at {at}");
        // The halves' recorded chunk counts must be right too: split each again.
        for (mut half, n) in [(first, at), (rest, all.len() - at)] {
            for cut in 0..=n {
                let mut a = half.clone();
                let b = a.split_off(cut);
                assert_eq!(TracesSignal::count(&a.to_request().unwrap()), cut);
                assert_eq!(TracesSignal::count(&b.to_request().unwrap()), n - cut);
                assert_eq!((a.len(), b.len()), (cut, n - cut));
            }
            half.append(Traces::default());
            assert_eq!(half.len(), n);
        }
    }
}

#[test]
fn append_concatenates_and_mixes_representations() {
    let a = traces(&[&[1]]);
    let b = traces(&[&[2]]);
    let mut batch = Traces::from_encoded(Bytes::from(a.encode_to_vec())).unwrap();
    batch.append(Traces::from_request(b.clone()));
    batch.append(Traces::from_encoded(Bytes::from(b.encode_to_vec())).unwrap());
    assert_eq!(batch.len(), 5);
    let decoded = batch.to_request().unwrap();
    assert_eq!(decoded.resource_spans.len(), 3);
    let mut d = Traces::from_request(a);
    d.append(Traces::from_request(b));
    assert_eq!(d.len(), 3);
    assert_eq!(d.to_request().unwrap().resource_spans.len(), 2);
}

#[test]
fn request_mut_copies_on_write() {
    let original = Traces::from_encoded(Bytes::from(traces(&[&[2]]).encode_to_vec())).unwrap();
    let mut edited = original.clone();
    edited.request_mut().unwrap().resource_spans[0].scope_spans[0]
        .spans
        .pop();
    edited.recount();
    assert_eq!(edited.len(), 1);
    assert_eq!(original.len(), 2);
    assert_eq!(
        original.to_request().unwrap().resource_spans[0].scope_spans[0]
            .spans
            .len(),
        2
    );
    assert_eq!(Traces::from_encoded(edited.encoded()).unwrap().len(), 1);
}

#[test]
fn refuses_malformed_bytes() {
    let good = traces(&[&[3]]).encode_to_vec();
    for cut in [1, good.len() / 2, good.len() - 1] {
        let err = Traces::from_encoded(Bytes::copy_from_slice(&good[..cut])).unwrap_err();
        assert!(
            err.to_string().starts_with("malformed protobuf at byte"),
            "{err}"
        );
    }
    // resource_spans written as a varint instead of a message.
    assert_eq!(
        Traces::from_encoded(Bytes::from_static(&[0x08, 0x01]))
            .unwrap_err()
            .reason,
        "nested message has the wrong wire type"
    );
    // Wire type 7 does not exist.
    assert!(Traces::from_encoded(Bytes::from_static(&[0x0f])).is_err());
    // A span whose own fields are cut short.
    let mut bad = Vec::new();
    let mut scope = Vec::new();
    wire::put_len_field(&mut scope, 2, &[0x0a, 0x05, b'a']);
    let mut rs = Vec::new();
    wire::put_len_field(&mut rs, 2, &scope);
    wire::put_len_field(&mut bad, 1, &rs);
    assert!(Traces::from_encoded(Bytes::from(bad)).is_err());
}

fn points(n: usize, start: usize) -> Vec<NumberDataPoint> {
    (0..n)
        .map(|i| NumberDataPoint {
            value: Some(number_data_point::Value::AsInt((start + i) as i64)),
            ..Default::default()
        })
        .collect()
}

#[test]
fn metrics_count_and_split_by_data_point() {
    let req = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource::default()),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![
                    Metric {
                        name: "requests".into(),
                        unit: "1".into(),
                        data: Some(metric::Data::Sum(Sum {
                            data_points: points(3, 0),
                            aggregation_temporality: 2,
                            is_monotonic: true,
                        })),
                        ..Default::default()
                    },
                    Metric {
                        name: "temperature".into(),
                        data: Some(metric::Data::Gauge(Gauge {
                            data_points: points(2, 3),
                        })),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let encoded = Bytes::from(req.encode_to_vec());
    let mut first = Metrics::from_encoded(encoded).unwrap();
    assert_eq!(first.len(), 5);
    let rest = first.split_off(2);
    let a = first.to_request().unwrap();
    let b = rest.to_request().unwrap();
    assert_eq!(MetricsSignal::count(&a), 2);
    assert_eq!(MetricsSignal::count(&b), 3);
    // The cut metric keeps its name and sum settings on both sides.
    let b_metrics = &b.resource_metrics[0].scope_metrics[0].metrics;
    assert_eq!(b_metrics[0].name, "requests");
    match &b_metrics[0].data {
        Some(metric::Data::Sum(s)) => {
            assert!(s.is_monotonic);
            assert_eq!(s.aggregation_temporality, 2);
            assert_eq!(s.data_points, points(1, 2));
        }
        other => panic!("expected a sum, got {other:?}"),
    }
    assert_eq!(b_metrics[1].name, "temperature");
}

#[test]
fn resources_mut_edits_encoded_batches_without_touching_spans() {
    let req = traces(&[&[2], &[1, 1]]);
    let mut batch = Traces::from_encoded(Bytes::from(req.encode_to_vec())).unwrap();
    batch.append(Traces::from_encoded(Bytes::from(traces(&[&[3]]).encode_to_vec())).unwrap());
    batch.resources_mut(|r| r.attributes.push(kv("k8s.pod.name", "pod-1")));
    assert!(batch.decoded().is_none(), "still encoded");
    assert_eq!(batch.len(), 7);
    let out = batch.to_request().unwrap();
    assert_eq!(out.resource_spans.len(), 3);
    for rs in &out.resource_spans {
        let attrs = &rs.resource.as_ref().unwrap().attributes;
        assert_eq!(attrs.last().unwrap().key, "k8s.pod.name");
        assert_eq!(attrs.len(), 2);
    }
    let mut names = flatten(&req);
    names.extend(flatten(&traces(&[&[3]])));
    assert_eq!(flatten(&out), names);
    // Decoded batches too, and a missing resource is created.
    let mut bare = ExportTraceServiceRequest::default();
    bare.resource_spans.push(ResourceSpans::default());
    let mut d = Traces::from_request(bare);
    d.resources_mut(|r| r.attributes.push(kv("a", "b")));
    assert_eq!(
        d.to_request().unwrap().resource_spans[0]
            .resource
            .as_ref()
            .unwrap()
            .attributes
            .len(),
        1
    );
}

mod never_panics {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Whatever a client sends, checking it either counts items or says where the
        /// bytes go wrong; it never panics.
        #[test]
        fn on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let b = Bytes::from(bytes);
            let _ = Traces::from_encoded(b.clone());
            let _ = Metrics::from_encoded(b.clone());
            if let Ok(mut logs) = Logs::from_encoded(b) {
                let n = logs.len();
                let rest = logs.split_off(n / 2);
                prop_assert_eq!(logs.len() + rest.len(), n);
            }
        }

        /// Corrupting one byte of a valid request never panics either.
        #[test]
        fn on_corrupted_requests(at in 0usize..400, value in any::<u8>()) {
            let mut bytes = traces(&[&[2, 3], &[1]]).encode_to_vec();
            let i = at % bytes.len();
            bytes[i] = value;
            if let Ok(mut batch) = Traces::from_encoded(Bytes::from(bytes)) {
                let n = batch.len();
                let rest = batch.split_off(n / 2);
                prop_assert_eq!(batch.len() + rest.len(), n);
                batch.resources_mut(|r| r.dropped_attributes_count = 1);
            }
        }
    }
}
