//! The `prometheusremotewrite` exporter: metrics to anything that speaks Prometheus
//! remote-write (Prometheus with `--web.enable-remote-write-receiver`, Mimir, Thanos,
//! VictoriaMetrics, …): 1.0 by default, 2.0 with
//! `protobuf_message: io.prometheus.write.v2.Request`. A receiver that answers 2.0 with
//! 415 (it does not take it), or with a 2xx but none of 2.0's written-counts headers (a
//! 1.0 receiver that read the request as an empty 1.0 one, as the spec warns), gets 1.0
//! from then on: the request is sent again as 1.0 at once, and the switch is logged once.
//!
//! ```yaml
//! exporters:
//!   prometheusremotewrite:
//!     endpoint: http://prometheus:9090/api/v1/write
//!     external_labels:
//!       cluster: prod-eu
//! ```
//!
//! Each batch is translated once ([`crate::prom`], `sidekick-prometheus`'s OTLP → Prometheus translation), split into requests of at most
//! `max_batch_size_bytes`, snappy-compressed and sent with the protocol's headers.
//! Failures follow the spec: 5xx and 429 are retried (honouring `Retry-After`) within
//! `retry_on_failure`; other 4xx are never retried, and their samples are logged and
//! counted as dropped. Series are sharded by their labels over `remote_write_queue.
//! num_consumers` concurrent senders and batches go out one after another, so the
//! samples of one series are always sent in order. Delta sums and histograms are
//! accumulated into cumulative series rather than dropped.

pub use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::de::IgnoredAny;
use serde::Deserialize;
use sidekick_collector::component::{
    BoxFuture, BuildContext, BuildError, ExporterConfig, ExporterParts, FieldError,
};
use sidekick_collector::config::{Duration as ConfigDuration, Secret, Signal as SignalKind};
use sidekick_collector::exporter::{
    ClientRules, ClientSettings, Delivered, Export, ExportError, ExportSettings, Prepared,
    PreparedRequest, QueueSettings, RetrySettings,
};
use sidekick_collector::payload::{Metrics, MetricsSignal};
use sidekick_collector::pipe::Sizer;
use sidekick_collector::telemetry::{Counter, LogBurst};
use tracing::warn;

use crate::collector_options;
use crate::prom::{self, Accumulator, ResourceToTelemetry, Settings, TranslationStrategy};
use sidekick_prometheus::prompb as proto;
use sidekick_transport::client::{header_map, http_client, BasicAuth, Credentials, RequestHeaders};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `endpoint`, `tls`, `headers`, `proxy_url`, `timeout` (default 5s, per request),
    /// `auth`, `sending_queue` (the persistent queue's keys only: sending is set by
    /// `remote_write_queue`) and `retry_on_failure` (default: start at 50ms, at most
    /// 200ms apart, give up after 1m). `endpoint` is the remote-write URL, e.g.
    /// `http://prometheus:9090/api/v1/write`; the protocol's own headers cannot be
    /// overridden.
    #[serde(skip)]
    pub client: ClientSettings,
    pub basic_auth: Option<BasicAuth>,
    /// `Authorization: Bearer <token>`.
    pub bearer_token: Option<Secret>,
    /// Read the bearer token from this file (e.g. a mounted Secret).
    pub bearer_token_file: Option<String>,
    /// Labels added to every series that does not have them.
    pub external_labels: BTreeMap<String, String>,
    /// Prefix for every metric name.
    pub namespace: String,
    pub translation_strategy: TranslationStrategy,
    pub resource_to_telemetry_conversion: ResourceToTelemetry,
    pub target_info: TargetInfo,
    /// Send type, help and unit as remote-write metadata. Default true.
    pub send_metadata: bool,
    /// Largest request body before compression. Default 3,000,000.
    pub max_batch_size_bytes: usize,
    /// Only `snappy`, which the protocol requires.
    pub compression: String,
    pub remote_write_queue: RemoteWriteQueue,
    /// Deprecated Collector switch; `false` means `UnderscoreEscapingWithoutSuffixes`.
    pub add_metric_suffixes: Option<bool>,
    /// `prometheus.WriteRequest` (remote-write 1.0, the default) or
    /// `io.prometheus.write.v2.Request` (2.0).
    pub protobuf_message: Option<String>,
    pub write_buffer_size: Option<usize>,
    pub max_batch_request_parallelism: Option<usize>,
    /// The Collector's write-ahead log; Sidekick has no such option yet.
    pub wal: Option<IgnoredAny>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TargetInfo {
    pub enabled: bool,
}

