//! Reloading the config of a running Sidekick: on SIGHUP and, with `--watch-config`, when
//! the file changes. A reload loads and checks the new file first: a broken one leaves
//! the running config in place; an unchanged one rebuilds nothing; a changed one drains
//! the running components and starts the new ones on the same sockets, so clients are
//! never refused and nothing they were told was accepted is lost.

mod common;

use std::collections::HashSet;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{metric_value, runtime, Sidekick};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;
use sidekick_testkit::free_port;
use sidekick_testkit::gen::traces_request;
use sidekick_testkit::sink::OtlpSink;

/// OTLP/HTTP in on `port`, a resource attribute `generation`, batches of `timeout`, out
/// to `sink`.
fn config(port: u16, sink: &OtlpSink, generation: &str, timeout: &str) -> String {
    format!(
        "receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{port}
processors:
  batch:
    timeout: {timeout}
  resource:
    attributes:
      - key: generation
        value: {generation}
        action: upsert
exporters:
  otlp:
    endpoint: {sink}
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [resource, batch]
      exporters: [otlp]
",
        sink = sink.url()
    )
}

/// A runtime, a sink, and a free port for the receiver.
fn fixture() -> (tokio::runtime::Runtime, OtlpSink, u16) {
    setup();
    let rt = runtime();
    let sink = rt.block_on(OtlpSink::start());
    (rt, sink, free_port())
}

/// reqwest's TLS needs a crypto provider installed in the process.
fn setup() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// JSON logs and the admin endpoint on a fixed port, which a reload keeps.
fn telemetry(admin: u16) -> String {
    format!("  telemetry:\n    logs:\n      encoding: json\n    metrics:\n      address: 127.0.0.1:{admin}\n")
}

fn rewrite(sk: &Sidekick, yaml: &str) {
    let admin = sk.admin.port();
    std::fs::write(sk.config_path(), format!("{yaml}{}", telemetry(admin))).unwrap();
}

/// Every span's name at the sink, and the `generation` of the spans of each request.
fn received(sink: &OtlpSink) -> (Vec<String>, Vec<String>) {
    let mut names = Vec::new();
    let mut generations = Vec::new();
    for request in sink.traces() {
        for rs in &request.resource_spans {
            let generation = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "generation")
                .and_then(|kv| kv.value.as_ref()?.value.clone());
            if let Some(Value::StringValue(g)) = generation {
                generations.push(g);
            }
            for ss in &rs.scope_spans {
                names.extend(ss.spans.iter().map(|s| s.name.clone()));
            }
        }
    }
    (names, generations)
}

/// Posts one request of `spans` spans to the OTLP/HTTP receiver on `port`: its status.
fn post_spans(rt: &tokio::runtime::Runtime, port: u16, spans: usize) -> u16 {
    let sent = rt.block_on(
        reqwest::Client::new()
            .post(format!("http://127.0.0.1:{port}/v1/traces"))
            .header("content-type", "application/x-protobuf")
            .body(traces_request(0, 1, spans).encode_to_vec())
            .send(),
    );
    sent.unwrap().status().as_u16()
}

