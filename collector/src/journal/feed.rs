//! The reader side: one feeder per journal hands the entries, oldest first, to the
//! pipeline's first stage, each with its ticket; from the memory cache while the
//! pipeline keeps up, from disk when the backlog outgrew the cache.

use super::*;

/// What a read gave the feeder.
pub(super) enum Taken<S: Signal> {
    Entry(u64, Batch<S>),
    /// Look again (moved on, or the state changed meanwhile).
    Again,
    /// The file could not be read: wait, then try again.
    Backoff,
}

/// Where the feeder reads next, found under the lock and read outside it.
pub(super) struct Pending {
    pub(super) path: PathBuf,
    pub(super) first: u64,
    pub(super) offset: u64,
    pub(super) end: u64,
    pub(super) following: Option<u64>,
    pub(super) generation: u64,
    pub(super) reader: Option<Arc<File>>,
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

impl<S: Signal> Journal<S> {
    /// The oldest entry not yet handed on (sequence, items, record bytes), taken from the
    /// cache or found by reading record headers from the feeder's position on.
    pub(super) fn take_oldest_unfed(&self, st: &mut State<S>) -> Option<(u64, u64, u64)> {
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
    pub(super) fn read_index(&self, st: &State<S>) -> Option<usize> {
        st.segments
            .iter()
            .position(|s| s.first == st.read_segment)
            .or_else(|| st.segments.iter().position(|s| s.next > st.feed_seq))
    }

    /// The next entry to hand on, or `None` once every writer is gone and everything
    /// was handed on.
    /// The next entry to hand on: its number, batch and the bytes its record holds after
    /// the header.
    pub(super) async fn next_entry(self: &Arc<Self>) -> Option<(u64, Batch<S>, usize)> {
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
    pub(super) fn take_read(
        &self,
        at: &Pending,
        file: Option<Arc<File>>,
        outcome: ReadOutcome,
    ) -> Taken<S> {
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
}
