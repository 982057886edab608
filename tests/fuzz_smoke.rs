//! A short fuzzing run of every parser of outside input on every test run: the targets of
//! `fuzz/` (`sidekick::fuzz`), fed seed inputs mutated at random (bit flips, bytes set,
//! inserted and cut, chunks repeated and spliced between seeds, tokens of the format
//! dropped in) for `SIDEKICK_FUZZ_SECS` seconds each (3 by default; CI gives 20). A panic
//! fails the test and prints the input, to be kept as a regression case below.
//!
//! `cargo fuzz run <target>` (in `fuzz/`) runs the same targets under libFuzzer with
//! coverage guidance for as long as you like.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use prost::Message;
use sidekick_testkit::gen::{
    logs_request, metrics_request, prometheus_page, protobuf_page, traces_request,
};

/// A small fast generator (xorshift); the seed is printed so a failing run can be
/// repeated with `SIDEKICK_FUZZ_SEED`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"\"",
    b"\\",
    b"\n",
    b",",
    b"=",
    b" ",
    b"#",
    b"# EOF\n",
    b"# TYPE x histogram\n",
    b"# TYPE x counter\n",
    b"# TYPE x summary\n",
    b"# HELP x h\n",
    b"# UNIT x seconds\n",
    b"x_bucket{le=\"+Inf\"} 1\n",
    b"x_count 1\n",
    b"x_total 1 # {a=\"b\"} 1 1\n",
    b"NaN",
    b"+Inf",
    b"-Inf",
    b"1e308",
    b"-0",
    b"9223372036854775807",
    b"${env:",
    b"${env:PORT}",
    b"${env:NESTED}",
    b"$$",
    b": ",
    b"- ",
    b"[",
    b"]",
    b"&a",
    b"*a",
    b"!!binary",
    b"\t",
    b"\xff",
    b"\0",
    b"\r\n",
];

fn mutate(rng: &mut Rng, input: &mut Vec<u8>, seeds: &[Vec<u8>]) {
    for _ in 0..1 + rng.below(4) {
        let len = input.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                input[i] = rng.next() as u8;
            }
            2 => {
                let i = rng.below(len + 1);
                input.insert(i, rng.next() as u8);
            }
            3 if len > 0 => {
                let start = rng.below(len);
                let end = (start + 1 + rng.below(16)).min(len);
                input.drain(start..end);
            }
            4 if len > 0 => {
                let start = rng.below(len);
                let end = (start + 1 + rng.below(64)).min(len);
                let chunk = input[start..end].to_vec();
                let at = rng.below(input.len() + 1);
                input.splice(at..at, chunk);
            }
            5 => {
                let other = &seeds[rng.below(seeds.len())];
                if !other.is_empty() {
                    let start = rng.below(other.len());
                    let end = (start + 1 + rng.below(128)).min(other.len());
                    let at = rng.below(len + 1);
                    input.splice(at..at, other[start..end].iter().copied());
                }
            }
            6 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                let at = rng.below(len + 1);
                input.splice(at..at, token.iter().copied());
            }
            _ if len > 0 => input.truncate(rng.below(len)),
            _ => {}
        }
    }
    input.truncate(1 << 16);
}

fn budget() -> Duration {
    let secs = std::env::var("SIDEKICK_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    Duration::from_secs_f64(secs)
}

/// Runs target `name` on mutations of `seeds` for the budget.
fn smoke(name: &str, seeds: Vec<Vec<u8>>) {
    let target = sidekick::fuzz::TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no fuzz target {name}"))
        .1;
    let seed = std::env::var("SIDEKICK_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64 | 1)
                .unwrap_or(0x9e37_79b9_7f4a_7c15)
        });
    let mut rng = Rng(seed);
    let started = Instant::now();
    let mut runs = 0u64;
    // The seeds as they are first, then mutations.
    for s in &seeds {
        run_one(name, target, s, seed);
    }
    while started.elapsed() < budget() {
        let mut input = seeds[rng.below(seeds.len())].clone();
        for _ in 0..1 + rng.below(8) {
            mutate(&mut rng, &mut input, &seeds);
            run_one(name, target, &input, seed);
            runs += 1;
        }
    }
    eprintln!(
        "fuzz smoke {name}: {runs} inputs in {:.1}s (seed {seed}), no crash",
        started.elapsed().as_secs_f64()
    );
}

fn run_one(name: &str, target: fn(&[u8]), input: &[u8], seed: u64) {
    if catch_unwind(AssertUnwindSafe(|| target(input))).is_err() {
        panic!(
            "fuzz target {name} panicked (SIDEKICK_FUZZ_SEED={seed}) on input {:?}",
            String::from_utf8_lossy(input)
        );
    }
}

