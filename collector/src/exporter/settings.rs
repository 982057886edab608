//! What an exporter's config says about sending, whatever its protocol: the queue
//! (`sending_queue`, in memory or persistent), the retries (`retry_on_failure`), the
//! timeout, and the largest request. The helper reads them from [`ExportSettings`].

use super::*;

/// `sending_queue`, as in the OpenTelemetry Collector.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueSettings {
    /// Without a queue, each batch waits for the previous one: one consumer, capacity 1.
    pub enabled: bool,
    /// Batches sent concurrently. Default 10.
    pub num_consumers: usize,
    /// What `queue_size` counts: `bytes` (encoded, the default here), `items` or
    /// `requests` (batches). A `queue_size` given without `sizer` counts requests, as
    /// in the Collector.
    pub sizer: Option<Sizer>,
    /// Capacity, in `sizer` units. Default 4 MiB of encoded data. Batches being sent
    /// count until they are done, so this bounds the exporter's memory (about twice
    /// this in RSS: the transport copies a request while sending it). With `storage`,
    /// the capacity of the queue on disk instead (default 256 MiB).
    pub queue_size: Option<usize>,
    /// A `file_storage` extension: the pipelines this exporter is in keep their data in
    /// a persistent queue there, and receivers acknowledge only what is in it.
    pub storage: Option<String>,
    /// What a full persistent queue does: `refuse` new data, retryably (default), or
    /// `drop_oldest` data not yet sent (counted and logged).
    pub when_full: WhenFull,
    /// Batching in front of the queue, as current Collector releases configure it.
    pub batch: Option<QueueBatch>,
}

/// `sending_queue.batch`: batches joined (and split) in front of the exporter's queue, as
/// the `batch` processor does in a pipeline.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueBatch {
    /// Send what waits this long after its first item arrived. Default 200ms.
    pub flush_timeout: ConfigDuration,
    /// Send once this much waits. Default 8192.
    pub min_size: usize,
    /// Largest batch sent; larger ones are split. 0 (default): no limit.
    pub max_size: usize,
    /// What the sizes count: `items` (default) or `bytes` (encoded).
    pub sizer: Option<Sizer>,
}

impl Default for QueueBatch {
    fn default() -> Self {
        QueueBatch {
            flush_timeout: ConfigDuration::from_millis(200),
            min_size: 8192,
            max_size: 0,
            sizer: None,
        }
    }
}

/// What a full persistent queue does with new data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Refuse it; receivers answer with a retryable error so clients back off.
    #[default]
    Refuse,
    /// Delete the oldest data not yet handed on, counted as dropped.
    DropOldest,
}

/// Default exporter queue: 4 MiB of encoded data, batches being sent included. Bounded in
/// bytes, it holds one or a few batches of the batch processor's default size: enough to
/// keep the senders busy at full speed, while peak RSS stays low. A larger queue holds
/// more memory without sending faster (figures in BENCHMARKS.md).
pub const DEFAULT_QUEUE_BYTES: usize = 4 << 20;

/// Whatever the sizer, no exporter queue holds more than this many bytes.
pub const MAX_QUEUE_BYTES: usize = 256 << 20;

/// Default capacity of a persistent queue: 256 MiB on disk.
pub const DEFAULT_PERSISTENT_BYTES: usize = 256 << 20;

/// Whatever the sizer, no persistent queue takes more than this on disk.
pub const MAX_PERSISTENT_BYTES: usize = 64 << 30;

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            enabled: true,
            num_consumers: 10,
            sizer: None,
            queue_size: None,
            storage: None,
            when_full: WhenFull::Refuse,
            batch: None,
        }
    }
}

impl QueueSettings {
    /// The in-memory queue's bounds (with `storage`, `queue_size` bounds the queue on
    /// disk and memory keeps the default).
    pub fn limit(&self) -> Limit {
        if !self.enabled {
            return Limit::sized(Sizer::Requests, 1, MAX_QUEUE_BYTES);
        }
        if self.storage.is_some() {
            return Limit::bytes(DEFAULT_QUEUE_BYTES);
        }
        match (self.sizer, self.queue_size) {
            (None, None) => Limit::bytes(DEFAULT_QUEUE_BYTES),
            (None, Some(n)) => Limit::sized(Sizer::Requests, n, MAX_QUEUE_BYTES),
            (Some(Sizer::Bytes), n) => Limit::bytes(n.unwrap_or(DEFAULT_QUEUE_BYTES)),
            (Some(sizer), n) => Limit::sized(sizer, n.unwrap_or(1000), MAX_QUEUE_BYTES),
        }
    }

    /// The persistent queue this asks for, if any.
    pub fn persist(&self) -> Option<Persist> {
        Some(Persist {
            storage: self.storage.clone()?,
            when_full: self.when_full,
            limit: self.persistent_limit(),
        })
    }

    /// The persistent queue's bounds, with `storage`.
    pub fn persistent_limit(&self) -> Limit {
        match (self.sizer, self.queue_size) {
            (None, None) => Limit::bytes(DEFAULT_PERSISTENT_BYTES),
            (None, Some(n)) => Limit::sized(Sizer::Requests, n, MAX_PERSISTENT_BYTES),
            (Some(Sizer::Bytes), n) => Limit::bytes(
                n.unwrap_or(DEFAULT_PERSISTENT_BYTES)
                    .min(MAX_PERSISTENT_BYTES),
            ),
            (Some(sizer), n) => Limit::sized(sizer, n.unwrap_or(100_000), MAX_PERSISTENT_BYTES),
        }
    }

