//! The bounded channels between components, seen by components only through [`Input`]
//! and [`Output`], and the [`Stop`] signal.
//!
//! An [`Output`] may feed several targets (pipelines, or exporters at a pipeline's end):
//! it waits for room in every target before handing each a clone, so a batch is either
//! delivered everywhere or nowhere and a slow target slows its producers down instead of
//! growing a queue.

use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::payload::{Batch, Signal};
use crate::telemetry::Gauge;

/// The receiving end of a component's queue.
pub struct Input<S: Signal> {
    rx: mpsc::Receiver<Batch<S>>,
    queued: Gauge,
}

impl<S: Signal> Input<S> {
    /// The next batch, or `None` once every producer has finished.
    pub async fn recv(&mut self) -> Option<Batch<S>> {
        let batch = self.rx.recv().await?;
        self.queued.add(-1);
        Some(batch)
    }

    /// A batch if one is waiting right now.
    pub fn try_recv(&mut self) -> Option<Batch<S>> {
        let batch = self.rx.try_recv().ok()?;
        self.queued.add(-1);
        Some(batch)
    }

    /// Batches waiting in the queue.
    pub fn len(&self) -> usize {
        self.rx.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }
}

/// One producer's handle on a queue.
pub struct Sender<S: Signal> {
    tx: mpsc::Sender<Batch<S>>,
    queued: Gauge,
}

impl<S: Signal> Clone for Sender<S> {
    fn clone(&self) -> Self {
        Sender {
            tx: self.tx.clone(),
            queued: self.queued.clone(),
        }
    }
}

/// A bounded queue of `capacity` batches; `queued` tracks its length for self-metrics.
pub fn channel<S: Signal>(capacity: usize, queued: Gauge) -> (Sender<S>, Input<S>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (
        Sender {
            tx,
            queued: queued.clone(),
        },
        Input { rx, queued },
    )
}

/// Where a component's batches go: one or more queues.
pub struct Output<S: Signal> {
    targets: Vec<Sender<S>>,
}

impl<S: Signal> Clone for Output<S> {
    fn clone(&self) -> Self {
        Output {
            targets: self.targets.clone(),
        }
    }
}

/// Why an output did not take a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Every target stayed full for the whole wait; retry later.
    #[error("pipeline is full")]
    Full,
    /// A target has shut down; the batch cannot be delivered.
    #[error("pipeline is closed")]
    Closed,
}

impl<S: Signal> Output<S> {
    pub fn new(targets: Vec<Sender<S>>) -> Self {
        Output { targets }
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// Delivers to every target, waiting as long as it takes for room.
    pub async fn send(&self, batch: Batch<S>) -> Result<(), SendError> {
        let mut permits = Vec::with_capacity(self.targets.len());
        for t in &self.targets {
            permits.push(t.tx.reserve().await.map_err(|_| SendError::Closed)?);
        }
        self.deliver(permits, batch);
        Ok(())
    }

    /// Delivers to every target if all have room within `wait`; otherwise delivers
    /// nowhere, so the caller can refuse the data and the client can retry it.
    pub async fn offer(&self, batch: Batch<S>, wait: Duration) -> Result<(), SendError> {
        let reserve = async {
            let mut permits = Vec::with_capacity(self.targets.len());
            for t in &self.targets {
                let permit = match t.tx.try_reserve() {
                    Ok(p) => p,
                    Err(mpsc::error::TrySendError::Closed(())) => return Err(SendError::Closed),
                    Err(mpsc::error::TrySendError::Full(())) => {
                        t.tx.reserve().await.map_err(|_| SendError::Closed)?
                    }
                };
                permits.push(permit);
            }
            Ok(permits)
        };
        let permits = tokio::time::timeout(wait, reserve)
            .await
            .map_err(|_| SendError::Full)??;
        self.deliver(permits, batch);
        Ok(())
    }

    fn deliver(&self, permits: Vec<mpsc::Permit<'_, Batch<S>>>, batch: Batch<S>) {
        let last = permits.len().saturating_sub(1);
        let mut batch = Some(batch);
        for (i, (permit, target)) in permits.into_iter().zip(&self.targets).enumerate() {
            let b = if i == last {
                batch.take().unwrap_or_default()
            } else {
                batch.clone().unwrap_or_default()
            };
            target.queued.add(1);
            permit.send(b);
        }
    }
}

/// Tells a component to stop taking new data. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Stop(watch::Receiver<bool>);

/// Fires every [`Stop`] made with it.
#[derive(Debug)]
pub struct StopTrigger(watch::Sender<bool>);

pub fn stop_pair() -> (StopTrigger, Stop) {
    let (tx, rx) = watch::channel(false);
    (StopTrigger(tx), Stop(rx))
}

impl StopTrigger {
    pub fn fire(&self) {
        let _ = self.0.send(true);
    }

    pub fn stop(&self) -> Stop {
        Stop(self.0.subscribe())
    }
}

impl Stop {
    /// Resolves once stop has been fired (or the trigger is gone).
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|s| *s).await;
    }

    /// A future that resolves once stop has been fired, for servers that take one.
    pub async fn fired(mut self) {
        self.wait().await
    }

    pub fn is_stopped(&self) -> bool {
        *self.0.borrow()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::payload::{Traces, TracesSignal};

    fn batch() -> Traces {
        Traces::from_encoded(Bytes::new()).unwrap()
    }

    #[tokio::test]
    async fn offer_is_all_or_nothing() {
        let (a, mut ia) = channel::<TracesSignal>(1, Gauge::default());
        let (b, mut ib) = channel::<TracesSignal>(1, Gauge::default());
        let out = Output::new(vec![a, b]);
        out.offer(batch(), Duration::ZERO).await.unwrap();
        ia.recv().await.unwrap();
        // `b` is still full, so the next offer must not reach `a` either.
        assert_eq!(
            out.offer(batch(), Duration::from_millis(10)).await,
            Err(SendError::Full)
        );
        assert!(ia.try_recv().is_none());
        ib.recv().await.unwrap();
        out.offer(batch(), Duration::ZERO).await.unwrap();
        assert!(ia.try_recv().is_some() && ib.try_recv().is_some());
    }

    #[tokio::test]
    async fn queue_gauge_tracks_length() {
        let g = Gauge::default();
        let (tx, mut rx) = channel::<TracesSignal>(4, g.clone());
        let out = Output::new(vec![tx]);
        out.send(batch()).await.unwrap();
        out.send(batch()).await.unwrap();
        assert_eq!(g.get(), 2);
        rx.recv().await.unwrap();
        assert_eq!(g.get(), 1);
        drop(out);
        rx.recv().await.unwrap();
        assert!(rx.recv().await.is_none());
        assert_eq!(g.get(), 0);
    }
}