impl Default for TargetInfo {
    fn default() -> Self {
        TargetInfo { enabled: true }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemoteWriteQueue {
    pub enabled: bool,
    /// Batches waiting to be sent, when set (as in the Collector). Unset, the queue
    /// holds 4 MiB of encoded batches, like every exporter's: counting batches alone
    /// lets a slow backend pile up scrapes of any size in memory.
    pub queue_size: Option<usize>,
    /// Concurrent senders, each with its own share of the series. Default 5.
    pub num_consumers: usize,
    /// Request metadata keys that split the queue in the Collector (multi-tenant
    /// gateways); Sidekick's requests carry no client metadata.
    pub include_metadata_keys: Option<Vec<String>>,
}

impl Default for RemoteWriteQueue {
    fn default() -> Self {
        RemoteWriteQueue {
            enabled: true,
            queue_size: None,
            num_consumers: 5,
            include_metadata_keys: None,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            client: ClientSettings {
                retry_on_failure: RetrySettings {
                    enabled: true,
                    initial_interval: ConfigDuration::from_millis(50),
                    max_interval: ConfigDuration::from_millis(200),
                    max_elapsed_time: ConfigDuration::from_secs(60),
                    multiplier: 1.5,
                    randomization_factor: 0.5,
                },
                ..ClientSettings::default()
            },
            basic_auth: None,
            bearer_token: None,
            bearer_token_file: None,
            external_labels: BTreeMap::new(),
            namespace: String::new(),
            translation_strategy: TranslationStrategy::default(),
            resource_to_telemetry_conversion: ResourceToTelemetry::default(),
            target_info: TargetInfo::default(),
            send_metadata: true,
            max_batch_size_bytes: 3_000_000,
            compression: "snappy".into(),
            remote_write_queue: RemoteWriteQueue::default(),
            add_metric_suffixes: None,
            protobuf_message: None,
            write_buffer_size: None,
            max_batch_request_parallelism: None,
            wal: None,
        }
    }
}

/// Headers the protocol fixes.
const RESERVED_HEADERS: [&str; 4] = [
    "content-encoding",
    "content-type",
    "x-prometheus-remote-write-version",
    "user-agent",
];

impl ExporterConfig for Config {
    const SIGNALS: &'static [SignalKind] = &[SignalKind::Metrics];
    const CLIENT: Option<ClientRules> = Some(ClientRules {
        reserved_headers: &RESERVED_HEADERS,
        no_proxy: None,
        sends_with: Some("remote_write_queue"),
    });

    fn client(&self) -> Option<&ClientSettings> {
        Some(&self.client)
    }

    fn client_mut(&mut self) -> Option<&mut ClientSettings> {
        Some(&mut self.client)
    }

    fn endpoints(&self) -> Vec<Result<String, FieldError>> {
        let endpoint = &self.client.endpoint;
        let target = if endpoint.is_empty() {
            Err(FieldError::new(
                "endpoint",
                "endpoint is required, e.g. http://prometheus:9090/api/v1/write",
            ))
        } else if !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
            || reqwest::Url::parse(endpoint).is_err()
        {
            Err(FieldError::new(
                "endpoint",
                format!("invalid URL \"{endpoint}\""),
            ))
        } else {
            Ok(endpoint.clone())
        };
        vec![target]
    }

    fn credential_fields(&self) -> Vec<&'static str> {
        [
            ("basic_auth", self.basic_auth.is_some()),
            ("bearer_token", self.bearer_token.is_some()),
            ("bearer_token_file", self.bearer_token_file.is_some()),
        ]
        .into_iter()
        .filter_map(|(field, set)| set.then_some(field))
        .collect()
    }

    fn validate(&self) -> Vec<FieldError> {
        let mut out = Vec::new();
        if self.compression != "snappy" {
            out.push(FieldError::new(
                "compression",
                "remote-write requires snappy",
            ));
        }
        if self.max_batch_size_bytes < 1024 {
            out.push(FieldError::new(
                "max_batch_size_bytes",
                "must be at least 1024",
            ));
        }
        if self.remote_write_queue.num_consumers == 0 {
            out.push(FieldError::new(
                "remote_write_queue.num_consumers",
                "must be at least 1",
            ));
        }
        if let Err(e) = self.protocol() {
            out.push(FieldError::new("protobuf_message", e));
        }
        if self.max_batch_request_parallelism.is_some() {
            out.push(FieldError::no_effect(
                "max_batch_request_parallelism",
                "requests go out per series shard, one at a time each, to keep per-series order; set remote_write_queue.num_consumers for more shards",
            ));
        }
        if self.remote_write_queue.include_metadata_keys.is_some() {
            out.push(FieldError::no_effect(
                "remote_write_queue.include_metadata_keys",
                "requests carry no client metadata in Sidekick",
            ));
        }
        if self.wal.is_some() {
            out.push(FieldError::new(
                "wal",
                "the remote-write WAL is not supported: Sidekick keeps its queue in memory (bounded, with retries)",
            ));
        }
        out.extend(collector_options::buffer_sizes(
            None,
            self.write_buffer_size,
        ));
        if self.credential_fields().len() + usize::from(self.client.auth.is_some()) > 1 {
            out.push(FieldError::new(
                "bearer_token",
                "use only one of basic_auth, bearer_token, bearer_token_file and auth",
            ));
        }
        for k in self.external_labels.keys() {
            if prom::label_name(k) != *k {
                out.push(FieldError::new(
                    format!("external_labels.{k}"),
                    "not a valid Prometheus label name",
                ));
            }
        }
        out
    }

    fn export_settings(&self) -> ExportSettings {
        ExportSettings {
            // Per request: the helper sends the prepared requests, a shard in order.
            timeout: self.client.timeout.get(),
            queue: QueueSettings {
                enabled: true,
                num_consumers: 1,
                sizer: match (
                    self.remote_write_queue.enabled,
                    self.remote_write_queue.queue_size,
                ) {
                    (true, None) => None,
                    _ => Some(Sizer::Requests),
                },
                queue_size: match (
                    self.remote_write_queue.enabled,
                    self.remote_write_queue.queue_size,
                ) {
                    (false, _) => Some(1),
                    (true, n) => n,
                },
                ..QueueSettings::default()
            },
            retry: self.client.retry_on_failure.clone(),
            // Requests are cut below max_batch_size_bytes by the exporter itself.
            max_request_bytes: None,
            persist: self.client.sending_queue.persist(),
        }
    }

    fn build(self, ctx: &BuildContext) -> Result<ExporterParts, BuildError> {
        let protocol = self.protocol().map_err(BuildError::new)?;
        let id = ctx.id.to_string();
        let written = |kind: &str| {
            ctx.telemetry.counter(
                "sidekick_exporter_remote_write_written",
                "What a remote-write 2.0 receiver reported writing (its X-Prometheus-Remote-Write-*-Written headers), by kind.",
                &[("exporter", id.as_str()), ("kind", kind)],
            )
        };
        let auth = collector_options::authenticator(ctx, &self.client.auth)?;
        let credentials = match (
            &self.basic_auth,
            &self.bearer_token,
            &self.bearer_token_file,
        ) {
            (Some(b), _, _) => Some(Credentials::Basic(b)),
            (None, Some(t), _) => Some(Credentials::Token {
                scheme: "Bearer",
                token: t,
            }),
            (None, None, Some(f)) => Some(Credentials::TokenFile {
                scheme: "Bearer",
                path: f,
                field: "bearer_token_file",
            }),
            (None, None, None) => None,
        };
        let headers = RequestHeaders::new(header_map(&self.client.headers, credentials)?, auth);
        let client = http_client(
            self.client.tls.rustls_config()?,
            self.client.proxy_url.as_deref(),
        )?;
        let settings = Settings {
            strategy: match self.add_metric_suffixes {
                Some(false) => TranslationStrategy::UnderscoreEscapingWithoutSuffixes,
                _ => self.translation_strategy,
            },
            namespace: self.namespace.clone(),
            resource_to_telemetry: self.resource_to_telemetry_conversion.enabled,
            extra_labels: self
                .external_labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            target_info: self.target_info.enabled,
            native_histograms: true,
        };
        let exporter = Arc::new(RemoteWriteExporter {
            client,
            endpoint: self.client.endpoint.clone(),
            headers,
            settings,
            send_metadata: self.send_metadata,
            max_bytes: self.max_batch_size_bytes,
            shards: self.remote_write_queue.num_consumers.max(1),
            accumulator: Mutex::new(Accumulator::default()),
            apart: ctx.telemetry.counter(
                "sidekick_exporter_remote_write_samples_apart",
                "Samples sent in requests of their own because their timestamps are older than an hour.",
                &[("exporter", &ctx.id.to_string())],
            ),
            apart_log: LogBurst::new(Duration::from_secs(60)),
            v2: AtomicBool::new(protocol == Protocol::V2),
            written: [written("samples"), written("histograms"), written("exemplars")],
        });
        Ok(ExporterParts {
            metrics: Some(exporter),
            ..ExporterParts::default()
        })
    }
}

pub struct RemoteWriteExporter {
    client: reqwest::Client,
    endpoint: String,
    headers: RequestHeaders,
    settings: Settings,
    send_metadata: bool,
    max_bytes: usize,
    shards: usize,
    accumulator: Mutex<Accumulator>,
    /// Samples sent apart for their old timestamps.
    apart: Counter,
    apart_log: LogBurst,
    /// Writing remote-write 2.0: configured, and not yet refused with 415.
    v2: AtomicBool,
    /// Samples, histograms and exemplars a 2.0 receiver reported written.
    written: [Counter; 3],
}

impl Config {
    /// The message `protobuf_message` names.
    fn protocol(&self) -> Result<Protocol, String> {
        match self.protobuf_message.as_deref() {
            None | Some("prometheus.WriteRequest") => Ok(Protocol::V1),
            Some("io.prometheus.write.v2.Request") => Ok(Protocol::V2),
            Some(other) => Err(format!(
                "unknown message \"{other}\": write prometheus.WriteRequest (remote-write 1.0) or io.prometheus.write.v2.Request (2.0)"
            )),
        }
    }
}

/// [`PreparedRequest::encoding`] of a 2.0 body.
const V2: u8 = 2;

/// The written-counts headers of a remote-write 2.0 answer.
const WRITTEN: [&str; 3] = [
    "x-prometheus-remote-write-samples-written",
    "x-prometheus-remote-write-histograms-written",
    "x-prometheus-remote-write-exemplars-written",
];

fn metadata(families: &[prom::Family]) -> Vec<proto::MetricMetadata> {
    families
        .iter()
        .map(|f| proto::MetricMetadata {
            r#type: encode::metadata_type(f.kind),
            metric_family_name: f.name.clone(),
            help: f.help.clone(),
            unit: f.unit.clone(),
        })
        .collect()
}

impl RemoteWriteExporter {
    /// Sends one prepared request; a 2.0 body that the receiver refuses with 415 is sent
    /// again at once as 1.0, and so is every 2.0 body after it.
    async fn send(&self, request: &PreparedRequest) -> Result<Delivered, ExportError> {
        if request.encoding != V2 {
            return self
                .post(&request.body, Protocol::V1)
                .await
                .map_err(|(_, e)| e);
        }
        if self.v2.load(Ordering::Relaxed) {
            match self.post(&request.body, Protocol::V2).await {
                Err((415, e)) => {
                    if self.v2.swap(false, Ordering::Relaxed) {
                        warn!(endpoint = %self.endpoint, answer = %e, "the receiver does not take remote-write 2.0 (HTTP 415, or a success without 2.0's written counts); sending 1.0 from now on");
                    }
                }
                other => return other.map_err(|(_, e)| e),
            }
        }
        let v1 = encode::v2_as_v1(&request.body).map_err(|e| ExportError::Permanent {
            message: format!("a remote-write 2.0 request could not be rewritten as 1.0: {e}"),
        })?;
        self.post(&v1, Protocol::V1).await.map_err(|(_, e)| e)
    }

