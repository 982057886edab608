use std::time::Instant;

use sidekick_collector::exporter::{deadline_pair, run_queue, ExporterMetrics};
use sidekick_collector::payload::Metrics;
use sidekick_collector::pipe::{channel, Output, SendError};
use sidekick_collector::telemetry::{Gauge, Telemetry};
use sidekick_testkit::gen::metrics;
use sidekick_testkit::harness::{build_exporter, build_exporter_with};
use sidekick_testkit::remote_write::{ReceivedSeries, RemoteWriteSink};

use super::*;

fn to(endpoint: String) -> Config {
    let mut c = Config::default();
    c.client.endpoint = endpoint;
    c
}

fn config(sink: &RemoteWriteSink) -> Config {
    Config {
        external_labels: [("cluster".to_string(), "test".to_string())].into(),
        ..to(sink.url())
    }
}

fn exporter(config: Config) -> Arc<dyn Export<MetricsSignal>> {
    build_exporter("prometheusremotewrite", config)
        .unwrap()
        .metrics
        .unwrap()
}

#[tokio::test]
async fn sends_what_the_protocol_requires() {
    let sink = RemoteWriteSink::start().await;
    let m = through_helper(config(&sink), vec![metrics(0, 2, 3)]).await;
    assert_eq!((m.sent.get(), m.send_failed.get()), (6, 0));
    let h = &sink.headers()[0];
    assert_eq!(h["content-encoding"], "snappy");
    assert_eq!(h["content-type"], "application/x-protobuf");
    assert_eq!(h["x-prometheus-remote-write-version"], "0.1.0");
    assert!(h["user-agent"].to_str().unwrap().starts_with("Sidekick/"));
    let series = sink.series();
    // Six gauges (unit "1": `_ratio`) plus one target_info per resource (host.name).
    assert_eq!(series.len(), 8);
    for s in &series {
        let names: Vec<&str> = s.labels.iter().map(|(k, _)| k.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted, "labels must be sorted");
        assert_eq!(s.label("cluster"), Some("test"));
    }
    let m0 = series
        .iter()
        .find(|s| s.label("__name__") == Some("metric_0_ratio"))
        .unwrap();
    assert_eq!(m0.label("job"), Some("service-0"));
    assert_eq!(m0.samples, vec![(0.0, 1_700_000_000_000)]);
    let info = series
        .iter()
        .find(|s| s.label("__name__") == Some("target_info"))
        .unwrap();
    assert_eq!(info.label("host_name"), Some("node-1"));
    let meta = sink.metadata();
    assert!(
        meta.contains(&(2, "metric_0_ratio".into(), String::new(), "ratio".into())),
        "{meta:?}"
    );
}

fn v2(sink: &RemoteWriteSink) -> Config {
    Config {
        protobuf_message: Some("io.prometheus.write.v2.Request".into()),
        ..config(sink)
    }
}

/// Sorted, for comparing what two runs delivered.
fn delivered(sink: &RemoteWriteSink) -> Vec<ReceivedSeries> {
    let mut series = sink.series();
    series.sort_by(|a, b| a.labels.cmp(&b.labels));
    series
}

/// `protobuf_message: io.prometheus.write.v2.Request` sends 2.0 with its headers; the
/// receiver gets the same series as from 1.0, with each series' metadata, and what it
/// reports written is counted.
#[tokio::test]
async fn remote_write_2_delivers_what_1_does() {
    let one = RemoteWriteSink::start().await;
    through_helper(config(&one), vec![metrics(0, 2, 3)]).await;
    let two = RemoteWriteSink::start().await;
    let telemetry = Telemetry::new();
    let m = through_helper_with(v2(&two), vec![metrics(0, 2, 3)], &telemetry).await;
    assert_eq!((m.sent.get(), m.send_failed.get()), (6, 0));
    let h = &two.headers()[0];
    assert_eq!(
        h["content-type"],
        "application/x-protobuf;proto=io.prometheus.write.v2.Request"
    );
    assert_eq!(h["x-prometheus-remote-write-version"], "2.0.0");
    assert_eq!(h["content-encoding"], "snappy");
    assert_eq!(delivered(&one), delivered(&two));
    assert!(two
        .metadata()
        .contains(&(2, "metric_0_ratio".into(), String::new(), "ratio".into())));
    let written = telemetry
        .counter(
            "sidekick_exporter_remote_write_written",
            "",
            &[("exporter", "prometheusremotewrite"), ("kind", "samples")],
        )
        .get();
    // Six points and one target_info per resource.
    assert_eq!(written, 8);
}

