//! The `filelog` receiver: tails log files (an app's logs on a shared `emptyDir`, or
//! `/var/log/pods`) and sends each line as an OTLP log record, configured as in the
//! OpenTelemetry Collector.
//!
//! ```yaml
//! receivers:
//!   filelog:
//!     include: [/var/log/app/*.log]
//!     start_at: beginning
//!     operators:
//!       - type: json_parser
//!         timestamp:
//!           parse_from: attributes.time
//!           layout: "%Y-%m-%dT%H:%M:%S%z"
//!         severity:
//!           parse_from: attributes.level
//! ```
//!
//! Files are polled every `poll_interval` and read in large chunks; records are written
//! as protobuf directly (no per-line allocation without operators) and sent in requests
//! of about 1 MiB, waiting while the pipeline is full, so a file is read no faster than
//! the backend takes it. Offsets are kept in memory: after a restart files are read
//! again as `start_at` says.
//!
//! Layout: `config` is the configuration and the factory; `files` follows and reads files; `operators` parses entries; `encode` writes
//! OTLP logs; `time` reads timestamps.

mod config;
mod encode;
mod files;
pub mod operators;
pub mod time;

use sidekick_collector::util::hex;
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use regex::Regex;
use serde::Deserialize;
use serde_json::{Map, Value};
use sidekick_collector::component::{
    BoxFuture, BuildContext, BuildError, FieldError, Receiver, ReceiverConfig, ReceiverOutputs,
};
use sidekick_collector::config::Duration as ConfigDuration;
use sidekick_collector::config::Signal as SignalKind;
use sidekick_collector::payload::{Batch, LogsSignal};
use sidekick_collector::pipe::{Output, SendError, Stop};
use sidekick_collector::telemetry::{Counter, Gauge, Telemetry};
use tracing::{debug, info, warn};

pub use config::*;
use encode::{RequestBuilder, Stamp};
use files::{ReadStats, Splitting, Tracked};
use operators::{Entry, Operator, OperatorConfig};

/// How often file offsets are saved, at most: the lines handed on in this last stretch
/// before a crash are read again after it.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// One file's saved offset.
#[derive(serde::Serialize, Deserialize)]
struct SavedOffset {
    fingerprint: String,
    offset: u64,
}

/// The offsets last saved, and when.
struct Checkpoint {
    last: Vec<u64>,
    at: std::time::Instant,
}

