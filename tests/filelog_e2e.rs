//! The real binary tails a file that an app writes at a steady rate and rotates twice
//! (rename, then a new file), parsing each JSON line; the OTLP backend must receive every
//! line exactly once, parsed.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use common::{runtime, Sidekick, TempFile};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use sidekick_testkit::sink::OtlpSink;

const LINES: usize = 6000;

/// A runtime, a recording OTLP backend, and an empty `app.log` in a directory of its own
/// (removed with the returned file).
fn setup() -> (
    tokio::runtime::Runtime,
    OtlpSink,
    TempFile,
    std::path::PathBuf,
    std::path::PathBuf,
) {
    let rt = runtime();
    let sink = rt.block_on(OtlpSink::start());
    let marker = TempFile::new("marker", "");
    let dir = marker.0.parent().unwrap().to_path_buf();
    let log = dir.join("app.log");
    std::fs::write(&log, "").unwrap();
    (rt, sink, marker, dir, log)
}

#[test]
fn a_file_rotated_twice_arrives_once_and_parsed() {
    let (rt, sink, _marker, dir, log) = setup();
    let config = format!(
        "receivers:
  filelog:
    include: [{log}]
    start_at: beginning
    poll_interval: 50ms
    operators:
      - type: json_parser
        severity:
          parse_from: attributes.level
processors:
  batch:
    timeout: 100ms
exporters:
  otlphttp:
    endpoint: {url}
service:
  pipelines:
    logs:
      receivers: [filelog]
      processors: [batch]
      exporters: [otlphttp]
",
        log = log.display(),
        url = sink.url()
    );
    let mut sk = Sidekick::start(&config);

    // The app: 2,000 lines a second, rotated by rename after a third and two thirds.
    let writer = {
        let log = log.clone();
        let dir = dir.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
            let mut reopen_at = usize::MAX;
            for seq in 0..LINES {
                if seq == LINES / 3 || seq == 2 * LINES / 3 {
                    let n = seq * 3 / LINES;
                    std::fs::rename(&log, dir.join(format!("app.log.{n}"))).unwrap();
                    // The app still writes a few lines to the renamed file (its open
                    // descriptor) before it reopens: those must arrive too.
                    reopen_at = seq + 5;
                }
                if seq == reopen_at {
                    file = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&log)
                        .unwrap();
                }
                writeln!(
                    file,
                    "{{\"seq\":{seq},\"level\":\"info\",\"msg\":\"request handled\"}}"
                )
                .unwrap();
                let due = Duration::from_micros(500 * seq as u64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
        })
    };
    writer.join().unwrap();
    let done = rt.block_on(sink.wait_until(Duration::from_secs(30), |s| s.log_count() >= LINES));
    std::thread::sleep(Duration::from_millis(500));
    assert!(done, "{} of {LINES} lines arrived", sink.log_count());

    let mut seen: BTreeMap<i64, usize> = BTreeMap::new();
    for req in sink.logs() {
        for rl in req.resource_logs {
            for sl in rl.scope_logs {
                for r in sl.log_records {
                    let seq = r
                        .attributes
                        .iter()
                        .find(|kv| kv.key == "seq")
                        .and_then(|kv| kv.value.as_ref()?.value.clone());
                    let Some(Value::IntValue(seq)) = seq else {
                        panic!("a line was not parsed: {r:?}");
                    };
                    assert_eq!(r.severity_number, 9, "severity from the level");
                    *seen.entry(seq).or_default() += 1;
                }
            }
        }
    }
    let missing: Vec<usize> = (0..LINES)
        .filter(|s| !seen.contains_key(&(*s as i64)))
        .collect();
    let twice: Vec<(&i64, &usize)> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(missing.is_empty(), "missing: {missing:?}");
    assert!(twice.is_empty(), "more than once: {twice:?}");
    assert!(sk.terminate().success());
}

