//! The OpenMetrics 1.0 rules a page must follow beyond its syntax, checked on the page as
//! written (before metric relabeling) and only for pages served as OpenMetrics: the
//! Prometheus text format has none of them, and Prometheus accepts such pages.
//!
//! Enforced, each a refused scrape naming the line and the rule:
//! - families are not interleaved: once another family's samples begin, an earlier family
//!   does not come back;
//! - `TYPE`, `HELP` and `UNIT` come before their family's samples, each at most once;
//! - counter totals, histogram buckets and counts and summary counts are neither negative
//!   nor NaN; stateset values are 0 or 1; info values are 1; quantiles lie in [0, 1];
//! - exemplars only on counter totals and histogram buckets, their label set at most 128
//!   characters;
//! - a histogram has a `+Inf` bucket, its buckets are cumulative and `+Inf` equals
//!   `_count`; a histogram or summary with `_sum` has `_count`.
//!
//! Not enforced, for Prometheus compatibility or because nothing can go wrong downstream:
//! a negative histogram `_sum` (negative observations are allowed); metadata for a name
//! that only later turns out to belong to a family whose samples came first under another
//! name (`x_total` before `# TYPE x counter`: the samples are read as untyped, as
//! Prometheus does); `_created` values (any timestamp is accepted).

use sidekick_core::util::FastMap;

use crate::parse::{Kind, Sample};

/// Where a page's samples are, family by family.
#[derive(Default)]
pub struct Checker<'a> {
    /// The family whose samples come now (its metadata name, or the sample name when
    /// it has none).
    current: Option<&'a str>,
    /// Families whose samples are over.
    finished: FastMap<&'a str, ()>,
    /// Names with a `HELP` / `UNIT` line so far.
    help: FastMap<&'a str, ()>,
    unit: FastMap<&'a str, ()>,
}

/// What is wrong, for [`super::PageError::OpenMetrics`].
pub type Violation = &'static str;

/// The longest exemplar label set, in characters (names and values together).
pub const EXEMPLAR_LABELS_MAX_CHARS: usize = 128;

impl<'a> Checker<'a> {
    /// A `TYPE`, `HELP` or `UNIT` line for `name`.
    pub fn metadata(&mut self, name: &'a str, keyword: &str) -> Result<(), Violation> {
        if self.current == Some(name) || self.finished.contains_key(name) {
            return Err("metadata after the family's samples");
        }
        let seen = match keyword {
            "HELP" => &mut self.help,
            "UNIT" => &mut self.unit,
            _ => return Ok(()),
        };
        if seen.insert(name, ()).is_some() {
            return Err("a second HELP or UNIT line for one family");
        }
        Ok(())
    }

    /// A sample of family `family` (its metadata name), of kind `kind` in the part
    /// `role`; `quantile` is its `quantile` label when it has one.
    pub fn sample(
        &mut self,
        sample: &Sample<'a>,
        family: Option<&'a str>,
        kind: Kind,
        role: Role,
        quantile: Option<&str>,
    ) -> Result<(), Violation> {
        let key = family.unwrap_or(sample.name);
        if self.current != Some(key) {
            if self.finished.contains_key(key) {
                return Err("families are interleaved: this family's samples came earlier, with another family's in between");
            }
            if let Some(done) = self.current.replace(key) {
                self.finished.insert(done, ());
            }
        }
        let v = sample.value;
        let non_negative = v >= 0.0; // false for NaN too
        match (kind, role) {
            (Kind::Counter, Role::Value) if !non_negative => {
                return Err("a counter's value is negative or NaN")
            }
            (Kind::Histogram | Kind::GaugeHistogram, Role::Bucket | Role::Count)
                if !non_negative =>
            {
                return Err("a histogram bucket or count is negative or NaN")
            }
            (Kind::Summary, Role::Count) if !non_negative => {
                return Err("a summary count is negative or NaN")
            }
            (Kind::Summary, Role::Value) => {
                let q = quantile.and_then(crate::parse::parse_value);
                if !q.is_some_and(|q| (0.0..=1.0).contains(&q)) {
                    return Err("a summary quantile is missing or outside [0, 1]");
                }
            }
            (Kind::StateSet, Role::Value) if v != 0.0 && v != 1.0 => {
                return Err("a stateset value is neither 0 nor 1")
            }
            (Kind::Info, Role::Value) if v != 1.0 => return Err("an info value is not 1"),
            _ => {}
        }
        if let Some(e) = &sample.exemplar {
            let allowed = matches!(
                (kind, role),
                (Kind::Counter, Role::Value)
                    | (Kind::Histogram | Kind::GaugeHistogram, Role::Bucket)
            );
            if !allowed {
                return Err("an exemplar on a sample that cannot carry one (only counter totals and histogram buckets can)");
            }
            let chars: usize = e
                .labels
                .iter()
                .map(|(k, v)| k.chars().count() + v.chars().count())
                .sum();
            if chars > EXEMPLAR_LABELS_MAX_CHARS {
                return Err("an exemplar's label set is longer than 128 characters");
            }
        }
        Ok(())
    }
}

/// The part a sample plays in its family.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Role {
    Value,
    Bucket,
    Sum,
    Count,
    Created,
}

/// A histogram point's shape: buckets (upper bound, cumulative count) in page order, its
/// `_sum` and `_count`.
pub fn check_histogram(
    buckets: &[(f64, f64)],
    sum: Option<f64>,
    count: Option<f64>,
) -> Result<(), Violation> {
    let mut sorted: Vec<(f64, f64)> = buckets.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let Some(&(last_le, inf)) = sorted.last().filter(|(le, _)| *le == f64::INFINITY) else {
        return Err("a histogram without a +Inf bucket");
    };
    debug_assert!(last_le.is_infinite());
    if sorted.windows(2).any(|w| w[1].1 < w[0].1) {
        return Err("a histogram's buckets are not cumulative");
    }
    match (sum, count) {
        (Some(_), None) => return Err("a histogram with _sum but no _count"),
        (_, Some(c)) if c != inf => {
            return Err("a histogram's _count differs from its +Inf bucket")
        }
        _ => {}
    }
    Ok(())
}

/// A summary point's shape.
pub fn check_summary(sum: Option<f64>, count: Option<f64>) -> Result<(), Violation> {
    if sum.is_some() && count.is_none() {
        return Err("a summary with _sum but no _count");
    }
    Ok(())
}
