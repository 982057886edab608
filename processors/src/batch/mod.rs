//! The `batch` processor: collects data until `send_batch_size` items are waiting or
//! `timeout` has passed since the first of them arrived, then sends them on as one batch,
//! split so no batch exceeds `send_batch_max_size`. Whatever it holds is flushed when its
//! input closes at shutdown.
//!
//! ```yaml
//! processors:
//!   batch:
//!     send_batch_size: 8192
//!     send_batch_max_size: 10000
//!     timeout: 200ms
//! ```
//!
//! Batches stay encoded: joining appends byte chunks and splitting rewrites at most one
//! resource message, so no span is decoded here. The batching itself is
//! [`sidekick_collector::batching`], which an exporter's `sending_queue.batch` uses too.

use serde::Deserialize;
use sidekick_collector::batching::{Batcher, Unit};
use sidekick_collector::component::{
    BoxFuture, BuildContext, BuildError, FieldError, Processor, ProcessorConfig, Sieve,
};
use sidekick_collector::config::{Duration, Signal as SignalKind};
use sidekick_collector::payload::Signal;
use sidekick_collector::pipe::{Input, Output};
use sidekick_collector::telemetry::Telemetry;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Items (spans, data points, log records) that trigger a send. Default 8192.
    pub send_batch_size: usize,
    /// Largest batch sent; larger ones are split. 0 (default) means no limit. Must be at
    /// least `send_batch_size` when set.
    pub send_batch_max_size: usize,
    /// Longest time the first item of a batch waits before the batch is sent, however
    /// small. 0 sends at once. Default 200ms.
    pub timeout: Duration,
    /// Batching per client metadata is not supported; accepted only when empty.
    pub metadata_keys: Vec<String>,
    /// Accepted for compatibility; unused without `metadata_keys`.
    pub metadata_cardinality_limit: Option<u32>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            send_batch_size: 8192,
            send_batch_max_size: 0,
            timeout: Duration::from_millis(200),
            metadata_keys: Vec::new(),
            metadata_cardinality_limit: None,
        }
    }
}

impl ProcessorConfig for Config {
    const SIGNALS: &'static [SignalKind] = &SignalKind::ALL;

    fn validate(&self) -> Vec<FieldError> {
        let mut out = Vec::new();
        if self.send_batch_max_size != 0 && self.send_batch_max_size < self.send_batch_size {
            out.push(FieldError::new(
                "send_batch_max_size",
                format!(
                    "must be 0 (no limit) or at least send_batch_size ({})",
                    self.send_batch_size
                ),
            ));
        }
        if !self.metadata_keys.is_empty() {
            out.push(FieldError::new(
                "metadata_keys",
                "batching by client metadata is not supported; remove metadata_keys",
            ));
        }
        out
    }

    fn build<S: Signal>(&self, ctx: &BuildContext) -> Result<Box<dyn Processor<S>>, BuildError> {
        Ok(Box::new(BatchProcessor::new(
            self,
            ctx.id.to_string(),
            ctx.telemetry,
        )))
    }
}

pub struct BatchProcessor(Batcher);

impl BatchProcessor {
    pub fn new(config: &Config, name: String, telemetry: &Telemetry) -> Self {
        let labels = [("processor", name.as_str())];
        BatchProcessor(Batcher {
            send_size: config.send_batch_size.max(1),
            max_size: match config.send_batch_max_size {
                0 => usize::MAX,
                n => n,
            },
            unit: Unit::Items,
            timeout: config.timeout.get(),
            size_triggers: telemetry.counter(
                "otelcol_processor_batch_batch_size_trigger_send",
                "Number of times the batch was sent due to a size trigger.",
                &labels,
            ),
            timeout_triggers: telemetry.counter(
                "otelcol_processor_batch_timeout_trigger_send",
                "Number of times the batch was sent due to a timeout trigger.",
                &labels,
            ),
        })
    }
}

impl<S: Signal> Processor<S> for BatchProcessor {
    fn into_sieve(self: Box<Self>) -> Result<Box<dyn Sieve<S>>, Box<dyn Processor<S>>> {
        Err(self)
    }

    fn run(self: Box<Self>, input: Input<S>, output: Output<S>) -> BoxFuture<'static, ()> {
        Box::pin(self.0.run(input, output))
    }
}

#[cfg(test)]
mod tests;
