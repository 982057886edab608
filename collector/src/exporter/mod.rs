//! The exporter helper: the queue, consumers, timeout and retry that every exporter gets.
//!
//! Each exporter instance has one bounded queue per signal (`sending_queue.queue_size`
//! batches). Up to `num_consumers` batches are in flight at once; each attempt is bounded
//! by `timeout`; retryable failures back off exponentially with jitter, honouring a
//! server's `Retry-After`, until `retry_on_failure.max_elapsed_time`; permanent failures
//! are dropped at once. Every dropped item is counted and logged.
//!
//! On shutdown the queue drains until its input closes; when the drain deadline fires,
//! whatever is still queued or in flight is counted as dropped.
//!
//! Layout: this module holds the [`Export`] trait, its errors and the queue's run loop;
//! `settings` the queue, retry and timeout settings; `client` the settings every network
//! exporter shares.

pub mod client;
mod settings;

pub use client::{ClientRules, ClientSettings};
pub use settings::*;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use serde::Deserialize;
use sidekick_config::Duration as ConfigDuration;
use tokio::sync::Semaphore;
use tracing::{error, warn};

pub use crate::base::{deadline_pair, Deadline, DeadlineTrigger};
use crate::base::{off_worker, BoxFuture};
use crate::payload::{Batch, Signal};
use crate::pipe::{Input, Limit, Sizer};
use crate::telemetry::{Counter, LogBurst, Telemetry};

/// Sends batches of one signal to a backend. An exporter either sends a batch as one
/// request ([`Export::export`]; the helper splits it when it is too large or rejected),
/// or turns it into requests of its own ([`Export::prepare`], e.g. remote-write's
/// translated, sharded requests) that the helper sends one at a time with
/// [`Export::send_prepared`]. Either way the helper owns queueing, consumers, retry with
/// jitter, timeouts, counting and the shutdown deadline.
///
/// An exporter takes one of two shapes: it sends a whole batch in one attempt
/// ([`Export::export`]), or it makes its own requests from a batch ([`Export::prepare`])
/// and sends them one at a time ([`Export::send_prepared`]); the helper calls only the
/// methods of the shape the exporter has.
pub trait Export<S: Signal>: Send + Sync + 'static {
    /// Sends one batch (one attempt). Not called for an exporter that prepares its
    /// own requests.
    fn export<'a>(&'a self, _batch: &'a Batch<S>) -> BoxFuture<'a, Result<Delivered, ExportError>> {
        Box::pin(async {
            Err(ExportError::permanent(
                "this exporter sends prepared requests",
            ))
        })
    }

    /// The requests a batch becomes, for exporters that make their own. `None` (the
    /// default): the batch is sent with [`Export::export`].
    fn prepare(&self, _batch: &Batch<S>) -> Option<Result<Prepared, ExportError>> {
        None
    }

    /// Sends one prepared request (one attempt).
    fn send_prepared<'a>(
        &'a self,
        _request: &'a PreparedRequest,
    ) -> BoxFuture<'a, Result<Delivered, ExportError>> {
        Box::pin(async { Err(ExportError::permanent("this exporter prepares no requests")) })
    }
}

/// A batch made into requests. Requests in one lane are sent in order, one after the
/// other (remote-write: a shard of the series, so each series' samples stay in order);
/// lanes go concurrently.
#[derive(Debug, Default)]
pub struct Prepared {
    pub lanes: Vec<Vec<PreparedRequest>>,
    /// Items that could not be made into any request, and why.
    pub unsendable: usize,
    pub reason: String,
}

/// One request body and the items it carries (for counting).
#[derive(Debug, Clone)]
pub struct PreparedRequest {
    pub body: bytes::Bytes,
    pub items: usize,
    /// Which of the exporter's encodings `body` is in, where it has several (0 else).
    pub encoding: u8,
}

/// The backend took the batch. It may still have rejected some items (OTLP partial
/// success); those are counted as dropped, with the backend's reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivered {
    pub rejected: usize,
    pub reason: String,
}

