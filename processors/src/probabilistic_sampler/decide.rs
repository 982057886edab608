//! Sampling decisions of the Collector's `probabilistic_sampler`, bit for bit.
//!
//! Everything here is pure and std-only. It follows opentelemetry-collector-contrib
//! `processor/probabilisticsamplerprocessor` (sampler_mode.go, tracesprocessor.go,
//! logsprocessor.go, fnvhasher.go, config.go, factory.go, README.md) and `pkg/sampling`
//! (threshold.go, probability.go, randomness.go, w3ctracestate.go, oteltracestate.go,
//! common.go), as of the current main branch. What the code there does:
//!
//! * Defaults (factory.go, README): `mode` unset, `sampling_precision` 4, `fail_closed`
//!   true, `hash_seed` 0, `sampling_percentage` 0. An unset mode resolves to `hash_seed`.
//!   (One earlier revision made proportional the default; the current one, and its README,
//!   say hash_seed.) Config validation rejects NaN/inf, negative percentages, ratios below
//!   2^-56 other than 0, and precision outside 1..=14. Percentages above 100 count as 100.
//!   A percentage of 0 never samples, whatever the mode.
//! * hash_seed: FNV-1a 32 over the seed (4 bytes, little-endian) and then the bytes (the
//!   trace id, or for logs the trace id or a record attribute's bytes). bucket = hash &
//!   0x3fff. The rate is `uint32(pct * 163.84)`, worked in float32 and truncated. A span is
//!   sampled when `bucket < rate`. A rate of 0 never samples. Newer revisions state this as
//!   a 56-bit threshold `(16384 - rate) << 42`, and as a synthetic randomness whose top
//!   14 bits are `16383 - bucket` (see [`hash_randomness`]). The result is the same. A
//!   span with no `rv`/`th` that gets sampled leaves with BOTH `rv` (the synthetic value)
//!   and `th` (e.g. 20% gives `th:ccd`, 10% `th:e668`). If the incoming tracestate already
//!   has `rv` or `th`, that counts as an error, so `fail_closed` decides and the
//!   tracestate stays as it is. An all-zero trace id counts as missing randomness.
//! * proportional: the incoming probability (from `th`, else 1) times the ratio
//!   (`f64(pct)/100`, raised to at least 2^-56) goes through
//!   ProbabilityToThresholdWithPrecision with `sampling_precision`. If the product falls
//!   below 2^-56, the item is not sampled.
//! * equalizing: the configured threshold, or the incoming one if that is larger.
//! * Randomness: `rv` when present (it overrides the trace id), else the last 7 bytes of
//!   the trace id. Sampled iff threshold <= randomness.
//! * Errors (a tracestate that doesn't parse, missing randomness, an incoming `th` above
//!   the randomness, or `rv`/`th` seen in hash_seed mode): with fail_closed the item is
//!   dropped; without it, the item is kept. When an incoming `th` is inconsistent it is
//!   cleared first, so a fail-open pass writes `th:0`.
//! * When an item is sampled and its tracestate parsed, the Collector rewrites the
//!   tracestate. `th` is only replaced if that does not raise the probability (an
//!   incoming `th` larger than the new one is kept). The `ot` entry goes first, as
//!   `rv`, then `th`, then its other sub-keys in order. Other vendors keep their order.
//!   Blank members and whitespace around members are dropped.
//! * `sampling.priority` (traces): 0 forces "never", > 0 forces "always". This overrides
//!   even fail_closed. See [`Priority`].
//!
//! Known deviation: with percentage 0 the Collector uses a "never" sampler. In fail-open
//! mode, if the tracestate doesn't parse, the Collector re-serialises the partly parsed
//! state. Here that tracestate is left untouched.
//!
//! Logs are only partly covered: log records carry `sampling.threshold`/
//! `sampling.randomness` attributes instead of a tracestate. The hashing is
//! [`hash_seed_sampled_bytes`]/[`hash_randomness`], and an empty attribute value counts as
//! missing randomness.

use std::fmt;

/// 2^56: the number of distinct randomness values, and the "never" threshold.
const MAX_ADJUSTED_COUNT: u64 = 1 << 56;
/// Randomness used when there is none (every threshold but "never" passes it).
const ALL_RANDOMNESS: u64 = MAX_ADJUSTED_COUNT - 1;
/// Smallest sampling probability a threshold can express.
pub const MIN_SAMPLING_PROBABILITY: f64 = 1.0 / MAX_ADJUSTED_COUNT as f64;
const HASH_BUCKETS: u32 = 0x4000;
const HASH_MASK: u32 = HASH_BUCKETS - 1;
/// 16384 / 100, rounded to f32 as the Go constant is when multiplied with a float32.
const PERCENT_SCALE: f32 = 163.84;
const MAX_W3C_LEN: usize = 1024;
const MAX_W3C_MEMBERS: usize = 32;
const MAX_KEY_LEN: usize = 256;
const MAX_OT_LEN: usize = 256;

