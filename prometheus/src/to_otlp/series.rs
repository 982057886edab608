//! What a target's scrapes remember: per-series start times (so an app restart shows as a
//! reset, not a negative rate) and the previous scrape's series, each with what its
//! staleness marker needs should it disappear (its attributes, shared with every batch
//! that carries the series, and its family).
//!
//! A series on the page keeps its start time in its entry of the previous scrape's
//! series ([`Known`]), which the next scrape reads in page order; a series that left the
//! page keeps it in a table for [`FORGET_AFTER_MS`], in case it comes back.
//!
//! Memory is bounded: a remembered start time costs about [`ENTRY_BYTES`]; all the
//! targets of a receiver share one [`SeriesBudget`] of them (`max_series_state`). A
//! series that finds the budget spent is still delivered, with start = its scrape time
//! (or its `_created`) on every scrape, as on first sight; it is counted in
//! `sidekick_scrape_series_state_overflow`. Staleness markers do not depend on the budget:
//! they come from the previous scrape's series ([`Seen`]), bounded by the page, which
//! `body_size_limit` and `sample_limit` bound.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use sidekick_core::log::LogBurst;
use sidekick_core::metrics::Counter;
use sidekick_core::payload::Attrs;
use sidekick_core::util::KeyMap;
use tracing::warn;

use crate::parse::Kind;

/// OTLP `DataPointFlags.FLAG_NO_RECORDED_VALUE`: the Prometheus staleness marker.
pub const NO_RECORDED_VALUE: u32 = 1;

/// Series unseen this long are forgotten (Prometheus keeps staleness state 5 minutes).
pub const FORGET_AFTER_MS: i64 = 5 * 60 * 1000;

/// Approximate bytes per remembered start time: a state, and its key and hash-map
/// overhead once its series left the page.
pub const ENTRY_BYTES: usize = std::mem::size_of::<(u64, State)>() + 8;

/// Default `max_series_state`: start times remembered at most, over all the targets of a
/// receiver (about 20 MB at [`ENTRY_BYTES`] each).
pub const DEFAULT_MAX_SERIES_STATE: usize = 500_000;

/// How often the "series state is full" line is logged again while it lasts.
const OVERFLOW_LOG_EVERY: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy)]
pub struct State {
    start_ms: i64,
    last_ms: i64,
    last_value: f64,
}

impl State {
    /// No state: a gauge, or a series that found the budget spent.
    const NONE: State = State {
        start_ms: i64::MIN,
        last_ms: i64::MIN,
        last_value: 0.0,
    };

    fn is_some(&self) -> bool {
        self.start_ms != i64::MIN
    }
}

/// The start-time entries a receiver may hold, shared by its targets' trackers.
pub struct SeriesBudget {
    limit: usize,
    used: AtomicUsize,
    overflow: Counter,
    log: LogBurst,
    receiver: String,
}

impl SeriesBudget {
    /// A budget of `limit` entries whose overflows are counted in `overflow`.
    pub fn new(limit: usize, overflow: Counter, receiver: &str) -> Self {
        SeriesBudget {
            limit,
            used: AtomicUsize::new(0),
            overflow,
            log: LogBurst::new(OVERFLOW_LOG_EVERY),
            receiver: receiver.to_string(),
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Entries held now, over all trackers.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Series (counted once per scrape) that found the budget spent, since start.
    pub fn overflowed(&self) -> u64 {
        self.overflow.get()
    }

    fn take(&self) -> bool {
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                (u < self.limit).then_some(u + 1)
            })
            .is_ok()
    }

    fn give_back(&self, n: usize) {
        if n > 0 {
            self.used.fetch_sub(n, Ordering::Relaxed);
        }
    }

