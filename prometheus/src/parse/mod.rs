//! A parser for the Prometheus text format (0.0.4) and OpenMetrics 1.0 text.
//!
//! It borrows from the page: names, label values and help texts are slices of the input
//! unless they contain escapes, and a sample's labels stay as their raw `{...}` text until
//! iterated, so parsing a page allocates nothing per series.

use std::borrow::Cow;

use crate::exposition::{LabelPair, Native};

/// Which text format a page is in (from the response's `Content-Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`: timestamps in milliseconds.
    Prometheus,
    /// `application/openmetrics-text`: timestamps in seconds, `# EOF`, exemplars.
    OpenMetrics,
}

impl Format {
    /// The format a response's `Content-Type` names; anything else is read as Prometheus
    /// text (which is how Prometheus treats it too).
    pub fn from_content_type(content_type: &str) -> Format {
        if content_type
            .trim_start()
            .starts_with("application/openmetrics-text")
        {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }
}

/// A metric family's declared type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
    GaugeHistogram,
    Summary,
    Info,
    StateSet,
    Unknown,
}

impl Kind {
    fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "counter" => Kind::Counter,
            "gauge" => Kind::Gauge,
            "histogram" => Kind::Histogram,
            "gaugehistogram" => Kind::GaugeHistogram,
            "summary" => Kind::Summary,
            "info" => Kind::Info,
            "stateset" => Kind::StateSet,
            "untyped" | "unknown" => Kind::Unknown,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
            Kind::GaugeHistogram => "gaugehistogram",
            Kind::Summary => "summary",
            Kind::Info => "info",
            Kind::StateSet => "stateset",
            Kind::Unknown => "unknown",
        }
    }
}

/// A sample's labels: the `{...}` text of a text page, already checked, or the label
/// pairs of a protobuf page (with the `le` or `quantile` its sample adds); iterate them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Labels<'a> {
    Text(&'a str),
    Pairs {
        pairs: &'a [LabelPair],
        extra: Option<(&'static str, &'a str)>,
    },
}

impl Default for Labels<'_> {
    fn default() -> Self {
        Labels::Text("")
    }
}

impl<'a> Labels<'a> {
    pub fn iter(&self) -> LabelIter<'a> {
        match *self {
            Labels::Text(rest) => LabelIter::Text { rest },
            Labels::Pairs { pairs, extra } => LabelIter::Pairs {
                pairs: pairs.iter(),
                extra,
            },
        }
    }

    pub fn is_empty(&self) -> bool {
        match self {
            Labels::Text(t) => t.trim().is_empty(),
            Labels::Pairs { pairs, extra } => pairs.is_empty() && extra.is_none(),
        }
    }
}

pub enum LabelIter<'a> {
    Text {
        rest: &'a str,
    },
    Pairs {
        pairs: std::slice::Iter<'a, LabelPair>,
        extra: Option<(&'static str, &'a str)>,
    },
}

impl<'a> Iterator for LabelIter<'a> {
    type Item = (&'a str, Cow<'a, str>);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            LabelIter::Text { rest } => {
                // The text was validated by `scan_labels`, so shortcuts are safe here.
                let r = rest.trim_start_matches([' ', '\t', ',']);
                if r.is_empty() {
                    return None;
                }
                let (name, after) = r.split_once('=')?;
                let after = after.trim_start();
                let (value, consumed) = scan_quoted(after).ok()?;
                *rest = &after[consumed..];
                Some((name.trim(), value))
            }
            LabelIter::Pairs { pairs, extra } => match pairs.next() {
                Some(p) => Some((p.name.as_str(), Cow::Borrowed(p.value.as_str()))),
                None => extra.take().map(|(k, v)| (k, Cow::Borrowed(v))),
            },
        }
    }
}

/// An OpenMetrics exemplar: `# {trace_id="..."} 0.5 1700000000.123`.
#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar<'a> {
    pub labels: Labels<'a>,
    pub value: f64,
    /// Seconds since the epoch, when given.
    pub timestamp: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sample<'a> {
    pub name: &'a str,
    pub labels: Labels<'a>,
    pub value: f64,
    /// Milliseconds since the epoch, when the page gave one.
    pub timestamp_ms: Option<i64>,
    pub exemplar: Option<Exemplar<'a>>,
    /// A protobuf page's native histogram (the sample's value is its count).
    pub native: Option<&'a Native>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Entry<'a> {
    Help { name: &'a str, text: Cow<'a, str> },
    Type { name: &'a str, kind: Kind },
    Unit { name: &'a str, unit: &'a str },
    Sample(Sample<'a>),
}

/// What is wrong with a page, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}: {text:?}")]
pub struct ParseError {
    pub line: usize,
    pub message: &'static str,
    /// The offending line, cut to 120 characters.
    pub text: String,
}

/// A source of a page's entries: the text [`Parser`], or a protobuf page's families.
pub trait Entries<'a>: Iterator<Item = Result<Entry<'a>, ParseError>> {
    /// Where the last entry came from: its line, or for a protobuf page the position of
    /// its family (1-based).
    fn line(&self) -> usize;
}

impl<'a> Entries<'a> for Parser<'a> {
    fn line(&self) -> usize {
        self.line_no
    }
}

/// Iterates the entries of a page. Stops at the first error.
pub struct Parser<'a> {
    lines: std::str::Lines<'a>,
    line_no: usize,
    format: Format,
    done: bool,
}

