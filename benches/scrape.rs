//! Parsing and translating a scraped page of 10,000 samples (mixed counters, gauges,
//! histograms and summaries), as the `prometheus` receiver does every scrape interval, and
//! refusing it for `sample_limit` (1,000), which stops at the first sample over the limit.
//! The `prometheus-parse` crate parses the same page as a baseline.
//! Before the criterion runs it prints the bytes allocated per sample, counted by an
//! instrumented allocator, and what the refused scrape allocates; and the size of the
//! remote-write requests a 100,000-sample page makes, in 1.0 and in 2.0, compressed (on
//! the wire) and not.

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

/// What a scrape of a `samples`-sample page costs on the wire in remote-write 1.0 and
/// 2.0: the page translated as the receiver does, then as the `prometheusremotewrite`
/// exporter does with its defaults (5 shards, requests of at most 3,000,000 bytes).
fn report_remote_write_sizes(samples: usize) {
    use sidekick_prometheus::from_otlp as prom;
    use sidekick_prometheus::remote_write::{Encoder, Protocol};
    let page = prometheus_page(samples);
    let now = 1_800_000_000_000;
    let mut tracker = Tracker::new(1_000_000);
    let scraped = translate(
        page,
        Format::Prometheus,
        now,
        &target(),
        &opts(),
        &mut tracker,
    )
    .expect("the page translates")
    .attached();
    let settings = prom::Settings {
        native_histograms: true,
        target_info: true,
        ..prom::Settings::default()
    };
    let mut sizes = Vec::new();
    for protocol in [Protocol::V1, Protocol::V2] {
        let mut e = Encoder::new(5, 3_000_000, now).with_protocol(protocol);
        prom::translate_with(
            &scraped.request,
            &settings,
            &mut prom::Accumulator::default(),
            now,
            &mut |s| e.push(s),
        );
        let requests: Vec<_> = e.finish(Vec::new()).lanes.into_iter().flatten().collect();
        let wire: usize = requests.iter().map(|r| r.body.len()).sum();
        let raw: usize = requests
            .iter()
            .map(|r| {
                snap::raw::Decoder::new()
                    .decompress_vec(&r.body)
                    .map_or(0, |b| b.len())
            })
            .sum();
        println!(
            "remote-write {protocol:?}, a {samples}-sample page: {wire} bytes on the wire, {raw} before compression, {} requests",
            requests.len()
        );
        sizes.push((wire, raw));
    }
    let (one, two) = (sizes[0], sizes[1]);
    println!(
        "remote-write 2.0 against 1.0: {:.1}% smaller on the wire, {:.1}% smaller before compression",
        100.0 * (1.0 - two.0 as f64 / one.0 as f64),
        100.0 * (1.0 - two.1 as f64 / one.1 as f64)
    );
}

fn bench(c: &mut Criterion) {
    let page = prometheus_page(SAMPLES);
    report_allocations(&page);
    report_remote_write_sizes(100_000);
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
