//! End-to-end throughput: OTLP traces over gRPC → `batch` → `otlp` exporter (no
//! compression) through a real collector binary, flat out.
//!
//! Reports spans/s, the collector's CPU-seconds per million spans and its peak RSS, and
//! its idle RSS before the load. Runs Sidekick by default; `--rotel PATH` runs Rotel's
//! binary with the equivalent settings for a side-by-side figure.
//!
//! ```text
//! cargo bench --bench e2e                                   # Sidekick (bench profile)
//! cargo bench --bench e2e -- --binary target/release/sidekick --spans 4000000
//! cargo bench --bench e2e -- --rotel $(python3 -c 'import rotel,os;print(...)')
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

/// Spans per request, as the OpenTelemetry SDKs batch by default.
const SPANS_PER_REQUEST: usize = 512;
/// Concurrent client connections.
const CLIENTS: usize = 4;

struct Args {
    binary: String,
    rotel: Option<String>,
    spans: usize,
}

fn parse_args() -> Args {
    let mut args = Args {
        binary: env!("CARGO_BIN_EXE_sidekick").to_string(),
        rotel: None,
        spans: 2_000_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--binary" => args.binary = it.next().expect("--binary PATH"),
            "--rotel" => args.rotel = Some(it.next().expect("--rotel PATH")),
            "--spans" => args.spans = it.next().and_then(|n| n.parse().ok()).expect("--spans N"),
            // Flags cargo bench passes to every bench.
            "--bench" => {}
            other => eprintln!("ignoring argument {other}"),
        }
    }
    args
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// (CPU seconds, RSS bytes, peak RSS bytes) of a process from /proc.
fn proc_stats(pid: u32) -> (f64, u64, u64) {
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
    (ticks / 100.0, kib("VmRSS:"), kib("VmHWM:"))
}

fn start_sidekick(binary: &str, grpc: u16, sink: SocketAddr) -> Child {
    let config = format!(
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:{grpc}\nprocessors:\n  batch:\nexporters:\n  otlp:\n    endpoint: http://{sink}\n    compression: none\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [batch]\n      exporters: [otlp]\n  telemetry:\n    logs:\n      level: warn\n    metrics:\n      address: 127.0.0.1:0\n"
    );
    let path = std::env::temp_dir().join(format!("sidekick-bench-{}.yaml", std::process::id()));
    std::fs::write(&path, config).unwrap();
    Command::new(binary)
        .arg("--config")
        .arg(&path)
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
    let sink = rt.block_on(OtlpSink::start_counting());
    let grpc = free_port();
    let (name, mut child) = match &args.rotel {
        Some(path) => ("rotel", start_rotel(path, grpc, sink.address)),
        None => ("sidekick", start_sidekick(&args.binary, grpc, sink.address)),
    };
    let pid = child.id();
    rt.block_on(wait_for_port(grpc));
    std::thread::sleep(Duration::from_secs(2));
    let (_, idle_rss, _) = proc_stats(pid);

    let body = Bytes::from(traces_request(0, 1, SPANS_PER_REQUEST).encode_to_vec());
    let requests = args.spans / SPANS_PER_REQUEST;
    let total = requests * SPANS_PER_REQUEST;
    let (cpu_before, _, _) = proc_stats(pid);
    let started = Instant::now();
    rt.block_on(async {
        let next = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|_| tokio::spawn(client(grpc, body.clone(), Arc::clone(&next), requests)))
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let arrived = sink
            .wait_until(Duration::from_secs(120), |s| s.counted() >= total)
            .await;
        assert!(arrived, "only {} of {total} spans arrived", sink.counted());
    });
    let elapsed = started.elapsed();
    let (cpu_after, _, peak_rss) = proc_stats(pid);
    let _ = child.kill();
    let _ = child.wait();

    let cpu = cpu_after - cpu_before;
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "e2e/{name}/traces_grpc_batch_otlp/{total}: {:.0} spans/s, {:.2} CPU-s per million spans, idle RSS {:.1} MiB, peak RSS {:.1} MiB ({} spans in {:.2}s, {:.2} CPU-s)",
        total as f64 / elapsed.as_secs_f64(),
        cpu / (total as f64 / 1e6),
        mib(idle_rss),
        mib(peak_rss),
        total,
        elapsed.as_secs_f64(),
        cpu
    );
}
