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
//! resource message, so no span is decoded here.

use serde::Deserialize;
use sidekick_collector::component::{
    forward, BoxFuture, BuildContext, BuildError, FieldError, Processor, ProcessorConfig,
};
use sidekick_collector::config::{Duration, Signal as SignalKind};
use sidekick_collector::payload::{Batch, Signal};
use sidekick_collector::pipe::{Hold, Input, Output};
use sidekick_collector::telemetry::{Counter, Telemetry};
use tokio::time::{sleep_until, Instant};

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

pub struct BatchProcessor {
    /// Send once this many items wait; at least 1.
    send_size: usize,
    /// Largest batch sent; `usize::MAX` for no limit.
    max_size: usize,
    timeout: std::time::Duration,
    size_triggers: Counter,
    timeout_triggers: Counter,
}

impl BatchProcessor {
    pub fn new(config: &Config, name: String, telemetry: &Telemetry) -> Self {
        let labels = [("processor", name.as_str())];
        BatchProcessor {
            send_size: config.send_batch_size.max(1),
            max_size: match config.send_batch_max_size {
                0 => usize::MAX,
                n => n,
            },
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
        }
    }

    /// Sends `pending` on in pieces of at most `max_size`; `all` also sends a last
    /// piece smaller than `send_size`. Each piece's share of `held` is freed once the
    /// next stage has taken it.
    async fn flush<S: Signal>(
        &self,
        pending: &mut Batch<S>,
        held: &mut Hold,
        output: &Output<S>,
        all: bool,
    ) {
        while pending.len() >= self.send_size || (all && !pending.is_empty()) {
            let rest = pending.split_off(self.max_size);
            let batch = std::mem::replace(pending, rest);
            let hold = held.split(batch.len(), batch.size());
            forward(output, batch, hold).await;
        }
    }

    async fn run<S: Signal>(self, mut input: Input<S>, output: Output<S>) {
        let mut pending = Batch::<S>::default();
        // The room the pending data took in our input queue: what the buffer holds is
        // bounded with what waits in front of it.
        let mut held = Hold::none();
        let mut deadline: Option<Instant> = None;
        loop {
            tokio::select! {
                received = input.recv_held() => {
                    let Some((batch, hold)) = received else { break };
                    if pending.is_empty() {
                        deadline = Some(Instant::now() + self.timeout);
                    }
                    pending.append(batch);
                    held.merge(hold);
                    if pending.len() >= self.send_size {
                        self.size_triggers.add(1);
                        self.flush(&mut pending, &mut held, &output, false).await;
                        deadline = (!pending.is_empty()).then(|| Instant::now() + self.timeout);
                    }
                    if self.timeout.is_zero() && !pending.is_empty() {
                        self.flush(&mut pending, &mut held, &output, true).await;
                        deadline = None;
                    }
                }
                _ = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    self.timeout_triggers.add(1);
                    self.flush(&mut pending, &mut held, &output, true).await;
                    deadline = None;
                }
            }
        }
        self.flush(&mut pending, &mut held, &output, true).await;
    }
}

impl<S: Signal> Processor<S> for BatchProcessor {
    fn run(self: Box<Self>, input: Input<S>, output: Output<S>) -> BoxFuture<'static, ()> {
        Box::pin((*self).run(input, output))
    }
}

#[cfg(test)]
mod tests;
