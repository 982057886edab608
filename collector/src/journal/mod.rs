//! The persistent queue: a journal on disk at the entry of a pipeline whose exporters
//! name `sending_queue.storage`.
//!
//! A receiver appends each request to the journal and answers only once the append is
//! done (written to the kernel; with the storage's `fsync: true`, also synced to the
//! device). One feeder per journal hands the entries, oldest first, to the pipeline's
//! first stage, each with a [`Ticket`]. The ticket travels with the entry's items through
//! processors into every exporter's queue (inside the queues' holds), so however the
//! batch processor joins and splits, the entry is retired only when every piece of it
//! was delivered or counted as dropped by every exporter. Retired entries are skipped
//! after a restart; the rest are sent again, oldest first. The batch processor is no
//! window of loss: what it holds is still in the journal.
//!
//! On disk, a directory per pipeline holds segment files named by their first
//! sequence number, and a `cursor` file with the lowest entry not yet retired. Each
//! record is `length, crc32, sequence, items, payload` (little endian): a torn write or
//! a damaged record fails its checksum, is counted and logged with its file, and the
//! segment is cut there. Whole segments are deleted once every entry in them is retired.
//!
//! While the pipeline keeps up, the feeder takes entries from a small memory cache of
//! the newest appends, so the disk is only written, not read back; when the backlog
//! grows past the cache (a slow or dead backend), the feeder reads the journal from
//! disk, and memory stays bounded however large the backlog on disk.
//!
//! Layout: this module holds the journal's state (opening and recovery, retiring,
//! closing); `append` is the writer side, `feed` the reader side and `format` the
//! records, segments and cursor on disk.

mod append;
mod feed;
mod format;

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Notify;
use tracing::{error, info, warn};

pub use append::{AppendError, JournalSender};
pub use feed::feed;
use format::*;

use crate::base::{BoxFuture, Deadline};
pub use crate::base::{Retire, Ticket};
use crate::payload::{Batch, Signal};
use crate::pipe::{Durable, Limit, Output, SendError};
use crate::telemetry::{Counter, Gauge, LogBurst, Telemetry};

/// Segments are closed and a new one begun past this size (by default).
pub const SEGMENT_BYTES: u64 = 8 << 20;
/// Newest appends kept in memory for the feeder, so a pipeline that keeps up never
/// reads the disk.
const CACHE_BYTES: usize = 2 << 20;
/// `length u32, crc32 u32, sequence u64, items u32`.
const HEADER: usize = 20;
/// A record longer than this is damage, not data.
const MAX_RECORD: u64 = 1 << 30;
/// The cursor file is rewritten at most this often while entries retire (and at stop):
/// after a crash, entries retired in the last interval are sent again.
const CURSOR_EVERY: Duration = Duration::from_millis(20);
const SEGMENT_EXT: &str = "seg";

/// How a journal is bounded and synced.
#[derive(Debug, Clone, Copy)]
pub struct JournalSettings {
    /// Bounds on what the journal holds: bytes on disk, items and entries (requests).
    pub limit: Limit,
    /// When full, delete the oldest entries not yet handed on (counted as dropped)
    /// instead of refusing new data.
    pub drop_oldest: bool,
    /// Sync each append to the device before it is acknowledged.
    pub fsync: bool,
    /// Size past which a segment is closed and a new one begun.
    pub segment_bytes: u64,
}

/// One segment file.
#[derive(Debug)]
struct Segment {
    first: u64,
    /// One past the last sequence number written to it.
    next: u64,
    bytes: u64,
    items: u64,
    path: PathBuf,
}

/// An entry appended and not yet handed to the pipeline, kept in memory.
struct Cached<S: Signal> {
    seq: u64,
    batch: Batch<S>,
    /// The bytes its record holds after the header, as written. The batch's own
    /// [`Batch::size`] may be an estimate (detached attributes), and the queue's byte
    /// account must take off exactly what it added.
    bytes: usize,
    /// Where its record ends, for the feeder's disk position.
    segment: u64,
    end: u64,
}

