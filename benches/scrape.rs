//! Parsing and translating a scraped page of 10,000 samples (mixed counters, gauges,
//! histograms and summaries), as the `prometheus` receiver does every scrape interval.
//! Before the criterion runs it prints the bytes allocated per sample, counted by an
//! instrumented allocator.

use std::alloc::System;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sidekick_receivers::prometheus::parse::{Format, Parser};
use sidekick_receivers::prometheus::series::Tracker;
use sidekick_receivers::prometheus::translate::{translate, Options, Target};
use sidekick_testkit::gen::prometheus_page;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const SAMPLES: usize = 10_000;

fn target() -> Target {
    Target {
        job: "app".into(),
        instance: "127.0.0.1:8080".into(),
        scheme: "http".into(),
        labels: vec![
            ("instance".into(), "127.0.0.1:8080".into()),
            ("job".into(), "app".into()),
        ],
    }
}

fn opts() -> Options<'static> {
    Options {
        honor_labels: false,
        honor_timestamps: true,
        metric_relabel: &[],
        sample_limit: 0,
    }
}

/// One scrape's work on a warm tracker (the steady state).
fn scrape(page: &str, tracker: &mut Tracker, target: &Target, time: i64) -> usize {
    let out = translate(page, Format::Prometheus, time, target, &opts(), tracker).unwrap();
    out.samples_scraped
}

fn report_allocations(page: &str) {
    let target = target();
    let mut tracker = Tracker::new(1_000_000);
    scrape(page, &mut tracker, &target, 1);
    let parse = Region::new(GLOBAL);
    let n = Parser::new(page, Format::Prometheus)
        .filter(Result::is_ok)
        .count();
    let parsed = parse.change();
    let region = Region::new(GLOBAL);
    scrape(page, &mut tracker, &target, 2);
    let stats = region.change();
    println!(
        "scrape/allocations/{SAMPLES}: parse {} bytes in {} allocations for {n} entries; parse + translate {} bytes in {} allocations = {:.0} bytes per sample",
        parsed.bytes_allocated,
        parsed.allocations,
        stats.bytes_allocated,
        stats.allocations,
        stats.bytes_allocated as f64 / SAMPLES as f64
    );
}

fn bench(c: &mut Criterion) {
    let page = prometheus_page(SAMPLES);
    report_allocations(&page);
    let target = target();
    let mut g = c.benchmark_group("scrape");
    g.throughput(Throughput::Elements(SAMPLES as u64));
    g.bench_function(BenchmarkId::new("parse", SAMPLES), |b| {
        b.iter(|| Parser::new(black_box(&page), Format::Prometheus).count())
    });
    let mut tracker = Tracker::new(1_000_000);
    let mut time = 0;
    g.bench_function(BenchmarkId::new("parse_translate", SAMPLES), |b| {
        b.iter(|| {
            time += 15_000;
            scrape(black_box(&page), &mut tracker, &target, time)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