impl<'a> Parser<'a> {
    pub fn new(text: &'a str, format: Format) -> Self {
        Parser {
            lines: text.lines(),
            line_no: 0,
            format,
            done: false,
        }
    }

    /// The number of the line the last entry came from.
    pub fn line(&self) -> usize {
        self.line_no
    }

    fn fail(&mut self, line: &str, message: &'static str) -> Option<Result<Entry<'a>, ParseError>> {
        self.done = true;
        let text: String = line.chars().take(120).collect();
        Some(Err(ParseError {
            line: self.line_no,
            message,
            text,
        }))
    }
}

impl<'a> Iterator for Parser<'a> {
    type Item = Result<Entry<'a>, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        loop {
            let Some(raw) = self.lines.next() else {
                self.done = true;
                if self.format == Format::OpenMetrics {
                    self.line_no += 1;
                    return self.fail("", "OpenMetrics page does not end with # EOF");
                }
                return None;
            };
            self.line_no += 1;
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            if line.trim().is_empty() {
                if self.format == Format::OpenMetrics {
                    return self.fail(line, "empty line in an OpenMetrics page");
                }
                continue;
            }
            if let Some(comment) = line.strip_prefix('#') {
                match self.comment(comment) {
                    Ok(Some(entry)) => return Some(Ok(entry)),
                    Ok(None) => {
                        if self.done {
                            return None;
                        }
                        continue;
                    }
                    Err(message) => return self.fail(line, message),
                }
            }
            return match parse_sample(line, self.format) {
                Ok(sample) => Some(Ok(Entry::Sample(sample))),
                Err(message) => self.fail(line, message),
            };
        }
    }
}

impl<'a> Parser<'a> {
    /// A `#` line: HELP, TYPE, UNIT, EOF, or a comment to skip.
    fn comment(&mut self, rest: &'a str) -> Result<Option<Entry<'a>>, &'static str> {
        let rest = rest.trim_start_matches(' ');
        let (keyword, args) = rest.split_once(' ').unwrap_or((rest, ""));
        match keyword {
            "HELP" => {
                let (name, text) = args.split_once(' ').unwrap_or((args, ""));
                check_name(name)?;
                Ok(Some(Entry::Help {
                    name,
                    text: unescape(text, self.format == Format::OpenMetrics),
                }))
            }
            "TYPE" => {
                let (name, kind) = args.split_once(' ').ok_or("TYPE line without a type")?;
                check_name(name)?;
                let kind = Kind::parse(kind.trim()).ok_or("unknown metric type")?;
                Ok(Some(Entry::Type { name, kind }))
            }
            "UNIT" => {
                let (name, unit) = args.split_once(' ').unwrap_or((args, ""));
                check_name(name)?;
                Ok(Some(Entry::Unit {
                    name,
                    unit: unit.trim(),
                }))
            }
            "EOF" if self.format == Format::OpenMetrics => {
                if self.lines.clone().any(|l| !l.trim().is_empty()) {
                    return Err("content after # EOF");
                }
                self.done = true;
                Ok(None)
            }
            // Free-form comments are allowed in the Prometheus format.
            _ if self.format == Format::Prometheus => Ok(None),
            _ => Err("unknown comment in an OpenMetrics page"),
        }
    }
}

fn is_name_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b':'
}

fn is_name_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b':'
}

fn check_name(name: &str) -> Result<(), &'static str> {
    let b = name.as_bytes();
    if b.is_empty() || !is_name_start(b[0]) || !b.iter().all(|&c| is_name_char(c)) {
        return Err("invalid metric name");
    }
    Ok(())
}

/// Undoes `\\`, `\n` and (in label values and OpenMetrics help) `\"`.
fn unescape(s: &str, quotes: bool) -> Cow<'_, str> {
    if !s.contains('\\') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('\\') => out.push('\\'),
            Some('"') if quotes => out.push('"'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    Cow::Owned(out)
}

