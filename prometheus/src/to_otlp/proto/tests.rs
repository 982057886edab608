use super::super::series::{Tracker, NO_RECORDED_VALUE};
use super::super::{translate_protobuf, Options, Target, Translated};
use crate::exposition::*;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::{metric::Data, Metric};

const T0: i64 = 1_700_000_000_000;

fn label(name: &str, value: &str) -> LabelPair {
    LabelPair {
        name: name.into(),
        value: value.into(),
    }
}

fn family(name: &str, t: MetricType, metric: Vec<Metric_>) -> MetricFamily {
    MetricFamily {
        name: name.into(),
        help: format!("{name} help"),
        r#type: t as i32,
        metric,
        unit: String::new(),
    }
}

type Metric_ = crate::exposition::Metric;

fn native(labels: Vec<LabelPair>, count: u64, deltas: Vec<i64>) -> Metric_ {
    let length = deltas.len() as u32;
    Metric_ {
        label: labels,
        histogram: Some(Histogram {
            sample_count: count,
            sample_sum: 12.5,
            schema: 3,
            zero_threshold: 1e-9,
            zero_count: 1,
            positive_span: vec![BucketSpan { offset: 2, length }],
            positive_delta: deltas,
            created_timestamp: Some(Timestamp::from_ms(T0 - 60_000)),
            exemplars: vec![Exemplar {
                label: vec![label("trace_id", "0123456789abcdef0123456789abcdef")],
                value: 1.2,
                timestamp: Some(Timestamp::from_ms(T0 - 1_000)),
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn page() -> Vec<MetricFamily> {
    vec![
        family(
            "requests_total",
            MetricType::Counter,
            vec![Metric_ {
                label: vec![label("code", "200")],
                counter: Some(Counter {
                    value: 7.0,
                    exemplar: None,
                    created_timestamp: Some(Timestamp::from_ms(T0 - 30_000)),
                }),
                ..Default::default()
            }],
        ),
        family(
            "temperature",
            MetricType::Gauge,
            vec![Metric_ {
                gauge: Some(Value { value: 21.5 }),
                ..Default::default()
            }],
        ),
        family(
            "latency_seconds",
            MetricType::Histogram,
            vec![
                native(vec![label("path", "/a")], 9, vec![2, 1, 0]),
                native(vec![label("path", "/b")], 1, vec![]),
            ],
        ),
        family(
            "size_bytes",
            MetricType::Histogram,
            vec![Metric_ {
                histogram: Some(Histogram {
                    sample_count: 4,
                    sample_sum: 300.0,
                    bucket: vec![
                        Bucket {
                            cumulative_count: 1,
                            upper_bound: 10.0,
                            ..Default::default()
                        },
                        Bucket {
                            cumulative_count: 3,
                            upper_bound: 100.0,
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                }),
                ..Default::default()
            }],
        ),
        family(
            "rpc_seconds",
            MetricType::Summary,
            vec![Metric_ {
                summary: Some(Summary {
                    sample_count: 9,
                    sample_sum: 4.5,
                    quantile: vec![Quantile {
                        quantile: 0.5,
                        value: 0.4,
                    }],
                    created_timestamp: None,
                }),
                ..Default::default()
            }],
        ),
    ]
}

fn run(families: &[MetricFamily], time: i64, tracker: &mut Tracker) -> (Translated, Vec<String>) {
    let target = Target::plain("app", "10.0.0.1:9090");
    let out = translate_protobuf(
        &encode(families),
        time,
        &target,
        &Options::default(),
        tracker,
    )
    .unwrap();
    let refused = out.refused.iter().map(|(f, _)| f.clone()).collect();
    (out.translated.attached(), refused)
}

fn metric<'a>(r: &'a ExportMetricsServiceRequest, name: &str) -> &'a Metric {
    r.resource_metrics[0]
        .scope_metrics
        .iter()
        .flat_map(|s| &s.metrics)
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("no {name}"))
}

#[test]
fn every_kind_of_family_translates_and_native_histograms_become_exponential() {
    let mut tracker = Tracker::new(1000);
    let (out, refused) = run(&page(), T0, &mut tracker);
    assert!(refused.is_empty());
    let r = &out.request;

    let Some(Data::Sum(sum)) = &metric(r, "requests_total").data else {
        panic!("counter")
    };
    assert_eq!(
        sum.data_points[0].start_time_unix_nano,
        (T0 - 30_000) as u64 * 1_000_000
    );

    let Some(Data::ExponentialHistogram(h)) = &metric(r, "latency_seconds").data else {
        panic!("native histogram")
    };
    assert_eq!(h.data_points.len(), 2);
    let p = &h.data_points[0];
    assert_eq!(
        (p.scale, p.count, p.zero_count, p.sum),
        (3, 9, 1, Some(12.5))
    );
    assert_eq!(p.zero_threshold, 1e-9);
    let pos = p.positive.as_ref().unwrap();
    // Prometheus buckets 2, 3, 4 are OTLP buckets 1, 2, 3.
    assert_eq!((pos.offset, pos.bucket_counts.clone()), (1, vec![2, 3, 3]));
    assert_eq!(p.start_time_unix_nano, (T0 - 60_000) as u64 * 1_000_000);
    assert_eq!(p.exemplars.len(), 1);
    assert_eq!(p.exemplars[0].trace_id.len(), 16);
    assert_eq!(p.attributes[0].key, "path");

    let Some(Data::Histogram(c)) = &metric(r, "size_bytes").data else {
        panic!("classic histogram")
    };
    let p = &c.data_points[0];
    // `+Inf` was left out of the page: the count fills it.
    assert_eq!(
        (p.explicit_bounds.clone(), p.bucket_counts.clone()),
        (vec![10.0, 100.0], vec![1, 2, 1])
    );

    let Some(Data::Summary(s)) = &metric(r, "rpc_seconds").data else {
        panic!("summary")
    };
    assert_eq!(
        (
            s.data_points[0].count,
            s.data_points[0].quantile_values.len()
        ),
        (9, 1)
    );
    // The samples a text page would have had: counter + created, gauge, 2 natives + 2
    // created, 3 buckets + sum + count, quantile + sum + count.
    assert_eq!(out.samples_scraped, 2 + 1 + 4 + 5 + 3);
}

#[test]
fn an_inconsistent_native_histogram_leaves_out_its_family_alone() {
    let mut families = page();
    // Three buckets announced, two counts given.
    let bad = families[2].metric[1].histogram.as_mut().unwrap();
    bad.positive_span = vec![BucketSpan {
        offset: 0,
        length: 3,
    }];
    bad.positive_delta = vec![1, -1];
    let mut tracker = Tracker::new(1000);
    let (out, refused) = run(&families, T0, &mut tracker);
    assert_eq!(refused, vec!["latency_seconds".to_string()]);
    let r = &out.request;
    assert!(r.resource_metrics[0].scope_metrics[0]
        .metrics
        .iter()
        .all(|m| m.name != "latency_seconds"));
    for name in ["requests_total", "temperature", "size_bytes", "rpc_seconds"] {
        metric(r, name);
    }
}

#[test]
fn a_vanished_native_series_gets_a_stale_exponential_point_and_a_reset_a_new_start() {
    let mut tracker = Tracker::new(1000);
    run(&page(), T0, &mut tracker);
    let mut next = page();
    // `/b` goes; `/a` resets (its count falls) and has no created timestamp now.
    next[2].metric.truncate(1);
    let h = next[2].metric[0].histogram.as_mut().unwrap();
    h.sample_count = 3;
    h.positive_delta = vec![1, 0, 0];
    h.zero_count = 0;
    h.sample_sum = f64::NAN;
    h.created_timestamp = None;
    let (out, _) = run(&next, T0 + 15_000, &mut tracker);
    let points: Vec<_> = out.request.resource_metrics[0]
        .scope_metrics
        .iter()
        .flat_map(|s| &s.metrics)
        .filter(|m| m.name == "latency_seconds")
        .flat_map(|m| match &m.data {
            Some(Data::ExponentialHistogram(h)) => h.data_points.clone(),
            _ => panic!("native histogram"),
        })
        .collect();
    assert_eq!(points.len(), 2);
    let (live, stale): (Vec<_>, Vec<_>) = points.iter().partition(|p| p.flags == 0);
    assert_eq!(stale[0].flags, NO_RECORDED_VALUE);
    assert_eq!(stale[0].time_unix_nano, (T0 + 15_000) as u64 * 1_000_000);
    assert_eq!(live[0].count, 3);
    assert_eq!(live[0].sum, None);
    // A reset: the series starts again just before this scrape.
    assert!(live[0].start_time_unix_nano > (T0 - 60_000) as u64 * 1_000_000);
}

#[test]
fn a_page_that_is_not_protobuf_fails_the_scrape() {
    let mut tracker = Tracker::new(1000);
    let target = Target::plain("app", "x:1");
    let err = translate_protobuf(
        b"\xffnot a page",
        T0,
        &target,
        &Options::default(),
        &mut tracker,
    )
    .err()
    .unwrap();
    assert_eq!(err.reason(), "malformed_page");
}