/// How an export attempt failed, decided by the exporter (no downcasting later).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    /// Worth trying again, after `retry_after` if the backend said so.
    #[error("{message}")]
    Retryable {
        message: String,
        retry_after: Option<Duration>,
    },
    /// Trying again cannot help, whatever is sent (unauthorised, not found, …): the
    /// batch is dropped and counted.
    #[error("{message}")]
    Permanent { message: String },
    /// The backend refused this data (bad request, too large). Some item in it may be
    /// at fault: the helper splits the batch and sends the halves, so only items that
    /// are refused on their own are dropped.
    #[error("{message}")]
    Rejected { message: String },
}

/// A batch that cannot be decoded cannot be sent either, however often it is tried.
impl From<crate::payload::DecodeError> for ExportError {
    fn from(e: crate::payload::DecodeError) -> Self {
        ExportError::permanent(format!("cannot decode batch: {e}"))
    }
}

impl ExportError {
    pub fn retryable(message: impl Into<String>) -> Self {
        ExportError::Retryable {
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        ExportError::Permanent {
            message: message.into(),
        }
    }

    pub fn rejected(message: impl Into<String>) -> Self {
        ExportError::Rejected {
            message: message.into(),
        }
    }
}

/// Self-metrics of one exporter for one signal, and the limits on its log lines.
#[derive(Clone)]
pub struct ExporterMetrics {
    pub sent: Counter,
    pub send_failed: Counter,
    telemetry: Telemetry,
    drop_log: Arc<LogBurst>,
    retry_log: Arc<LogBurst>,
    /// Fired when a send succeeds: batches waiting to retry try again at once, so a
    /// backlog starts moving as soon as the backend is back, not after each batch's
    /// own backoff has run out.
    backend_up: Arc<tokio::sync::Notify>,
    /// Taken by one batch at a time while several wait to retry (a backlog behind a
    /// failing backend): that batch retries at least every [`PROBE_INTERVAL`] whatever
    /// its backoff, so the queue notices within about a second that the backend is
    /// back (and [`Self::backend_up`] wakes the rest), while the others keep their
    /// backoff. A lone failing batch keeps the configured backoff.
    prober: Arc<std::sync::atomic::AtomicBool>,
    /// Batches waiting to retry now.
    retrying: Arc<std::sync::atomic::AtomicUsize>,
}

/// Counts a batch among those waiting to retry while it is alive.
struct Retrying(Arc<std::sync::atomic::AtomicUsize>);

impl Retrying {
    fn new(count: &Arc<std::sync::atomic::AtomicUsize>) -> Self {
        count.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Retrying(Arc::clone(count))
    }
}

impl Drop for Retrying {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// How often the probing batch retries a failing backend at most.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// The prober role, given back when dropped.
struct Probe(Arc<std::sync::atomic::AtomicBool>);

impl Probe {
    fn take(flag: &Arc<std::sync::atomic::AtomicBool>) -> Option<Probe> {
        use std::sync::atomic::Ordering;
        flag.compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
            .ok()
            .map(|_| Probe(Arc::clone(flag)))
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::Release);
    }
}

/// A failing backend is logged at most this often per exporter and kind of line.
const LOG_EVERY: Duration = Duration::from_secs(10);
/// Batches larger than this are split off the worker thread (see [`deliver`]).
const OFF_WORKER: usize = 1 << 20;

impl ExporterMetrics {
    pub fn new<S: Signal>(telemetry: &Telemetry, exporter: &str) -> Self {
        let labels = [("exporter", exporter)];
        let sent_name = format!("otelcol_exporter_sent_{}", S::ITEMS);
        let failed_name = format!("otelcol_exporter_send_failed_{}", S::ITEMS);
        ExporterMetrics {
            sent: telemetry.counter(
                &sent_name,
                "Items successfully sent to the destination.",
                &labels,
            ),
            send_failed: telemetry.counter(
                &failed_name,
                "Items that could not be sent and were dropped.",
                &labels,
            ),
            telemetry: telemetry.clone(),
            drop_log: Arc::new(LogBurst::new(LOG_EVERY)),
            retry_log: Arc::new(LogBurst::new(LOG_EVERY)),
            backend_up: Arc::new(tokio::sync::Notify::new()),
            prober: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            retrying: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        }
    }

