//! The writer side: a receiver's [`JournalSender`] appends each request (waiting for
//! room, dropping the oldest when so configured) and waits until it is synced.

use super::*;

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
pub(super) struct SyncTurn<'a, S: Signal> {
    pub(super) journal: &'a Journal<S>,
    pub(super) done: bool,
}

impl<S: Signal> Drop for SyncTurn<'_, S> {
    fn drop(&mut self) {
        if !self.done {
            self.journal.lock().syncing = false;
            self.journal.progress.notify_waiters();
        }
    }
}

/// A receiver output's handle on a journal.
pub struct JournalSender<S: Signal> {
    pub(super) journal: Arc<Journal<S>>,
    pub(super) item_limit: Option<usize>,
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

impl<S: Signal> Journal<S> {
    pub(super) fn fits(&self, st: &State<S>, bytes: u64, items: u64) -> bool {
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

    pub(super) fn write_record(
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
}
