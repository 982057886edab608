//! Fetching pages and running each target on its own schedule.
//!
//! Every target is one task with a fixed offset inside the interval (derived from its
//! URL, like Prometheus's jitter), so targets never scrape in lockstep and a slow or dead
//! target delays nobody else. A scrape that overruns `scrape_timeout` is cancelled and
//! reported as down.

use std::borrow::Cow;
use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header;
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, Gauge, Metric, NumberDataPoint, ScopeMetrics,
};
use sidekick_collector::base::off_worker;
use sidekick_collector::component::BuildError;
use sidekick_collector::config::Secret;
use sidekick_collector::payload::{Attrs, Metrics, MetricsSignal};
use sidekick_collector::pipe::{Output, Stop};
use sidekick_collector::telemetry::{Counter, Gauge as GaugeMetric, Telemetry};
use sidekick_collector::util::{error_chain, now_ms};
use sidekick_transport::client::Credentials;
use tracing::{info, warn};

use super::config::{accept_header, body_limit, timing};
use super::series::{SeriesBudget, Tracker};
use super::translate::{self, string_kv, Options, Target};
use super::{Global, ScrapeConfig};
use sidekick_prometheus::parse::Format;
use sidekick_prometheus::relabel::{self, LabelSet, Rule};

/// How often a failing target's error is logged again.
const LOG_EVERY: Duration = Duration::from_secs(300);
/// Pages larger than this are translated off the worker thread (see [`off_worker`]): a
/// 100,000-series page takes tens of milliseconds, which the OTLP requests served on
/// that thread would otherwise wait.
const OFF_WORKER: usize = 256 * 1024;
/// Scrapes of more points than this are encoded off the worker thread, likewise.
const OFF_WORKER_POINTS: usize = 4096;

/// Receiver-wide counters.
pub struct Counters {
    accepted: Counter,
    refused: Counter,
    telemetry: Telemetry,
    receiver: String,
}

impl Counters {
    pub fn new(telemetry: &Telemetry, receiver: &str) -> Self {
        let labels = [("receiver", receiver), ("transport", "http")];
        Counters {
            accepted: telemetry.counter(
                "otelcol_receiver_accepted_metric_points",
                "Items successfully pushed into the pipeline.",
                &labels,
            ),
            refused: telemetry.counter(
                "otelcol_receiver_refused_metric_points",
                "Items that could not be pushed into the pipeline.",
                &labels,
            ),
            telemetry: telemetry.clone(),
            receiver: receiver.to_string(),
        }
    }
}

pub struct ScrapeTarget {
    target: Target,
    url: String,
    client: reqwest::Client,
    /// `Authorization` sent with each scrape.
    auth: Option<http::HeaderValue>,
    /// The formats asked for ([`accept_header`]).
    accept: http::HeaderValue,
    /// When a family the page's protobuf left out, or a sample left out for a timestamp
    /// its series already had, was last logged.
    refusal_logged: std::sync::Mutex<Option<Instant>>,
    interval: Duration,
    timeout: Duration,
    body_limit: usize,
    honor_labels: bool,
    honor_timestamps: bool,
    sample_limit: usize,
    label_limit: usize,
    label_name_length_limit: usize,
    label_value_length_limit: usize,
    metric_relabel: Arc<Vec<Rule>>,
}