/// A receiver that answers 2.0 with 415 gets the same request again as 1.0 at once,
/// and 1.0 from then on: nothing is lost, and only the first request is refused.
#[tokio::test]
async fn a_receiver_without_remote_write_2_gets_1_from_its_first_refusal_on() {
    let sink = RemoteWriteSink::start().await;
    sink.refuse_v2();
    let config = Config {
        remote_write_queue: RemoteWriteQueue {
            num_consumers: 1,
            ..RemoteWriteQueue::default()
        },
        ..v2(&sink)
    };
    let m = through_helper(config, vec![metrics(0, 1, 3), metrics(1, 1, 3)]).await;
    assert_eq!((m.sent.get(), m.send_failed.get()), (6, 0));
    let types: Vec<String> = sink
        .headers()
        .iter()
        .map(|h| h["content-type"].to_str().unwrap().to_string())
        .collect();
    assert_eq!(
        types,
        [
            "application/x-protobuf;proto=io.prometheus.write.v2.Request",
            "application/x-protobuf",
            "application/x-protobuf"
        ]
    );
    // Three points and a target_info, twice.
    assert_eq!(sink.series().len(), 8);
}

/// A 1.0 receiver that reads 2.0 requests as empty 1.0 ones answers 204 without the
/// written-counts headers: taken as a refusal, the request goes again as 1.0.
#[tokio::test]
async fn a_receiver_that_misreads_remote_write_2_gets_1() {
    let sink = RemoteWriteSink::start().await;
    sink.misread_v2();
    let config = Config {
        remote_write_queue: RemoteWriteQueue {
            num_consumers: 1,
            ..RemoteWriteQueue::default()
        },
        ..v2(&sink)
    };
    let m = through_helper(config, vec![metrics(0, 1, 3)]).await;
    assert_eq!((m.sent.get(), m.send_failed.get()), (3, 0));
    assert_eq!(sink.series().len(), 4);
    assert_eq!(sink.requests(), 2);
}

#[tokio::test]
async fn splits_requests_at_max_batch_size_bytes() {
    let sink = RemoteWriteSink::start().await;
    let config = Config {
        max_batch_size_bytes: 2048,
        remote_write_queue: RemoteWriteQueue {
            num_consumers: 1,
            ..RemoteWriteQueue::default()
        },
        ..config(&sink)
    };
    let m = through_helper(config, vec![metrics(0, 1, 200)]).await;
    assert_eq!((m.sent.get(), m.send_failed.get()), (200, 0));
    assert!(sink.requests() > 5, "{} requests", sink.requests());
    assert_eq!(sink.series().len(), 201);
}

/// Runs batches through the exporter helper, as the runtime does (retries live there);
/// returns its counters.
async fn through_helper(config: Config, batches: Vec<Metrics>) -> ExporterMetrics {
    through_helper_with(config, batches, &Telemetry::new()).await
}

/// [`through_helper`] with the exporter's own metrics in `telemetry`.
async fn through_helper_with(
    config: Config,
    batches: Vec<Metrics>,
    telemetry: &Telemetry,
) -> ExporterMetrics {
    let settings = config.export_settings();
    let e = build_exporter_with("prometheusremotewrite", config, telemetry)
        .unwrap()
        .metrics
        .unwrap();
    let (tx, rx) = channel::<MetricsSignal>(64, Gauge::default());
    let (_trigger, deadline) = deadline_pair();
    let metrics = ExporterMetrics::new::<MetricsSignal>(telemetry, "prw");
    let task = tokio::spawn(run_queue(
        e,
        rx,
        settings,
        metrics.clone(),
        "prw".into(),
        deadline,
    ));
    let out = Output::new(vec![tx]);
    for b in batches {
        out.send(b).await.unwrap();
    }
    drop(out);
    task.await.unwrap();
    metrics
}

