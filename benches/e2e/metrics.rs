//! The scrape scenarios: `prw`, `exporter` and `churn`.

use super::*;
use sidekick_testkit::remote_write::RemoteWriteSink;
use sidekick_testkit::target::{ScrapeTarget, PROMETHEUS_TEXT};

/// What one collector did over the window.
struct Figures {
    cpu_per_min: f64,
    rss_end_mib: f64,
    rss_peak_mib: f64,
    anon_end_mib: f64,
    anon_peak_mib: f64,
    samples_per_s: f64,
}

fn write_config(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("{name}-{}.yaml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

fn scrape_config(target: SocketAddr) -> String {
    format!(
        "receivers:\n  prometheus:\n    config:\n      scrape_configs:\n        - job_name: app\n          scrape_interval: 5s\n          static_configs:\n            - targets: [\"{target}\"]\n"
    )
}

const TELEMETRY: &str =
    "  telemetry:\n    logs:\n      level: warn\n    metrics:\n      address: 127.0.0.1:0\n";

fn sidekick_prw(binary: &str, target: SocketAddr, sink: &RemoteWriteSink) -> Child {
    let config = format!(
        "{}processors:\n  batch:\nexporters:\n  prometheusremotewrite:\n    endpoint: {}\nservice:\n  pipelines:\n    metrics:\n      receivers: [prometheus]\n      processors: [batch]\n      exporters: [prometheusremotewrite]\n{TELEMETRY}",
        scrape_config(target),
        sink.url()
    );
    run_sidekick(binary, "sidekick-bench-prw", &config, &[])
}

fn sidekick_exporter(binary: &str, target: SocketAddr, port: u16) -> Child {
    let config = format!(
        "{}processors:\n  k8s_attributes:\n  batch:\nexporters:\n  prometheus:\n    endpoint: 127.0.0.1:{port}\nservice:\n  pipelines:\n    metrics:\n      receivers: [prometheus]\n      processors: [k8s_attributes, batch]\n      exporters: [prometheus]\n{TELEMETRY}",
        scrape_config(target)
    );
    let pod = [
        ("K8S_POD_NAME", "checkout-7d9f8b6c5-x2k9q"),
        ("K8S_NAMESPACE", "shop"),
        ("K8S_POD_UID", "0f9c7a52-3b1e-4c55-9d1e-6f3c2b8a9e10"),
        ("K8S_NODE_NAME", "node-a"),
        ("K8S_POD_IP", "10.0.0.7"),
    ];
    run_sidekick(binary, "sidekick-bench-exporter", &config, &pod)
}

/// The Prometheus agent, or `None` when the binary is not installed.
fn prometheus_agent(
    binary: &str,
    target: SocketAddr,
    sink: &RemoteWriteSink,
) -> Option<(Child, std::path::PathBuf)> {
    let config = format!(
        "global:\n  scrape_interval: 5s\nscrape_configs:\n  - job_name: app\n    static_configs:\n      - targets: [\"{target}\"]\nremote_write:\n  - url: {}\n",
        sink.url()
    );
    let path = write_config("prometheus-agent-bench", &config);
    let storage =
        std::env::temp_dir().join(format!("prometheus-agent-bench-{}", std::process::id()));
    let child = Command::new(binary)
        .arg("--enable-feature=agent")
        .arg(format!("--config.file={}", path.display()))
        .arg(format!("--storage.agent.path={}", storage.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{}", free_port()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    Some((child, storage))
}

/// Watches `pid` for the window: CPU, RSS (sampled every 250 ms), and what
/// `delivered()` counted.
fn measure(pid: u32, window: Duration, delivered: impl Fn() -> u64) -> Figures {
    let cpu0 = proc_stats(pid).cpu;
    let d0 = delivered();
    let started = Instant::now();
    let (mut peak, mut end) = (Stats::default(), Stats::default());
    while started.elapsed() < window {
        std::thread::sleep(Duration::from_millis(100));
        end = proc_stats(pid);
        peak.rss = peak.rss.max(end.rss);
        peak.anon = peak.anon.max(end.anon);
    }
    let cpu1 = proc_stats(pid).cpu;
    let secs = started.elapsed().as_secs_f64();
    Figures {
        cpu_per_min: (cpu1 - cpu0) / secs * 60.0,
        rss_end_mib: mib(end.rss),
        rss_peak_mib: mib(peak.rss),
        anon_end_mib: mib(end.anon),
        anon_peak_mib: mib(peak.anon),
        samples_per_s: (delivered() - d0) as f64 / secs,
    }
}

fn print(scenario: &str, who: &str, series: usize, f: &Figures) {
    figure!(
        "e2e/{who}/{scenario}/{series}_series: {:.2} CPU-s per minute, RSS end {:.1} MiB, peak {:.1} MiB, anonymous end {:.1} MiB, peak {:.1} MiB, {:.0} samples/s delivered (expected {:.0})",
        f.cpu_per_min,
        f.rss_end_mib,
        f.rss_peak_mib,
        f.anon_end_mib,
        f.anon_peak_mib,
        f.samples_per_s,
        series as f64 / 5.0
    );
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

pub fn run(args: &Args, rt: &tokio::runtime::Runtime, scenario: &str, series: usize) {
    let target = rt.block_on(ScrapeTarget::start());
    target.set_page(
        PROMETHEUS_TEXT,
        &sidekick_testkit::gen::prometheus_page(series),
    );
    let sidekick = if scenario == "prw" {
        let sink = rt.block_on(RemoteWriteSink::start_counting());
        let child = sidekick_prw(&args.binary, target.address, &sink);
        std::thread::sleep(args.warmup);
        let f = measure(child.id(), args.window, || sink.samples());
        stop(child);
        f
    } else {
        let port = free_port();
        let child = sidekick_exporter(&args.binary, target.address, port);
        std::thread::sleep(args.warmup);
        // Prometheus's part: scrape the exporter every 5 s, counting its samples.
        let scraped = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let scraper = {
            let (scraped, done) = (Arc::clone(&scraped), Arc::clone(&done));
            std::thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    let exporter = SocketAddr::from(([127, 0, 0, 1], port));
                    let page = http_get(exporter, "/metrics").1;
                    let samples = page.lines().filter(|l| !l.starts_with('#')).count();
                    scraped.fetch_add(samples, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_secs(5));
                }
            })
        };
        let f = measure(child.id(), args.window, || {
            scraped.load(Ordering::Relaxed) as u64
        });
        done.store(true, Ordering::Relaxed);
        let _ = scraper.join();
        stop(child);
        f
    };
    print(scenario, "sidekick", series, &sidekick);
    if scenario != "prw" {
        return;
    }
    let sink = rt.block_on(RemoteWriteSink::start_counting());
    let Some((agent, storage)) = prometheus_agent(&args.prometheus, target.address, &sink) else {
        figure!(
            "e2e/prometheus-agent/{scenario}/{series}_series: skipped ({} not found)",
            args.prometheus
        );
        return;
    };
    std::thread::sleep(args.warmup);
    let f = measure(agent.id(), args.window, || sink.samples());
    stop(agent);
    let _ = std::fs::remove_dir_all(storage);
    print(scenario, "prometheus-agent", series, &f);
    figure!(
        "e2e/ratio/{scenario}/{series}_series: Sidekick uses {:.2}x the agent's CPU, {:.2}x its peak RSS, {:.2}x its peak anonymous memory",
        sidekick.cpu_per_min / f.cpu_per_min,
        sidekick.rss_peak_mib / f.rss_peak_mib,
        sidekick.anon_peak_mib / f.anon_peak_mib
    );
}

/// The page of generation `generation`: nine tenths of `series` as the other
/// scenarios have them, and a tenth gauges whose names are new every generation.
fn churn_page(series: usize, generation: u64) -> String {
    use std::fmt::Write as _;
    let mut page = sidekick_testkit::gen::prometheus_page(series / 10 * 9);
    page.push_str("# HELP churn_gauge Series that come and go.\n# TYPE churn_gauge gauge\n");
    for i in 0..series / 10 {
        let _ = writeln!(page, "churn_gauge{{request_id=\"{generation}-{i}\"}} {i}");
    }
    page
}

pub fn churn(args: &Args, rt: &tokio::runtime::Runtime, series: usize) {
    let target = Arc::new(rt.block_on(ScrapeTarget::start()));
    target.set_page(PROMETHEUS_TEXT, &churn_page(series, 0));
    let sink = rt.block_on(RemoteWriteSink::start_counting());
    let child = sidekick_prw(&args.binary, target.address, &sink);
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pager = {
        let (target, done) = (Arc::clone(&target), Arc::clone(&done));
        std::thread::spawn(move || {
            let mut generation = 0;
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_secs(5));
                generation += 1;
                target.set_page(PROMETHEUS_TEXT, &churn_page(series, generation));
            }
        })
    };
    let mut first = None;
    let mut last = 0.0;
    for minute in 1..=args.minutes {
        let f = measure(child.id(), Duration::from_secs(60), || sink.samples());
        figure!(
            "e2e/sidekick/churn/{series}_series/minute_{minute}: {:.2} CPU-s per minute, RSS end {:.1} MiB, peak {:.1} MiB, anonymous peak {:.1} MiB, {:.0} samples/s delivered",
            f.cpu_per_min, f.rss_end_mib, f.rss_peak_mib, f.anon_peak_mib, f.samples_per_s
        );
        first.get_or_insert(f.rss_peak_mib);
        last = f.rss_peak_mib;
    }
    done.store(true, Ordering::Relaxed);
    let _ = pager.join();
    stop(child);
    figure!(
        "e2e/sidekick/churn/{series}_series: peak RSS {:.1} MiB in the first minute, {:.1} MiB in the last",
        first.unwrap_or(0.0),
        last
    );
}
