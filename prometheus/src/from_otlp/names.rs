//! Metric names, label names, label values and unit words for Prometheus.

use std::fmt::Write as _;

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};

use super::{Kind, Settings, TranslationStrategy};
pub use crate::names::{label_name, sanitize};

/// A label value for an attribute value, per the OpenTelemetry "AnyValue representation
/// for non-OTLP protocols" rules the Prometheus compatibility spec points to: strings as
/// they are; booleans, integers and doubles as JSON literals (`true`, `42`, `3.5`; `NaN`,
/// `Infinity`, `-Infinity` unquoted); bytes as standard base64; arrays as JSON arrays and
/// maps (kvlists) as JSON objects, compact, with nested strings as escaped JSON strings,
/// nested bytes and non-finite doubles as JSON strings and nested empty values as `null`;
/// an empty value (or one that cannot be resolved here, like a profiles string-table index)
/// as the empty string. Map members are sorted by key (stably), so the
/// same map sent in another order makes the same series.
pub fn label_value(v: Option<&AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        None => String::new(),
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => match non_finite(*d) {
            Some(word) => word.to_string(),
            None => d.to_string(),
        },
        Some(any_value::Value::BytesValue(b)) => base64(b),
        Some(nested @ (any_value::Value::ArrayValue(_) | any_value::Value::KvlistValue(_))) => {
            let mut out = String::new();
            json(Some(nested), &mut out);
            out
        }
        // A string-table index (profiles only) has no table to resolve it against here:
        // like anything else unknown, it counts as an empty value.
        Some(_) => String::new(),
    }
}

/// How the spec spells NaN and the infinities.
fn non_finite(d: f64) -> Option<&'static str> {
    if d.is_nan() {
        Some("NaN")
    } else if d == f64::INFINITY {
        Some("Infinity")
    } else if d == f64::NEG_INFINITY {
        Some("-Infinity")
    } else {
        None
    }
}

/// One value as a JSON array element or object member value.
fn json(v: Option<&any_value::Value>, out: &mut String) {
    match v {
        None => out.push_str("null"),
        Some(any_value::Value::StringValue(s)) => json_string(s, out),
        Some(any_value::Value::BoolValue(b)) => {
            let _ = write!(out, "{b}");
        }
        Some(any_value::Value::IntValue(i)) => {
            let _ = write!(out, "{i}");
        }
        Some(any_value::Value::DoubleValue(d)) => match non_finite(*d) {
            Some(word) => json_string(word, out),
            None => {
                let _ = write!(out, "{d}");
            }
        },
        Some(any_value::Value::BytesValue(b)) => json_string(&base64(b), out),
        Some(any_value::Value::ArrayValue(a)) => {
            out.push('[');
            for (i, e) in a.values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json(e.value.as_ref(), out);
            }
            out.push(']');
        }
        Some(any_value::Value::KvlistValue(kvs)) => {
            let mut members: Vec<_> = kvs.values.iter().collect();
            members.sort_by(|a, b| a.key.cmp(&b.key));
            out.push('{');
            for (i, kv) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_string(&kv.key, out);
                out.push(':');
                json(kv.value.as_ref().and_then(|v| v.value.as_ref()), out);
            }
            out.push('}');
        }
        // Unresolvable here (a profiles string-table index) or unknown: empty.
        Some(_) => out.push_str("null"),
    }
}

/// A JSON string literal (RFC 8259 escaping).
fn json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Standard base64 (RFC 4648 section 4) with padding.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
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
    if u == "1" {
        return String::new();
    }
    match crate::units::word_for_ucum(u) {
        Some(word) => word.to_string(),
        None => sanitize(u, false, "_").trim_matches('_').to_string(),
    }
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
}