fn fnv1a32(seed: u32, data: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in seed.to_le_bytes().iter().chain(data) {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    h
}

/// The hash_seed acceptance rate out of 16384: `uint32(float32(pct) * float32(163.84))`
/// after clamping to 100; 0 for zero, negative or NaN percentages.
pub fn hash_seed_scaled_rate(percentage: f32) -> u32 {
    if !(percentage > 0.0) {
        return 0;
    }
    (percentage.min(100.0) * PERCENT_SCALE) as u32
}

/// hash_seed decision for a trace id (the pure hash test; see [`decide`] for the
/// all-zero-id and tracestate rules).
pub fn hash_seed_sampled(seed: u32, percentage: f32, trace_id: &[u8; 16]) -> bool {
    hash_seed_sampled_bytes(seed, percentage, trace_id)
}

/// hash_seed decision over arbitrary bytes (a log attribute value: a string's UTF-8
/// bytes, or raw bytes for a bytes value). Logs use the same hash as traces.
pub fn hash_seed_sampled_bytes(seed: u32, percentage: f32, key: &[u8]) -> bool {
    (fnv1a32(seed, key) & HASH_MASK) < hash_seed_scaled_rate(percentage)
}

/// The 56-bit threshold that hash_seed mode writes as `th`.
pub fn hash_seed_threshold(percentage: f32) -> Threshold {
    match hash_seed_scaled_rate(percentage) {
        0 => Threshold::NEVER_SAMPLE,
        rate => Threshold(u64::from(HASH_BUCKETS - rate) << 42),
    }
}

/// The synthetic 56-bit randomness of hash_seed mode (written as `rv`). Top 14 bits:
/// `16383 - bucket`. Next 28: the 18 unused hash bits xor themselves shifted left by 10.
/// Low 14: the bucket.
pub fn hash_randomness(seed: u32, key: &[u8]) -> u64 {
    let h = fnv1a32(seed, key);
    let bucket = u64::from(h & HASH_MASK);
    let unused = u64::from(h >> 14);
    ((u64::from(HASH_MASK) - bucket) << 42) | ((unused ^ (unused << 10)) << 14) | bucket
}

/// A rejection threshold out of 2^56: 0 samples everything, 2^56 nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Threshold(u64);

fn parse_hex(s: &str) -> Option<u64> {
    s.bytes().try_fold(0u64, |acc, b| Some((acc << 4) | u64::from((b as char).to_digit(16)?)))
}

/// Binary exponent as Go's `math.Frexp` reports it (x = f * 2^e with f in [0.5, 1)).
fn frexp_exp(x: f64) -> i32 {
    if x == 0.0 || !x.is_finite() {
        return 0;
    }
    match ((x.to_bits() >> 52) & 0x7ff) as i32 {
        0 => frexp_exp(x * (1u64 << 54) as f64) - 54,
        e => e - 1022,
    }
}

impl Threshold {
    pub const ALWAYS_SAMPLE: Threshold = Threshold(0);
    pub const NEVER_SAMPLE: Threshold = Threshold(MAX_ADJUSTED_COUNT);

    /// A threshold from its raw value; `None` at or above 2^56.
    pub fn from_unsigned(value: u64) -> Option<Threshold> {
        (value < MAX_ADJUSTED_COUNT).then_some(Threshold(value))
    }

    pub fn unsigned(&self) -> u64 {
        self.0
    }

    /// ProbabilityToThreshold: full (14-digit) precision.
    pub fn from_probability(p: f64) -> Option<Threshold> {
        Self::from_probability_with_precision(p, 14)
    }

    /// ProbabilityToThresholdWithPrecision. `None` unless 2^-56 <= p <= 1. Precision 0
    /// means 14. One digit is added per 4 binary orders of magnitude that `p` or `1 - p`
    /// lie below 1 (leading `f`s or `0`s), then the threshold is rounded half-up to
    /// that many hex digits.
    pub fn from_probability_with_precision(p: f64, precision: u8) -> Option<Threshold> {
        if !(MIN_SAMPLING_PROBABILITY..=1.0).contains(&p) {
            return None;
        }
        if p == 1.0 {
            return Some(Self::ALWAYS_SAMPLE);
        }
        let base = if precision == 0 || precision > 14 { 14 } else { i32::from(precision) };
        let digits = (base + frexp_exp(p) / -4).max(base + frexp_exp(1.0 - p) / -4).min(14);
        let scaled = (p * MAX_ADJUSTED_COUNT as f64).round() as u64;
        let mut th = MAX_ADJUSTED_COUNT - scaled.min(MAX_ADJUSTED_COUNT);
        let shift = 4 * (14 - digits) as u32;
        if shift != 0 {
            th = ((th + (1u64 << (shift - 1))) >> shift) << shift;
        }
        Some(Threshold(th))
    }

    /// The `th` encoding: 14 hex digits with trailing zeros trimmed; "0" for always,
    /// "" for never (which the Collector never writes).
    pub fn tvalue(&self) -> String {
        match self.0 {
            0 => "0".to_string(),
            t if t >= MAX_ADJUSTED_COUNT => String::new(),
            t => {
                let mut s = format!("{t:014x}");
                s.truncate(s.trim_end_matches('0').len());
                s
            }
        }
    }

    /// Parses a `th` value: 1 to 14 hex digits (either case), padded with zeros on the right.
    pub fn parse_tvalue(s: &str) -> Option<Threshold> {
        if s.is_empty() || s.len() > 14 {
            return None;
        }
        Some(Threshold(parse_hex(s)? << (4 * (14 - s.len()))))
    }

    /// The consistent sampling test `T <= R`.
    pub fn should_sample(&self, randomness: u64) -> bool {
        self.0 <= randomness
    }

    /// Sampling probability `(2^56 - T) / 2^56`.
    pub fn probability(&self) -> f64 {
        MAX_ADJUSTED_COUNT.saturating_sub(self.0) as f64 / MAX_ADJUSTED_COUNT as f64
    }
}

/// W3C randomness of a trace id: its last 7 bytes, big-endian.
pub fn randomness_from_trace_id(trace_id: &[u8; 16]) -> u64 {
    trace_id[9..].iter().fold(0, |acc, &b| (acc << 8) | u64::from(b))
}

/// Parses an `rv` value: exactly 14 hex digits (either case).
pub fn parse_rv(s: &str) -> Option<u64> {
    if s.len() == 14 {
        parse_hex(s)
    } else {
        None
    }
}

/// Why a tracestate was refused (the Collector's size/syntax/value errors).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceStateError {
    /// Over 1024 bytes, too many members, or an over-long key, tenant or system id.
    Size,
    /// A member is not `key=value` by the W3C grammar.
    Syntax,
    /// The `ot` value is over 256 bytes.
    OtSize,
    /// The `ot` value is not `key:value;...` with keys `[a-z][a-z0-9]*` and values
    /// `[A-Za-z0-9._-]*`.
    OtSyntax,
    /// `rv` is not 14 hex digits.
    RValue,
    /// `th` is not 1 to 14 hex digits.
    TValue,
}

