//! Metric names, label names and unit words for Prometheus.

use super::{Kind, Settings, TranslationStrategy};

/// Replaces characters outside `[a-zA-Z0-9_:]` (and `:` too, for labels) with `_`,
/// collapses runs of `_`, and keeps the name from starting with a digit.
fn sanitize(s: &str, allow_colon: bool, digit_prefix: &str) -> String {
    let mut out = String::with_capacity(s.len() + 1);
    let mut last_underscore = false;
    for c in s.chars() {
        let ok = c.is_ascii_alphanumeric() || c == '_' || (allow_colon && c == ':');
        let c = if ok { c } else { '_' };
        if c == '_' && last_underscore {
            continue;
        }
        last_underscore = c == '_';
        out.push(c);
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert_str(0, digit_prefix);
    }
    out
}

/// A label name: `[a-zA-Z_][a-zA-Z0-9_]*`; one starting with a digit gets `key_`.
pub fn label_name(key: &str) -> String {
    if key.is_empty() {
        return "key_empty".into();
    }
    sanitize(key, false, "key_")
}

/// The Prometheus word for a UCUM unit (`s` → `seconds`, `By/s` → `bytes_per_second`,
/// `{request}` → nothing); `1` is `ratio` for gauges only.
pub fn unit_word(unit: &str, kind: Kind) -> String {
    let unit = unit.trim();
    // Annotations in braces carry no unit.
    let stripped: String = {
        let mut out = String::new();
        let mut depth = 0;
        for c in unit.chars() {
            match c {
                '{' => depth += 1,
                '}' => depth = (depth - 1).max(0),
                _ if depth == 0 => out.push(c),
                _ => {}
            }
        }
        out
    };
    if stripped.is_empty() {
        return String::new();
    }
    if stripped == "1" {
        return if kind == Kind::Gauge {
            "ratio".into()
        } else {
            String::new()
        };
    }
    match stripped.split_once('/') {
        Some((a, b)) => {
            let a = main_word(a);
            let b = per_word(b);
            match (a.is_empty(), b.is_empty()) {
                (true, _) => format!("per_{b}"),
                (false, true) => a,
                (false, false) => format!("{a}_per_{b}"),
            }
        }
        None => main_word(&stripped),
    }
}

fn main_word(u: &str) -> String {
    let w = match u {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tebibytes",
        "KBy" | "kBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "%" => "percent",
        "1" => "",
        other => return sanitize(other, false, "_").trim_matches('_').to_string(),
    };
    w.to_string()
}

fn per_word(u: &str) -> String {
    let w = match u {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        other => return main_word(other),
    };
    w.to_string()
}

/// The Prometheus name for an OTLP metric: sanitised, with the namespace prefix, the unit
/// word and (for counters) `_total` as suffixes unless already there.
pub fn metric_name(name: &str, unit: &str, kind: Kind, settings: &Settings) -> String {
    let mut base = sanitize(name, true, "_");
    if !settings.namespace.is_empty() {
        base = format!("{}_{base}", sanitize(&settings.namespace, true, "_"));
    }
    if settings.strategy == TranslationStrategy::UnderscoreEscapingWithoutSuffixes {
        return base;
    }
    let counter = kind == Kind::Counter;
    let mut stem = base.as_str();
    if counter {
        stem = stem.strip_suffix("_total").unwrap_or(stem);
    }
    let mut out = stem.to_string();
    let word = unit_word(unit, kind);
    if !word.is_empty() {
        let tokens: Vec<&str> = stem.split('_').collect();
        let has_word =
            stem.ends_with(&format!("_{word}")) || stem == word || tokens.contains(&word.as_str());
        if !has_word {
            out.push('_');
            out.push_str(&word);
        }
    }
    if counter {
        out.push_str("_total");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            target_info: true,
            ..Settings::default()
        }
    }

    #[test]
    fn names_follow_the_spec() {
        let s = settings();
        let cases = [
            (
                "http.server.duration",
                "s",
                Kind::Histogram,
                "http_server_duration_seconds",
            ),
            (
                "http.server.requests",
                "{request}",
                Kind::Counter,
                "http_server_requests_total",
            ),
            ("requests_total", "", Kind::Counter, "requests_total"),
            (
                "node_cpu_seconds_total",
                "s",
                Kind::Counter,
                "node_cpu_seconds_total",
            ),
            (
                "process.memory.usage",
                "By",
                Kind::Gauge,
                "process_memory_usage_bytes",
            ),
            ("cpu.utilization", "1", Kind::Gauge, "cpu_utilization_ratio"),
            (
                "throughput",
                "By/s",
                Kind::Gauge,
                "throughput_bytes_per_second",
            ),
            ("2xx responses!!", "", Kind::Gauge, "_2xx_responses_"),
            ("temperature", "Cel", Kind::Gauge, "temperature_celsius"),
            ("latency_seconds", "s", Kind::Summary, "latency_seconds"),
        ];
        for (name, unit, kind, want) in cases {
            assert_eq!(metric_name(name, unit, kind, &s), want, "{name} {unit}");
        }
        let without = Settings {
            strategy: TranslationStrategy::UnderscoreEscapingWithoutSuffixes,
            ..settings()
        };
        assert_eq!(
            metric_name("http.server.duration", "s", Kind::Histogram, &without),
            "http_server_duration"
        );
        let ns = Settings {
            namespace: "sidekick".into(),
            ..settings()
        };
        assert_eq!(
            metric_name("up.time", "s", Kind::Counter, &ns),
            "sidekick_up_time_seconds_total"
        );
    }

    #[test]
    fn label_names() {
        assert_eq!(label_name("http.method"), "http_method");
        assert_eq!(label_name("9lives"), "key_9lives");
        assert_eq!(label_name("a..b"), "a_b");
    }
}
