//! The Prometheus side of Sidekick: the formats and rules, apart from any pipeline. The
//! scrape receiver, the `prometheus` and `prometheusremotewrite` exporters and Sidekick's
//! own `/metrics` page all call this crate, so they never disagree on a name, an escape
//! or a unit.
//!
//! Layout:
//! - [`parse`]: the text format (0.0.4) and OpenMetrics 1.0 parser, borrowing from the page;
//! - [`text`]: writing the text formats: escaping, values, `name{labels}`, family headers;
//! - [`names`]: the one metric and label name sanitiser;
//! - [`units`]: UCUM units and Prometheus unit words, both ways;
//! - [`relabel`]: `relabel_configs` and `metric_relabel_configs`;
//! - [`prompb`]: the remote-write 1.0 messages;
//! - the stale NaN that marks a series gone ([`STALE_NAN`]).

pub mod names;
pub mod parse;
pub mod prompb;
pub mod relabel;
pub mod text;
pub mod units;

/// The bit pattern Prometheus uses to mark a series stale.
pub const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

/// A sample value that marks its series stale.
pub fn stale_nan() -> f64 {
    f64::from_bits(STALE_NAN)
}

/// Whether `v` is the stale marker (not any other NaN).
pub fn is_stale_nan(v: f64) -> bool {
    v.to_bits() == STALE_NAN
}
