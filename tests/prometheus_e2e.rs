//! End to end: the real `sidekick` binary scrapes a target whose series change, appear,
//! reset and disappear, and exports to a fake OTLP backend.

mod common;

use std::time::Duration;

use common::{http_get, metric_value, runtime, Sidekick};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point};
use sidekick_testkit::sink::OtlpSink;
use sidekick_testkit::target::{ScrapeTarget, OPENMETRICS, PROMETHEUS_TEXT};

/// One number point as the backend saw it.
#[derive(Debug, Clone)]
struct Seen {
    request: usize,
    metric: String,
    path: Option<String>,
    value: f64,
    stale: bool,
    start: u64,
    time: u64,
}

fn seen(requests: &[ExportMetricsServiceRequest]) -> Vec<Seen> {
    let mut out = Vec::new();
    for (i, r) in requests.iter().enumerate() {
        for m in r
            .resource_metrics
            .iter()
            .flat_map(|rm| &rm.scope_metrics)
            .flat_map(|s| &s.metrics)
        {
            let points = match &m.data {
                Some(Data::Gauge(g)) => &g.data_points,
                Some(Data::Sum(s)) => &s.data_points,
                _ => continue,
            };
            for p in points {
                let path = p
                    .attributes
                    .iter()
                    .find(|kv| kv.key == "path")
                    .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                        Value::StringValue(s) => Some(s.clone()),
                        _ => None,
                    });
                let value = match p.value {
                    Some(number_data_point::Value::AsDouble(v)) => v,
                    Some(number_data_point::Value::AsInt(v)) => v as f64,
                    None => f64::NAN,
                };
                out.push(Seen {
                    request: i,
                    metric: m.name.clone(),
                    path,
                    value,
                    stale: p.flags & 1 != 0,
                    start: p.start_time_unix_nano,
                    time: p.time_unix_nano,
                });
            }
        }
    }
    out
}

fn page(a: f64, b: Option<f64>) -> String {
    let mut p = String::from("# HELP req_total Requests.\n# TYPE req_total counter\n");
    p.push_str(&format!("req_total{{path=\"/a\"}} {a}\n"));
    if let Some(b) = b {
        p.push_str(&format!("req_total{{path=\"/b\"}} {b}\n"));
    }
    p.push_str("# TYPE temperature_celsius gauge\ntemperature_celsius 21.5\n");
    p
}