    fn dropped(&self, n: usize) {
        self.send_failed.add(n as u64);
        self.telemetry.account().record_dropped(n as u64);
    }
}

/// Runs one exporter's queue for one signal until the input closes and everything is
/// sent, or the deadline passes.
pub async fn run_queue<S: Signal>(
    exporter: Arc<dyn Export<S>>,
    mut input: Input<S>,
    settings: ExportSettings,
    metrics: ExporterMetrics,
    name: String,
    mut deadline: Deadline,
) {
    let consumers = Arc::new(Semaphore::new(settings.consumers()));
    let settings = Arc::new(settings);
    let mut in_flight = tokio::task::JoinSet::new();
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&consumers).acquire_owned() => p.expect("semaphore is never closed"),
            _ = deadline.passed() => break,
        };
        let received = tokio::select! {
            b = input.recv_held() => b,
            _ = deadline.passed() => break,
        };
        let Some((batch, hold)) = received else { break };
        let exporter = Arc::clone(&exporter);
        let settings = Arc::clone(&settings);
        let metrics = metrics.clone();
        let name = name.clone();
        let deadline = deadline.clone();
        in_flight.spawn(async move {
            // The batch keeps its room in the queue until it is sent or counted.
            let send = Sending {
                settings: &settings,
                metrics: &metrics,
                name: &name,
                durable: hold.is_durable(),
            };
            let settled = match exporter.prepare(&batch) {
                None => deliver(&*exporter, batch, &send, deadline).await,
                Some(prepared) => {
                    let n = batch.len();
                    drop(batch);
                    deliver_prepared(&exporter, prepared, n, &send, deadline).await
                }
            };
            if settled {
                hold.release();
            } else {
                // Stopped undelivered at the deadline: kept in the persistent queue.
                drop(hold);
            }
            drop(permit);
        });
        // Reap finished sends so the set does not grow.
        while in_flight.try_join_next().is_some() {}
    }
    while in_flight.join_next().await.is_some() {}
    // Past the deadline: nothing more will be sent; count what is still arriving.
    let mut left = 0;
    while let Some((batch, hold)) = input.recv_held().await {
        if hold.is_durable() {
            // Dropped unreleased: it stays in the persistent queue for the next start.
            continue;
        }
        left += batch.len();
        hold.release();
    }
    if left > 0 {
        metrics.dropped(left);
        error!(exporter = %name, dropped_items = left, "shutdown deadline passed; dropped queued data");
    }
}

/// What one send needs besides the data.
struct Sending<'a> {
    settings: &'a ExportSettings,
    metrics: &'a ExporterMetrics,
    name: &'a str,
    /// The data is in a persistent queue: at the shutdown deadline it is kept there for
    /// the next start instead of being counted as dropped.
    durable: bool,
}

/// The shutdown deadline stopped a send of durable data: not delivered, not dropped.
struct Stopped;

impl Sending<'_> {
    /// The deadline passed during a send: durable data is kept, the rest counted.
    fn deadline_passed(&self, items: usize, during: &str) -> Result<Option<String>, Stopped> {
        if self.durable {
            warn!(exporter = %self.name, kept_items = items, "shutdown deadline passed {during}; the data stays in the persistent queue for the next start");
            return Err(Stopped);
        }
        self.metrics.dropped(items);
        error!(exporter = %self.name, dropped_items = items, "shutdown deadline passed {during}; dropped data");
        Ok(None)
    }
}

