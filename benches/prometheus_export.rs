//! The Prometheus exporters' work: translating, encoding and snappy-compressing 10,000
//! series for remote-write, and rendering a scrape page of 100,000 series.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sidekick_exporters::prom::{self, Accumulator, Settings, Translation};
use sidekick_exporters::prometheus::{Format, Store};
use sidekick_exporters::prometheus_remote_write::Encoder;
use sidekick_testkit::gen::metrics_families;

fn settings() -> Settings {
    Settings {
        target_info: true,
        ..Settings::default()
    }
}

fn bench(c: &mut Criterion) {
    // 10,000 series: 10 families of 1,000.
    let request = metrics_families(10, 1_000);
    let mut g = c.benchmark_group("prometheus");
    g.throughput(Throughput::Elements(10_000));
    g.bench_function(BenchmarkId::new("translate", 10_000), |b| {
        let mut acc = Accumulator::default();
        b.iter(|| {
            prom::translate(black_box(&request), &settings(), &mut acc, 0)
                .series
                .len()
        })
    });
    g.bench_function(
        BenchmarkId::new("remote_write_translate_encode_compress", 10_000),
        |b| {
            let mut acc = Accumulator::default();
            // What the exporter does: samples go from the translation straight into
            // encoded series, never owned.
            b.iter(|| {
                let mut encoder = Encoder::new(5, 3_000_000, 0);
                prom::translate_with(black_box(&request), &settings(), &mut acc, 0, &mut |s| {
                    encoder.push(s)
                });
                encoder
                    .finish(Vec::new())
                    .lanes
                    .iter()
                    .map(|r| r.len())
                    .sum::<usize>()
            })
        },
    );
    // A page of 100,000 series: 100 families of 1,000 series.
    let big = metrics_families(100, 1_000);
    let mut store = Store::new(Duration::from_secs(3600), false);
    store.update(prom::translate(
        &big,
        &settings(),
        &mut Accumulator::default(),
        0,
    ));
    g.throughput(Throughput::Elements(100_000));
    // What holds the store's lock during a scrape, and the whole render.
    g.bench_function(BenchmarkId::new("snapshot", 100_000), |b| {
        b.iter(|| store.snapshot())
    });
    g.bench_function(BenchmarkId::new("render_text", 100_000), |b| {
        b.iter(|| store.render(Format::Text, Translation::default()).len())
    });
    g.bench_function(BenchmarkId::new("ingest", 100_000), |b| {
        let mut acc = Accumulator::default();
        b.iter(|| {
            let t = prom::translate(black_box(&big), &settings(), &mut acc, 0);
            store.update(t);
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
