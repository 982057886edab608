//! The `probabilistic_sampler` processor: keeps a share of traces (by trace id, so a
//! trace is kept or dropped whole across services) and of logs (by trace id or an
//! attribute), deciding exactly as the OpenTelemetry Collector does (see [`decide`]), so
//! a trace sampled at 20% by a Collector is sampled here too. Batches stay encoded:
//! dropped spans are cut out and only spans whose `tracestate` gains a `th` are rewritten.
//!
//! ```yaml
//! processors:
//!   probabilistic_sampler:
//!     sampling_percentage: 15
//!     mode: proportional        # hash_seed (the default), proportional or equalizing
//! ```
//!
//! Counted in `otelcol_processor_probabilistic_sampler_count_traces_sampled_total` and
//! `..._count_logs_sampled_total` by `sampled` and `policy`, as in the Collector.

pub mod decide;

use std::borrow::Cow;

use serde::Deserialize;
use sidekick_collector::component::{
    BuildContext, BuildError, FieldError, Processor, ProcessorConfig, Sieve, SieveProcessor,
};
use sidekick_collector::config::Signal as SignalKind;
use sidekick_collector::payload::{Batch, Signal};
use sidekick_collector::telemetry::{Counter, LogBurst, Telemetry};

use crate::ottl::item::{attribute, key_value_if, Context, Item, KeyFinder};
use crate::ottl::run::{for_each, Verdict};
use crate::ottl::value::{encode_key_value, Value};
use crate::ottl::wire;
use decide::{Decider, Mode, Priority, SampleError, Threshold};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModeName {
    #[default]
    HashSeed,
    Proportional,
    Equalizing,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum AttributeSource {
    #[default]
    #[serde(rename = "traceID")]
    TraceId,
    #[serde(rename = "record")]
    Record,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Percentage of traces (or logs) kept, 0 to 100.
    pub sampling_percentage: f32,
    /// Seed of the hash in `hash_seed` mode; the same on every collector that must agree.
    pub hash_seed: u32,
    /// `hash_seed` (default), `proportional` or `equalizing`.
    pub mode: ModeName,
    /// Drop items whose decision fails (no trace id, a malformed tracestate); default true.
    pub fail_closed: bool,
    /// Hex digits of the `th` written to tracestate (1 to 14, default 4).
    pub sampling_precision: u8,
    /// Logs: decide by `traceID` (default) or by the `record` attribute `from_attribute`.
    pub attribute_source: AttributeSource,
    /// Logs: the attribute hashed with `attribute_source: record`, or when a record has
    /// no trace id.
    pub from_attribute: String,
    /// Logs: an attribute holding a percentage for this record (0 drops it, 100 keeps it).
    pub sampling_priority: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            sampling_percentage: 0.0,
            hash_seed: 0,
            mode: ModeName::HashSeed,
            fail_closed: true,
            sampling_precision: 4,
            attribute_source: AttributeSource::TraceId,
            from_attribute: String::new(),
            sampling_priority: String::new(),
        }
    }
}

impl Config {
    fn decider(&self) -> Decider {
        Decider {
            percentage: self.sampling_percentage,
            hash_seed: self.hash_seed,
            sampling_precision: self.sampling_precision,
            fail_closed: self.fail_closed,
        }
    }

    fn mode(&self) -> Mode {
        match self.mode {
            ModeName::HashSeed => Mode::HashSeed,
            ModeName::Proportional => Mode::Proportional,
            ModeName::Equalizing => Mode::Equalizing,
        }
    }
}

impl ProcessorConfig for Config {
    const SIGNALS: &'static [SignalKind] = &[SignalKind::Traces, SignalKind::Logs];

    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if let Err(e) = self.decider().validate() {
            let field = match e {
                decide::DecideError::InvalidPercentage => "sampling_percentage",
                decide::DecideError::InvalidPrecision => "sampling_precision",
            };
            errors.push(FieldError::new(field, e.to_string()));
        }
        if self.attribute_source == AttributeSource::Record && self.from_attribute.is_empty() {
            errors.push(FieldError::new(
                "from_attribute",
                "attribute_source: record needs from_attribute, the attribute to sample by",
            ));
        }
        errors
    }

    fn build<S: Signal>(&self, ctx: &BuildContext) -> Result<Box<dyn Processor<S>>, BuildError> {
        if let Some(e) = self.validate().first() {
            return Err(BuildError::new(format!("{}: {}", e.field, e.message)));
        }
        Ok(Box::new(SieveProcessor(Sampler::new(
            self,
            S::KIND,
            ctx.telemetry,
            &ctx.id.to_string(),
        ))))
    }
}

