//! The OpenTelemetry Collector's `probabilistic_sampler` decisions, bit for bit (pure, std-only).
//!
//! Source: opentelemetry-collector-contrib main, `processor/probabilisticsamplerprocessor`
//! (sampler_mode.go, tracesprocessor.go, logsprocessor.go, fnvhasher.go, config.go,
//! factory.go) and `pkg/sampling` (threshold.go, probability.go, randomness.go,
//! w3ctracestate.go, oteltracestate.go, common.go). What it does:
//!
//! * Defaults: `sampling_precision` 4, `fail_closed` true, `hash_seed` 0, and an unset `mode`
//!   resolves to hash_seed (an earlier revision defaulted to proportional). Validation refuses
//!   NaN, infinite, negative or nonzero-but-below-2^-56 ratios, and precision outside 1..=14.
//!   Percentages over 100 count as 100, and 0 never samples in any mode.
//! * hash_seed: FNV-1a/32 over the seed (4 bytes, little-endian) and then the trace id (for
//!   logs: the trace id or an attribute's bytes). A span is sampled iff `hash & 0x3fff` is
//!   below `uint32(pct * 163.84)`, computed in float32 and truncated; a rate of 0 never
//!   samples. Newer code states this as the threshold `(16384 - rate) << 42` against a
//!   synthetic randomness ([`hash_randomness`]). A sampled span that had no `rv`/`th` gets
//!   both written (20% → `th:ccd`). An incoming `rv` or `th` is an error, and so is an
//!   all-zero trace id (missing randomness).
//! * proportional: the incoming probability (from `th`, else 1) times `f64(pct)/100` goes
//!   through ProbabilityToThresholdWithPrecision. A product below 2^-56 is not sampled.
//!   equalizing: the configured threshold, or the incoming one if that is larger.
//!   Randomness is `rv` if present, else the trace id's last 7 bytes; sampled iff T <= R.
//! * Errors (unparsable tracestate, missing randomness, incoming `th` above the randomness,
//!   `rv`/`th` in hash_seed mode): `fail_closed` drops the item, otherwise it is kept. An
//!   inconsistent `th` is cleared first, so fail-open writes `th:0`.
//! * A sampled item whose tracestate parsed gets it rewritten. `th` never lowers an incoming
//!   `th` (which would raise the probability). `ot` goes first (`rv`, `th`, then its other
//!   sub-keys), the other vendors follow in order, and blank members and whitespace go.
//! * `sampling.priority` ([`Priority`]) forces never/always, overriding `fail_closed`.
//!
//! Deviation: at 0% the Collector, failing open on an unparsable tracestate, re-serialises
//! what it parsed so far; here it is left untouched. Logs carry `sampling.threshold` and
//! `sampling.randomness` attributes instead of a tracestate (not handled here). Their hash is
//! [`hash_seed_sampled_bytes`], and an empty attribute value means missing randomness.

/// 2^56: the number of randomness values, and the "never" threshold.
const MAX_ADJUSTED_COUNT: u64 = 1 << 56;
/// Randomness used when there is none: passes every threshold but "never".
const ALL_RANDOMNESS: u64 = MAX_ADJUSTED_COUNT - 1;
/// The smallest probability a threshold can express, 2^-56.
pub const MIN_SAMPLING_PROBABILITY: f64 = 1.0 / MAX_ADJUSTED_COUNT as f64;
const HASH_MASK: u32 = 0x3fff;
/// 16384 / 100 as a float32, as Go rounds the constant in `pct * percentageScaleFactor`.
const PERCENT_SCALE: f32 = 163.84;

