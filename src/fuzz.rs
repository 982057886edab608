//! Entry points for fuzzing every parser of outside input, one per target: each takes
//! arbitrary bytes and must neither panic nor hang, whatever they are. The libFuzzer
//! targets in `fuzz/` call these, and so does `tests/fuzz_smoke.rs`, which mutates seed
//! inputs for a time budget on every test run.

use std::collections::HashMap;

use bytes::Bytes;
use sidekick_collector::payload::{Batch, LogsSignal, MetricsSignal, Signal, TracesSignal};
use sidekick_prometheus::parse::Format;
use sidekick_receivers::prometheus::series::Tracker;
use sidekick_receivers::prometheus::translate::{self, translate, Options};

/// A fuzz target: takes any bytes.
pub type Target = fn(&[u8]);

/// The targets, by name (as `fuzz/fuzz_targets/<name>.rs` and the smoke test name them).
pub const TARGETS: &[(&str, Target)] = &[
    ("otlp_protobuf", otlp_protobuf),
    ("otlp_http_body", otlp_http_body),
    ("prometheus_text", prometheus_text),
    ("openmetrics", openmetrics),
    ("prometheus_protobuf", prometheus_protobuf),
    ("downward_api", downward_api),
    ("config_yaml", config_yaml),
    ("export_responses", export_responses),
    ("credentials", credentials),
    ("log_lines", log_lines),
    ("ottl", ottl),
];

/// Exercises a batch that passed the receivers' checks as the pipeline would.
fn use_batch<S: Signal>(mut batch: Batch<S>) {
    let _ = batch.len();
    let _ = batch.size();
    let mut other = batch.clone();
    batch.resources_mut(|r| r.attributes.clear());
    if batch.len() > 1 {
        let _ = other.split_off(batch.len() / 2);
    }
    let _ = other.to_request();
    batch.append(other);
    let _ = batch.encoded();
}

/// An OTLP protobuf request body of each signal: the validating walker, then what the
/// pipeline does with a batch (split, merge, edit resources, decode, encode).
pub fn otlp_protobuf(data: &[u8]) {
    let body = Bytes::copy_from_slice(data);
    if let Ok(b) = Batch::<TracesSignal>::from_encoded(body.clone()) {
        use_batch(b);
    }
    if let Ok(b) = Batch::<MetricsSignal>::from_encoded(body.clone()) {
        use_batch(b);
    }
    if let Ok(b) = Batch::<LogsSignal>::from_encoded(body) {
        use_batch(b);
    }
}

/// An OTLP/HTTP body: the first byte picks the content encoding and JSON or protobuf,
/// the rest is the body (decompressed into at most 1 MiB).
pub fn otlp_http_body(data: &[u8]) {
    use sidekick_receivers::otlp::decode_body;
    let Some((&how, body)) = data.split_first() else {
        return;
    };
    let encoding = ["", "gzip", "zstd", "deflate", "br"][usize::from(how % 5)];
    let json = how & 0x80 != 0;
    let body = Bytes::copy_from_slice(body);
    let limit = 1 << 20;
    if let Ok(b) = decode_body::<TracesSignal>(encoding, json, body.clone(), limit) {
        use_batch(b);
    }
    if let Ok(b) = decode_body::<MetricsSignal>(encoding, json, body.clone(), limit) {
        use_batch(b);
    }
    if let Ok(b) = decode_body::<LogsSignal>(encoding, json, body, limit) {
        use_batch(b);
    }
}

fn scrape(data: &[u8], format: Format) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let target = translate::Target::plain("app", "127.0.0.1:8080");
    let limited = Options {
        sample_limit: 1_000,
        label_limit: 30,
        label_name_length_limit: 200,
        label_value_length_limit: 2_000,
        ..Options::default()
    };
    let mut tracker = Tracker::new(1_000);
    // Twice, so the second scrape meets the first's series (resets, staleness).
    for (time, options) in [(1_000, Options::default()), (6_000, limited)] {
        let _ = translate(text, format, time, &target, &options, &mut tracker);
    }
    // And a third page that drops everything: every series goes stale.
    let _ = translate(
        "",
        Format::Prometheus,
        11_000,
        &target,
        &Options::default(),
        &mut tracker,
    );
}

/// A scraped page in the Prometheus text format: parse, check, translate.
pub fn prometheus_text(data: &[u8]) {
    scrape(data, Format::Prometheus);
}

/// A scraped page served as OpenMetrics: parse, the format's rules, translate.
pub fn openmetrics(data: &[u8]) {
    scrape(data, Format::OpenMetrics);
}

/// A scraped page in the protobuf exposition: decode, check native histograms,
/// translate, twice and then an empty page (resets, staleness).
pub fn prometheus_protobuf(data: &[u8]) {
    let target = translate::Target::plain("app", "127.0.0.1:8080");
    let mut tracker = Tracker::new(1_000);
    for (time, page) in [(1_000, data), (6_000, data), (11_000, &[][..])] {
        let _ =
            translate::translate_protobuf(page, time, &target, &Options::default(), &mut tracker);
    }
}

/// A downward-API file (`labels`, `annotations`).
pub fn downward_api(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = sidekick_collector::transport::downward::parse(&text);
}