impl fmt::Display for TraceStateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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

fn is_key_char(b: &u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'*' | b'/')
}

fn valid_w3c_key(key: &str) -> bool {
    let ok = |s: &[u8], first: fn(&u8) -> bool| {
        s.split_first().is_some_and(|(f, rest)| first(f) && rest.iter().all(is_key_char))
    };
    match key.split_once('@') {
        Some((tenant, system)) => {
            ok(tenant.as_bytes(), |b| b.is_ascii_lowercase() || b.is_ascii_digit())
                && ok(system.as_bytes(), u8::is_ascii_lowercase)
        }
        None => ok(key.as_bytes(), u8::is_ascii_lowercase),
    }
}

fn valid_w3c_value(v: &str) -> bool {
    let nonblank = |b: u8| (0x21..=0x7e).contains(&b) && b != b',' && b != b'=';
    let b = v.as_bytes();
    b.last().is_some_and(|&l| nonblank(l)) && b.len() <= 256
        && b.iter().all(|&c| c == b' ' || nonblank(c))
}

fn valid_ot_value(v: &str) -> bool {
    !v.is_empty()
        && !v.ends_with(';')
        && v.split(';').all(|m| match m.split_once(':') {
            Some((k, val)) => {
                k.as_bytes().split_first().is_some_and(|(f, r)| {
                    f.is_ascii_lowercase() && r.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                }) && val.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
            }
            None => false,
        })
}

/// A parsed W3C tracestate with its OpenTelemetry (`ot`) entry decoded. Borrows the
/// input; only [`OtelTraceState::render`] allocates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtelTraceState<'a> {
    raw: &'a str,
    ot: Option<&'a str>,
    rv: Option<u64>,
    /// The incoming `rv` text, written back verbatim (e.g. in upper case) unless replaced.
    rv_text: Option<&'a str>,
    th: Option<Threshold>,
    th_text: Option<&'a str>,
}

impl<'a> OtelTraceState<'a> {
    /// Parses a full tracestate with the Collector's rules (NewW3CTraceState). Note
    /// that, as in the Collector, a 32nd list member (blank ones count) is refused. If
    /// several `ot` entries are present, the last one is used.
    pub fn parse(input: &'a str) -> Result<Self, TraceStateError> {
        let mut st = OtelTraceState { raw: input, ot: None, rv: None, rv_text: None, th: None, th_text: None };
        if input.is_empty() {
            return Ok(st);
        }
        if input.len() > MAX_W3C_LEN {
            return Err(TraceStateError::Size);
        }
        for member in input.split(',').map(trim_ows).filter(|m| !m.is_empty()) {
            match member.split_once('=') {
                Some((k, v)) if valid_w3c_key(k) && valid_w3c_value(v) => {}
                _ => return Err(TraceStateError::Syntax),
            }
        }
        let (mut rest, mut items, mut err) = (input, 0, None);
        while !rest.is_empty() {
            items += 1;
            if items >= MAX_W3C_MEMBERS {
                return Err(TraceStateError::Size);
            }
            let (member, next) = rest.split_once(',').unwrap_or((rest, ""));
            rest = next;
            let Some((key, value)) = trim_ows(member).split_once('=') else { continue };
            let too_long = key.len() > MAX_KEY_LEN
                || key.split_once('@').is_some_and(|(t, s)| t.len() > 241 || s.len() > 14);
            if too_long {
                err = err.or(Some(TraceStateError::Size));
            } else if key == "ot" {
                if let Err(e) = st.parse_ot(value) {
                    err = err.or(Some(e));
                }
            }
        }
        err.map_or(Ok(st), Err)
    }

    fn parse_ot(&mut self, value: &'a str) -> Result<(), TraceStateError> {
        (self.ot, self.rv, self.rv_text, self.th, self.th_text) = (Some(value), None, None, None, None);
        if value.len() > MAX_OT_LEN {
            return Err(TraceStateError::OtSize);
        }
        if !valid_ot_value(value) {
            return Err(TraceStateError::OtSyntax);
        }
        let mut err = Ok(());
        for (k, v) in value.split(';').filter_map(|m| m.split_once(':')) {
            match k {
                "rv" => {
                    self.rv = parse_rv(v);
                    self.rv_text = self.rv.map(|_| v);
                    if self.rv.is_none() {
                        err = err.and(Err(TraceStateError::RValue));
                    }
                }
                "th" => {
                    self.th = Threshold::parse_tvalue(v);
                    self.th_text = self.th.map(|_| v);
                    if self.th.is_none() {
                        err = err.and(Err(TraceStateError::TValue));
                    }
                }
                _ => {}
            }
        }
        err
    }

    /// The `rv` value, if any.
    pub fn randomness(&self) -> Option<u64> {
        self.rv
    }

    /// The `th` value, if any.
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

    /// UpdateTValueWithSampling: replaces `th` unless that would raise the sampling
    /// probability (incoming `th` greater than `th`), in which case it returns false and
    /// changes nothing. "Never" removes `th`.
    pub fn update_threshold(&mut self, th: Threshold) -> bool {
        if self.th.is_some_and(|old| old > th) {
            return false;
        }
        self.th = (th != Threshold::NEVER_SAMPLE).then_some(th);
        self.th_text = None;
        true
    }