fn fnv1a32(seed: u32, data: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in seed.to_le_bytes().iter().chain(data) {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    h
}

/// The hash_seed acceptance rate out of 16384: `uint32(min(pct, 100) * 163.84)` in float32;
/// 0 for zero, negative or NaN percentages.
pub fn hash_seed_scaled_rate(percentage: f32) -> u32 {
    if percentage > 0.0 {
        (percentage.min(100.0) * PERCENT_SCALE) as u32
    } else {
        0
    }
}

/// The pure hash_seed test for a trace id ([`decide`] adds the zero-id and tracestate rules).
pub fn hash_seed_sampled(seed: u32, percentage: f32, trace_id: &[u8; 16]) -> bool {
    hash_seed_sampled_bytes(seed, percentage, trace_id)
}

/// The same test over any bytes: logs hash a string attribute's UTF-8 or a bytes value.
pub fn hash_seed_sampled_bytes(seed: u32, percentage: f32, key: &[u8]) -> bool {
    (fnv1a32(seed, key) & HASH_MASK) < hash_seed_scaled_rate(percentage)
}

/// The threshold hash_seed mode writes as `th`.
pub fn hash_seed_threshold(percentage: f32) -> Threshold {
    match hash_seed_scaled_rate(percentage) {
        0 => Threshold::NEVER_SAMPLE,
        rate => Threshold(u64::from(HASH_MASK + 1 - rate) << 42),
    }
}

/// hash_seed's synthetic 56-bit randomness (written as `rv`): `16383 - bucket` in the top 14
/// bits, then the 18 unused hash bits xored with themselves shifted left by 10, then the bucket.
pub fn hash_randomness(seed: u32, key: &[u8]) -> u64 {
    let h = fnv1a32(seed, key);
    let (bucket, unused) = (u64::from(h & HASH_MASK), u64::from(h >> 14));
    ((u64::from(HASH_MASK) - bucket) << 42) | ((unused ^ (unused << 10)) << 14) | bucket
}

/// A rejection threshold out of 2^56: 0 samples everything, 2^56 nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Threshold(u64);

fn parse_hex(s: &str) -> Option<u64> {
    s.bytes().try_fold(0, |acc, b| {
        Some((acc << 4) | u64::from((b as char).to_digit(16)?))
    })
}

/// The exponent Go's `math.Frexp` returns (x = f * 2^e, f in [0.5, 1)).
fn frexp_exp(x: f64) -> i32 {
    match ((x.to_bits() >> 52) & 0x7ff) as i32 {
        _ if x == 0.0 || !x.is_finite() => 0,
        0 => frexp_exp(x * (1u64 << 54) as f64) - 54,
        e => e - 1022,
    }
}

impl Threshold {
    pub const ALWAYS_SAMPLE: Threshold = Threshold(0);
    pub const NEVER_SAMPLE: Threshold = Threshold(MAX_ADJUSTED_COUNT);

    /// `None` at or above 2^56.
    pub fn from_unsigned(value: u64) -> Option<Threshold> {
        (value < MAX_ADJUSTED_COUNT).then_some(Threshold(value))
    }

    pub fn unsigned(&self) -> u64 {
        self.0
    }

    /// ProbabilityToThreshold (14 digits).
    pub fn from_probability(p: f64) -> Option<Threshold> {
        Self::from_probability_with_precision(p, 14)
    }

    /// ProbabilityToThresholdWithPrecision: `None` unless 2^-56 <= p <= 1; precision 0 means
    /// 14. One digit is added per 4 binary orders of magnitude that `p` or `1 - p` lie below
    /// 1/2 (leading `f`s or `0`s). Then `2^56 - round(p * 2^56)` is rounded half-up to that
    /// many hex digits.
    pub fn from_probability_with_precision(p: f64, precision: u8) -> Option<Threshold> {
        if !(MIN_SAMPLING_PROBABILITY..=1.0).contains(&p) {
            return None;
        }
        if p == 1.0 {
            return Some(Self::ALWAYS_SAMPLE);
        }
        let base = if precision == 0 {
            14
        } else {
            i32::from(precision.min(14))
        };
        let digits = (base + frexp_exp(p) / -4)
            .max(base + frexp_exp(1.0 - p) / -4)
            .min(14);
        let scaled = ((p * MAX_ADJUSTED_COUNT as f64).round() as u64).min(MAX_ADJUSTED_COUNT);
        let shift = 4 * (14 - digits) as u32;
        let mut th = MAX_ADJUSTED_COUNT - scaled;
        if shift != 0 {
            th = ((th + (1 << (shift - 1))) >> shift) << shift;
        }
        Some(Threshold(th))
    }

    /// The `th` text: 14 hex digits minus trailing zeros; "0" for always, "" for never.
    pub fn tvalue(&self) -> String {
        match self.0 {
            0 => "0".to_string(),
            t if t >= MAX_ADJUSTED_COUNT => String::new(),
            t => format!("{t:014x}").trim_end_matches('0').to_string(),
        }
    }

    /// Parses `th`: 1 to 14 hex digits (either case), zero-padded on the right.
    pub fn parse_tvalue(s: &str) -> Option<Threshold> {
        let pad = 14usize.checked_sub(s.len()).filter(|_| !s.is_empty())?;
        Some(Threshold(parse_hex(s)? << (4 * pad)))
    }

    /// The consistent sampling test T <= R.
    pub fn should_sample(&self, randomness: u64) -> bool {
        self.0 <= randomness
    }

    /// `(2^56 - T) / 2^56`.
    pub fn probability(&self) -> f64 {
        MAX_ADJUSTED_COUNT.saturating_sub(self.0) as f64 / MAX_ADJUSTED_COUNT as f64
    }
}

/// W3C trace-id randomness: the last 7 bytes, big-endian.
pub fn randomness_from_trace_id(trace_id: &[u8; 16]) -> u64 {
    trace_id[9..]
        .iter()
        .fold(0, |acc, &b| (acc << 8) | u64::from(b))
}

/// Parses `rv`: exactly 14 hex digits (either case).
pub fn parse_rv(s: &str) -> Option<u64> {
    (s.len() == 14).then(|| parse_hex(s)).flatten()
}

/// Why a tracestate was refused, per the Collector's parser.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceStateError {
    /// Over 1024 bytes, a 32nd member, or a key over 256 (tenant 241, system 14) bytes.
    Size,
    /// Not a W3C list of `key=value` members.
    Syntax,
    /// `ot` value over 256 bytes (the W3C value limit already catches this).
    OtSize,
    /// `ot` value not `k:v;k:v` (keys `[a-z][a-z0-9]*`, values `[A-Za-z0-9._-]*`).
    OtSyntax,
    /// `rv` not 14 hex digits.
    RValue,
    /// `th` not 1 to 14 hex digits.
    TValue,
}

impl std::fmt::Display for TraceStateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Size => "tracestate exceeds a size limit",
            Self::Syntax => "tracestate is not a valid W3C list",
            Self::OtSize => "ot tracestate value longer than 256 bytes",
            Self::OtSyntax => "ot tracestate value is malformed",
            Self::RValue => "rv must be exactly 14 hex digits",
            Self::TValue => "th must be 1 to 14 hex digits",
        })
    }
}

