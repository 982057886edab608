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

use crate::base::BoxFuture;
use crate::base::Deadline;
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

/// Why an append was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    #[error("the persistent queue is full")]
    Full,
    #[error("the persistent queue cannot write: {0}")]
    Storage(String),
}

impl From<AppendError> for SendError {
    fn from(_: AppendError) -> Self {
        SendError::Full
    }
}

/// A sync in progress; if its caller goes away before it ends, the next caller starts one.
struct SyncTurn<'a, S: Signal> {
    journal: &'a Journal<S>,
    done: bool,
}

impl<S: Signal> Drop for SyncTurn<'_, S> {
    fn drop(&mut self) {
        if !self.done {
            self.journal.lock().syncing = false;
            self.journal.progress.notify_waiters();
        }
    }
}

/// Forgets cached entries up to `seq` (handed on from disk, or dropped).
fn uncache_through<S: Signal>(st: &mut State<S>, seq: u64) {
    while st.cache.front().is_some_and(|c| c.seq <= seq) {
        if let Some(c) = st.cache.pop_front() {
            st.cache_bytes -= c.bytes;
        }
    }
}

/// What a read gave the feeder.
enum Taken<S: Signal> {
    Entry(u64, Batch<S>),
    /// Look again (moved on, or the state changed meanwhile).
    Again,
    /// The file could not be read: wait, then try again.
    Backoff,
}

/// Where the feeder reads next, found under the lock and read outside it.
struct Pending {
    path: PathBuf,
    first: u64,
    offset: u64,
    end: u64,
    following: Option<u64>,
    generation: u64,
    reader: Option<Arc<File>>,
}

/// A record read back from a segment.
struct Record {
    seq: u64,
    items: u32,
    payload: Bytes,
    len: u64,
}

enum ReadOutcome {
    Record(Record),
    /// Nothing (more) in this segment.
    End,
    /// A record that fails its checksum or framing, at this offset.
    Corrupt(String),
    /// The file could not be read (not a fault of the data: try again).
    Io(std::io::Error),
}

fn read_record(file: &File, offset: u64, end: u64) -> ReadOutcome {
    if offset >= end {
        return ReadOutcome::End;
    }
    if end - offset < HEADER as u64 {
        return ReadOutcome::Corrupt(format!("a record header cut short at byte {offset}"));
    }
    let mut header = [0u8; HEADER];
    if let Err(e) = file.read_exact_at(&mut header, offset) {
        return ReadOutcome::Io(e);
    }
    let len = u32::from_le_bytes(header[0..4].try_into().unwrap_or_default()) as u64;
    let crc = u32::from_le_bytes(header[4..8].try_into().unwrap_or_default());
    let seq = u64::from_le_bytes(header[8..16].try_into().unwrap_or_default());
    let items = u32::from_le_bytes(header[16..20].try_into().unwrap_or_default());
    if len > MAX_RECORD || offset + HEADER as u64 + len > end {
        return ReadOutcome::Corrupt(format!(
            "a record at byte {offset} runs past the end of the file"
        ));
    }
    let mut payload = vec![0u8; len as usize];
    if let Err(e) = file.read_exact_at(&mut payload, offset + HEADER as u64) {
        return ReadOutcome::Io(e);
    }
    let mut h = crc32fast::Hasher::new();
    h.update(&header[8..20]);
    h.update(&payload);
    if h.finalize() != crc {
        return ReadOutcome::Corrupt(format!("a record at byte {offset} fails its checksum"));
    }
    ReadOutcome::Record(Record {
        seq,
        items,
        payload: Bytes::from(payload),
        len: HEADER as u64 + len,
    })
}

