//! The receiver against real files: appends, rotations, truncation, deletion, partial
//! and over-long lines, binary garbage, many files, multiline and operators.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use sidekick_collector::component::{BuildContext, ReceiverConfig, ReceiverOutputs};
use sidekick_collector::config::{ComponentId, Signal as SignalKind};
use sidekick_collector::payload::LogsSignal;
use sidekick_collector::pipe::{channel, stop_pair, Input, Output, StopTrigger};
use sidekick_collector::telemetry::{Gauge, Telemetry};

use super::*;

struct Dir(PathBuf);

impl Dir {
    fn new() -> Dir {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "sidekick-filelog-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn glob(&self, pattern: &str) -> String {
        self.0.join(pattern).display().to_string()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn append(path: &Path, text: &[u8]) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text).unwrap();
}

struct Running {
    input: Input<LogsSignal>,
    telemetry: Telemetry,
    records: Vec<LogRecord>,
    stop: StopTrigger,
    task: tokio::task::JoinHandle<()>,
}

fn config(include: &str) -> Config {
    Config {
        include: vec![include.to_string()],
        start_at: "beginning".into(),
        poll_interval: ConfigDuration::from_millis(20),
        force_flush_period: ConfigDuration::from_millis(300),
        ..Config::default()
    }
}

fn start(config: Config) -> Running {
    start_with(config, None)
}

fn start_with(
    config: Config,
    storage: Option<std::sync::Arc<sidekick_collector::storage::Storage>>,
) -> Running {
    let mut storages = sidekick_collector::storage::Storages::default();
    if let Some(s) = storage {
        storages.insert("file_storage".into(), s);
    }
    let problems = config.validate();
    assert!(problems.is_empty(), "{problems:?}");
    let telemetry = Telemetry::new();
    let id: ComponentId = "filelog".parse().unwrap();
    let ctx = BuildContext {
        id: &id,
        telemetry: &telemetry,
        signals: &[SignalKind::Logs],
        authenticators: &sidekick_collector::auth::NO_AUTHENTICATORS,
        storages: &storages,
    };
    let receiver = config.build(&ctx).unwrap();
    let (tx, input) = channel::<LogsSignal>(64, Gauge::default());
    let outputs = ReceiverOutputs {
        logs: Some(Output::new(vec![tx])),
        ..ReceiverOutputs::default()
    };
    let (trigger, stop) = stop_pair();
    let task = tokio::spawn(receiver.run(outputs, stop));
    Running {
        input,
        telemetry,
        records: Vec::new(),
        stop: trigger,
        task,
    }
}

fn body(r: &LogRecord) -> String {
    match r.body.as_ref().and_then(|b| b.value.as_ref()) {
        Some(Any::StringValue(s)) => s.clone(),
        other => format!("{other:?}"),
    }
}

fn attr<'r>(r: &'r LogRecord, key: &str) -> Option<&'r Any> {
    r.attributes
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()
}

impl Running {
    /// Collects records until there are `n` (or fails after 10 s); then checks that no
    /// more arrive for a moment.
    async fn expect(&mut self, n: usize) -> Vec<String> {
        let started = Instant::now();
        while self.records.len() < n {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "got {} records, expected {n}: {:?}",
                self.records.len(),
                self.records.iter().map(body).collect::<Vec<_>>()
            );
            self.take(Duration::from_millis(50)).await;
        }
        self.take(Duration::from_millis(250)).await;
        assert_eq!(
            self.records.len(),
            n,
            "{:?}",
            self.records.iter().map(body).collect::<Vec<_>>()
        );
        self.records.iter().map(body).collect()
    }

    /// Stops the receiver and waits until it has finished.
    async fn stop(self) {
        self.stop.fire();
        let mut input = self.input;
        let drain = tokio::spawn(async move { while input.recv().await.is_some() {} });
        self.task.await.unwrap();
        drain.abort();
    }

    async fn take(&mut self, wait: Duration) {
        while let Ok(Some(batch)) = tokio::time::timeout(wait, self.input.recv()).await {
            let req: ExportLogsServiceRequest = batch.to_request().unwrap();
            for rl in req.resource_logs {
                for sl in rl.scope_logs {
                    self.records.extend(sl.log_records);
                }
            }
        }
    }

    fn counter(&self, name: &str) -> f64 {
        let page = self.telemetry.render();
        page.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    }
}

