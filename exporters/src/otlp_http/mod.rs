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

use std::collections::BTreeMap;

use serde::de::IgnoredAny;
use serde::Deserialize;
use sidekick_collector::component::{
    BoxFuture, BuildContext, BuildError, ExporterConfig, ExporterParts, FieldError,
};
use sidekick_collector::config::{Duration as ConfigDuration, Secret, Signal as SignalKind};
use sidekick_collector::exporter::{
    Delivered, Export, ExportError, ExportSettings, QueueSettings, RetrySettings,
};
use sidekick_collector::payload::{Batch, LogsSignal, MetricsSignal, Signal, TracesSignal};
use sidekick_collector::util::error_chain;

use crate::collector_options;
use crate::compression::Compression;
use crate::partial;
use sidekick_transport::client::{
    check_headers, check_proxy_url, header_map, http_client, plaintext_credentials, RequestHeaders,
};
use sidekick_transport::tls::TlsSettings;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Base URL; `/v1/traces`, `/v1/metrics` and `/v1/logs` are appended.
    pub endpoint: String,
    /// Full URL for traces, overriding `endpoint`.
    pub traces_endpoint: Option<String>,
    pub metrics_endpoint: Option<String>,
    pub logs_endpoint: Option<String>,
    pub tls: TlsSettings,
    /// Extra request headers, e.g. `authorization`. Values are kept out of logs.
    pub headers: BTreeMap<String, Secret>,
    /// Send every request through this HTTP proxy (`http://host:port`). Default: the
    /// `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY` environment variables.
    pub proxy_url: Option<String>,
    /// `gzip` (default), `zstd` or `none`.
    pub compression: Compression,
    /// Only `proto` is supported.
    pub encoding: String,
    /// Per attempt. Default 30s.
    pub timeout: ConfigDuration,
    pub sending_queue: QueueSettings,
    pub retry_on_failure: RetrySettings,
    /// Largest request body sent, in bytes before compression; larger batches are
    /// split. Default 8 MiB.
    pub max_request_size: usize,
    pub read_buffer_size: Option<usize>,
    pub write_buffer_size: Option<usize>,
    /// The Collector's development profiles signal, which Sidekick does not carry.
    pub profiles_endpoint: Option<String>,
    pub batcher: Option<IgnoredAny>,
    /// An authenticator extension whose credentials go with every request.
    pub auth: Option<sidekick_collector::config::AuthRef>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            endpoint: String::new(),
            traces_endpoint: None,
            metrics_endpoint: None,
            logs_endpoint: None,
            tls: TlsSettings::default(),
            headers: BTreeMap::new(),
            proxy_url: None,
            compression: Compression::Gzip,
            encoding: "proto".into(),
            timeout: ConfigDuration::from_secs(30),
            sending_queue: QueueSettings::default(),
            retry_on_failure: RetrySettings::default(),
            max_request_size: 8 << 20,
            read_buffer_size: None,
            write_buffer_size: None,
            profiles_endpoint: None,
            batcher: None,
            auth: None,
        }
    }
}

impl Config {
    fn url(&self, explicit: &Option<String>, path: &str) -> Option<String> {
        match explicit {
            Some(u) => Some(u.clone()),
            None if self.endpoint.is_empty() => None,
            None => Some(format!("{}{path}", self.endpoint.trim_end_matches('/'))),
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

impl ExporterConfig for Config {
    const SIGNALS: &'static [SignalKind] = &SignalKind::ALL;

    fn validate(&self) -> Vec<FieldError> {
        let mut out = Vec::new();
        if self.encoding != "proto" {
            out.push(FieldError::new("encoding", "only \"proto\" is supported"));
        }
        let valid = |u: &str| {
            (u.starts_with("http://") || u.starts_with("https://"))
                && reqwest::Url::parse(u).is_ok()
        };
        let explicit = [
            ("traces_endpoint", &self.traces_endpoint),
            ("metrics_endpoint", &self.metrics_endpoint),
            ("logs_endpoint", &self.logs_endpoint),
        ];
        let urls =
            std::iter::once(&self.endpoint).chain(explicit.iter().filter_map(|(_, u)| u.as_ref()));
        for url in urls {
            out.extend(plaintext_credentials(
                url,
                &self.headers,
                if self.auth.is_some() { &["auth"] } else { &[] },
            ));
        }
        if !self.endpoint.is_empty() && !valid(&self.endpoint) {
            out.push(FieldError::new(
                "endpoint",
                format!(
                    "invalid URL \"{}\": write http://host:port or https://host:port",
                    self.endpoint
                ),
            ));
        }
        for (field, url) in explicit {
            match url {
                Some(u) if !valid(u) => out.push(FieldError::new(
                    field,
                    format!("invalid URL \"{u}\": write http://host:port/v1/... or https://..."),
                )),
                None if self.endpoint.is_empty() => {
                    out.push(FieldError::new(
                        "endpoint",
                        "endpoint is required (or traces_endpoint, metrics_endpoint and logs_endpoint)",
                    ));
                    break;
                }
                _ => {}
            }
        }
        out.extend(check_headers(
            &self.headers,
            &["content-type", "content-encoding"],
        ));
        if let Some(p) = &self.proxy_url {
            out.extend(check_proxy_url(p));
        }
        let uses_tls = std::iter::once(Some(&self.endpoint))
            .chain(explicit.iter().map(|(_, u)| u.as_ref()))
            .flatten()
            .any(|u| u.starts_with("https://"));
        if uses_tls {
            out.extend(self.tls.validate());
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
        out.extend(self.export_settings().validate());
        out
    }

    fn export_settings(&self) -> ExportSettings {
        ExportSettings {
            timeout: self.timeout.get(),
            queue: self.sending_queue.clone(),
            retry: self.retry_on_failure.clone(),
            max_request_bytes: Some(self.max_request_size),
            persist: self.sending_queue.persist(),
        }
    }

    fn auth_uses(&self) -> Vec<sidekick_collector::auth::AuthUse> {
        collector_options::auth_uses(&self.auth)
    }

    fn build(self, ctx: &BuildContext) -> Result<ExporterParts, BuildError> {
        let auth = collector_options::authenticator(ctx, &self.auth)?;
        let client = http_client(self.tls.rustls_config()?, self.proxy_url.as_deref())?;
        let headers = RequestHeaders::new(header_map(&self.headers, None)?, auth);
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
            .apply(&batch.encoded_chunks())
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