    /// Counts a scrape's series that got no entry and says so, at most every 5 minutes.
    fn report_overflow(&self, series: u64, target: &str) {
        self.overflow.add(series);
        if let Some(held_back) = self.log.check() {
            warn!(
                receiver = %self.receiver,
                scrape_target = %target,
                series,
                max_series_state = self.limit,
                scrapes_not_logged = held_back,
                "series state is full: new series are delivered with their scrape time as start time (no reset detection) until older series are forgotten; raise max_series_state or drop series with metric_relabel_configs"
            );
        }
    }
}

/// A family as one scrape had it: what a staleness marker of its series needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    pub scope: InstrumentationScope,
    pub name: String,
    pub kind: Kind,
    pub unit: String,
    pub help: String,
    /// The series' histogram bucket bounds (`+Inf` included) or summary quantiles: most
    /// series of a family share them, and one that does not gets a shape of its own.
    pub parts: Vec<f64>,
    /// Whether its histogram points had a `_sum` (its marker then ends that series too).
    pub sum: bool,
    /// Whether its histogram points were native (exponential) ones.
    pub native: bool,
}

/// A series of the previous scrape (two pointers: the map of them stays small).
#[derive(Debug, Clone)]
pub struct Seen {
    pub attrs: Arc<Attrs>,
    pub shape: Arc<Shape>,
}

/// The series of the last successful scrape, in the order that scrape built them, with
/// an index by hash. A page lists its series in the same order scrape after scrape, so
/// the next scrape finds most of them with a [`Cursor`] walking this list, which reads
/// memory in order, and the index serves the rest.
#[derive(Default)]
pub struct Known {
    entries: Vec<Series>,
    index: KeyMap<u32>,
}

/// A series of the last successful scrape.
struct Series {
    hash: u64,
    seen: Seen,
    /// Its start time, when it has one.
    state: State,
}

impl Known {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The series at `at` (a place a [`Cursor`] gave).
    pub fn at(&self, at: usize) -> &Seen {
        &self.entries[at].seen
    }

    /// The series, in the order they were built.
    pub fn iter(&self) -> impl Iterator<Item = &Seen> {
        self.entries.iter().map(|e| &e.seen)
    }

    /// Takes over `entries` (one per hash), keeping the index when they come in the
    /// same order as before (the usual case: nothing to rehash).
    fn replace(&mut self, entries: Vec<Series>) {
        let same = entries.len() == self.entries.len()
            && entries
                .iter()
                .zip(&self.entries)
                .all(|(a, b)| a.hash == b.hash);
        if !same {
            self.index.clear();
            self.index.reserve(entries.len());
            for (i, e) in entries.iter().enumerate() {
                self.index.insert(e.hash, i as u32);
            }
            shrink_after_burst(&mut self.index);
        }
        self.entries = entries;
    }
}

/// Hands back the memory of a burst of series once most of them are gone.
fn shrink_after_burst<V>(map: &mut KeyMap<V>) {
    if map.capacity() > 4 * map.len().max(1024) {
        map.shrink_to(2 * map.len());
    }
}

/// Finds series of a page in [`Known`]: first where the last one found was followed, then
/// by the index.
#[derive(Default)]
pub struct Cursor {
    next: usize,
}

impl Cursor {
    /// The place of `hash` in `known`: where the last one found was followed, the last
    /// one found again (another sample of its series), or else by the index.
    pub fn find(&mut self, known: &Known, hash: u64) -> Option<usize> {
        let at = match known.entries.get(self.next) {
            Some(e) if e.hash == hash => self.next,
            _ => match self.next.checked_sub(1).and_then(|i| known.entries.get(i)) {
                Some(e) if e.hash == hash => return Some(self.next - 1),
                _ => *known.index.get(&hash)? as usize,
            },
        };
        self.next = at + 1;
        Some(at)
    }
}

pub struct Tracker {
    /// Start times of series that left the page (in case they come back).
    away: KeyMap<State>,
    /// Start times held, on the page and away: what this tracker took from the budget.
    states: usize,
    budget: Arc<SeriesBudget>,
    /// Names the target in the overflow log line.
    target: String,
    /// Series of the current scrape that found the budget spent.
    overflowed: u64,
    /// The series of the last successful scrape, with their start times. Their attributes
    /// are shared with the points of every scrape that carries them, so a series'
    /// attributes are built once.
    previous: Known,
    /// Resets seen since start.
    pub resets: u64,
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.budget.give_back(self.states);
    }
}