/// Sends requests of 10 spans over OTLP/HTTP until `stop`, each retried until it is
/// accepted, as an SDK would; counts connections refused. Returns the requests sent.
fn send_until(
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    refused: Arc<AtomicUsize>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let rt = runtime();
        let client = reqwest::Client::new();
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let body = traces_request(n * 10, 1, 10).encode_to_vec();
            let started = Instant::now();
            loop {
                let sent = rt.block_on(
                    client
                        .post(format!("http://{addr}/v1/traces"))
                        .header("content-type", "application/x-protobuf")
                        .body(body.clone())
                        .send(),
                );
                match sent {
                    Ok(r) if r.status() == 200 => break,
                    Err(e) if e.is_connect() => {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
                assert!(
                    started.elapsed() < Duration::from_secs(20),
                    "never accepted"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            n += 1;
        }
        n
    })
}

#[test]
fn sighup_reloads_a_changed_config_on_the_same_socket_without_loss() {
    let (_rt, sink, port) = fixture();
    let mut sk = Sidekick::start_with_telemetry(
        &config(port, &sink, "one", "50ms"),
        &telemetry(free_port()),
        &[],
    );
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let stop = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(AtomicUsize::new(0));
    let sender = send_until(addr, stop.clone(), refused.clone());
    // New connections all along, as fresh clients would open them.
    let connecting = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut refused = 0;
            while !stop.load(Ordering::Relaxed) {
                if TcpStream::connect(addr).is_err() {
                    refused += 1;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            refused
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    for (i, (generation, timeout)) in [("two", "20ms"), ("three", "100ms")].iter().enumerate() {
        rewrite(&sk, &config(port, &sink, generation, timeout));
        sk.send_signal("HUP");
        sk.wait_for_line("config reloading", i);
        sk.wait_for_line("config reloaded", i);
        std::thread::sleep(Duration::from_millis(300));
    }
    stop.store(true, Ordering::Relaxed);
    let requests = sender.join().unwrap();
    assert_eq!(
        connecting.join().unwrap(),
        0,
        "connections refused during reloads"
    );
    assert_eq!(refused.load(Ordering::Relaxed), 0);
    let page = sk.metrics();
    assert_eq!(
        metric_value(&page, "sidekick_config_reloads_total{result=\"success\"}"),
        Some(2.0)
    );
    // The receiver kept running, and its counters went on across both reloads: every
    // span of the run is counted, none reset.
    assert_eq!(
        metric_value(
            &page,
            "otelcol_receiver_accepted_spans_total{receiver=\"otlp\",transport=\"http\"}"
        ),
        Some((requests * 10) as f64),
        "{page}"
    );
    let status = sk.terminate();
    assert!(status.success(), "exit {status}");
    let (names, generations) = received(&sink);
    let distinct: HashSet<&String> = names.iter().collect();
    assert_eq!(names.len() as u64, requests * 10, "every span once");
    assert_eq!(distinct.len(), names.len(), "no duplicates");
    for g in ["one", "two", "three"] {
        assert!(generations.iter().any(|x| x == g), "no span of {g}");
    }
    let reloaded: Vec<String> = sk
        .lines()
        .into_iter()
        .filter(|l| l.contains("config reloaded"))
        .collect();
    assert_eq!(reloaded.len(), 2);
    assert!(
        reloaded
            .iter()
            .all(|l| l.contains(r#"kept_receivers":"[\"otlp\"]"#)),
        "{reloaded:?}"
    );
}

#[test]
fn a_broken_or_unchanged_config_leaves_the_running_one() {
    let (rt, sink, port) = fixture();
    let yaml = config(port, &sink, "one", "20ms");
    let mut sk = Sidekick::start_with_telemetry(&yaml, &telemetry(free_port()), &[]);
    // Unchanged: nothing is rebuilt.
    sk.send_signal("HUP");
    sk.wait_for_line("config unchanged", 0);
    // Broken: the error names its line, and the old config keeps serving.
    rewrite(&sk, &format!("{yaml}  pipelines: [\n"));
    sk.send_signal("HUP");
    sk.wait_for_line("config reload failed", 0);
    assert!(sk.running());
    let failure = sk
        .lines()
        .into_iter()
        .find(|l| l.contains("config reload failed"))
        .unwrap();
    assert!(failure.contains("sidekick.yaml:"), "{failure}");
    assert_eq!(post_spans(&rt, port, 3), 200);
    let page = sk.metrics();
    assert_eq!(
        metric_value(&page, "sidekick_config_reload_failures_total"),
        Some(1.0)
    );
    assert_eq!(
        metric_value(&page, "sidekick_config_reloads_total{result=\"unchanged\"}"),
        Some(1.0)
    );
    assert!(!sk.lines().iter().any(|l| l.contains("config reloading")));
    let status = sk.terminate();
    assert_eq!(status.code(), Some(0), "{}", sk.lines().join("\n"));
    assert_eq!(received(&sink).0.len(), 3);
}

#[test]
fn a_watched_config_file_is_reloaded_when_it_changes() {
    let (rt, sink, port) = fixture();
    let admin = telemetry(free_port());
    let mut sk = Sidekick::start_with_args(
        &config(port, &sink, "one", "20ms"),
        &admin,
        &[],
        &["--watch-config"],
    );
    // Written in two steps, as an editor might: the half-written file is not loaded.
    let full = format!("{}{admin}", config(port, &sink, "two", "20ms"));
    let (head, _) = full.split_at(full.len() / 2);
    std::fs::write(sk.config_path(), head).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    std::fs::write(sk.config_path(), &full).unwrap();
    sk.wait_for_line("config reloaded", 0);
    assert!(!sk
        .lines()
        .iter()
        .any(|l| l.contains("config reload failed")));
    assert_eq!(post_spans(&rt, port, 2), 200);
    assert!(sk.terminate().success());
    assert_eq!(received(&sink).1, ["two"]);
}

#[test]
fn a_config_that_loads_but_cannot_start_leaves_the_running_one() {
    let (rt, sink, port) = fixture();
    let mut sk = Sidekick::start_with_telemetry(
        &config(port, &sink, "one", "20ms"),
        &telemetry(free_port()),
        &[],
    );
    // The new config moves the receiver to a port another process holds: it loads, but
    // cannot listen.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    rewrite(&sk, &config(taken_port, &sink, "two", "20ms"));
    sk.send_signal("HUP");
    sk.wait_for_line("the new config cannot start; the running config stays", 0);
    assert!(sk.running());
    // Nothing of the running config was stopped for the attempt.
    assert!(!sk.lines().iter().any(|l| l.contains("shutting down")));
    assert_eq!(post_spans(&rt, port, 2), 200);
    let page = sk.metrics();
    assert_eq!(
        metric_value(&page, "sidekick_config_reloads_total{result=\"failure\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric_value(&page, "sidekick_config_reloads_total{result=\"success\"}"),
        Some(0.0)
    );
    assert!(sk.terminate().success());
    assert_eq!(received(&sink).1, ["one"]);
    drop(taken);
}

#[test]
fn post_reload_on_the_admin_listener_when_enabled() {
    let (rt, sink, port) = fixture();
    let client = reqwest::Client::new();
    let post = |sk: &Sidekick| {
        rt.block_on(client.post(format!("http://{}/-/reload", sk.admin)).send())
            .unwrap()
            .status()
            .as_u16()
    };
    // Off unless asked for.
    let mut sk = Sidekick::start_with_telemetry(
        &config(port, &sink, "one", "20ms"),
        &telemetry(free_port()),
        &[],
    );
    assert_eq!(post(&sk), 404);
    assert!(sk.terminate().success());
    let mut sk = Sidekick::start_with_args(
        &config(port, &sink, "one", "20ms"),
        &telemetry(free_port()),
        &[],
        &["--reload-endpoint"],
    );
    rewrite(&sk, &config(port, &sink, "two", "20ms"));
    assert_eq!(post(&sk), 202);
    sk.wait_for_line("config reloading", 0);
    assert!(sk
        .lines()
        .iter()
        .any(|l| l.contains("config reloading") && l.contains("POST /-/reload")));
    sk.wait_for_line("config reloaded", 0);
    assert!(sk.terminate().success());
}

/// Prometheus's staleness marker: a NaN with this bit pattern.
const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

/// A scrape pipeline reloaded while it scrapes: the job did not change, so its series go
/// on without a staleness marker in the remote-write output.
#[test]
fn a_scrape_pipeline_reloaded_while_scraping_marks_nothing_stale() {
    use sidekick_testkit::remote_write::RemoteWriteSink;
    use sidekick_testkit::target::{ScrapeTarget, PROMETHEUS_TEXT};
    let rt = runtime();
    let sink = rt.block_on(RemoteWriteSink::start());
    let target = rt.block_on(ScrapeTarget::start());
    target.set_page(
        PROMETHEUS_TEXT,
        "# TYPE app_requests counter\napp_requests_total 5\n# TYPE app_temperature gauge\napp_temperature 20\n",
    );
    let config = |consumers: u32| {
        format!(
            "receivers:
  prometheus:
    config:
      scrape_configs:
        - job_name: app
          scrape_interval: 200ms
          static_configs: [{{targets: [\"{}\"]}}]
exporters:
  prometheusremotewrite:
    endpoint: {}
    remote_write_queue:
      num_consumers: {consumers}
service:
  pipelines:
    metrics:
      receivers: [prometheus]
      exporters: [prometheusremotewrite]
",
            target.address,
            sink.url()
        )
    };
    let temperatures = || {
        sink.series()
            .iter()
            .filter(|s| s.label("__name__") == Some("app_temperature"))
            .map(|s| s.samples.len())
            .sum::<usize>()
    };
    let mut sk = Sidekick::start_with_telemetry(&config(2), &telemetry(free_port()), &[]);
    let wait_for = |n: usize| {
        let started = Instant::now();
        while temperatures() < n {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{} samples",
                temperatures()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for(3);
    rewrite(&sk, &config(1));
    sk.send_signal("HUP");
    sk.wait_for_line("config reloading", 0);
    sk.wait_for_line("config reloaded", 0);
    assert!(sk
        .lines()
        .iter()
        .any(|l| l.contains(r#"kept_receivers":"[\"prometheus\"]"#)));
    let before = temperatures();
    wait_for(before + 3);
    assert!(sk.terminate().success());
    let series = sink.series();
    let stale: Vec<_> = series
        .iter()
        .filter(|s| s.samples.iter().any(|(v, _)| v.to_bits() == STALE_NAN))
        .collect();
    assert!(stale.is_empty(), "staleness markers: {stale:?}");
    let requests: Vec<f64> = series
        .iter()
        .filter(|s| s.label("__name__") == Some("app_requests_total"))
        .flat_map(|s| s.samples.iter().map(|(v, _)| *v))
        .collect();
    assert!(
        requests.len() >= 6 && requests.iter().all(|v| *v == 5.0),
        "{requests:?}"
    );
}

/// A config with a persistent queue holds its storage directory, which two configs
/// cannot share: the reload drains and stops the running components first, then starts
/// the new config on the same sockets (the queue's directory with it), and nothing is
/// lost. A reload that adds a receiver to a running config rebuilds the pipelines and
/// keeps the receiver that did not change.
#[test]
fn reloads_with_a_persistent_queue_restart_and_others_keep_unchanged_receivers() {
    let (rt, sink, port) = fixture();
    // A directory of its own, next to a file of the test's.
    let marker = common::TempFile::new("queue-dir", "");
    let dir = marker.0.parent().unwrap().join("queue");
    std::fs::create_dir_all(&dir).unwrap();
    let with_storage = |generation: &str| {
        config(port, &sink, generation, "20ms")
            .replacen(
                "exporters:\n  otlp:\n    endpoint",
                "extensions:\n  file_storage:\n    directory: DIR\nexporters:\n  otlp:\n    sending_queue:\n      storage: file_storage\n    endpoint",
                1,
            )
            .replace("DIR", &dir.display().to_string())
            .replacen("service:\n", "service:\n  extensions: [file_storage]\n", 1)
    };
    let mut sk = Sidekick::start_with_telemetry(&with_storage("one"), &telemetry(free_port()), &[]);
    assert_eq!(post_spans(&rt, port, 2), 200);
    rewrite(&sk, &with_storage("two"));
    sk.send_signal("HUP");
    sk.wait_for_line("a persistent queue or storage is involved", 0);
    sk.wait_for_line("everything is ready", 1);
    assert_eq!(post_spans(&rt, port, 3), 200);

    // Without storage again, plus a second receiver: the first one is kept.
    let second = free_port();
    let two_receivers = config(port, &sink, "three", "20ms")
        .replacen(
            "processors:",
            &format!("  otlp/2:\n    protocols:\n      http:\n        endpoint: 127.0.0.1:{second}\nprocessors:"),
            1,
        )
        .replace("receivers: [otlp]", "receivers: [otlp, otlp/2]");
    rewrite(&sk, &two_receivers);
    sk.send_signal("HUP");
    sk.wait_for_line("a persistent queue or storage is involved", 1);
    sk.wait_for_line("everything is ready", 2);
    let three_receivers = two_receivers.replace("value: three", "value: four");
    rewrite(&sk, &three_receivers);
    sk.send_signal("HUP");
    sk.wait_for_line("config reloaded", 0);
    assert!(sk.lines().iter().any(|l| l.contains("config reloaded")
        && l.contains(r#"kept_receivers":"[\"otlp\", \"otlp/2\"]"#)));
    assert_eq!(post_spans(&rt, second, 4), 200);
    assert!(sk.terminate().success());
    let (names, generations) = received(&sink);
    assert_eq!(names.len(), 2 + 3 + 4);
    for g in ["one", "two", "four"] {
        assert!(
            generations.iter().any(|x| x == g),
            "no span of {g}: {generations:?}"
        );
    }
}

/// An exporter a reload removes drains as at shutdown: what its backend (down here)
/// never took by `service.shutdown_timeout` is dropped, counted and logged, and the exit
/// status says so, while the new config delivers what it accepts.
#[test]
fn a_removed_exporter_drains_and_counts_what_it_could_not_deliver() {
    let (rt, sink, port) = fixture();
    let dead = format!("http://127.0.0.1:{}", free_port());
    let to = |endpoint: &str, generation: &str| {
        config(port, &sink, generation, "20ms")
            .replace(&sink.url(), endpoint)
            .replacen("service:\n", "service:\n  shutdown_timeout: 1s\n", 1)
    };
    let mut sk = Sidekick::start_with_telemetry(&to(&dead, "one"), &telemetry(free_port()), &[]);
    assert_eq!(post_spans(&rt, port, 5), 200);
    rewrite(&sk, &to(&sink.url(), "two"));
    sk.send_signal("HUP");
    sk.wait_for_line("config reloaded", 0);
    assert_eq!(post_spans(&rt, port, 3), 200);
    sk.wait_for_line(
        "could not deliver within the shutdown timeout was dropped",
        0,
    );
    let line = sk
        .lines()
        .into_iter()
        .find(|l| l.contains("could not deliver"))
        .unwrap();
    assert!(line.contains(r#""dropped_items":5"#), "{line}");
    assert_eq!(sk.terminate().code(), Some(3));
    assert_eq!(received(&sink).1, ["two"]);
}

/// An exporter whose config a reload leaves as it is keeps running with its queue: with
/// the backend down across the reload, what it holds is not drained and dropped at the
/// shutdown timeout (as a rebuilt exporter's would be) but delivered once the backend is
/// back, and the exit status says nothing was lost.
#[test]
fn an_unchanged_exporter_keeps_its_queue_across_a_reload() {
    use sidekick_testkit::sink::Failure;
    let (rt, sink, port) = fixture();
    let with_timeout = |generation: &str, timeout: &str| {
        config(port, &sink, generation, timeout).replacen(
            "service:\n",
            "service:\n  shutdown_timeout: 1s\n",
            1,
        )
    };
    sink.fail_next(100_000, Failure::Grpc(tonic::Code::Unavailable));
    let mut sk =
        Sidekick::start_with_telemetry(&with_timeout("one", "20ms"), &telemetry(free_port()), &[]);
    assert_eq!(post_spans(&rt, port, 5), 200);
    rewrite(&sk, &with_timeout("one", "30ms"));
    sk.send_signal("HUP");
    sk.wait_for_line("config reloaded", 0);
    assert!(sk
        .lines()
        .iter()
        .any(|l| l.contains(r#"kept_exporters":"[\"otlp\"]"#)));
    assert_eq!(post_spans(&rt, port, 3), 200);
    // Past the old pipelines' shutdown timeout: a drained exporter would have dropped
    // its queue by now.
    std::thread::sleep(Duration::from_millis(2500));
    sink.recover();
    let started = Instant::now();
    while received(&sink).0.len() < 8 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "delivered: {:?}",
            received(&sink).0
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!sk.lines().iter().any(|l| l.contains("could not deliver")));
    assert_eq!(sk.terminate().code(), Some(0));
    assert_eq!(received(&sink).0.len(), 8);
}
