//! What a target's scrapes remember: per-series start times (so an app restart shows as a
//! reset, not a negative rate) and the previous scrape's series, each with what its
//! staleness marker needs should it disappear (its attributes, shared with every batch
//! that carries the series, and its family).
//!
//! Memory is bounded: a remembered start time costs one hash-map entry of [`ENTRY_BYTES`];
//! series unseen for [`FORGET_AFTER_MS`] are forgotten, and all the targets of a receiver
//! share one [`SeriesBudget`] of entries (`max_series_state`). A series that finds the
//! budget spent is still delivered, with start = its scrape time (or its `_created`) on
//! every scrape, as on first sight; it is counted in
//! `sidekick_scrape_series_state_overflow`. Staleness markers do not depend on the budget:
//! they come from the previous scrape's series ([`Seen`]), bounded by the page, which
//! `body_size_limit` and `sample_limit` bound.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use sidekick_collector::payload::Attrs;
use sidekick_collector::telemetry::{Counter, LogBurst};
use sidekick_collector::util::KeyMap;
use tracing::warn;

use super::parse::Kind;

/// OTLP `DataPointFlags.FLAG_NO_RECORDED_VALUE`: the Prometheus staleness marker.
pub const NO_RECORDED_VALUE: u32 = 1;

/// Series unseen this long are forgotten (Prometheus keeps staleness state 5 minutes).
pub const FORGET_AFTER_MS: i64 = 5 * 60 * 1000;

/// Approximate bytes per tracked series: key, state and hash-map overhead.
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
    entries: Vec<(u64, Seen)>,
    index: KeyMap<u32>,
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
        &self.entries[at].1
    }

    /// The series, in the order they were built.
    pub fn iter(&self) -> impl Iterator<Item = &(u64, Seen)> {
        self.entries.iter()
    }

    /// The series not `taken` (one flag per place).
    pub fn not_taken<'a>(&'a self, taken: &'a [bool]) -> impl Iterator<Item = &'a Seen> {
        self.entries
            .iter()
            .zip(taken)
            .filter(|(_, t)| !**t)
            .map(|((_, s), _)| s)
    }

    /// Takes over `entries` (one per hash), keeping the index when they come in the
    /// same order as before (the usual case: nothing to rehash).
    fn replace(&mut self, entries: Vec<(u64, Seen)>) {
        let same = entries.len() == self.entries.len()
            && entries
                .iter()
                .zip(&self.entries)
                .all(|((a, _), (b, _))| a == b);
        if !same {
            self.index.clear();
            self.index.reserve(entries.len());
            for (i, (h, _)) in entries.iter().enumerate() {
                self.index.insert(*h, i as u32);
            }
            // Hand back the memory of a burst of series once they are gone.
            if self.index.capacity() > 4 * entries.len().max(1024) {
                self.index.shrink_to(2 * entries.len());
            }
        }
        self.entries = entries;
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
            Some((h, _)) if *h == hash => self.next,
            _ => match self.next.checked_sub(1).and_then(|i| known.entries.get(i)) {
                Some((h, _)) if *h == hash => return Some(self.next - 1),
                _ => *known.index.get(&hash)? as usize,
            },
        };
        self.next = at + 1;
        Some(at)
    }
}

pub struct Tracker {
    series: KeyMap<State>,
    budget: Arc<SeriesBudget>,
    /// Names the target in the overflow log line.
    target: String,
    /// Series of the current scrape that found the budget spent.
    overflowed: u64,
    /// The series of the last successful scrape. Their attributes are shared with the
    /// points of every scrape that carries them, so a series' attributes are built once.
    previous: Known,
    /// Resets seen since start.
    pub resets: u64,
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.budget.give_back(self.series.len());
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
            series: KeyMap::default(),
            budget,
            target: target.to_string(),
            overflowed: 0,
            previous: Known::default(),
            resets: 0,
        }
    }

    pub fn tracked(&self) -> usize {
        self.series.len()
    }

    /// The start time for a cumulative point. `_created` wins when the page has it;
    /// otherwise the first sight of a series starts it (start = time, the OTLP way to say
    /// "unknown start"), and a value lower than the last one is a reset that starts a new
    /// stream just after the previous point.
    pub fn start_time(
        &mut self,
        hash: u64,
        time_ms: i64,
        value: f64,
        created_ms: Option<i64>,
    ) -> i64 {
        let entry = match self.series.get_mut(&hash) {
            Some(s) => s,
            None if !self.budget.take() => {
                self.overflowed += 1;
                return created_ms.unwrap_or(time_ms);
            }
            None => {
                self.series.insert(
                    hash,
                    State {
                        start_ms: created_ms.unwrap_or(time_ms),
                        last_ms: time_ms,
                        last_value: value,
                    },
                );
                return created_ms.unwrap_or(time_ms);
            }
        };
        if let Some(c) = created_ms {
            if c != entry.start_ms && entry.last_ms != time_ms {
                self.resets += u64::from(c > entry.start_ms);
            }
            entry.start_ms = c;
        } else if value < entry.last_value {
            self.resets += 1;
            entry.start_ms = entry.last_ms.saturating_add(1);
        }
        entry.last_ms = time_ms;
        entry.last_value = value;
        entry.start_ms
    }

    /// The series of the last successful scrape.
    pub fn known(&self) -> &Known {
        &self.previous
    }

    /// After a failed scrape: every series of the last good one is gone (once).
    pub fn forget_previous(&mut self) -> Known {
        std::mem::take(&mut self.previous)
    }

    /// Ends a successful scrape: remembers its series (one entry a hash, in the order
    /// they were built) and forgets long-gone ones.
    pub fn finish_scrape(&mut self, current: Vec<(u64, Seen)>, time_ms: i64) {
        self.previous.replace(current);
        let before = self.series.len();
        self.series
            .retain(|_, s| time_ms.saturating_sub(s.last_ms) <= FORGET_AFTER_MS);
        self.budget.give_back(before - self.series.len());
        // Hand back the memory of a burst of series once most of them are gone.
        if self.series.capacity() > 4 * self.series.len().max(1024) {
            self.series.shrink_to(2 * self.series.len());
        }
        if self.overflowed > 0 {
            self.budget
                .report_overflow(std::mem::take(&mut self.overflowed), &self.target);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_times_follow_first_sight_and_resets() {
        let mut t = Tracker::new(10);
        assert_eq!(
            t.start_time(1, 1000, 5.0, None),
            1000,
            "first sight: start = time"
        );
        assert_eq!(t.start_time(1, 2000, 7.0, None), 1000);
        // The app restarted: the value fell.
        assert_eq!(t.start_time(1, 3000, 2.0, None), 2001);
        assert_eq!(t.start_time(1, 4000, 3.0, None), 2001);
        assert_eq!(t.resets, 1);
        // `_created` wins.
        assert_eq!(t.start_time(2, 5000, 1.0, Some(4500)), 4500);
    }

    #[test]
    fn memory_is_bounded() {
        let mut t = Tracker::new(2);
        t.start_time(1, 0, 1.0, None);
        t.start_time(2, 0, 1.0, None);
        assert_eq!(t.start_time(3, 7, 1.0, None), 7);
        assert_eq!(t.tracked(), 2);
        t.finish_scrape(Vec::new(), FORGET_AFTER_MS + 1);
        assert_eq!(t.tracked(), 0, "forgotten after five minutes unseen");
    }
}