/// A scrape's series as they are built ([`Tracker::scrape`]).
pub struct Scrape<'t> {
    tracker: &'t mut Tracker,
    /// This scrape's series, one entry a hash, in the order they are built.
    current: Vec<Series>,
    /// Per place in the previous scrape: its place in `current` once it came again.
    again: Vec<u32>,
    /// Series the previous scrape did not have: hash → place in `current`.
    new: KeyMap<u32>,
}

impl Scrape<'_> {
    /// Notes a series built (its place among the previous scrape's, when it was there)
    /// and gives its place in this scrape, for [`Scrape::start_time`]. A `cumulative`
    /// series takes its start time along; another leaves it to go away and be forgotten
    /// in time (a counter that became a gauge starts afresh should it turn back).
    pub fn see(&mut self, hash: u64, known_at: Option<u32>, seen: Seen, cumulative: bool) -> usize {
        let next = self.current.len() as u32;
        let (at, state) = match known_at {
            Some(k) => match &mut self.again[k as usize] {
                at if *at == u32::MAX => {
                    *at = next;
                    let before = &mut self.tracker.previous.entries[k as usize].state;
                    let state = if cumulative {
                        std::mem::replace(before, State::NONE)
                    } else {
                        State::NONE
                    };
                    (next, state)
                }
                at => (*at, State::NONE),
            },
            None => (*self.new.entry(hash).or_insert(next), State::NONE),
        };
        if at == next {
            self.current.push(Series { hash, seen, state });
        }
        at as usize
    }

    /// The start time for a cumulative point of the series at `at`. `_created` wins when
    /// the page has it; otherwise the first sight of a series starts it (start = time,
    /// the OTLP way to say "unknown start"), and a value lower than the last one is a
    /// reset that starts a new stream just after the previous point.
    pub fn start_time(&mut self, at: usize, time_ms: i64, value: f64, created: Option<i64>) -> i64 {
        let tracker = &mut *self.tracker;
        let series = &mut self.current[at];
        if !series.state.is_some() {
            match tracker.away.remove(&series.hash) {
                Some(state) => series.state = state,
                None if !tracker.budget.take() => {
                    tracker.overflowed += 1;
                    return created.unwrap_or(time_ms);
                }
                None => {
                    tracker.states += 1;
                    series.state = State {
                        start_ms: created.unwrap_or(time_ms),
                        last_ms: time_ms,
                        last_value: value,
                    };
                    return series.state.start_ms;
                }
            }
        }
        let entry = &mut series.state;
        if let Some(c) = created {
            if c != entry.start_ms && entry.last_ms != time_ms {
                tracker.resets += u64::from(c > entry.start_ms);
            }
            entry.start_ms = c;
        } else if value < entry.last_value {
            tracker.resets += 1;
            entry.start_ms = entry.last_ms.saturating_add(1);
        }
        entry.last_ms = time_ms;
        entry.last_value = value;
        entry.start_ms
    }

    /// Series of the previous scrape that this one did not have.
    pub fn gone(&self) -> impl Iterator<Item = &Seen> {
        self.tracker
            .previous
            .entries
            .iter()
            .zip(&self.again)
            .filter(|(_, a)| **a == u32::MAX)
            .map(|(e, _)| &e.seen)
    }

    /// Series this scrape had that the previous one did not.
    pub fn added(&self) -> usize {
        self.new.len()
    }

    /// Ends a successful scrape: remembers its series and forgets long-gone ones.
    pub fn finish(self, time_ms: i64) {
        let Scrape {
            tracker, current, ..
        } = self;
        tracker.finish_scrape(current, time_ms);
    }
}

