//! Finding, following and reading the files a `filelog` receiver tails.
//!
//! A file is known by its fingerprint (its first `fingerprint_size` bytes), not its name:
//! - renamed (rotation by rename): the same fingerprint under another name, or no name
//!   at all; what is still unread is read from the open descriptor before it is closed,
//!   so lines written just before the rotation are read once;
//! - a new file under the old name has a new fingerprint and is read from its start;
//! - truncated in place (copytruncate): shorter than the offset, or with a different
//!   beginning: read again from its start;
//! - deleted: its descriptor is closed once it no longer matches.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::time::{Duration, Instant};

use regex::Regex;

/// Bytes read from one file at a time.
pub const READ_CHUNK: usize = 64 << 10;

/// How a file's bytes become entries.
#[derive(Debug, Clone)]
pub struct Splitting {
    pub max_log_size: usize,
    pub line_start: Option<Regex>,
    pub line_end: Option<Regex>,
    pub force_flush: Duration,
}

/// One file being followed.
pub struct Tracked {
    pub path: String,
    file: File,
    fingerprint: Vec<u8>,
    pub offset: u64,
    /// Every byte before this has been handed on as part of an entry (or skipped): where
    /// reading would resume after a restart without losing or repeating an entry.
    pub safe: u64,
    /// Where the line being handled starts and ends (for `safe`).
    line_at: (u64, u64),
    /// Where the multiline entry being gathered starts.
    pending_start: u64,
    /// Bytes after the last line end, waiting for the rest of their line.
    partial: Vec<u8>,
    /// Inside a line longer than `max_log_size`: its start was emitted, skip to its end.
    skipping: bool,
    /// A multiline entry being gathered.
    pending: Vec<u8>,
    /// When bytes last arrived (for `force_flush_period`).
    last_data: Instant,
    /// Matched by the current poll.
    pub seen: bool,
    /// Joined CRI partial lines (`P`), waiting for their last piece.
    pub joined: String,
}

/// What a read of one file produced.
#[derive(Debug, Default)]
pub struct ReadStats {
    pub truncated: u64,
}

/// The paths matching `include` and none of `exclude`, sorted, at most once each.
pub fn matching(include: &[String], exclude: &[glob::Pattern]) -> Vec<String> {
    let mut out: Vec<String> = include
        .iter()
        .filter_map(|p| glob::glob(p).ok())
        .flatten()
        .filter_map(Result::ok)
        .filter(|p| p.is_file())
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|p| !exclude.iter().any(|e| e.matches(p)))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The first `size` bytes of `file` (fewer if it is shorter).
pub fn fingerprint(file: &mut File, size: usize) -> std::io::Result<Vec<u8>> {
    let mut fp = vec![0u8; size];
    file.seek(SeekFrom::Start(0))?;
    let mut n = 0;
    while n < size {
        match file.read(&mut fp[n..])? {
            0 => break,
            k => n += k,
        }
    }
    fp.truncate(n);
    Ok(fp)
}

impl Tracked {
    pub fn new(path: String, file: File, fingerprint: Vec<u8>, offset: u64) -> Tracked {
        Tracked {
            path,
            file,
            fingerprint,
            offset,
            safe: offset,
            line_at: (offset, offset),
            pending_start: offset,
            partial: Vec::new(),
            skipping: false,
            pending: Vec::new(),
            last_data: Instant::now(),
            seen: true,
            joined: String::new(),
        }
    }

    /// Whether a file whose first bytes are `fp` is this one (grown, perhaps).
    pub fn same(&self, fp: &[u8]) -> bool {
        !self.fingerprint.is_empty()
            && fp.len() >= self.fingerprint.len()
            && fp[..self.fingerprint.len()] == self.fingerprint[..]
    }

    /// The bytes that identify this file.
    pub fn fingerprint(&self) -> &[u8] {
        &self.fingerprint
    }

    /// No bytes came for `period`.
    pub fn quiet_for(&self, period: Duration) -> bool {
        self.last_data.elapsed() >= period
    }

    /// Takes a longer fingerprint of the same file.
    pub fn grow_fingerprint(&mut self, fp: Vec<u8>) {
        if fp.len() > self.fingerprint.len() {
            self.fingerprint = fp;
        }
    }

    /// Reads the next chunk (at most [`READ_CHUNK`] bytes) and hands each complete entry
    /// to `emit`; at the end of the file, also what waits for a line end or a multiline
    /// continuation once nothing came for `force_flush_period`. Returns bytes read.
    pub fn read(
        &mut self,
        split: &Splitting,
        buf: &mut Vec<u8>,
        stats: &mut ReadStats,
        emit: &mut dyn FnMut(&mut Tracked, &[u8]),
    ) -> std::io::Result<usize> {
        let len = self.file.metadata()?.len();
        if len < self.offset {
            if !self.seen {
                // Truncated, and no name shows this content any more (a new fingerprint
                // took over): nothing left to read here.
                return Ok(0);
            }
            // Truncated in place (copytruncate) and still beginning as before: start
            // over.
            self.offset = 0;
            self.safe = 0;
            self.pending.clear();
            self.partial.clear();
            self.skipping = false;
        }
        self.file.seek(SeekFrom::Start(self.offset))?;
        buf.resize(READ_CHUNK, 0);
        let n = self.file.read(buf)?;
        if n > 0 {
            let base = self.offset;
            self.offset += n as u64;
            self.last_data = Instant::now();
            self.take_lines(&buf[..n], base, split, stats, emit);
        } else if self.last_data.elapsed() >= split.force_flush {
            self.flush(split, stats, emit);
        }
        Ok(n)
    }