impl std::error::Error for TraceStateError {}

fn trim_ows(s: &str) -> &str {
    s.trim_matches(|c| c == ' ' || c == '\t')
}

fn valid_w3c_key(key: &str) -> bool {
    let rest = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-*/".contains(b);
    let ok = |s: &str, first: fn(&u8) -> bool| {
        s.as_bytes()
            .split_first()
            .is_some_and(|(f, r)| first(f) && r.iter().all(rest))
    };
    match key.split_once('@') {
        Some((tenant, system)) => {
            ok(tenant, |b| b.is_ascii_lowercase() || b.is_ascii_digit())
                && ok(system, u8::is_ascii_lowercase)
        }
        None => ok(key, u8::is_ascii_lowercase),
    }
}

fn valid_w3c_value(v: &str) -> bool {
    let nonblank = |b: &u8| (0x21..=0x7e).contains(b) && *b != b',' && *b != b'=';
    v.len() <= 256
        && v.as_bytes().last().is_some_and(nonblank)
        && v.bytes().all(|c| c == b' ' || nonblank(&c))
}

fn valid_ot_value(v: &str) -> bool {
    let key = |k: &str| {
        let lc = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        k.as_bytes()
            .split_first()
            .is_some_and(|(f, r)| f.is_ascii_lowercase() && r.iter().all(lc))
    };
    let val = |c: u8| c.is_ascii_alphanumeric() || b"._-".contains(&c);
    !v.is_empty()
        && v.split(';').all(|m| {
            m.split_once(':')
                .is_some_and(|(k, x)| key(k) && x.bytes().all(val))
        })
}

/// A W3C tracestate with its OpenTelemetry (`ot`) entry decoded. Borrows the input; only
/// [`OtelTraceState::render`] allocates.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OtelTraceState<'a> {
    raw: &'a str,
    ot: Option<&'a str>,
    rv: Option<u64>,
    /// Incoming `rv`/`th` text, written back verbatim (e.g. upper case) unless replaced.
    rv_text: Option<&'a str>,
    th: Option<Threshold>,
    th_text: Option<&'a str>,
}

impl<'a> OtelTraceState<'a> {
    /// Parses a full tracestate like NewW3CTraceState. As there, the 32nd list member (blank
    /// ones count) is refused, and of several `ot` entries the last one wins.
    pub fn parse(input: &'a str) -> Result<Self, TraceStateError> {
        let mut st = OtelTraceState {
            raw: input,
            ..Self::default()
        };
        if input.len() > 1024 {
            return Err(TraceStateError::Size);
        }
        for member in input.split(',').map(trim_ows).filter(|m| !m.is_empty()) {
            match member.split_once('=') {
                Some((k, v)) if valid_w3c_key(k) && valid_w3c_value(v) => {}
                _ => return Err(TraceStateError::Syntax),
            }
        }
        let (mut rest, mut items, mut err) = (input, 0, Ok(()));
        while !rest.is_empty() {
            items += 1;
            if items >= 32 {
                return Err(TraceStateError::Size);
            }
            let (member, next) = rest.split_once(',').unwrap_or((rest, ""));
            rest = next;
            let Some((key, value)) = trim_ows(member).split_once('=') else {
                continue;
            };
            let tenant_system = key.split_once('@');
            if key.len() > 256 || tenant_system.is_some_and(|(t, s)| t.len() > 241 || s.len() > 14)
            {
                err = err.and(Err(TraceStateError::Size));
            } else if key == "ot" {
                err = err.and(st.parse_ot(value));
            }
        }
        err.map(|()| st)
    }

    fn parse_ot(&mut self, value: &'a str) -> Result<(), TraceStateError> {
        (self.ot, self.rv, self.rv_text, self.th, self.th_text) =
            (Some(value), None, None, None, None);
        if value.len() > 256 {
            return Err(TraceStateError::OtSize);
        }
        if !valid_ot_value(value) {
            return Err(TraceStateError::OtSyntax);
        }
        let mut err = Ok(());
        for (k, v) in value.split(';').filter_map(|m| m.split_once(':')) {
            if k == "rv" {
                self.rv = parse_rv(v);
                self.rv_text = self.rv.and(Some(v));
                err = err.and(self.rv.map(|_| ()).ok_or(TraceStateError::RValue));
            } else if k == "th" {
                self.th = Threshold::parse_tvalue(v);
                self.th_text = self.th.and(Some(v));
                err = err.and(self.th.map(|_| ()).ok_or(TraceStateError::TValue));
            }
        }
        err
    }

    pub fn randomness(&self) -> Option<u64> {
        self.rv
    }

    pub fn threshold(&self) -> Option<Threshold> {
        self.th
    }

    /// Sets `rv` (written as 14 lower-case hex digits).
    pub fn set_randomness(&mut self, randomness: u64) {
        (self.rv, self.rv_text) = (Some(randomness & ALL_RANDOMNESS), None);
    }

    pub fn clear_threshold(&mut self) {
        (self.th, self.th_text) = (None, None);
    }

    /// UpdateTValueWithSampling: sets `th` and returns true, unless the current `th` is
    /// greater (the update would raise the probability). "Never" removes `th`.
    pub fn update_threshold(&mut self, th: Threshold) -> bool {
        if self.th.is_some_and(|old| old > th) {
            return false;
        }
        (self.th, self.th_text) = ((th != Threshold::NEVER_SAMPLE).then_some(th), None);
        true
    }

