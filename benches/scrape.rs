//! Parsing and translating a scraped page of 10,000 samples (mixed counters, gauges,
//! histograms and summaries), as the `prometheus` receiver does every scrape interval, and
//! refusing it for `sample_limit` (1,000), which stops at the first sample over the limit.
//! The `prometheus-parse` crate parses the same page as a baseline.
//! Before the criterion runs it prints the bytes allocated per sample, counted by an
//! instrumented allocator, and what the refused scrape allocates.

use std::alloc::System;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sidekick_prometheus::parse::{Format, Parser};
use sidekick_receivers::prometheus::series::Tracker;
use sidekick_receivers::prometheus::translate::{translate, Options, Target};
use sidekick_testkit::gen::prometheus_page;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const SAMPLES: usize = 10_000;

fn target() -> Target {
    Target::plain("app", "127.0.0.1:8080")
}

/// `sample_limit` of the refused-scrape case: a tenth of the page.
const LIMIT: usize = SAMPLES / 10;

fn opts() -> Options<'static> {
    Options::default()
}

/// One scrape's work on a warm tracker (the steady state).
fn scrape(page: &str, tracker: &mut Tracker, target: &Target, time: i64) -> usize {
    let out = translate(page, Format::Prometheus, time, target, &opts(), tracker).unwrap();
    out.samples_scraped
}

/// A scrape refused for `sample_limit`.
fn refused(page: &str, tracker: &mut Tracker, target: &Target, time: i64) -> bool {
    let limited = Options {
        sample_limit: LIMIT,
        ..opts()
    };
    translate(page, Format::Prometheus, time, target, &limited, tracker).is_err()
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
    let region = Region::new(GLOBAL);
    assert!(refused(page, &mut tracker, &target, 3));
    let limited = region.change();
    println!(
        "scrape/allocations/{SAMPLES}: refused at sample_limit {LIMIT}: {} bytes in {} allocations, {} bytes still held after",
        limited.bytes_allocated,
        limited.allocations,
        limited.bytes_allocated - limited.bytes_deallocated,
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
    // The baseline: the `prometheus-parse` crate on the same page, fed owned lines as its
    // API takes them. It reads the whole page into its own structures (owned names,
    // label maps, values), which is why the receiver has a borrowing parser of its own.
    g.bench_function(
        BenchmarkId::new("parse_prometheus_parse_crate", SAMPLES),
        |b| {
            b.iter(|| {
                let lines = black_box(&page).lines().map(|l| Ok(l.to_owned()));
                prometheus_parse::Scrape::parse(lines)
                    .expect("the page parses")
                    .samples
                    .len()
            })
        },
    );
    let mut tracker = Tracker::new(1_000_000);
    let mut time = 0;
    g.bench_function(BenchmarkId::new("parse_translate", SAMPLES), |b| {
        b.iter(|| {
            time += 15_000;
            scrape(black_box(&page), &mut tracker, &target, time)
        })
    });
    g.bench_function(BenchmarkId::new("sample_limit", SAMPLES), |b| {
        b.iter(|| {
            time += 15_000;
            refused(black_box(&page), &mut tracker, &target, time)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
