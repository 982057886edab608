//! The Prometheus side of Sidekick: the formats, the rules and the translation to and
//! from OTLP, apart from any pipeline. The scrape receiver, the `prometheus` and
//! `prometheusremotewrite` exporters and Sidekick's own `/metrics` page all call this
//! crate, so they never disagree on a name, an escape or a unit.
//!
//! Layout:
//! - [`exposition`]: the protobuf exposition (`MetricFamily`), which carries native
//!   histograms;
//! - [`parse`]: the text format (0.0.4) and OpenMetrics 1.0 parser, borrowing from the page;
//! - [`text`]: writing the text formats: escaping, values, `name{labels}`, family headers;
//! - [`names`]: the one metric and label name sanitiser;
//! - [`units`]: UCUM units and Prometheus unit words, both ways;
//! - [`relabel`]: `relabel_configs` and `metric_relabel_configs`;
//! - [`to_otlp`]: a scraped page to OTLP metrics, with the series state kept between
//!   scrapes (start times, staleness) and OpenMetrics' extra rules;
//! - [`from_otlp`]: OTLP metrics to Prometheus series (names, labels, accumulating
//!   deltas), for the `prometheus` and `prometheusremotewrite` exporters;
//! - [`remote_write`]: those series written straight into snappy-compressed requests;
//! - [`prompb`]: the remote-write 1.0 messages;
//! - the stale NaN that marks a series gone ([`STALE_NAN`]).

pub mod exposition;
pub mod from_otlp;
pub mod names;
pub mod parse;
pub mod prompb;
pub mod relabel;
pub mod remote_write;
pub mod text;
pub mod to_otlp;
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
