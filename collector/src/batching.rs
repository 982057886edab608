//! Joining small batches into large ones, and splitting large ones: what the `batch`
//! processor does in a pipeline and an exporter's `sending_queue.batch` does in front of
//! its queue. A batch is sent once `send_size` items (or bytes) wait, or `timeout` after
//! the first of them arrived, in pieces of at most `max_size`; whatever waits is sent when
//! the input closes at shutdown.
//!
//! Batches stay encoded: joining appends byte chunks and splitting rewrites at most one
//! resource message, so no item is decoded here.

use tokio::time::{sleep, Instant};

use crate::component::forward;
use crate::payload::{Batch, Signal};
use crate::pipe::{Hold, Input, Output};
use crate::telemetry::Counter;

/// What a batch's size is counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Spans, data points, log records.
    Items,
    /// Encoded bytes.
    Bytes,
}

pub struct Batcher {
    /// Send once this much waits; at least 1.
    pub send_size: usize,
    /// Largest batch sent; `usize::MAX` for no limit. In items or bytes, as `unit`.
    pub max_size: usize,
    pub unit: Unit,
    pub timeout: std::time::Duration,
    /// Sends because `send_size` was reached.
    pub size_triggers: Counter,
    /// Sends because `timeout` passed.
    pub timeout_triggers: Counter,
}

impl Batcher {
    fn size<S: Signal>(&self, batch: &Batch<S>) -> usize {
        match self.unit {
            Unit::Items => batch.len(),
            Unit::Bytes => batch.size(),
        }
    }

    /// The items at the front of `batch` that make at most `max_size`.
    fn piece<S: Signal>(&self, batch: &Batch<S>) -> usize {
        match self.unit {
            Unit::Items => self.max_size,
            // Items are about the same size: cut in proportion, at least one item.
            Unit::Bytes if batch.size() <= self.max_size => batch.len(),
            Unit::Bytes => {
                let share = self.max_size as f64 / batch.size().max(1) as f64;
                ((batch.len() as f64 * share) as usize).max(1)
            }
        }
    }

    /// Sends `pending` on in pieces of at most `max_size`; `all` also sends a last piece
    /// smaller than `send_size`. Each piece's share of `held` is freed once the next
    /// stage has taken it.
    async fn flush<S: Signal>(
        &self,
        pending: &mut Batch<S>,
        held: &mut Hold,
        output: &Output<S>,
        all: bool,
    ) {
        while self.size(pending) >= self.send_size || (all && !pending.is_empty()) {
            let rest = pending.split_off(self.piece(pending));
            let batch = std::mem::replace(pending, rest);
            let hold = held.split(batch.len(), batch.size());
            forward(output, batch, hold).await;
        }
    }

    /// Runs until `input` closes, then sends what waits.
    pub async fn run<S: Signal>(self, mut input: Input<S>, output: Output<S>) {
        let mut pending = Batch::<S>::default();
        // The room the pending data took in the input queue: what the buffer holds is
        // bounded with what waits in front of it.
        let mut held = Hold::none();
        // One timer for the pending batch, set when its first data arrives: a timer
        // made anew for each request received would be registered and removed each time.
        let timer = sleep(self.timeout);
        tokio::pin!(timer);
        let mut armed = false;
        loop {
            tokio::select! {
                received = input.recv_held() => {
                    let Some((batch, hold)) = received else { break };
                    if pending.is_empty() {
                        timer.as_mut().reset(Instant::now() + self.timeout);
                        armed = true;
                    }
                    pending.append(batch);
                    held.merge(hold);
                    if self.size(&pending) >= self.send_size {
                        self.size_triggers.add(1);
                        self.flush(&mut pending, &mut held, &output, false).await;
                        armed = !pending.is_empty();
                        if armed {
                            timer.as_mut().reset(Instant::now() + self.timeout);
                        }
                    }
                    if self.timeout.is_zero() && !pending.is_empty() {
                        self.flush(&mut pending, &mut held, &output, true).await;
                        armed = false;
                    }
                }
                () = &mut timer, if armed => {
                    self.timeout_triggers.add(1);
                    self.flush(&mut pending, &mut held, &output, true).await;
                    armed = false;
                }
            }
        }
        self.flush(&mut pending, &mut held, &output, true).await;
    }
}
