use std::time::Duration as StdDuration;

use proptest::prelude::*;
use sidekick_collector::config::{from_node, node, ComponentId};
use sidekick_collector::payload::Batch;
use sidekick_collector::payload::TracesSignal;
use sidekick_collector::telemetry::Telemetry;
use sidekick_testkit::gen::{span_names, traces};
use sidekick_testkit::harness::run_processor;

use super::*;

fn processor(send: usize, max: usize, timeout_ms: u64) -> Box<dyn Processor<TracesSignal>> {
    let config = Config {
        send_batch_size: send,
        send_batch_max_size: max,
        timeout: Duration::from_millis(timeout_ms),
        ..Config::default()
    };
    let id: ComponentId = "batch".parse().unwrap();
    let ctx = BuildContext {
        id: &id,
        telemetry: &Telemetry::new(),
        signals: &[SignalKind::Traces],
        authenticators: &sidekick_collector::auth::NO_AUTHENTICATORS,
        storages: &sidekick_collector::storage::NO_STORAGES,
    };
    config.build::<TracesSignal>(&ctx).unwrap()
}

fn names(batches: &[Batch<TracesSignal>]) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| span_names(&b.to_request().unwrap()))
        .collect()
}

#[test]
fn config_example_parses_and_validates() {
    let text = "send_batch_size: 8192\nsend_batch_max_size: 10000\ntimeout: 200ms\n";
    let (root, _) = node::parse(text, &std::collections::HashMap::new()).unwrap();
    let c: Config = from_node(&root, "processors.batch").unwrap();
    assert_eq!(c.send_batch_max_size, 10000);
    assert!(c.validate().is_empty());
    let bad = Config {
        send_batch_max_size: 10,
        ..Config::default()
    };
    assert_eq!(
        bad.validate()[0].message,
        "must be 0 (no limit) or at least send_batch_size (8192)"
    );
}

#[tokio::test(start_paused = true)]
async fn sends_on_timeout_when_small() {
    let mut h = run_processor(processor(100, 0, 200));
    h.send(traces(0, 1, 3)).await;
    tokio::time::sleep(StdDuration::from_millis(199)).await;
    assert!(h.drain().is_empty());
    tokio::time::sleep(StdDuration::from_millis(2)).await;
    let out = h.drain();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].len(), 3);
}

#[tokio::test(start_paused = true)]
async fn sends_at_size_and_splits_at_max() {
    let mut h = run_processor(processor(10, 15, 10_000));
    h.send(traces(0, 2, 20)).await; // 40 spans: 15 + 15 sent, 10 also reaches the size
    tokio::time::sleep(StdDuration::from_millis(1)).await;
    let sizes: Vec<usize> = h.drain().iter().map(Batch::len).collect();
    assert_eq!(sizes, vec![15, 15, 10]);
    h.send(traces(40, 1, 4)).await;
    h.close().await;
    let sizes: Vec<usize> = h.drain().iter().map(Batch::len).collect();
    assert_eq!(sizes, vec![4], "flushed on close");
}

#[tokio::test(start_paused = true)]
async fn zero_timeout_sends_at_once() {
    let mut h = run_processor(processor(100, 0, 0));
    h.send(traces(0, 1, 2)).await;
    tokio::time::sleep(StdDuration::from_millis(1)).await;
    assert_eq!(h.drain().len(), 1);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the settings and input sizes: every span comes out once, in order, and no
    /// batch is larger than the maximum.
    #[test]
    fn nothing_lost_duplicated_or_oversized(
        send in 1usize..50,
        extra in 0usize..50,
        unlimited in any::<bool>(),
        timeout_ms in 0u64..300,
        inputs in prop::collection::vec((1usize..4, 0usize..30, 0u64..200), 1..20),
    ) {
        let max = if unlimited { 0 } else { send + extra };
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        rt.block_on(async {
            let mut h = run_processor(processor(send, max, timeout_ms));
            let mut expected = Vec::new();
            let mut next = 0u64;
            let mut out = Vec::new();
            for (resources, per, pause) in inputs {
                let batch = traces(next, resources, per);
                next += (resources * per) as u64;
                expected.extend(span_names(&batch.to_request().unwrap()));
                h.send(batch).await;
                tokio::time::sleep(StdDuration::from_millis(pause)).await;
                out.extend(h.drain());
            }
            h.close().await;
            out.extend(h.drain());
            assert_eq!(names(&out), expected);
            for b in &out {
                assert!(!b.is_empty(), "empty batch sent");
                if max > 0 {
                    assert!(b.len() <= max, "batch of {} over max {max}", b.len());
                }
                assert_eq!(TracesSignal::count(&b.to_request().unwrap()), b.len());
            }
        });
    }
}

/// What the batch processor buffers keeps its room in the processor's input queue, so a
/// byte-bounded queue in front of it bounds the buffer too; the room comes back once
/// the batch is sent on.
#[tokio::test(start_paused = true)]
async fn buffered_data_keeps_its_room_in_the_input_queue() {
    use std::sync::Arc;

    use sidekick_collector::pipe::{channel, channel_with, Account, Limit};
    use sidekick_collector::telemetry::Gauge;

    let one = traces(0, 1, 5);
    let account = Arc::new(Account::default());
    let (tx, rx) = channel_with::<TracesSignal>(
        Limit::bytes(one.size() * 2),
        Gauge::default(),
        Gauge::default(),
        Arc::clone(&account),
    );
    let (out_tx, mut out_rx) = channel::<TracesSignal>(16, Gauge::default());
    let task = tokio::spawn(processor(100, 0, 1000).run(rx, Output::new(vec![out_tx])));
    let input = Output::new(vec![tx]);
    input.send(traces(0, 1, 5)).await.unwrap();
    input.send(traces(5, 1, 5)).await.unwrap();
    tokio::time::sleep(StdDuration::from_millis(10)).await;
    // Both batches are in the buffer, not in the queue, yet the queue is full.
    assert!(out_rx.try_recv().is_none());
    assert_eq!(account.items(), 10);
    assert!(input
        .offer(traces(10, 1, 5), StdDuration::from_millis(10))
        .await
        .is_err());
    // The timeout sends the buffer on and frees the room.
    tokio::time::sleep(StdDuration::from_millis(1000)).await;
    assert_eq!(out_rx.try_recv().map(|b| b.len()), Some(10));
    assert_eq!(account.items(), 0);
    input
        .offer(traces(10, 1, 5), StdDuration::from_millis(10))
        .await
        .unwrap();
    drop(input);
    task.await.unwrap();
    assert_eq!(out_rx.try_recv().map(|b| b.len()), Some(5));
    assert_eq!(account.lost(), 0);
}

/// Decoded data (a scrape, OTLP/JSON) stays decoded through the batch processor: no
/// encode here only for the next stage to decode again.
#[tokio::test]
async fn decoded_batches_stay_decoded() {
    use sidekick_collector::payload::codec_counts;
    let mut h = run_processor::<TracesSignal>(processor(8192, 0, 10));
    let request = traces(0, 2, 50).to_request().unwrap();
    let (encodes, decodes) = codec_counts();
    h.send(Batch::from_request(request.clone())).await;
    h.send(Batch::from_request(request)).await;
    h.close().await;
    let out = h.drain();
    assert_eq!(out.iter().map(|b| b.len()).sum::<usize>(), 200);
    assert!(out.iter().all(|b| b.decoded().is_some()));
    // The counts are this thread's: the test's runtime runs everything here.
    let (e, d) = codec_counts();
    assert_eq!((e - encodes, d - decodes), (0, 0));
}