impl Tracker {
    /// A tracker with a budget of its own of `max_series` entries.
    pub fn new(max_series: usize) -> Self {
        let budget = SeriesBudget::new(max_series, Counter::default(), "");
        Tracker::with_budget(Arc::new(budget), "")
    }

    /// A tracker for `target` that takes its entries from `budget`, shared with the other
    /// targets of the receiver.
    pub fn with_budget(budget: Arc<SeriesBudget>, target: &str) -> Self {
        Tracker {
            away: KeyMap::default(),
            states: 0,
            budget,
            target: target.to_string(),
            overflowed: 0,
            previous: Known::default(),
            resets: 0,
        }
    }

    /// Start times held.
    pub fn tracked(&self) -> usize {
        self.states
    }

    /// The series of the last successful scrape.
    pub fn known(&self) -> &Known {
        &self.previous
    }

    /// Starts taking a scrape's series (of `points` data points or so).
    pub fn scrape(&mut self, points: usize) -> Scrape<'_> {
        Scrape {
            again: vec![u32::MAX; self.previous.len()],
            current: Vec::with_capacity(points),
            new: KeyMap::default(),
            tracker: self,
        }
    }

    /// After a failed scrape: every series of the last good one is gone (once); their
    /// start times stay, in case they come back.
    pub fn forget_previous(&mut self) -> Known {
        let mut gone = std::mem::take(&mut self.previous);
        for e in &mut gone.entries {
            let state = std::mem::replace(&mut e.state, State::NONE);
            self.go_away(e.hash, state);
        }
        gone
    }

    /// Keeps the start time of a series that left the page. Two series under one hash
    /// (a collision) keep one: the other's entry goes back to the budget.
    fn go_away(&mut self, hash: u64, state: State) {
        if state.is_some() && self.away.insert(hash, state).is_some() {
            self.states -= 1;
            self.budget.give_back(1);
        }
    }

    /// Remembers a scrape's series; the start times of those that left go away, and
    /// those away too long are forgotten.
    fn finish_scrape(&mut self, current: Vec<Series>, time_ms: i64) {
        // Those that came again gave their state to `current`.
        for i in 0..self.previous.entries.len() {
            let e = &mut self.previous.entries[i];
            let (hash, state) = (e.hash, std::mem::replace(&mut e.state, State::NONE));
            self.go_away(hash, state);
        }
        self.previous.replace(current);
        let before = self.away.len();
        self.away
            .retain(|_, s| time_ms.saturating_sub(s.last_ms) <= FORGET_AFTER_MS);
        let forgotten = before - self.away.len();
        self.states -= forgotten;
        self.budget.give_back(forgotten);
        shrink_after_burst(&mut self.away);
        if self.overflowed > 0 {
            self.budget
                .report_overflow(std::mem::take(&mut self.overflowed), &self.target);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen() -> Seen {
        Seen {
            attrs: Arc::new(Attrs::default()),
            shape: Arc::new(Shape {
                scope: InstrumentationScope::default(),
                name: "c_total".into(),
                kind: Kind::Counter,
                unit: String::new(),
                help: String::new(),
                parts: Vec::new(),
                sum: false,
                native: false,
            }),
        }
    }

    /// A scrape of the series `hashes`, each with one point (time, value, `_created`):
    /// their start times.
    fn scrape(t: &mut Tracker, points: &[(u64, i64, f64, Option<i64>)]) -> Vec<i64> {
        let mut cursor = Cursor::default();
        let found: Vec<Option<u32>> = points
            .iter()
            .map(|p| cursor.find(t.known(), p.0).map(|at| at as u32))
            .collect();
        let mut s = t.scrape(points.len());
        let starts = points
            .iter()
            .zip(found)
            .map(|(&(hash, time, value, created), known_at)| {
                let at = s.see(hash, known_at, seen(), true);
                s.start_time(at, time, value, created)
            })
            .collect();
        s.finish(points.first().map_or(0, |p| p.1));
        starts
    }

    #[test]
    fn start_times_follow_first_sight_and_resets() {
        let mut t = Tracker::new(10);
        assert_eq!(
            scrape(&mut t, &[(1, 1000, 5.0, None)]),
            [1000],
            "first sight: start = time"
        );
        assert_eq!(scrape(&mut t, &[(1, 2000, 7.0, None)]), [1000]);
        // The app restarted: the value fell.
        assert_eq!(scrape(&mut t, &[(1, 3000, 2.0, None)]), [2001]);
        // Series 1 leaves the page for a scrape and comes back: its start stays.
        assert_eq!(scrape(&mut t, &[(2, 3500, 1.0, Some(3400))]), [3400]);
        assert_eq!(scrape(&mut t, &[(1, 4000, 3.0, None)]), [2001]);
        assert_eq!(t.resets, 1);
        assert_eq!(t.tracked(), 2);
        // `_created` wins.
        assert_eq!(scrape(&mut t, &[(2, 5000, 1.0, Some(4500))]), [4500]);
        // A failed scrape keeps the start times.
        t.forget_previous();
        assert_eq!(scrape(&mut t, &[(1, 6000, 4.0, None)]), [2001]);
    }

    #[test]
    fn a_series_that_stops_being_cumulative_lets_its_start_go() {
        let mut t = Tracker::new(10);
        assert_eq!(scrape(&mut t, &[(1, 1000, 5.0, None)]), [1000]);
        // A gauge now: no start time taken along, so it ages out as if gone.
        for time in [2000, 2000 + FORGET_AFTER_MS] {
            let at = Cursor::default().find(t.known(), 1).map(|at| at as u32);
            let mut s = t.scrape(1);
            s.see(1, at, seen(), false);
            s.finish(time);
        }
        assert_eq!(t.tracked(), 0);
        // A counter again: a fresh start, not a reset against the old value.
        let time = 3000 + FORGET_AFTER_MS;
        assert_eq!(scrape(&mut t, &[(1, time, 1.0, None)]), [time]);
        assert_eq!(t.resets, 0);
    }

    #[test]
    fn two_series_under_one_hash_give_back_what_they_took() {
        let budget = Arc::new(SeriesBudget::new(10, Counter::default(), ""));
        let mut t = Tracker::with_budget(Arc::clone(&budget), "");
        scrape(&mut t, &[(7, 1000, 1.0, None)]);
        // The one found in the previous scrape, and another that only shares its hash.
        let mut s = t.scrape(2);
        for known_at in [Some(0), None] {
            let at = s.see(7, known_at, seen(), true);
            s.start_time(at, 2000, 2.0, None);
        }
        s.finish(2000);
        assert_eq!((t.tracked(), budget.used()), (2, 2));
        // Both leave the page: one start time is kept for the hash.
        scrape(&mut t, &[]);
        assert_eq!((t.tracked(), budget.used()), (1, 1));
        t.finish_scrape(Vec::new(), 2000 + FORGET_AFTER_MS + 1);
        assert_eq!((t.tracked(), budget.used()), (0, 0));
    }

    #[test]
    fn memory_is_bounded() {
        let mut t = Tracker::new(2);
        let starts = scrape(
            &mut t,
            &[(1, 7, 1.0, None), (2, 7, 1.0, None), (3, 7, 1.0, None)],
        );
        assert_eq!(starts, [7, 7, 7]);
        assert_eq!(t.tracked(), 2);
        // Series 3 has no state: on every scrape it starts at its scrape time.
        let starts = scrape(
            &mut t,
            &[(1, 9, 2.0, None), (2, 9, 2.0, None), (3, 9, 2.0, None)],
        );
        assert_eq!(starts, [7, 7, 9]);
        scrape(&mut t, &[]);
        assert_eq!(t.tracked(), 2, "away, not yet forgotten");
        t.finish_scrape(Vec::new(), FORGET_AFTER_MS + 10);
        assert_eq!(t.tracked(), 0, "forgotten after five minutes unseen");
    }
}
