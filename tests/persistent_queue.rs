//! The persistent queue with the real binary: what Sidekick acknowledged survives
//! `kill -9`, SIGTERM (and every other signal that ends the process) with a dead backend,
//! a torn segment and a full queue.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{metric_value, runtime, Sidekick, TempFile};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use sidekick_testkit::sink::{Failure, OtlpSink};

/// A storage directory removed at the end.
struct Dir(PathBuf);

impl Dir {
    fn new() -> Dir {
        let t = TempFile::new("x", "");
        let d = t.0.parent().unwrap().with_extension("queue");
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The runtime, a sink and a storage directory every test here starts with.
fn setup() -> (tokio::runtime::Runtime, OtlpSink, Dir) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = runtime();
    let sink = rt.block_on(OtlpSink::start());
    (rt, sink, Dir::new())
}

/// A URL where nothing listens: a backend that is down.
fn dead_backend() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", l.local_addr().unwrap())
}

/// POSTs spans named `names` to the OTLP/HTTP receiver at `addr`.
fn post(
    rt: &tokio::runtime::Runtime,
    client: &reqwest::Client,
    addr: std::net::SocketAddr,
    names: &[String],
) -> reqwest::Response {
    rt.block_on(async {
        client
            .post(format!("http://{addr}/v1/traces"))
            .header("content-type", "application/x-protobuf")
            .body(request(names))
            .send()
            .await
            .unwrap()
    })
}

fn config(dir: &Path, backend: &str, queue: &str) -> String {
    format!(
        "extensions:\n  file_storage:\n    directory: {}\nreceivers:\n  otlp:\n    protocols:\n      http:\n        endpoint: 127.0.0.1:0\nprocessors:\n  batch:\n    send_batch_size: 200\n    timeout: 100ms\nexporters:\n  otlphttp:\n    endpoint: {backend}\n    retry_on_failure:\n      initial_interval: 50ms\n      max_interval: 200ms\n      max_elapsed_time: 0s\n    sending_queue:\n      storage: file_storage\n{queue}service:\n  extensions: [file_storage]\n  shutdown_timeout: 1s\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [batch]\n      exporters: [otlphttp]\n",
        dir.display()
    )
}

