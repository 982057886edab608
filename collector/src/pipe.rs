//! The bounded channels between components, seen by components only through [`Input`]
//! and [`Output`], and the [`Stop`] signal.
//!
//! An [`Output`] may feed several targets (pipelines, or exporters at a pipeline's end):
//! it waits for room in every target before handing each a clone, so a batch is either
//! delivered everywhere or nowhere and a slow target slows its producers down instead of
//! growing a queue.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

pub use crate::base::{stop_pair, Account, Stop, StopTrigger};
use crate::base::{BoxFuture, Ticket};
use crate::payload::{Batch, Signal};
use crate::telemetry::Gauge;

/// What a queue's capacity counts, as the Collector's `sending_queue.sizer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sizer {
    /// Encoded bytes of the batches (default): bounds memory.
    #[default]
    Bytes,
    /// Spans, data points or log records.
    Items,
    /// Batches, whatever their size.
    Requests,
}

/// A queue's bounds; a batch waits until it fits all of them. A batch larger than a
/// whole bound takes all of it, so it can still pass through an empty queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limit {
    /// Batches.
    pub requests: Option<usize>,
    /// Spans, data points or log records.
    pub items: Option<usize>,
    /// Encoded bytes.
    pub bytes: Option<usize>,
}

impl Limit {
    /// Bounded by encoded bytes only.
    pub fn bytes(capacity: usize) -> Self {
        Limit {
            bytes: Some(capacity),
            ..Limit::default()
        }
    }

    pub fn requests(capacity: usize) -> Self {
        Limit {
            requests: Some(capacity),
            ..Limit::default()
        }
    }

    /// `capacity` in `sizer` units, and never more than `max_bytes` bytes.
    pub fn sized(sizer: Sizer, capacity: usize, max_bytes: usize) -> Self {
        match sizer {
            Sizer::Bytes => Limit::bytes(capacity.min(max_bytes)),
            Sizer::Items => Limit {
                items: Some(capacity),
                bytes: Some(max_bytes),
                ..Limit::default()
            },
            Sizer::Requests => Limit {
                requests: Some(capacity),
                bytes: Some(max_bytes),
                ..Limit::default()
            },
        }
    }
}

/// One queue's state, shared by its senders, its receiver and the holds it handed out.
#[derive(Debug)]
struct Queue {
    /// Bounds items and bytes; requests are bounded by the channel's slots.
    items: Option<Gate>,
    bytes_gate: Option<Gate>,
    /// Bytes of the holds from this queue still alive (queued or with the consumer).
    bytes: AtomicUsize,
    account: Arc<Account>,
    /// Batches queued (not yet received), for self-metrics.
    queued: Gauge,
    /// Bytes queued (not yet received), for self-metrics.
    queued_bytes: Gauge,
}

#[derive(Debug)]
struct Gate {
    semaphore: Arc<Semaphore>,
    capacity: usize,
}

impl Gate {
    fn new(capacity: usize) -> Self {
        let capacity = capacity.clamp(1, u32::MAX as usize >> 1);
        Gate {
            semaphore: Arc::new(Semaphore::new(capacity)),
            capacity,
        }
    }

    fn units(&self, n: usize) -> u32 {
        n.clamp(1, self.capacity) as u32
    }

    async fn acquire(&self, n: usize) -> Result<OwnedSemaphorePermit, SendError> {
        Arc::clone(&self.semaphore)
            .acquire_many_owned(self.units(n))
            .await
            .map_err(|_| SendError::Closed)
    }

    fn try_acquire(&self, n: usize) -> Result<Option<OwnedSemaphorePermit>, SendError> {
        match Arc::clone(&self.semaphore).try_acquire_many_owned(self.units(n)) {
            Ok(p) => Ok(Some(p)),
            Err(tokio::sync::TryAcquireError::NoPermits) => Ok(None),
            Err(tokio::sync::TryAcquireError::Closed) => Err(SendError::Closed),
        }
    }
}

/// The permits one batch holds on its queue's gates.
#[derive(Debug, Default)]
struct Permits {
    items: Option<OwnedSemaphorePermit>,
    bytes: Option<OwnedSemaphorePermit>,
}

