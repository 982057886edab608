//! Micro-benchmarks of the data path's building blocks: what a receiver does per request
//! (check the encoded bytes against the OTLP schema and count them, versus the old
//! framing-only count and a full protobuf decode), what re-encoding would cost, and what
//! the batch processor does (append, split).

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use sidekick_collector::config::Signal;
use sidekick_collector::payload::{validate, wire, Traces};
use sidekick_testkit::gen::{http_traces_request, traces_request};

/// 8192 spans in 16 resources: one full default-size batch. Each span (testkit's) has
/// 16- and 8-byte ids, a name, kind, two timestamps, three attributes (two strings, one
/// int) and a status; each resource two string attributes and a scope name and version.
const SPANS: usize = 8192;
const RESOURCES: usize = 16;

fn encoded() -> Bytes {
    Bytes::from(traces_request(0, RESOURCES, SPANS / RESOURCES).encode_to_vec())
}

fn otlp(c: &mut Criterion) {
    let bytes = encoded();
    let request = ExportTraceServiceRequest::decode(bytes.clone()).unwrap();
    let mut g = c.benchmark_group("otlp");
    g.throughput(Throughput::Elements(SPANS as u64));
    // What a receiver does per request: the schema check, counting in the same walk.
    g.bench_function(BenchmarkId::new("check_and_count", SPANS), |b| {
        b.iter(|| {
            Traces::from_encoded(black_box(bytes.clone()))
                .unwrap()
                .len()
        })
    });
    // The framing-only count the receiver did before the schema check.
    g.bench_function(BenchmarkId::new("count_framing_only", SPANS), |b| {
        b.iter(|| wire::TRACES.count(black_box(&bytes)).unwrap())
    });
    // The check with a separate count after it: what folding the count into the check
    // saves.
    g.bench_function(BenchmarkId::new("check_then_count", SPANS), |b| {
        b.iter(|| {
            validate::check(Signal::Traces, black_box(&bytes)).unwrap();
            wire::TRACES.count(black_box(&bytes)).unwrap()
        })
    });
    // What an SDK sends: 100 spans of ten attributes each in one request.
    let sdk = Bytes::from(http_traces_request(0, 100).encode_to_vec());
    g.throughput(Throughput::Elements(100));
    g.bench_function(BenchmarkId::new("check_and_count_sdk", 100), |b| {
        b.iter(|| Traces::from_encoded(black_box(sdk.clone())).unwrap().len())
    });
    g.throughput(Throughput::Elements(SPANS as u64));
    g.bench_function(BenchmarkId::new("decode", SPANS), |b| {
        b.iter(|| ExportTraceServiceRequest::decode(black_box(&bytes[..])).unwrap())
    });
    g.bench_function(BenchmarkId::new("encode", SPANS), |b| {
        b.iter(|| black_box(&request).encode_to_vec())
    });
    let json = serde_json::to_vec(&request).unwrap();
    g.throughput(Throughput::Elements(SPANS as u64));
    g.bench_function(BenchmarkId::new("decode_json", SPANS), |b| {
        b.iter(|| serde_json::from_slice::<ExportTraceServiceRequest>(black_box(&json)).unwrap())
    });
    g.finish();
}

fn batching(c: &mut Criterion) {
    // What a batch processor sees: requests of 512 spans (the SDK's default batch).
    let parts: Vec<Traces> = (0..SPANS / 512)
        .map(|i| {
            let b = Bytes::from(traces_request(i as u64 * 512, 1, 512).encode_to_vec());
            Traces::from_encoded(b).unwrap()
        })
        .collect();
    let whole = Traces::from_encoded(encoded()).unwrap();
    let mut g = c.benchmark_group("batch");
    g.throughput(Throughput::Elements(SPANS as u64));
    g.bench_function(BenchmarkId::new("append", SPANS), |b| {
        b.iter(|| {
            let mut batch = Traces::default();
            for p in &parts {
                batch.append(p.clone());
            }
            batch.len()
        })
    });
    // Splitting 8192 spans into pieces of 1000: every cut lands inside a resource.
    g.bench_function(BenchmarkId::new("split_1000", SPANS), |b| {
        b.iter(|| {
            let mut rest = whole.clone();
            let mut pieces = 0;
            while !rest.is_empty() {
                let tail = rest.split_off(1000);
                pieces += black_box(&rest).len();
                rest = tail;
            }
            pieces
        })
    });
    g.bench_function(BenchmarkId::new("encoded_chunks", SPANS), |b| {
        let mut batch = Traces::default();
        parts.iter().for_each(|p| batch.append(p.clone()));
        b.iter(|| black_box(&batch).encoded_chunks().len())
    });
    g.finish();
}