    /// Serialises like the Collector: `ot=rv:..;th:..;<other ot sub-keys>` first, then the
    /// other members in order, joined by `,` with no whitespace or blank members.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = String::with_capacity(self.raw.len() + 40);
        out.push_str("ot=");
        match (self.rv, self.rv_text) {
            (Some(_), Some(text)) => _ = write!(out, ";rv:{text}"),
            (Some(rv), None) => _ = write!(out, ";rv:{rv:014x}"),
            _ => {}
        }
        match (self.th, self.th_text) {
            (Some(_), Some(text)) => _ = write!(out, ";th:{text}"),
            (Some(th), None) => _ = write!(out, ";th:{}", th.tvalue()),
            _ => {}
        }
        for sub in self.ot.unwrap_or("").split(';') {
            if !sub.is_empty() && !sub.starts_with("rv:") && !sub.starts_with("th:") {
                _ = write!(out, ";{sub}");
            }
        }
        if out.len() == 3 {
            out.clear();
        } else {
            out.remove(3);
        }
        for member in self.raw.split(',').map(trim_ows) {
            if member.split_once('=').is_some_and(|(k, _)| k != "ot") {
                _ = write!(out, "{}{member}", if out.is_empty() { "" } else { "," });
            }
        }
        out
    }
}

/// The `mode` setting; the default is what an unset `mode` means.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    #[default]
    HashSeed,
    Proportional,
    Equalizing,
}

/// The span's `sampling.priority`: 0 means `DoNotSample`, above 0 `MustSample`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Priority {
    #[default]
    Defer,
    MustSample,
    DoNotSample,
}

/// The settings that take part in a decision; `Default` is the Collector's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Decider {
    pub percentage: f32,
    pub hash_seed: u32,
    pub sampling_precision: u8,
    pub fail_closed: bool,
}

impl Default for Decider {
    fn default() -> Self {
        Decider {
            percentage: 0.0,
            hash_seed: 0,
            sampling_precision: 4,
            fail_closed: true,
        }
    }
}

/// A configuration the Collector refuses at startup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecideError {
    InvalidPercentage,
    InvalidPrecision,
}

impl std::fmt::Display for DecideError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::InvalidPercentage => {
                "sampling_percentage must be 0 or between 2^-56 and 100 percent"
            }
            Self::InvalidPrecision => "sampling_precision must be between 1 and 14",
        })
    }
}

impl std::error::Error for DecideError {}

impl Decider {
    /// Config.Validate for these fields.
    pub fn validate(&self) -> Result<(), DecideError> {
        let ratio = f64::from(self.percentage) / 100.0;
        let in_range = ratio == 0.0 || (ratio >= MIN_SAMPLING_PROBABILITY && ratio.is_finite());
        if !in_range {
            return Err(DecideError::InvalidPercentage);
        }
        if !(1..=14).contains(&self.sampling_precision) {
            return Err(DecideError::InvalidPrecision);
        }
        Ok(())
    }
}

/// Why `fail_closed` decided an item (the Collector logs it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SampleError {
    TraceState(TraceStateError),
    /// All-zero trace id and no `rv`.
    MissingRandomness,
    /// The incoming `th` is above the randomness.
    InconsistentThreshold,
    /// hash_seed mode met an incoming `rv`.
    RandomnessInUse,
    /// hash_seed mode met an incoming `th`.
    ThresholdInUse,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub sampled: bool,
    /// The tracestate to write, when it changed (`None` keeps the incoming one).
    pub new_tracestate: Option<String>,
    pub error: Option<SampleError>,
}

/// [`decide_with_priority`] for a span without `sampling.priority`.
pub fn decide(
    mode: Mode,
    cfg: &Decider,
    trace_id: &[u8; 16],
    tracestate: &str,
) -> Result<Decision, DecideError> {
    decide_with_priority(mode, cfg, trace_id, tracestate, Priority::Defer)
}

