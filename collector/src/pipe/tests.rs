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

fn spans(n: usize) -> Traces {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message;
    let span = Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        name: "x".repeat(100),
        ..Span::default()
    };
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![span; n],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    Traces::from_encoded(Bytes::from(req.encode_to_vec())).unwrap()
}

#[tokio::test]
async fn a_byte_bound_pushes_back_and_holds_count_until_released() {
    let account = Arc::new(Account::default());
    let bytes = Gauge::default();
    let one = spans(10);
    let size = one.size();
    let (tx, mut rx) = channel_with::<TracesSignal>(
        Limit::bytes(size * 2),
        Gauge::default(),
        bytes.clone(),
        Arc::clone(&account),
    );
    let out = Output::new(vec![tx]);
    out.offer(spans(10), Duration::ZERO).await.unwrap();
    out.offer(spans(10), Duration::ZERO).await.unwrap();
    assert_eq!(account.bytes(), size * 2);
    assert_eq!(bytes.get(), (size * 2) as i64);
    // Full in bytes, though only two batches wait.
    assert_eq!(
        out.offer(spans(10), Duration::from_millis(10)).await,
        Err(SendError::Full)
    );
    // A received batch keeps its room until its hold is released.
    let (_, hold) = rx.recv_held().await.unwrap();
    assert_eq!(bytes.get(), size as i64);
    assert_eq!(account.bytes(), size * 2);
    assert!(out
        .offer(spans(10), Duration::from_millis(10))
        .await
        .is_err());
    hold.release();
    assert_eq!(account.bytes(), size);
    out.offer(spans(10), Duration::ZERO).await.unwrap();
    assert_eq!(account.lost(), 0);
}

#[tokio::test]
async fn a_hold_dropped_undelivered_counts_its_items_as_lost() {
    let account = Arc::new(Account::default());
    let (tx, mut rx) = channel_with::<TracesSignal>(
        Limit::bytes(1 << 20),
        Gauge::default(),
        Gauge::default(),
        Arc::clone(&account),
    );
    let out = Output::new(vec![tx]);
    out.send(spans(3)).await.unwrap();
    out.send(spans(4)).await.unwrap();
    let (_, mut first) = rx.recv_held().await.unwrap();
    let (_, second) = rx.recv_held().await.unwrap();
    first.merge(second);
    assert_eq!(first.items(), 7);
    let part = first.split(3, 0);
    part.release();
    drop(first);
    assert_eq!(account.lost(), 4);
    // Batches still queued when the queue goes away are lost too.
    out.send(spans(5)).await.unwrap();
    drop(out);
    drop(rx);
    assert_eq!(account.lost(), 9);
    assert_eq!(account.items(), 0);
    assert_eq!(account.bytes(), 0);
}

#[tokio::test]
async fn a_batch_larger_than_the_queue_passes_an_empty_queue() {
    let (tx, mut rx) = channel_with::<TracesSignal>(
        Limit::bytes(10),
        Gauge::default(),
        Gauge::default(),
        Arc::new(Account::default()),
    );
    let out = Output::new(vec![tx]);
    out.offer(spans(10), Duration::ZERO).await.unwrap();
    assert!(out
        .offer(spans(1), Duration::from_millis(10))
        .await
        .is_err());
    rx.recv().await.unwrap();
    out.offer(spans(1), Duration::ZERO).await.unwrap();
}

/// A front that keeps the first `keep` items of a batch, refuses a batch of exactly
/// `refuse` items, and is closed while `closed` is set.
struct TestFront {
    keep: usize,
    refuse: usize,
    closed: std::sync::atomic::AtomicBool,
    sifted: AtomicUsize,
}

impl Front<TracesSignal> for TestFront {
    fn closed(&self) -> Option<Duration> {
        self.closed
            .load(Ordering::SeqCst)
            .then_some(Duration::from_millis(5))
    }

    fn sift(&self, batch: &mut Traces) -> Result<(), String> {
        self.sifted.fetch_add(1, Ordering::SeqCst);
        if batch.len() == self.refuse {
            return Err(format!("{} items", batch.len()));
        }
        batch.split_off(self.keep.min(batch.len()));
        Ok(())
    }
}

fn test_front(keep: usize, refuse: usize) -> Arc<TestFront> {
    Arc::new(TestFront {
        keep,
        refuse,
        closed: false.into(),
        sifted: AtomicUsize::new(0),
    })
}

#[tokio::test]
async fn a_front_runs_in_the_senders_call_and_what_it_refuses_reaches_no_pipeline() {
    let (a, mut ia) = channel::<TracesSignal>(4, Gauge::default());
    let (b, mut ib) = channel::<TracesSignal>(4, Gauge::default());
    let front = test_front(2, 3);
    // Pipeline A through the front, pipeline B directly.
    let out = Output::from_targets(vec![
        Target::Front(front.clone(), vec![Target::Queue(a)]),
        Target::Queue(b),
    ]);
    out.offer(spans(5), Duration::ZERO).await.unwrap();
    assert_eq!(ia.try_recv().unwrap().len(), 2, "the front kept two");
    assert_eq!(
        ib.try_recv().unwrap().len(),
        5,
        "the other pipeline is untouched"
    );
    assert_eq!(
        out.offer(spans(3), Duration::ZERO).await,
        Err(SendError::Refused("3 items".into()))
    );
    assert!(
        ia.try_recv().is_none() && ib.try_recv().is_none(),
        "nowhere"
    );
    // `send` (a file reader's) is refused the same way.
    assert!(matches!(
        out.send(spans(3)).await,
        Err(SendError::Refused(_))
    ));
    assert_eq!(front.sifted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_front_that_removes_everything_queues_nothing() {
    let (a, mut ia) = channel::<TracesSignal>(4, Gauge::default());
    let out = Output::from_targets(vec![Target::Front(
        test_front(0, usize::MAX),
        vec![Target::Queue(a)],
    )]);
    out.offer(spans(4), Duration::ZERO).await.unwrap();
    drop(out);
    assert!(ia.recv().await.is_none(), "an emptied batch is not queued");
}

#[tokio::test(start_paused = true)]
async fn a_closed_front_refuses_retryably_after_the_wait_and_send_waits_it_out() {
    let (a, mut ia) = channel::<TracesSignal>(4, Gauge::default());
    let front = test_front(usize::MAX, usize::MAX);
    front.closed.store(true, Ordering::SeqCst);
    let out = Output::from_targets(vec![Target::Front(front.clone(), vec![Target::Queue(a)])]);
    assert_eq!(
        out.offer(spans(1), Duration::from_millis(50)).await,
        Err(SendError::Full)
    );
    assert_eq!(
        front.sifted.load(Ordering::SeqCst),
        0,
        "no work while closed"
    );
    let waiting = tokio::spawn(async move { out.send(spans(2)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(ia.try_recv().is_none());
    front.closed.store(false, Ordering::SeqCst);
    waiting.await.unwrap().unwrap();
    assert_eq!(ia.recv().await.unwrap().len(), 2);
}