    fn ot_extras(&self) -> impl Iterator<Item = &'a str> {
        self.ot.unwrap_or("").split(';').filter(|m| !m.is_empty() && !m.starts_with("rv:") && !m.starts_with("th:"))
    }

    /// Serialises like the Collector: `ot` first (`rv`, `th`, other sub-keys), then the
    /// other members in order, comma-separated with no whitespace or blank members.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(self.raw.len() + 40);
        let mut parts = self.ot_extras().peekable();
        if self.rv.is_some() || self.th.is_some() || parts.peek().is_some() {
            out.push_str("ot=");
            let mut sep = "";
            if let Some(rv) = self.rv {
                out.push_str("rv:");
                match self.rv_text {
                    Some(t) => out.push_str(t),
                    None => out.push_str(&format!("{rv:014x}")),
                }
                sep = ";";
            }
            if let Some(th) = self.th {
                out.push_str(sep);
                out.push_str("th:");
                match self.th_text {
                    Some(t) => out.push_str(t),
                    None => out.push_str(&th.tvalue()),
                }
                sep = ";";
            }
            for extra in parts {
                out.push_str(sep);
                out.push_str(extra);
                sep = ";";
            }
        }
        for member in self.raw.split(',').map(trim_ows).filter(|m| !m.is_empty()) {
            if member.split_once('=').is_some_and(|(k, _)| k != "ot") {
                if !out.is_empty() {
                    out.push(',');
                }
                out.push_str(member);
            }
        }
        out
    }
}

/// The `mode` setting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// The Collector's choice when `mode` is unset.
    #[default]
    HashSeed,
    Proportional,
    Equalizing,
}

/// The `sampling.priority` span attribute: 0 → `DoNotSample`, > 0 → `MustSample`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Priority {
    #[default]
    Defer,
    MustSample,
    DoNotSample,
}

/// The processor settings that take part in a decision.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Decider {
    pub percentage: f32,
    pub hash_seed: u32,
    pub sampling_precision: u8,
    pub fail_closed: bool,
}

impl Default for Decider {
    fn default() -> Self {
        Decider { percentage: 0.0, hash_seed: 0, sampling_precision: 4, fail_closed: true }
    }
}

/// A configuration the Collector would refuse at startup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecideError {
    /// NaN, infinite, negative, or a nonzero ratio below 2^-56.
    InvalidPercentage,
    /// `sampling_precision` outside 1..=14.
    InvalidPrecision,
}

impl fmt::Display for DecideError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::InvalidPercentage => "sampling_percentage must be 0 or between 2^-56 and 100 percent",
            Self::InvalidPrecision => "sampling_precision must be between 1 and 14",
        })
    }
}

impl std::error::Error for DecideError {}

impl Decider {
    /// Config.Validate, for the fields used here.
    pub fn validate(&self) -> Result<(), DecideError> {
        let ratio = f64::from(self.percentage) / 100.0;
        if !ratio.is_finite() || ratio < 0.0 || (ratio != 0.0 && ratio < MIN_SAMPLING_PROBABILITY) {
            return Err(DecideError::InvalidPercentage);
        }
        if !(1..=14).contains(&self.sampling_precision) {
            return Err(DecideError::InvalidPrecision);
        }
        Ok(())
    }
}

/// Why the Collector fell back to `fail_closed` for an item (it logs these).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SampleError {
    TraceState(TraceStateError),
    /// All-zero trace id and no `rv`.
    MissingRandomness,
    /// The incoming `th` is above the randomness: the item should not have been sampled.
    InconsistentThreshold,
    /// hash_seed mode met an incoming `rv`.
    RandomnessInUse,
    /// hash_seed mode met an incoming `th`.
    ThresholdInUse,
}

/// The outcome for one span.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub sampled: bool,
    /// The tracestate to write when it changed; `None` keeps the incoming one.
    pub new_tracestate: Option<String>,
    pub error: Option<SampleError>,
}

/// [`decide_with_priority`] without a `sampling.priority` attribute.
pub fn decide(mode: Mode, cfg: &Decider, trace_id: &[u8; 16], tracestate: &str) -> Result<Decision, DecideError> {
    decide_with_priority(mode, cfg, trace_id, tracestate, Priority::Defer)
}