/// One span's decision (commonShouldSampleLogic with the tracestate carrier). `Err` only
/// for a configuration the Collector would not start with.
pub fn decide_with_priority(
    mode: Mode,
    cfg: &Decider,
    trace_id: &[u8; 16],
    tracestate: &str,
    priority: Priority,
) -> Result<Decision, DecideError> {
    cfg.validate()?;
    let pct = cfg.percentage.min(100.0);
    let never = pct == 0.0 || (mode == Mode::HashSeed && hash_seed_scaled_rate(pct) == 0);
    let id_missing = trace_id.iter().all(|&b| b == 0);
    let (mut error, mut carrier) = (None, None);
    // None is missing randomness; the never sampler skips the randomness checks.
    let mut rnd = match mode {
        _ if never => Some(ALL_RANDOMNESS),
        Mode::HashSeed => (!id_missing).then(|| hash_randomness(cfg.hash_seed, trace_id)),
        _ => None,
    };
    match OtelTraceState::parse(tracestate) {
        Err(e) => error = Some(SampleError::TraceState(e)),
        Ok(ts) if never => carrier = Some(ts),
        Ok(ts) if mode == Mode::HashSeed && ts.randomness().is_some() => {
            error = Some(SampleError::RandomnessInUse);
        }
        Ok(ts) if mode == Mode::HashSeed && ts.threshold().is_some() => {
            error = Some(SampleError::ThresholdInUse);
        }
        Ok(mut ts) if mode == Mode::HashSeed => {
            // Missing randomness is written too (all ones), as the Collector does.
            ts.set_randomness(rnd.unwrap_or(ALL_RANDOMNESS));
            carrier = Some(ts);
        }
        Ok(ts) => {
            rnd = ts
                .randomness()
                .or((!id_missing).then(|| randomness_from_trace_id(trace_id)));
            carrier = Some(ts);
        }
    }
    if error.is_none() {
        match (rnd, carrier.as_mut()) {
            (None, _) => error = Some(SampleError::MissingRandomness),
            (Some(r), Some(ts)) if ts.threshold().is_some_and(|t| !t.should_sample(r)) => {
                ts.clear_threshold();
                error = Some(SampleError::InconsistentThreshold);
            }
            _ => {}
        }
    }
    let ratio = (f64::from(pct) / 100.0).max(MIN_SAMPLING_PROBABILITY);
    let incoming = carrier.as_ref().and_then(OtelTraceState::threshold);
    let threshold = match (priority, mode) {
        (Priority::MustSample, _) => Threshold::ALWAYS_SAMPLE,
        (Priority::DoNotSample, _) => Threshold::NEVER_SAMPLE,
        _ if error.is_some() && !cfg.fail_closed => Threshold::ALWAYS_SAMPLE,
        _ if error.is_some() || never => Threshold::NEVER_SAMPLE,
        (_, Mode::HashSeed) => hash_seed_threshold(pct),
        (_, Mode::Equalizing) => {
            let own = Threshold::from_probability_with_precision(ratio, cfg.sampling_precision)
                .unwrap_or(Threshold::ALWAYS_SAMPLE);
            incoming.filter(|&t| t > own).unwrap_or(own)
        }
        (_, Mode::Proportional) => {
            let p = incoming.map_or(1.0, |t| t.probability()) * ratio;
            Threshold::from_probability_with_precision(p, cfg.sampling_precision)
                .unwrap_or(Threshold::NEVER_SAMPLE)
        }
    };
    let sampled = threshold.should_sample(rnd.unwrap_or(ALL_RANDOMNESS));
    let new_tracestate = match carrier {
        Some(mut ts) if sampled => {
            ts.update_threshold(threshold);
            Some(ts.render()).filter(|s| s != tracestate)
        }
        _ => None,
    };
    Ok(Decision {
        sampled,
        new_tracestate,
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tid(h: &str) -> [u8; 16] {
        let h = format!("{h:0>32}"); // a bare 14-digit randomness is padded with zeros
        std::array::from_fn(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap())
    }
    fn cfg(percentage: f32) -> Decider {
        Decider {
            percentage,
            ..Decider::default()
        }
    }
    const BASE: &str = "0af7651916cd43dd8448eb21";

    #[test]
    fn hash_rate_and_threshold() {
        // Collector TestEmptyHashFunction: seed 0 over nothing → 0x4b95f515 (bucket 0x3515),
        // over 16 zero bytes → 0xb9fee455 (bucket 0x2455).
        let (empty, zeros) = (fnv1a32(0, &[]), fnv1a32(0, &[0; 16]));
        assert_eq!((empty, zeros & HASH_MASK), (0x4b95_f515, 0x2455));
        // f32(163.84) = 163.83999633789062: x20 = 3276.7998 → 3276, x10 = 1638.3999 → 1638,
        // x100 = 16383.9996 → rounds (f32) to 16384.0, x0.006 = 0.98304 → 0 (never).
        let pcts = [
            100.0,
            200.0,
            75.0,
            50.0,
            25.0,
            20.0,
            10.0,
            100.0 / 3.0,
            1.0,
            0.01,
            0.006,
        ];
        let rates = pcts.map(hash_seed_scaled_rate);
        assert_eq!(
            rates,
            [16384, 16384, 12288, 8192, 4096, 3276, 1638, 5461, 163, 1, 0]
        );
        assert_eq!([0.0, -5.0, f32::NAN].map(hash_seed_scaled_rate), [0; 3]);
        // th = (16384 - rate) << 42: 20% → 13108 = 0x3334, << 2 = 0xccd0 → "ccd"; 10% → 0x399a
        // → "e668"; 1/3 → 0x2aab → "aaac" (as in the Collector's HashSeedTraceState test).
        let ths = pcts.map(|p| hash_seed_threshold(p).tvalue());
        let want = [
            "0", "0", "4", "8", "c", "ccd", "e668", "aaac", "fd74", "fffc", "",
        ];
        assert_eq!(ths, want);
    }

    #[test]
    fn hash_seed_buckets() {
        // seed 0, id = BASE + suffix; FNV-1a, bucket = hash & 0x3fff:
        //   00000323 → 0x98cdcccb → 3275    00001c07 → 0xecd50ccc → 3276   (20%: rate 3276)
        //   00000969 → 0x56b55fff → 8191    00003d50 → 0x36216000 → 8192   (50%: rate 8192)
        //   000011d4 → 0xb9ef0000 → 0       00004a60 → 0x4f1e3fff → 16383
        let hs = |sfx: &str, pct| hash_seed_sampled(0, pct, &tid(&format!("{BASE}{sfx}")));
        assert!(hs("00000323", 20.0) && !hs("00001c07", 20.0));
        assert!(hs("00000969", 50.0) && !hs("00003d50", 50.0));
        assert!(hs("000011d4", 0.01) && !hs("00000323", 0.01)); // rate 1: bucket 0 only
        assert!(hs("00004a60", 100.0) && !hs("00004a60", 99.99) && !hs("000011d4", 0.006));
        // Collector TestHashingFunction rows at 50% (seed, id): 653 → 0x8def016f, bucket 367,
        // in; 904 → 0x79e63465, 13413, out; 22 → 0x404f7404, 13316, out; 92 → 0x51864bde, 3038, in.
        let rows = [
            (653, "474a03c76d75951a4b4c537ced8f1122", true),
            (904, "4e40762d3ee97a1c0932e4fa584f89a8", false),
            (22, "66a66c516ac22054673e5da5e6492545", false),
            (92, "eb60d98b8f8fe22d8970f44f0e2b6bad", true),
        ];
        for (seed, id, want) in rows {
            assert_eq!(hash_seed_sampled(seed, 50.0, &tid(id)), want, "{id}");
            // The 56-bit form (threshold <= synthetic randomness) agrees at every rate.
            let r = hash_randomness(seed, &tid(id));
            for pct in [0.01, 1.0, 20.0, 50.0, 99.0, 100.0] {
                let th = hash_seed_threshold(pct);
                assert_eq!(th.should_sample(r), hash_seed_sampled(seed, pct, &tid(id)));
            }
        }
        // rv for BASE+00000323: top 14 bits 16383-3275 = 0x3334; unused bits 0x98cdcccb >> 14
        // = 0x26337, mixed 0x26337 ^ (0x26337 << 10) = 0x98ebf37; low 14 bits 3275 = 0xccb.
        let rv = hash_randomness(0, &tid(&format!("{BASE}00000323")));
        assert_eq!(rv, 0x00cc_d263_afcd_cccb);
        // Logs: seed 7 over "log-123" → 0xdb8c8441, bucket 1089: in at 10% (1638), out at 5%.
        assert!(hash_seed_sampled_bytes(7, 10.0, b"log-123"));
        assert!(!hash_seed_sampled_bytes(7, 5.0, b"log-123"));
    }

    #[test]
    fn thresholds_from_probability() {
        let tv = |p: f64, digits| Threshold::from_probability_with_precision(p, digits).unwrap();
        let tvs = |p: f64, ds: &[u8]| ds.iter().map(|&d| tv(p, d).tvalue()).collect::<Vec<_>>();
        let one_minus = |n: u64, bits: i32| 1.0 - n as f64 / 2f64.powi(bits);
        // probability_test.go: precision counts digits after the leading zeros.
        let p = one_minus(0x456789a, 28);
        let want = ["456789a", "45678a", "45679", "4568", "4"];
        assert_eq!(tvs(p, &[14, 6, 5, 4, 1]), want);
        let p = one_minus(0x456789a, 40); // 3 leading zeros add 3 digits
        assert_eq!(tvs(p, &[14, 4]), ["000456789a", "0004568"]);
        let p = one_minus(0x789abcdef, 40);
        assert_eq!(tvs(p, &[8, 3, 2, 1]), ["0789abcdf", "078a", "079", "08"]);
        assert_eq!(
            tvs(one_minus(0x80801, 28), &[5, 3, 1]),
            ["0080801", "00808", "008"]
        );
        let thirds = [1.0 / 3.0, 2.0 / 3.0, 1.0].map(|p| tv(p, 3).tvalue());
        assert_eq!(thirds, ["aab", "555", "0"]);
        assert_eq!(tvs(1.0 / 3.0, &[14]), ["aaaaaaaaaaaaac"]);
        let min = MIN_SAMPLING_PROBABILITY;
        assert_eq!(tvs(min, &[3]), ["ffffffffffffff"]);
        assert_eq!(tvs(16.0 * min, &[3]), ["fffffffffffff"]);
        // Configured ratios f64(pct)/100: 0.1 → 0.9 * 2^56 = 0xe6666666666666.6 → "e666";
        // f32(33.333332)/100 → 0xaaaaaae147ae14 → "aaab"; 0.01 → 0xfd70a3d70a3d71, where
        // frexp(0.01) = -6 adds a digit → "fd70a", and 3+1 digits → "fd71" (Collector tests).
        let r = |pct: f32, d| tv(f64::from(pct) / 100.0, d).tvalue();
        let got = [
            r(50.0, 4),
            r(25.0, 4),
            r(10.0, 4),
            r(100.0 / 3.0, 4),
            r(1.0, 4),
            r(1.0, 3),
        ];
        assert_eq!(got, ["8", "c", "e666", "aaab", "fd70a", "fd71"]);
        let got = [r(40.0, 3), r(40.0, 6), r((1.0 - 8e-7) * 100.0, 10)];
        assert_eq!(got, ["99a", "99999a", "00000cccccccd"]);
        for bad in [0.0, -1.0, 1.000_000_1, f64::NAN, min / 2.0] {
            assert_eq!(Threshold::from_probability(bad), None);
        }
    }

    #[test]
    fn tvalue_and_rvalue_parsing() {
        let th = Threshold::parse_tvalue;
        assert_eq!(th("8").map(|t| t.unsigned()), Some(0x80_0000_0000_0000));
        assert_eq!(th("C"), th("c0000000000000"));
        for bad in ["", "abababababababab", "-1", "g", "+8", "0x8"] {
            assert_eq!(th(bad), None, "{bad}");
        }
        let (t, c) = (th("80000000000000").unwrap(), th("c").unwrap());
        assert_eq!(
            (t.tvalue(), t.probability(), c.probability()),
            ("8".into(), 0.5, 0.25)
        );
        assert!(t.should_sample(0x80_0000_0000_0000) && !t.should_sample(0x7f_ffff_ffff_ffff));
        let (always, never) = (Threshold::ALWAYS_SAMPLE, Threshold::NEVER_SAMPLE);
        assert_eq!((always.probability(), never.probability()), (1.0, 0.0));
        assert_eq!(Threshold::from_unsigned(MAX_ADJUSTED_COUNT), None);
        let id = tid("fefefefefefefefefe80000000000000");
        assert_eq!(randomness_from_trace_id(&id), 0x80_0000_0000_0000);
        assert_eq!(parse_rv("FD70A3D70A3D71"), Some(0xfd_70a3_d70a_3d71));
        let bad = ["fd70a3d70a3d7", "abababababababab", "fd70a3d70a3d7g"];
        assert_eq!(bad.map(parse_rv), [None; 3]);
    }

    #[test]
    fn tracestate_parse_and_render() {
        let input = " congo=t61rcWkgMzE ,, ot=th:8;x:1;rv:90000000000000 ,rojo=00f067aa0ba902b7";
        let mut ts = OtelTraceState::parse(input).unwrap();
        assert_eq!(ts.threshold(), Threshold::parse_tvalue("8"));
        assert_eq!(ts.randomness(), Some(0x90_0000_0000_0000));
        assert!(!ts.update_threshold(Threshold::ALWAYS_SAMPLE)); // may not raise probability
        assert!(ts.update_threshold(Threshold::parse_tvalue("c").unwrap()));
        let out = "ot=rv:90000000000000;th:c;x:1,congo=t61rcWkgMzE,rojo=00f067aa0ba902b7";
        assert_eq!(ts.render(), out);
        assert_eq!(OtelTraceState::parse("").unwrap().render(), "");
        let last_ot = OtelTraceState::parse("ot=th:8,ot=th:c").unwrap();
        assert_eq!(last_ot.threshold(), Threshold::parse_tvalue("c"));
        assert!(OtelTraceState::parse("1a@b-c=1,a@b=x y,k*/_-=~").is_ok());
        let members = |n: usize| {
            (0..n)
                .map(|i| format!("k{i}=v"))
                .collect::<Vec<_>>()
                .join(",")
        };
        assert!(OtelTraceState::parse(&members(31)).is_ok());
        assert!(OtelTraceState::parse(&format!("ot=x:{}", "a".repeat(254))).is_ok());
        use TraceStateError::*;
        let cases = [
            (members(32), Size), // the Collector refuses a 32nd member
            (format!("a={}", "x".repeat(1030)), Size),
            (format!("k{}=1", "a".repeat(256)), Size),
            (format!("ot=x:{}", "a".repeat(255)), Syntax), // W3C value over 256
        ];
        for (input, err) in cases {
            assert_eq!(OtelTraceState::parse(&input), Err(err), "{input}");
        }
        let cases = [
            ("ot=th:abababababababab", TValue),
            ("ot=rv:abababababababab", RValue),
            ("ot=th:-1", TValue),
            ("ot=th:", TValue),
            ("ot=th:8;", OtSyntax),
            ("ot=TH:8", OtSyntax),
            ("ot=th:8:9", OtSyntax),
            ("Ot=th:8", Syntax),
            ("1a=1", Syntax),
            ("a=b=c", Syntax),
            ("a=1,b", Syntax),
        ];
        for (input, err) in cases {
            assert_eq!(OtelTraceState::parse(input), Err(err), "{input}");
        }
    }

    /// One span per line: mode, percent, precision, fail_closed (c/o), trace id (a bare
    /// 14-digit randomness is zero-padded), incoming tracestate (`-` = none), outcome
    /// (`-` = dropped, `=` = kept with the tracestate unchanged, else the new tracestate),
    /// and optionally the logged error. Unless noted, expectations are the Collector's own
    /// (tracesprocessor_test.go) or follow from the thresholds worked out above.
    const CASES: &str = "
        P 50 4 c 80000000000000 - ot=th:8
        P 49 4 c 80000000000000 - -                    th 828f > 80000000000000
        P 25 4 c ddddddddddddddddddc0000000000000 - ot=th:c
        P 25 4 c ddddddddddddddddddb0000000000000 - -
        P 10 4 c e6660000000000 - ot=th:e666           randomness equal to th passes
        P 10 4 c e665ffffffffff - -
        P 100/3 4 c aaab0000000000 a=b ot=th:aaab,a=b
        P 100/3 4 c aaaaffffffffff - -
        P 50 4 c c0000000000000 ot=th:8 ot=th:c        incoming 0.5 * 0.5 = 0.25
        P 50 4 c bfffffffffffff ot=th:8 -
        P 40 6 c a0a0a0a0a0a0a0a0a0d0000000000000 ot=th:8 ot=th:cccccd
        P 1 4 c 80000000000000 ot=rv:FD70A3D70A3D71 ot=rv:FD70A3D70A3D71;th:fd70a
        P 1 3 c 80000000000000 ot=rv:FD70A3D70A3D71 -  fd71 > rv
        P 25 4 c 01000000000000000000000000000000 - -
        P 25 4 c 01000000000000000000000000000000 ot=rv:c0000000000000 ot=rv:c0000000000000;th:c
        P 0.0625 4 c ffffffffffffff ot=th:fffffffffffff8 -  2^-53 * 0.000625 < 2^-56
        P 150 4 c 80000000000000 - ot=th:0
        E 25 4 c ffffffffffffff ot=th:8 ot=th:c
        E 25 4 c ffffffffffffff ot=th:e =               keeps the larger incoming th
        E 25 4 c ffffffffffffff - ot=th:c
        E 50 4 c 80000000000000 ot=rv:c0000000000000;th:8 =
        E 50 4 c 80000000000000 ot=rv:90000000000000;th:80000000000000 ot=rv:90000000000000;th:8
        E 40 6 c a0a0a0a0a0a0a0a0a0d0000000000000 ot=th:8 ot=th:99999a
        E 0.0625 4 c ffffffffffffff ot=th:fffffffffffff8 =
        H 20 4 c 0af7651916cd43dd8448eb2100000323 - ot=rv:ccd263afcdcccb;th:ccd
        H 20 4 c 0af7651916cd43dd8448eb2100000323 congo=t61rcWkgMzE ot=rv:ccd263afcdcccb;th:ccd,congo=t61rcWkgMzE
        H 20 4 c 0af7651916cd43dd8448eb2100001c07 - -
        H 20 4 c 0af7651916cd43dd8448eb2100000323 ot=th:0 - ThresholdInUse
        H 20 4 o 0af7651916cd43dd8448eb2100000323 ot=th:0 = ThresholdInUse
        H 20 4 o 0af7651916cd43dd8448eb2100000323 ot=rv:00000000000000 = RandomnessInUse
        H 100 4 c 0 - - MissingRandomness
        H 100 4 o 0 - ot=rv:ffffffffffffff;th:0 MissingRandomness  (all-ones rv, as the Collector)
        P 50 4 c 80000000000000 ot=th:zz - TraceState(TValue)
        P 50 4 o 80000000000000 ot=th:zz = TraceState(TValue)
        P 100 4 o 80000000000000 ot=rv:40000000000000;th:8 ot=rv:40000000000000;th:0 InconsistentThreshold
        E 1 4 c 80000000000000 ot=rv:40000000000000;th:8 - InconsistentThreshold
        P 62 4 c 0 - - MissingRandomness
        P 62 4 o 0 - ot=th:0 MissingRandomness
        P 0 4 o 0 - -                                  0% skips the randomness check
    ";

    #[test]
    fn decisions() {
        for line in CASES.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let mode = match f[0] {
                "H" => Mode::HashSeed,
                "P" => Mode::Proportional,
                _ => Mode::Equalizing,
            };
            let percentage = match f[1].split_once('/') {
                Some((a, b)) => a.parse::<f32>().unwrap() / b.parse::<f32>().unwrap(),
                None => f[1].parse().unwrap(),
            };
            let (sampling_precision, fail_closed) = (f[2].parse().unwrap(), f[3] == "c");
            let c = Decider {
                percentage,
                sampling_precision,
                fail_closed,
                hash_seed: 0,
            };
            let ts = if f[5] == "-" { "" } else { f[5] };
            let d = decide(mode, &c, &tid(f[4]), ts).unwrap();
            let got = match (d.sampled, d.new_tracestate) {
                (false, None) => "-".to_string(),
                (true, None) => "=".to_string(),
                (_, Some(s)) => s,
            };
            assert_eq!(got, f[6], "{line}");
            let err = d.error.map(|e| format!("{e:?}"));
            let want = f
                .get(7)
                .filter(|w| w.chars().next().is_some_and(char::is_uppercase));
            assert_eq!(err.as_deref(), want.copied(), "{line}");
        }
    }

    #[test]
    fn priority_and_config() {
        let id = &tid("80000000000000");
        for mode in [Mode::HashSeed, Mode::Proportional, Mode::Equalizing] {
            let must = decide_with_priority(mode, &cfg(0.0), id, "", Priority::MustSample);
            assert_eq!(must.unwrap().new_tracestate.as_deref(), Some("ot=th:0"));
            let not = decide_with_priority(mode, &cfg(100.0), id, "", Priority::DoNotSample);
            assert!(!not.unwrap().sampled);
        }
        let err = |c: Decider| decide(Mode::Proportional, &c, id, "").unwrap_err();
        let bad = [
            err(cfg(f32::NAN)),
            err(cfg(-1.0)),
            err(cfg(1e-20)),
            err(cfg(f32::INFINITY)),
        ];
        assert_eq!(bad, [DecideError::InvalidPercentage; 4]);
        let imprecise = Decider {
            sampling_precision: 15,
            ..cfg(5.0)
        };
        assert_eq!(err(imprecise), DecideError::InvalidPrecision);
    }

    #[test]
    fn odd_inputs_do_not_panic() {
        let long = "ot=th:8,".repeat(200);
        let odd = [
            "ot=",
            "ot=;",
            "ot=rv:",
            "=,=,",
            ",,,",
            "a=\u{e9}",
            "\u{1f600}",
            " \t",
            &long,
        ];
        for ts in odd {
            for mode in [Mode::HashSeed, Mode::Proportional, Mode::Equalizing] {
                for fail_closed in [true, false] {
                    let c = Decider {
                        fail_closed,
                        ..cfg(37.5)
                    };
                    assert!(decide(mode, &c, &[0xab; 16], ts).is_ok());
                }
            }
        }
    }
}