impl Default for Checkpoint {
    fn default() -> Self {
        Checkpoint {
            last: Vec::new(),
            at: std::time::Instant::now()
                .checked_sub(CHECKPOINT_EVERY)
                .unwrap_or_else(std::time::Instant::now),
        }
    }
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A request is sent once its records reach this many bytes.
const REQUEST_BYTES: usize = 256 << 10;
/// Bytes read from one file per poll before the others get their turn.
const FILE_BUDGET: usize = 16 << 20;

struct Counters {
    accepted: Counter,
    refused: Counter,
    truncated: Counter,
    open: Gauge,
    telemetry: Telemetry,
    /// Per operator: parse failures.
    failures: Vec<Counter>,
}

pub struct FileLog {
    name: String,
    config: Config,
    exclude: Vec<glob::Pattern>,
    operators: Vec<Operator>,
    splitting: Splitting,
    resource: Map<String, Value>,
    resource_bytes: Vec<u8>,
    /// `encoding: nop`: bodies are bytes, not text.
    nop: bool,
    storage: Option<std::sync::Arc<sidekick_collector::storage::Storage>>,
    /// Said once: more files match than max_concurrent_files.
    limit_warned: std::sync::atomic::AtomicBool,
    counters: Counters,
}

/// A line as text: as it is when it is UTF-8 (the usual case, checked fast), with
/// invalid bytes replaced otherwise.
fn text(raw: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(raw) {
        Ok(s) => s.into(),
        Err(_) => String::from_utf8_lossy(raw),
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Everything one poll needs to turn lines into records.
struct Writer<'a> {
    log: &'a FileLog,
    builder: RequestBuilder,
    /// `KeyValue` fields (tag 6) every record of the current file carries.
    file_attrs: Vec<u8>,
    body: Vec<u8>,
    observed: u64,
    failed: Vec<u64>,
    /// Joined partial lines cut at max_log_size.
    truncated: u64,
}

impl Writer<'_> {
    fn set_file(&mut self, path: &str) {
        self.file_attrs.clear();
        let mut kv = Vec::new();
        let name = path.rsplit('/').next().unwrap_or(path);
        if self.log.config.include_file_name {
            encode::string_kv(&mut kv, "log.file.name", name.as_bytes());
            encode::bytes_field(&mut self.file_attrs, 6, &kv);
        }
        if self.log.config.include_file_path {
            kv.clear();
            encode::string_kv(&mut kv, "log.file.path", path.as_bytes());
            encode::bytes_field(&mut self.file_attrs, 6, &kv);
        }
        let statics: Map<String, Value> = self.log.config.attributes.clone().into_iter().collect();
        encode::attributes(&mut self.file_attrs, 6, &statics);
    }

    /// The pieces of a split container line whose last piece never came (its file is
    /// closed): sent as they are, operators already applied to each piece.
    fn joined_rest(&mut self, t: &mut Tracked) {
        if t.joined.is_empty() {
            return;
        }
        let text = std::mem::take(&mut t.joined);
        self.body.clear();
        encode::string_value(&mut self.body, text.as_bytes());
        self.push_plain();
    }

    /// A record of `self.body` with the file's attributes, no time and no severity.
    fn push_plain(&mut self) {
        let stamp = Stamp {
            time_ns: None,
            observed_ns: self.observed,
            severity: 0,
        };
        let (body, attrs) = (&self.body, &self.file_attrs);
        self.builder.push(&self.log.resource_bytes, |o| {
            encode::log_record(o, stamp, "", body, attrs)
        });
    }

    fn entry(&mut self, t: &mut Tracked, raw: &[u8]) {
        if self.log.operators.is_empty() {
            self.body.clear();
            if self.log.nop {
                encode::bytes_field(&mut self.body, 7, raw);
            } else {
                encode::string_value(&mut self.body, text(raw).as_bytes());
            }
            self.push_plain();
            return;
        }
        let mut e = Entry {
            body: Value::String(text(raw).into_owned()),
            resource: self.log.resource.clone(),
            ..Entry::default()
        };
        let outcome = operators::run(&self.log.operators, &mut e, &t.path);
        if let Some(i) = outcome.failed {
            self.failed[i] += 1;
        }
        // CRI and Docker split long lines: the pieces are joined into one record, up to
        // max_log_size (past it the rest is cut and counted).
        if outcome.partial {
            if let Value::String(s) = &e.body {
                let room = self
                    .log
                    .config
                    .max_log_size
                    .0
                    .saturating_sub(t.joined.len());
                if s.len() > room {
                    let cut = (0..=room)
                        .rev()
                        .find(|&i| s.is_char_boundary(i))
                        .unwrap_or(0);
                    t.joined.push_str(&s[..cut]);
                    self.truncated += 1;
                } else {
                    t.joined.push_str(s);
                }
                return;
            }
        }
        if !t.joined.is_empty() {
            if let Value::String(s) = &mut e.body {
                s.insert_str(0, &std::mem::take(&mut t.joined));
            }
        }
        self.body.clear();
        encode::any_value(&mut self.body, &e.body);
        let mut attrs = self.file_attrs.clone();
        encode::attributes(&mut attrs, 6, &e.attributes);
        let mut resource = Vec::new();
        encode::attributes(&mut resource, 1, &e.resource);
        let stamp = Stamp {
            time_ns: e.time_ns,
            observed_ns: self.observed,
            severity: e.severity,
        };
        let body = &self.body;
        self.builder.push(&resource, |o| {
            encode::log_record(o, stamp, &e.severity_text, body, &attrs)
        });
    }
}

impl FileLog {
    /// Sends what `builder` holds; false when the pipeline has shut down.
    async fn send(&self, builder: &mut RequestBuilder, output: &Output<LogsSignal>) -> bool {
        let n = builder.records() as u64;
        if n == 0 {
            return true;
        }
        let batch = match Batch::<LogsSignal>::from_encoded(builder.take()) {
            Ok(b) => b,
            Err(e) => {
                // Our own encoding is wrong: a bug, not data to retry.
                warn!(receiver = %self.name, error = %e, dropped = n, "filelog wrote an invalid request");
                self.counters.refused.add(n);
                self.counters.telemetry.account().record_dropped(n);
                return true;
            }
        };
        match output.send(batch).await {
            Ok(()) => {
                self.counters.accepted.add(n);
                true
            }
            // A processor refused these records (`error_mode: propagate`): they would
            // fail the same way again, so they are counted as dropped and the file goes on.
            Err(SendError::Refused(error)) => {
                warn!(receiver = %self.name, dropped = n, %error, "a processor refused log records read from a file; dropped them");
                self.counters.refused.add(n);
                self.counters.telemetry.account().record_dropped(n);
                true
            }
            Err(_) => {
                self.counters.refused.add(n);
                false
            }
        }
    }