/// Applies `relabel_configs` to each static target and builds the ones that remain.
pub fn targets_for(
    global: &Global,
    sc: &ScrapeConfig,
    receiver: &str,
    telemetry: &Telemetry,
) -> Result<Vec<ScrapeTarget>, BuildError> {
    let (interval, timeout) = timing(global, sc);
    let compile =
        |rules: &[sidekick_prometheus::relabel::RuleConfig]| -> Result<Vec<Rule>, BuildError> {
            rules
                .iter()
                .map(|r| r.compile().map_err(|(_, m)| BuildError::new(m)))
                .collect()
        };
    let relabel_rules = compile(&sc.relabel_configs)?;
    let metric_relabel = Arc::new(compile(&sc.metric_relabel_configs)?);
    let body_limit = body_limit(sc).map_err(BuildError::new)?;
    let accept = http::HeaderValue::from_str(&accept_header(sc))
        .map_err(|e| BuildError::new(format!("scrape_protocols: {e}")))?;
    let no_secret = Secret(String::new());
    let credentials = if let Some(b) = &sc.basic_auth {
        Some(Credentials::Basic(b))
    } else if let Some(a) = &sc.authorization {
        Some(match (&a.credentials, &a.credentials_file) {
            (Some(token), _) => Credentials::Token {
                scheme: &a.kind,
                token,
            },
            (None, Some(path)) => Credentials::TokenFile {
                scheme: &a.kind,
                path,
                field: "authorization.credentials_file",
            },
            (None, None) => Credentials::Token {
                scheme: &a.kind,
                token: &no_secret,
            },
        })
    } else if let Some(token) = &sc.bearer_token {
        Some(Credentials::Token {
            scheme: "Bearer",
            token,
        })
    } else {
        sc.bearer_token_file
            .as_deref()
            .map(|path| Credentials::TokenFile {
                scheme: "Bearer",
                path,
                field: "bearer_token_file",
            })
    };
    let auth = credentials.map(|c| c.header()).transpose()?;
    let mut builder = reqwest::Client::builder()
        .user_agent(sidekick_transport::client::USER_AGENT)
        .connect_timeout(timeout)
        .pool_max_idle_per_host(1);
    let tls = sc.tls_config.clone().unwrap_or_default();
    let client_tls = sidekick_transport::tls::ClientTls {
        ca_file: tls.ca_file.as_deref(),
        include_system_roots: false,
        cert_file: tls.cert_file.as_deref(),
        key_file: tls.key_file.as_deref(),
        insecure_skip_verify: tls.insecure_skip_verify == Some(true),
        min_version: None,
        max_version: None,
        field: "tls_config",
        reload_every: Some(sidekick_transport::tls::DEFAULT_RELOAD),
    };
    if sc.scheme == "https" {
        builder = builder.tls_backend_preconfigured(client_tls.client_config()?);
    }
    let client = builder
        .build()
        .map_err(|e| BuildError::new(format!("http client: {e}")))?;

    let mut out = Vec::new();
    for sc_static in &sc.static_configs {
        for address in &sc_static.targets {
            let mut labels: LabelSet<'_> = vec![
                (
                    Cow::Borrowed("__address__"),
                    Cow::Borrowed(address.as_str()),
                ),
                (
                    Cow::Borrowed("__scheme__"),
                    Cow::Borrowed(sc.scheme.as_str()),
                ),
                (
                    Cow::Borrowed("__metrics_path__"),
                    Cow::Borrowed(sc.metrics_path.as_str()),
                ),
                (
                    Cow::Borrowed("__scrape_interval__"),
                    Cow::Owned(format_duration(interval)),
                ),
                (
                    Cow::Borrowed("__scrape_timeout__"),
                    Cow::Owned(format_duration(timeout)),
                ),
                (Cow::Borrowed("job"), Cow::Borrowed(sc.job_name.as_str())),
            ];
            for (k, vs) in &sc.params {
                if let Some(v) = vs.first() {
                    labels.push((
                        Cow::Owned(format!("__param_{k}")),
                        Cow::Borrowed(v.as_str()),
                    ));
                }
            }
            for (k, v) in &sc_static.labels {
                labels.push((Cow::Borrowed(k.as_str()), Cow::Borrowed(v.as_str())));
            }
            if !relabel::apply(&relabel_rules, &mut labels) {
                continue;
            }
            let get = |n: &str| {
                labels
                    .iter()
                    .find(|(k, _)| k == n)
                    .map(|(_, v)| v.to_string())
            };
            let Some(address) = get("__address__") else {
                continue;
            };
            let scheme = get("__scheme__").unwrap_or_else(|| sc.scheme.clone());
            let path = get("__metrics_path__").unwrap_or_else(|| sc.metrics_path.clone());
            let query: Vec<String> = labels
                .iter()
                .filter_map(|(k, v)| Some(format!("{}={}", k.strip_prefix("__param_")?, v)))
                .collect();
            let mut url = format!("{scheme}://{address}{path}");
            if !query.is_empty() {
                url = format!("{url}?{}", query.join("&"));
            }
            let instance = get("instance").unwrap_or_else(|| address.clone());
            let mut final_labels: Vec<(String, String)> = labels
                .iter()
                .filter(|(k, _)| !k.starts_with("__") && k != "instance")
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            final_labels.push(("instance".into(), instance.clone()));
            final_labels.sort();
            let job = get("job").unwrap_or_default();
            let target = ScrapeTarget {
                target: Target {
                    job,
                    instance,
                    scheme,
                    labels: final_labels,
                },
                url,
                client: client.clone(),
                auth: auth.clone(),
                accept: accept.clone(),
                refusal_logged: std::sync::Mutex::new(None),
                interval,
                timeout,
                body_limit,
                honor_labels: sc.honor_labels,
                honor_timestamps: sc.honor_timestamps,
                sample_limit: sc.sample_limit,
                label_limit: sc.label_limit,
                label_name_length_limit: sc.label_name_length_limit,
                label_value_length_limit: sc.label_value_length_limit,
                metric_relabel: Arc::clone(&metric_relabel),
            };
            let _ = (receiver, telemetry);
            out.push(target);
        }
    }
    Ok(out)
}

