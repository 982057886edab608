//! The `otlp` exporter (also `otlp_grpc`): OTLP over gRPC to a backend.
//!
//! ```yaml
//! exporters:
//!   otlp:
//!     endpoint: otel-gateway.observability:4317
//!     tls:
//!       insecure: true
//!     compression: gzip
//!     headers:
//!       x-tenant: team-a
//!     timeout: 5s
//! ```
//!
//! Batches that arrived encoded are sent as they are: the request body is the received
//! bytes (appended, when batched), never decoded and re-encoded.

use serde::de::IgnoredAny;
use serde::Deserialize;
use sidekick_collector::component::{
    BoxFuture, BuildContext, BuildError, ExporterConfig, ExporterParts, FieldError,
};
use sidekick_collector::config::{Duration as ConfigDuration, Signal as SignalKind};
use sidekick_collector::exporter::{
    ClientRules, ClientSettings, Delivered, Export, ExportError, ExportSettings,
};
use sidekick_collector::payload::{Batch, Signal};
use sidekick_transport::client::{grpc_channel, Keepalive};
use sidekick_transport::client::{header_map, RequestHeaders};
use sidekick_transport::grpc::{self, Message};
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

use crate::collector_options;
use crate::compression::Compression;
use crate::partial;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `endpoint`, `tls`, `headers`, `timeout` (default 5s), `auth`, `sending_queue` and
    /// `retry_on_failure`. `endpoint` is `host:port` (TLS unless `tls.insecure`), or
    /// `http://host:port` / `https://host:port`.
    #[serde(skip)]
    pub client: ClientSettings,
    /// `gzip` (default), `zstd` or `none`.
    pub compression: Compression,
    /// Largest request sent, in bytes before compression; larger batches are split.
    /// Default 4 MiB, gRPC's default receive limit.
    pub max_request_size: usize,
    /// HTTP/2 pings on the connection to the backend.
    pub keepalive: Option<KeepaliveConfig>,
    /// The Collector's gRPC load-balancing policy; see [`crate::collector_options`].
    pub balancer_name: Option<String>,
    pub read_buffer_size: Option<usize>,
    pub write_buffer_size: Option<usize>,
    pub batcher: Option<IgnoredAny>,
}

/// `keepalive:` of a gRPC client, as in the Collector.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeepaliveConfig {
    /// Ping after this long without activity, e.g. `30s`.
    pub time: Option<ConfigDuration>,
    /// Close the connection when a ping is unanswered for this long.
    pub timeout: Option<ConfigDuration>,
    /// Ping even when no request is in flight.
    pub permit_without_stream: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            client: ClientSettings::default(),
            compression: Compression::Gzip,
            max_request_size: 4 << 20,
            keepalive: None,
            balancer_name: None,
            read_buffer_size: None,
            write_buffer_size: None,
            batcher: None,
        }
    }
}

/// Largest response accepted from a backend.
const MAX_RESPONSE: usize = 4 << 20;

impl Config {
    /// The URI to connect to and whether it uses TLS.
    fn target(&self) -> Result<(String, bool), String> {
        let e = self.client.endpoint.trim();
        if e.is_empty() {
            return Err("endpoint is required, e.g. backend:4317".into());
        }
        if let Some(rest) = e.strip_prefix("https://") {
            Ok((format!("https://{rest}"), true))
        } else if let Some(rest) = e.strip_prefix("http://") {
            Ok((format!("http://{rest}"), false))
        } else if e.contains("://") {
            Err(format!(
                "unsupported scheme in \"{e}\": use host:port, http:// or https://"
            ))
        } else if self.client.tls.insecure {
            Ok((format!("http://{e}"), false))
        } else {
            Ok((format!("https://{e}"), true))
        }
    }
}

impl ExporterConfig for Config {
    const SIGNALS: &'static [SignalKind] = &SignalKind::ALL;
    const CLIENT: Option<ClientRules> = Some(ClientRules {
        reserved_headers: &[],
        no_proxy: Some(
            "the gRPC exporter connects to its endpoint directly: use otlphttp to send through a proxy",
        ),
        sends_with: None,
    });

    fn client(&self) -> Option<&ClientSettings> {
        Some(&self.client)
    }

