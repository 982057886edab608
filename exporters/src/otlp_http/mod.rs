//! The `otlphttp` exporter (also `otlp_http`): OTLP over HTTP with protobuf bodies.
//!
//! ```yaml
//! exporters:
//!   otlphttp:
//!     endpoint: https://otlp.example.com    # /v1/traces etc. are appended
//!     compression: gzip
//!     headers:
//!       authorization: Bearer ${env:OTLP_TOKEN}
//! ```
//!
//! Retries follow the OTLP/HTTP spec: 429, 502, 503 and 504 (and network failures) are
//! retried, honouring `Retry-After`; other statuses drop the batch and count it.

use serde::de::IgnoredAny;
use serde::Deserialize;
use sidekick_collector::component::{
    BoxFuture, BuildContext, BuildError, ExporterConfig, ExporterParts, FieldError,
};
use sidekick_collector::config::{Duration as ConfigDuration, Signal as SignalKind};
use sidekick_collector::exporter::{
    ClientRules, ClientSettings, Delivered, Export, ExportError, ExportSettings,
};
use sidekick_collector::payload::{Batch, LogsSignal, MetricsSignal, Signal, TracesSignal};
use sidekick_collector::util::error_chain;

use crate::collector_options;
use crate::compression::Compression;
use crate::partial;
use sidekick_transport::client::{header_map, http_client, RequestHeaders};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `endpoint`, `tls`, `headers`, `proxy_url`, `timeout` (default 30s), `auth`,
    /// `sending_queue` and `retry_on_failure`. `endpoint` is the base URL:
    /// `/v1/traces`, `/v1/metrics` and `/v1/logs` are appended. Without `proxy_url`, the
    /// `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY` environment variables apply.
    #[serde(skip)]
    pub client: ClientSettings,
    /// Full URL for traces, overriding `endpoint`.
    pub traces_endpoint: Option<String>,
    pub metrics_endpoint: Option<String>,
    pub logs_endpoint: Option<String>,
    /// `gzip` (default), `zstd` or `none`.
    pub compression: Compression,
    /// Only `proto` is supported.
    pub encoding: String,
    /// Largest request body sent, in bytes before compression; larger batches are
    /// split. Default 8 MiB.
    pub max_request_size: usize,
    pub read_buffer_size: Option<usize>,
    pub write_buffer_size: Option<usize>,
    /// The Collector's development profiles signal, which Sidekick does not carry.
    pub profiles_endpoint: Option<String>,
    pub batcher: Option<IgnoredAny>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            client: ClientSettings::with_timeout(ConfigDuration::from_secs(30)),
            traces_endpoint: None,
            metrics_endpoint: None,
            logs_endpoint: None,
            compression: Compression::Gzip,
            encoding: "proto".into(),
            max_request_size: 8 << 20,
            read_buffer_size: None,
            write_buffer_size: None,
            profiles_endpoint: None,
            batcher: None,
        }
    }
}

impl Config {
    fn url(&self, explicit: &Option<String>, path: &str) -> Option<String> {
        match explicit {
            Some(u) => Some(u.clone()),
            None if self.client.endpoint.is_empty() => None,
            None => Some(format!(
                "{}{path}",
                self.client.endpoint.trim_end_matches('/')
            )),
        }
    }

    fn urls(&self) -> [(&'static str, Option<String>); 3] {
        [
            (
                "traces_endpoint",
                self.url(&self.traces_endpoint, TracesSignal::HTTP_PATH),
            ),
            (
                "metrics_endpoint",
                self.url(&self.metrics_endpoint, MetricsSignal::HTTP_PATH),
            ),
            (
                "logs_endpoint",
                self.url(&self.logs_endpoint, LogsSignal::HTTP_PATH),
            ),
        ]
    }
}

/// An absolute `http://` or `https://` URL.
fn valid_url(url: &str) -> bool {
    (url.starts_with("http://") || url.starts_with("https://")) && reqwest::Url::parse(url).is_ok()
}

impl ExporterConfig for Config {
    const SIGNALS: &'static [SignalKind] = &SignalKind::ALL;
    const CLIENT: Option<ClientRules> = Some(ClientRules {
        reserved_headers: &["content-type", "content-encoding"],
        no_proxy: None,
        sends_with: None,
    });

    fn client(&self) -> Option<&ClientSettings> {
        Some(&self.client)
    }

    fn client_mut(&mut self) -> Option<&mut ClientSettings> {
        Some(&mut self.client)
    }