fn format_duration(d: Duration) -> String {
    if d.as_millis().is_multiple_of(1000) {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// A page being read: one buffer that grows up to `limit` bytes and never past it (no
/// doubling beyond the limit or the announced length, no second copy).
struct Body {
    buf: Vec<u8>,
    limit: usize,
    /// The response's announced length (within the limit), to grow to at most.
    announced: usize,
    /// Set when a write was refused for the limit (to tell it from a gzip error).
    over: bool,
}

impl Body {
    /// `announced`: the response's length, reserved at once up to 64 MiB (a larger page
    /// grows as its bytes arrive, so a false length reserves nothing big).
    fn new(limit: usize, announced: Option<u64>) -> Self {
        let announced = announced
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(0)
            .min(limit);
        Body {
            buf: Vec::with_capacity(announced.min(64 << 20)),
            limit,
            announced,
            over: false,
        }
    }

    fn push(&mut self, chunk: &[u8]) -> Result<(), ScrapeError> {
        if chunk.len() > self.limit - self.buf.len() {
            self.over = true;
            return Err(ScrapeError::TooLarge(self.limit));
        }
        let need = self.buf.len() + chunk.len();
        if need > self.buf.capacity() {
            let mut grown = (self.buf.capacity() * 2).max(64 << 10).min(self.limit);
            if need <= self.announced {
                grown = grown.min(self.announced);
            }
            self.buf.reserve_exact(grown.max(need) - self.buf.len());
        }
        self.buf.extend_from_slice(chunk);
        Ok(())
    }
}

impl std::io::Write for Body {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.push(data)
            .map(|()| data.len())
            .map_err(|e| std::io::Error::other(e.to_string()))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What a failed write into the gzip decoder means: the page is over the limit, or the
/// stream is not gzip.
fn gzip_error(body: &Body, e: std::io::Error) -> ScrapeError {
    if body.over {
        ScrapeError::TooLarge(body.limit)
    } else {
        ScrapeError::Http(format!("cannot decompress gzip page: {e}"))
    }
}

/// Why a scrape failed.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    #[error("no answer within the {0:?} scrape_timeout")]
    Timeout(Duration),
    #[error("{0}")]
    Http(String),
    #[error("server returned HTTP {0}")]
    Status(u16),
    #[error("page is larger than body_size_limit ({0} bytes); stopped reading it")]
    TooLarge(usize),
    #[error("page is not UTF-8")]
    NotUtf8,
    #[error(transparent)]
    Page(#[from] translate::PageError),
}

impl ScrapeError {
    /// A short label for the failure counter.
    pub(super) fn reason(&self) -> &'static str {
        match self {
            ScrapeError::Timeout(_) => "timeout",
            ScrapeError::Http(_) => "connection",
            ScrapeError::Status(_) => "http_status",
            ScrapeError::TooLarge(_) => "body_size_limit",
            ScrapeError::NotUtf8 => "malformed_page",
            ScrapeError::Page(e) => e.reason(),
        }
    }
}

impl ScrapeTarget {
    /// The page's bytes and its `Content-Type`.
    pub(super) async fn fetch(&self) -> Result<(Vec<u8>, String), ScrapeError> {
        let mut req = self
            .client
            .get(&self.url)
            .header(header::ACCEPT, self.accept.clone())
            .header(header::ACCEPT_ENCODING, "gzip")
            .header(
                "X-Prometheus-Scrape-Timeout-Seconds",
                format!("{}", self.timeout.as_secs_f64()),
            );
        if let Some(auth) = &self.auth {
            req = req.header(header::AUTHORIZATION, auth.clone());
        }
        let mut resp = req
            .send()
            .await
            .map_err(|e| ScrapeError::Http(error_chain(&e)))?;
        if resp.status() != http::StatusCode::OK {
            return Err(ScrapeError::Status(resp.status().as_u16()));
        }
        let content_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let gzip = resp
            .headers()
            .get(header::CONTENT_ENCODING)
            .is_some_and(|v| v.as_bytes() == b"gzip");
        // The body is read chunk by chunk into one buffer (gzip inflated on the way), and
        // never past the limit: an announced length over it fails before reading, and
        // the chunk that crosses it ends the read.
        let announced = resp.content_length();
        let body = if gzip {
            let mut inflate = flate2::write::GzDecoder::new(Body::new(self.body_limit, None));
            while let Some(chunk) = resp
                .chunk()
                .await
                .map_err(|e| ScrapeError::Http(error_chain(&e)))?
            {
                if let Err(e) = inflate.write_all(&chunk) {
                    return Err(gzip_error(inflate.get_ref(), e));
                }
            }
            match inflate.finish() {
                Ok(body) => body,
                Err(e) => {
                    return Err(ScrapeError::Http(format!(
                        "cannot decompress gzip page: {e}"
                    )))
                }
            }
        } else {
            if announced.is_some_and(|n| n > self.body_limit as u64) {
                return Err(ScrapeError::TooLarge(self.body_limit));
            }
            let mut body = Body::new(self.body_limit, announced);
            while let Some(chunk) = resp
                .chunk()
                .await
                .map_err(|e| ScrapeError::Http(error_chain(&e)))?
            {
                body.push(&chunk)?;
            }
            body
        };
        drop(resp);
        Ok((body.buf, content_type))
    }

    /// A fetched page as OTLP: the protobuf exposition when the target answered with it,
    /// text otherwise. A protobuf family the page got wrong is left out, counted and
    /// logged; the rest of the page goes on.
    fn translate(
        &self,
        body: Vec<u8>,
        content_type: &str,
        time_ms: i64,
        tracker: &mut Tracker,
        counters: &Counters,
    ) -> Result<translate::Translated, ScrapeError> {
        if !sidekick_prometheus::exposition::is_protobuf(content_type) {
            let text = String::from_utf8(body).map_err(|_| ScrapeError::NotUtf8)?;
            let format = Format::from_content_type(content_type);
            let out = translate::translate(
                text,
                format,
                time_ms,
                &self.target,
                &self.options(),
                tracker,
            )?;
            if out.duplicate_timestamps > 0 {
                self.count_left_out(
                    counters,
                    "sidekick_scrape_duplicate_timestamp_samples",
                    "Samples left out of a scraped page for repeating a timestamp their series already had (the first is kept, as in Prometheus).",
                    out.duplicate_timestamps,
                );
                if self.log_refusal() {
                    warn!(scrape_target = %self.url, samples = out.duplicate_timestamps, "samples repeating a timestamp their series already had on the page were left out; the first of each was kept");
                }
            }
            return Ok(out);
        }
        let out =
            translate::translate_protobuf(&body, time_ms, &self.target, &self.options(), tracker)?;
        if let Some((family, why)) = out.refused.first() {
            self.count_left_out(
                counters,
                "sidekick_scrape_refused_families",
                "Metric families left out of a scraped page, by reason.",
                out.refused.len(),
            );
            if self.log_refusal() {
                warn!(scrape_target = %self.url, families = out.refused.len(), first = %family, reason = why, "metric families of the page left out; the rest was taken");
            }
        }
        Ok(out.translated)
    }

    /// Counts what a page left out, under `reason="invalid_series"`.
    fn count_left_out(&self, counters: &Counters, name: &str, help: &'static str, n: usize) {
        let labels = [
            ("receiver", counters.receiver.as_str()),
            ("job", self.target.job.as_str()),
            ("instance", self.target.instance.as_str()),
            ("reason", "invalid_series"),
        ];
        counters
            .telemetry
            .counter(name, help, &labels)
            .add(n as u64);
    }

    /// Whether to log what a page left out now: at most every [`LOG_EVERY`] a target.
    fn log_refusal(&self) -> bool {
        let mut logged = self
            .refusal_logged
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let due = logged.is_none_or(|at| at.elapsed() >= LOG_EVERY);
        if due {
            *logged = Some(Instant::now());
        }
        due
    }

    /// Where in the interval this target scrapes: a fixed offset from its URL.
    fn offset(&self) -> Duration {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.url.hash(&mut h);
        self.target.job.hash(&mut h);
        let ms = self.interval.as_millis().max(1) as u64;
        Duration::from_millis(h.finish() % ms)
    }

    /// Scrapes until `stop` fires.
    pub async fn run(
        self,
        output: Output<MetricsSignal>,
        counters: Arc<Counters>,
        budget: Arc<SeriesBudget>,
        mut stop: Stop,
    ) {
        let mut tracker = Tracker::with_budget(budget, &self.url);
        let tracked = counters.telemetry.gauge(
            "sidekick_scrape_tracked_series",
            "Series whose start time a scrape target remembers.",
            &[
                ("receiver", &counters.receiver),
                ("job", &self.target.job),
                ("instance", &self.target.instance),
            ],
        );
        let mut failing_since_log: Option<Instant> = None;
        let start = tokio::time::Instant::now() + self.offset();
        let mut ticks = tokio::time::interval_at(start, self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stop.wait() => return,
            }
            let batch = self
                .scrape_once(&mut tracker, &mut failing_since_log, &tracked, &counters)
                .await;
            let n = batch.len() as u64;
            if batch.len() > OFF_WORKER_POINTS {
                // Encoded here, off the worker thread, rather than where the pipeline
                // first needs the bytes.
                off_worker(|| {
                    batch.size();
                    batch.encoded_chunks();
                });
            }
            let wait = self.interval / 2;
            match output.offer(batch, wait).await {
                Ok(()) => counters.accepted.add(n),
                Err(e) => {
                    counters.refused.add(n);
                    counters.telemetry.account().record_dropped(n);
                    warn!(scrape_target = %self.url, points = n, error = %e, "pipeline did not take a scrape; its points are dropped");
                }
            }
        }
    }

    fn options(&self) -> Options<'_> {
        Options {
            honor_labels: self.honor_labels,
            honor_timestamps: self.honor_timestamps,
            metric_relabel: &self.metric_relabel,
            sample_limit: self.sample_limit,
            label_limit: self.label_limit,
            label_name_length_limit: self.label_name_length_limit,
            label_value_length_limit: self.label_value_length_limit,
        }
    }

    /// One scrape, as the batch to send: the page's metrics (or staleness markers when
    /// the target is down) and the `up` / `scrape_*` metrics.
    pub(super) async fn scrape_once(
        &self,
        tracker: &mut Tracker,
        failing: &mut Option<Instant>,
        tracked: &GaugeMetric,
        counters: &Counters,
    ) -> Metrics {
        let started = Instant::now();
        let time_ms = now_ms();
        let result = match tokio::time::timeout(self.timeout, self.fetch()).await {
            Err(_) => Err(ScrapeError::Timeout(self.timeout)),
            Ok(Err(e)) => Err(e),
            Ok(Ok((body, content_type))) if body.len() > OFF_WORKER => {
                off_worker(|| self.translate(body, &content_type, time_ms, tracker, counters))
            }
            Ok(Ok((body, content_type))) => {
                self.translate(body, &content_type, time_ms, tracker, counters)
            }
        };
        let duration = started.elapsed().as_secs_f64();
        let (mut request, mut detached, up, scraped, post, added) = match result {
            Ok(t) => {
                if let Some(since) = failing.take() {
                    info!(scrape_target = %self.url, down_for = ?since.elapsed(), "target is back up");
                }
                (
                    t.request,
                    t.detached,
                    1.0,
                    t.samples_scraped,
                    t.samples_post_relabel,
                    t.series_added,
                )
            }
            Err(e) => {
                counters
                    .telemetry
                    .counter(
                        "sidekick_scrape_failures",
                        "Scrapes that failed (the target counted as down), by reason.",
                        &[
                            ("receiver", &counters.receiver),
                            ("job", &self.target.job),
                            ("instance", &self.target.instance),
                            ("reason", e.reason()),
                        ],
                    )
                    .add(1);
                let log = match failing {
                    None => true,
                    Some(last) => last.elapsed() >= LOG_EVERY,
                };
                if log {
                    warn!(scrape_target = %self.url, job = %self.target.job, error = %e, "scrape failed; target is down");
                    *failing = Some(Instant::now());
                }
                let mut request = translate::empty_request(&self.target);
                let stale = translate::all_stale(tracker, time_ms);
                let (stale, detached) = translate::flatten(stale);
                request.resource_metrics[0].scope_metrics.extend(stale);
                (request, detached, 0.0, 0, 0, 0)
            }
        };
        let synthetic = [
            (
                "up",
                "1 if the target was scraped, 0 if the scrape failed.",
                up,
            ),
            (
                "scrape_duration_seconds",
                "Duration of the scrape.",
                duration,
            ),
            (
                "scrape_samples_scraped",
                "Samples the target exposed.",
                scraped as f64,
            ),
            (
                "scrape_samples_post_metric_relabeling",
                "Samples left after metric relabeling.",
                post as f64,
            ),
            (
                "scrape_series_added",
                "Series not in the previous scrape.",
                added as f64,
            ),
        ];
        let attrs: Vec<_> = self
            .target
            .labels
            .iter()
            .filter(|(k, _)| k != "job" && k != "instance")
            .map(|(k, v)| string_kv(k, v))
            .collect();
        let time = (time_ms.max(0) as u64) * 1_000_000;
        let rm = &mut request.resource_metrics[0];
        // `up` and `scrape_*` belong to no instrumentation scope, whatever scopes the page
        // brought.
        let unscoped = |s: &ScopeMetrics| {
            s.scope
                .as_ref()
                .is_none_or(|sc| sc.name == translate::SCOPE_NAME && sc.version.is_empty())
        };
        let at = match rm.scope_metrics.iter().position(unscoped) {
            Some(at) => at,
            None => {
                rm.scope_metrics.push(translate::default_scope_metrics());
                rm.scope_metrics.len() - 1
            }
        };
        // Their attributes are their own; none detached, at their place among the points.
        let points_before: usize = rm.scope_metrics[..=at]
            .iter()
            .flat_map(|s| &s.metrics)
            .map(translate::point_count)
            .sum();
        if !detached.is_empty() {
            let empty = Arc::new(Attrs::default());
            let tail = detached.split_off(points_before.min(detached.len()));
            detached.extend(std::iter::repeat_n(empty, synthetic.len()));
            detached.extend(tail);
        }
        for (name, help, value) in synthetic {
            rm.scope_metrics[at].metrics.push(Metric {
                name: name.into(),
                description: help.into(),
                unit: if name == "scrape_duration_seconds" {
                    "s".into()
                } else {
                    String::new()
                },
                data: Some(metric::Data::Gauge(Gauge {
                    data_points: vec![NumberDataPoint {
                        attributes: attrs.clone(),
                        time_unix_nano: time,
                        value: Some(number_data_point::Value::AsDouble(value)),
                        ..Default::default()
                    }],
                })),
                ..Default::default()
            });
        }
        tracked.set(tracker.tracked() as i64);
        Metrics::from_detached(request, detached)
    }
}
