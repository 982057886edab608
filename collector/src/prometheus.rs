//! The Prometheus pieces both sides use: the scrape receiver and the `prometheus` and
//! `prometheusremotewrite` exporters, Sidekick's own `/metrics` page, and the test kit.
//!
//! - [`prompb`]: the remote-write 1.0 messages;
//! - the stale NaN that marks a series gone;
//! - [`UNITS`]: UCUM units and the words Prometheus names carry for them, both ways;
//! - the text exposition writer's pieces: label value and help escaping, values as the
//!   formats spell them, `name{labels}`.

use std::fmt::Write as _;

/// The bit pattern Prometheus uses to mark a series stale.
pub const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

pub fn stale_nan() -> f64 {
    f64::from_bits(STALE_NAN)
}

pub fn is_stale_nan(v: f64) -> bool {
    v.to_bits() == STALE_NAN
}

/// UCUM units and the Prometheus unit words for them (plural, as in `_seconds`).
pub const UNITS: &[(&str, &str)] = &[
    ("d", "days"),
    ("h", "hours"),
    ("min", "minutes"),
    ("s", "seconds"),
    ("ms", "milliseconds"),
    ("us", "microseconds"),
    ("ns", "nanoseconds"),
    ("By", "bytes"),
    ("KiBy", "kibibytes"),
    ("MiBy", "mebibytes"),
    ("GiBy", "gibibytes"),
    ("TiBy", "tebibytes"),
    ("kBy", "kilobytes"),
    ("KBy", "kilobytes"),
    ("MBy", "megabytes"),
    ("GBy", "gigabytes"),
    ("TBy", "terabytes"),
    ("m", "meters"),
    ("V", "volts"),
    ("A", "amperes"),
    ("J", "joules"),
    ("W", "watts"),
    ("g", "grams"),
    ("Cel", "celsius"),
    ("Hz", "hertz"),
    ("%", "percent"),
    ("1", "ratio"),
];

/// The UCUM unit for a Prometheus unit word (`seconds` → `s`).
pub fn ucum_for_word(word: &str) -> Option<&'static str> {
    UNITS.iter().find(|(_, w)| *w == word).map(|(u, _)| *u)
}

/// The Prometheus unit word for a UCUM unit (`s` → `seconds`).
pub fn word_for_ucum(unit: &str) -> Option<&'static str> {
    UNITS.iter().find(|(u, _)| *u == unit).map(|(_, w)| *w)
}

/// Appends a label value escaped for the text formats (`\\`, `\"`, `\n`).
/// Label names in order (byte order, as Prometheus sorts them). Names of one series
/// mostly differ in their first byte: that is compared before calling `memcmp`, which
/// costs more than the comparison itself on names this short.
#[inline]
pub fn label_order(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.as_bytes().first(), b.as_bytes().first()) {
        (Some(x), Some(y)) if x != y => x.cmp(y),
        _ => a.cmp(b),
    }
}

pub fn escape_label_value(v: &str, out: &mut String) {
    if !v.contains(['\\', '"', '\n']) {
        out.push_str(v);
        return;
    }
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// `# HELP` text escaped (`\\`, `\n`; in OpenMetrics `\"` too).
pub fn escape_help(v: &str, openmetrics: bool) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if openmetrics => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out
}

/// Appends a sample value as the formats spell it (`NaN`, `+Inf`, `-Inf`, shortest
/// round-trip decimal otherwise).
pub fn push_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{v}");
    }
}

/// Appends `name{a="1",b="2"}` (just `name` without labels).
pub fn push_series<'a>(
    out: &mut String,
    name: &str,
    labels: impl IntoIterator<Item = (&'a str, &'a str)>,
) {
    out.push_str(name);
    let mut first = true;
    for (k, v) in labels {
        out.push(if first { '{' } else { ',' });
        first = false;
        out.push_str(k);
        out.push_str("=\"");
        escape_label_value(v, out);
        out.push('"');
    }
    if !first {
        out.push('}');
    }
}

/// The Prometheus remote-write 1.0 messages (`prometheus/prompb`), written by hand: a
/// handful of fields, no code generation needed.
pub mod prompb {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WriteRequest {
        #[prost(message, repeated, tag = "1")]
        pub timeseries: Vec<TimeSeries>,
        #[prost(message, repeated, tag = "3")]
        pub metadata: Vec<MetricMetadata>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        /// Sorted by name, `__name__` included.
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<Label>,
        /// Oldest first.
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<Sample>,
        #[prost(message, repeated, tag = "3")]
        pub exemplars: Vec<Exemplar>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Label {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(double, tag = "1")]
        pub value: f64,
        /// Milliseconds since the epoch.
        #[prost(int64, tag = "2")]
        pub timestamp: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Exemplar {
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<Label>,
        #[prost(double, tag = "2")]
        pub value: f64,
        #[prost(int64, tag = "3")]
        pub timestamp: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MetricMetadata {
        /// 0 unknown, 1 counter, 2 gauge, 3 histogram, 4 gauge histogram, 5 summary,
        /// 6 info, 7 stateset.
        #[prost(int32, tag = "1")]
        pub r#type: i32,
        #[prost(string, tag = "2")]
        pub metric_family_name: String,
        #[prost(string, tag = "4")]
        pub help: String,
        #[prost(string, tag = "5")]
        pub unit: String,
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn label_order_is_byte_order() {
        let mut names = [
            "job", "instance", "le", "", "a", "method", "methods", "_x", "Z", "jobs",
        ];
        let mut want = names;
        want.sort();
        names.sort_by(|a, b| label_order(a, b));
        assert_eq!(names, want);
    }

    use super::*;

    #[test]
    fn units_go_both_ways() {
        assert_eq!(ucum_for_word("seconds"), Some("s"));
        assert_eq!(word_for_ucum("s"), Some("seconds"));
        assert_eq!(ucum_for_word("kilobytes"), Some("kBy"));
        assert_eq!(word_for_ucum("KBy"), Some("kilobytes"));
        assert_eq!(ucum_for_word("fortnights"), None);
    }

    #[test]
    fn text_pieces_escape_and_spell_as_the_formats_do() {
        let mut out = String::new();
        push_series(&mut out, "m", [("a", "x\"y\\z\nw"), ("b", "")]);
        assert_eq!(out, "m{a=\"x\\\"y\\\\z\\nw\",b=\"\"}");
        let mut bare = String::new();
        push_series(&mut bare, "up", []);
        assert_eq!(bare, "up");
        assert_eq!(escape_help("a \"b\"\n", false), "a \"b\"\\n");
        assert_eq!(escape_help("a \"b\"", true), "a \\\"b\\\"");
        let spelled: Vec<String> = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 2.5, 3.0]
            .iter()
            .map(|v| {
                let mut s = String::new();
                push_value(&mut s, *v);
                s
            })
            .collect();
        assert_eq!(spelled, ["NaN", "+Inf", "-Inf", "2.5", "3"]);
        assert!(is_stale_nan(stale_nan()) && !is_stale_nan(f64::NAN));
    }
}