fn request(names: &[String]) -> Vec<u8> {
    let spans = names
        .iter()
        .map(|n| Span {
            trace_id: vec![7; 16],
            span_id: vec![9; 8],
            name: n.clone(),
            start_time_unix_nano: 1,
            end_time_unix_nano: 2,
            ..Span::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// Posts requests of `per_request` uniquely named spans until `stop`; records the names
/// of every request answered 200 (acknowledged).
async fn send_until(
    addr: std::net::SocketAddr,
    tag: String,
    per_request: usize,
    acked: Arc<Mutex<BTreeSet<String>>>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let mut k = 0;
    while !*stop.borrow() {
        let names: Vec<String> = (0..per_request).map(|j| format!("{tag}-{k}-{j}")).collect();
        k += 1;
        let sent = client
            .post(format!("http://{addr}/v1/traces"))
            .header("content-type", "application/x-protobuf")
            .body(request(&names))
            .send()
            .await;
        match sent {
            Ok(r) if r.status() == 200 => acked.lock().unwrap().extend(names),
            Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(_) => return,
        }
    }
}

/// Span names received by the sink, with how often each came.
fn received(sink: &OtlpSink) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for r in sink.traces() {
        for s in r
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
        {
            *seen.entry(s.name.clone()).or_insert(0) += 1;
        }
    }
    seen
}

/// A small deterministic generator for kill moments (seeded from the clock, printed).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

#[test]
fn nothing_acknowledged_is_lost_to_kill_9() {
    let (rt, sink, dir) = setup();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    println!("seed {seed}");
    let mut rng = Lcg(seed);
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let started = Instant::now();
    let mut iterations = 0;
    // The backend is down (nothing listens) on even rounds, flaky on odd ones.
    let dead = dead_backend();
    while iterations < 20 || (iterations < 40 && started.elapsed() < Duration::from_secs(20)) {
        let backend = if iterations % 2 == 0 {
            dead.clone()
        } else {
            sink.fail_next(3, Failure::Http(503, None));
            sink.url()
        };
        let mut sk = Sidekick::start(&config(&dir.0, &backend, ""));
        let addr = sk.http.unwrap();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let senders: Vec<_> = (0..3)
            .map(|t| {
                rt.spawn(send_until(
                    addr,
                    format!("r{iterations}t{t}"),
                    20,
                    Arc::clone(&acked),
                    stop_rx.clone(),
                ))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(50 + rng.next(400)));
        sk.kill();
        let _ = stop_tx.send(true);
        for s in senders {
            let _ = rt.block_on(s);
        }
        iterations += 1;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 1000,
        "too little was sent to mean anything: {}",
        acked.len()
    );

    // A healthy backend now: every acknowledged span arrives. The backlog is a few
    // hundred thousand spans through a debug build on a machine that may be running
    // other tests: the wait goes on while deliveries do (a loss shows as a stall), up to
    // five minutes.
    sink.recover();
    let mut sk = Sidekick::start(&config(&dir.0, &sink.url(), ""));
    let waiting = Instant::now();
    let mut delivered_before = 0;
    let all = loop {
        let all = rt.block_on(sink.wait_until(Duration::from_secs(30), |s| {
            let seen = received(s);
            acked.iter().all(|n| seen.contains_key(n))
        }));
        let delivered = received(&sink).len();
        if all || delivered == delivered_before || waiting.elapsed() > Duration::from_secs(300) {
            break all;
        }
        delivered_before = delivered;
    };
    let seen = received(&sink);
    let missing: Vec<&String> = acked.iter().filter(|n| !seen.contains_key(*n)).collect();
    assert!(
        all,
        "{} of {} acknowledged spans never arrived, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    println!(
        "{iterations} kills in {:?}: {} spans acknowledged, all delivered; {} delivered more than once",
        started.elapsed(),
        acked.len(),
        duplicates
    );
    assert_eq!(sk.terminate().code(), Some(0), "{}", sk.lines().join("\n"));
}

/// A signal that would end the process by default (a tool's SIGQUIT or SIGUSR1, a Ctrl-C)
/// takes the SIGTERM path: the exporter drains until the deadline and what it could not
/// send is kept (exit 4), never dropped with the process. (SIGHUP reloads a config file:
/// `tests/reload.rs`.)
#[test]
fn every_ending_signal_drains_like_sigterm() {
    let (rt, sink, dir) = setup();
    let client = reqwest::Client::new();
    let dead = dead_backend();
    let mut sent = Vec::new();
    for signal in ["QUIT", "USR1", "USR2", "INT", "ALRM"] {
        let mut sk = Sidekick::start(&config(&dir.0, &dead, ""));
        let addr = sk.http.unwrap();
        let batch: Vec<String> = (0..10).map(|j| format!("{signal}-{j}")).collect();
        assert_eq!(post(&rt, &client, addr, &batch).status(), 200);
        sent.extend(batch);
        let status = sk.signal(signal);
        let lines = sk.lines().join("\n");
        assert_eq!(status.code(), Some(4), "SIG{signal}: {lines}");
        assert!(lines.contains(&format!("SIG{signal}")), "{lines}");
        assert!(lines.contains("kept in the persistent queue"), "{lines}");
    }
    // Everything kept arrives once the backend is up.
    let mut sk = Sidekick::start(&config(&dir.0, &sink.url(), ""));
    assert!(
        rt.block_on(sink.wait_until(Duration::from_secs(20), |s| s.span_count() >= sent.len())),
        "{}",
        sk.lines().join("\n")
    );
    let seen = received(&sink);
    assert!(sent.iter().all(|n| seen.contains_key(n)), "{seen:?}");
    assert_eq!(sk.terminate().code(), Some(0), "{}", sk.lines().join("\n"));
}

#[test]
fn sigterm_with_a_dead_backend_keeps_the_backlog_for_the_next_start() {
    let (rt, sink, dir) = setup();
    let dead = dead_backend();
    let mut sk = Sidekick::start(&config(&dir.0, &dead, ""));
    let addr = sk.http.unwrap();
    let client = reqwest::Client::new();
    let mut names = Vec::new();
    for k in 0..50 {
        let batch: Vec<String> = (0..20).map(|j| format!("kept-{k}-{j}")).collect();
        assert_eq!(post(&rt, &client, addr, &batch).status(), 200);
        names.extend(batch);
    }
    let status = sk.terminate();
    let lines = sk.lines().join("\n");
    assert_eq!(status.code(), Some(4), "{lines}");
    assert!(lines.contains("kept in the persistent queue"), "{lines}");
    assert!(!lines.contains("dropped data"), "{lines}");

    // Tear the last record, as a crash in the middle of a write would.
    let queue = dir.0.join("queue-traces");
    let mut segments: Vec<PathBuf> = std::fs::read_dir(&queue)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    let last = segments.last().unwrap();
    let len = std::fs::metadata(last).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(last)
        .unwrap()
        .set_len(len - 5)
        .unwrap();

    let mut sk = Sidekick::start(&config(&dir.0, &sink.url(), ""));
    // All but the torn request (20 spans) arrive, oldest first.
    assert!(
        rt.block_on(sink.wait_until(Duration::from_secs(20), |s| s.span_count() >= 980)),
        "{}",
        sk.lines().join("\n")
    );
    let seen = received(&sink);
    assert!(names[..980].iter().all(|n| seen.contains_key(n)));
    let page = sk.metrics();
    assert_eq!(
        metric_value(
            &page,
            "sidekick_persistent_queue_corrupt_records_total{pipeline=\"traces\"}"
        ),
        Some(1.0),
        "{page}"
    );
    assert_eq!(
        metric_value(
            &page,
            "sidekick_persistent_queue_replayed_items_total{pipeline=\"traces\"}"
        ),
        Some(980.0),
        "{page}"
    );
    let lines = sk.lines().join("\n");
    assert!(lines.contains("segment is damaged"), "{lines}");
    assert_eq!(sk.terminate().code(), Some(0), "{}", sk.lines().join("\n"));
}

#[test]
fn a_full_queue_refuses_retryably_and_takes_data_again_once_it_drains() {
    let (rt, sink, dir) = setup();
    // The backend fails everything for now.
    sink.fail_next(1_000_000, Failure::Http(503, None));
    let mut sk = Sidekick::start(&config(
        &dir.0,
        &sink.url(),
        "      sizer: bytes\n      queue_size: 65536\n",
    ));
    let addr = sk.http.unwrap();
    let client = reqwest::Client::new();
    let post = |k: usize| {
        let batch: Vec<String> = (0..50).map(|j| format!("full-{k}-{j}")).collect();
        let answer = post(&rt, &client, addr, &batch);
        let status = answer.status().as_u16();
        (batch, status, answer.headers().contains_key("retry-after"))
    };
    let mut acked = Vec::new();
    let mut refused = false;
    for k in 0..200 {
        let (batch, status, retry_after) = post(k);
        match status {
            200 => acked.extend(batch),
            503 => {
                assert!(retry_after);
                refused = true;
                break;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(refused, "a 64 KiB queue never filled");
    assert!(acked.len() >= 500, "{}", acked.len());
    let page = sk.metrics();
    let on_disk = metric_value(
        &page,
        "sidekick_persistent_queue_size_bytes{pipeline=\"traces\"}",
    )
    .unwrap();
    assert!(on_disk <= 65536.0 + 8192.0, "{on_disk}");

    // The backend is back: the queue drains and takes data again.
    sink.recover();
    let n = acked.len();
    assert!(rt.block_on(sink.wait_until(Duration::from_secs(20), |s| s.span_count() >= n)));
    let (batch, status, _) = post(1000);
    assert_eq!(status, 200);
    acked.extend(batch);
    assert!(
        rt.block_on(sink.wait_until(Duration::from_secs(20), |s| s.span_count() >= acked.len()))
    );
    let seen = received(&sink);
    assert!(acked.iter().all(|n| seen.contains_key(n)));
    assert_eq!(sk.terminate().code(), Some(0), "{}", sk.lines().join("\n"));
}

#[test]
fn a_second_sidekick_on_the_same_storage_is_refused() {
    let dir = Dir::new();
    let _first = Sidekick::start(&config(&dir.0, "http://127.0.0.1:9", ""));
    let config = TempFile::new(
        "second.yaml",
        &format!(
            "{}  telemetry:\n    metrics:\n      address: 127.0.0.1:0\n",
            config(&dir.0, "http://127.0.0.1:9", "")
        ),
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sidekick"))
        .arg("--config")
        .arg(&config.0)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("in use by another Sidekick"), "{stderr}");
}

#[test]
fn a_full_disk_is_refused_retryably_and_writing_resumes_when_space_returns() {
    let (rt, sink, dir) = setup();
    let mut sk = Sidekick::start(&config(&dir.0, &sink.url(), ""));
    let addr = sk.http.unwrap();
    let client = reqwest::Client::new();
    // The queue's first segment would land on a device that is always full.
    let segment = dir.0.join("queue-traces/00000000000000000000.seg");
    std::os::unix::fs::symlink("/dev/full", &segment).unwrap();
    let names: Vec<String> = (0..10).map(|j| format!("disk-full-{j}")).collect();
    let refused = post(&rt, &client, addr, &names);
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    let lines = sk.lines().join("\n");
    assert!(lines.contains("persistent queue cannot write"), "{lines}");
    assert!(lines.contains("No space left on device"), "{lines}");
    // Space is back (the empty segment went): the client's retry is taken and delivered.
    let _ = std::fs::remove_file(&segment);
    assert_eq!(post(&rt, &client, addr, &names).status(), 200);
    assert!(rt.block_on(sink.wait_until(Duration::from_secs(10), |s| s.span_count() >= 10)));
    assert_eq!(sk.terminate().code(), Some(0), "{}", sk.lines().join("\n"));
}