    /// Splits `chunk` into lines (joined with what was partial).
    fn take_lines(
        &mut self,
        mut chunk: &[u8],
        base: u64,
        split: &Splitting,
        stats: &mut ReadStats,
        emit: &mut dyn FnMut(&mut Tracked, &[u8]),
    ) {
        // The file offset of `chunk`'s first byte.
        let mut pos = base;
        while let Some(nl) = memchr(b'\n', chunk) {
            let piece = &chunk[..nl];
            chunk = &chunk[nl + 1..];
            let end = pos + nl as u64 + 1;
            self.line_at = (pos - self.partial.len() as u64, end);
            pos = end;
            if self.skipping {
                self.skipping = false;
                self.partial.clear();
                if self.pending.is_empty() {
                    self.safe = end;
                }
                continue;
            }
            if self.partial.is_empty() {
                self.line(trim_cr(piece), split, stats, emit);
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(piece);
                self.line(trim_cr(&line), split, stats, emit);
                line.clear();
                self.partial = line;
            }
        }
        if self.skipping || chunk.is_empty() {
            return;
        }
        let room = split.max_log_size.saturating_sub(self.partial.len());
        if chunk.len() <= room {
            self.partial.extend_from_slice(chunk);
        } else {
            // Over max_log_size without a line end: the first max_log_size bytes are an
            // entry of their own (counted), the rest of the line is skipped.
            self.partial.extend_from_slice(&chunk[..room]);
            let long = std::mem::take(&mut self.partial);
            stats.truncated += 1;
            // Handed on, but the rest of its line is still to be skipped: `safe` moves
            // at the line's end.
            let start = pos - (long.len() - room) as u64;
            self.line_at = (start, start);
            self.line(&long, split, stats, emit);
            self.safe = self.safe.min(start);
            self.skipping = true;
        }
    }

    /// One line: an entry, or part of a multiline one.
    fn line(
        &mut self,
        line: &[u8],
        split: &Splitting,
        stats: &mut ReadStats,
        emit: &mut dyn FnMut(&mut Tracked, &[u8]),
    ) {
        let line = if line.len() > split.max_log_size {
            stats.truncated += 1;
            &line[..split.max_log_size]
        } else {
            line
        };
        let (line_start, line_end) = self.line_at;
        if let Some(start) = &split.line_start {
            let text = String::from_utf8_lossy(line);
            if start.is_match(&text) && !self.pending.is_empty() {
                let entry = std::mem::take(&mut self.pending);
                emit(self, &entry);
            } else if !self.pending.is_empty() {
                self.pending.push(b'\n');
            }
            if self.pending.is_empty() {
                self.pending_start = line_start;
            }
            self.append_pending(line, split, stats);
            self.safe = self.pending_start;
            return;
        }
        if let Some(end) = &split.line_end {
            if self.pending.is_empty() {
                self.pending_start = line_start;
            } else {
                self.pending.push(b'\n');
            }
            self.append_pending(line, split, stats);
            if end.is_match(&String::from_utf8_lossy(line)) {
                let entry = std::mem::take(&mut self.pending);
                emit(self, &entry);
                self.safe = line_end;
            } else {
                self.safe = self.pending_start;
            }
            return;
        }
        emit(self, line);
        self.safe = line_end;
    }

    fn append_pending(&mut self, line: &[u8], split: &Splitting, stats: &mut ReadStats) {
        let room = split.max_log_size.saturating_sub(self.pending.len());
        if line.len() > room {
            stats.truncated += 1;
        }
        self.pending
            .extend_from_slice(&line[..line.len().min(room)]);
    }

    /// Hands over whatever waits: a partial last line, a multiline entry.
    pub fn flush(
        &mut self,
        split: &Splitting,
        stats: &mut ReadStats,
        emit: &mut dyn FnMut(&mut Tracked, &[u8]),
    ) {
        if !self.partial.is_empty() && !self.skipping {
            let line = std::mem::take(&mut self.partial);
            self.line_at = (self.offset - line.len() as u64, self.offset);
            self.line(trim_cr(&line), split, stats, emit);
        }
        if !self.pending.is_empty() {
            let entry = std::mem::take(&mut self.pending);
            emit(self, &entry);
        }
        if !self.skipping {
            self.safe = self.offset;
        }
    }
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

use memchr::memchr;