#[test]
fn scrapes_changes_resets_and_staleness_reach_the_backend() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = runtime();
    let sink = rt.block_on(OtlpSink::start());
    let target = rt.block_on(ScrapeTarget::start());
    target.set_page(PROMETHEUS_TEXT, &page(10.0, Some(5.0)));
    let mut sk = Sidekick::start(&format!(
        "receivers:
  prometheus:
    config:
      scrape_configs:
        - job_name: app
          scrape_interval: 1s
          scrape_timeout: 500ms
          static_configs:
            - targets: [\"{}\"]
              labels:
                team: checkout
exporters:
  otlp:
    endpoint: {}
service:
  pipelines:
    metrics:
      receivers: [prometheus]
      exporters: [otlp]
",
        target.address,
        sink.url()
    ));
    let wait = |what: &str, f: &dyn Fn(&[Seen]) -> bool| {
        let ok = rt.block_on(sink.wait_until(Duration::from_secs(15), |s| f(&seen(&s.metrics()))));
        assert!(
            ok,
            "timed out waiting for {what}: {:#?}",
            seen(&sink.metrics())
        );
    };
    let point = |all: &[Seen], metric: &str, path: Option<&str>, value: f64| -> Option<Seen> {
        all.iter()
            .rev()
            .find(|s| {
                s.metric == metric && s.path.as_deref() == path && s.value == value && !s.stale
            })
            .cloned()
    };

    // First scrape: both series, start = time, up = 1.
    wait("the first scrape", &|all| {
        point(all, "req_total", Some("/a"), 10.0).is_some()
    });
    let all = seen(&sink.metrics());
    let first = point(&all, "req_total", Some("/a"), 10.0).unwrap();
    assert_eq!(first.start, first.time);
    assert!(point(&all, "up", None, 1.0).is_some());
    assert!(point(&all, "temperature_celsius", None, 21.5).is_some());
    let added = all
        .iter()
        .find(|s| s.metric == "scrape_series_added" && s.request == first.request)
        .unwrap();
    assert_eq!(added.value, 3.0);

    // /a grows, /b disappears: /a keeps its start; /b gets one staleness marker.
    target.set_page(PROMETHEUS_TEXT, &page(15.0, None));
    wait("/a at 15", &|all| {
        point(all, "req_total", Some("/a"), 15.0).is_some()
    });
    let all = seen(&sink.metrics());
    let grown = point(&all, "req_total", Some("/a"), 15.0).unwrap();
    assert_eq!(grown.start, first.start);
    let stale: Vec<&Seen> = all.iter().filter(|s| s.stale).collect();
    assert_eq!(stale.len(), 1, "{stale:#?}");
    assert_eq!(stale[0].path.as_deref(), Some("/b"));
    assert_eq!(stale[0].request, grown.request);

    // The app restarts: /a falls to 2, a new stream starts after the last point.
    target.set_page(OPENMETRICS, &format!("{}# EOF\n", page(2.0, None)));
    wait("/a reset", &|all| {
        point(all, "req_total", Some("/a"), 2.0).is_some()
    });
    let all = seen(&sink.metrics());
    let reset = point(&all, "req_total", Some("/a"), 2.0).unwrap();
    let before = all
        .iter()
        .filter(|s| {
            s.metric == "req_total" && s.path.as_deref() == Some("/a") && s.request < reset.request
        })
        .map(|s| s.time)
        .max()
        .unwrap();
    assert!(
        reset.start > before && reset.start < reset.time,
        "start {} after {} before {}",
        reset.start,
        before,
        reset.time
    );
    assert_eq!(
        all.iter().filter(|s| s.stale).count(),
        1,
        "still only the one marker for /b"
    );

    // The target fails: up = 0 and every series it had gets a marker, once.
    target.set_status(500);
    wait("up = 0", &|all| point(all, "up", None, 0.0).is_some());
    let all = seen(&sink.metrics());
    let down = point(&all, "up", None, 0.0).unwrap();
    let markers: Vec<&Seen> = all
        .iter()
        .filter(|s| s.stale && s.request == down.request)
        .collect();
    let mut names: Vec<&str> = markers.iter().map(|s| s.metric.as_str()).collect();
    names.sort();
    assert_eq!(names, vec!["req_total", "temperature_celsius"]);
    // The line is written before `up` is sent, but read from Sidekick's stderr by
    // another thread: give that thread a moment on a busy machine.
    let logged = |log: &[String]| {
        log.iter()
            .any(|l| l.contains("scrape failed") && l.contains("HTTP 500"))
    };
    let waited = std::time::Instant::now();
    while !logged(&sk.lines()) && waited.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = sk.lines();
    assert!(logged(&log), "{}", log.join("\n"));

    // Still down one scrape later: no second marker.
    let scrapes = target.scrapes();
    let ok = rt.block_on(async {
        for _ in 0..50 {
            if target.scrapes() > scrapes && sink.metrics().len() > down.request + 1 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    });
    assert!(ok);
    let all = seen(&sink.metrics());
    assert_eq!(
        all.iter()
            .filter(|s| s.stale && s.request > down.request)
            .count(),
        0
    );

    let page = sk.metrics();
    assert!(
        metric_value(
            &page,
            "otelcol_receiver_accepted_metric_points_total{receiver=\"prometheus\",transport=\"http\"}"
        )
        .unwrap()
            > 0.0
    );
    assert!(sk.terminate().success());
}

#[test]
fn a_slow_target_does_not_delay_others_and_times_out() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = runtime();
    let sink = rt.block_on(OtlpSink::start());
    let fast = rt.block_on(ScrapeTarget::start());
    let slow = rt.block_on(ScrapeTarget::start());
    fast.set_page(PROMETHEUS_TEXT, "fast_metric 1\n");
    slow.set_page(PROMETHEUS_TEXT, "slow_metric 1\n");
    slow.set_delay(Duration::from_secs(3));
    let mut sk = Sidekick::start(&format!(
        "receivers:
  prometheus:
    config:
      global:
        scrape_interval: 1s
        scrape_timeout: 300ms
      scrape_configs:
        - job_name: fast
          static_configs: [{{targets: [\"{}\"]}}]
        - job_name: slow
          static_configs: [{{targets: [\"{}\"]}}]
exporters:
  otlp:
    endpoint: {}
service:
  pipelines:
    metrics:
      receivers: [prometheus]
      exporters: [otlp]
",
        fast.address,
        slow.address,
        sink.url()
    ));
    // Within ~3s the fast target is scraped several times while the slow one times out.
    let ok = rt.block_on(sink.wait_until(Duration::from_secs(10), |s| {
        seen(&s.metrics())
            .iter()
            .filter(|p| p.metric == "fast_metric")
            .count()
            >= 3
    }));
    assert!(ok);
    let all = seen(&sink.metrics());
    assert!(all.iter().all(|p| p.metric != "slow_metric"));
    assert!(all.iter().any(|p| p.metric == "up" && p.value == 0.0));
    assert!(
        sk.lines().iter().any(|l| l.contains("scrape_timeout")),
        "{}",
        sk.lines().join("\n")
    );
    assert!(sk.terminate().success());
}

/// A scraped series comes back out of the `prometheus` exporter with exactly the labels
/// Prometheus itself would store scraping the app: the page's own, the target's static
/// labels, `job` and `instance`; no scope labels Sidekick made up.
#[test]
fn scraped_series_keep_exactly_their_labels_through_the_exporter() {
    let rt = runtime();
    let target = rt.block_on(ScrapeTarget::start());
    target.set_page(
        PROMETHEUS_TEXT,
        "# TYPE req counter\nreq_total{path=\"/a\",code=\"200\"} 7\n",
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sk = Sidekick::start(&format!(
        "receivers:
  prometheus:
    config:
      scrape_configs:
        - job_name: app
          scrape_interval: 200ms
          static_configs:
            - targets: [\"{}\"]
              labels:
                team: checkout
exporters:
  prometheus:
    endpoint: 127.0.0.1:{port}
service:
  pipelines:
    metrics:
      receivers: [prometheus]
      exporters: [prometheus]
",
        target.address
    ));
    let exporter: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let started = std::time::Instant::now();
    let line = loop {
        let (_, page) = http_get(exporter, "/metrics");
        if let Some(l) = page.lines().find(|l| l.starts_with("req_total{")) {
            break l.to_string();
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{page}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let instance = target.address.to_string();
    assert_eq!(
        line,
        format!("req_total{{code=\"200\",instance=\"{instance}\",job=\"app\",path=\"/a\",team=\"checkout\"}} 7")
    );
    drop(sk);
}