impl Permits {
    fn merge(&mut self, other: Permits) {
        for (mine, theirs) in [
            (&mut self.items, other.items),
            (&mut self.bytes, other.bytes),
        ] {
            match (mine.as_mut(), theirs) {
                (Some(m), Some(t)) => m.merge(t),
                (None, t) => *mine = t,
                (Some(_), None) => {}
            }
        }
    }

    fn split(&mut self, items: usize, bytes: usize) -> Permits {
        let part = |p: &mut Option<OwnedSemaphorePermit>, n: usize| match p {
            Some(_) if n == 0 => None,
            Some(q) if n < q.num_permits() => q.split(n),
            _ => p.take(),
        };
        Permits {
            items: part(&mut self.items, items),
            bytes: part(&mut self.bytes, bytes),
        }
    }
}

/// The claim a batch makes on its queue's capacity and on the [`Account`], from the
/// moment it is queued until its consumer hands it on ([`Hold::release`]) or counts it
/// delivered or dropped. A hold dropped without release is counted as lost, so no path
/// can lose data silently.
#[derive(Debug)]
pub struct Hold {
    queue: Option<Arc<Queue>>,
    bytes: usize,
    items: usize,
    permits: Permits,
    /// Holds from other queues merged into this one.
    others: Vec<Hold>,
    /// The persistent-queue entries these items belong to, in item order, with how many
    /// of each entry's items this hold covers.
    tickets: Tickets,
    released: bool,
}

/// Persistent-queue tickets with the items of each covered, in item order.
pub type Tickets = Vec<(Ticket, usize)>;

impl Hold {
    /// A hold on nothing (data that entered no queue).
    pub fn none() -> Self {
        Hold {
            queue: None,
            bytes: 0,
            items: 0,
            permits: Permits::default(),
            others: Vec::new(),
            tickets: Vec::new(),
            released: false,
        }
    }

    fn new<S: Signal>(
        queue: &Arc<Queue>,
        batch: &Batch<S>,
        permits: Permits,
        tickets: Tickets,
    ) -> Self {
        let (bytes, items) = (batch.size(), batch.len());
        queue.bytes.fetch_add(bytes, Ordering::Relaxed);
        queue.account.bytes.fetch_add(bytes, Ordering::Relaxed);
        queue.account.items.fetch_add(items, Ordering::Relaxed);
        Hold {
            queue: Some(Arc::clone(queue)),
            bytes,
            items,
            permits,
            others: Vec::new(),
            tickets,
            released: false,
        }
    }

    /// Items this hold covers.
    pub fn items(&self) -> usize {
        self.items + self.others.iter().map(Hold::items).sum::<usize>()
    }

