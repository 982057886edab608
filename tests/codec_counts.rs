//! Whole pipelines built as the binary builds them, run on one thread, counting the
//! requests any stage encodes from decoded form or decodes from bytes: a scrape reaches
//! remote-write without ever being encoded to OTLP, and OTLP reaches an OTLP backend
//! without ever being decoded. (The counts are per thread; a current-thread runtime runs
//! every stage, the target and the backends here.)

use std::collections::HashMap;
use std::time::Duration;

use prost::Message;
use sidekick_collector::payload::codec_counts;
use sidekick_collector::telemetry::Telemetry;
use sidekick_testkit::free_port;
use sidekick_testkit::gen::{prometheus_page, traces_request};
use sidekick_testkit::remote_write::RemoteWriteSink;
use sidekick_testkit::sink::OtlpSink;
use sidekick_testkit::target::{ScrapeTarget, PROMETHEUS_TEXT};

/// Runs `config` until `done` says the backend has what it needs (or 20 s pass), then
/// shuts the service down; returns the (encodes, decodes) counted meanwhile.
async fn run_until(config: &str, done: impl AsyncFn() -> bool) -> (u64, u64) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let registry = sidekick::registry();
    let plan = sidekick::plan(config, "test.yaml", &registry, &HashMap::new())
        .unwrap_or_else(|e| panic!("{e}"));
    let service = plan.build(Telemetry::new()).unwrap();
    let (encodes, decodes) = codec_counts();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(service.run(async {
        let _ = stopped.await;
    }));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !done().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the backend did not get the data in 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop.send(());
    run.await.unwrap();
    let (e, d) = codec_counts();
    (e - encodes, d - decodes)
}

#[tokio::test(flavor = "current_thread")]
async fn a_scrape_reaches_remote_write_never_encoded_to_otlp() {
    let target = ScrapeTarget::start().await;
    target.set_page(PROMETHEUS_TEXT, &prometheus_page(1_000));
    let sink = RemoteWriteSink::start().await;
    let config = format!(
        "receivers:\n  prometheus:\n    config:\n      scrape_configs:\n        - job_name: app\n          scrape_interval: 1s\n          static_configs:\n            - targets: [\"{}\"]\nprocessors:\n  batch:\n    timeout: 50ms\nexporters:\n  prometheusremotewrite:\n    endpoint: {}\nservice:\n  pipelines:\n    metrics:\n      receivers: [prometheus]\n      processors: [batch]\n      exporters: [prometheusremotewrite]\n  telemetry:\n    metrics:\n      address: 127.0.0.1:{}\n",
        target.address,
        sink.url(),
        free_port()
    );
    // Two scrapes: the second meets the first's series state.
    let counts = run_until(&config, async || sink.samples() >= 2_000).await;
    assert_eq!(
        counts,
        (0, 0),
        "(encodes, decodes) on the scrape → remote-write path"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn otlp_reaches_an_otlp_backend_never_decoded() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sink = OtlpSink::start_counting().await;
    let http = free_port();
    let config = format!(
        "receivers:\n  otlp:\n    protocols:\n      http:\n        endpoint: 127.0.0.1:{http}\nprocessors:\n  batch:\n    timeout: 50ms\nexporters:\n  otlp:\n    endpoint: http://{}\n    compression: none\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [batch]\n      exporters: [otlp]\n  telemetry:\n    metrics:\n      address: 127.0.0.1:{}\n",
        sink.address,
        free_port()
    );
    let body = traces_request(0, 2, 100).encode_to_vec();
    let client = reqwest::Client::new();
    let sent = std::cell::Cell::new(false);
    let counts = run_until(&config, async || {
        if !sent.get() {
            let answer = client
                .post(format!("http://127.0.0.1:{http}/v1/traces"))
                .header("content-type", "application/x-protobuf")
                .body(body.clone())
                .send()
                .await;
            sent.set(answer.is_ok_and(|a| a.status().is_success()));
        }
        sink.counted() >= 200
    })
    .await;
    assert_eq!(counts, (0, 0), "(encodes, decodes) on the OTLP → OTLP path");
}