fn segment_name(first: u64) -> String {
    format!("{first:020}.{SEGMENT_EXT}")
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
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

    fn fits(&self, st: &State<S>, bytes: u64, items: u64) -> bool {
        let l = &self.settings.limit;
        // Into an empty journal anything goes, so one oversized request cannot stall it.
        if st.live_entries == 0 {
            return true;
        }
        l.bytes.is_none_or(|b| st.live_bytes + bytes <= b as u64)
            && l.items.is_none_or(|i| st.live_items + items <= i as u64)
            && l.requests.is_none_or(|r| st.live_entries < r as u64)
    }

    /// Whether an entry of this size fits now (or would, after dropping the oldest).
    pub fn has_room(&self, batch: &Batch<S>) -> bool {
        let st = self.lock();
        self.settings.drop_oldest
            || self.fits(&st, batch.size() as u64 + HEADER as u64, batch.len() as u64)
    }

    /// Waits up to `wait` for room for `batch`.
    pub async fn wait_room(
        &self,
        batch: &Batch<S>,
        wait: Option<Duration>,
    ) -> Result<(), SendError> {
        let until = wait.map(|w| tokio::time::Instant::now() + w);
        loop {
            let progress = self.progress.notified();
            tokio::pin!(progress);
            progress.as_mut().enable();
            if self.has_room(batch) {
                return Ok(());
            }
            match until {
                Some(until) => {
                    if tokio::time::timeout_at(until, progress).await.is_err() {
                        return Err(SendError::Full);
                    }
                }
                None => progress.await,
            }
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
            t.record_dropped(items);
        }
        if let Some(held_back) = self.error_log.check() {
            error!(queue = %self.name, dropped_items = items, similar_lines_held_back = held_back, "persistent queue is full: dropped its oldest data not yet sent (when_full: drop_oldest)");
        }
        true
    }

    /// The oldest entry not yet handed on (sequence, items, record bytes), taken from the
    /// cache or found by reading record headers from the feeder's position on.
    fn take_oldest_unfed(&self, st: &mut State<S>) -> Option<(u64, u64, u64)> {
        if st.feed_seq >= st.next_seq {
            return None;
        }
        if st.cache.front().is_some_and(|c| c.seq == st.feed_seq) {
            let c = st.cache.pop_front()?;
            st.cache_bytes -= c.bytes;
            st.read_segment = c.segment;
            st.read_offset = c.end;
            return Some((c.seq, c.batch.len() as u64, (c.bytes + HEADER) as u64));
        }
        loop {
            let i = self.read_index(st)?;
            let seg = &st.segments[i];
            let offset = if seg.first == st.read_segment {
                st.read_offset
            } else {
                0
            };
            if offset + HEADER as u64 > seg.bytes {
                let next = st.segments.get(i + 1)?.first;
                st.read_segment = next;
                st.read_offset = 0;
                continue;
            }
            let file = File::open(&seg.path).ok()?;
            let mut header = [0u8; HEADER];
            file.read_exact_at(&mut header, offset).ok()?;
            let len = u32::from_le_bytes(header[0..4].try_into().ok()?) as u64;
            let seq = u64::from_le_bytes(header[8..16].try_into().ok()?);
            let items = u32::from_le_bytes(header[16..20].try_into().ok()?) as u64;
            if offset + HEADER as u64 + len > seg.bytes {
                return None;
            }
            st.read_segment = seg.first;
            st.read_offset = offset + HEADER as u64 + len;
            if seq >= st.feed_seq && !in_ranges(&st.retired, seq) {
                // Whatever of it is still cached goes with it.
                uncache_through(st, seq);
                return Some((seq, items, HEADER as u64 + len));
            }
        }
    }

    /// The segment holding the feeder's position: the one it reads, else the first that
    /// still holds entries it has not handed on.
    fn read_index(&self, st: &State<S>) -> Option<usize> {
        st.segments
            .iter()
            .position(|s| s.first == st.read_segment)
            .or_else(|| st.segments.iter().position(|s| s.next > st.feed_seq))
    }

    /// Appends `batch` as one entry. Returns the entry's sequence number once it is
    /// written; with `fsync`, wait for [`Journal::synced`] before acknowledging.
    pub fn append(&self, batch: &Batch<S>) -> Result<u64, AppendError> {
        let chunks = batch.encoded_chunks();
        let size: usize = chunks.iter().map(Bytes::len).sum();
        let record_len = (HEADER + size) as u64;
        let items = batch.len() as u64;
        let mut guard = self.lock();
        let st = &mut *guard;
        if st.closed {
            return Err(AppendError::Storage("the queue is closed".into()));
        }
        while !self.fits(st, record_len, items) {
            if !(self.settings.drop_oldest && self.drop_oldest(st)) {
                return Err(AppendError::Full);
            }
        }
        let result = self.write_record(st, &chunks, size, items);
        let seq = match result {
            Ok(seq) => seq,
            Err(e) => {
                if let Some(held_back) = self.error_log.check() {
                    error!(queue = %self.name, directory = %self.dir.display(), error = %e, similar_lines_held_back = held_back, "persistent queue cannot write: refusing data until it can");
                }
                return Err(AppendError::Storage(e.to_string()));
            }
        };
        self.metrics.persisted.add(items);
        // The cache holds the unfed entries from `feed_seq` on, without gaps.
        let (segment, end) = st
            .segments
            .back()
            .map(|s| (s.first, s.bytes))
            .unwrap_or_default();
        let room = st.cache_bytes + size <= CACHE_BYTES;
        let contiguous = if st.cache.is_empty() {
            st.feed_seq == seq
        } else {
            st.cache_open
        };
        if room && contiguous {
            st.cache.push_back(Cached {
                seq,
                batch: batch.clone(),
                bytes: size,
                segment,
                end,
            });
            st.cache_bytes += size;
            st.cache_open = true;
        } else if !st.cache.is_empty() {
            st.cache_open = false;
        }
        self.update_gauges(st);
        drop(guard);
        self.appended.notify_one();
        Ok(seq)
    }

    fn write_record(
        &self,
        st: &mut State<S>,
        chunks: &[Bytes],
        size: usize,
        items: u64,
    ) -> std::io::Result<u64> {
        let seq = st.next_seq;
        let needs_new = match st.segments.back() {
            None => true,
            // A full segment, one left by the previous run, or one whose every entry
            // was sent (so its file can go at once).
            Some(last) => {
                last.bytes >= self.settings.segment_bytes
                    || st.file.is_none()
                    || (last.bytes > 0 && last.next <= st.low)
            }
        };
        if needs_new {
            if let (Some(f), true) = (&st.file, self.settings.fsync) {
                f.sync_data()?;
            }
            let path = self.dir.join(segment_name(seq));
            let file = File::options().create(true).append(true).open(&path)?;
            // A segment left by the previous run stays closed; appends go to new ones.
            st.file = Some(file);
            st.segments.push_back(Segment {
                first: seq,
                next: seq,
                bytes: 0,
                items: 0,
                path,
            });
            if self.settings.fsync {
                sync_dir(&self.dir)?;
            }
            self.remove_sent_segments(st);
        }
        // The header, then the batch's own chunks: no copy of the payload here.
        let mut header = [0u8; HEADER];
        header[0..4].copy_from_slice(&(size as u32).to_le_bytes());
        header[8..16].copy_from_slice(&seq.to_le_bytes());
        header[16..20].copy_from_slice(&(items as u32).to_le_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&header[8..20]);
        chunks.iter().for_each(|c| crc.update(c));
        header[4..8].copy_from_slice(&crc.finalize().to_le_bytes());
        let file = st
            .file
            .as_mut()
            .ok_or_else(|| std::io::Error::other("no open segment"))?;
        let written = write_all_vectored(file, &header, chunks);
        let last = st
            .segments
            .back_mut()
            .ok_or_else(|| std::io::Error::other("no segment"))?;
        if let Err(e) = written {
            // Cut a partly written record off, and begin a new segment with the next
            // append (an empty one is removed), so writing resumes once space returns.
            let _ = file.set_len(last.bytes);
            // What this file holds must still be synced before its appends are answered.
            if self.settings.fsync && st.synced < st.next_seq {
                match file.sync_data() {
                    Ok(()) => st.synced = st.next_seq,
                    Err(_) => st.sync_failed_below = st.next_seq,
                }
            }
            st.file = None;
            if last.bytes == 0 {
                if let Some(seg) = st.segments.pop_back() {
                    let _ = std::fs::remove_file(&seg.path);
                }
            }
            return Err(e);
        }
        let len = (HEADER + size) as u64;
        last.bytes += len;
        last.next = seq + 1;
        last.items += items;
        st.disk_bytes += len;
        st.next_seq = seq + 1;
        st.live_items += items;
        st.live_entries += 1;
        st.live_bytes += len;
        Ok(seq)
    }

    /// Resolves once the entry `seq` is synced to the device (at once without `fsync`).
    /// Appends that arrive while a sync runs share the next one.
    pub async fn synced(&self, seq: u64) -> Result<(), AppendError> {
        if !self.settings.fsync {
            return Ok(());
        }
        loop {
            let progress = self.progress.notified();
            tokio::pin!(progress);
            progress.as_mut().enable();
            let job = {
                let mut st = self.lock();
                if st.synced > seq {
                    return Ok(());
                }
                if seq < st.sync_failed_below {
                    return Err(AppendError::Storage("cannot sync to disk".into()));
                }
                if st.syncing {
                    None
                } else {
                    st.syncing = true;
                    let file = st.file.as_ref().map(File::try_clone);
                    Some((file, st.next_seq))
                }
            };
            let Some((file, upto)) = job else {
                progress.await;
                continue;
            };
            // Whoever started a sync ends it, even if this future is dropped meanwhile.
            let mut turn = SyncTurn {
                journal: self,
                done: false,
            };
            let result = match file {
                Some(Ok(f)) => tokio::task::spawn_blocking(move || f.sync_data())
                    .await
                    .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string()))),
                Some(Err(e)) => Err(e),
                None => Ok(()),
            };
            {
                let mut st = self.lock();
                st.syncing = false;
                turn.done = true;
                if result.is_ok() {
                    st.synced = st.synced.max(upto);
                    self.metrics.fsyncs.add(1);
                }
            }
            self.progress.notify_waiters();
            if let Err(e) = result {
                if let Some(held_back) = self.error_log.check() {
                    error!(queue = %self.name, directory = %self.dir.display(), error = %e, similar_lines_held_back = held_back, "persistent queue cannot sync to disk: refusing data until it can");
                }
                return Err(AppendError::Storage(e.to_string()));
            }
        }
    }

    /// The next entry to hand on, or `None` once every writer is gone and everything
    /// was handed on.
    /// The next entry to hand on: its number, batch and the bytes its record holds after
    /// the header.
    async fn next_entry(self: &Arc<Self>) -> Option<(u64, Batch<S>, usize)> {
        let mut io_wait = Duration::from_millis(100);
        loop {
            let appended = self.appended.notified();
            tokio::pin!(appended);
            appended.as_mut().enable();
            // Under the lock: take a cached entry, or find where to read.
            let read = {
                let mut guard = self.lock();
                let st = &mut *guard;
                if st.feed_seq >= st.next_seq {
                    if st.writers == 0 {
                        return None;
                    }
                    None
                } else if st.cache.front().is_some_and(|c| c.seq == st.feed_seq) {
                    let c = st.cache.pop_front()?;
                    st.cache_bytes -= c.bytes;
                    st.feed_seq = c.seq + 1;
                    st.read_segment = c.segment;
                    st.read_offset = c.end;
                    return Some((c.seq, c.batch, c.bytes));
                } else {
                    match self.read_index(st) {
                        None => {
                            // Nothing on disk below the cache: go on from the cache.
                            let to = st.cache.front().map_or(st.next_seq, |c| c.seq);
                            self.skip(st, to);
                            continue;
                        }
                        Some(i) => {
                            let seg = &st.segments[i];
                            let offset = if seg.first == st.read_segment {
                                st.read_offset
                            } else {
                                0
                            };
                            let reader = st
                                .reader
                                .as_ref()
                                .filter(|(first, _)| *first == seg.first)
                                .map(|(_, f)| Arc::clone(f));
                            Some(Pending {
                                path: seg.path.clone(),
                                first: seg.first,
                                offset,
                                end: seg.bytes,
                                following: st.segments.get(i + 1).map(|s| s.first),
                                generation: st.generation,
                                reader,
                            })
                        }
                    }
                }
            };
            let Some(at) = read else {
                // Idle: save the cursor if deliveries changed it since it was last saved.
                tokio::select! {
                    _ = appended => {}
                    _ = tokio::time::sleep(CURSOR_EVERY) => self.write_cursor(&mut self.lock()),
                }
                continue;
            };
            // Read outside the lock: appends go on meanwhile.
            let file = match at.reader.clone() {
                Some(f) => Ok(f),
                None => File::open(&at.path).map(Arc::new),
            };
            let outcome = match &file {
                Ok(f) => read_record(f, at.offset, at.end),
                Err(e) => ReadOutcome::Io(std::io::Error::new(e.kind(), e.to_string())),
            };
            let taken = self.take_read(&at, file.ok(), outcome);
            match taken {
                // Read back from disk: encoded as stored, so its size is exact.
                Taken::Entry(seq, batch) => {
                    let bytes = batch.size();
                    return Some((seq, batch, bytes));
                }
                Taken::Again => {}
                Taken::Backoff => {
                    tokio::time::sleep(io_wait).await;
                    io_wait = (io_wait * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Takes what the feeder read at `at` into the state.
    fn take_read(&self, at: &Pending, file: Option<Arc<File>>, outcome: ReadOutcome) -> Taken<S> {
        let mut guard = self.lock();
        let st = &mut *guard;
        if let Some(f) = file {
            st.reader = Some((at.first, f));
        }
        if st.generation != at.generation {
            return Taken::Again;
        }
        let (first, offset) = (at.first, at.offset);
        {
            match outcome {
                ReadOutcome::Record(r) if r.seq < st.feed_seq => {
                    st.read_segment = first;
                    st.read_offset = offset + r.len;
                }
                // Delivered before a restart (the cursor says so): not again.
                ReadOutcome::Record(r) if in_ranges(&st.retired, r.seq) => {
                    if r.seq > st.feed_seq {
                        self.skip(st, r.seq);
                    }
                    st.feed_seq = r.seq + 1;
                    st.read_segment = first;
                    st.read_offset = offset + r.len;
                }
                ReadOutcome::Record(r) => {
                    if r.seq > st.feed_seq {
                        self.skip(st, r.seq);
                    }
                    st.feed_seq = r.seq + 1;
                    st.read_segment = first;
                    st.read_offset = offset + r.len;
                    // Entries read back from disk may still sit in the cache.
                    uncache_through(st, r.seq);
                    return Taken::Entry(r.seq, Batch::from_stored(r.payload, r.items as usize));
                }
                ReadOutcome::End => {
                    let grown = st
                        .segments
                        .iter()
                        .find(|s| s.first == first)
                        .is_some_and(|s| s.bytes > offset);
                    match at.following {
                        // Appended to since it was looked at: read on.
                        _ if grown => {}
                        Some(next) => {
                            st.read_segment = next;
                            st.read_offset = 0;
                        }
                        None => {
                            // The last segment is read to its end; the rest is in the cache.
                            let to = st.cache.front().map_or(st.next_seq, |c| c.seq);
                            self.skip(st, to);
                        }
                    }
                }
                ReadOutcome::Io(e)
                    if e.kind() == std::io::ErrorKind::NotFound
                        && !st.segments.iter().any(|s| s.first == first) =>
                {
                    // Sent and deleted meanwhile: look again.
                }
                ReadOutcome::Io(e) => {
                    // Not the data's fault (too many open files, a flaky device): the
                    // entries stay and the read is tried again.
                    if let Some(held_back) = self.error_log.check() {
                        error!(queue = %self.name, file = %at.path.display(), error = %e, similar_lines_held_back = held_back, "cannot read the persistent queue: trying again");
                    }
                    return Taken::Backoff;
                }
                ReadOutcome::Corrupt(why) => {
                    self.metrics.corrupt.add(1);
                    error!(queue = %self.name, file = %at.path.display(), error = %why, "persistent queue record is damaged: skipping the rest of its segment");
                    let to = at
                        .following
                        .unwrap_or_else(|| st.cache.front().map_or(st.next_seq, |c| c.seq));
                    self.skip(st, to);
                    st.read_segment = at.following.unwrap_or(st.next_seq);
                    st.read_offset = 0;
                }
            }
        }
        Taken::Again
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

/// What a segment left by a previous run holds.
struct Scanned {
    segment: Segment,
    live_items: u64,
    live_bytes: u64,
}

/// Reads a segment left by a previous run: its entries `is_live` says are not yet
/// delivered are live. A damaged record cuts the segment there (counted). An error: the
/// segment cannot be read at all (it is left in place, never deleted as empty).
fn scan_segment(
    path: &Path,
    first: u64,
    is_live: &dyn Fn(u64) -> bool,
    recovered: &mut Recovered,
    name: &str,
) -> Result<Scanned, String> {
    let cannot = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
    let file = File::options()
        .read(true)
        .write(true)
        .open(path)
        .map_err(cannot)?;
    let end = file.metadata().map_err(cannot)?.len();
    let mut offset = 0;
    let mut next = first;
    let mut items = 0;
    let mut live = 0;
    let mut live_bytes = 0;
    loop {
        match read_record(&file, offset, end) {
            ReadOutcome::Record(r) => {
                if r.seq < next {
                    recovered.corrupt += 1;
                    error!(queue = %name, file = %path.display(), offset, "persistent queue record out of order: cutting the segment there");
                    let _ = file.set_len(offset);
                    break;
                }
                offset += r.len;
                next = r.seq + 1;
                items += r.items as u64;
                if is_live(r.seq) {
                    live += r.items as u64;
                    live_bytes += r.len;
                    recovered.entries += 1;
                    recovered.items += r.items as u64;
                }
            }
            ReadOutcome::End => break,
            ReadOutcome::Io(e) => return Err(cannot(e)),
            ReadOutcome::Corrupt(why) => {
                recovered.corrupt += 1;
                error!(queue = %name, file = %path.display(), error = %why, lost_bytes = end - offset, "persistent queue segment is damaged (a write cut short by a crash, or changed on disk): keeping what is before the damage");
                if let Err(e) = file.set_len(offset) {
                    return Err(format!(
                        "cannot cut the damaged segment {}: {e}",
                        path.display()
                    ));
                }
                break;
            }
        }
    }
    Ok(Scanned {
        segment: Segment {
            first,
            next,
            bytes: offset,
            items,
            path: path.to_path_buf(),
        },
        live_items: live,
        live_bytes,
    })
}

/// Writes `header` and `chunks` with as few system calls as the kernel allows.
fn write_all_vectored(file: &mut File, header: &[u8], chunks: &[Bytes]) -> std::io::Result<()> {
    let mut slices: Vec<std::io::IoSlice<'_>> = std::iter::once(header)
        .chain(chunks.iter().map(|c| c.as_ref()))
        .filter(|s| !s.is_empty())
        .map(std::io::IoSlice::new)
        .collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        match file.write_vectored(rest) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => std::io::IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Adds `from..to` to `ranges`, merged with the ranges it overlaps or touches, so the map
/// stays one entry per run of retired entries.
fn insert_range(ranges: &mut BTreeMap<u64, u64>, mut from: u64, mut to: u64) {
    if let Some((&start, &end)) = ranges.range(..=from).next_back() {
        if end >= from {
            from = start;
            to = to.max(end);
            ranges.remove(&start);
        }
    }
    while let Some((&start, &end)) = ranges.range(from..).next() {
        if start > to {
            break;
        }
        to = to.max(end);
        ranges.remove(&start);
    }
    ranges.insert(from, to);
}

/// Whether `seq` is in one of the retired ranges.
fn in_ranges(ranges: &BTreeMap<u64, u64>, seq: u64) -> bool {
    ranges
        .range(..=seq)
        .next_back()
        .is_some_and(|(_, &end)| seq < end)
}

/// Retired ranges saved in the cursor beyond this many are left out (they are sent again
/// after a crash; the cursor stays small).
const CURSOR_RANGES: usize = 4096;

/// The cursor: `low u64, n u32, n × (from u64, to u64), crc32 u32`. What is below `low`
/// and in the ranges was delivered. A damaged cursor means everything on disk is sent
/// again (duplicates, never loss).
fn read_cursor(dir: &Path) -> (u64, BTreeMap<u64, u64>) {
    let path = dir.join("cursor");
    let parse = |b: &[u8]| -> Option<(u64, BTreeMap<u64, u64>)> {
        let (body, crc) = b.split_at_checked(b.len().checked_sub(4)?)?;
        if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().ok()?) {
            return None;
        }
        let low = u64::from_le_bytes(body.get(0..8)?.try_into().ok()?);
        let n = u32::from_le_bytes(body.get(8..12)?.try_into().ok()?) as usize;
        let mut ranges = BTreeMap::new();
        for i in 0..n {
            let at = 12 + i * 16;
            let from = u64::from_le_bytes(body.get(at..at + 8)?.try_into().ok()?);
            let to = u64::from_le_bytes(body.get(at + 8..at + 16)?.try_into().ok()?);
            if from > low && to > from {
                ranges.insert(from, to);
            }
        }
        Some((low, ranges))
    };
    match std::fs::read(&path) {
        Ok(b) => parse(&b).unwrap_or_else(|| {
            warn!(file = %path.display(), "persistent queue cursor is damaged: sending everything on disk again");
            (0, BTreeMap::new())
        }),
        Err(_) => (0, BTreeMap::new()),
    }
}

fn write_cursor(
    dir: &Path,
    low: u64,
    ranges: &BTreeMap<u64, u64>,
    fsync: bool,
) -> std::io::Result<()> {
    let n = ranges.len().min(CURSOR_RANGES);
    let mut b = Vec::with_capacity(16 + n * 16);
    b.extend_from_slice(&low.to_le_bytes());
    b.extend_from_slice(&(n as u32).to_le_bytes());
    for (from, to) in ranges.iter().take(n) {
        b.extend_from_slice(&from.to_le_bytes());
        b.extend_from_slice(&to.to_le_bytes());
    }
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    let tmp = dir.join("cursor.tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(&b)?;
    if fsync {
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join("cursor"))
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

/// A receiver output's handle on a journal.
pub struct JournalSender<S: Signal> {
    journal: Arc<Journal<S>>,
    item_limit: Option<usize>,
}

impl<S: Signal> Clone for JournalSender<S> {
    fn clone(&self) -> Self {
        self.journal.sender().with_item_limit(self.item_limit)
    }
}

impl<S: Signal> Drop for JournalSender<S> {
    fn drop(&mut self) {
        self.journal.lock().writers -= 1;
        self.journal.appended.notify_one();
    }
}

impl<S: Signal> JournalSender<S> {
    pub fn with_item_limit(mut self, bytes: Option<usize>) -> Self {
        self.item_limit = bytes;
        self
    }

    pub fn item_limit(&self) -> Option<usize> {
        self.item_limit
    }

    pub fn journal(&self) -> &Arc<Journal<S>> {
        &self.journal
    }
}

impl<S: Signal> Durable<S> for JournalSender<S> {
    fn has_room(&self, batch: &Batch<S>) -> bool {
        self.journal.has_room(batch)
    }

    fn wait_room<'a>(
        &'a self,
        batch: &'a Batch<S>,
        wait: Option<Duration>,
    ) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(self.journal.wait_room(batch, wait))
    }

    fn append(&self, batch: &Batch<S>) -> Result<u64, SendError> {
        Ok(self.journal.append(batch)?)
    }

    fn synced(&self, seq: u64) -> BoxFuture<'_, Result<(), SendError>> {
        Box::pin(async move { Ok(self.journal.synced(seq).await?) })
    }

    fn item_limit(&self) -> Option<usize> {
        self.item_limit
    }

    fn clone_box(&self) -> Box<dyn Durable<S>> {
        Box::new(self.clone())
    }
}

/// Hands the journal's entries, oldest first, to the pipeline's first stage, each with
/// its ticket, until every writer is gone and everything was handed on, or the shutdown
/// deadline passes (what is left stays on disk).
pub async fn feed<S: Signal>(journal: Arc<Journal<S>>, output: Output<S>, mut deadline: Deadline) {
    let weak: Weak<dyn Retire> = {
        let w: Weak<Journal<S>> = Arc::downgrade(&journal);
        w
    };
    loop {
        let next = tokio::select! {
            n = journal.next_entry() => n,
            _ = deadline.passed() => return,
        };
        let Some((seq, batch, bytes)) = next else {
            return;
        };
        let items = batch.len();
        let bytes = (bytes + HEADER) as u64;
        let ticket = Ticket::new(weak.clone(), seq, items as u64, bytes);
        let sent = tokio::select! {
            r = output.send_ticketed(batch, vec![(ticket.clone(), items)]) => r.is_ok(),
            _ = deadline.passed() => false,
        };
        if !sent {
            ticket.keep();
            return;
        }
    }
}

#[cfg(test)]
mod tests;
