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
        "wrong wire type for a known field"
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

/// A gauge of `n` points whose attributes are `own` on each point.
pub(crate) fn gauge(n: usize, start: usize, own: &[KeyValue]) -> ExportMetricsServiceRequest {
    let mut data_points = points(n, start);
    data_points
        .iter_mut()
        .for_each(|p| p.attributes = own.to_vec());
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource::default()),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "g".into(),
                    data: Some(metric::Data::Gauge(Gauge { data_points })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Each point's attributes, in order.
fn point_attrs(r: &ExportMetricsServiceRequest) -> Vec<Vec<KeyValue>> {
    let mut out = Vec::new();
    let mut r = r.clone();
    MetricsSignal::item_attributes_mut(&mut r, &mut |a| out.push(a.clone()));
    out
}

#[test]
fn detached_attributes_stay_apart_until_a_stage_needs_otlp() {
    let series = |i: usize| Arc::new(Attrs::new([("pod", "a"), ("n", ["0", "1", "2"][i])]));
    let own = [kv("own", "x")];
    let detached = Metrics::from_detached(gauge(3, 0, &own), (0..3).map(series).collect());
    assert_eq!(detached.len(), 3);
    // Stages that read plain OTLP never see the bare request.
    assert!(detached.decoded().is_none());
    let (bare, apart) = detached.decoded_detached().unwrap();
    assert_eq!(point_attrs(bare)[0], own.to_vec());
    assert_eq!(apart.len(), 3);
    let whole = detached.to_request().unwrap();
    assert_eq!(
        point_attrs(&whole)[2],
        vec![kv("own", "x"), kv("pod", "a"), kv("n", "2")]
    );
    // The size is the encoding's, give or take the lengths around the attributes.
    let encoded = detached.encoded();
    assert_eq!(
        Metrics::from_encoded(encoded.clone())
            .unwrap()
            .to_request()
            .unwrap(),
        whole
    );
    assert!(
        detached.size().abs_diff(encoded.len()) <= 3 * 2,
        "{} vs {}",
        detached.size(),
        encoded.len()
    );

    // Joined with a batch without detached attributes, each point keeps its own.
    let mut joined = detached.clone();
    joined.append(Metrics::from_request(gauge(2, 3, &[kv("plain", "y")])));
    assert!(joined.decoded().is_none());
    let attrs = point_attrs(&joined.to_request().unwrap());
    assert_eq!(attrs.len(), 5);
    assert_eq!(attrs[1], vec![kv("own", "x"), kv("pod", "a"), kv("n", "1")]);
    assert_eq!(attrs[4], vec![kv("plain", "y")]);
    let mut first = Metrics::from_request(gauge(1, 9, &[]));
    first.append(detached.clone());
    let attrs = point_attrs(&first.to_request().unwrap());
    assert_eq!(attrs[0], Vec::<KeyValue>::new());
    assert_eq!(attrs[3], vec![kv("own", "x"), kv("pod", "a"), kv("n", "2")]);

    // Split and edited, the attributes are put back first.
    let mut split = detached.clone();
    let rest = split.split_off(1);
    assert_eq!(
        point_attrs(&rest.to_request().unwrap())[1],
        point_attrs(&whole)[2]
    );
    let mut edited = detached.clone();
    edited.request_mut().unwrap();
    assert_eq!(edited.decoded().map(point_attrs), Some(point_attrs(&whole)));
    // The original is untouched by its copies' edits.
    assert_eq!(detached.to_request().unwrap(), whole);
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

/// An encoded edit gives what the same edit of the decoded request gives, with length
/// prefixes right where a scope or resource grows or shrinks across a varint width
/// (127/128 and 16383/16384 bytes), and the item count it returns is the truth.
#[test]
fn edit_encoded_matches_the_decoded_edit_across_length_widths() {
    use prost::Message as _;
    // Span n: dropped when n % 3 == 0, renamed to 300 bytes when n % 3 == 1, kept else.
    let edit_span = |span: &mut Span| -> bool {
        let n: usize = span.name["span-".len()..].parse().unwrap();
        match n % 3 {
            0 => false,
            1 => {
                span.name = format!("{}-{n}", "x".repeat(300));
                true
            }
            _ => true,
        }
    };
    for shape in [
        &[&[1usize][..], &[2, 3]][..],
        &[&[4], &[60]],
        &[&[200, 1]],
        &[&[3]],
    ] {
        let req = traces(shape);
        let mut batch = Traces::from_encoded(Bytes::from(req.encode_to_vec())).unwrap();
        batch.edit_encoded(2, &mut |_, _, msg| {
            let mut span = Span::decode(msg).unwrap();
            let before = span.clone();
            match edit_span(&mut span) {
                false => wire::Edit::Drop,
                true if span == before => wire::Edit::Keep,
                true => wire::Edit::Replace(span.encode_to_vec()),
            }
        });
        let mut expected = req.clone();
        for rs in &mut expected.resource_spans {
            for ss in &mut rs.scope_spans {
                ss.spans.retain_mut(|span| edit_span(span));
            }
            rs.scope_spans.retain(|ss| !ss.spans.is_empty());
        }
        expected
            .resource_spans
            .retain(|rs| !rs.scope_spans.is_empty());
        let count: usize = flatten(&expected).len();
        assert_eq!(batch.len(), count, "{shape:?}");
        if count == 0 {
            assert!(batch.is_empty());
            continue;
        }
        let bytes = batch.encoded();
        assert_eq!(
            ExportTraceServiceRequest::decode(&bytes[..]).unwrap(),
            expected,
            "{shape:?}"
        );
        assert_eq!(
            Traces::from_encoded(bytes).unwrap().len(),
            count,
            "the output validates"
        );
    }
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

/// The schema check in `validate`: what it refuses, what it lets through, and that it
/// agrees with prost, which decodes whatever is accepted further down the pipeline.
mod schema {
    use opentelemetry_proto::tonic::common::v1::{self as common, EntityRef, KeyValueList};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets;
    use opentelemetry_proto::tonic::metrics::v1::summary_data_point::ValueAtQuantile;
    use opentelemetry_proto::tonic::metrics::v1::{
        exemplar, Exemplar, ExponentialHistogram, ExponentialHistogramDataPoint, Histogram,
        HistogramDataPoint, Summary, SummaryDataPoint,
    };
    use opentelemetry_proto::tonic::trace::v1::{span, Status};
    use proptest::prelude::*;

    use super::*;

    const UTF8: &str = "invalid UTF-8 in a string field";
    const WIRE_TYPE: &str = "wrong wire type for a known field";
    const TOO_DEEP: &str = "AnyValue nested too deeply (messages over 100 levels deep)";
    const PARTIAL: &str = "packed repeated field ends inside an element";

    /// Hands out unique strings (`str#0001`, …) so a test can find each in the encoding.
    #[derive(Default)]
    struct Strings(usize);

    impl Strings {
        fn next(&mut self) -> String {
            self.0 += 1;
            format!("str#{:04}", self.0)
        }
    }

    fn attr(s: &mut Strings, value: any_value::Value) -> KeyValue {
        KeyValue {
            key: s.next(),
            value: Some(AnyValue { value: Some(value) }),
            key_strindex: 0,
        }
    }

    /// One attribute of every AnyValue kind, nested ones included.
    fn attributes(s: &mut Strings) -> Vec<KeyValue> {
        use any_value::Value::*;
        let text = StringValue(s.next());
        let inner = StringValue(s.next());
        let nested = attr(s, inner);
        let element = StringValue(s.next());
        let mut attrs = vec![
            attr(s, text),
            attr(s, BoolValue(true)),
            attr(s, IntValue(-5)),
            attr(s, DoubleValue(1.5)),
            attr(
                s,
                ArrayValue(common::ArrayValue {
                    values: vec![
                        AnyValue {
                            value: Some(element),
                        },
                        AnyValue {
                            value: Some(IntValue(7)),
                        },
                    ],
                }),
            ),
            attr(
                s,
                KvlistValue(KeyValueList {
                    values: vec![nested],
                }),
            ),
            attr(s, BytesValue(vec![0xff, 0xfe])),
            attr(s, StringValueStrindex(3)),
        ];
        attrs.push(KeyValue {
            key: String::new(),
            value: None,
            key_strindex: 2,
        });
        attrs
    }

    fn resource(s: &mut Strings) -> Option<Resource> {
        Some(Resource {
            attributes: attributes(s),
            dropped_attributes_count: 1,
            entity_refs: vec![EntityRef {
                schema_url: s.next(),
                r#type: s.next(),
                id_keys: vec![s.next(), s.next()],
                description_keys: vec![s.next()],
            }],
        })
    }

    fn scope(s: &mut Strings) -> Option<InstrumentationScope> {
        Some(InstrumentationScope {
            name: s.next(),
            version: s.next(),
            attributes: attributes(s),
            dropped_attributes_count: 2,
        })
    }

    fn full_span(s: &mut Strings) -> Span {
        Span {
            trace_id: vec![0xab; 16],
            span_id: vec![0xcd; 8],
            trace_state: s.next(),
            parent_span_id: vec![0xef; 8],
            flags: 0x101,
            name: s.next(),
            kind: span::SpanKind::Client as i32,
            start_time_unix_nano: 1_700_000_000_000_000_000,
            end_time_unix_nano: 1_700_000_000_000_000_500,
            attributes: attributes(s),
            dropped_attributes_count: 1,
            events: vec![span::Event {
                time_unix_nano: 1_700_000_000_000_000_100,
                name: s.next(),
                attributes: attributes(s),
                dropped_attributes_count: 1,
            }],
            dropped_events_count: 1,
            links: vec![span::Link {
                trace_id: vec![0x12; 16],
                span_id: vec![0x34; 8],
                trace_state: s.next(),
                attributes: attributes(s),
                dropped_attributes_count: 1,
                flags: 0x100,
            }],
            dropped_links_count: 1,
            status: Some(Status {
                message: s.next(),
                code: 2,
            }),
        }
    }

    /// Every field of the traces schema set to something that is encoded.
    fn full_traces(s: &mut Strings) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: resource(s),
                scope_spans: vec![ScopeSpans {
                    scope: scope(s),
                    spans: vec![full_span(s), full_span(s)],
                    schema_url: s.next(),
                }],
                schema_url: s.next(),
            }],
        }
    }

    fn full_logs(s: &mut Strings) -> ExportLogsServiceRequest {
        let record = |s: &mut Strings| LogRecord {
            time_unix_nano: 1,
            observed_time_unix_nano: 2,
            severity_number: 9,
            severity_text: s.next(),
            body: Some(AnyValue {
                value: Some(any_value::Value::KvlistValue(KeyValueList {
                    values: attributes(s),
                })),
            }),
            attributes: attributes(s),
            dropped_attributes_count: 1,
            flags: 1,
            trace_id: vec![0xab; 16],
            span_id: vec![0xcd; 8],
            event_name: s.next(),
        };
        let plain = LogRecord {
            body: Some(AnyValue {
                value: Some(any_value::Value::StringValue(s.next())),
            }),
            ..Default::default()
        };
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: resource(s),
                scope_logs: vec![ScopeLogs {
                    scope: scope(s),
                    log_records: vec![record(s), plain],
                    schema_url: s.next(),
                }],
                schema_url: s.next(),
            }],
        }
    }

    fn exemplars(s: &mut Strings) -> Vec<Exemplar> {
        vec![
            Exemplar {
                filtered_attributes: attributes(s),
                time_unix_nano: 3,
                span_id: vec![0xcd; 8],
                trace_id: vec![0xab; 16],
                value: Some(exemplar::Value::AsInt(-3)),
            },
            Exemplar {
                time_unix_nano: 4,
                value: Some(exemplar::Value::AsDouble(2.5)),
                ..Default::default()
            },
        ]
    }

    /// A metric of every type, each with every field set.
    fn full_metrics(s: &mut Strings) -> ExportMetricsServiceRequest {
        let number = |s: &mut Strings, value| NumberDataPoint {
            attributes: attributes(s),
            start_time_unix_nano: 1,
            time_unix_nano: 2,
            exemplars: exemplars(s),
            flags: 1,
            value: Some(value),
        };
        let gauge = metric::Data::Gauge(Gauge {
            data_points: vec![
                number(s, number_data_point::Value::AsDouble(0.5)),
                number(s, number_data_point::Value::AsInt(-1)),
            ],
        });
        let sum = metric::Data::Sum(Sum {
            data_points: vec![number(s, number_data_point::Value::AsInt(9))],
            aggregation_temporality: 2,
            is_monotonic: true,
        });
        let histogram = metric::Data::Histogram(Histogram {
            data_points: vec![HistogramDataPoint {
                attributes: attributes(s),
                start_time_unix_nano: 1,
                time_unix_nano: 2,
                count: 6,
                sum: Some(10.5),
                bucket_counts: vec![1, 2, 3],
                explicit_bounds: vec![0.5, 1.0],
                exemplars: exemplars(s),
                flags: 1,
                min: Some(0.1),
                max: Some(4.0),
            }],
            aggregation_temporality: 1,
        });
        let exponential = metric::Data::ExponentialHistogram(ExponentialHistogram {
            data_points: vec![ExponentialHistogramDataPoint {
                attributes: attributes(s),
                start_time_unix_nano: 1,
                time_unix_nano: 2,
                count: 5,
                sum: Some(7.0),
                scale: -3,
                zero_count: 1,
                positive: Some(Buckets {
                    offset: -2,
                    bucket_counts: vec![1, 300],
                }),
                negative: Some(Buckets {
                    offset: 1,
                    bucket_counts: vec![2],
                }),
                flags: 1,
                exemplars: exemplars(s),
                min: Some(-1.0),
                max: Some(3.0),
                zero_threshold: 0.001,
            }],
            aggregation_temporality: 2,
        });
        let summary = metric::Data::Summary(Summary {
            data_points: vec![SummaryDataPoint {
                attributes: attributes(s),
                start_time_unix_nano: 1,
                time_unix_nano: 2,
                count: 4,
                sum: 8.0,
                quantile_values: vec![
                    ValueAtQuantile {
                        quantile: 0.5,
                        value: 1.0,
                    },
                    ValueAtQuantile {
                        quantile: 0.99,
                        value: 3.0,
                    },
                ],
                flags: 1,
            }],
        });
        let metrics = [gauge, sum, histogram, exponential, summary]
            .into_iter()
            .map(|data| Metric {
                name: s.next(),
                description: s.next(),
                unit: s.next(),
                metadata: attributes(s),
                data: Some(data),
            })
            .collect();
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: resource(s),
                scope_metrics: vec![ScopeMetrics {
                    scope: scope(s),
                    metrics,
                    schema_url: s.next(),
                }],
                schema_url: s.next(),
            }],
        }
    }

    /// The three full requests, encoded, with their signal, item count and a prost
    /// decode of the same signal (true when it decodes).
    #[allow(clippy::type_complexity)]
    fn full_requests() -> Vec<(SignalKind, Vec<u8>, usize, fn(&[u8]) -> bool)> {
        let mut s = Strings::default();
        let traces = full_traces(&mut s);
        let metrics = full_metrics(&mut s);
        let logs = full_logs(&mut s);
        vec![
            (
                SignalKind::Traces,
                traces.encode_to_vec(),
                TracesSignal::count(&traces),
                |b| ExportTraceServiceRequest::decode(b).is_ok(),
            ),
            (
                SignalKind::Metrics,
                metrics.encode_to_vec(),
                MetricsSignal::count(&metrics),
                |b| ExportMetricsServiceRequest::decode(b).is_ok(),
            ),
            (
                SignalKind::Logs,
                logs.encode_to_vec(),
                LogsSignal::count(&logs),
                |b| ExportLogsServiceRequest::decode(b).is_ok(),
            ),
        ]
    }

    /// The tables know every field the generated types encode, with its wire type: a
    /// strict walk (unknown fields refused) accepts requests with every field set.
    #[test]
    fn full_requests_of_every_signal_and_metric_type_pass() {
        for (kind, bytes, items, _) in full_requests() {
            assert_eq!(validate::check_strict(kind, &bytes), Ok(items), "{kind:?}");
            assert_eq!(validate::check(kind, &bytes), Ok(items), "{kind:?}");
        }
        let metrics = full_metrics(&mut Strings::default());
        let batch = Metrics::from_encoded(Bytes::from(metrics.encode_to_vec())).unwrap();
        assert_eq!(batch.len(), 6, "2 gauge points and one of each other type");
        assert_eq!(batch.to_request().unwrap(), metrics);
        // The same counts as the framing-only walk that splitting relies on.
        for (kind, bytes, items, _) in full_requests() {
            let schema = match kind {
                SignalKind::Traces => &wire::TRACES,
                SignalKind::Metrics => &wire::METRICS,
                SignalKind::Logs => &wire::LOGS,
            };
            assert_eq!(schema.count(&bytes), Ok(items));
        }
    }

    fn find_all(haystack: &[u8], needle: &[u8]) -> Vec<usize> {
        haystack
            .windows(needle.len())
            .enumerate()
            .filter(|(_, w)| *w == needle)
            .map(|(i, _)| i)
            .collect()
    }

    /// Every string field of every message: names, keys, string values, trace states,
    /// units, schema URLs, entity refs, severity text, event names… Each is corrupted in
    /// turn (its first bytes made 0xFF 0xFE); the check refuses it at that field, and
    /// prost, which treats the same fields as strings, cannot decode it either.
    #[test]
    fn invalid_utf8_in_any_string_field_is_refused() {
        let mut strings = 0;
        for (kind, bytes, _, prost_decodes) in full_requests() {
            let at = find_all(&bytes, b"str#");
            assert!(at.len() > 50, "{kind:?}: {} strings", at.len());
            for pos in at {
                let mut bad = bytes.clone();
                bad[pos..pos + 2].copy_from_slice(&[0xff, 0xfe]);
                let err = validate::check(kind, &bad).unwrap_err();
                let name = String::from_utf8_lossy(&bytes[pos..pos + 8]);
                assert_eq!(err.reason, UTF8, "{kind:?} {name}");
                // The offset is the field's tag, before a one-byte length.
                assert_eq!(err.offset, pos - 2, "{kind:?} {name}");
                assert!(!prost_decodes(&bad), "{kind:?} {name}");
                strings += 1;
            }
        }
        assert!(strings > 200);
        // And through a batch, with the message a client sees.
        let mut req = traces(&[&[1]]);
        req.resource_spans[0].scope_spans[0].spans[0].name = "ok-name".into();
        let mut bytes = req.encode_to_vec();
        let pos = find_all(&bytes, b"ok-name")[0];
        bytes[pos..pos + 2].copy_from_slice(&[0xff, 0xfe]);
        let err = Traces::from_encoded(Bytes::from(bytes)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("malformed protobuf at byte {}: {UTF8}", pos - 2)
        );
    }

    /// A request of one span whose encoded fields are `span`.
    fn traces_with_span(span: &[u8]) -> Vec<u8> {
        let mut scope = Vec::new();
        wire::put_len_field(&mut scope, 2, span);
        let mut rs = Vec::new();
        wire::put_len_field(&mut rs, 2, &scope);
        let mut req = Vec::new();
        wire::put_len_field(&mut req, 1, &rs);
        req
    }

    fn valid_span() -> Vec<u8> {
        Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            name: "a".into(),
            ..Default::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn known_fields_with_the_wrong_wire_type_are_refused() {
        let cases: &[(&str, &[u8])] = &[
            ("name (5) as a varint", &[0x28, 0x01]),
            ("trace_id (1) as a varint", &[0x08, 0x01]),
            ("kind (6) as a length-delimited field", &[0x32, 0x01, 0x01]),
            ("start time (7) as a varint", &[0x38, 0x01]),
            ("attributes (9) as fixed32", &[0x4d, 0, 0, 0, 0]),
            ("status (15) as a varint", &[0x78, 0x01]),
            ("flags (16) as a varint", &[0x80, 0x01, 0x01]),
        ];
        for (what, field) in cases {
            let mut span = valid_span();
            span.extend_from_slice(field);
            let bytes = traces_with_span(&span);
            let err = Traces::from_encoded(Bytes::from(bytes.clone())).unwrap_err();
            assert_eq!(err.reason, WIRE_TYPE, "{what}");
            assert_eq!(err.offset, bytes.len() - field.len(), "{what}");
            assert!(
                ExportTraceServiceRequest::decode(&bytes[..]).is_err(),
                "{what}"
            );
        }
        // Unknown fields may have any wire type: newer senders add fields.
        let mut span = valid_span();
        span.extend_from_slice(&[0xf8, 0x06, 0x01, 0xfa, 0x06, 0x01, 0x00]);
        let bytes = traces_with_span(&span);
        assert_eq!(Traces::from_encoded(Bytes::from(bytes)).unwrap().len(), 1);
    }

    /// The encoding of `request` with `edit` applied, checked as `kind`.
    fn reason_after<R: Message + Clone>(
        kind: SignalKind,
        request: &R,
        edit: impl FnOnce(&mut R),
    ) -> Result<usize, &'static str> {
        let mut r = request.clone();
        edit(&mut r);
        validate::check(kind, &r.encode_to_vec()).map_err(|e| e.reason)
    }

    #[test]
    fn ids_must_have_their_lengths() {
        let t = full_traces(&mut Strings::default());
        fn span(r: &mut ExportTraceServiceRequest) -> &mut Span {
            &mut r.resource_spans[0].scope_spans[0].spans[0]
        }
        let trace_id = "trace_id must be 16 bytes";
        let span_id = "span_id must be 8 bytes";
        let traces = SignalKind::Traces;
        // A span's own ids are required: absent (prost omits an empty one) is refused.
        for len in [0, 2, 15, 17] {
            let got = reason_after(traces, &t, |r| span(r).trace_id = vec![1; len]);
            assert_eq!(got, Err(trace_id), "trace_id of {len} bytes");
        }
        for len in [0, 7, 9, 16] {
            let got = reason_after(traces, &t, |r| span(r).span_id = vec![1; len]);
            assert_eq!(got, Err(span_id), "span_id of {len} bytes");
        }
        // An explicitly empty trace_id field, which prost would never write.
        let mut bad = valid_span();
        bad.extend_from_slice(&[0x0a, 0x00]);
        assert_eq!(
            validate::check(traces, &traces_with_span(&bad)).map_err(|e| e.reason),
            Err(trace_id)
        );
        // A span with no fields at all: its missing trace_id is named, at the span.
        let bytes = traces_with_span(&[]);
        assert_eq!(
            validate::check(traces, &bytes),
            Err(WireError {
                offset: bytes.len(),
                reason: trace_id
            })
        );
        // parent_span_id and link ids may be empty.
        let parent = "parent_span_id must be empty or 8 bytes";
        assert_eq!(
            reason_after(traces, &t, |r| span(r).parent_span_id = vec![1; 7]),
            Err(parent)
        );
        assert_eq!(
            reason_after(traces, &t, |r| span(r).parent_span_id.clear()),
            Ok(2)
        );
        let optional_trace_id = "trace_id must be empty or 16 bytes";
        let optional_span_id = "span_id must be empty or 8 bytes";
        assert_eq!(
            reason_after(traces, &t, |r| span(r).links[0].trace_id = vec![1; 15]),
            Err(optional_trace_id)
        );
        assert_eq!(
            reason_after(traces, &t, |r| span(r).links[0].span_id = vec![1; 9]),
            Err(optional_span_id)
        );
        let no_link_ids = reason_after(traces, &t, |r| {
            span(r).links[0].trace_id.clear();
            span(r).links[0].span_id.clear();
        });
        assert_eq!(no_link_ids, Ok(2));
        // Log records: ids optional, but 16 / 8 bytes when set.
        let l = full_logs(&mut Strings::default());
        fn record(r: &mut ExportLogsServiceRequest) -> &mut LogRecord {
            &mut r.resource_logs[0].scope_logs[0].log_records[0]
        }
        let logs = SignalKind::Logs;
        assert_eq!(
            reason_after(logs, &l, |r| record(r).trace_id = vec![1; 17]),
            Err(optional_trace_id)
        );
        assert_eq!(
            reason_after(logs, &l, |r| record(r).span_id = vec![1; 4]),
            Err(optional_span_id)
        );
        let no_ids = reason_after(logs, &l, |r| {
            record(r).trace_id.clear();
            record(r).span_id.clear();
        });
        assert_eq!(no_ids, Ok(2));
        // Exemplars likewise.
        let m = full_metrics(&mut Strings::default());
        fn exemplar(r: &mut ExportMetricsServiceRequest) -> &mut Exemplar {
            match &mut r.resource_metrics[0].scope_metrics[0].metrics[2].data {
                Some(metric::Data::Histogram(h)) => &mut h.data_points[0].exemplars[0],
                other => panic!("{other:?}"),
            }
        }
        let metrics = SignalKind::Metrics;
        assert_eq!(
            reason_after(metrics, &m, |r| exemplar(r).trace_id = vec![1; 2]),
            Err(optional_trace_id)
        );
        assert_eq!(
            reason_after(metrics, &m, |r| exemplar(r).span_id = vec![1; 16]),
            Err(optional_span_id)
        );
        assert_eq!(
            reason_after(metrics, &m, |r| exemplar(r).span_id.clear()),
            Ok(6)
        );
    }

    /// An AnyValue of `levels` arrays (or kvlists) around a string, written outside-in
    /// so a very deep one costs only its size. With `unknown`, the innermost value also
    /// carries a field the schema does not know.
    fn nested_value(levels: usize, kvlist: bool, unknown: bool) -> Vec<u8> {
        use prost::encoding::{encode_varint, encoded_len_varint};
        let mut inner = Vec::new();
        wire::put_len_field(&mut inner, 1, b"leaf");
        if unknown {
            inner.extend_from_slice(&[0xf8, 0x06, 0x01]);
        }
        let mut headers = Vec::with_capacity(levels);
        let mut size = inner.len() as u64;
        let framed = |len: u64| 1 + encoded_len_varint(len) as u64 + len;
        for _ in 0..levels {
            let mut h = Vec::new();
            if kvlist {
                // AnyValue.kvlist_value(6) → KeyValueList.values(1) → KeyValue{key(1): "k", value(2)}
                let kv = 3 + framed(size);
                let list = framed(kv);
                h.push(0x32);
                encode_varint(list, &mut h);
                h.push(0x0a);
                encode_varint(kv, &mut h);
                h.extend_from_slice(&[0x0a, 0x01, b'k', 0x12]);
                encode_varint(size, &mut h);
                size = framed(list);
            } else {
                // AnyValue.array_value(5) → ArrayValue.values(1)
                let array = framed(size);
                h.push(0x2a);
                encode_varint(array, &mut h);
                h.push(0x0a);
                encode_varint(size, &mut h);
                size = framed(array);
            }
            headers.push(h);
        }
        let mut out: Vec<u8> = headers.into_iter().rev().flatten().collect();
        out.extend_from_slice(&inner);
        assert_eq!(out.len() as u64, size);
        out
    }

    /// A traces request whose one span has an attribute holding `value`.
    fn span_with_value(value: &[u8]) -> Vec<u8> {
        let mut kv = vec![0x0a, 0x01, b'k'];
        wire::put_len_field(&mut kv, 2, value);
        let mut span = valid_span();
        wire::put_len_field(&mut span, 9, &kv);
        traces_with_span(&span)
    }

    #[test]
    fn nested_value_builds_what_prost_reads() {
        let value = AnyValue::decode(&nested_value(2, true, false)[..]).unwrap();
        let Some(any_value::Value::KvlistValue(list)) = value.value else {
            panic!("{value:?}")
        };
        let inner = list.values[0].value.as_ref().unwrap();
        assert!(matches!(
            inner.value,
            Some(any_value::Value::KvlistValue(_))
        ));
        let value = AnyValue::decode(&nested_value(1, false, false)[..]).unwrap();
        assert!(matches!(value.value, Some(any_value::Value::ArrayValue(_))));
    }

    /// Nesting is refused exactly where prost's recursion limit would refuse to decode:
    /// for arrays and kvlists, with and without an unknown field at the bottom (prost
    /// cannot even skip one at its last level). Past 64 levels nothing is accepted.
    #[test]
    fn nesting_is_refused_where_prost_stops() {
        for kvlist in [false, true] {
            for unknown in [false, true] {
                let mut deepest = 0;
                for levels in 0..=66 {
                    let bytes = span_with_value(&nested_value(levels, kvlist, unknown));
                    let prost = ExportTraceServiceRequest::decode(&bytes[..]).is_ok();
                    let ours = validate::check(SignalKind::Traces, &bytes);
                    assert_eq!(ours.is_ok(), prost, "{levels} levels, kvlist {kvlist}");
                    match ours {
                        Ok(n) => {
                            assert_eq!(n, 1);
                            deepest = levels;
                        }
                        Err(e) => assert_eq!(e.reason, TOO_DEEP),
                    }
                }
                // The numbers `validate::MAX_DEPTH` documents.
                assert_eq!(deepest, if kvlist { 31 } else { 47 });
            }
        }
    }

    #[test]
    fn values_nested_100_000_deep_are_refused() {
        for kvlist in [false, true] {
            let value = nested_value(100_000, kvlist, false);
            let err = Traces::from_encoded(Bytes::from(span_with_value(&value))).unwrap_err();
            assert_eq!(err.reason, TOO_DEEP);
            // A log body too.
            let record = LogRecord::default().encode_to_vec();
            let mut record = record;
            wire::put_len_field(&mut record, 5, &value);
            let mut scope = Vec::new();
            wire::put_len_field(&mut scope, 2, &record);
            let mut rl = Vec::new();
            wire::put_len_field(&mut rl, 2, &scope);
            let mut req = Vec::new();
            wire::put_len_field(&mut req, 1, &rl);
            let err = Logs::from_encoded(Bytes::from(req)).unwrap_err();
            assert_eq!(err.reason, TOO_DEEP);
        }
    }

    /// A metrics request of one metric whose data field `data` (9 histogram, 10
    /// exponential histogram) holds one data point with fields `point`.
    fn metrics_with_point(data: u32, point: &[u8]) -> Vec<u8> {
        let mut payload = Vec::new();
        wire::put_len_field(&mut payload, 1, point);
        let mut metric = Vec::new();
        wire::put_len_field(&mut metric, 1, b"m");
        wire::put_len_field(&mut metric, data, &payload);
        let mut sm = Vec::new();
        wire::put_len_field(&mut sm, 2, &metric);
        let mut rm = Vec::new();
        wire::put_len_field(&mut rm, 2, &sm);
        let mut req = Vec::new();
        wire::put_len_field(&mut req, 1, &rm);
        req
    }

    #[test]
    fn repeated_numbers_may_be_packed_or_not_but_whole() {
        let check = |bytes: &[u8]| validate::check(SignalKind::Metrics, bytes);
        let decode = |bytes: &[u8]| ExportMetricsServiceRequest::decode(bytes);
        // bucket_counts (6, fixed64) one field per element.
        let mut point = Vec::new();
        for v in [3u64, 4] {
            point.push(0x31);
            point.extend_from_slice(&v.to_le_bytes());
        }
        let bytes = metrics_with_point(9, &point);
        assert_eq!(check(&bytes), Ok(1));
        let Some(metric::Data::Histogram(h)) =
            &decode(&bytes).unwrap().resource_metrics[0].scope_metrics[0].metrics[0].data
        else {
            panic!()
        };
        assert_eq!(h.data_points[0].bucket_counts, vec![3, 4]);
        // Packed, but 7 bytes: not a whole number of fixed64s.
        let bytes = metrics_with_point(9, &[0x32, 0x07, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(check(&bytes).map_err(|e| e.reason), Err(PARTIAL));
        assert!(decode(&bytes).is_err());
        // explicit_bounds (7, double) as a varint.
        let bytes = metrics_with_point(9, &[0x38, 0x01]);
        assert_eq!(check(&bytes).map_err(|e| e.reason), Err(WIRE_TYPE));
        assert!(decode(&bytes).is_err());
        // Exponential histogram buckets (uint64) unpacked, then packed with a varint cut
        // short.
        let mut point = Vec::new();
        wire::put_len_field(&mut point, 8, &[0x10, 0x05, 0x10, 0x07]);
        let bytes = metrics_with_point(10, &point);
        assert_eq!(check(&bytes), Ok(1));
        let mut point = Vec::new();
        wire::put_len_field(&mut point, 8, &[0x12, 0x02, 0x81, 0x81]);
        let bytes = metrics_with_point(10, &point);
        assert_eq!(check(&bytes).map_err(|e| e.reason), Err(PARTIAL));
        assert!(decode(&bytes).is_err());
    }

    /// Varints and field numbers that prost refuses are refused too, not wrapped.
    #[test]
    fn overlong_varints_and_field_numbers_are_refused() {
        let mut ok = valid_span();
        ok.extend_from_slice(&[
            0x30, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ]);
        let bytes = traces_with_span(&ok);
        assert_eq!(validate::check(SignalKind::Traces, &bytes), Ok(1));
        assert!(ExportTraceServiceRequest::decode(&bytes[..]).is_ok());
        let mut bad = valid_span();
        bad.extend_from_slice(&[
            0x30, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
        ]);
        let bytes = traces_with_span(&bad);
        let err = validate::check(SignalKind::Traces, &bytes).unwrap_err();
        assert_eq!(err.reason, "varint longer than 64 bits");
        assert!(ExportTraceServiceRequest::decode(&bytes[..]).is_err());
        // Field number 2^29: its tag does not fit the u32 prost reads it as.
        let mut bad = valid_span();
        prost::encoding::encode_varint(1 << 32, &mut bad);
        bad.push(0x01);
        let bytes = traces_with_span(&bad);
        let err = validate::check(SignalKind::Traces, &bytes).unwrap_err();
        assert_eq!(err.reason, "field number too large");
        assert!(ExportTraceServiceRequest::decode(&bytes[..]).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Whatever the check accepts, prost decodes, with the same item count: checked
        /// on full requests of every signal with a few bytes overwritten.
        #[test]
        fn what_is_accepted_decodes(
            signal in 0usize..3,
            edits in prop::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        ) {
            let (kind, mut bytes, _, prost_decodes) = full_requests().swap_remove(signal);
            for (at, value) in edits {
                let i = at % bytes.len();
                bytes[i] = value;
            }
            if let Ok(items) = validate::check(kind, &bytes) {
                prop_assert!(prost_decodes(&bytes));
                let decoded = match kind {
                    SignalKind::Traces => {
                        TracesSignal::count(&ExportTraceServiceRequest::decode(&bytes[..]).unwrap())
                    }
                    SignalKind::Metrics => MetricsSignal::count(
                        &ExportMetricsServiceRequest::decode(&bytes[..]).unwrap(),
                    ),
                    SignalKind::Logs => {
                        LogsSignal::count(&ExportLogsServiceRequest::decode(&bytes[..]).unwrap())
                    }
                };
                prop_assert_eq!(items, decoded);
            }
        }

        /// On arbitrary bytes the check never panics, and anything it accepts decodes.
        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            for (kind, _, _, prost_decodes) in full_requests() {
                if validate::check(kind, &bytes).is_ok() {
                    prop_assert!(prost_decodes(&bytes));
                }
            }
        }
    }
}