    /// The sizer `queue_size` is counted in.
    pub fn effective_sizer(&self) -> Sizer {
        if self.storage.is_some() {
            return Sizer::Bytes;
        }
        match (self.sizer, self.queue_size) {
            (Some(s), _) => s,
            (None, Some(_)) => Sizer::Requests,
            (None, None) => Sizer::Bytes,
        }
    }
}

/// A persistent queue asked for by an exporter's `sending_queue.storage`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Persist {
    /// The `file_storage` extension's id.
    pub storage: String,
    pub when_full: WhenFull,
    pub limit: Limit,
}

/// `retry_on_failure`, as in the OpenTelemetry Collector.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySettings {
    pub enabled: bool,
    /// First wait after a failure. Default 5s.
    pub initial_interval: ConfigDuration,
    /// Longest wait between attempts. Default 30s.
    pub max_interval: ConfigDuration,
    /// Give up (and count the batch as dropped) after this long; 0 retries forever.
    /// Default 300s.
    pub max_elapsed_time: ConfigDuration,
    /// Growth of the wait per attempt. Default 1.5.
    pub multiplier: f64,
    /// Random spread of each wait, ± this fraction. Default 0.5.
    pub randomization_factor: f64,
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            enabled: true,
            initial_interval: ConfigDuration::from_secs(5),
            max_interval: ConfigDuration::from_secs(30),
            max_elapsed_time: ConfigDuration::from_secs(300),
            multiplier: 1.5,
            randomization_factor: 0.5,
        }
    }
}

/// Everything the helper needs from an exporter's config.
#[derive(Debug, Clone)]
pub struct ExportSettings {
    pub timeout: Duration,
    pub queue: QueueSettings,
    pub retry: RetrySettings,
    /// Largest request sent, in encoded bytes: larger batches are split first; an item
    /// larger on its own is dropped and counted. `None`: no limit.
    pub max_request_bytes: Option<usize>,
    /// The persistent queue of the pipelines this exporter is in, if it asks for one.
    pub persist: Option<Persist>,
}

impl ExportSettings {
    /// For exporters that do not leave the process (`debug`, the scrape endpoint): one
    /// consumer, a short queue, nothing to retry.
    pub fn in_process() -> Self {
        ExportSettings {
            timeout: Duration::from_secs(5),
            queue: QueueSettings {
                enabled: true,
                num_consumers: 1,
                sizer: Some(Sizer::Bytes),
                queue_size: Some(DEFAULT_QUEUE_BYTES),
                ..QueueSettings::default()
            },
            retry: RetrySettings {
                enabled: false,
                ..RetrySettings::default()
            },
            max_request_bytes: None,
            persist: None,
        }
    }

    pub fn validate(&self) -> Vec<sidekick_config::FieldError> {
        use sidekick_config::FieldError;
        let mut out = Vec::new();
        if self.queue.enabled && self.queue.queue_size == Some(0) {
            out.push(FieldError::new(
                "sending_queue.queue_size",
                "must be at least 1",
            ));
        }
        if self.queue.enabled && self.queue.num_consumers == 0 {
            out.push(FieldError::new(
                "sending_queue.num_consumers",
                "must be at least 1",
            ));
        }
        if self.queue.storage.is_some() && !self.queue.enabled {
            out.push(FieldError::new(
                "sending_queue.storage",
                "a persistent queue needs the queue: remove enabled: false",
            ));
        }
        if self
            .queue
            .storage
            .as_deref()
            .is_some_and(|s| s.trim().is_empty())
        {
            out.push(FieldError::new(
                "sending_queue.storage",
                "name a file_storage extension, e.g. storage: file_storage",
            ));
        }
        if let Some(b) = &self.queue.batch {
            if b.sizer == Some(Sizer::Requests) {
                out.push(FieldError::new(
                    "sending_queue.batch.sizer",
                    "batches are sized in items or bytes: write sizer: items (the default) or sizer: bytes",
                ));
            }
            if b.max_size != 0 && b.max_size < b.min_size {
                out.push(FieldError::new(
                    "sending_queue.batch.max_size",
                    format!("must be 0 (no limit) or at least min_size ({})", b.min_size),
                ));
            }
        }
        if self.retry.multiplier < 1.0 {
            out.push(FieldError::new(
                "retry_on_failure.multiplier",
                "must be at least 1",
            ));
        }
        if !(0.0..=1.0).contains(&self.retry.randomization_factor) {
            out.push(FieldError::new(
                "retry_on_failure.randomization_factor",
                "must be between 0 and 1",
            ));
        }
        out
    }

    /// The queue's capacity in its sizer's units, for self-metrics.
    pub fn capacity(&self) -> usize {
        let l = self.queue.limit();
        match self.queue.effective_sizer() {
            Sizer::Bytes => l.bytes,
            Sizer::Items => l.items,
            Sizer::Requests => l.requests,
        }
        .unwrap_or(0)
    }

    pub(super) fn consumers(&self) -> usize {
        if self.queue.enabled {
            self.queue.num_consumers
        } else {
            1
        }
    }
}