    /// Takes `other` into this hold (a processor joining batches).
    pub fn merge(&mut self, mut other: Hold) {
        let same = match (&self.queue, &other.queue) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, _) => {
                std::mem::swap(self, &mut other);
                self.merge(other);
                return;
            }
            (_, None) => {
                self.tickets.append(&mut other.tickets);
                other.released = true;
                return;
            }
        };
        if !same {
            self.others.push(other);
            return;
        }
        self.bytes += std::mem::take(&mut other.bytes);
        self.items += std::mem::take(&mut other.items);
        self.permits.merge(std::mem::take(&mut other.permits));
        self.others.append(&mut other.others);
        self.tickets.append(&mut other.tickets);
        other.released = true;
    }

    /// Splits off a hold for `items` items and `bytes` bytes (a processor sending part
    /// of what it holds); `self` keeps the rest.
    pub fn split(&mut self, items: usize, bytes: usize) -> Hold {
        let items = items.min(self.items);
        let bytes = bytes.min(self.bytes);
        self.items -= items;
        self.bytes -= bytes;
        // Units were rounded when acquired; the last part takes whatever is left.
        let permits = if self.items == 0 && self.bytes == 0 {
            std::mem::take(&mut self.permits)
        } else {
            self.permits.split(items, bytes)
        };
        Hold {
            queue: self.queue.clone(),
            bytes,
            items,
            permits,
            others: Vec::new(),
            tickets: self.split_tickets(items),
            released: false,
        }
    }

    /// The tickets of the first `items` items: whole entries move, an entry cut in two
    /// goes with both parts.
    fn split_tickets(&mut self, items: usize) -> Tickets {
        let mut left = items;
        let mut taken = Vec::new();
        while left > 0 && !self.tickets.is_empty() {
            let n = self.tickets[0].1;
            if n <= left {
                taken.push(self.tickets.remove(0));
                left -= n;
            } else {
                taken.push((self.tickets[0].0.clone(), left));
                self.tickets[0].1 -= left;
                left = 0;
            }
        }
        // The last part takes whatever is left.
        if self.items == 0 {
            taken.append(&mut self.tickets);
        }
        taken
    }

    /// The tickets of the items this hold covers, for the next stage's holds.
    pub fn tickets(&self) -> Tickets {
        self.tickets.clone()
    }

    /// Whether these items are in a persistent queue: if they are not delivered now,
    /// they are sent again after a restart.
    pub fn is_durable(&self) -> bool {
        !self.tickets.is_empty()
    }

    /// The data was handed on, delivered, or counted as dropped: free its room.
    pub fn release(mut self) {
        self.released = true;
        for o in self.others.drain(..) {
            o.release();
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if !self.released {
            // Not delivered: their entries stay in the persistent queue.
            self.tickets.iter().for_each(|(t, _)| t.keep());
        }
        let Some(q) = &self.queue else { return };
        q.bytes.fetch_sub(self.bytes, Ordering::Relaxed);
        q.account.bytes.fetch_sub(self.bytes, Ordering::Relaxed);
        q.account.items.fetch_sub(self.items, Ordering::Relaxed);
        if !self.released && self.items > 0 && self.tickets.is_empty() {
            q.account
                .lost
                .fetch_add(self.items as u64, Ordering::Relaxed);
        }
    }
}

struct Queued<S: Signal> {
    batch: Batch<S>,
    hold: Hold,
}

/// The receiving end of a component's queue.
pub struct Input<S: Signal> {
    rx: mpsc::Receiver<Queued<S>>,
    queue: Arc<Queue>,
}

impl<S: Signal> Input<S> {
    /// The next batch and its hold, or `None` once every producer has finished. The
    /// hold keeps the batch's room taken until it is released.
    pub async fn recv_held(&mut self) -> Option<(Batch<S>, Hold)> {
        let q = self.rx.recv().await?;
        self.queue.dequeued(&q.hold);
        Some((q.batch, q.hold))
    }

    /// The next batch; its room is freed at once (for consumers that hand it on
    /// immediately, and tests).
    pub async fn recv(&mut self) -> Option<Batch<S>> {
        let (batch, hold) = self.recv_held().await?;
        hold.release();
        Some(batch)
    }

    /// A batch if one is waiting right now.
    pub fn try_recv(&mut self) -> Option<Batch<S>> {
        let q = self.rx.try_recv().ok()?;
        self.queue.dequeued(&q.hold);
        q.hold.release();
        Some(q.batch)
    }