fn file(path: &str) -> Vec<u8> {
    std::fs::read(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn otlp_seeds() -> Vec<Vec<u8>> {
    vec![
        traces_request(0, 2, 3).encode_to_vec(),
        metrics_request(0, 2, 3).encode_to_vec(),
        logs_request(0, 2, 3).encode_to_vec(),
        Vec::new(),
    ]
}

#[test]
fn otlp_protobuf() {
    smoke("otlp_protobuf", otlp_seeds());
}

#[test]
fn otlp_http_body() {
    let mut seeds: Vec<Vec<u8>> = otlp_seeds()
        .into_iter()
        .map(|b| [vec![0u8], b].concat())
        .collect();
    seeds.push(
        [
            vec![0x80],
            serde_json::to_vec(&traces_request(0, 1, 2)).unwrap(),
        ]
        .concat(),
    );
    seeds.push(
        [
            vec![0x80],
            serde_json::to_vec(&metrics_request(0, 1, 2)).unwrap(),
        ]
        .concat(),
    );
    let mut gz = flate2::write::GzEncoder::new(vec![1u8], flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &traces_request(0, 1, 2).encode_to_vec()).unwrap();
    seeds.push(gz.finish().unwrap());
    smoke("otlp_http_body", seeds);
}

#[test]
fn prometheus_text() {
    smoke(
        "prometheus_text",
        vec![
            prometheus_page(40).into_bytes(),
            file("prometheus/testdata/prometheus/prometheus.prom"),
            file("prometheus/testdata/prometheus/node_exporter.prom")[..4096].to_vec(),
        ],
    );
}

#[test]
fn openmetrics() {
    smoke(
        "openmetrics",
        vec![
            file("prometheus/testdata/prometheus/openmetrics.txt"),
            b"# TYPE h histogram\n# UNIT h seconds\nh_bucket{le=\"1\"} 1 # {trace_id=\"0102030405060708090a0b0c0d0e0f10\"} 0.5\nh_bucket{le=\"+Inf\"} 2\nh_count 2\nh_sum 3\n# TYPE c counter\nc_total 4 1700000000\nc_total 5 1700000005\n# TYPE s stateset\ns{s=\"a\"} 1\n# TYPE i info\ni_info{v=\"1\"} 1\n# EOF\n".to_vec(),
            // Found by this run: a timestamp past the end of time, then a reset
            // (regression test: receivers' timestamps_at_the_ends_of_time_...).
            b"# TYPE c counter\nc_total 4 1700000000\nc_total 5 19223372036854775807700000005\n# EOF\n".to_vec(),
        ],
    );
}

#[test]
fn prometheus_protobuf() {
    smoke(
        "prometheus_protobuf",
        vec![protobuf_page(1), protobuf_page(5)],
    );
}

#[test]
fn downward_api() {
    smoke(
        "downward_api",
        vec![
            b"app=\"checkout\"\npod-template-hash=\"7d9f8b6c5\"\nnote=\"a \\\"b\\\"\\nc\"\n"
                .to_vec(),
            b"prometheus.io/scrape=\"true\"\nprometheus.io/port=\"8080\"\n".to_vec(),
        ],
    );
}

#[test]
fn config_yaml() {
    smoke(
        "config_yaml",
        vec![
            sidekick::DEFAULT_CONFIG.as_bytes().to_vec(),
            file("tests/config/valid/minimal.yaml"),
            file("tests/config/valid/collector_style.yaml"),
            b"receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:${env:PORT}\nexporters:\n  debug:\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [debug]\n".to_vec(),
        ],
    );
}

#[test]
fn export_responses() {
    smoke(
        "export_responses",
        vec![
            b"\x0a\x06\x08\x05\x12\x02no".to_vec(),
            b"120".to_vec(),
            b"\x08\x0e\x12\x04busy".to_vec(),
        ],
    );
}

#[test]
fn credentials() {
    smoke(
        "credentials",
        vec![
            b"app:app-password\nsha:{SHA}ZTaT7uyDGpXsH5lCFRp5pD3HPWU=\nb:$2y$04$BwcHBwcHBwcHBwcHBwcHB.fH8mRYqM7UyHcXrT5fBdiIdYBL1C0y2\n\nauthorization: Basic YXBwOmFwcC1wYXNzd29yZA==\n".to_vec(),
            b"t0ken\n\nauthorization: Bearer t0ken\nx-api-key: t0ken\n".to_vec(),
            b"b:$2y$04$BwcHBwcHBwcHBwcHBwcHB.fH8mRYqM7UyHcXrT5fBdiIdYBL1C0y2\n\nauthorization: Basic Yjpwdy1i\n".to_vec(),
        ],
    );
}

#[test]
fn log_lines() {
    smoke(
        "log_lines",
        vec![
            br#"{"log":"hello\n","stream":"stderr","time":"2024-05-01T12:00:00.5Z"}"#.to_vec(),
            b"2024-05-01T12:00:00.000000001Z stdout P part one".to_vec(),
            br#"{"msg":"hi","level":"warning","ts":"1714564800.123"}"#.to_vec(),
            b"10.0.0.1 [01/May/2024:14:00:00 +0200] 503 rest".to_vec(),
            b"May  1 14:00:00 2024".to_vec(),
        ],
    );
}

#[test]
fn ottl() {
    let with_body = |text: &str, body: Vec<u8>| [text.as_bytes(), b"\n", &body].concat();
    let traces = traces_request(0, 2, 3).encode_to_vec();
    let metrics = metrics_request(0, 2, 3).encode_to_vec();
    let logs = logs_request(0, 2, 3).encode_to_vec();
    smoke(
        "ottl",
        vec![
            with_body(
                r#"set(attributes["env"], Concat([name, "x"], "-")) where IsMatch(name, "^s") and kind != 3"#,
                traces.clone(),
            ),
            with_body(
                r#"attributes["http.route"] == "/healthz" or status.code == STATUS_CODE_ERROR"#,
                traces.clone(),
            ),
            with_body(
                r#"limit(attributes, 1, []) where resource.attributes["service.name"] != nil"#,
                traces,
            ),
            with_body(
                r#"merge_maps(attributes, ParseJSON("{\"a\": [1, {\"b\": true}]}"), "upsert")"#,
                logs.clone(),
            ),
            with_body(
                r#"replace_all_patterns(attributes, "value", "(\\w+)", "$1$1")"#,
                logs.clone(),
            ),
            with_body(
                r#"truncate_all(attributes, 3) where severity_number >= SEVERITY_NUMBER_INFO"#,
                logs,
            ),
            with_body(
                r#"set(description, String(Split(name, ".")))"#,
                metrics.clone(),
            ),
            with_body(
                r#"metric.type == METRIC_DATA_TYPE_SUM and value_int * 2 > 3"#,
                metrics,
            ),
        ],
    );
}