/// A YAML configuration with `${env:…}` references: parse, expand, check, plan.
pub fn config_yaml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env: HashMap<String, String> = [
        ("PORT", "4317"),
        ("EMPTY", ""),
        ("NESTED", "${env:PORT}"),
        ("YAML", "a: [1, {b: c}]"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let registry = crate::registry();
    let _ = crate::plan(text, "fuzz.yaml", &registry, &env);
}

/// What a listener's authenticators read: an htpasswd text (up to the first empty line)
/// and request headers after it (`name: value` lines), checked by `basicauth` with that
/// htpasswd and by a `bearertokenauth`.
pub fn credentials(data: &[u8]) {
    use sidekick_collector::config::Secret;
    use sidekick_collector::transport::auth::{
        BasicAuthSettings, BearerTokenSettings, HtpasswdSettings,
    };
    let text = String::from_utf8_lossy(data);
    let (htpasswd, headers) = text.split_once("\n\n").unwrap_or((&text, ""));
    let mut map = http::HeaderMap::new();
    for line in headers.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = http::HeaderName::from_bytes(name.trim().as_bytes());
        let value = http::HeaderValue::from_str(value.trim());
        if let (Ok(name), Ok(value)) = (name, value) {
            map.append(name, value);
        }
    }
    let basic = BasicAuthSettings {
        htpasswd: Some(HtpasswdSettings {
            file: None,
            inline: Some(Secret(htpasswd.to_string())),
        }),
        client_auth: None,
    };
    if let Ok(a) = basic.build() {
        let _ = a.check(&map);
    }
    let bearer = BearerTokenSettings {
        token: Some(Secret(htpasswd.lines().next().unwrap_or("").to_string())),
        ..Default::default()
    };
    if let Ok(a) = bearer.build() {
        let _ = a.check(&map);
        let _ = a.credentials();
    }
}

/// A line read from a tailed file through the `filelog` operators (container formats,
/// JSON, a regex with a timestamp and a severity mapping, moves) and the time layouts.
pub fn log_lines(data: &[u8]) {
    use sidekick_receivers::filelog::operators::{run, Entry, Operator, OperatorConfig};
    use sidekick_receivers::filelog::time::{rfc3339, Layout};
    use std::sync::OnceLock;
    static OPERATORS: OnceLock<Vec<Operator>> = OnceLock::new();
    let operators = OPERATORS.get_or_init(|| {
        [
            serde_json::json!({"type": "container"}),
            serde_json::json!({"type": "json_parser", "parse_from": "body",
                "timestamp": {"parse_from": "attributes.ts", "layout_type": "epoch", "layout": "s.ms"},
                "severity": {"parse_from": "attributes.level"}}),
            serde_json::json!({"type": "regex_parser",
                "regex": r"^(?P<ip>\S+) \[(?P<time>[^\]]+)\] (?P<status>\d+)",
                "timestamp": {"parse_from": "attributes.time", "layout": "%d/%b/%Y:%H:%M:%S %z"}}),
            serde_json::json!({"type": "severity_parser", "parse_from": "attributes.status",
                "mapping": {"error": {"min": 500, "max": 599}, "warn": ["w", "warning"]}}),
            serde_json::json!({"type": "move", "from": "attributes.msg", "to": "body.message"}),
            serde_json::json!({"type": "remove", "field": "attributes.time"}),
        ]
        .into_iter()
        .filter_map(|v| Operator::new(&serde_json::from_value::<OperatorConfig>(v).ok()?).ok())
        .collect()
    });
    let text = String::from_utf8_lossy(data);
    let mut e = Entry {
        body: serde_json::Value::String(text.to_string()),
        ..Entry::default()
    };
    let _ = run(operators, &mut e, "/var/log/pods/ns_pod_uid/c/0.log");
    let _ = rfc3339(&text);
    for layout in [
        "%Y-%m-%d %H:%M:%S%f%z",
        "%b %e %T %Y",
        "%s",
        "%j %y %I%p %Z",
    ] {
        if let Ok(l) = Layout::new(None, layout) {
            let _ = l.parse(&text);
        }
    }
}

/// What backends answer exporters: an OTLP export response (partial success), a gRPC
/// status's details (`RetryInfo`), an error body's message, a `Retry-After` value.
pub fn export_responses(data: &[u8]) {
    use sidekick_exporters::partial;
    let _ = partial::delivered(data);
    let _ = partial::retry_delay(data);
    let _ = partial::status_message(data);
    let _ = partial::retry_after(&String::from_utf8_lossy(data));
}

/// OTTL text and an OTLP body: the first line is a statement or condition, compiled in
/// every context; what compiles runs over the rest of the input taken as a request of
/// each signal (the parser, the compiler and the evaluator on the encoded items).
pub fn ottl(data: &[u8]) {
    use sidekick_collector::config::Signal as SignalKind;
    use sidekick_processors::ottl::config::contexts;
    use sidekick_processors::ottl::run::for_each;
    use sidekick_processors::ottl::{compile, Verdict};

    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let Ok(text) = std::str::from_utf8(&data[..split]) else {
        return;
    };
    let body = Bytes::copy_from_slice(data.get(split + 1..).unwrap_or_default());
    fn run<S: Signal>(text: &str, body: &Bytes, signal: SignalKind) {
        let Ok(mut batch) = Batch::<S>::from_encoded(body.clone()) else {
            return;
        };
        for &context in contexts(signal) {
            let statement = compile::statement(text, context).ok();
            let condition = compile::condition(text, context).ok();
            if statement.is_none() && condition.is_none() {
                continue;
            }
            for_each(&mut batch, context, &mut |item| {
                if let Some(s) = &statement {
                    let _ = s.run(item);
                }
                match condition.as_ref().map(|c| c.matches(item)) {
                    Some(Ok(true)) => Verdict::Drop,
                    _ => Verdict::Keep,
                }
            });
            // What was written must still be a valid request.
            let encoded = batch.encoded();
            assert!(
                Batch::<S>::from_encoded(encoded).is_ok(),
                "an OTTL edit made an invalid request"
            );
        }
    }
    run::<TracesSignal>(text, &body, SignalKind::Traces);
    run::<MetricsSignal>(text, &body, SignalKind::Metrics);
    run::<LogsSignal>(text, &body, SignalKind::Logs);
}
