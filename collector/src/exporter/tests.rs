use std::sync::Mutex;

use bytes::Bytes;
use prost::Message;

use super::*;
use crate::payload::{Traces, TracesSignal};
use crate::pipe::{channel_with, Output};
use crate::telemetry::Gauge;

/// Answers each attempt from a script, then succeeds.
struct Scripted {
    script: Mutex<Vec<Result<Delivered, ExportError>>>,
    attempts: Mutex<Vec<tokio::time::Instant>>,
}

impl Scripted {
    fn new(script: Vec<Result<Delivered, ExportError>>) -> Arc<Self> {
        Arc::new(Scripted {
            script: Mutex::new(script.into_iter().rev().collect()),
            attempts: Mutex::new(Vec::new()),
        })
    }
}

impl Export<TracesSignal> for Scripted {
    fn export<'a>(&'a self, _batch: &'a Traces) -> BoxFuture<'a, Result<Delivered, ExportError>> {
        self.attempts
            .lock()
            .unwrap()
            .push(tokio::time::Instant::now());
        let next = self
            .script
            .lock()
            .unwrap()
            .pop()
            .unwrap_or(Ok(Delivered::default()));
        Box::pin(async move { next })
    }
}

/// Never answers.
struct Hangs;

impl Export<TracesSignal> for Hangs {
    fn export<'a>(&'a self, _batch: &'a Traces) -> BoxFuture<'a, Result<Delivered, ExportError>> {
        Box::pin(std::future::pending())
    }
}

