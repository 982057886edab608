use super::*;

fn fixture(name: &str) -> String {
    let path = format!("{}/testdata/prometheus/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn entries(text: &str, format: Format) -> Vec<Entry<'_>> {
    Parser::new(text, format).collect::<Result<_, _>>().unwrap()
}

fn samples<'a>(e: &'a [Entry<'a>]) -> Vec<&'a Sample<'a>> {
    e.iter()
        .filter_map(|e| match e {
            Entry::Sample(s) => Some(s),
            _ => None,
        })
        .collect()
}

fn labels(s: &Sample<'_>) -> Vec<(String, String)> {
    s.labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.into_owned()))
        .collect()
}

#[test]
fn real_world_pages_parse_completely() {
    for name in ["node_exporter.prom", "prometheus.prom"] {
        let text = fixture(name);
        let parsed = entries(&text, Format::Prometheus);
        let expected = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .count();
        assert_eq!(samples(&parsed).len(), expected, "{name}");
        assert!(expected > 200, "{name} has only {expected} samples");
    }
}

#[test]
fn node_exporter_lines() {
    let text = fixture("node_exporter.prom");
    let parsed = entries(&text, Format::Prometheus);
    let types: Vec<_> = parsed
        .iter()
        .filter_map(|e| match e {
            Entry::Type {
                name: "go_gc_duration_seconds",
                kind,
            } => Some(*kind),
            _ => None,
        })
        .collect();
    assert_eq!(types, vec![Kind::Summary]);
    let s = samples(&parsed);
    let q = s
        .iter()
        .find(|s| {
            s.name == "go_gc_duration_seconds"
                && labels(s) == vec![("quantile".into(), "0.5".into())]
        })
        .expect("a quantile line");
    assert!(q.value >= 0.0 && q.timestamp_ms.is_none());
    let help = parsed.iter().find_map(|e| match e {
        Entry::Help {
            name: "go_goroutines",
            text,
        } => Some(text.to_string()),
        _ => None,
    });
    assert_eq!(
        help.as_deref(),
        Some("Number of goroutines that currently exist.")
    );
}

#[test]
fn openmetrics_fixture() {
    let text = fixture("openmetrics.txt");
    let parsed = entries(&text, Format::OpenMetrics);
    let s = samples(&parsed);
    let first = s[0];
    assert_eq!(first.name, "http_requests_total");
    assert_eq!(first.value, 1027.0);
    let e = first.exemplar.as_ref().unwrap();
    assert_eq!(e.value, 1.0);
    assert_eq!(e.timestamp, Some(1700000000.5));
    let ex_labels: Vec<(String, String)> = e
        .labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.into_owned()))
        .collect();
    assert_eq!(ex_labels[2], ("user".into(), "a\"b".into()));
    let depth = s.iter().find(|s| s.name == "queue_depth").unwrap();
    assert_eq!(labels(depth), vec![("queue".into(), "a\\b\nc".into())]);
    assert_eq!(depth.value, f64::NEG_INFINITY);
    assert_eq!(
        depth.timestamp_ms,
        Some(1700000000123),
        "OpenMetrics timestamps are seconds"
    );
    let nan = s
        .iter()
        .find(|s| s.name == "rpc_latency_seconds" && s.value.is_nan());
    assert!(nan.is_some());
    assert!(parsed.contains(&Entry::Unit {
        name: "request_duration_seconds",
        unit: "seconds"
    }));
}

#[test]
fn prometheus_timestamps_are_milliseconds_and_spacing_is_lenient() {
    let text =
        "# a free comment\n\nmetric_a{ a = \"1\" , b=\"x\",} 1.5e3 1700000000123\nmetric_b +Inf\n";
    let parsed = entries(text, Format::Prometheus);
    let s = samples(&parsed);
    assert_eq!(s[0].timestamp_ms, Some(1700000000123));
    assert_eq!(
        labels(s[0]),
        vec![("a".into(), "1".into()), ("b".into(), "x".into())]
    );
    assert_eq!(s[0].value, 1500.0);
    assert_eq!(s[1].value, f64::INFINITY);
}

#[test]
fn bad_pages_fail_at_the_first_bad_line() {
    let cases: &[(&str, Format, usize, &str)] = &[
        (
            "<!DOCTYPE html>\n<html>error</html>\n",
            Format::Prometheus,
            1,
            "invalid metric name",
        ),
        (
            "ok 1\nmissing_value\n",
            Format::Prometheus,
            2,
            "expected a space before the value",
        ),
        (
            "a{b=\"1} 2\n",
            Format::Prometheus,
            1,
            "unterminated label value",
        ),
        (
            "a{b=1} 2\n",
            Format::Prometheus,
            1,
            "label value is not quoted",
        ),
        (
            "a{1b=\"x\"} 2\n",
            Format::Prometheus,
            1,
            "invalid label name",
        ),
        ("a one\n", Format::Prometheus, 1, "invalid sample value"),
        ("a 1 soon\n", Format::Prometheus, 1, "invalid timestamp"),
        (
            "# TYPE a speedometer\na 1\n",
            Format::Prometheus,
            1,
            "unknown metric type",
        ),
        (
            "a 1\n",
            Format::OpenMetrics,
            2,
            "OpenMetrics page does not end with # EOF",
        ),
        (
            "a 1\n# EOF\nb 2\n",
            Format::OpenMetrics,
            2,
            "content after # EOF",
        ),
        (
            "a 1 # {x=\"y\"}\n# EOF\n",
            Format::OpenMetrics,
            1,
            "invalid exemplar value",
        ),
    ];
    for (text, format, line, message) in cases {
        let err = Parser::new(text, *format)
            .find_map(Result::err)
            .unwrap_or_else(|| panic!("{text:?} parsed"));
        assert_eq!((err.line, err.message), (*line, *message), "{text:?}");
    }
}

#[test]
fn content_type_picks_the_format() {
    assert_eq!(
        Format::from_content_type("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        Format::OpenMetrics
    );
    assert_eq!(
        Format::from_content_type("text/plain; version=0.0.4"),
        Format::Prometheus
    );
    assert_eq!(Format::from_content_type("text/html"), Format::Prometheus);
}

mod never_panics {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Whatever a target serves, parsing ends in entries or an error, never a panic.
        #[test]
        fn on_arbitrary_pages(page in "[ -~\\n\\t{}\"#=,\\\\]{0,300}") {
            for format in [Format::Prometheus, Format::OpenMetrics] {
                for e in Parser::new(&page, format) {
                    if let Ok(Entry::Sample(s)) = e {
                        let _ = s.labels.iter().count();
                    }
                }
            }
        }

        /// Pages made of plausible lines with random corruption.
        #[test]
        fn on_mangled_lines(lines in prop::collection::vec(
            prop_oneof![
                Just("# TYPE a counter".to_string()),
                Just("# HELP a Help \\\\ text".to_string()),
                Just("a_total{x=\"1\",y=\"a\\\"b\"} 1 1700000000".to_string()),
                Just("a_bucket{le=\"+Inf\"} 3 # {trace_id=\"ab\"} 1 1.5".to_string()),
                "[a-z_]{1,8}(\\{[a-z]{1,3}=\"[^\"\\\\]{0,4}\"\\})? [0-9.eE+-]{1,6}",
                "[ -~]{0,40}",
            ],
            0..12,
        )) {
            let page = lines.join("\n");
            for format in [Format::Prometheus, Format::OpenMetrics] {
                let _ = Parser::new(&page, format).count();
            }
        }
    }
}