    /// Batches waiting in the queue.
    pub fn len(&self) -> usize {
        self.rx.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    /// Bytes held from this queue: waiting in it or still with its consumer.
    pub fn held_bytes(&self) -> usize {
        self.queue.bytes.load(Ordering::Relaxed)
    }

    /// The account this queue's holds count in.
    pub fn account(&self) -> &Arc<Account> {
        &self.queue.account
    }
}

/// One producer's handle on a queue.
pub struct Sender<S: Signal> {
    tx: mpsc::Sender<Queued<S>>,
    queue: Arc<Queue>,
    /// The largest single item (encoded bytes) the stages behind this queue can send.
    item_limit: Option<usize>,
}

impl<S: Signal> Clone for Sender<S> {
    fn clone(&self) -> Self {
        Sender {
            tx: self.tx.clone(),
            queue: Arc::clone(&self.queue),
            item_limit: self.item_limit,
        }
    }
}

/// Slots of a queue bounded by bytes or items: enough never to be the limit in
/// practice, allocated only as used.
const UNSIZED_SLOTS: usize = 1 << 16;

impl Queue {
    fn dequeued(&self, hold: &Hold) {
        self.queued.add(-1);
        self.queued_bytes.add(-(hold.bytes as i64));
    }
}

/// A bounded queue of `capacity` batches with its own account; `queued` tracks its
/// length for self-metrics. For tests and simple uses.
pub fn channel<S: Signal>(capacity: usize, queued: Gauge) -> (Sender<S>, Input<S>) {
    channel_with(
        Limit::requests(capacity),
        queued,
        Gauge::default(),
        Arc::new(Account::default()),
    )
}

/// A queue bounded by `limit`, whose holds count in `account`; `queued` and
/// `queued_bytes` track the batches and bytes waiting in it.
pub fn channel_with<S: Signal>(
    limit: Limit,
    queued: Gauge,
    queued_bytes: Gauge,
    account: Arc<Account>,
) -> (Sender<S>, Input<S>) {
    let slots = limit.requests.unwrap_or(UNSIZED_SLOTS).max(1);
    let (tx, rx) = mpsc::channel(slots);
    let queue = Arc::new(Queue {
        items: limit.items.map(Gate::new),
        bytes_gate: limit.bytes.map(Gate::new),
        bytes: AtomicUsize::new(0),
        account,
        queued,
        queued_bytes,
    });
    (
        Sender {
            tx,
            queue: Arc::clone(&queue),
            item_limit: None,
        },
        Input { rx, queue },
    )
}

/// Room reserved in one queue: a slot and the batch's share of its bounds.
struct Reserved<'a, S: Signal> {
    slot: mpsc::Permit<'a, Queued<S>>,
    permits: Permits,
}

impl<S: Signal> Sender<S> {
    /// Says that no item larger than `bytes` can be sent on from this queue.
    pub fn with_item_limit(mut self, bytes: Option<usize>) -> Self {
        self.item_limit = bytes;
        self
    }

    /// The largest item that can be sent on from this queue.
    pub fn item_limit(&self) -> Option<usize> {
        self.item_limit
    }

    async fn reserve(&self, batch: &Batch<S>) -> Result<Reserved<'_, S>, SendError> {
        let q = &self.queue;
        let mut permits = Permits::default();
        if let Some(g) = &q.items {
            permits.items = Some(g.acquire(batch.len()).await?);
        }
        if let Some(g) = &q.bytes_gate {
            permits.bytes = Some(g.acquire(batch.size()).await?);
        }
        let slot = self.tx.reserve().await.map_err(|_| SendError::Closed)?;
        Ok(Reserved { slot, permits })
    }

    fn try_reserve(&self, batch: &Batch<S>) -> Result<Option<Reserved<'_, S>>, SendError> {
        let q = &self.queue;
        let mut permits = Permits::default();
        if let Some(g) = &q.items {
            match g.try_acquire(batch.len())? {
                Some(p) => permits.items = Some(p),
                None => return Ok(None),
            }
        }
        if let Some(g) = &q.bytes_gate {
            match g.try_acquire(batch.size())? {
                Some(p) => permits.bytes = Some(p),
                None => return Ok(None),
            }
        }
        match self.tx.try_reserve() {
            Ok(slot) => Ok(Some(Reserved { slot, permits })),
            Err(mpsc::error::TrySendError::Closed(())) => Err(SendError::Closed),
            Err(mpsc::error::TrySendError::Full(())) => Ok(None),
        }
    }
}

/// Where a component's batches go: one or more queues, and for a receiver feeding a
/// pipeline with a persistent queue, that queue's journal. A receiver's output may also
/// hold pipelines whose first work runs in its own call ([`Front`]).
pub struct Output<S: Signal> {
    targets: Vec<Sender<S>>,
    durables: Vec<Box<dyn Durable<S>>>,
    /// Pipelines entered through their front, each with what comes after it.
    fronted: Vec<(Arc<dyn Front<S>>, Output<S>)>,
    /// A receiver's output: where it points now (the fields above are then empty).
    switch: Option<Arc<Switch<S>>>,
}

impl<S: Signal> Clone for Output<S> {
    fn clone(&self) -> Self {
        Output {
            targets: self.targets.clone(),
            durables: self.durables.iter().map(|d| d.clone_box()).collect(),
            fronted: self.fronted.clone(),
            switch: self.switch.clone(),
        }
    }
}