#[tokio::test]
async fn server_errors_are_retried_until_delivered() {
    let sink = RemoteWriteSink::start().await;
    sink.fail_next(3, 500, None);
    let config = Config {
        remote_write_queue: RemoteWriteQueue {
            num_consumers: 1,
            ..RemoteWriteQueue::default()
        },
        ..config(&sink)
    };
    let m = through_helper(config, vec![metrics(0, 1, 2)]).await;
    assert_eq!(m.send_failed.get(), 0);
    assert_eq!(m.sent.get(), 2);
    assert_eq!(sink.requests(), 4);
    assert_eq!(sink.series().len(), 3);
}

#[tokio::test]
async fn too_many_requests_waits_for_retry_after() {
    let sink = RemoteWriteSink::start().await;
    sink.fail_next(1, 429, Some(1));
    let config = Config {
        remote_write_queue: RemoteWriteQueue {
            num_consumers: 1,
            ..RemoteWriteQueue::default()
        },
        ..config(&sink)
    };
    let started = Instant::now();
    let m = through_helper(config, vec![metrics(0, 1, 1)]).await;
    assert_eq!(m.sent.get(), 1);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(sink.requests(), 2);
}

#[tokio::test]
async fn bad_requests_are_dropped_and_counted_once() {
    let sink = RemoteWriteSink::start().await;
    sink.fail_next(1, 400, None);
    let config = Config {
        remote_write_queue: RemoteWriteQueue {
            num_consumers: 1,
            ..RemoteWriteQueue::default()
        },
        ..config(&sink)
    };
    let batch = metrics(0, 1, 4);
    let n = batch.len() as u64;
    let m = through_helper(config, vec![batch]).await;
    assert_eq!(m.send_failed.get(), n);
    assert_eq!(m.sent.get(), 0);
    assert_eq!(sink.requests(), 1, "a 400 is never retried");
}

#[tokio::test]
async fn a_down_receiver_fills_a_bounded_queue_then_refuses() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = Config {
        remote_write_queue: RemoteWriteQueue {
            enabled: true,
            queue_size: Some(2),
            num_consumers: 1,
            include_metadata_keys: None,
        },
        ..to(format!("http://127.0.0.1:{port}/api/v1/write"))
    };
    let settings = config.export_settings();
    let e = exporter(config);
    let telemetry = Telemetry::new();
    let (tx, rx) = channel::<MetricsSignal>(settings.capacity(), Gauge::default());
    let (trigger, deadline) = deadline_pair();
    let task = tokio::spawn(run_queue(
        e,
        rx,
        settings,
        ExporterMetrics::new::<MetricsSignal>(&telemetry, "prw"),
        "prw".into(),
        deadline,
    ));
    let out = Output::new(vec![tx]);
    let offer = |b: Metrics| {
        let out = out.clone();
        async move { out.offer(b, Duration::from_millis(100)).await }
    };
    // One in flight (retrying), two queued; the next is refused.
    let mut accepted = 0;
    let mut refused = false;
    for i in 0..10 {
        match offer(metrics(i, 1, 1)).await {
            Ok(()) => accepted += 1,
            Err(SendError::Full) => {
                refused = true;
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(refused);
    assert!(accepted <= 3, "accepted {accepted}");
    trigger.fire();
    drop(out);
    task.await.unwrap();
    assert_eq!(telemetry.account().dropped(), accepted as u64);
}

/// Unset, the queue is bounded in bytes like every exporter's; a `queue_size` counts
/// batches, as in the Collector.
#[test]
fn the_queue_is_bounded_in_bytes_unless_queue_size_counts_batches() {
    let default = Config::default().export_settings().queue;
    assert_eq!((default.sizer, default.queue_size), (None, None));
    let counted = Config {
        remote_write_queue: RemoteWriteQueue {
            queue_size: Some(50),
            ..RemoteWriteQueue::default()
        },
        ..Config::default()
    }
    .export_settings()
    .queue;
    assert_eq!(
        (counted.sizer, counted.queue_size),
        (Some(Sizer::Requests), Some(50))
    );
}