/// Reads a `"..."` string at the start of `s`: its unescaped value and the bytes used.
fn scan_quoted(s: &str) -> Result<(Cow<'_, str>, usize), &'static str> {
    let b = s.as_bytes();
    if b.first() != Some(&b'"') {
        return Err("label value is not quoted");
    }
    let mut i = 1;
    let mut escaped = false;
    while i < b.len() {
        match b[i] {
            b'\\' => {
                escaped = true;
                i += 2;
                continue;
            }
            b'"' => {
                let inner = &s[1..i];
                let value = if escaped {
                    unescape(inner, true)
                } else {
                    Cow::Borrowed(inner)
                };
                return Ok((value, i + 1));
            }
            _ => i += 1,
        }
    }
    Err("unterminated label value")
}

/// Checks `{...}` content starting after `{`; returns the inner text and bytes used
/// including the closing `}`.
fn scan_labels(s: &str) -> Result<(&str, usize), &'static str> {
    let b = s.as_bytes();
    let mut i = 0;
    loop {
        while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
            i += 1;
        }
        if i >= b.len() {
            return Err("unterminated label set");
        }
        if b[i] == b'}' {
            return Ok((&s[..i], i + 1));
        }
        let start = i;
        if !is_name_start(b[i]) || b[i] == b':' {
            return Err("invalid label name");
        }
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
            i += 1;
        }
        if i == start {
            return Err("invalid label name");
        }
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
        if b.get(i) != Some(&b'=') {
            return Err("expected = after label name");
        }
        i += 1;
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
        let (_, used) = scan_quoted(&s[i..])?;
        i += used;
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => {}
            _ => return Err("expected , or } after label value"),
        }
    }
}

/// A sample value: a float, `NaN`, `+Inf`, `-Inf`.
pub fn parse_value(s: &str) -> Option<f64> {
    match s {
        "NaN" | "nan" => Some(f64::NAN),
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        // Rust accepts words like "infinity" that the formats do not.
        _ if s.bytes().any(|c| c.is_ascii_digit()) => s.parse().ok(),
        _ => None,
    }
}

fn parse_sample(line: &str, format: Format) -> Result<Sample<'_>, &'static str> {
    let b = line.as_bytes();
    let mut i = 0;
    if b.is_empty() || !is_name_start(b[0]) {
        return Err("invalid metric name");
    }
    while i < b.len() && is_name_char(b[i]) {
        i += 1;
    }
    let name = &line[..i];
    let mut labels = Labels::default();
    if b.get(i) == Some(&b'{') {
        let (inner, used) = scan_labels(&line[i + 1..])?;
        labels = Labels::Text(inner);
        i += 1 + used;
    }
    let rest = &line[i..];
    if !rest.starts_with([' ', '\t']) {
        return Err("expected a space before the value");
    }
    // Only OpenMetrics has exemplars (no search for them in Prometheus text).
    let split = match format {
        Format::OpenMetrics => rest.split_once(" # "),
        Format::Prometheus => None,
    };
    let (main, exemplar) = match split {
        Some((m, e)) => (m, Some(e)),
        None => (rest, None),
    };
    // OpenMetrics separates with exactly one space and allows nothing after the last
    // field; the Prometheus text format is lenient about whitespace.
    if format == Format::OpenMetrics && !single_spaced(main) {
        return Err("fields must be separated by exactly one space, with none at the end");
    }
    let mut parts = main.split_ascii_whitespace();
    let value = parts
        .next()
        .and_then(parse_value)
        .ok_or("invalid sample value")?;
    let timestamp_ms = match parts.next() {
        None => None,
        Some(t) => Some(match format {
            Format::Prometheus => t.parse::<i64>().map_err(|_| "invalid timestamp")?,
            Format::OpenMetrics => {
                let secs: f64 = t.parse().map_err(|_| "invalid timestamp")?;
                if !secs.is_finite() {
                    return Err("invalid timestamp");
                }
                (secs * 1000.0).round() as i64
            }
        }),
    };
    if parts.next().is_some() {
        return Err("unexpected text after the timestamp");
    }
    let exemplar = match exemplar {
        None => None,
        Some(e) => Some(parse_exemplar(e)?),
    };
    Ok(Sample {
        name,
        labels,
        value,
        timestamp_ms,
        exemplar,
        native: None,
    })
}

/// Whether `s` is one or more fields each after exactly one space (` 1`, ` 1 2`).
fn single_spaced(s: &str) -> bool {
    s.strip_prefix(' ')
        .is_some_and(|rest| rest.split(' ').all(|f| !f.is_empty() && !f.contains('\t')))
}

fn parse_exemplar(s: &str) -> Result<Exemplar<'_>, &'static str> {
    let inner = s.strip_prefix('{').ok_or("exemplar without labels")?;
    let (labels, used) = scan_labels(inner)?;
    if inner[used..].trim().is_empty() {
        return Err("invalid exemplar value");
    }
    if !single_spaced(&inner[used..]) {
        return Err(
            "an exemplar's fields must be separated by exactly one space, with none at the end",
        );
    }
    let mut parts = inner[used..].split_ascii_whitespace();
    let value = parts
        .next()
        .and_then(parse_value)
        .ok_or("invalid exemplar value")?;
    let timestamp = match parts.next() {
        Some(t) => Some(
            t.parse::<f64>()
                .ok()
                .filter(|t| t.is_finite())
                .ok_or("invalid exemplar timestamp")?,
        ),
        None => None,
    };
    if parts.next().is_some() {
        return Err("unexpected text after the exemplar");
    }
    Ok(Exemplar {
        labels: Labels::Text(labels),
        value,
        timestamp,
    })
}

#[cfg(test)]
mod tests;