struct State<S: Signal> {
    segments: VecDeque<Segment>,
    /// The last segment, open for appending.
    file: Option<File>,
    next_seq: u64,
    /// The next entry to hand to the pipeline, and where its record is on disk.
    feed_seq: u64,
    read_segment: u64,
    read_offset: u64,
    /// Bumped when the feeder's position moves under it (drop-oldest).
    generation: u64,
    /// The segment the feeder reads, kept open (a deleted file stays readable).
    reader: Option<(u64, Arc<File>)>,
    cache: VecDeque<Cached<S>>,
    cache_bytes: usize,
    cache_open: bool,
    /// Every entry below `low` is retired; `retired` holds retired ranges above it.
    low: u64,
    retired: BTreeMap<u64, u64>,
    live_items: u64,
    live_entries: u64,
    /// Bytes of the records not yet retired: what the byte bound counts.
    live_bytes: u64,
    /// Bytes of the segment files (at most one segment more than `live_bytes`).
    disk_bytes: u64,
    /// Whether retirement changed since the cursor was written.
    cursor_dirty: bool,
    cursor_at: Instant,
    /// Entries at or above this are written but not yet synced (fsync policy).
    synced: u64,
    syncing: bool,
    /// Entries below this (and not below `synced`) could not be synced: their appends
    /// are answered with an error.
    sync_failed_below: u64,
    writers: usize,
    closed: bool,
}

/// The self-metrics of one journal.
#[derive(Clone, Default)]
struct Metrics {
    persisted: Counter,
    replayed: Counter,
    corrupt: Counter,
    dropped: Counter,
    fsyncs: Counter,
    bytes: Gauge,
    items: Gauge,
    telemetry: Option<Telemetry>,
}

/// A pipeline's journal. Shared by the receivers that append to it (through
/// [`JournalSender`]), its feeder, and the tickets of its entries.
pub struct Journal<S: Signal> {
    name: String,
    dir: PathBuf,
    settings: JournalSettings,
    state: Mutex<State<S>>,
    /// Woken when an entry is appended or the last writer leaves.
    appended: Notify,
    /// Woken when entries retire or a sync finishes.
    progress: Notify,
    metrics: Metrics,
    error_log: LogBurst,
}

/// Forgets cached entries up to `seq` (handed on from disk, or dropped).
fn uncache_through<S: Signal>(st: &mut State<S>, seq: u64) {
    while st.cache.front().is_some_and(|c| c.seq <= seq) {
        if let Some(c) = st.cache.pop_front() {
            st.cache_bytes -= c.bytes;
        }
    }
}

/// What [`Journal::open`] found on disk.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    pub entries: u64,
    pub items: u64,
    pub corrupt: u64,
}

impl<S: Signal> Journal<S> {
    /// Opens (creating if needed) the journal in `dir`, which belongs to one pipeline of
    /// a locked storage directory, and recovers what a previous run left there.
    pub fn open(
        dir: PathBuf,
        name: &str,
        settings: JournalSettings,
        telemetry: Option<&Telemetry>,
    ) -> Result<Arc<Self>, String> {
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let metrics = telemetry
            .map(|t| journal_metrics(t, name, &settings))
            .unwrap_or_default();
        let (low, retired) = read_cursor(&dir);
        let mut firsts = Vec::new();
        let listing =
            std::fs::read_dir(&dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
        for entry in listing.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some(SEGMENT_EXT) {
                continue; // not ours: left alone
            }
            if let Some(first) = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse::<u64>().ok())
            {
                firsts.push(first);
            }
        }
        firsts.sort_unstable();
        let mut recovered = Recovered::default();
        let mut segments = VecDeque::new();
        let mut next_seq = low;
        let mut live_items = 0;
        let mut live_bytes = 0;
        let mut disk_bytes = 0;
        for first in firsts {
            let path = dir.join(segment_name(first));
            let is_live = |seq: u64| seq >= low && !in_ranges(&retired, seq);
            let scanned = match scan_segment(&path, first, &is_live, &mut recovered, name) {
                Ok(scanned) => scanned,
                Err(e) => {
                    // Left in place (perhaps readable next time) and counted; its
                    // numbers are never used again.
                    recovered.corrupt += 1;
                    error!(queue = %name, error = %e, "cannot read a persistent queue segment: skipping it");
                    let most =
                        std::fs::metadata(&path).map_or(1 << 32, |m| m.len() / HEADER as u64);
                    next_seq = next_seq.max(first + most + 1);
                    continue;
                }
            };
            // Sequence numbers go on after every entry ever written, sent or not.
            next_seq = next_seq.max(scanned.segment.next);
            if scanned.live_bytes == 0 {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            live_items += scanned.live_items;
            live_bytes += scanned.live_bytes;
            disk_bytes += scanned.segment.bytes;
            segments.push_back(scanned.segment);
        }
        if let Some((_, &end)) = retired.last_key_value() {
            next_seq = next_seq.max(end);
        }
        let feed_seq = low.min(next_seq);
        let read_segment = segments.front().map(|s| s.first).unwrap_or(next_seq);
        metrics.replayed.add(recovered.items);
        metrics.corrupt.add(recovered.corrupt);
        if recovered.entries > 0 {
            info!(queue = %name, directory = %dir.display(), entries = recovered.entries, items = recovered.items, "persistent queue holds data from the previous run: sending it first");
        }
        let journal = Arc::new(Journal {
            name: name.to_string(),
            dir,
            settings,
            state: Mutex::new(State {
                segments,
                file: None,
                next_seq,
                feed_seq,
                read_segment,
                read_offset: 0,
                generation: 0,
                reader: None,
                cache: VecDeque::new(),
                cache_bytes: 0,
                cache_open: true,
                low: feed_seq,
                retired,
                live_items,
                live_entries: recovered.entries,
                live_bytes,
                disk_bytes,
                cursor_dirty: false,
                cursor_at: Instant::now(),
                synced: next_seq,
                syncing: false,
                sync_failed_below: 0,
                writers: 0,
                closed: false,
            }),
            appended: Notify::new(),
            progress: Notify::new(),
            metrics,
            error_log: LogBurst::new(Duration::from_secs(10)),
        });
        journal.update_gauges(&journal.lock());
        Ok(journal)
    }