    /// One POST; a failure comes with the answer's status (0: no answer).
    async fn post(
        &self,
        body: &Bytes,
        protocol: Protocol,
    ) -> Result<Delivered, (u16, ExportError)> {
        let resp = self
            .client
            .post(&self.endpoint)
            .headers(self.headers.current())
            .header(http::header::CONTENT_ENCODING, "snappy")
            .header(http::header::CONTENT_TYPE, protocol.content_type())
            .header("X-Prometheus-Remote-Write-Version", protocol.version())
            .body(body.clone())
            .send()
            .await
            .map_err(|e| {
                (
                    0,
                    ExportError::retryable(format!("POST {}: {e}", self.endpoint)),
                )
            })?;
        let status = resp.status();
        if status.is_success() {
            if protocol == Protocol::V2 {
                let mut any = false;
                for (header, counter) in WRITTEN.iter().zip(&self.written) {
                    let n = resp.headers().get(*header).and_then(|v| v.to_str().ok());
                    if let Some(n) = n.and_then(|v| v.trim().parse::<u64>().ok()) {
                        counter.add(n);
                        any = true;
                    }
                }
                // The spec: a 2xx to 2.0 without any written-counts header comes from a
                // 1.0 receiver that read the request as an empty 1.0 one; take it as 415.
                if !any {
                    let message = format!(
                        "POST {}: HTTP {status} without X-Prometheus-Remote-Write-*-Written headers: a remote-write 1.0 receiver, which wrote nothing",
                        self.endpoint
                    );
                    return Err((415, ExportError::Permanent { message }));
                }
            }
            return Ok(Delivered::default());
        }
        let retry_after = resp
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(crate::partial::retry_after);
        let text = resp.text().await.unwrap_or_default();
        let message = format!(
            "POST {}: HTTP {status}: {}",
            self.endpoint,
            text.trim().chars().take(300).collect::<String>()
        );
        // The remote-write spec: 5xx and 429 are retried, other 4xx are not.
        let error = if status.is_server_error() || status.as_u16() == 429 {
            ExportError::Retryable {
                message,
                retry_after,
            }
        } else {
            ExportError::Permanent { message }
        };
        Err((status.as_u16(), error))
    }