/// Why an item was kept or dropped, as the Collector's `policy` label names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    Hash,
    W3c,
    Priority,
    Missing,
}

const POLICIES: [(Policy, &str); 4] = [
    (Policy::Hash, "trace_id_hash"),
    (Policy::W3c, "trace_id_w3c"),
    (Policy::Priority, "sampling_priority"),
    (Policy::Missing, "missing_randomness"),
];

pub struct Sampler {
    config: Config,
    mode: Mode,
    decider: Decider,
    /// By policy, then [not sampled, sampled].
    counts: Vec<[Counter; 2]>,
    error_log: LogBurst,
    /// hash_seed mode's threshold, and its `th` text when the fast path applies.
    hash_seed_threshold: Threshold,
    hash_seed_th: Option<String>,
    priority_key: KeyFinder,
}

impl Sampler {
    pub fn new(config: &Config, signal: SignalKind, telemetry: &Telemetry, name: &str) -> Self {
        let metric = match signal {
            SignalKind::Logs => "otelcol_processor_probabilistic_sampler_count_logs_sampled",
            _ => "otelcol_processor_probabilistic_sampler_count_traces_sampled",
        };
        let counter = |policy: &str, sampled: &str| {
            telemetry.counter(
                metric,
                "Items the probabilistic sampler kept (sampled=true) or dropped.",
                &[
                    ("processor", name),
                    ("policy", policy),
                    ("sampled", sampled),
                ],
            )
        };
        Sampler {
            config: config.clone(),
            mode: config.mode(),
            decider: config.decider(),
            counts: POLICIES
                .iter()
                .map(|(_, p)| [counter(p, "false"), counter(p, "true")])
                .collect(),
            error_log: LogBurst::new(std::time::Duration::from_secs(10)),
            hash_seed_threshold: decide::hash_seed_threshold(config.sampling_percentage.min(100.0)),
            priority_key: KeyFinder::new(PRIORITY),
            // The fast path covers a sampler that samples some (the never sampler and
            // an invalid percentage take the general one).
            hash_seed_th: (config.mode() == Mode::HashSeed
                && config.decider().validate().is_ok()
                && decide::hash_seed_scaled_rate(config.sampling_percentage.min(100.0)) > 0)
                .then(|| {
                    decide::hash_seed_threshold(config.sampling_percentage.min(100.0)).tvalue()
                })
                .filter(|th| !th.is_empty() && th.len() <= 14),
        }
    }

    fn count(&self, policy: Policy, sampled: bool) {
        let i = POLICIES.iter().position(|(p, _)| *p == policy).unwrap_or(0);
        self.counts[i][usize::from(sampled)].add(1);
    }

    fn log_error(&self, error: &SampleError) {
        if let Some(held_back) = self.error_log.check() {
            tracing::warn!(error = ?error, fail_closed = self.config.fail_closed, similar_errors_not_logged = held_back, "probabilistic sampler could not decide on an item");
        }
    }

