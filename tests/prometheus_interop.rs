//! Interop with the real Prometheus server (Debian package `prometheus`): Sidekick
//! remote-writes into it, Prometheus scrapes Sidekick's `prometheus` exporter, and
//! `promtool check metrics` accepts the exporter's page and the admin endpoint's
//! self-metrics page. Without the binaries these tests fail under CI and say so loudly
//! elsewhere.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{http_get, runtime, Sidekick, TempFile};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    exponential_histogram_data_point::Buckets, metric::Data, number_data_point,
    ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint,
    Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use sidekick_testkit::free_port;
use sidekick_testkit::promtool::{binary, check_metrics as promtool_check};
use sidekick_testkit::target::{ScrapeTarget, OPENMETRICS};

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn gauge(name: &str, unit: &str, value: f64, attrs: Vec<KeyValue>, flags: u32, t: u64) -> Metric {
    Metric {
        name: name.into(),
        unit: unit.into(),
        data: Some(Data::Gauge(Gauge {
            data_points: vec![NumberDataPoint {
                attributes: attrs,
                time_unix_nano: t,
                flags,
                value: Some(number_data_point::Value::AsDouble(value)),
                ..Default::default()
            }],
        })),
        ..Default::default()
    }
}

fn request(metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", "interop"),
                    kv("service.instance.id", "i-1"),
                    kv("host.name", "h"),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn post_otlp(addr: SocketAddr, req: &ExportMetricsServiceRequest) {
    post_protobuf(addr, "/v1/metrics", &req.encode_to_vec());
}

/// POSTs an OTLP/HTTP protobuf body and expects 200.
fn post_protobuf(addr: SocketAddr, path: &str, body: &[u8]) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(&mut s, &mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
}

/// Sidekick taking OTLP/HTTP metrics to `exporters` (their YAML under `exporters:`),
/// named in the pipeline as `names`.
fn sidekick_from_otlp(exporters: &str, names: &str) -> Sidekick {
    Sidekick::start(&format!(
        "receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:0
exporters:
{exporters}service:
  pipelines:
    metrics:
      receivers: [otlp]
      exporters: [{names}]
"
    ))
}

/// An exponential histogram point of `observations` counted at `scale` as an SDK counts
/// them (bucket `i` holds (2^(i/2^scale), 2^((i+1)/2^scale)]), started a minute ago.
fn exponential_point(
    observations: &[f64],
    scale: i32,
    attributes: Vec<KeyValue>,
) -> ExponentialHistogramDataPoint {
    let index = |v: f64| (v.log2() * f64::powi(2.0, scale)).ceil() as i32 - 1;
    let low = index(observations[0]);
    let high = index(observations[observations.len() - 1]);
    let mut counts = vec![0u64; (high - low + 1) as usize];
    for v in observations {
        counts[(index(*v) - low) as usize] += 1;
    }
    let t = now_nanos();
    ExponentialHistogramDataPoint {
        attributes,
        time_unix_nano: t,
        start_time_unix_nano: t - 60_000_000_000,
        count: observations.len() as u64,
        sum: Some(observations.iter().sum()),
        scale,
        positive: Some(Buckets {
            offset: low,
            bucket_counts: counts,
        }),
        ..Default::default()
    }
}

/// A cumulative exponential histogram in seconds.
fn exponential_metric(name: &str, points: Vec<ExponentialHistogramDataPoint>) -> Metric {
    Metric {
        name: name.into(),
        unit: "s".into(),
        data: Some(Data::ExponentialHistogram(ExponentialHistogram {
            data_points: points,
            aggregation_temporality: 2,
        })),
        ..Default::default()
    }
}

/// PromQL's count and sum of the native histogram `series` are those of `observations`
/// (the sum within `sum_tolerance`, relative), and each of `quantiles` is the
/// observations' within a bucket's `width`.
fn assert_native_histogram(
    prometheus: &Prometheus,
    series: &str,
    observations: &[f64],
    width: f64,
    quantiles: &[f64],
    sum_tolerance: f64,
) {
    let count = prometheus.wait(&format!("histogram_count({series})"));
    assert_eq!(count[0].1, observations.len() as f64, "{series}");
    let sum: f64 = observations.iter().sum();
    let got_sum = prometheus.query(&format!("histogram_sum({series})"))[0].1;
    assert!(
        (got_sum - sum).abs() < sum_tolerance * sum,
        "{series}: {got_sum} vs {sum}"
    );
    for q in quantiles {
        let exact = observations[(q * observations.len() as f64).ceil() as usize - 1];
        let got = prometheus.query(&format!("histogram_quantile({q}, {series})"))[0].1;
        assert!(
            got <= exact * width && got >= exact / width,
            "{series}, quantile {q}: Prometheus says {got}, the observations {exact}"
        );
    }
}

fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

struct Prometheus {
    child: Child,
    address: SocketAddr,
    _config: TempFile,
    data: PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

impl Prometheus {
    fn start(bin: &PathBuf, scrape: SocketAddr) -> Prometheus {
        Self::start_with_job(
            bin,
            &format!(
                "  - job_name: sidekick\n    static_configs:\n      - targets: [\"{scrape}\"]\n"
            ),
        )
    }

    /// Prometheus scraping every second with one `scrape_configs` entry, `job` (YAML
    /// indented as a list item).
    fn start_with_job(bin: &PathBuf, job: &str) -> Prometheus {
        Self::start_with(bin, job, &[])
    }

    /// [`Prometheus::start_with_job`] with more command-line flags.
    fn start_with(bin: &PathBuf, job: &str, flags: &[&str]) -> Prometheus {
        let port = free_port();
        let config = TempFile::new(
            "prometheus.yml",
            &format!("global:\n  scrape_interval: 1s\nscrape_configs:\n{job}"),
        );
        let data = config.0.parent().unwrap().join("data");
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.0.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--web.enable-remote-write-receiver")
            .args(flags)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus");
        let address: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let started = Instant::now();
        while std::net::TcpStream::connect(address).is_err()
            || http_get(address, "/-/ready").0 != 200
        {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "prometheus did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Prometheus {
            child,
            address,
            _config: config,
            data,
        }
    }

    /// The instant vector for `query`: (labels, value) pairs.
    fn query(&self, query: &str) -> Vec<(serde_json::Value, f64)> {
        let (status, body) = http_get(
            self.address,
            &format!("/api/v1/query?query={}", encode(query)),
        );
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["metric"].clone(),
                    r["value"][1].as_str().unwrap().parse().unwrap(),
                )
            })
            .collect()
    }

    /// Waits until `query` returns something.
    fn wait(&self, query: &str) -> Vec<(serde_json::Value, f64)> {
        let started = Instant::now();
        loop {
            let r = self.query(query);
            if !r.is_empty() {
                return r;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "nothing for {query}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

#[test]
fn remote_write_and_scrape_reach_a_real_prometheus() {
    let Some(bin) = binary("prometheus") else {
        return;
    };
    let Some(promtool) = binary("promtool") else {
        return;
    };
    let exporter_port = free_port();
    // Prometheus must exist before Sidekick writes to it; start it with the exporter's
    // address fixed in advance.
    let exporter: SocketAddr = format!("127.0.0.1:{exporter_port}").parse().unwrap();
    let prometheus = Prometheus::start(&bin, exporter);
    let mut sk = Sidekick::start(&format!(
        "receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:0
exporters:
  prometheusremotewrite:
    endpoint: http://{}/api/v1/write
    external_labels:
      cluster: ci
  prometheus:
    endpoint: {exporter}
    enable_open_metrics: true
    include_self_metrics: true
service:
  pipelines:
    metrics:
      receivers: [otlp]
      exporters: [prometheusremotewrite, prometheus]
",
        prometheus.address
    ));
    let t = now_nanos();
    let histogram = Metric {
        name: "job.duration".into(),
        unit: "s".into(),
        description: "How long jobs take.".into(),
        data: Some(Data::Histogram(Histogram {
            data_points: vec![HistogramDataPoint {
                time_unix_nano: t,
                start_time_unix_nano: t - 60_000_000_000,
                count: 6,
                sum: Some(4.2),
                bucket_counts: vec![1, 2, 3],
                explicit_bounds: vec![0.1, 1.0],
                ..Default::default()
            }],
            aggregation_temporality: 2,
        })),
        ..Default::default()
    };
    let counter = Metric {
        name: "jobs.done".into(),
        description: "Jobs finished.".into(),
        data: Some(Data::Sum(Sum {
            data_points: vec![NumberDataPoint {
                time_unix_nano: t,
                start_time_unix_nano: t - 60_000_000_000,
                value: Some(number_data_point::Value::AsInt(42)),
                ..Default::default()
            }],
            aggregation_temporality: 2,
            is_monotonic: true,
        })),
        ..Default::default()
    };
    post_otlp(
        sk.http.unwrap(),
        &request(vec![
            gauge(
                "room.temperature",
                "Cel",
                21.5,
                vec![kv("room", "kitchen")],
                0,
                t,
            ),
            counter,
            histogram,
            gauge("to.vanish", "", 1.0, vec![], 0, t),
        ]),
    );

    // (1) Remote write: exact series, labels and values. Shards send on their own, so
    // each series is waited for, not only the first.
    let temp = prometheus.wait("room_temperature_celsius{job=\"interop\"}");
    assert_eq!(temp.len(), 1);
    assert_eq!(temp[0].1, 21.5);
    let labels = &temp[0].0;
    assert_eq!(labels["instance"], "i-1");
    assert_eq!(labels["room"], "kitchen");
    assert_eq!(labels["cluster"], "ci");
    assert_eq!(
        prometheus.wait("jobs_done_total{job=\"interop\"}")[0].1,
        42.0
    );
    assert_eq!(
        prometheus.wait("job_duration_seconds_bucket{job=\"interop\",le=\"0.1\"}")[0].1,
        1.0
    );
    assert_eq!(
        prometheus.wait("job_duration_seconds_bucket{job=\"interop\",le=\"1\"}")[0].1,
        3.0
    );
    assert_eq!(
        prometheus.wait("job_duration_seconds_bucket{job=\"interop\",le=\"+Inf\"}")[0].1,
        6.0
    );
    assert_eq!(
        prometheus.wait("job_duration_seconds_count{job=\"interop\"}")[0].1,
        6.0
    );
    assert_eq!(
        prometheus.wait("job_duration_seconds_sum{job=\"interop\"}")[0].1,
        4.2
    );
    let q =
        prometheus.wait("histogram_quantile(0.5, job_duration_seconds_bucket{job=\"interop\"})");
    assert!(q[0].1 > 0.1 && q[0].1 <= 1.0, "{q:?}");
    let info = prometheus.wait("target_info{job=\"interop\"}");
    assert_eq!(info[0].0["host_name"], "h");
    assert_eq!(prometheus.wait("to_vanish{job=\"interop\"}").len(), 1);

    // A stale marker ends the series at once instead of after five minutes.
    post_otlp(
        sk.http.unwrap(),
        &request(vec![gauge("to.vanish", "", 0.0, vec![], 1, now_nanos())]),
    );
    let started = Instant::now();
    while !prometheus.query("to_vanish{job=\"interop\"}").is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the stale marker did not end the series"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        prometheus.query("count_over_time(to_vanish{job=\"interop\"}[10m])")[0].1,
        1.0
    );

    // (2) Prometheus scrapes the exporter: the series are there, with the right types.
    let scraped = prometheus.wait("room_temperature_celsius{job=\"sidekick\"}");
    assert_eq!(scraped[0].0["exported_job"], "interop");
    assert_eq!(scraped[0].1, 21.5);
    prometheus.wait("job_duration_seconds_bucket{job=\"sidekick\",le=\"1\"}");
    prometheus.wait("otelcol_exporter_sent_metric_points_total{job=\"sidekick\"}");
    let started = Instant::now();
    let types = loop {
        let (_, body) = http_get(prometheus.address, "/api/v1/metadata");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let ty = |m: &str| v["data"][m][0]["type"].as_str().map(str::to_string);
        let found = (
            ty("jobs_done"),
            ty("job_duration_seconds"),
            ty("room_temperature_celsius"),
        );
        if found.0.is_some() && found.1.is_some() && found.2.is_some() {
            break found;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "metadata incomplete: {body}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(
        types,
        (
            Some("counter".into()),
            Some("histogram".into()),
            Some("gauge".into())
        )
    );

    // (3) promtool accepts the exporter's page.
    let (_, page) = http_get(exporter, "/metrics");
    assert!(page.contains("jobs_done_total"), "{page}");
    promtool_check(&promtool, &page);
    assert!(sk.terminate().success());
}

/// An OTLP exponential histogram of known observations goes through Sidekick's
/// remote-write into a Prometheus with native histograms: its count, sum and quantiles,
/// as PromQL computes them, are those of the observations, within a bucket's width. The
/// buckets here are computed from the observations as an SDK does, at scale 3, and a
/// second copy at scale 10 checks that Sidekick's merging down to Prometheus's finest
/// schema gives the same answers.
#[test]
fn exponential_histograms_reach_a_real_prometheus_as_native_histograms() {
    let Some(bin) = binary("prometheus") else {
        return;
    };
    let prometheus = Prometheus::start_with(&bin, "", &["--enable-feature=native-histograms"]);
    let mut sk = sidekick_from_otlp(
        &format!(
            "  prometheusremotewrite:\n    endpoint: http://{}/api/v1/write\n",
            prometheus.address
        ),
        "prometheusremotewrite",
    );
    // Request durations in seconds: 1 ms to about 2 s, skewed low.
    let observations: Vec<f64> = (1..=500)
        .map(|i| 0.001 * f64::powf(1.0155, i as f64))
        .collect();
    let point =
        |scale: i32| exponential_point(&observations, scale, vec![kv("scale", &scale.to_string())]);
    post_otlp(
        sk.http.unwrap(),
        &request(vec![exponential_metric(
            "request.duration",
            vec![point(3), point(10)],
        )]),
    );
    // Prometheus's finest schema is 8: its buckets are 2^(1/256) ≈ 0.27% wide; at scale
    // 3, 2^(1/8) ≈ 9%.
    for (scale, width) in [("3", 2f64.powf(1.0 / 8.0)), ("10", 2f64.powf(1.0 / 256.0))] {
        let series = format!("request_duration_seconds{{job=\"interop\",scale=\"{scale}\"}}");
        assert_native_histogram(
            &prometheus,
            &series,
            &observations,
            width,
            &[0.5, 0.9, 0.99],
            1e-6,
        );
    }
    assert!(sk.terminate().success());
}

/// Prometheus scrapes the `prometheus` exporter over HTTPS, verifying its certificate
/// against a private CA and sending a bearer token (or, to a second exporter, a Basic
/// password) that the exporter checks; a job with a wrong token sees the target down.
#[test]
fn prometheus_scrapes_the_exporter_over_tls_with_a_bearer_token() {
    let Some(bin) = binary("prometheus") else {
        return;
    };
    let pki = sidekick_testkit::pki::Pki::new("Sidekick interop CA");
    let token = TempFile::new("token", "scrape-token\n");
    let wrong = TempFile::new("wrong", "not-the-token\n");
    let exporter: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let job = |name: &str, credentials: &TempFile| {
        format!(
            "  - job_name: {name}\n    scheme: https\n    tls_config:\n      ca_file: {ca}\n      server_name: localhost\n    authorization:\n      credentials_file: {file}\n    static_configs:\n      - targets: [\"{exporter}\"]\n",
            ca = pki.path("ca.pem"),
            file = credentials.0.display(),
        )
    };
    let basic: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let basic_job = format!(
        "  - job_name: basic\n    scheme: https\n    tls_config:\n      ca_file: {ca}\n      server_name: localhost\n    basic_auth:\n      username: prom\n      password: prom-password\n    static_configs:\n      - targets: [\"{basic}\"]\n",
        ca = pki.path("ca.pem"),
    );
    let prometheus = Prometheus::start_with_job(
        &bin,
        &(job("secure", &token) + &job("intruder", &wrong) + &basic_job),
    );
    let mut sk = Sidekick::start(&format!(
        "extensions:
  bearertokenauth:
    filename: {token}
  basicauth:
    htpasswd:
      inline: \"prom:prom-password\"
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:0
exporters:
  prometheus:
    endpoint: {exporter}
    tls:
      cert_file: {cert}
      key_file: {key}
    auth:
      authenticator: bearertokenauth
  prometheus/basic:
    endpoint: {basic}
    tls:
      cert_file: {cert}
      key_file: {key}
    auth:
      authenticator: basicauth
service:
  extensions: [bearertokenauth, basicauth]
  pipelines:
    metrics:
      receivers: [otlp]
      exporters: [prometheus, prometheus/basic]
",
        token = token.0.display(),
        cert = pki.path("server.pem"),
        key = pki.path("server-key.pem"),
    ));
    post_otlp(
        sk.http.unwrap(),
        &request(vec![gauge(
            "secure.temperature",
            "Cel",
            19.5,
            vec![],
            0,
            now_nanos(),
        )]),
    );
    let scraped = prometheus.wait("secure_temperature_celsius{job=\"secure\"}");
    assert_eq!(scraped[0].1, 19.5);
    assert_eq!(prometheus.wait("up{job=\"secure\"}")[0].1, 1.0);
    assert_eq!(prometheus.wait("up{job=\"intruder\"}")[0].1, 0.0);
    assert_eq!(
        prometheus.wait("secure_temperature_celsius{job=\"basic\"}")[0].1,
        19.5
    );
    assert!(prometheus
        .query("secure_temperature_celsius{job=\"intruder\"}")
        .is_empty());
    assert!(sk.terminate().success());
}

/// The `# TYPE` lines of a text page, and its series as `name{sorted labels}` (no values).
fn page_shape(page: &str) -> (Vec<String>, Vec<String>) {
    let types = page
        .lines()
        .filter(|l| l.starts_with("# TYPE "))
        .map(str::to_string)
        .collect();
    let series = page
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let head = l.rsplit_once(' ').map(|(h, _)| h).unwrap_or(l);
            match head.split_once('{') {
                Some((name, labels)) => {
                    let mut labels: Vec<&str> = labels
                        .trim_end_matches('}')
                        .split("\",")
                        .map(|l| l.trim_end_matches('"'))
                        .collect();
                    labels.sort();
                    format!("{name}{{{}}}", labels.join("|"))
                }
                None => head.to_string(),
            }
        })
        .collect();
    (types, series)
}

/// The admin endpoint's `/metrics` (`:8888`) with real traffic behind it: counters under
/// the Collector's `_total` names, gauges without, `promtool check metrics` satisfied, and
/// the `prometheus` exporter's `include_self_metrics` page showing the very same series.
#[test]
fn admin_self_metrics_page_passes_promtool() {
    let Some(promtool) = binary("promtool") else {
        return;
    };
    let exporter: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut sk = Sidekick::start(&format!(
        "receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:0
processors:
  batch:
    timeout: 50ms
exporters:
  debug:
  prometheus:
    endpoint: {exporter}
    include_self_metrics: true
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [debug]
    metrics:
      receivers: [otlp]
      processors: [batch]
      exporters: [prometheus]
"
    ));
    let http = sk.http.unwrap();
    post_protobuf(
        http,
        "/v1/traces",
        &sidekick_testkit::gen::traces_request(0, 1, 5).encode_to_vec(),
    );
    let t = now_nanos();
    post_otlp(
        http,
        &request(vec![gauge("room.temperature", "Cel", 20.0, vec![], 0, t)]),
    );
    // A refused request, so Sidekick's own counters move too.
    assert_eq!(http_get(http, "/v1/nothing-here").0, 404);

    let sent = "otelcol_exporter_sent_metric_points_total{exporter=\"prometheus\"}";
    let started = Instant::now();
    let page = loop {
        let page = sk.metrics();
        if common::metric_value(&page, sent).unwrap_or(0.0) > 0.0 {
            break page;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no {sent} yet:\n{page}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };

    // Exact names: counters with `_total` on the HELP, TYPE and sample lines, gauges without.
    let value = |series: &str| common::metric_value(&page, series);
    assert_eq!(
        value("otelcol_receiver_accepted_spans_total{receiver=\"otlp\",transport=\"http\"}"),
        Some(5.0),
        "{page}"
    );
    assert_eq!(
        value(
            "otelcol_receiver_accepted_metric_points_total{receiver=\"otlp\",transport=\"http\"}"
        ),
        Some(1.0),
        "{page}"
    );
    assert_eq!(
        value(
            "sidekick_receiver_refused_requests_total{receiver=\"otlp\",reason=\"unknown_path\"}"
        ),
        Some(1.0),
        "{page}"
    );
    for line in [
        "# TYPE otelcol_receiver_accepted_spans_total counter",
        "# TYPE otelcol_exporter_sent_metric_points_total counter",
        "# TYPE otelcol_process_uptime_total counter",
        "# TYPE otelcol_process_cpu_seconds_total counter",
        "# TYPE sidekick_receiver_refused_requests_total counter",
        "# TYPE otelcol_process_memory_rss gauge",
    ] {
        assert!(page.lines().any(|l| l == line), "no {line:?} in\n{page}");
    }
    assert!(
        page.contains("# HELP otelcol_process_uptime_total "),
        "{page}"
    );
    assert!(
        value("otelcol_process_uptime_total").unwrap() > 0.0,
        "{page}"
    );
    assert!(value("otelcol_process_memory_rss").unwrap() > 0.0, "{page}");
    for line in page.lines().filter(|l| l.starts_with("# TYPE ")) {
        let mut words = line.split_whitespace().skip(2);
        let (name, kind) = (words.next().unwrap(), words.next().unwrap());
        match kind {
            "counter" => assert!(name.ends_with("_total"), "{line}"),
            "gauge" => assert!(!name.ends_with("_total"), "{line}"),
            other => panic!("unexpected type {other} in {line}"),
        }
    }
    assert!(!page.contains("otelcol_receiver_accepted_spans{"), "{page}");

    promtool_check(&promtool, &page);

    // One naming: the exporter's page carries every self-metric family and series of the
    // admin page, under the same names (and is itself valid).
    let (_, scrape_page) = http_get(exporter, "/metrics");
    let admin_page = sk.metrics();
    let (admin_types, admin_series) = page_shape(&admin_page);
    let (scrape_types, scrape_series) = page_shape(&scrape_page);
    for t in &admin_types {
        assert!(scrape_types.contains(t), "{t} missing from\n{scrape_page}");
    }
    for s in &admin_series {
        assert!(scrape_series.contains(s), "{s} missing from\n{scrape_page}");
    }
    promtool_check(&promtool, &scrape_page);
    assert!(sk.terminate().success());
}

/// `promtool check metrics` accepts the self-metrics page as the registry renders it,
/// with constant labels, one of which a series sets itself.
#[test]
fn self_metrics_registry_page_passes_promtool_with_constant_labels() {
    let Some(promtool) = binary("promtool") else {
        return;
    };
    let t = sidekick_collector::telemetry::Telemetry::new();
    t.counter(
        "otelcol_receiver_accepted_spans",
        "Number of spans successfully pushed into the pipeline.",
        &[("receiver", "otlp"), ("transport", "grpc")],
    )
    .add(3);
    t.gauge(
        "otelcol_exporter_queue_size",
        "Current size of the retry queue (in batches).",
        &[("exporter", "otlp"), ("data_type", "traces")],
    )
    .set(1);
    t.counter("sidekick_receiver_refused_requests", "Refused.", &[])
        .add(1);
    for consts in [
        Vec::new(),
        vec![
            ("service.name".to_string(), "sidekick".to_string()),
            ("service_version".to_string(), "0.1.0".to_string()),
            ("exporter".to_string(), "clash".to_string()),
        ],
    ] {
        t.set_const_labels(consts);
        promtool_check(&promtool, &t.render());
    }
}

/// A page with native histograms, scraped twice: by Prometheus itself and by Sidekick
/// (which remote-writes what it scraped into the same Prometheus). The two copies of each
/// histogram have the same count, sum and buckets, bucket by bucket, as Prometheus's
/// query API shows them; a classic counter on the same page arrives too.
#[test]
fn native_histograms_scraped_by_sidekick_equal_what_prometheus_scrapes_itself() {
    use sidekick_prometheus::exposition::{
        encode as encode_page, BucketSpan, Counter, Histogram as NativeHist, LabelPair,
        Metric as PageMetric, MetricFamily, MetricType,
    };
    let Some(bin) = binary("prometheus") else {
        return;
    };
    // Observations from 1 ms to about 2 s at schema 3, and a few negative ones and
    // zeros, as a client library would count them.
    let schema = 3;
    let index = |v: f64| (v.abs().log2() * f64::powi(2.0, schema)).ceil() as i64;
    let observations: Vec<f64> = (1..=400)
        .map(|i| 0.001 * f64::powf(1.019, i as f64))
        .chain([-0.5, -0.25, -0.3, 0.0, 0.0])
        .collect();
    let side = |positive: bool| {
        let mut by_index = std::collections::BTreeMap::<i64, i64>::new();
        for v in observations
            .iter()
            .filter(|v| **v != 0.0 && (**v > 0.0) == positive)
        {
            *by_index.entry(index(*v)).or_default() += 1;
        }
        // One span per run of consecutive indexes; deltas between bucket counts.
        let (mut spans, mut deltas) = (Vec::<BucketSpan>::new(), Vec::new());
        let (mut last_index, mut last_count) = (None::<i64>, 0i64);
        for (&i, &c) in &by_index {
            match last_index {
                Some(l) if i == l + 1 => spans.last_mut().unwrap().length += 1,
                Some(l) => spans.push(BucketSpan {
                    offset: (i - l - 1) as i32,
                    length: 1,
                }),
                None => spans.push(BucketSpan {
                    offset: i as i32,
                    length: 1,
                }),
            }
            deltas.push(c - last_count);
            (last_index, last_count) = (Some(i), c);
        }
        (spans, deltas)
    };
    let (positive_span, positive_delta) = side(true);
    let (negative_span, negative_delta) = side(false);
    let sum: f64 = observations.iter().sum();
    let page = encode_page(&[
        MetricFamily {
            name: "app_latency_seconds".into(),
            help: "Request latency.".into(),
            r#type: MetricType::Histogram as i32,
            metric: vec![PageMetric {
                label: vec![LabelPair {
                    name: "path".into(),
                    value: "/checkout".into(),
                }],
                histogram: Some(NativeHist {
                    sample_count: observations.len() as u64,
                    sample_sum: sum,
                    schema,
                    zero_threshold: 1e-6,
                    zero_count: 2,
                    positive_span,
                    positive_delta,
                    negative_span,
                    negative_delta,
                    ..Default::default()
                }),
                ..Default::default()
            }],
            unit: String::new(),
        },
        MetricFamily {
            name: "app_requests_total".into(),
            help: "Requests.".into(),
            r#type: MetricType::Counter as i32,
            metric: vec![PageMetric {
                counter: Some(Counter {
                    value: 405.0,
                    ..Default::default()
                }),
                ..Default::default()
            }],
            unit: String::new(),
        },
    ]);
    let rt = runtime();
    let target = rt.block_on(ScrapeTarget::start());
    target.set_bytes(sidekick_prometheus::exposition::CONTENT_TYPE, page);
    let prometheus = Prometheus::start_with(
        &bin,
        &format!(
            "  - job_name: direct\n    static_configs:\n      - targets: [\"{}\"]\n",
            target.address
        ),
        &["--enable-feature=native-histograms"],
    );
    let mut sk = Sidekick::start(&format!(
        "receivers:
  prometheus:
    config:
      scrape_configs:
        - job_name: via_sidekick
          scrape_interval: 1s
          scrape_native_histograms: true
          static_configs:
            - targets: [\"{}\"]
exporters:
  prometheusremotewrite:
    endpoint: http://{}/api/v1/write
service:
  pipelines:
    metrics:
      receivers: [prometheus]
      exporters: [prometheusremotewrite]
",
        target.address, prometheus.address
    ));
    let histogram = |job: &str| -> serde_json::Value {
        let query = format!("app_latency_seconds{{job=\"{job}\",path=\"/checkout\"}}");
        let started = Instant::now();
        loop {
            let (status, body) = http_get(
                prometheus.address,
                &format!("/api/v1/query?query={}", encode(&query)),
            );
            assert_eq!(status, 200, "{body}");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            if let Some(h) = v["data"]["result"][0].get("histogram") {
                return h[1].clone();
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no native histogram for {query}: {body}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let direct = histogram("direct");
    let via = histogram("via_sidekick");
    assert_eq!(direct["count"], via["count"]);
    assert_eq!(direct["count"].as_str(), Some("405"));
    let (a, b): (f64, f64) = (
        direct["sum"].as_str().unwrap().parse().unwrap(),
        via["sum"].as_str().unwrap().parse().unwrap(),
    );
    assert!((a - b).abs() <= 1e-9 * a.abs(), "{a} vs {b}");
    let buckets = direct["buckets"].as_array().unwrap();
    assert!(buckets.len() > 50, "{direct}");
    assert_eq!(direct["buckets"], via["buckets"]);
    let counter = prometheus.wait("app_requests_total{job=\"via_sidekick\"}");
    assert_eq!(counter[0].1, 405.0);
    let accepts = target.accepts();
    assert!(
        accepts
            .iter()
            .any(|a| a.starts_with("application/vnd.google.protobuf")),
        "{accepts:?}"
    );
    assert!(sk.terminate().success());
}

/// `protobuf_message: io.prometheus.write.v2.Request` against a Prometheus that only
/// speaks remote-write 1.0 (Debian's 2.42 reads a 2.0 request as an empty 1.0 one and
/// answers 204 without the written-counts headers): Sidekick takes that as a refusal,
/// sends the request again as 1.0, says so once, and the samples are in Prometheus.
#[test]
fn remote_write_2_falls_back_to_1_for_a_prometheus_without_it() {
    let Some(bin) = binary("prometheus") else {
        return;
    };
    let prometheus = Prometheus::start_with(&bin, "", &[]);
    let mut sk = sidekick_from_otlp(
        &format!(
            "  prometheusremotewrite:\n    endpoint: http://{}/api/v1/write\n    protobuf_message: io.prometheus.write.v2.Request\n",
            prometheus.address
        ),
        "prometheusremotewrite",
    );
    for (i, value) in [3.0, 4.0].into_iter().enumerate() {
        let metric = gauge(
            "rw2.depth",
            "",
            value,
            vec![kv("round", &i.to_string())],
            0,
            now_nanos(),
        );
        post_otlp(sk.http.unwrap(), &request(vec![metric]));
        let got = prometheus.wait(&format!("rw2_depth{{job=\"interop\",round=\"{i}\"}}"));
        assert_eq!(got[0].1, value);
    }
    sk.wait_for_line("sending 1.0 from now on", 0);
    let switches = sk
        .lines()
        .iter()
        .filter(|l| l.contains("sending 1.0 from now on"))
        .count();
    assert_eq!(switches, 1);
    assert!(sk.terminate().success());
}

/// OpenMetrics pages with lines on the edge of the format, scraped by the real Prometheus
/// and by Sidekick (whose `up` reaches the same Prometheus by remote-write): what
/// Prometheus refuses, Sidekick refuses. Sidekick also checks OpenMetrics' rules on
/// values (a negative counter here), which Prometheus's parser leaves to others; that
/// case is marked, and every other page is up for both or down for both.
#[test]
fn sidekick_refuses_the_openmetrics_pages_prometheus_refuses() {
    let Some(bin) = binary("prometheus") else {
        return;
    };
    let lines = [
        "c_total 1 # {a=\"b\"} 0.5 +Inf",
        "c_total 1 # {a=\"b\"} 0.5 NaN",
        "c_total 1 # {a=\"b\"}0.5",
        "c_total 1 # {a=\"b\"} 0.5 ",
        "c_total 1 # {a=\"b\"}  0.5",
        "c_total  1",
        "c_total 1 ",
        "c_total 1\t{T}",
        // Only Sidekick refuses this one (OpenMetrics: a counter is never negative).
        "c_total -1",
        "c_total 1 # {a=\"b\"} 0.5 {T}.5",
        "c_total 1 {T} # {a=\"b\"} 0.5",
        "c_total 1 {T}.000001\nc_total 2 {T}.000002",
    ];
    // One target a page, with timestamps of now: Prometheus refuses to store old ones.
    let rt = runtime();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let targets: Vec<ScrapeTarget> = lines
        .iter()
        .map(|l| {
            let target = rt.block_on(ScrapeTarget::start());
            let l = l.replace("{T}", &now.to_string());
            target.set_page(OPENMETRICS, &format!("# TYPE c counter\n{l}\n# EOF\n"));
            target
        })
        .collect();
    let jobs = |prefix: &str, indent: &str| -> String {
        targets
            .iter()
            .enumerate()
            .map(|(i, t)| {
                format!(
                    "{indent}- job_name: {prefix}{i}\n{indent}  static_configs:\n{indent}    - targets: [\"{}\"]\n",
                    t.address
                )
            })
            .collect()
    };
    let prometheus = Prometheus::start_with(&bin, &jobs("prom_", "  "), &[]);
    let mut sk = Sidekick::start(&format!(
        "receivers:
  prometheus:
    config:
      global:
        scrape_interval: 1s
        scrape_timeout: 1s
      scrape_configs:
{}exporters:
  prometheusremotewrite:
    endpoint: http://{}/api/v1/write
service:
  pipelines:
    metrics:
      receivers: [prometheus]
      exporters: [prometheusremotewrite]
",
        jobs("sk_", "        "),
        prometheus.address
    ));
    let up = |job: &str| prometheus.wait(&format!("up{{job=\"{job}\"}}"))[0].1;
    for (i, line) in lines.iter().enumerate() {
        let (theirs, ours) = (up(&format!("prom_{i}")), up(&format!("sk_{i}")));
        let expected = if *line == "c_total -1" {
            (1.0, 0.0)
        } else {
            (theirs, theirs)
        };
        assert_eq!(
            (theirs, ours),
            expected,
            "{line:?}: Prometheus up {theirs}, Sidekick up {ours}"
        );
    }
    // Both kinds are among them.
    assert_eq!(up("prom_0"), 0.0);
    assert_eq!(up("prom_9"), 1.0);
    let status = sk.terminate();
    assert!(status.success(), "{status:?}\n{}", sk.lines().join("\n"));
}

/// The `prometheus` exporter fed an OTLP exponential histogram, scraped by two real
/// Prometheus servers: one with native histograms on (it asks for the protobuf format,
/// and gets the histogram as a native one: PromQL's count, sum and quantiles are the
/// observations'), one without (it asks for text and gets a classic histogram at powers
/// of two whose `+Inf` bucket holds every observation). A counter on the same page
/// reaches both.
#[test]
fn the_prometheus_exporter_serves_native_histograms_to_a_prometheus_that_asks() {
    let Some(bin) = binary("prometheus") else {
        return;
    };
    let exporter: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let job =
        format!("  - job_name: app\n    static_configs:\n      - targets: [\"{exporter}\"]\n");
    let native = Prometheus::start_with(&bin, &job, &["--enable-feature=native-histograms"]);
    let classic = Prometheus::start_with(&bin, &job, &[]);
    let mut sk = sidekick_from_otlp(
        &format!("  prometheus:\n    endpoint: {exporter}\n"),
        "prometheus",
    );
    // 300 observations from 1 ms to about 1.6 s, counted at scale 4.
    let observations: Vec<f64> = (1..=300)
        .map(|i| 0.001 * f64::powf(1.025, i as f64))
        .collect();
    let point = exponential_point(&observations, 4, Vec::new());
    let t = point.time_unix_nano;
    let histogram = exponential_metric("rpc.duration", vec![point]);
    let counter = Metric {
        name: "jobs.done".into(),
        data: Some(Data::Sum(Sum {
            data_points: vec![NumberDataPoint {
                time_unix_nano: t,
                start_time_unix_nano: t - 60_000_000_000,
                value: Some(number_data_point::Value::AsInt(42)),
                ..Default::default()
            }],
            aggregation_temporality: 2,
            is_monotonic: true,
        })),
        ..Default::default()
    };
    post_otlp(sk.http.unwrap(), &request(vec![histogram, counter]));

    assert_native_histogram(
        &native,
        "rpc_duration_seconds{job=\"app\"}",
        &observations,
        2f64.powf(1.0 / 16.0),
        &[0.5, 0.9],
        1e-9,
    );
    assert_eq!(native.wait("jobs_done_total{job=\"app\"}")[0].1, 42.0);

    let inf = classic.wait("rpc_duration_seconds_bucket{job=\"app\",le=\"+Inf\"}");
    assert_eq!(inf[0].1, 300.0);
    // Powers of two: the bucket ending at 1 s holds what is at most 1 s.
    let le1 = classic.query("rpc_duration_seconds_bucket{job=\"app\",le=\"1\"}");
    let at_most_1 = observations.iter().filter(|v| **v <= 1.0).count() as f64;
    assert_eq!(le1[0].1, at_most_1);
    assert_eq!(classic.wait("jobs_done_total{job=\"app\"}")[0].1, 42.0);
    assert!(sk.terminate().success());
}
