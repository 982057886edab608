//! The runtime's basic nouns, which every other module may use and which use none of
//! them: boxed futures, the stop and deadline signals, readiness, the account of what
//! the pipelines hold, and the acknowledgement ticket a durable entry hands out.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use tokio::sync::watch;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Runs `work`, synchronous and long (milliseconds: parsing a large scraped page), without
/// holding up the tasks that share its worker thread: on the multi-threaded runtime the
/// worker hands them to another thread meanwhile (`block_in_place`); elsewhere (a
/// single-threaded test runtime, no runtime) `work` simply runs.
pub fn off_worker<R>(work: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
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

/// Fires when the shutdown deadline has passed: stop retrying, count what is left. The
/// same one-shot latch as [`Stop`], under its own name so the two cannot be mixed up.
#[derive(Clone)]
pub struct Deadline(Stop);

pub struct DeadlineTrigger(StopTrigger);

pub fn deadline_pair() -> (DeadlineTrigger, Deadline) {
    let (trigger, stop) = stop_pair();
    (DeadlineTrigger(trigger), Deadline(stop))
}

impl DeadlineTrigger {
    pub fn fire(&self) {
        self.0.fire();
    }
}

impl Deadline {
    pub async fn passed(&mut self) {
        self.0.wait().await
    }
}

/// Readiness shared between the runtime and whoever serves health endpoints.
#[derive(Clone, Default)]
pub struct Health {
    ready: Arc<AtomicBool>,
}

impl Health {
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

/// The data held anywhere in the pipelines — queued, buffered by a processor, being
/// sent — in encoded bytes and items, shared by every queue of a running service. The
/// memory limiter decides from it; shutdown reports what was still held as dropped.
#[derive(Debug, Default)]
pub struct Account {
    pub(crate) bytes: AtomicUsize,
    pub(crate) items: AtomicUsize,
    /// Items whose hold ended without being handed on or counted: lost.
    pub(crate) lost: AtomicU64,
    /// Items counted as dropped where they were dropped.
    dropped: AtomicU64,
}

impl Account {
    /// Encoded bytes held now.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Items held now.
    pub fn items(&self) -> usize {
        self.items.load(Ordering::Relaxed)
    }

    /// Items lost so far (held, then dropped without being delivered or counted).
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// Records items that were accepted but will never reach a backend. Every drop path
    /// calls this besides its own counter, so the exit code can say whether data was lost.
    pub fn record_dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
    }

    /// Items dropped since start, over all components: those counted where they were
    /// dropped, and those whose hold in a queue ended without delivery.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed) + self.lost()
    }
}

/// Retires a durable entry when its tickets are done (the persistent queue does);
/// type-erased so holds need no signal.
pub trait Retire: Send + Sync {
    fn retire(&self, seq: u64, items: u64, bytes: u64);
}

/// An entry's claim: cloned into every piece of the entry that travels through the
/// pipeline. When the last clone goes, the entry is retired, unless a piece was
/// [kept](Ticket::keep) (stopped undelivered at shutdown): then it stays for the next start.
/// Queues carry tickets without knowing what issued them.
#[derive(Clone)]
pub struct Ticket(Arc<TicketInner>);

struct TicketInner {
    seq: u64,
    items: u64,
    bytes: u64,
    kept: AtomicBool,
    journal: Weak<dyn Retire>,
}

impl Ticket {
    pub(crate) fn new(journal: Weak<dyn Retire>, seq: u64, items: u64, bytes: u64) -> Self {
        Ticket(Arc::new(TicketInner {
            seq,
            items,
            bytes,
            kept: AtomicBool::new(false),
            journal,
        }))
    }

    /// This piece was not delivered: keep the entry for the next start.
    pub fn keep(&self) {
        self.0.kept.store(true, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ticket({})", self.0.seq)
    }
}

impl Drop for TicketInner {
    fn drop(&mut self) {
        if !*self.kept.get_mut() {
            if let Some(j) = self.journal.upgrade() {
                j.retire(self.seq, self.items, self.bytes);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn long_work_off_the_worker_lets_the_other_tasks_run() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (tx, rx) = std::sync::mpsc::channel();
            let started = Arc::new(AtomicBool::new(false));
            let long = tokio::spawn({
                let started = started.clone();
                async move {
                    // Synchronous work that ends once another task on the one worker
                    // thread has run, or after 5 s.
                    off_worker(move || {
                        started.store(true, Ordering::SeqCst);
                        rx.recv_timeout(std::time::Duration::from_secs(5)).is_ok()
                    })
                }
            });
            tokio::spawn(async move {
                while !started.load(Ordering::SeqCst) {
                    tokio::task::yield_now().await;
                }
                let _ = tx.send(());
            });
            assert!(long.await.unwrap(), "the other task did not run meanwhile");
        });
    }

    #[tokio::test]
    async fn on_a_single_threaded_runtime_the_work_runs_in_place() {
        let started = Instant::now();
        assert_eq!(off_worker(|| 6 * 7), 42);
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