    /// Translates a batch into sharded requests; points are shared out over requests in
    /// proportion to the series they carry (a histogram point is many series).
    fn prepare_batch(&self, batch: &Metrics) -> Result<Prepared, ExportError> {
        let now = sidekick_collector::util::now_ms();
        let protocol = if self.v2.load(Ordering::Relaxed) {
            Protocol::V2
        } else {
            Protocol::V1
        };
        let mut encoder = Encoder::for_points(self.shards, self.max_bytes, now, batch.len())
            .with_protocol(protocol);
        let translation =
            prom::translate_batch_with(batch, &self.settings, &self.accumulator, &mut |s| {
                encoder.push(s)
            })?;
        let mut reasons: Vec<String> = translation
            .dropped
            .iter()
            .map(|(_, r)| r.to_string())
            .collect();
        let metadata = if self.send_metadata {
            metadata(&translation.families)
        } else {
            Vec::new()
        };
        let finished = encoder.finish(metadata);
        let total_series: usize = finished.lanes.iter().flatten().map(|r| r.series).sum();
        if finished.ahead_samples > 0 {
            reasons.push(format!(
                "{} samples with timestamps more than {} minutes ahead of this host's clock",
                finished.ahead_samples,
                encode::APART_AHEAD_MS / 60_000
            ));
        }
        if finished.apart_samples > 0 {
            self.apart.add(finished.apart_samples as u64);
            if let Some(held_back) = self.apart_log.check() {
                warn!(
                    endpoint = %self.endpoint,
                    samples = finished.apart_samples,
                    similar_lines_held_back = held_back,
                    "samples older than an hour (or at the epoch) are sent in requests of their own, so a backend that refuses them does not refuse the rest"
                );
            }
        }
        let unsendable = (translation.dropped_points() + finished.ahead_points).min(batch.len());
        let reason = reasons.join("; ");
        let shards = finished.lanes;
        let points = batch.len() - unsendable;
        let mut shared = 0;
        let mut lanes: Vec<Vec<PreparedRequest>> = shards
            .into_iter()
            .map(|requests| {
                requests
                    .into_iter()
                    .map(|r| {
                        let items = (points * r.series).checked_div(total_series).unwrap_or(0);
                        shared += items;
                        PreparedRequest {
                            body: r.body,
                            items,
                            encoding: if protocol == Protocol::V2 { V2 } else { 0 },
                        }
                    })
                    .collect()
            })
            .collect();
        // Rounding leftovers go to the first request, so every point is counted once.
        if let Some(first) = lanes.iter_mut().flat_map(|l| l.iter_mut()).next() {
            first.items += points - shared;
        }
        Ok(Prepared {
            lanes,
            unsendable,
            reason,
        })
    }
}

impl Export<MetricsSignal> for RemoteWriteExporter {
    fn prepare(&self, batch: &Metrics) -> Option<Result<Prepared, ExportError>> {
        Some(self.prepare_batch(batch))
    }

    fn send_prepared<'a>(
        &'a self,
        request: &'a PreparedRequest,
    ) -> BoxFuture<'a, Result<Delivered, ExportError>> {
        Box::pin(self.send(request))
    }
}

use sidekick_prometheus::remote_write as encode;

pub use encode::{Encoder, Finished, Protocol, Request};

#[cfg(test)]
mod tests;