/// Pod enrichment of a full batch: resources rewritten, spans copied as bytes.
fn enrichment(c: &mut Criterion) {
    use sidekick_collector::payload::TracesSignal;
    use sidekick_processors::k8s_attributes::{Config, PodAttributes};

    let env = |name: &str| -> Option<String> {
        Some(
            match name {
                "K8S_POD_NAME" => "checkout-7d9f8b6c5-x2k9q",
                "K8S_NAMESPACE" => "shop",
                "K8S_POD_UID" => "0d1c2b3a-1111-2222-3333-444455556666",
                "K8S_NODE_NAME" => "ip-10-0-1-23.eu-west-1.compute.internal",
                "K8S_POD_IP" => "10.0.1.57",
                _ => return None,
            }
            .to_string(),
        )
    };
    let mut pod = PodAttributes::new(
        Config {
            labels_file: "/nonexistent".into(),
            reload_interval: sidekick_collector::config::Duration::from_secs(3600),
            ..Config::default()
        },
        &env,
    );
    let batch = Traces::from_encoded(encoded()).unwrap();
    let mut g = c.benchmark_group("enrich");
    g.throughput(Throughput::Elements(SPANS as u64));
    g.bench_function(BenchmarkId::new("k8s_attributes", SPANS), |b| {
        b.iter(|| {
            let mut copy = batch.clone();
            pod.edit::<TracesSignal>(&mut copy);
            copy.len()
        })
    });
    g.finish();
}

/// The OTTL processors on an SDK-sized request (100 spans) and a full batch, against
/// what a processor that decodes and re-encodes the batch would pay at least.
fn processing(c: &mut Criterion) {
    use sidekick_collector::component::Sieve;
    use sidekick_collector::config::{from_node, node};
    use sidekick_collector::payload::TracesSignal;
    use sidekick_collector::telemetry::Telemetry;
    use sidekick_processors::{filter, probabilistic_sampler, transform};

    fn config<T: serde::de::DeserializeOwned>(yaml: &str) -> T {
        let (root, _) = node::parse(yaml, &std::collections::HashMap::new()).unwrap();
        from_node(&root, "processors.x").unwrap()
    }
    let telemetry = Telemetry::new();
    // Drops one span in ten (testkit's span names end in their number), after an
    // attribute lookup that finds nothing.
    let filter_config: filter::Config = config(
        r#"traces: {span: ['attributes["http.route"] == "/healthz"', 'IsMatch(name, "0$")']}"#,
    );
    let transform_config: transform::Config = config(
        r#"trace_statements: ['set(span.attributes["deployment.environment.name"], "prod")']"#,
    );
    let sampler_config: probabilistic_sampler::Config =
        config("{sampling_percentage: 50, mode: proportional}");
    let mut g = c.benchmark_group("process");
    for spans in [100, SPANS] {
        let bytes = Bytes::from(
            traces_request(0, 1.max(spans / 512), spans / 1.max(spans / 512)).encode_to_vec(),
        );
        let batch = Traces::from_encoded(bytes.clone()).unwrap();
        g.throughput(Throughput::Elements(spans as u64));
        let f = filter::Filter::from_config(&filter_config, Signal::Traces).unwrap();
        g.bench_function(BenchmarkId::new("filter", spans), |b| {
            b.iter(|| {
                let mut copy = batch.clone();
                Sieve::<TracesSignal>::sift(&f, &mut copy).unwrap();
                copy.len()
            })
        });
        let t =
            transform::Transform::new(&transform_config, Signal::Traces, &telemetry, "t").unwrap();
        g.bench_function(BenchmarkId::new("transform_set", spans), |b| {
            b.iter(|| {
                let mut copy = batch.clone();
                Sieve::<TracesSignal>::sift(&t, &mut copy).unwrap();
                copy.len()
            })
        });
        let s =
            probabilistic_sampler::Sampler::new(&sampler_config, Signal::Traces, &telemetry, "s");
        g.bench_function(BenchmarkId::new("sample", spans), |b| {
            b.iter(|| {
                let mut copy = batch.clone();
                Sieve::<TracesSignal>::sift(&s, &mut copy).unwrap();
                copy.len()
            })
        });
        g.bench_function(BenchmarkId::new("decode_encode", spans), |b| {
            b.iter(|| {
                ExportTraceServiceRequest::decode(black_box(&bytes[..]))
                    .unwrap()
                    .encode_to_vec()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, otlp, batching, enrichment, processing);
criterion_main!(benches);