/// A receiver's way into the pipelines, which a config reload repoints while the
/// receiver runs on: each send goes to the pipelines that are current when it starts,
/// and the pipelines left behind close once the sends still in them are done.
pub struct Switch<S: Signal> {
    current: std::sync::RwLock<Arc<Output<S>>>,
}

impl<S: Signal> Switch<S> {
    fn current(&self) -> Arc<Output<S>> {
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Sends go to `output` from now on.
    pub fn repoint(&self, output: Output<S>) {
        let previous = std::mem::replace(
            &mut *self.current.write().unwrap_or_else(|p| p.into_inner()),
            Arc::new(output),
        );
        // Dropped outside the lock: the last reference closes the old pipelines' queues.
        drop(previous);
    }
}

/// One destination of a receiver: a pipeline's first queue, its persistent queue, or
/// its front with the destinations behind it.
pub enum Target<S: Signal> {
    Queue(Sender<S>),
    Durable(Box<dyn Durable<S>>),
    Front(Arc<dyn Front<S>>, Vec<Target<S>>),
}

impl<S: Signal> Clone for Target<S> {
    fn clone(&self) -> Self {
        match self {
            Target::Queue(s) => Target::Queue(s.clone()),
            Target::Durable(d) => Target::Durable(d.clone_box()),
            Target::Front(f, next) => Target::Front(Arc::clone(f), next.clone()),
        }
    }
}

/// The first work of a pipeline, done in the sender's call before the data is taken,
/// so that what it refuses is refused to the client: admission (the memory limiter)
/// and per-batch processors (filter, transform, sampling). Queues do not know what
/// implements it.
pub trait Front<S: Signal>: Send + Sync {
    /// `None` while the pipeline takes data; otherwise how long to wait before asking
    /// again.
    fn closed(&self) -> Option<Duration>;
    /// Edits the batch in place; `Err` refuses it (a processor's `error_mode:
    /// propagate`), with the reason.
    fn sift(&self, batch: &mut Batch<S>) -> Result<(), String>;
}

/// A target that keeps what it takes (a pipeline's persistent queue): an output
/// appends the batch and, once every queue has it too, waits until it is durable
/// before the receiver answers. Queues do not know what implements it.
pub trait Durable<S: Signal>: Send + Sync {
    /// Whether `batch` fits now.
    fn has_room(&self, batch: &Batch<S>) -> bool;
    /// Waits up to `wait` (forever with `None`) for room for `batch`.
    fn wait_room<'a>(
        &'a self,
        batch: &'a Batch<S>,
        wait: Option<Duration>,
    ) -> BoxFuture<'a, Result<(), SendError>>;
    /// Appends `batch`; the number to wait for with [`Durable::synced`].
    fn append(&self, batch: &Batch<S>) -> Result<u64, SendError>;
    /// Resolves once the entry `seq` is on the device (at once without syncing).
    fn synced(&self, seq: u64) -> BoxFuture<'_, Result<(), SendError>>;
    /// The largest item the exporters behind it can send on.
    fn item_limit(&self) -> Option<usize>;
    fn clone_box(&self) -> Box<dyn Durable<S>>;
}

/// Why an output did not take a batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Every target stayed full for the whole wait; retry later.
    #[error("pipeline is full")]
    Full,
    /// A target has shut down; the batch cannot be delivered.
    #[error("pipeline is closed")]
    Closed,
    /// An item is larger than an exporter behind this output can send (its
    /// `max_request_size`); retrying cannot help.
    #[error("an item of {size} bytes is larger than the {limit}-byte request limit")]
    TooLarge { size: usize, limit: usize },
    /// A processor at a pipeline's front refused the data (`error_mode: propagate`);
    /// sending it again fails the same way.
    #[error("refused by a processor: {0}")]
    Refused(String),
}

impl<S: Signal> Output<S> {
    pub fn new(targets: Vec<Sender<S>>) -> Self {
        Output {
            targets,
            durables: Vec::new(),
            fronted: Vec::new(),
            switch: None,
        }
    }