    fn lock(&self) -> MutexGuard<'_, State<S>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update_gauges(&self, st: &State<S>) {
        self.metrics.bytes.set(st.live_bytes as i64);
        self.metrics.items.set(st.live_items as i64);
    }

    /// A handle for one receiver output; the feeder finishes once every handle is gone
    /// and everything appended was handed on.
    pub fn sender(self: &Arc<Self>) -> JournalSender<S> {
        self.lock().writers += 1;
        JournalSender {
            journal: Arc::clone(self),
            item_limit: None,
        }
    }

    /// Deletes the oldest entry not yet handed on, counting it as dropped. False when
    /// every entry was handed on already.
    fn drop_oldest(&self, st: &mut State<S>) -> bool {
        let Some((seq, items, bytes)) = self.take_oldest_unfed(st) else {
            return false;
        };
        if seq > st.feed_seq {
            self.skip(st, seq);
        }
        st.feed_seq = seq + 1;
        st.generation += 1;
        self.retire_range(st, seq, seq + 1, (items, bytes, 1));
        self.metrics.dropped.add(items);
        if let Some(t) = &self.metrics.telemetry {
            t.account().record_dropped(items);
        }
        if let Some(held_back) = self.error_log.check() {
            error!(queue = %self.name, dropped_items = items, similar_lines_held_back = held_back, "persistent queue is full: dropped its oldest data not yet sent (when_full: drop_oldest)");
        }
        true
    }

    /// Entries from `feed_seq` up to `to` are not there to hand on: retire them.
    fn skip(&self, st: &mut State<S>, to: u64) {
        if to > st.feed_seq {
            let from = st.feed_seq;
            st.feed_seq = to;
            // Never counted as live (gaps), or counted and now lost to damage: the
            // counts are left as they are rather than guessed.
            self.retire_range(st, from, to, (0, 0, 0));
        }
    }

    fn retire_range(
        &self,
        st: &mut State<S>,
        from: u64,
        to: u64,
        (items, bytes, entries): (u64, u64, u64),
    ) {
        st.live_items = st.live_items.saturating_sub(items);
        st.live_bytes = st.live_bytes.saturating_sub(bytes);
        st.live_entries = st.live_entries.saturating_sub(entries);
        if from > st.low {
            insert_range(&mut st.retired, from, to);
        } else {
            st.low = st.low.max(to);
        }
        while let Some((&start, &end)) = st.retired.first_key_value() {
            if start > st.low {
                break;
            }
            st.retired.remove(&start);
            st.low = st.low.max(end);
        }
        self.remove_sent_segments(st);
        st.cursor_dirty = true;
        if st.cursor_at.elapsed() >= CURSOR_EVERY {
            self.write_cursor(st);
        }
        self.update_gauges(st);
        self.progress.notify_waiters();
    }

    /// Deletes the segments every entry of which is retired (the last one stays open
    /// for appends): those below `low`, and those inside one retired range (sent while
    /// an older entry is still being retried, or dropped by `drop_oldest`).
    fn remove_sent_segments(&self, st: &mut State<S>) {
        let last = st.segments.len().saturating_sub(1);
        let (low, retired) = (st.low, &st.retired);
        let mut gone = Vec::new();
        let mut i = 0;
        st.segments.retain(|seg| {
            let keep = i == last
                || !(seg.next <= low
                    || retired
                        .range(..=seg.first)
                        .next_back()
                        .is_some_and(|(_, &end)| end >= seg.next));
            i += 1;
            if !keep {
                gone.push((seg.path.clone(), seg.bytes));
            }
            keep
        });
        for (path, bytes) in gone {
            st.disk_bytes -= bytes;
            if let Err(e) = std::fs::remove_file(&path) {
                warn!(queue = %self.name, file = %path.display(), error = %e, "cannot delete a sent segment");
            }
        }
    }

    fn write_cursor(&self, st: &mut State<S>) {
        if !st.cursor_dirty {
            return;
        }
        match write_cursor(&self.dir, st.low, &st.retired, self.settings.fsync) {
            Ok(()) => st.cursor_dirty = false,
            Err(e) => {
                if let Some(held_back) = self.error_log.check() {
                    warn!(queue = %self.name, directory = %self.dir.display(), error = %e, similar_lines_held_back = held_back, "cannot save the persistent queue's cursor: sent data may be sent again after a restart");
                }
            }
        }
        st.cursor_at = Instant::now();
    }

    /// Saves the cursor and stops taking appends. Returns the items kept for the next
    /// start.
    pub fn close(&self) -> u64 {
        let mut st = self.lock();
        st.closed = true;
        self.write_cursor(&mut st);
        if let Some(f) = &st.file {
            if self.settings.fsync {
                let _ = f.sync_data();
            }
        }
        if st.live_items > 0 {
            info!(queue = %self.name, directory = %self.dir.display(), kept_items = st.live_items, "undelivered data is kept on disk for the next start");
        }
        st.live_items
    }

    /// Items held (appended, not yet retired).
    pub fn items(&self) -> u64 {
        self.lock().live_items
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.lock().disk_bytes
    }

    /// Bytes of the entries not yet retired, as the queue's limit counts them.
    pub fn live_bytes(&self) -> u64 {
        self.lock().live_bytes
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

/// A journal seen without its signal, to close it at the end of a run.
pub trait Close: Send + Sync {
    /// Saves the cursor; returns the items kept for the next start.
    fn close(&self) -> u64;
}

impl<S: Signal> Close for Journal<S> {
    fn close(&self) -> u64 {
        Journal::close(self)
    }
}

impl<S: Signal> Retire for Journal<S> {
    fn retire(&self, seq: u64, items: u64, bytes: u64) {
        let mut st = self.lock();
        if seq < st.low || in_ranges(&st.retired, seq) {
            return;
        }
        self.retire_range(&mut st, seq, seq + 1, (items, bytes, 1));
    }
}

fn journal_metrics(t: &Telemetry, name: &str, settings: &JournalSettings) -> Metrics {
    let labels = [("pipeline", name)];
    let capacity = |n: &str, v: Option<usize>| {
        if let Some(v) = v {
            t.gauge(n, "Fixed capacity of the persistent queue.", &labels)
                .set(v as i64);
        }
    };
    capacity(
        "sidekick_persistent_queue_capacity_bytes",
        settings.limit.bytes,
    );
    capacity(
        "sidekick_persistent_queue_capacity_items",
        settings.limit.items,
    );
    capacity(
        "sidekick_persistent_queue_capacity_requests",
        settings.limit.requests,
    );
    Metrics {
        persisted: t.counter(
            "sidekick_persistent_queue_persisted_items_total",
            "Items written to the persistent queue (acknowledged once written).",
            &labels,
        ),
        replayed: t.counter(
            "sidekick_persistent_queue_replayed_items_total",
            "Items found in the persistent queue at start, left by the previous run, and sent again.",
            &labels,
        ),
        corrupt: t.counter(
            "sidekick_persistent_queue_corrupt_records_total",
            "Damaged records found in the persistent queue (torn writes, changed files): skipped with the rest of their segment.",
            &labels,
        ),
        dropped: t.counter(
            "sidekick_persistent_queue_dropped_items_total",
            "Items deleted from a full persistent queue (drop_oldest).",
            &labels,
        ),
        fsyncs: t.counter(
            "sidekick_persistent_queue_fsyncs_total",
            "Syncs of the persistent queue to the device (fsync: true).",
            &labels,
        ),
        bytes: t.gauge(
            "sidekick_persistent_queue_size_bytes",
            "Bytes the persistent queue takes on disk.",
            &labels,
        ),
        items: t.gauge(
            "sidekick_persistent_queue_size_items",
            "Items in the persistent queue not yet delivered.",
            &labels,
        ),
        telemetry: Some(t.clone()),
    }
}

#[cfg(test)]
mod tests;