/// With `storage`, a restart (SIGTERM, then a new start while the app keeps writing)
/// reads on from the saved offsets: every line arrives, none twice.
#[test]
fn a_restart_with_file_storage_neither_loses_nor_repeats_lines() {
    let (rt, sink, _marker, dir, log) = setup();
    let config = format!(
        "extensions:
  file_storage:
    directory: {state}
    create_directory: true
receivers:
  filelog:
    include: [{log}]
    start_at: beginning
    poll_interval: 50ms
    storage: file_storage
exporters:
  otlphttp:
    endpoint: {url}
service:
  extensions: [file_storage]
  pipelines:
    logs:
      receivers: [filelog]
      exporters: [otlphttp]
",
        state = dir.join("state").display(),
        log = log.display(),
        url = sink.url()
    );
    let total = 3000;
    let writer = {
        let log = log.clone();
        std::thread::spawn(move || {
            let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
            for seq in 0..total {
                writeln!(file, "line {seq}").unwrap();
                std::thread::sleep(Duration::from_micros(500));
            }
        })
    };
    let mut sk = Sidekick::start(&config);
    std::thread::sleep(Duration::from_millis(600));
    assert!(sk.terminate().success());
    std::thread::sleep(Duration::from_millis(300));
    let mut sk = Sidekick::start(&config);
    writer.join().unwrap();
    let done = rt.block_on(sink.wait_until(Duration::from_secs(30), |s| s.log_count() >= total));
    std::thread::sleep(Duration::from_millis(500));
    assert!(done, "{} of {total} lines arrived", sink.log_count());
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for req in sink.logs() {
        for rl in req.resource_logs {
            for sl in rl.scope_logs {
                for r in sl.log_records {
                    let Some(Value::StringValue(body)) = r.body.and_then(|b| b.value) else {
                        panic!("a record without a text body");
                    };
                    *seen.entry(body).or_default() += 1;
                }
            }
        }
    }
    assert_eq!(seen.len(), total, "every line");
    assert!(seen.values().all(|n| *n == 1), "none twice");
    assert!(sk.terminate().success());
}

/// With a persistent queue on the pipeline, lines count as handed on once they are in
/// it: `kill -9` while the backend is down loses none of what was read, and the next
/// start delivers them and reads on.
#[test]
fn kill_9_with_a_persistent_queue_loses_no_line() {
    let (rt, sink, _marker, dir, log) = setup();
    let config = |backend: &str| {
        format!(
            "extensions:
  file_storage:
    directory: {state}
    create_directory: true
receivers:
  filelog:
    include: [{log}]
    start_at: beginning
    poll_interval: 50ms
    storage: file_storage
processors:
  batch:
    timeout: 5s
exporters:
  otlphttp:
    endpoint: {backend}
    retry_on_failure:
      initial_interval: 50ms
      max_interval: 200ms
    sending_queue:
      storage: file_storage
service:
  extensions: [file_storage]
  pipelines:
    logs:
      receivers: [filelog]
      processors: [batch]
      exporters: [otlphttp]
",
            state = dir.join("state").display(),
            log = log.display(),
        )
    };
    let total = 2000;
    let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    for seq in 0..total / 2 {
        writeln!(file, "line {seq}").unwrap();
    }
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let mut sk = Sidekick::start(&config(&dead));
    // Read, queued on disk, held by a 5 s batch or retrying against a dead backend.
    std::thread::sleep(Duration::from_millis(1500));
    sk.kill();
    for seq in total / 2..total {
        writeln!(file, "line {seq}").unwrap();
    }
    let mut sk = Sidekick::start(&config(&sink.url()));
    let done = rt.block_on(sink.wait_until(Duration::from_secs(30), |s| {
        let mut seen = std::collections::BTreeSet::new();
        for req in s.logs() {
            for r in req
                .resource_logs
                .iter()
                .flat_map(|r| &r.scope_logs)
                .flat_map(|s| &s.log_records)
            {
                if let Some(Value::StringValue(b)) = r.body.as_ref().and_then(|b| b.value.as_ref())
                {
                    seen.insert(b.clone());
                }
            }
        }
        seen.len() >= total
    }));
    assert!(done, "{} records for {total} lines", sink.log_count());
    assert!(sk.terminate().success(), "{}", sk.lines().join("\n"));
}
