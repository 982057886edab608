//! End to end through a real collector binary.
//!
//! - `traces`: OTLP traces over gRPC → `batch` → `otlp` exporter (no compression), flat
//!   out. Reports spans/s, CPU-seconds per million spans, peak and idle RSS. `--rotel
//!   PATH` runs Rotel's binary with the equivalent settings instead.
//! - `prw`: a target page of N series (30% counters, 30% gauges, histograms of 11 series,
//!   summaries of 5) scraped every 5 s → `batch` → `prometheusremotewrite` to a counting
//!   sink; with the Prometheus agent (`prometheus --enable-feature=agent`) scraping the
//!   same page into the same kind of sink when it is installed, and the ratios.
//! - `exporter`: the same page scraped every 5 s → `k8s_attributes` → `batch` →
//!   `prometheus` exporter, which the bench scrapes every 5 s as Prometheus would.
//!
//! - `filelog`: a file of `--lines` (1,000,000) 200-byte JSON lines already on disk →
//!   `filelog` (from the beginning) → `batch` → `otlphttp` (gzip) to a counting sink;
//!   CPU-seconds and peak RSS until the last line arrived. The OpenTelemetry Collector's
//!   contrib build runs the same config in the same run when `--collector PATH` is given
//!   or `otelcol-contrib` is found (`$PEERS/otel_collector/bin/otelcol-contrib_linux_amd64`).
//! - `persistent`: the `traces` load three times, through the in-memory queue, through a
//!   persistent queue (`sending_queue.storage`, the default `fsync: false`) and through one
//!   with `fsync: true`: spans/s, CPU-seconds per million spans, disk bytes per span and
//!   fsyncs per second; then a backlog of `--spans` kept on disk while the backend is
//!   down, and the replay after a restart to a healthy backend (spans/s).
//! - `churn`: the `prw` scenario with a tenth of the page's series replaced by new names
//!   every scrape (as Pod names and request ids do), for `--minutes` (10); prints RSS and
//!   CPU minute by minute: RSS must stay flat.
//!
//! Metrics scenarios run at 10,000 and 100,000 series (`--series`), after a warm-up
//! (`--warmup`, 20 s) for one window (`--window`, 60 s), and report CPU-seconds per
//! minute, RSS at the end and the window's peak, and samples delivered per second.
//!
//! Memory is reported as peak RSS and anonymous memory (`RssAnon`: heap, stacks, written
//! pages), sampled every 100 ms: anonymous memory is what every Pod pays for, while the
//! binary's code pages are shared by every process of the same image.
//!
//! `cargo bench` builds the binary with the bench profile (the release profile's code, no
//! cross-crate LTO). The image ships the `dist` build: build it first and name it.
//! `--report FILE` appends the figures to FILE as a dated section with the machine, the
//! commit and the command:
//!
//! ```text
//! cargo bench --bench e2e                                   # everything (bench profile)
//! cargo build --profile dist
//! cargo bench --bench e2e -- --binary target/dist/sidekick --scenario prw --series 100000
//! cargo bench --bench e2e -- --binary target/dist/sidekick --report BENCHMARKS.md
//! cargo bench --bench e2e -- --scenario traces --rotel PATH_TO_ROTEL
//! ```

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;
use sidekick_collector::payload::{Signal, TracesSignal};
use sidekick_collector::transport::grpc::RawCodec;
use sidekick_testkit::gen::traces_request;
use sidekick_testkit::sink::OtlpSink;
use sidekick_testkit::{free_port, http_get};

/// Spans per request, as the OpenTelemetry SDKs batch by default.
const SPANS_PER_REQUEST: usize = 512;
/// Concurrent client connections.
const CLIENTS: usize = 4;

struct Args {
    binary: String,
    rotel: Option<String>,
    spans: usize,
    scenarios: Vec<String>,
    series: Vec<usize>,
    warmup: Duration,
    window: Duration,
    prometheus: String,
    minutes: u64,
    lines: usize,
    collector: Option<String>,
    report: Option<String>,
}