    /// One span: kept (its tracestate updated) or dropped.
    fn span(&self, item: &mut Item<'_>) -> Verdict {
        let msg: &[u8] = &item.msg;
        // One pass over the span for all three fields a decision reads.
        let (mut id, mut tracestate, mut priority) = (&[][..], &[][..], Value::Nil);
        let has_priority = self.priority_key.occurs_in(msg);
        for f in wire::Reader::new(msg) {
            match f.number {
                1 => id = f.bytes(),
                3 => tracestate = f.bytes(),
                9 if has_priority => {
                    if let Some(v) = key_value_if(f.bytes(), PRIORITY) {
                        priority = Value::decode_any(v);
                    }
                }
                _ => {}
            }
        }
        let priority = span_priority(priority);
        match self.plain_hash_seed(id, tracestate, priority) {
            Some(None) => return Verdict::Drop,
            Some(Some((ts, len))) => {
                item.msg = Cow::Owned(wire::replace_bytes_field(&item.msg, 3, &ts[..len]));
                return Verdict::Keep;
            }
            None => {}
        }
        let Ok(decision) = decide::decide_with_priority(
            self.mode,
            &self.decider,
            &trace_id(id),
            &String::from_utf8_lossy(tracestate),
            priority,
        ) else {
            return Verdict::Keep;
        };
        let policy = match (priority, &decision.error, self.mode) {
            (Priority::MustSample | Priority::DoNotSample, _, _) => Policy::Priority,
            (_, Some(_), _) => Policy::Missing,
            (_, None, Mode::HashSeed) => Policy::Hash,
            _ => Policy::W3c,
        };
        if let Some(e) = &decision.error {
            self.log_error(e);
        }
        self.count(policy, decision.sampled);
        if !decision.sampled {
            return Verdict::Drop;
        }
        if let Some(ts) = decision.new_tracestate {
            item.msg = Cow::Owned(wire::replace_bytes_field(&item.msg, 3, ts.as_bytes()));
        }
        Verdict::Keep
    }

    /// hash_seed mode's common case, without parsing and rendering a tracestate: no
    /// tracestate, no priority, a trace id. The same decision and the same written
    /// tracestate as [`decide::decide_with_priority`] (a test holds them equal); `None`
    /// for every other case, else the tracestate to write when sampled.
    fn plain_hash_seed(
        &self,
        id: &[u8],
        tracestate: &[u8],
        priority: Priority,
    ) -> Option<Option<([u8; 38], usize)>> {
        let th = self.hash_seed_th.as_ref()?;
        let id = <&[u8; 16]>::try_from(id).ok()?;
        if !tracestate.is_empty() || priority != Priority::Defer || id.iter().all(|&b| b == 0) {
            return None;
        }
        let randomness = decide::hash_randomness(self.decider.hash_seed, id);
        let sampled = self.hash_seed_threshold.should_sample(randomness);
        self.count(Policy::Hash, sampled);
        if !sampled {
            return Some(None);
        }
        let mut ts = [0u8; 6 + 14 + 4 + 14];
        ts[..6].copy_from_slice(b"ot=rv:");
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for (i, b) in ts[6..20].iter_mut().enumerate() {
            *b = HEX[((randomness >> (4 * (13 - i))) & 0xf) as usize];
        }
        ts[20..24].copy_from_slice(b";th:");
        ts[24..24 + th.len()].copy_from_slice(th.as_bytes());
        Some(Some((ts, 24 + th.len())))
    }