    async fn run(mut self, output: Output<LogsSignal>, stop: Stop) {
        for op in &self.operators {
            let c = self.counters.telemetry.counter(
                "sidekick_filelog_parse_failures",
                "Entries an operator could not parse; they were sent as they were.",
                &[
                    ("receiver", self.name.as_str()),
                    ("operator", op.name.as_str()),
                ],
            );
            self.counters.failures.push(c);
        }
        let mut tracked: Vec<Tracked> = Vec::new();
        let mut known = self.load_offsets();
        let mut checkpoint = Checkpoint::default();
        let mut refused = false;
        let mut first = true;
        let mut buf = Vec::new();
        let mut writer = Writer {
            log: &self,
            // A request is sent once past REQUEST_BYTES, which one chunk's records (at
            // most about three times its bytes, for very short lines) may overshoot.
            builder: RequestBuilder::new(REQUEST_BYTES + 3 * files::READ_CHUNK),
            file_attrs: Vec::new(),
            body: Vec::new(),
            observed: 0,
            failed: vec![0; self.operators.len()],
            truncated: 0,
        };
        let mut fired = std::pin::pin!(stop.clone().fired());
        loop {
            let more = self
                .poll(
                    &mut tracked,
                    &mut known,
                    first,
                    &mut writer,
                    &mut buf,
                    &output,
                )
                .await;
            first = false;
            if !more {
                // The pipeline has shut down: what was read last was refused (and
                // counted); the saved offsets stay before it.
                refused = true;
                break;
            }
            self.save_offsets(&tracked, &mut checkpoint, false);
            for (i, n) in writer.failed.iter_mut().enumerate() {
                if *n > 0 {
                    self.counters.failures[i].add(std::mem::take(n));
                }
            }
            self.counters.open.set(tracked.len() as i64);
            tokio::select! {
                _ = &mut fired => break,
                _ = tokio::time::sleep(self.config.poll_interval.get()) => {}
            }
        }
        // What was read is sent before stopping; partial lines wait for the next start.
        let mut rest = std::mem::take(&mut writer.builder);
        if self.send(&mut rest, &output).await && !refused {
            self.save_offsets(&tracked, &mut checkpoint, true);
        }
        debug!(receiver = %self.name, "filelog receiver stopped");
    }

    fn storage_key(&self) -> String {
        format!("receiver_{}_offsets", self.name)
    }

    /// The (fingerprint, offset) pairs saved by the last run, if there is a storage.
    fn load_offsets(&self) -> Vec<(Vec<u8>, u64)> {
        let Some(storage) = &self.storage else {
            return Vec::new();
        };
        let Some(bytes) = storage.get(&self.storage_key()) else {
            return Vec::new();
        };
        let parsed: Result<Vec<SavedOffset>, _> = serde_json::from_slice(&bytes);
        match parsed {
            Ok(list) => list
                .into_iter()
                .filter_map(|s| Some((unhex(&s.fingerprint)?, s.offset)))
                .collect(),
            Err(e) => {
                warn!(receiver = %self.name, error = %e, "saved offsets cannot be read: files are read as start_at says");
                Vec::new()
            }
        }
    }

    /// Saves where each file is handed on up to: at most once a second (and only when
    /// something moved), or now when `force`d (at stop).
    fn save_offsets(&self, tracked: &[Tracked], checkpoint: &mut Checkpoint, force: bool) {
        let Some(storage) = &self.storage else {
            return;
        };
        let offsets: Vec<(&[u8], u64)> =
            tracked.iter().map(|t| (t.fingerprint(), t.safe)).collect();
        let state: Vec<u64> = offsets.iter().map(|(_, o)| *o).collect();
        if state == checkpoint.last || (!force && checkpoint.at.elapsed() < CHECKPOINT_EVERY) {
            return;
        }
        let list: Vec<SavedOffset> = offsets
            .iter()
            .map(|(fp, offset)| SavedOffset {
                fingerprint: hex(fp),
                offset: *offset,
            })
            .collect();
        let bytes = serde_json::to_vec(&list).unwrap_or_default();
        match storage.set(&self.storage_key(), &bytes) {
            Ok(()) => {
                checkpoint.last = state;
                checkpoint.at = std::time::Instant::now();
            }
            Err(e) => {
                warn!(receiver = %self.name, directory = %storage.directory().display(), error = %e, "cannot save file offsets")
            }
        }
    }