fn parse_args() -> Args {
    let mut args = Args {
        binary: env!("CARGO_BIN_EXE_sidekick").to_string(),
        rotel: None,
        spans: 2_000_000,
        scenarios: vec!["traces".into(), "prw".into(), "exporter".into()],
        series: vec![10_000, 100_000],
        warmup: Duration::from_secs(20),
        window: Duration::from_secs(60),
        prometheus: "prometheus".into(),
        minutes: 10,
        lines: 1_000_000,
        collector: None,
        report: None,
    };
    let secs = |v: Option<String>, flag: &str| {
        Duration::from_secs(
            v.and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{flag} SECONDS")),
        )
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--binary" => args.binary = it.next().expect("--binary PATH"),
            "--rotel" => args.rotel = Some(it.next().expect("--rotel PATH")),
            "--spans" => args.spans = it.next().and_then(|n| n.parse().ok()).expect("--spans N"),
            "--scenario" => {
                args.scenarios = it
                    .next()
                    .expect("--scenario traces,prw,exporter")
                    .split(',')
                    .map(str::to_string)
                    .collect()
            }
            "--series" => {
                args.series = it
                    .next()
                    .expect("--series N[,N]")
                    .split(',')
                    .map(|n| n.parse().expect("--series N[,N]"))
                    .collect()
            }
            "--warmup" => args.warmup = secs(it.next(), "--warmup"),
            "--window" => args.window = secs(it.next(), "--window"),
            "--prometheus" => args.prometheus = it.next().expect("--prometheus PATH"),
            "--lines" => args.lines = it.next().and_then(|n| n.parse().ok()).expect("--lines N"),
            "--collector" => args.collector = Some(it.next().expect("--collector PATH")),
            "--report" => args.report = Some(it.next().expect("--report FILE")),
            "--minutes" => {
                args.minutes = it.next().and_then(|n| n.parse().ok()).expect("--minutes N")
            }
            // Flags cargo bench passes to every bench.
            "--bench" => {}
            other => eprintln!("ignoring argument {other}"),
        }
    }
    args
}

/// A process's figures from /proc.
#[derive(Clone, Copy, Default)]
struct Stats {
    /// User and system CPU seconds.
    cpu: f64,
    /// Resident set, bytes.
    rss: u64,
    /// The kernel's peak resident set (`VmHWM`), bytes.
    peak_rss: u64,
    /// Anonymous resident memory (`RssAnon`), bytes.
    anon: u64,
}