    /// `output` behind a [`Switch`] that can repoint it.
    pub fn switched(output: Output<S>) -> (Self, Arc<Switch<S>>) {
        let switch = Arc::new(Switch {
            current: std::sync::RwLock::new(Arc::new(output)),
        });
        let mut out = Output::new(Vec::new());
        out.switch = Some(Arc::clone(&switch));
        (out, switch)
    }

    /// Where a switched output points now; `None` for one that is not switched.
    fn current(&self) -> Option<Arc<Output<S>>> {
        self.switch.as_ref().map(|s| s.current())
    }

    /// Queues, persistent queues and fronts.
    pub fn from_targets(targets: Vec<Target<S>>) -> Self {
        let mut out = Output::new(Vec::new());
        for t in targets {
            match t {
                Target::Queue(s) => out.targets.push(s),
                Target::Durable(d) => out.durables.push(d),
                Target::Front(f, next) => out.fronted.push((f, Output::from_targets(next))),
            }
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        if let Some(current) = self.current() {
            return current.is_empty();
        }
        self.targets.is_empty() && self.durables.is_empty() && self.fronted.is_empty()
    }

    /// Whether it feeds queues or persistent queues directly (not through a front).
    fn has_plain(&self) -> bool {
        !self.targets.is_empty() || !self.durables.is_empty()
    }

    /// Delivers to every target, waiting as long as it takes for room. With a
    /// persistent queue among the targets, returns once the batch is in it.
    pub async fn send(&self, batch: Batch<S>) -> Result<(), SendError> {
        self.send_ticketed(batch, Vec::new()).await
    }

    /// [`Output::send`] for items of persistent-queue entries: the next holds carry
    /// their tickets.
    pub async fn send_ticketed(&self, batch: Batch<S>, tickets: Tickets) -> Result<(), SendError> {
        let current = self.current();
        let this = current.as_deref().unwrap_or(self);
        let parts = this.sifted(batch, None).await?;
        Self::deliver_parts(parts, None, tickets).await
    }

    /// The largest item every target can send on.
    pub fn item_limit(&self) -> Option<usize> {
        if let Some(current) = self.current() {
            return current.item_limit();
        }
        let queues = self.targets.iter().filter_map(Sender::item_limit);
        let durables = self.durables.iter().filter_map(|d| d.item_limit());
        let fronted = self
            .fronted
            .iter()
            .filter_map(|(_, next)| next.item_limit());
        queues.chain(durables).chain(fronted).min()
    }

    /// Refuses a batch holding an item that no request could carry: it would only be
    /// dropped further on. Cheap unless the whole batch is over the limit; then the
    /// batch is halved until every piece fits or one item alone does not.
    pub fn check_item_sizes(&self, batch: &Batch<S>) -> Result<(), SendError> {
        let Some(limit) = self.item_limit() else {
            return Ok(());
        };
        if batch.size() <= limit {
            return Ok(());
        }
        let mut work = vec![batch.clone()];
        while let Some(mut b) = work.pop() {
            let size = b.size();
            if size <= limit {
                continue;
            }
            if b.len() <= 1 {
                return Err(SendError::TooLarge { size, limit });
            }
            let rest = b.split_off(b.len() / 2);
            work.push(rest);
            work.push(b);
        }
        Ok(())
    }

    /// Delivers to every target if all have room within `wait`; otherwise delivers
    /// nowhere, so the caller can refuse the data and the client can retry it. A
    /// pipeline's front runs first: what it refuses is refused here.
    pub async fn offer(&self, batch: Batch<S>, wait: Duration) -> Result<(), SendError> {
        let current = self.current();
        let this = current.as_deref().unwrap_or(self);
        let deadline = tokio::time::Instant::now() + wait;
        let parts = this.sifted(batch, Some(deadline)).await?;
        for (out, b) in &parts {
            out.check_item_sizes(b)?;
        }
        Self::deliver_parts(parts, Some(deadline), Vec::new()).await
    }

    /// The batch for each output that takes it without a front: this one's own queues,
    /// and behind each front what the front let through (nothing when it removed every
    /// item). Waits for a closed front until `deadline` (without one, as long as it
    /// takes).
    async fn sifted(
        &self,
        batch: Batch<S>,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Vec<(&Output<S>, Batch<S>)>, SendError> {
        let mut parts = Vec::with_capacity(self.fronted.len() + 1);
        let mut batch = Some(batch);
        for (i, (front, next)) in self.fronted.iter().enumerate() {
            wait_open(front.as_ref(), deadline).await?;
            let mut b = if i + 1 == self.fronted.len() && !self.has_plain() {
                batch.take().unwrap_or_default()
            } else {
                batch.clone().unwrap_or_default()
            };
            front.sift(&mut b).map_err(SendError::Refused)?;
            if !b.is_empty() {
                parts.push((next, b));
            }
        }
        if let Some(b) = batch.filter(|_| self.has_plain()) {
            parts.push((self, b));
        }
        Ok(parts)
    }

    /// Reserves room for every part (until `deadline`, or as long as it takes), then
    /// delivers each: everywhere or nowhere.
    async fn deliver_parts(
        parts: Vec<(&Output<S>, Batch<S>)>,
        deadline: Option<tokio::time::Instant>,
        tickets: Tickets,
    ) -> Result<(), SendError> {
        let reserve = async {
            let mut all = Vec::with_capacity(parts.len());
            for (out, b) in &parts {
                all.push(out.reserve(b, deadline).await?);
            }
            Ok::<_, SendError>(all)
        };
        let reserved = match deadline {
            Some(d) => tokio::time::timeout_at(d, reserve)
                .await
                .map_err(|_| SendError::Full)??,
            None => reserve.await?,
        };
        for ((out, b), r) in parts.into_iter().zip(reserved) {
            out.deliver(r, b, tickets.clone()).await?;
        }
        Ok(())
    }

    /// Room in this output's own queues and persistent queues.
    async fn reserve(
        &self,
        batch: &Batch<S>,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Vec<Reserved<'_, S>>, SendError> {
        let mut reserved = Vec::with_capacity(self.targets.len());
        for t in &self.targets {
            let r = match t.try_reserve(batch)? {
                Some(r) => r,
                None => t.reserve(batch).await?,
            };
            reserved.push(r);
        }
        for d in &self.durables {
            if !d.has_room(batch) {
                let wait = deadline.map(|d| d - tokio::time::Instant::now());
                d.wait_room(batch, wait).await?;
            }
        }
        Ok(reserved)
    }

    /// Hands the batch to the reserved queues, then appends it to the persistent queues
    /// and waits until it is durable there.
    async fn deliver(
        &self,
        reserved: Vec<Reserved<'_, S>>,
        batch: Batch<S>,
        tickets: Tickets,
    ) -> Result<(), SendError> {
        let mut appended = Vec::with_capacity(self.durables.len());
        // An empty request has nothing to keep (and no ticket to wait for).
        for d in self.durables.iter().filter(|_| !batch.is_empty()) {
            appended.push((d, d.append(&batch)?));
        }
        let last = reserved.len().saturating_sub(1);
        let mut batch = Some(batch);
        for (i, (r, target)) in reserved.into_iter().zip(&self.targets).enumerate() {
            let b = if i == last {
                batch.take().unwrap_or_default()
            } else {
                batch.clone().unwrap_or_default()
            };
            let hold = Hold::new(&target.queue, &b, r.permits, tickets.clone());
            target.queue.queued.add(1);
            target.queue.queued_bytes.add(hold.bytes as i64);
            r.slot.send(Queued { batch: b, hold });
        }
        for (d, seq) in appended {
            d.synced(seq).await?;
        }
        Ok(())
    }
}

/// Waits while `front` is closed: until `deadline` (then the data is refused
/// retryably), or without one as long as it takes.
async fn wait_open<S: Signal>(
    front: &dyn Front<S>,
    deadline: Option<tokio::time::Instant>,
) -> Result<(), SendError> {
    while let Some(again) = front.closed() {
        let now = tokio::time::Instant::now();
        let until = now + again;
        match deadline {
            Some(d) if d <= now => return Err(SendError::Full),
            Some(d) => tokio::time::sleep_until(until.min(d)).await,
            None => tokio::time::sleep_until(until).await,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
