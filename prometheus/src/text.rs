//! Writing the text exposition formats (Prometheus text 0.0.4 and OpenMetrics): label
//! value and help escaping, values as the formats spell them, `name{labels}`, the
//! family header. Sidekick's own `/metrics` page and the `prometheus` exporter's page
//! are written with these.

use std::fmt::Write as _;

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

/// Appends a label value escaped for the text formats (`\\`, `\"`, `\n`).
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

/// Appends a family's `# HELP` and `# TYPE` lines, and in OpenMetrics its `# UNIT` line
/// when `unit` is set. `name` is the family's name as the format wants it (in
/// OpenMetrics a counter's family has no `_total`).
pub fn push_family_header(
    out: &mut String,
    name: &str,
    help: &str,
    kind: &str,
    unit: &str,
    openmetrics: bool,
) {
    let _ = writeln!(out, "# HELP {name} {}", escape_help(help, openmetrics));
    let _ = writeln!(out, "# TYPE {name} {kind}");
    if openmetrics && !unit.is_empty() {
        let _ = writeln!(out, "# UNIT {name} {unit}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn text_pieces_escape_and_spell_as_the_formats_do() {
        let mut out = String::new();
        push_series(&mut out, "m", [("a", "x\"y\\z\nw"), ("b", "")]);
        assert_eq!(out, "m{a=\"x\\\"y\\\\z\\nw\",b=\"\"}");
        let mut bare = String::new();
        push_series(&mut bare, "up", []);
        assert_eq!(bare, "up");
        assert_eq!(escape_help("a \"b\"\n", false), "a \"b\"\\n");
        let mut header = String::new();
        push_family_header(&mut header, "d_seconds", "D.\n", "gauge", "seconds", true);
        push_family_header(&mut header, "c_total", "C.", "counter", "seconds", false);
        assert_eq!(
            header,
            "# HELP d_seconds D.\\n\n# TYPE d_seconds gauge\n# UNIT d_seconds seconds\n# HELP c_total C.\n# TYPE c_total counter\n"
        );
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
        assert!(crate::is_stale_nan(crate::stale_nan()) && !crate::is_stale_nan(f64::NAN));
    }
}