fn spans(n: usize) -> Traces {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![
                    Span {
                        trace_id: vec![1; 16],
                        span_id: vec![2; 8],
                        ..Span::default()
                    };
                    n
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    Traces::from_encoded(Bytes::from(req.encode_to_vec())).unwrap()
}

fn settings() -> ExportSettings {
    ExportSettings {
        timeout: Duration::from_secs(5),
        queue: QueueSettings::default(),
        retry: RetrySettings {
            randomization_factor: 0.0,
            ..RetrySettings::default()
        },
        max_request_bytes: None,
        persist: None,
    }
}

struct Harness {
    telemetry: Telemetry,
    metrics: ExporterMetrics,
    deadline: DeadlineTrigger,
    task: tokio::task::JoinHandle<()>,
    output: Option<Output<TracesSignal>>,
}

fn start(exporter: Arc<dyn Export<TracesSignal>>, settings: ExportSettings) -> Harness {
    let telemetry = Telemetry::new();
    let metrics = ExporterMetrics::new::<TracesSignal>(&telemetry, "test");
    let (tx, rx) = channel_with::<TracesSignal>(
        settings.queue.limit(),
        Gauge::default(),
        Gauge::default(),
        telemetry.account().clone(),
    );
    let (trigger, deadline) = deadline_pair();
    let task = tokio::spawn(run_queue(
        exporter,
        rx,
        settings,
        metrics.clone(),
        "test".into(),
        deadline,
    ));
    Harness {
        telemetry,
        metrics,
        deadline: trigger,
        task,
        output: Some(Output::new(vec![tx])),
    }
}

impl Harness {
    async fn send(&self, batch: Traces) {
        self.output.as_ref().unwrap().send(batch).await.unwrap();
    }

    async fn finish(mut self) -> Self {
        self.output = None;
        (&mut self.task).await.unwrap();
        self
    }
}

#[tokio::test(start_paused = true)]
async fn retries_with_backoff_then_delivers() {
    let exporter = Scripted::new(vec![
        Err(ExportError::retryable("503")),
        Err(ExportError::retryable("503")),
    ]);
    let h = start(exporter.clone(), settings());
    h.send(spans(3)).await;
    let h = h.finish().await;
    assert_eq!(h.metrics.sent.get(), 3);
    assert_eq!(h.metrics.send_failed.get(), 0);
    let attempts = exporter.attempts.lock().unwrap().clone();
    assert_eq!(attempts.len(), 3);
    // 5s, then 5s × 1.5.
    assert_eq!(attempts[1] - attempts[0], Duration::from_secs(5));
    assert_eq!(attempts[2] - attempts[1], Duration::from_millis(7500));
}

#[tokio::test(start_paused = true)]
async fn honours_retry_after() {
    let exporter = Scripted::new(vec![Err(ExportError::Retryable {
        message: "429".into(),
        retry_after: Some(Duration::from_secs(42)),
    })]);
    let h = start(exporter.clone(), settings());
    h.send(spans(1)).await;
    let h = h.finish().await;
    let attempts = exporter.attempts.lock().unwrap().clone();
    assert_eq!(attempts[1] - attempts[0], Duration::from_secs(42));
    assert_eq!(h.metrics.sent.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn permanent_errors_drop_once_and_count() {
    let exporter = Scripted::new(vec![Err(ExportError::permanent("400 bad request"))]);
    let h = start(exporter.clone(), settings());
    h.send(spans(4)).await;
    h.send(spans(2)).await;
    let h = h.finish().await;
    assert_eq!(exporter.attempts.lock().unwrap().len(), 2);
    assert_eq!(h.metrics.send_failed.get(), 4);
    assert_eq!(h.metrics.sent.get(), 2);
    assert_eq!(h.telemetry.account().dropped(), 4);
}

#[tokio::test(start_paused = true)]
async fn gives_up_after_max_elapsed_time() {
    let exporter = Scripted::new(vec![Err(ExportError::retryable("down")); 100]);
    let mut s = settings();
    s.retry.max_elapsed_time = ConfigDuration::from_secs(20);
    let h = start(exporter.clone(), s);
    h.send(spans(5)).await;
    let h = h.finish().await;
    assert_eq!(h.metrics.send_failed.get(), 5);
    // Waits 5s, 7.5s; the next wait (11.25s) would pass 20s.
    assert_eq!(exporter.attempts.lock().unwrap().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn deadline_counts_in_flight_and_queued_as_dropped() {
    let mut s = settings();
    s.queue.num_consumers = 1;
    let h = start(Arc::new(Hangs), s);
    h.send(spans(2)).await;
    h.send(spans(3)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    h.deadline.fire();
    let h = h.finish().await;
    assert_eq!(h.metrics.send_failed.get(), 5);
    assert_eq!(h.telemetry.account().dropped(), 5);
}

#[tokio::test(start_paused = true)]
async fn timeout_is_a_retryable_failure() {
    let mut s = settings();
    s.timeout = Duration::from_secs(1);
    s.retry.max_elapsed_time = ConfigDuration::from_secs(3);
    let h = start(Arc::new(Hangs), s);
    h.send(spans(1)).await;
    let h = h.finish().await;
    assert_eq!(h.metrics.send_failed.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn partial_success_counts_rejected_items() {
    let exporter = Scripted::new(vec![Ok(Delivered {
        rejected: 2,
        reason: "too old".into(),
    })]);
    let h = start(exporter, settings());
    h.send(spans(5)).await;
    let h = h.finish().await;
    assert_eq!(h.metrics.sent.get(), 3);
    assert_eq!(h.metrics.send_failed.get(), 2);
    assert_eq!(h.telemetry.account().dropped(), 2);
}

/// Refuses any request that holds a span named `bad`, as a backend validating its
/// input would; records the spans of every request it accepted, and every size.
#[derive(Default)]
struct Picky {
    accepted: Mutex<Vec<String>>,
    sizes: Mutex<Vec<usize>>,
}

impl Export<TracesSignal> for Picky {
    fn export<'a>(&'a self, batch: &'a Traces) -> BoxFuture<'a, Result<Delivered, ExportError>> {
        self.sizes.lock().unwrap().push(batch.size());
        let names: Vec<String> = batch
            .to_request()
            .unwrap()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .map(|s| s.name.clone())
            .collect();
        let result = if names.iter().any(|n| n == "bad") {
            Err(ExportError::rejected("400: invalid span"))
        } else {
            self.accepted.lock().unwrap().extend(names);
            Ok(Delivered::default())
        };
        Box::pin(async move { result })
    }
}

fn named(names: &[&str]) -> Traces {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: names
                    .iter()
                    .map(|n| Span {
                        trace_id: vec![1; 16],
                        span_id: vec![2; 8],
                        name: n.to_string(),
                        ..Span::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    Traces::from_encoded(Bytes::from(req.encode_to_vec())).unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_rejected_batch_is_split_so_only_the_bad_item_is_dropped() {
    let exporter = Arc::new(Picky::default());
    let h = start(exporter.clone(), settings());
    let names: Vec<String> = (0..100).map(|i| format!("s{i}")).collect();
    let mut all: Vec<&str> = names.iter().map(String::as_str).collect();
    all.insert(37, "bad");
    h.send(named(&all)).await;
    let h = h.finish().await;
    assert_eq!(h.metrics.sent.get(), 100);
    assert_eq!(h.metrics.send_failed.get(), 1);
    assert_eq!(h.telemetry.account().dropped(), 1);
    // Every good span arrived once, in order.
    assert_eq!(*exporter.accepted.lock().unwrap(), names);
    // Bisecting costs about two requests per halving, not one per span.
    assert!(exporter.sizes.lock().unwrap().len() < 20);
}

#[tokio::test(start_paused = true)]
async fn requests_are_cut_below_the_size_limit() {
    let exporter = Arc::new(Picky::default());
    let mut s = settings();
    let one = named(&["x"]).size();
    s.max_request_bytes = Some(one * 10);
    let h = start(exporter.clone(), s);
    let names: Vec<String> = (0..95).map(|i| format!("s{i:02}")).collect();
    let all: Vec<&str> = names.iter().map(String::as_str).collect();
    h.send(named(&all)).await;
    let h = h.finish().await;
    assert_eq!(h.metrics.sent.get(), 95);
    assert_eq!(*exporter.accepted.lock().unwrap(), names);
    let sizes = exporter.sizes.lock().unwrap().clone();
    assert!(sizes.iter().all(|&n| n <= one * 10), "{sizes:?}");
    // A single item over the limit is dropped and counted, never sent.
    let exporter = Arc::new(Picky::default());
    let mut s = settings();
    s.max_request_bytes = Some(10);
    let h = start(exporter.clone(), s);
    h.send(named(&["a", "b"])).await;
    let h = h.finish().await;
    assert_eq!(h.metrics.send_failed.get(), 2);
    assert!(exporter.sizes.lock().unwrap().is_empty());
}

/// Once one batch gets through after an outage, the others waiting in backoff go at
/// once instead of sleeping out their own (possibly long) waits.
#[tokio::test(start_paused = true)]
async fn a_success_wakes_batches_waiting_to_retry() {
    let exporter = Scripted::new(vec![
        Err(ExportError::retryable("down")),
        Err(ExportError::retryable("down")),
    ]);
    let mut s = settings();
    s.queue.num_consumers = 2;
    s.retry.initial_interval = ConfigDuration::from_secs(1);
    s.retry.randomization_factor = 0.0;
    let h = start(exporter.clone(), s);
    h.send(spans(1)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    h.send(spans(1)).await;
    let h = h.finish().await;
    assert_eq!(h.metrics.sent.get(), 2);
    let attempts = exporter.attempts.lock().unwrap().clone();
    // First batch: fails at 0, retries at 1s and succeeds; the second failed at 0.5s
    // and would retry at 1.5s, but goes at 1s with the first one's success.
    assert_eq!(attempts.len(), 4);
    assert_eq!(attempts[3] - attempts[0], Duration::from_secs(1));
}

/// Prepares two lanes; requests whose body is `hang` never get an answer.
struct TwoLanes;

impl Export<TracesSignal> for TwoLanes {
    fn export<'a>(&'a self, _batch: &'a Traces) -> BoxFuture<'a, Result<Delivered, ExportError>> {
        Box::pin(async { Ok(Delivered::default()) })
    }

    fn prepare(&self, batch: &Traces) -> Option<Result<Prepared, ExportError>> {
        let request = |body: &'static str, items| PreparedRequest {
            body: Bytes::from_static(body.as_bytes()),
            items,
            encoding: 0,
        };
        let n = batch.len();
        Some(Ok(Prepared {
            lanes: vec![
                vec![request("ok", 2), request("ok", n - 4)],
                vec![request("hang", 2)],
            ],
            unsendable: 0,
            reason: String::new(),
        }))
    }

    fn send_prepared<'a>(
        &'a self,
        request: &'a PreparedRequest,
    ) -> BoxFuture<'a, Result<Delivered, ExportError>> {
        if request.body == "hang" {
            Box::pin(std::future::pending())
        } else {
            Box::pin(async { Ok(Delivered::default()) })
        }
    }
}

/// At the deadline, only what was not sent of a batch is dropped: a shard that got
/// through counts as sent.
#[tokio::test(start_paused = true)]
async fn the_deadline_drops_only_the_requests_not_sent() {
    let h = start(Arc::new(TwoLanes), settings());
    h.send(spans(10)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    h.deadline.fire();
    let h = h.finish().await;
    assert_eq!(h.metrics.sent.get(), 8);
    assert_eq!(h.metrics.send_failed.get(), 2);
    assert_eq!(h.telemetry.account().dropped(), 2);
}

/// With a backlog behind a failing backend, one batch probes every second while the
/// others keep their backoff; when the backend is back, everything goes within about a
/// second, not after the long backoff.
#[tokio::test(start_paused = true)]
async fn a_backlog_probes_a_failing_backend_every_second() {
    let exporter = Scripted::new(vec![Err(ExportError::retryable("down")); 12]);
    let mut s = settings();
    s.queue.num_consumers = 4;
    s.retry.initial_interval = ConfigDuration::from_secs(30);
    let h = start(exporter.clone(), s);
    for _ in 0..4 {
        h.send(spans(1)).await;
    }
    let h = h.finish().await;
    assert_eq!(h.metrics.sent.get(), 4);
    let attempts = exporter.attempts.lock().unwrap().clone();
    let took = *attempts.last().unwrap() - attempts[0];
    // 4 first attempts, then the prober's retries a second apart use up the 12 failures
    // (8 more); without a prober, every batch would wait its 30 s backoff.
    assert!(took <= Duration::from_secs(10), "{took:?}");
}