/// Sends `batch` in requests of at most `max_request_bytes`, and isolates items a
/// backend rejects: a rejected request is split in halves that are sent on their own,
/// down to single items, so one bad item costs only itself. Every item ends sent or
/// counted as dropped; false when the deadline stopped durable data (kept, not sent).
async fn deliver<S: Signal>(
    exporter: &dyn Export<S>,
    batch: Batch<S>,
    send: &Sending<'_>,
    deadline: Deadline,
) -> bool {
    let (settings, metrics, name) = (send.settings, send.metrics, send.name);
    let mut work = vec![batch];
    while let Some(mut batch) = work.pop() {
        let too_big = settings
            .max_request_bytes
            .is_some_and(|max| batch.size() > max);
        let rejected = if too_big {
            Some(format!(
                "request of {} bytes is over the {}-byte limit",
                batch.size(),
                settings.max_request_bytes.unwrap_or(0)
            ))
        } else {
            let attempt = || exporter.export(&batch);
            match send_with_retry(attempt, batch.len(), send, deadline.clone()).await {
                Ok(r) => r,
                Err(Stopped) => return false,
            }
        };
        let Some(message) = rejected else { continue };
        if batch.len() > 1 {
            let half = batch.len() / 2;
            // Splitting reads the batch's bytes: milliseconds for a large scrape, off the
            // worker thread.
            let second = if batch.size() > OFF_WORKER {
                off_worker(|| batch.split_off(half))
            } else {
                batch.split_off(half)
            };
            // Last in, first out: the first half goes next, keeping the order.
            work.push(second);
            work.push(batch);
            continue;
        }
        metrics.dropped(batch.len());
        if let Some(held_back) = metrics.drop_log.check() {
            error!(exporter = %name, error = %message, dropped_items = batch.len(), similar_lines_held_back = held_back, "backend refused an item; dropped it");
        }
    }
    true
}

/// Sends one request, retrying as configured. Returns the backend's message when it
/// rejected the data itself (for [`deliver`] to split); every other outcome is counted
/// here.
async fn send_with_retry<'a>(
    attempt: impl Fn() -> BoxFuture<'a, Result<Delivered, ExportError>>,
    items: usize,
    send: &Sending<'_>,
    mut deadline: Deadline,
) -> Result<Option<String>, Stopped> {
    let (settings, metrics, name) = (send.settings, send.metrics, send.name);
    let started = Instant::now();
    let retry = &settings.retry;
    let mut interval = retry.initial_interval.get();
    let mut attempts = 0u32;
    let mut probe: Option<Probe> = None;
    let mut retrying: Option<Retrying> = None;
    loop {
        attempts += 1;
        let attempt = tokio::time::timeout(settings.timeout, attempt());
        let result = tokio::select! {
            r = attempt => r.unwrap_or_else(|_| Err(ExportError::retryable(format!(
                "no answer within the {:?} timeout", settings.timeout
            )))),
            _ = deadline.passed() => return send.deadline_passed(items, "during export"),
        };
        let (message, retry_after) = match result {
            Ok(delivered) => {
                metrics.backend_up.notify_waiters();
                let rejected = delivered.rejected.min(items);
                metrics.sent.add((items - rejected) as u64);
                if rejected > 0 {
                    metrics.dropped(rejected);
                    if let Some(held_back) = metrics.drop_log.check() {
                        warn!(exporter = %name, rejected_items = rejected, reason = %delivered.reason, similar_lines_held_back = held_back, "backend rejected part of a batch");
                    }
                }
                return Ok(None);
            }
            Err(ExportError::Rejected { message }) => return Ok(Some(message)),
            Err(ExportError::Permanent { message }) => {
                metrics.dropped(items);
                if let Some(held_back) = metrics.drop_log.check() {
                    error!(exporter = %name, error = %message, dropped_items = items, similar_lines_held_back = held_back, "export failed permanently; dropped data");
                }
                return Ok(None);
            }
            Err(ExportError::Retryable {
                message,
                retry_after,
            }) => (message, retry_after),
        };
        let max_elapsed = retry.max_elapsed_time.get();
        let mut wait = retry_after.unwrap_or_else(|| jitter(interval, retry.randomization_factor));
        retrying.get_or_insert_with(|| Retrying::new(&metrics.retrying));
        let backlog = metrics.retrying.load(std::sync::atomic::Ordering::Acquire) > 1;
        if probe.is_none() && backlog {
            probe = Probe::take(&metrics.prober);
        }
        if probe.is_some() && retry_after.is_none() {
            wait = wait.min(PROBE_INTERVAL);
        }
        let out_of_time = !max_elapsed.is_zero() && started.elapsed() + wait > max_elapsed;
        if !retry.enabled || out_of_time {
            metrics.dropped(items);
            if let Some(held_back) = metrics.drop_log.check() {
                error!(exporter = %name, error = %message, attempts, dropped_items = items, similar_lines_held_back = held_back, "export failed, no more retries; dropped data");
            }
            return Ok(None);
        }
        if let Some(held_back) = metrics.retry_log.check() {
            warn!(exporter = %name, error = %message, retry_in = ?wait, similar_lines_held_back = held_back, "export failed, will retry");
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = metrics.backend_up.notified() => {}
            _ = deadline.passed() => return send.deadline_passed(items, "while retrying"),
        }
        interval = interval
            .mul_f64(retry.multiplier)
            .min(retry.max_interval.get());
    }
}