/// The Collector's per-span decision (commonShouldSampleLogic with the span carrier).
/// `Err` only for a configuration the Collector would not start with.
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
    let mut error = None;
    let mut carrier = None;
    // None means missing randomness. The never sampler skips the randomness checks.
    let mut rnd = if never {
        Some(ALL_RANDOMNESS)
    } else if mode == Mode::HashSeed {
        (!id_missing).then(|| hash_randomness(cfg.hash_seed, trace_id))
    } else {
        None
    };
    match OtelTraceState::parse(tracestate) {
        Err(e) => error = Some(SampleError::TraceState(e)),
        Ok(ts) if never => carrier = Some(ts),
        Ok(mut ts) if mode == Mode::HashSeed => {
            if ts.randomness().is_some() {
                error = Some(SampleError::RandomnessInUse);
            } else if ts.threshold().is_some() {
                error = Some(SampleError::ThresholdInUse);
            } else {
                // Missing randomness is written too (as all ones), as the Collector does.
                ts.set_randomness(rnd.unwrap_or(ALL_RANDOMNESS));
                carrier = Some(ts);
            }
        }
        Ok(ts) => {
            rnd = ts.randomness().or((!id_missing).then(|| randomness_from_trace_id(trace_id)));
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
    let mut threshold = if error.is_some() {
        if cfg.fail_closed { Threshold::NEVER_SAMPLE } else { Threshold::ALWAYS_SAMPLE }
    } else if never {
        Threshold::NEVER_SAMPLE
    } else {
        match mode {
            Mode::HashSeed => hash_seed_threshold(pct),
            Mode::Equalizing => {
                let own = Threshold::from_probability_with_precision(ratio, cfg.sampling_precision)
                    .unwrap_or(Threshold::ALWAYS_SAMPLE);
                incoming.filter(|&t| t > own).unwrap_or(own)
            }
            Mode::Proportional => {
                let p = incoming.map_or(1.0, |t| t.probability()) * ratio;
                Threshold::from_probability_with_precision(p, cfg.sampling_precision)
                    .unwrap_or(Threshold::NEVER_SAMPLE)
            }
        }
    };
    match priority {
        Priority::Defer => {}
        Priority::MustSample => threshold = Threshold::ALWAYS_SAMPLE,
        Priority::DoNotSample => threshold = Threshold::NEVER_SAMPLE,
    }
    let sampled = threshold.should_sample(rnd.unwrap_or(ALL_RANDOMNESS));
    let new_tracestate = match carrier {
        Some(mut ts) if sampled => {
            ts.update_threshold(threshold);
            Some(ts.render()).filter(|s| s != tracestate)
        }
        _ => None,
    };
    Ok(Decision { sampled, new_tracestate, error })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tid(h: &str) -> [u8; 16] {
        let mut t = [0u8; 16];
        for (i, b) in t.iter_mut().enumerate() {
            *b = u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap();
        }
        t
    }
    fn cfg(percentage: f32) -> Decider {
        Decider { percentage, ..Decider::default() }
    }
    fn run(mode: Mode, c: Decider, id: &str, ts: &str) -> (bool, Option<String>) {
        let d = decide(mode, &c, &tid(id), ts).unwrap();
        (d.sampled, d.new_tracestate)
    }
    fn some(s: &str) -> Option<String> {
        Some(s.to_string())
    }
    const DEFAULT_TID: &str = "fefefefefefefefefe80000000000000"; // randomness 0x80000000000000
    const ALL_F_TID: &str = "111111111111111111ffffffffffffff"; // sampled at any probability
    const BASE: &str = "0af7651916cd43dd8448eb21";

    #[test]
    fn hash_rate_and_threshold() {
        // Collector TestEmptyHashFunction: seed 0, no bytes → 0x4b95f515 (bucket 0x3515);
        // seed 0, 16 zero bytes → 0xb9fee455 (bucket 0x2455).
        assert_eq!(fnv1a32(0, &[]), 0x4b95_f515);
        assert_eq!(fnv1a32(0, &[0; 16]) & HASH_MASK, 0x2455);
        // f32(163.84) = 163.83999633789062. x20 = 3276.7998 → 3276; x10 = 1638.3999 → 1638;
        // x100 = 16383.9996 rounds (f32) to 16384.0; x0.006 = 0.98304 → 0 (never sampler).
        let rates = [(100.0, 16384), (200.0, 16384), (75.0, 12288), (50.0, 8192), (25.0, 4096),
            (20.0, 3276), (10.0, 1638), (100.0 / 3.0, 5461), (1.0, 163), (0.01, 1), (0.006, 0),
            (0.0, 0), (-5.0, 0), (f32::NAN, 0)];
        for (pct, rate) in rates {
            assert_eq!(hash_seed_scaled_rate(pct), rate, "{pct}");
        }
        // th = (16384 - rate) << 42: 20% → 13108 = 0x3334, <<2 = 0xccd0 → "ccd";
        // 10% → 0x399a → "e668"; 1/3 → 0x2aab → "aaac" (Collector HashSeedTraceState test).
        let ths = [(100.0, "0"), (75.0, "4"), (50.0, "8"), (25.0, "c"), (20.0, "ccd"),
            (10.0, "e668"), (100.0 / 3.0, "aaac"), (0.006, "")];
        for (pct, th) in ths {
            assert_eq!(hash_seed_threshold(pct).tvalue(), th, "{pct}");
        }
    }

    #[test]
    fn hash_seed_buckets() {
        // seed 0, id BASE+suffix → FNV-1a → bucket = hash & 0x3fff:
        //   00000323 → 0x98cdcccb → 3275   00001c07 → 0xecd50ccc → 3276   (20%: rate 3276)
        //   00000969 → 0x56b55fff → 8191   00003d50 → 0x36216000 → 8192   (50%: rate 8192)
        //   000011d4 → 0xb9ef0000 → 0      00004a60 → 0x4f1e3fff → 16383
        let hs = |sfx: &str, pct: f32| hash_seed_sampled(0, pct, &tid(&format!("{BASE}{sfx}")));
        assert!(hs("00000323", 20.0) && !hs("00001c07", 20.0));
        assert!(hs("00000969", 50.0) && !hs("00003d50", 50.0));
        assert!(hs("000011d4", 0.01) && !hs("00000323", 0.01)); // rate 1: only bucket 0
        assert!(hs("00004a60", 100.0) && !hs("00004a60", 99.99) && !hs("000011d4", 0.006));
        // Collector TestHashingFunction rows at 50% (seed, id → hash, bucket):
        // 653 → 0x8def016f, 367: yes. 904 → 0x79e63465, 13413: no.
        // 22 → 0x404f7404, 13316: no. 92 → 0x51864bde, 3038: yes.
        let rows = [(653, "474a03c76d75951a4b4c537ced8f1122", true),
            (904, "4e40762d3ee97a1c0932e4fa584f89a8", false),
            (22, "66a66c516ac22054673e5da5e6492545", false),
            (92, "eb60d98b8f8fe22d8970f44f0e2b6bad", true)];
        for (seed, id, want) in rows {
            assert_eq!(hash_seed_sampled(seed, 50.0, &tid(id)), want, "{id}");
            // The 56-bit form (threshold <= synthetic randomness) agrees at every rate.
            for pct in [0.01, 1.0, 20.0, 50.0, 99.0, 100.0] {
                let r = hash_randomness(seed, &tid(id));
                assert_eq!(hash_seed_threshold(pct).should_sample(r), hash_seed_sampled(seed, pct, &tid(id)));
            }
        }
        // Synthetic rv for BASE+00000323: 16383-3275 = 0x3334 in the top 14 bits; unused
        // 18 bits 0x26337, mixed 0x26337 ^ (0x26337 << 10) = 0x98ebf37; low 14 = 3275.
        assert_eq!(hash_randomness(0, &tid(&format!("{BASE}00000323"))), 0xccd2_63af_cdcc_cb);
        // Logs: seed 7 over "log-123" → 0xdb8c8441, bucket 1089 → kept at 10% (rate 1638).
        assert!(hash_seed_sampled_bytes(7, 10.0, b"log-123") && !hash_seed_sampled_bytes(7, 5.0, b"log-123"));
        assert_eq!(hash_randomness(7, b"log-123"), 0xeefb_6ee9_8c84_41);
    }

    #[test]
    fn thresholds_from_probability() {
        let tv = |p: f64, prec: u8| Threshold::from_probability_with_precision(p, prec).unwrap().tvalue();
        // probability_test.go tables (precision = digits after leading zeros).
        let p = 1.0 - 0x456789a as f64 / (1u64 << 28) as f64;
        assert_eq!((tv(p, 14), tv(p, 6), tv(p, 5), tv(p, 4), tv(p, 1)), ("456789a".into(), "45678a".into(), "45679".into(), "4568".into(), "4".into()));
        let p = 1.0 - 0x456789a as f64 / (1u64 << 40) as f64; // 3 leading zeros add 3 digits
        assert_eq!((tv(p, 14), tv(p, 4)), ("000456789a".into(), "0004568".into()));
        let p = 1.0 - 0x789abcdef_u64 as f64 / (1u64 << 40) as f64;
        assert_eq!([tv(p, 8), tv(p, 3), tv(p, 2), tv(p, 1)], ["0789abcdf", "078a", "079", "08"]);
        let p = 1.0 - 0x80801 as f64 / (1u64 << 28) as f64;
        assert_eq!((tv(p, 5), tv(p, 3), tv(p, 1)), ("0080801".into(), "00808".into(), "008".into()));
        assert_eq!((tv(1.0 / 3.0, 3), tv(2.0 / 3.0, 3), tv(1.0, 3)), ("aab".into(), "555".into(), "0".into()));
        assert_eq!(tv(1.0 / 3.0, 14), "aaaaaaaaaaaaac");
        assert_eq!((tv(MIN_SAMPLING_PROBABILITY, 3), tv(16.0 * MIN_SAMPLING_PROBABILITY, 3)), ("ffffffffffffff".into(), "fffffffffffff".into()));
        // Sampler ratios: 0.5 → 8, 0.25 → c, 0.1 → 0.9*2^56 = e6666666666666.6 → "e666";
        // f32(33.333332)/100 → 0xaaaaaae147ae14 → "aaab"; 0.01 gains a digit (frexp -6) → "fd70a",
        // and at precision 3 → "fd71" (Collector traces test); 0.4 at 3 → "99a", at 6 → "99999a".
        let r = |pct: f32| f64::from(pct) / 100.0;
        assert_eq!([tv(r(50.0), 4), tv(r(25.0), 4), tv(r(10.0), 4), tv(r(100.0 / 3.0), 4), tv(r(1.0), 4), tv(r(1.0), 3), tv(r(40.0), 3), tv(r(40.0), 6)],
            ["8", "c", "e666", "aaab", "fd70a", "fd71", "99a", "99999a"]);
        assert_eq!(tv(r((1.0 - 8e-7) * 100.0), 10), "00000cccccccd");
        for bad in [0.0, -1.0, 1.000_000_1, f64::NAN, MIN_SAMPLING_PROBABILITY / 2.0] {
            assert_eq!(Threshold::from_probability(bad), None);
        }
    }

    #[test]
    fn tvalue_rvalue_parsing() {
        assert_eq!(Threshold::parse_tvalue("8").map(|t| t.unsigned()), Some(0x80_0000_0000_0000));
        assert_eq!(Threshold::parse_tvalue("C"), Threshold::parse_tvalue("c0000000000000"));
        for bad in ["", "abababababababab", "-1", "g", "+8", "0x8"] {
            assert_eq!(Threshold::parse_tvalue(bad), None, "{bad}");
        }
        let t = Threshold::parse_tvalue("80000000000000").unwrap();
        assert_eq!((t.tvalue(), t.probability(), t.should_sample(0x80_0000_0000_0000), t.should_sample(0x7f_ffff_ffff_ffff)), ("8".into(), 0.5, true, false));
        assert_eq!(Threshold::parse_tvalue("c").unwrap().probability(), 0.25);
        assert_eq!((Threshold::ALWAYS_SAMPLE.probability(), Threshold::NEVER_SAMPLE.probability()), (1.0, 0.0));
        assert_eq!(Threshold::from_unsigned(MAX_ADJUSTED_COUNT), None);
        assert_eq!(randomness_from_trace_id(&tid(DEFAULT_TID)), 0x80_0000_0000_0000);
        assert_eq!(parse_rv("FD70A3D70A3D71"), Some(0xfd_70a3_d70a_3d71));
        for bad in ["fd70a3d70a3d7", "abababababababab", "fd70a3d70a3d7g"] {
            assert_eq!(parse_rv(bad), None);
        }
    }

    #[test]
    fn tracestate_parse_and_render() {
        let mut ts = OtelTraceState::parse(" congo=t61rcWkgMzE ,, ot=th:8;x:1;rv:90000000000000 ,rojo=00f067aa0ba902b7").unwrap();
        assert_eq!((ts.threshold(), ts.randomness()), (Threshold::parse_tvalue("8"), Some(0x90_0000_0000_0000)));
        assert!(!ts.update_threshold(Threshold::ALWAYS_SAMPLE)); // may not raise probability
        assert!(ts.update_threshold(Threshold::parse_tvalue("c").unwrap()));
        assert_eq!(ts.render(), "ot=rv:90000000000000;th:c;x:1,congo=t61rcWkgMzE,rojo=00f067aa0ba902b7");
        assert_eq!(OtelTraceState::parse("").unwrap().render(), "");
        assert_eq!(OtelTraceState::parse("ot=th:8,ot=th:c").unwrap().threshold(), Threshold::parse_tvalue("c"));
        assert!(OtelTraceState::parse("1a@b-c=1,a@b=x y,k*/_-=~").is_ok());
        let members = |n: usize| (0..n).map(|i| format!("k{i}=v")).collect::<Vec<_>>().join(",");
        assert!(OtelTraceState::parse(&members(31)).is_ok());
        assert!(OtelTraceState::parse(&format!("ot=x:{}", "a".repeat(254))).is_ok());
        let cases = [
            (members(32), TraceStateError::Size), // the Collector refuses a 32nd member
            (format!("a={}", "x".repeat(1030)), TraceStateError::Size),
            (format!("k{}=1", "a".repeat(256)), TraceStateError::Size),
            (format!("ot=x:{}", "a".repeat(255)), TraceStateError::Syntax), // W3C value > 256
            ("ot=th:abababababababab".into(), TraceStateError::TValue),
            ("ot=rv:abababababababab".into(), TraceStateError::RValue),
            ("ot=th:-1".into(), TraceStateError::TValue),
            ("ot=th:".into(), TraceStateError::TValue),
            ("ot=th:8;".into(), TraceStateError::OtSyntax),
            ("ot=TH:8".into(), TraceStateError::OtSyntax),
            ("ot=th:8:9".into(), TraceStateError::OtSyntax),
            ("Ot=th:8".into(), TraceStateError::Syntax),
            ("1a=1".into(), TraceStateError::Syntax),
            ("a=b=c".into(), TraceStateError::Syntax),
            ("a=1,b".into(), TraceStateError::Syntax),
        ];
        for (input, err) in cases {
            assert_eq!(OtelTraceState::parse(&input), Err(err), "{input}");
        }
    }

    #[test]
    fn proportional_decisions() {
        let p = Mode::Proportional;
        // Collector traces test vectors (randomness = last 14 hex digits of the id).
        assert_eq!(run(p, cfg(50.0), DEFAULT_TID, ""), (true, some("ot=th:8")));
        assert_eq!(run(p, cfg(49.0), DEFAULT_TID, ""), (false, None)); // th 828f > 80000000000000
        assert_eq!(run(p, cfg(25.0), "ddddddddddddddddddc0000000000000", ""), (true, some("ot=th:c")));
        assert_eq!(run(p, cfg(25.0), "ddddddddddddddddddb0000000000000", ""), (false, None));
        // 10% → e6660000000000: randomness equal to it passes, one less does not.
        assert_eq!(run(p, cfg(10.0), "000000000000000000e6660000000000", ""), (true, some("ot=th:e666")));
        assert_eq!(run(p, cfg(10.0), "000000000000000000e665ffffffffff", ""), (false, None));
        assert_eq!(run(p, cfg(100.0 / 3.0), "000000000000000000aaab0000000000", "a=b"), (true, some("ot=th:aaab,a=b")));
        assert_eq!(run(p, cfg(100.0 / 3.0), "000000000000000000aaaaffffffffff", ""), (false, None));
        // Incoming th:8 (p 0.5) x 0.5 = 0.25 → "c".
        assert_eq!(run(p, cfg(50.0), "000000000000000000c0000000000000", "ot=th:8"), (true, some("ot=th:c")));
        assert_eq!(run(p, cfg(50.0), "000000000000000000bfffffffffffff", "ot=th:8"), (false, None));
        // 0.5 x 0.4 = 0.2 at precision 6 → "cccccd" (Collector test, id ...d0...).
        let c6 = Decider { sampling_precision: 6, ..cfg(40.0) };
        assert_eq!(run(p, c6, "a0a0a0a0a0a0a0a0a0d0000000000000", "ot=th:8"), (true, some("ot=th:cccccd")));
        // rv (upper case kept verbatim) overrides the id; 1% at precision 4 → fd70a <= rv.
        assert_eq!(run(p, cfg(1.0), DEFAULT_TID, "ot=rv:FD70A3D70A3D71"), (true, some("ot=rv:FD70A3D70A3D71;th:fd70a")));
        let c3 = Decider { sampling_precision: 3, ..cfg(1.0) };
        assert_eq!(run(p, c3, DEFAULT_TID, "ot=rv:FD70A3D70A3D71"), (false, None)); // fd71 > rv
        let zero_rand = "01000000000000000000000000000000";
        assert_eq!(run(p, cfg(25.0), zero_rand, ""), (false, None));
        assert_eq!(run(p, cfg(25.0), zero_rand, "ot=rv:c0000000000000"), (true, some("ot=rv:c0000000000000;th:c")));
        // 2^-53 x 0.000625 < 2^-56: falls below the minimum, so not sampled.
        assert_eq!(run(p, cfg(0.0625), ALL_F_TID, "ot=th:fffffffffffff8"), (false, None));
    }

    #[test]
    fn equalizing_decisions() {
        let e = Mode::Equalizing;
        assert_eq!(run(e, cfg(25.0), ALL_F_TID, "ot=th:8"), (true, some("ot=th:c")));
        assert_eq!(run(e, cfg(25.0), ALL_F_TID, "ot=th:e"), (true, None)); // keeps larger e
        assert_eq!(run(e, cfg(25.0), ALL_F_TID, ""), (true, some("ot=th:c")));
        assert_eq!(run(e, cfg(50.0), DEFAULT_TID, "ot=rv:c0000000000000;th:8"), (true, None));
        assert_eq!(run(e, cfg(50.0), DEFAULT_TID, "ot=rv:90000000000000;th:80000000000000"), (true, some("ot=rv:90000000000000;th:8")));
        let c6 = Decider { sampling_precision: 6, ..cfg(40.0) };
        assert_eq!(run(e, c6, "a0a0a0a0a0a0a0a0a0d0000000000000", "ot=th:8"), (true, some("ot=th:99999a")));
        assert_eq!(run(e, cfg(0.0625), ALL_F_TID, "ot=th:fffffffffffff8"), (true, None));
    }

    #[test]
    fn hash_seed_decisions() {
        let h = Mode::HashSeed;
        let id = format!("{BASE}00000323"); // bucket 3275, rv ccd263afcdcccb
        assert_eq!(run(h, cfg(20.0), &id, ""), (true, some("ot=rv:ccd263afcdcccb;th:ccd")));
        assert_eq!(run(h, cfg(20.0), &id, "congo=t61rcWkgMzE"), (true, some("ot=rv:ccd263afcdcccb;th:ccd,congo=t61rcWkgMzE")));
        assert_eq!(run(h, cfg(20.0), &format!("{BASE}00001c07"), ""), (false, None));
        let d = decide(h, &cfg(20.0), &tid(&id), "ot=th:0").unwrap();
        assert_eq!((d.sampled, d.error), (false, Some(SampleError::ThresholdInUse)));
        let open = Decider { fail_closed: false, ..cfg(20.0) };
        assert_eq!(run(h, open, &id, "ot=th:0"), (true, None));
        let d = decide(h, &open, &tid(&id), "ot=rv:00000000000000").unwrap();
        assert_eq!((d.sampled, d.new_tracestate, d.error), (true, None, Some(SampleError::RandomnessInUse)));
        // All-zero id: missing randomness; fail-open writes the all-ones rv like the Collector.
        assert_eq!(run(h, cfg(100.0), &"0".repeat(32), ""), (false, None));
        assert_eq!(run(h, open, &"0".repeat(32), ""), (true, some("ot=rv:ffffffffffffff;th:0")));
    }

    #[test]
    fn errors_fail_closed_and_priority() {
        let p = Mode::Proportional;
        let open = |pct: f32| Decider { fail_closed: false, ..cfg(pct) };
        let d = decide(p, &cfg(50.0), &tid(DEFAULT_TID), "ot=th:zz").unwrap();
        assert_eq!((d.sampled, d.error), (false, Some(SampleError::TraceState(TraceStateError::TValue))));
        assert_eq!(run(p, open(50.0), DEFAULT_TID, "ot=th:zz"), (true, None));
        // Inconsistent: th 8 > rv 4...: cleared, then fail-open writes th:0 (Collector test).
        let d = decide(p, &open(100.0), &tid(DEFAULT_TID), "ot=rv:40000000000000;th:8").unwrap();
        assert_eq!((d.sampled, d.new_tracestate.as_deref(), d.error), (true, Some("ot=rv:40000000000000;th:0"), Some(SampleError::InconsistentThreshold)));
        assert_eq!(run(p, cfg(1.0), DEFAULT_TID, "ot=rv:40000000000000;th:8"), (false, None));
        let zero = "0".repeat(32);
        assert_eq!(run(p, cfg(62.0), &zero, ""), (false, None));
        assert_eq!(run(p, open(62.0), &zero, ""), (true, some("ot=th:0")));
        let d = decide(p, &open(0.0), &tid(&zero), "").unwrap();
        assert_eq!((d.sampled, d.error), (false, None)); // 0% skips the randomness check
        for mode in [Mode::HashSeed, p, Mode::Equalizing] {
            let must = decide_with_priority(mode, &cfg(0.0), &tid(DEFAULT_TID), "", Priority::MustSample).unwrap();
            assert_eq!((must.sampled, must.new_tracestate), (true, some("ot=th:0")));
            let not = decide_with_priority(mode, &cfg(100.0), &tid(DEFAULT_TID), "", Priority::DoNotSample).unwrap();
            assert!(!not.sampled);
        }
        assert_eq!(decide(p, &cfg(f32::NAN), &[1; 16], ""), Err(DecideError::InvalidPercentage));
        assert_eq!(decide(p, &cfg(1e-20), &[1; 16], ""), Err(DecideError::InvalidPercentage));
        assert_eq!(decide(p, &Decider { sampling_precision: 15, ..cfg(5.0) }, &[1; 16], ""), Err(DecideError::InvalidPrecision));
        assert_eq!(run(p, cfg(150.0), DEFAULT_TID, ""), (true, some("ot=th:0")));
    }

    #[test]
    fn odd_inputs_do_not_panic() {
        let long = "ot=th:8,".repeat(200);
        let inputs = ["ot=", "ot=;", "ot=rv:", "=,=,", ",,,,", "ot=th:8,\u{e9}=1", "\u{1f600}", "a=\u{e9}", " \t ", long.as_str()];
        for ts in inputs {
            for mode in [Mode::HashSeed, Mode::Proportional, Mode::Equalizing] {
                for fail_closed in [true, false] {
                    let c = Decider { fail_closed, ..cfg(37.5) };
                    assert!(decide(mode, &c, &[0xab; 16], ts).is_ok());
                }
            }
        }
    }
}