    fn endpoints(&self) -> Vec<Result<String, FieldError>> {
        let endpoint = &self.client.endpoint;
        let mut out = Vec::new();
        if !endpoint.is_empty() && !valid_url(endpoint) {
            out.push(Err(FieldError::new(
                "endpoint",
                format!("invalid URL \"{endpoint}\": write http://host:port or https://host:port"),
            )));
        }
        let explicit = [
            ("traces_endpoint", &self.traces_endpoint),
            ("metrics_endpoint", &self.metrics_endpoint),
            ("logs_endpoint", &self.logs_endpoint),
        ];
        let mut required = false;
        for (field, url) in explicit {
            match url {
                Some(u) if valid_url(u) => out.push(Ok(u.clone())),
                Some(u) => out.push(Err(FieldError::new(
                    field,
                    format!("invalid URL \"{u}\": write http://host:port/v1/... or https://..."),
                ))),
                None if endpoint.is_empty() => required = true,
                None if valid_url(endpoint) => out.push(Ok(endpoint.clone())),
                None => {}
            }
        }
        if required {
            out.push(Err(FieldError::new(
                "endpoint",
                "endpoint is required (or traces_endpoint, metrics_endpoint and logs_endpoint)",
            )));
        }
        out
    }

    fn validate(&self) -> Vec<FieldError> {
        let mut out = Vec::new();
        if self.encoding != "proto" {
            out.push(FieldError::new("encoding", "only \"proto\" is supported"));
        }
        if self.profiles_endpoint.is_some() {
            out.push(FieldError::no_effect(
                "profiles_endpoint",
                "Sidekick carries traces, metrics and logs, not profiles",
            ));
        }
        out.extend(collector_options::buffer_sizes(
            self.read_buffer_size,
            self.write_buffer_size,
        ));
        out.extend(collector_options::batcher(&self.batcher));
        out
    }

    fn export_settings(&self) -> ExportSettings {
        self.client.export_settings(Some(self.max_request_size))
    }

    fn build(self, ctx: &BuildContext) -> Result<ExporterParts, BuildError> {
        let auth = collector_options::authenticator(ctx, &self.client.auth)?;
        let client = http_client(
            self.client.tls.rustls_config()?,
            self.client.proxy_url.as_deref(),
        )?;
        let headers = RequestHeaders::new(header_map(&self.client.headers, None)?, auth);
        let [(_, traces), (_, metrics), (_, logs)] = self.urls();
        let exporter = std::sync::Arc::new(OtlpHttpExporter {
            client,
            headers,
            compression: self.compression,
            traces: traces.unwrap_or_default(),
            metrics: metrics.unwrap_or_default(),
            logs: logs.unwrap_or_default(),
        });
        Ok(ExporterParts::all(exporter))
    }
}

pub struct OtlpHttpExporter {
    client: reqwest::Client,
    headers: RequestHeaders,
    compression: Compression,
    traces: String,
    metrics: String,
    logs: String,
}

impl OtlpHttpExporter {
    fn url<S: Signal>(&self) -> &str {
        match S::KIND {
            SignalKind::Traces => &self.traces,
            SignalKind::Metrics => &self.metrics,
            SignalKind::Logs => &self.logs,
        }
    }

    async fn send<S: Signal>(&self, batch: &Batch<S>) -> Result<Delivered, ExportError> {
        let body = self
            .compression
            .apply_for_send(&batch.encoded_chunks())
            .map_err(|e| ExportError::permanent(format!("cannot compress: {e}")))?;
        let mut request = self
            .client
            .post(self.url::<S>())
            .headers(self.headers.current())
            .header(http::header::CONTENT_TYPE, "application/x-protobuf")
            .body(body);
        if let Some(enc) = self.compression.encoding() {
            request = request.header(http::header::CONTENT_ENCODING, enc);
        }
        let response = request.send().await.map_err(|e| {
            ExportError::retryable(format!("POST {}: {}", self.url::<S>(), error_chain(&e)))
        })?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(partial::retry_after);
        let body = response.bytes().await.unwrap_or_default();
        if status.is_success() {
            return Ok(partial::delivered(&body));
        }
        let message = format!(
            "POST {}: HTTP {status}: {}",
            self.url::<S>(),
            partial::status_message(&body)
        );
        match status.as_u16() {
            429 | 502 | 503 | 504 => Err(ExportError::Retryable {
                message,
                retry_after,
            }),
            // The data itself was refused: the helper isolates the item at fault.
            400 | 413 => Err(ExportError::Rejected { message }),
            _ => Err(ExportError::Permanent { message }),
        }
    }
}

/// `Retry-After` in seconds (the HTTP-date form is rare from OTLP backends and falls back
/// to the exporter's own backoff).
impl<S: Signal> Export<S> for OtlpHttpExporter {
    fn export<'a>(&'a self, batch: &'a Batch<S>) -> BoxFuture<'a, Result<Delivered, ExportError>> {
        Box::pin(self.send(batch))
    }
}

#[cfg(test)]
mod tests;