/// Sends prepared requests: lanes concurrently, each lane's requests in order, each
/// with retries. A request that is refused or runs out of retries is counted as dropped
/// with its items; the others still go. False when the deadline stopped durable data.
async fn deliver_prepared<S: Signal>(
    exporter: &Arc<dyn Export<S>>,
    prepared: Result<Prepared, ExportError>,
    items: usize,
    send: &Sending<'_>,
    deadline: Deadline,
) -> bool {
    let (metrics, name) = (send.metrics, send.name);
    let prepared = match prepared {
        Ok(p) => p,
        Err(e) => {
            metrics.dropped(items);
            if let Some(held_back) = metrics.drop_log.check() {
                error!(exporter = %name, error = %e, dropped_items = items, similar_lines_held_back = held_back, "cannot make requests of a batch; dropped it");
            }
            return true;
        }
    };
    if prepared.unsendable > 0 {
        metrics.dropped(prepared.unsendable);
        if let Some(held_back) = metrics.drop_log.check() {
            warn!(exporter = %name, dropped_items = prepared.unsendable, reason = %prepared.reason, similar_lines_held_back = held_back, "some items cannot be sent to this backend");
        }
    }
    let mut lanes = tokio::task::JoinSet::new();
    for lane in prepared.lanes {
        let (exporter, settings, metrics, name, deadline) = (
            Arc::clone(exporter),
            Arc::new(send.settings.clone()),
            metrics.clone(),
            name.to_string(),
            deadline.clone(),
        );
        let durable = send.durable;
        lanes.spawn(async move {
            let send = Sending {
                settings: &settings,
                metrics: &metrics,
                name: &name,
                durable,
            };
            for request in lane {
                let attempt = || exporter.send_prepared(&request);
                match send_with_retry(attempt, request.items, &send, deadline.clone()).await {
                    Err(Stopped) => return false,
                    Ok(None) => {}
                    Ok(Some(message)) => {
                        metrics.dropped(request.items);
                        if let Some(held_back) = metrics.drop_log.check() {
                            error!(exporter = %name, error = %message, dropped_items = request.items, similar_lines_held_back = held_back, "backend refused a request; dropped it");
                        }
                    }
                }
            }
            true
        });
    }
    let mut settled = true;
    while let Some(done) = lanes.join_next().await {
        settled &= done.unwrap_or(false);
    }
    settled
}

/// `base` spread by ± `factor`, from a cheap per-thread generator (no crypto needed).
fn jitter(base: Duration, factor: f64) -> Duration {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64 | 1)
                .unwrap_or(0x9e37_79b9_7f4a_7c15),
        );
    }
    let r = STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        (x >> 11) as f64 / (1u64 << 53) as f64
    });
    base.mul_f64((1.0 - factor + 2.0 * factor * r).max(0.0))
}

#[cfg(test)]
mod tests;