fn proc_stats(pid: u32) -> Stats {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    Stats {
        cpu: ticks / 100.0,
        rss: kib("VmRSS:"),
        peak_rss: kib("VmHWM:"),
        anon: kib("RssAnon:"),
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Samples a process's anonymous memory every 100 ms until stopped; the kernel keeps
/// no peak of it.
struct AnonPeak {
    done: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl AnonPeak {
    fn watch(pid: u32) -> AnonPeak {
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = {
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                let mut peak = 0;
                while !done.load(Ordering::Relaxed) {
                    peak = peak.max(proc_stats(pid).anon);
                    std::thread::sleep(Duration::from_millis(100));
                }
                peak.max(proc_stats(pid).anon)
            })
        };
        AnonPeak { done, thread }
    }

    /// The highest anonymous memory seen, bytes.
    fn stop(self) -> u64 {
        self.done.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or(0)
    }
}

/// Figure lines, printed as they come and kept for `--report`.
static REPORT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Prints a figure line and keeps it for the report.
macro_rules! figure {
    ($($arg:tt)*) => {{
        let line = format!($($arg)*);
        println!("{line}");
        REPORT.lock().unwrap().push(line);
    }};
}

/// Appends this run's figure lines to `path` as a section: date, machine, commit,
/// binary and command, so that every figure in the file says where it came from.
fn write_report(path: &str, args: &Args) {
    use std::io::Write as _;
    let run = |cmd: &str, argv: &[&str]| {
        Command::new(cmd)
            .args(argv)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(0.0, |kib| kib as f64 / (1024.0 * 1024.0));
    let commit = run("git", &["rev-parse", "--short", "HEAD"]);
    let dirty = if run("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty() {
        ""
    } else {
        " (with uncommitted changes)"
    };
    let date = run("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let argv: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let mut section = format!(
        "\n## {date}, commit {commit}{dirty}\n\n- machine: {model}, {cores} cores, {memory:.0} GiB, `{}`\n- binary: `{}`\n- command: `cargo bench --bench e2e -- {}`\n- load shapes: see the scenario list in `benches/e2e.rs`; every line names its scenario\n\n```text\n",
        run("uname", &["-sr"]),
        args.binary,
        argv.join(" "),
    );
    for line in REPORT.lock().unwrap().iter() {
        section.push_str(line);
        section.push('\n');
    }
    section.push_str("```\n");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("cannot open {path}: {e}"));
    file.write_all(section.as_bytes())
        .unwrap_or_else(|e| panic!("cannot write {path}: {e}"));
    println!("e2e: figures appended to {path}");
}

fn start_sidekick(binary: &str, grpc: u16, sink: SocketAddr) -> Child {
    let config = format!(
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:{grpc}\nprocessors:\n  batch:\nexporters:\n  otlp:\n    endpoint: http://{sink}\n    compression: none\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [batch]\n      exporters: [otlp]\n  telemetry:\n    logs:\n      level: warn\n    metrics:\n      address: 127.0.0.1:0\n"
    );
    run_sidekick(binary, "sidekick-bench", &config, &[])
}

/// Starts `binary` with `config` (written to a file named after `name`) and `env`.
fn run_sidekick(binary: &str, name: &str, config: &str, env: &[(&str, &str)]) -> Child {
    let path = std::env::temp_dir().join(format!("{name}-{}.yaml", std::process::id()));
    std::fs::write(&path, config).unwrap();
    Command::new(binary)
        .arg("--config")
        .arg(&path)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start sidekick")
}

fn start_rotel(binary: &str, grpc: u16, sink: SocketAddr) -> Child {
    Command::new(binary)
        .args([
            "start",
            "--exporter",
            "otlp",
            "--otlp-grpc-endpoint",
            &format!("127.0.0.1:{grpc}"),
            "--otlp-http-endpoint",
            &format!("127.0.0.1:{}", free_port()),
            "--otlp-exporter-endpoint",
            &format!("http://{sink}"),
            "--otlp-exporter-compression",
            "none",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start rotel")
}

async fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "collector did not listen on {port}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends `requests` pre-encoded requests over one connection as fast as answers come.
async fn client(port: u16, body: Bytes, next: Arc<AtomicUsize>, requests: usize) {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel).max_encoding_message_size(usize::MAX);
    while next.fetch_add(1, Ordering::Relaxed) < requests {
        loop {
            grpc.ready().await.unwrap();
            let path = http::uri::PathAndQuery::from_static(TracesSignal::GRPC_PATH);
            match grpc
                .unary(tonic::Request::new(vec![body.clone()]), path, RawCodec)
                .await
            {
                Ok(_) => break,
                // Backpressure: the collector asked us to retry.
                Err(s) if s.code() == tonic::Code::Unavailable => {
                    tokio::time::sleep(Duration::from_millis(5)).await
                }
                Err(s) => panic!("export failed: {s}"),
            }
        }
    }
}

fn main() {
    let args = parse_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for scenario in &args.scenarios {
        match scenario.as_str() {
            "traces" => traces(&args, &rt),
            "prw" | "exporter" => {
                for &series in &args.series {
                    metrics::run(&args, &rt, scenario, series);
                }
            }
            "filelog" => filelog(&args, &rt),
            "persistent" => persistent(&args, &rt),
            "churn" => {
                for &series in &args.series {
                    metrics::churn(&args, &rt, series);
                }
            }
            other => panic!(
                "unknown scenario {other}: traces, prw, exporter, filelog, persistent or churn"
            ),
        }
    }
    if let Some(path) = &args.report {
        write_report(path, &args);
    }
}

fn traces(args: &Args, rt: &tokio::runtime::Runtime) {
    let sink = rt.block_on(OtlpSink::start_counting());
    let grpc = free_port();
    let (name, mut child) = match &args.rotel {
        Some(path) => ("rotel", start_rotel(path, grpc, sink.address)),
        None => ("sidekick", start_sidekick(&args.binary, grpc, sink.address)),
    };
    let pid = child.id();
    rt.block_on(wait_for_port(grpc));
    std::thread::sleep(Duration::from_secs(2));
    let idle = proc_stats(pid);

    let requests = args.spans / SPANS_PER_REQUEST;
    let total = requests * SPANS_PER_REQUEST;
    let cpu_before = proc_stats(pid).cpu;
    let anon = AnonPeak::watch(pid);
    let started = Instant::now();
    rt.block_on(async {
        load(grpc, requests).await;
        all_arrive(&sink, total, Duration::from_secs(120)).await;
    });
    let elapsed = started.elapsed();
    let after = proc_stats(pid);
    let peak_anon = anon.stop();
    let _ = child.kill();
    let _ = child.wait();

    let cpu = after.cpu - cpu_before;
    figure!(
        "e2e/{name}/traces_grpc_batch_otlp/{total}: {:.0} spans/s, {:.2} CPU-s per million spans, idle RSS {:.1} MiB (anonymous {:.1}), peak RSS {:.1} MiB (anonymous {:.1}) ({} spans in {:.2}s, {:.2} CPU-s)",
        total as f64 / elapsed.as_secs_f64(),
        cpu / (total as f64 / 1e6),
        mib(idle.rss),
        mib(idle.anon),
        mib(after.peak_rss),
        mib(peak_anon),
        total,
        elapsed.as_secs_f64(),
        cpu
    );
}

/// A traces config: OTLP/gRPC → `batch` → `otlp`, with a persistent queue in `storage`
/// (and `fsync`) when given.
fn traces_config(grpc: u16, backend: &str, admin: u16, storage: Option<(&str, bool)>) -> String {
    let (extension, queue, service) = match storage {
        Some((dir, fsync)) => (
            format!("extensions:\n  file_storage:\n    directory: {dir}\n    fsync: {fsync}\n"),
            "    sending_queue:\n      storage: file_storage\n      sizer: bytes\n      queue_size: 1073741824\n",
            "  extensions: [file_storage]\n",
        ),
        None => (String::new(), "", ""),
    };
    format!(
        "{extension}receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:{grpc}\nprocessors:\n  batch:\nexporters:\n  otlp:\n    endpoint: {backend}\n    compression: none\n    retry_on_failure:\n      initial_interval: 100ms\n      max_interval: 1s\n      max_elapsed_time: 0s\n{queue}service:\n{service}  shutdown_timeout: 2s\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [batch]\n      exporters: [otlp]\n  telemetry:\n    logs:\n      level: warn\n    metrics:\n      address: 127.0.0.1:{admin}\n"
    )
}

/// Sends `requests` requests of [`SPANS_PER_REQUEST`] spans over [`CLIENTS`] connections.
async fn load(grpc: u16, requests: usize) {
    let body = Bytes::from(traces_request(0, 1, SPANS_PER_REQUEST).encode_to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| tokio::spawn(client(grpc, body.clone(), Arc::clone(&next), requests)))
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

/// An empty directory for a persistent queue.
fn fresh_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sidekick-bench-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Waits until `sink` counted `total` items.
async fn all_arrive(sink: &OtlpSink, total: usize, limit: Duration) {
    let arrived = sink.wait_until(limit, |s| s.counted() >= total).await;
    assert!(arrived, "only {} of {total} spans arrived", sink.counted());
}

/// A counter or gauge from Sidekick's admin page (0 when absent).
fn admin_value(admin: u16, series: &str) -> f64 {
    let addr: SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    let (_, page) = http_get(addr, "/metrics");
    page.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

/// The persistent-queue scenario (see the module docs).
fn persistent(args: &Args, rt: &tokio::runtime::Runtime) {
    let requests = args.spans / SPANS_PER_REQUEST;
    let total = requests * SPANS_PER_REQUEST;
    let mut memory_cpu = 0.0;
    for (label, storage) in [
        ("memory", None),
        ("persistent", Some(false)),
        ("persistent_fsync", Some(true)),
    ] {
        let sink = rt.block_on(OtlpSink::start_counting());
        let dir = fresh_dir("queue");
        let (grpc, admin) = (free_port(), free_port());
        let config = traces_config(
            grpc,
            &format!("http://{}", sink.address),
            admin,
            storage.map(|f| (dir.to_str().unwrap(), f)),
        );
        let mut child = run_sidekick(&args.binary, "sidekick-bench-persistent", &config, &[]);
        let pid = child.id();
        rt.block_on(wait_for_port(grpc));
        let cpu_before = proc_stats(pid).cpu;
        let anon = AnonPeak::watch(pid);
        let started = Instant::now();
        rt.block_on(async {
            load(grpc, requests).await;
            all_arrive(&sink, total, Duration::from_secs(120)).await;
        });
        let elapsed = started.elapsed().as_secs_f64();
        let after = proc_stats(pid);
        let peak_anon = anon.stop();
        let cpu = after.cpu - cpu_before;
        let series = "{pipeline=\"traces\"}";
        let fsyncs = admin_value(
            admin,
            &format!("sidekick_persistent_queue_fsyncs_total{series}"),
        );
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(&dir);
        let per_million = cpu / (total as f64 / 1e6);
        if storage.is_none() {
            memory_cpu = per_million;
        }
        // Each request is one record: its body and a 20-byte header.
        let body = traces_request(0, 1, SPANS_PER_REQUEST).encoded_len();
        let disk = if storage.is_some() {
            (body + 20) as f64 / SPANS_PER_REQUEST as f64
        } else {
            0.0
        };
        figure!(
            "e2e/sidekick/traces_{label}_queue/{total}: {:.0} spans/s, {per_million:.2} CPU-s per million spans ({:.2}x the in-memory queue), peak RSS {:.1} MiB (anonymous {:.1}), {disk:.0} disk bytes per span, {:.0} fsyncs/s",
            total as f64 / elapsed,
            per_million / memory_cpu,
            mib(after.peak_rss),
            mib(peak_anon),
            fsyncs / elapsed,
        );
    }

    // Replay: a backlog kept on disk while the backend is down, sent after a restart.
    let sink = rt.block_on(OtlpSink::start_counting());
    let dir = fresh_dir("replay");
    let dead = format!("http://127.0.0.1:{}", free_port());
    let (grpc, admin) = (free_port(), free_port());
    let config = traces_config(grpc, &dead, admin, Some((dir.to_str().unwrap(), false)));
    let mut child = run_sidekick(&args.binary, "sidekick-bench-fill", &config, &[]);
    rt.block_on(async {
        wait_for_port(grpc).await;
        load(grpc, requests).await;
    });
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let status = child.wait().unwrap();
    let on_disk: u64 = std::fs::read_dir(dir.join("queue-traces"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    let (grpc, admin) = (free_port(), free_port());
    let config = traces_config(
        grpc,
        &format!("http://{}", sink.address),
        admin,
        Some((dir.to_str().unwrap(), false)),
    );
    let started = Instant::now();
    let mut child = run_sidekick(&args.binary, "sidekick-bench-replay", &config, &[]);
    let pid = child.id();
    let anon = AnonPeak::watch(pid);
    rt.block_on(all_arrive(&sink, total, Duration::from_secs(300)));
    let elapsed = started.elapsed().as_secs_f64();
    let after = proc_stats(pid);
    let peak_anon = anon.stop();
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    figure!(
        "e2e/sidekick/traces_replay/{total}: {:.0} spans/s from disk to a healthy backend after a restart ({:.1} MiB on disk, stop exit code {:?}), {:.2} CPU-s per million spans, peak RSS {:.1} MiB (anonymous {:.1})",
        total as f64 / elapsed,
        mib(on_disk),
        status.code(),
        after.cpu / (total as f64 / 1e6),
        mib(after.peak_rss),
        mib(peak_anon),
    );
}

/// The file-tailing scenario: the same file and config for Sidekick and, when found,
/// the Collector's contrib build.
fn filelog(args: &Args, rt: &tokio::runtime::Runtime) {
    use std::io::Write;
    let dir = std::env::temp_dir().join(format!("sidekick-bench-filelog-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("app.log");
    {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&log).unwrap());
        for i in 0..args.lines {
            // 200 bytes with the newline, JSON as an app writes it.
            let head = format!(
                "{{\"ts\":{}.{:06},\"level\":\"info\",\"logger\":\"shop.http\",\"seq\":{i},\"status\":200,\"trace_id\":\"{:032x}\",\"msg\":\"GET /api/v1/products/{} done",
                1_700_000_000 + i / 1000,
                i % 1_000_000,
                (i as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834),
                i % 1_000_000
            );
            let pad = 199usize.saturating_sub(head.len() + 2);
            writeln!(w, "{head}{}\"}}", ".".repeat(pad)).unwrap();
        }
    }
    let config = |sink: SocketAddr, telemetry: &str| {
        format!(
            "receivers:\n  filelog:\n    include: [{}]\n    start_at: beginning\nprocessors:\n  batch:\nexporters:\n  otlphttp:\n    endpoint: http://{sink}\n    compression: gzip\nservice:\n  pipelines:\n    logs:\n      receivers: [filelog]\n      processors: [batch]\n      exporters: [otlphttp]\n  telemetry:\n{telemetry}",
            log.display()
        )
    };
    let collector = args.collector.clone().or_else(|| {
        let peers = std::env::var("PEERS").unwrap_or_else(|_| "/tmp/peers".into());
        let p = format!("{peers}/otel_collector/bin/otelcol-contrib_linux_amd64");
        std::path::Path::new(&p).is_file().then_some(p)
    });
    let mut figures = Vec::new();
    for who in ["sidekick", "collector"] {
        let sink = rt.block_on(OtlpSink::start_counting());
        let mut child = match (who, &collector) {
            ("sidekick", _) => run_sidekick(
                &args.binary,
                "sidekick-bench-filelog",
                &config(
                    sink.address,
                    "    logs:\n      level: warn\n    metrics:\n      address: 127.0.0.1:0\n",
                ),
                &[],
            ),
            (_, Some(bin)) => {
                let path = dir.join("collector.yaml");
                std::fs::write(
                    &path,
                    config(sink.address, "    metrics:\n      level: none\n"),
                )
                .unwrap();
                Command::new(bin)
                    .arg("--config")
                    .arg(&path)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("start the collector")
            }
            (_, None) => {
                figure!(
                    "e2e/otelcol-contrib/filelog: skipped (not found; --collector PATH or $PEERS)"
                );
                continue;
            }
        };
        let started = Instant::now();
        let anon = AnonPeak::watch(child.id());
        let arrived =
            rt.block_on(sink.wait_until(Duration::from_secs(300), |s| s.counted() >= args.lines));
        let elapsed = started.elapsed();
        let Stats { cpu, peak_rss, .. } = proc_stats(child.id());
        let peak_anon = anon.stop();
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            arrived,
            "{who}: only {} of {} lines arrived",
            sink.counted(),
            args.lines
        );
        let peak_mib = mib(peak_rss);
        figure!(
            "e2e/{who}/filelog_batch_otlphttp_gzip/{}_lines: {cpu:.2} CPU-s, peak RSS {peak_mib:.1} MiB (anonymous {:.1}), {:.0} lines/s",
            args.lines,
            mib(peak_anon),
            args.lines as f64 / elapsed.as_secs_f64()
        );
        figures.push((cpu, peak_mib));
    }
    if let [(cpu, rss), (c_cpu, c_rss)] = figures[..] {
        figure!(
            "e2e/ratio/filelog: Sidekick uses {:.2}x the Collector's CPU and {:.2}x its peak RSS",
            cpu / c_cpu,
            rss / c_rss
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[path = "e2e/metrics.rs"]
mod metrics;