    /// One log record: by trace id or an attribute, with a per-record priority.
    fn log(&self, item: &mut Item<'_>) -> Verdict {
        let msg: &[u8] = &item.msg;
        let attribute = |name: &str| -> Option<Vec<u8>> {
            if name.is_empty() {
                return None;
            }
            match record_attribute(msg, name) {
                Value::Nil => None,
                Value::Str(s) if s.is_empty() => None,
                Value::Str(s) => Some(s.as_bytes().to_vec()),
                Value::Bytes(b) => Some(b.to_vec()),
                other => Some(other.to_text().into_bytes()),
            }
        };
        let id = wire::last(msg, 9).map(|f| f.bytes()).unwrap_or(&[]);
        let id_present = id.len() == 16 && id.iter().any(|&b| b != 0);
        let key: Option<Vec<u8>> = match self.config.attribute_source {
            AttributeSource::TraceId if id_present => Some(id.to_vec()),
            _ => attribute(&self.config.from_attribute),
        };
        let mut percentage = self.config.sampling_percentage;
        let mut policy = if key.is_some()
            && self.config.attribute_source == AttributeSource::TraceId
            && id_present
        {
            if self.mode == Mode::HashSeed {
                Policy::Hash
            } else {
                Policy::W3c
            }
        } else {
            Policy::Hash
        };
        if !self.config.sampling_priority.is_empty() {
            match record_attribute(msg, &self.config.sampling_priority) {
                Value::Int(i) => {
                    percentage = i as f32;
                    policy = Policy::Priority;
                }
                Value::Double(d) => {
                    percentage = d as f32;
                    policy = Policy::Priority;
                }
                Value::Str(s) => {
                    if let Ok(p) = s.parse::<f32>() {
                        percentage = p;
                        policy = Policy::Priority;
                    }
                }
                _ => {}
            }
        }
        let Some(key) = key else {
            self.log_error(&SampleError::MissingRandomness);
            let sampled = !self.config.fail_closed;
            self.count(Policy::Missing, sampled);
            return if sampled {
                Verdict::Keep
            } else {
                Verdict::Drop
            };
        };
        let pct = percentage.clamp(0.0, 100.0);
        let (threshold, randomness) = match self.mode {
            Mode::HashSeed => (
                decide::hash_seed_threshold(pct),
                decide::hash_randomness(self.config.hash_seed, &key),
            ),
            _ => {
                let randomness = match <[u8; 16]>::try_from(key.as_slice()) {
                    Ok(id) if policy != Policy::Hash => decide::randomness_from_trace_id(&id),
                    _ => decide::hash_randomness(self.config.hash_seed, &key),
                };
                let t = Threshold::from_probability_with_precision(
                    f64::from(pct) / 100.0,
                    self.config.sampling_precision,
                )
                .unwrap_or(Threshold::NEVER_SAMPLE);
                (t, randomness)
            }
        };
        let sampled = pct > 0.0 && threshold.should_sample(randomness);
        self.count(policy, sampled);
        if !sampled {
            return Verdict::Drop;
        }
        // As the Collector marks sampled records: the threshold, and in hash_seed mode
        // the randomness it was compared with.
        let mut attrs = Vec::new();
        encode_key_value(
            &mut attrs,
            6,
            "sampling.threshold",
            &Value::str(threshold.tvalue()),
        );
        if self.mode == Mode::HashSeed {
            encode_key_value(
                &mut attrs,
                6,
                "sampling.randomness",
                &Value::str(format!("{randomness:014x}")),
            );
        }
        let mut out = Vec::with_capacity(item.msg.len() + attrs.len());
        for f in wire::Reader::new(&item.msg) {
            let replaced = f.number == 6 && {
                let (k, _) = crate::ottl::value::decode_key_value(f.bytes(), 1);
                k == "sampling.threshold" || k == "sampling.randomness"
            };
            if !replaced {
                out.extend_from_slice(f.raw);
            }
        }
        out.extend_from_slice(&attrs);
        item.msg = Cow::Owned(out);
        Verdict::Keep
    }
}

fn trace_id(bytes: &[u8]) -> [u8; 16] {
    <[u8; 16]>::try_from(bytes).unwrap_or([0; 16])
}

fn record_attribute<'m>(msg: &'m [u8], key: &str) -> Value<'m> {
    attribute(msg, 6, key)
}

/// The span attribute that overrides the decision.
const PRIORITY: &str = "sampling.priority";

/// The `sampling.priority` span attribute: 0 never samples, more than 0 always does.
fn span_priority(value: Value<'_>) -> Priority {
    let n = match value {
        Value::Int(i) => i as f64,
        Value::Double(d) => d,
        Value::Str(s) => match s.parse::<f64>() {
            Ok(d) => d,
            Err(_) => return Priority::Defer,
        },
        _ => return Priority::Defer,
    };
    if n == 0.0 {
        Priority::DoNotSample
    } else if n > 0.0 {
        Priority::MustSample
    } else {
        Priority::Defer
    }
}

impl<S: Signal> Sieve<S> for Sampler {
    fn sift(&self, batch: &mut Batch<S>) -> Result<(), String> {
        match S::KIND {
            SignalKind::Traces => for_each(batch, Context::Span, &mut |item| self.span(item)),
            SignalKind::Logs => for_each(batch, Context::Log, &mut |item| self.log(item)),
            SignalKind::Metrics => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