    fn client_mut(&mut self) -> Option<&mut ClientSettings> {
        Some(&mut self.client)
    }

    fn endpoints(&self) -> Vec<Result<String, FieldError>> {
        let target = self
            .target()
            .and_then(|(uri, _)| match Endpoint::from_shared(uri.clone()) {
                Ok(_) => Ok(uri),
                Err(_) => Err(format!("invalid endpoint \"{}\"", self.client.endpoint)),
            });
        vec![target.map_err(|message| FieldError::new("endpoint", message))]
    }

    fn validate(&self) -> Vec<FieldError> {
        let mut out = Vec::new();
        if self.balancer_name.is_some() {
            out.push(FieldError::no_effect(
                "balancer_name",
                "the exporter keeps one HTTP/2 connection to the endpoint's address",
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
        let (uri, tls) = self.target().map_err(BuildError::new)?;
        let tls = if tls {
            Some(self.client.tls.rustls_config()?)
        } else {
            None
        };
        let keepalive = self.keepalive.clone().unwrap_or_default();
        let keepalive = Keepalive {
            time: keepalive.time.map(|d| d.get()),
            timeout: keepalive.timeout.map(|d| d.get()),
            permit_without_stream: keepalive.permit_without_stream,
        };
        let channel = grpc_channel(
            &uri,
            tls,
            self.client.tls.server_name_override.as_deref(),
            keepalive,
        )?;
        let headers = RequestHeaders::new(header_map(&self.client.headers, None)?, auth);
        let exporter = std::sync::Arc::new(OtlpGrpcExporter {
            channel,
            headers,
            compression: self.compression,
            endpoint: uri,
        });
        Ok(ExporterParts::all(exporter))
    }
}

pub struct OtlpGrpcExporter {
    channel: Channel,
    /// `headers`, and the authenticator's credentials read as they are at each request.
    headers: RequestHeaders,
    compression: Compression,
    endpoint: String,
}

impl OtlpGrpcExporter {
    /// One `Export` call whose body is the batch's encoded bytes as they are (or their
    /// compressed form): the batch is never copied into a request buffer.
    async fn send<S: Signal>(&self, batch: &Batch<S>) -> Result<Delivered, ExportError> {
        let chunks = batch.encoded_chunks();
        let message = match self.compression.encoding() {
            None => Message {
                chunks,
                encoding: None,
            },
            Some(encoding) => Message {
                chunks: vec![self.compression.apply_for_send(&chunks).map_err(|e| {
                    ExportError::Permanent {
                        message: format!("cannot compress the request: {e}"),
                    }
                })?],
                encoding: Some(encoding),
            },
        };
        let mut channel = self.channel.clone();
        let answer = grpc::unary(
            &mut channel,
            S::GRPC_PATH,
            self.headers.current(),
            message,
            MAX_RESPONSE,
        )
        .await;
        match answer {
            Ok(response) => Ok(partial::delivered(&response)),
            Err(status) if status.code() == Code::Unavailable => Err(ExportError::Retryable {
                message: format!("{}: {}", self.endpoint, status.message()),
                retry_after: partial::retry_delay(status.details()),
            }),
            Err(status) => Err(classify(&status)),
        }
    }
}

/// Retryable codes per the OTLP spec; `RESOURCE_EXHAUSTED` only when the server says
/// when to retry.
fn classify(status: &tonic::Status) -> ExportError {
    let delay = partial::retry_delay(status.details());
    let message = format!("{:?}: {}", status.code(), status.message());
    let retryable = match status.code() {
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::DataLoss
        | Code::Cancelled => true,
        Code::ResourceExhausted => delay.is_some(),
        _ => false,
    };
    match status.code() {
        _ if retryable => ExportError::Retryable {
            message,
            retry_after: delay,
        },
        // The data itself was refused (malformed, or too large without a retry hint):
        // the helper isolates the item at fault.
        Code::InvalidArgument | Code::ResourceExhausted => ExportError::Rejected { message },
        _ => ExportError::Permanent { message },
    }
}

impl<S: Signal> Export<S> for OtlpGrpcExporter {
    fn export<'a>(&'a self, batch: &'a Batch<S>) -> BoxFuture<'a, Result<Delivered, ExportError>> {
        Box::pin(self.send(batch))
    }
}

#[cfg(test)]
mod tests;