    /// One round: find files, read what is new in each, send it. False when the pipeline
    /// has shut down.
    async fn poll(
        &self,
        tracked: &mut Vec<Tracked>,
        known: &mut Vec<(Vec<u8>, u64)>,
        first: bool,
        w: &mut Writer<'_>,
        buf: &mut Vec<u8>,
        output: &Output<LogsSignal>,
    ) -> bool {
        let fp_size = self.config.fingerprint_size.0;
        for t in tracked.iter_mut() {
            t.seen = false;
        }
        let paths = files::matching(&self.config.include, &self.exclude);
        for path in paths {
            let Ok(mut file) = std::fs::File::open(&path) else {
                continue;
            };
            let Ok(fp) = files::fingerprint(&mut file, fp_size) else {
                continue;
            };
            if fp.is_empty() {
                continue; // nothing to identify it by yet
            }
            // The file followed under this name first, then any with its fingerprint
            // (renamed); files that begin alike keep their own names.
            let at = tracked
                .iter()
                .position(|t| !t.seen && t.path == path && t.same(&fp))
                .or_else(|| tracked.iter().position(|t| !t.seen && t.same(&fp)));
            if let Some(t) = at.map(|i| &mut tracked[i]) {
                // Known (perhaps under another name, perhaps grown).
                t.seen = true;
                if t.path != path {
                    debug!(from = %t.path, to = %path, "file renamed");
                    t.path = path;
                }
                t.grow_fingerprint(fp);
                continue;
            }
            if tracked.len() >= self.config.max_concurrent_files {
                if !self
                    .limit_warned
                    .swap(true, std::sync::atomic::Ordering::Relaxed)
                {
                    warn!(receiver = %self.name, max_concurrent_files = self.config.max_concurrent_files, path = %path, "more files match than max_concurrent_files: the others wait until a followed file is gone");
                }
                continue;
            }
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            let saved = known
                .iter()
                .position(|(kfp, _)| !kfp.is_empty() && fp.starts_with(kfp))
                .map(|i| known.swap_remove(i).1);
            let offset = match saved {
                // Read on from the last run's offset (from the start if it shrank).
                Some(o) if o <= len => o,
                Some(_) => 0,
                None if first && self.config.start_at == "end" => len,
                None => 0,
            };
            info!(receiver = %self.name, path = %path, offset, "following file");
            tracked.push(Tracked::new(path, file, fp, offset));
        }
        let mut stats = ReadStats::default();
        for t in tracked.iter_mut() {
            w.set_file(&t.path);
            w.observed = now_ns();
            let mut this_poll = 0;
            loop {
                let read = t.read(&self.splitting, buf, &mut stats, &mut |t, line| {
                    w.entry(t, line)
                });
                let n = read.unwrap_or_else(|e| {
                    warn!(receiver = %self.name, path = %t.path, error = %e, "cannot read file");
                    0
                });
                this_poll += n;
                if w.builder.bytes() >= REQUEST_BYTES && !self.send(&mut w.builder, output).await {
                    return false;
                }
                // The end of the file; or past the budget: the others' turn, and this
                // file's next in the next poll.
                if n == 0 || this_poll >= FILE_BUDGET {
                    break;
                }
            }
        }
        // A file gone or renamed away is still read (the app may write a last line to
        // its open descriptor) until it has been quiet for force_flush_period; then what
        // waits for a line end is sent and the descriptor closed.
        let quiet = self.splitting.force_flush;
        for t in tracked.iter_mut().filter(|t| !t.seen && t.quiet_for(quiet)) {
            w.set_file(&t.path);
            t.flush(&self.splitting, &mut stats, &mut |t, line| w.entry(t, line));
            w.joined_rest(t);
        }
        tracked.retain(|t| {
            let keep = t.seen || !t.quiet_for(quiet);
            if !keep {
                info!(receiver = %self.name, path = %t.path, "file no longer matches: closed");
            }
            keep
        });
        stats.truncated += std::mem::take(&mut w.truncated);
        if stats.truncated > 0 {
            self.counters.truncated.add(stats.truncated);
            warn!(receiver = %self.name, entries = stats.truncated, max_log_size = self.config.max_log_size.0, "log entries longer than max_log_size were cut");
        }
        self.send(&mut w.builder, output).await
    }
}

impl Receiver for FileLog {
    fn run(self: Box<Self>, outputs: ReceiverOutputs, stop: Stop) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let Some(output) = outputs.logs else {
                return;
            };
            (*self).run(output, stop).await;
        })
    }
}

#[cfg(test)]
mod tests;