fn lines(prefix: &str, range: std::ops::Range<usize>) -> Vec<u8> {
    range
        .map(|i| format!("{prefix} {i}\n"))
        .collect::<String>()
        .into_bytes()
}

fn names(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix} {i}")).collect()
}

#[tokio::test]
async fn appends_are_read_as_they_come_with_the_file_name() {
    let dir = Dir::new();
    let log = dir.path("app.log");
    append(&log, &lines("first", 0..3));
    let mut r = start(config(&dir.glob("*.log")));
    assert_eq!(r.expect(3).await, names("first", 0..3));
    append(&log, &lines("more", 0..2));
    let got = r.expect(5).await;
    assert_eq!(got[3..], names("more", 0..2));
    let rec = &r.records[0];
    assert_eq!(
        attr(rec, "log.file.name"),
        Some(&Any::StringValue("app.log".into()))
    );
    assert!(attr(rec, "log.file.path").is_none());
    assert!(rec.observed_time_unix_nano > 0);
    assert_eq!(
        r.counter("otelcol_receiver_accepted_log_records_total"),
        5.0
    );
}

#[tokio::test]
async fn start_at_end_skips_what_was_there() {
    let dir = Dir::new();
    let log = dir.path("app.log");
    append(&log, &lines("old", 0..5));
    let mut r = start(Config {
        start_at: "end".into(),
        ..config(&dir.glob("*.log"))
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    append(&log, &lines("new", 0..2));
    assert_eq!(r.expect(2).await, names("new", 0..2));
}

#[tokio::test]
async fn rename_rotation_reads_every_line_once() {
    let dir = Dir::new();
    let log = dir.path("app.log");
    append(&log, &lines("a", 0..100));
    let mut r = start(config(&dir.glob("app.log")));
    r.expect(100).await;
    // Lines written just before the rotation, then the rename, then a new file.
    append(&log, &lines("b", 0..50));
    std::fs::rename(&log, dir.path("app.log.1")).unwrap();
    append(&log, &lines("c", 0..20));
    let got = r.expect(170).await;
    let mut want = names("a", 0..100);
    want.extend(names("b", 0..50));
    want.extend(names("c", 0..20));
    assert_eq!(got, want);
}

#[tokio::test]
async fn copytruncate_reads_the_new_start() {
    let dir = Dir::new();
    let log = dir.path("app.log");
    append(&log, &lines("before", 0..30));
    let mut r = start(config(&dir.glob("app.log")));
    r.expect(30).await;
    // Copied away, then truncated in place; the writer goes on from the start.
    std::fs::copy(&log, dir.path("app.log.1")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&log)
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    append(&log, &lines("after", 0..5));
    let got = r.expect(35).await;
    assert_eq!(got[30..], names("after", 0..5));
    // Truncated and written again at once, between two polls: read once, from the start.
    std::fs::write(&log, lines("again", 0..3)).unwrap();
    let got = r.expect(38).await;
    assert_eq!(got[35..], names("again", 0..3));
}

#[tokio::test]
async fn deleted_and_recreated_files_are_released_and_picked_up() {
    let dir = Dir::new();
    let log = dir.path("app.log");
    append(&log, &lines("one", 0..3));
    let mut r = start(config(&dir.glob("*.log")));
    r.expect(3).await;
    std::fs::remove_file(&log).unwrap();
    // Released once quiet for force_flush_period (300 ms here).
    let started = Instant::now();
    while r.counter("sidekick_filelog_open_files") != 0.0 {
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "the descriptor was not released"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    append(&log, &lines("two", 0..4));
    let got = r.expect(7).await;
    assert_eq!(got[3..], names("two", 0..4));
    assert_eq!(r.counter("sidekick_filelog_open_files"), 1.0);
}

#[tokio::test]
async fn a_partial_last_line_waits_for_its_end_then_is_flushed() {
    let dir = Dir::new();
    let log = dir.path("app.log");
    // Longer than `expect`'s quiet check after the first line (250 ms plus polling), so
    // the half line cannot be flushed before its end is written.
    let mut r = start(Config {
        force_flush_period: ConfigDuration::from_millis(1_500),
        ..config(&dir.glob("*.log"))
    });
    append(&log, b"complete\nhalf of a ");
    assert_eq!(r.expect(1).await, ["complete"]);
    append(&log, b"line\n");
    assert_eq!(r.expect(2).await[1], "half of a line");
    // No line end ever comes: sent after force_flush_period.
    append(&log, b"no newline at the end");
    assert_eq!(r.expect(3).await[2], "no newline at the end");
}

#[tokio::test]
async fn a_line_over_max_log_size_is_cut_and_counted() {
    let dir = Dir::new();
    let log = dir.path("app.log");
    let mut big = vec![b'x'; 10 << 20];
    big.push(b'\n');
    append(&log, b"before\n");
    append(&log, &big);
    append(&log, b"after\n");
    let mut r = start(Config {
        max_log_size: SizeSetting(64 << 10),
        ..config(&dir.glob("*.log"))
    });
    let got = r.expect(3).await;
    assert_eq!(got[0], "before");
    assert_eq!(got[1].len(), 64 << 10);
    assert_eq!(got[2], "after");
    assert_eq!(r.counter("sidekick_filelog_truncated_entries_total"), 1.0);
}

#[tokio::test]
async fn binary_garbage_is_replaced_never_fatal() {
    let dir = Dir::new();
    let log = dir.path("app.log");
    append(&log, b"ok\n\xff\xfe\x00\x01garbage\xc3\n\x00\n");
    let mut r = start(config(&dir.glob("*.log")));
    let got = r.expect(3).await;
    assert_eq!(got[0], "ok");
    assert_eq!(got[1], "\u{fffd}\u{fffd}\u{0}\u{1}garbage\u{fffd}");
    append(&log, b"still reading\n");
    assert_eq!(r.expect(4).await[3], "still reading");
}

#[tokio::test]
async fn two_hundred_files_at_once() {
    let dir = Dir::new();
    for f in 0..200 {
        append(
            &dir.path(&format!("f{f:03}.log")),
            &lines(&format!("file{f}"), 0..5),
        );
    }
    let mut r = start(config(&dir.glob("*.log")));
    let got = r.expect(1000).await;
    let mut sorted = got.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 1000, "every line once");
    assert_eq!(r.counter("sidekick_filelog_open_files"), 200.0);
}

#[tokio::test]
async fn excluded_files_are_not_read() {
    let dir = Dir::new();
    append(&dir.path("app.log"), b"in\n");
    append(&dir.path("debug.log"), b"out\n");
    let mut r = start(Config {
        exclude: vec![dir.glob("debug*")],
        ..config(&dir.glob("*.log"))
    });
    assert_eq!(r.expect(1).await, ["in"]);
}

#[tokio::test]
async fn multiline_entries_start_at_their_pattern() {
    let dir = Dir::new();
    let log = dir.path("app.log");
    append(
        &log,
        b"2024-05-01 ERROR boom\n  at a()\n  at b()\n2024-05-01 INFO next\n",
    );
    let mut r = start(Config {
        multiline: Some(Multiline {
            line_start_pattern: Some(r"^\d{4}-".into()),
            line_end_pattern: None,
        }),
        ..config(&dir.glob("*.log"))
    });
    // The last entry is complete only when the next starts, or after the flush period.
    assert_eq!(
        r.expect(2).await,
        [
            "2024-05-01 ERROR boom\n  at a()\n  at b()",
            "2024-05-01 INFO next"
        ]
    );
}

#[tokio::test]
async fn operators_parse_json_and_failures_keep_the_raw_line() {
    let dir = Dir::new();
    let log = dir.path("app.log");
    append(
        &log,
        b"{\"msg\":\"hi\",\"level\":\"error\",\"ts\":\"2024-05-01T12:00:00Z\"}\nplain text\n",
    );
    let op: OperatorConfig = serde_json::from_value(serde_json::json!({
        "type": "json_parser",
        "timestamp": {"parse_from": "attributes.ts", "layout": "%Y-%m-%dT%H:%M:%S%z"},
        "severity": {"parse_from": "attributes.level"}
    }))
    .unwrap();
    let mut r = start(Config {
        operators: vec![op],
        include_file_path: true,
        ..config(&dir.glob("*.log"))
    });
    let got = r.expect(2).await;
    assert_eq!(got[1], "plain text");
    let parsed = &r.records[0];
    assert_eq!(attr(parsed, "msg"), Some(&Any::StringValue("hi".into())));
    assert_eq!(parsed.severity_number, 17);
    assert_eq!(parsed.time_unix_nano, 1_714_564_800_000_000_000);
    assert!(attr(parsed, "log.file.path").is_some());
    let page = r.telemetry.render();
    assert!(
        page.contains("sidekick_filelog_parse_failures_total{receiver=\"filelog\",operator=\"json_parser\"} 1"),
        "{page}"
    );
}

#[tokio::test]
async fn cri_partial_lines_are_joined() {
    let dir = Dir::new();
    let pods = dir.path("shop_web-1_uid-9/nginx");
    std::fs::create_dir_all(&pods).unwrap();
    let log = pods.join("0.log");
    append(
        &log,
        b"2024-05-01T12:00:00.1Z stdout P first half \n2024-05-01T12:00:00.2Z stdout F second half\n2024-05-01T12:00:01Z stderr F alone\n",
    );
    let op: OperatorConfig =
        serde_json::from_value(serde_json::json!({"type": "container"})).unwrap();
    let mut r = start(Config {
        operators: vec![op],
        ..config(&dir.glob("*/*/*.log"))
    });
    assert_eq!(r.expect(2).await, ["first half second half", "alone"]);
    assert_eq!(
        attr(&r.records[1], "log.iostream"),
        Some(&Any::StringValue("stderr".into()))
    );
}

#[tokio::test]
async fn cri_partial_lines_are_joined_up_to_max_log_size() {
    let dir = Dir::new();
    let log = dir.path("0.log");
    // A container that never ends its line: the pieces stop growing at max_log_size.
    let piece = format!("2024-05-01T12:00:00Z stdout P {}\n", "x".repeat(100));
    for _ in 0..50 {
        append(&log, piece.as_bytes());
    }
    append(&log, b"2024-05-01T12:00:01Z stdout F end\n");
    let op: OperatorConfig =
        serde_json::from_value(serde_json::json!({"type": "container"})).unwrap();
    let mut r = start(Config {
        operators: vec![op],
        max_log_size: SizeSetting(1000),
        ..config(&dir.glob("*.log"))
    });
    let got = r.expect(1).await;
    assert_eq!(got[0].len(), 1000 + "end".len());
    assert!(r.counter("sidekick_filelog_truncated_entries_total") >= 1.0);
}

#[test]
fn config_mistakes_name_the_field() {
    let fields = |c: Config| -> Vec<String> { c.validate().into_iter().map(|e| e.field).collect() };
    assert_eq!(fields(Config::default()), ["include"]);
    let bad = Config {
        include: vec!["/x/[".into()],
        start_at: "middle".into(),
        encoding: "utf-16".into(),
        multiline: Some(Multiline::default()),
        ..Config::default()
    };
    assert_eq!(
        fields(bad),
        ["include[0]", "start_at", "encoding", "multiline"]
    );
}

#[tokio::test]
async fn a_restart_reads_on_from_the_saved_offsets() {
    let dir = Dir::new();
    let log = dir.path("app.log");
    append(&log, &lines("first", 0..100));
    let storage = std::sync::Arc::new(
        sidekick_collector::storage::Storage::open(
            &sidekick_collector::storage::FileStorageConfig {
                directory: dir.path("state").display().to_string(),
                create_directory: true,
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let config = || Config {
        start_at: "end".into(),
        storage: Some("file_storage".into()),
        force_flush_period: ConfigDuration::from_millis(60_000),
        ..config(&dir.glob("*.log"))
    };
    // No saved offset yet and start_at end: what is there is skipped...
    let mut r = start_with(config(), Some(storage.clone()));
    tokio::time::sleep(Duration::from_millis(150)).await;
    append(&log, &lines("second", 0..10));
    assert_eq!(r.expect(10).await, names("second", 0..10));
    r.stop().await;
    // ...and after a restart, reading goes on exactly where it stopped.
    append(&log, &lines("while stopped", 0..50));
    let mut r = start_with(config(), Some(storage.clone()));
    assert_eq!(r.expect(50).await, names("while stopped", 0..50));
    // A partial last line is not handed on before a stop, so the saved offset is
    // before it and the next run reads it whole.
    append(&log, b"partial at the stop");
    tokio::time::sleep(Duration::from_millis(150)).await;
    r.stop().await;
    append(&log, b" completed later\n");
    let mut r = start_with(config(), Some(storage));
    assert_eq!(r.expect(1).await, ["partial at the stop completed later"]);
}
