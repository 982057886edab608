//! The `otlp` receiver: OTLP over gRPC and over HTTP for traces, metrics and logs.
//!
//! ```yaml
//! receivers:
//!   otlp:
//!     protocols:
//!       grpc:
//!         endpoint: 127.0.0.1:4317
//!       http:
//!         endpoint: 127.0.0.1:4318
//! ```
//!
//! Each listener serves both protocols: a request whose content type is
//! `application/grpc` is gRPC, anything else is OTLP/HTTP, so an SDK pointed at the
//! "wrong" port (OTLP/HTTP to 4317, the default of several SDKs) still delivers. A request
//! that cannot be served (unknown path, wrong method, unknown content type, a signal no
//! pipeline takes) gets an error status, is counted in
//! `sidekick_receiver_refused_requests{reason}` and logged (at most every 10 s).
//!
//! Protobuf bodies are checked (framing down to each item) and counted, then passed on
//! still encoded; OTLP/JSON bodies are decoded. When the pipeline stays full, requests
//! are refused retryably (gRPC `UNAVAILABLE`, HTTP 503 with `Retry-After`) so the SDK
//! backs off and nothing is accepted that cannot be delivered.

mod grpc;
mod http;

pub use http::decode_body;
mod router;

use std::time::Duration;

use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer};
use sidekick_collector::auth::{check_listener, AuthSide, AuthUse};
use sidekick_collector::component::{
    BoxFuture, BuildContext, BuildError, FieldError, Listen, Receiver, ReceiverConfig,
    ReceiverOutputs,
};
use sidekick_collector::config::Duration as ConfigDuration;
use sidekick_collector::config::Signal as SignalKind;
use sidekick_collector::config::{AuthRef, ServerTls};
use sidekick_collector::payload::{Batch, Signal};
use sidekick_collector::pipe::{Output, SendError, Stop};
use sidekick_collector::telemetry::{Counter, Telemetry};
use sidekick_transport::server::{serve_with, ServerOptions};
use tokio::net::TcpListener;
use tracing::info;

/// How long a request waits for room in a full pipeline before it is refused.
const BACKPRESSURE_WAIT: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Which protocols to serve. Absent: both with defaults. Listing one serves only it.
    #[serde(default = "Protocols::both")]
    pub protocols: Protocols,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            protocols: Protocols::both(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Protocols {
    /// `grpc:` with nothing under it enables gRPC with defaults.
    #[serde(default, deserialize_with = "present")]
    pub grpc: Option<GrpcConfig>,
    #[serde(default, deserialize_with = "present")]
    pub http: Option<HttpConfig>,
}

impl Protocols {
    fn both() -> Self {
        Protocols {
            grpc: Some(GrpcConfig::default()),
            http: Some(HttpConfig::default()),
        }
    }
}

/// A present key is enabled, even when its value is empty.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcConfig {
    /// Listen address. Default `127.0.0.1:4317` (the app shares the Pod's network).
    pub endpoint: String,
    /// Only `tcp` is supported.
    pub transport: String,
    /// Largest accepted message after decompression, in MiB. Default 4.
    pub max_recv_msg_size_mib: usize,
    /// Concurrent HTTP/2 streams per connection. Default 200.
    pub max_concurrent_streams: Option<u32>,
    pub keepalive: Option<ServerKeepalive>,
    /// Collector options with no effect here (see `validate`).
    pub include_metadata: Option<bool>,
    pub read_buffer_size: Option<usize>,
    pub write_buffer_size: Option<usize>,
    /// Serve over TLS (mutual TLS with `client_ca_file`).
    pub tls: Option<ServerTls>,
    /// Check each request's credentials with an authenticator extension.
    pub auth: Option<AuthRef>,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            endpoint: "127.0.0.1:4317".into(),
            transport: "tcp".into(),
            max_recv_msg_size_mib: 4,
            max_concurrent_streams: None,
            keepalive: None,
            include_metadata: None,
            read_buffer_size: None,
            write_buffer_size: None,
            tls: None,
            auth: None,
        }
    }
}

/// `keepalive:` of the gRPC server, as in the Collector.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerKeepalive {
    pub server_parameters: Option<ServerParameters>,
    /// How often clients may ping; hyper answers pings without policing them.
    pub enforcement_policy: Option<IgnoredAny>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerParameters {
    /// Ping a client after this long without activity, e.g. `30s`.
    pub time: Option<ConfigDuration>,
    /// Close the connection when the ping is unanswered for this long. Default 20s.
    pub timeout: Option<ConfigDuration>,
    /// Connection lifetime limits for load balancing across servers; a sidecar has one.
    pub max_connection_idle: Option<IgnoredAny>,
    pub max_connection_age: Option<IgnoredAny>,
    pub max_connection_age_grace: Option<IgnoredAny>,
}

/// `cors:` on the HTTP listener, for browser SDKs posting from another origin.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorsConfig {
    /// Origins allowed to post, e.g. `https://*.example.com`; `*` allows any.
    pub allowed_origins: Vec<String>,
    /// Request headers allowed besides the CORS-safelisted ones.
    pub allowed_headers: Vec<String>,
    /// Seconds a browser may cache the preflight answer.
    pub max_age: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Listen address. Default `127.0.0.1:4318`.
    pub endpoint: String,
    /// Largest accepted body in bytes, both as sent and after decompression.
    /// Default 20 MiB.
    pub max_request_body_size: usize,
    /// Default `/v1/traces`.
    pub traces_url_path: String,
    /// Default `/v1/metrics`.
    pub metrics_url_path: String,
    /// Default `/v1/logs`.
    pub logs_url_path: String,
    pub cors: Option<CorsConfig>,
    /// Collector options with no effect here (see `validate`).
    pub include_metadata: Option<bool>,
    /// Serve over TLS (mutual TLS with `client_ca_file`).
    pub tls: Option<ServerTls>,
    /// Check each request's credentials with an authenticator extension.
    pub auth: Option<AuthRef>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            endpoint: "127.0.0.1:4318".into(),
            max_request_body_size: 20 << 20,
            traces_url_path: "/v1/traces".into(),
            metrics_url_path: "/v1/metrics".into(),
            logs_url_path: "/v1/logs".into(),
            cors: None,
            include_metadata: None,
            tls: None,
            auth: None,
        }
    }
}

/// A configured URL path as served: the Collector adds the leading `/` when missing.
fn url_path(path: &str) -> String {
    if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    }
}

/// Receiver-side Collector options that Sidekick accepts without acting on, or refuses.
fn collector_options(protocols: &Protocols) -> Vec<FieldError> {
    let mut out = Vec::new();
    if let Some(g) = &protocols.grpc {
        let p = "protocols.grpc";
        if g.include_metadata.is_some() {
            out.push(FieldError::no_effect(
                format!("{p}.include_metadata"),
                "request metadata is not passed to exporters",
            ));
        }
        if g.read_buffer_size.is_some() || g.write_buffer_size.is_some() {
            out.push(FieldError::no_effect(
                format!("{p}.read_buffer_size"),
                "socket buffers are sized by the runtime",
            ));
        }
        if let Some(k) = &g.keepalive {
            if k.enforcement_policy.is_some() {
                out.push(FieldError::no_effect(
                    format!("{p}.keepalive.enforcement_policy"),
                    "client pings are answered, not policed",
                ));
            }
            let sp = k.server_parameters.clone().unwrap_or_default();
            if sp.max_connection_idle.is_some()
                || sp.max_connection_age.is_some()
                || sp.max_connection_age_grace.is_some()
            {
                out.push(FieldError::no_effect(
                    format!("{p}.keepalive.server_parameters.max_connection_age"),
                    "connection ages spread clients over servers behind a load balancer; a sidecar has one client",
                ));
            }
        }
        out.extend(check_listener(
            "protocols.grpc.",
            &g.endpoint,
            g.tls.as_ref(),
            g.auth.as_ref(),
        ));
    }
    if let Some(h) = &protocols.http {
        let p = "protocols.http";
        if h.include_metadata.is_some() {
            out.push(FieldError::no_effect(
                format!("{p}.include_metadata"),
                "request metadata is not passed to exporters",
            ));
        }
        out.extend(check_listener(
            "protocols.http.",
            &h.endpoint,
            h.tls.as_ref(),
            h.auth.as_ref(),
        ));
    }
    out
}

impl ReceiverConfig for Config {
    const SIGNALS: &'static [SignalKind] = &SignalKind::ALL;

    fn validate(&self) -> Vec<FieldError> {
        let mut out = Vec::new();
        if self.protocols.grpc.is_none() && self.protocols.http.is_none() {
            out.push(FieldError::new(
                "protocols",
                "enable at least one protocol: grpc or http",
            ));
        }
        if let Some(g) = &self.protocols.grpc {
            if g.transport != "tcp" {
                out.push(FieldError::new(
                    "protocols.grpc.transport",
                    "only \"tcp\" is supported",
                ));
            }
            if g.max_recv_msg_size_mib == 0 {
                out.push(FieldError::new(
                    "protocols.grpc.max_recv_msg_size_mib",
                    "must be at least 1",
                ));
            }
        }
        if let Some(h) = &self.protocols.http {
            if h.max_request_body_size == 0 {
                out.push(FieldError::new(
                    "protocols.http.max_request_body_size",
                    "must be at least 1",
                ));
            }
            let paths = [
                ("traces_url_path", &h.traces_url_path),
                ("metrics_url_path", &h.metrics_url_path),
                ("logs_url_path", &h.logs_url_path),
            ];
            for (i, (field, path)) in paths.iter().enumerate() {
                let field = format!("protocols.http.{field}");
                if path.contains(['{', '}', '*', ':']) {
                    out.push(FieldError::new(
                        field,
                        "a URL path here cannot contain {, }, * or :",
                    ));
                } else if paths[..i]
                    .iter()
                    .any(|(_, p)| url_path(p) == url_path(path))
                {
                    out.push(FieldError::new(
                        field,
                        "is the same path as another signal's",
                    ));
                }
            }
        }
        out.extend(collector_options(&self.protocols));
        out
    }

    fn listen_addresses(&self) -> Vec<Listen> {
        let mut out = Vec::new();
        if let Some(g) = &self.protocols.grpc {
            out.push(Listen {
                field: "protocols.grpc.endpoint".into(),
                address: g.endpoint.clone(),
            });
        }
        if let Some(h) = &self.protocols.http {
            out.push(Listen {
                field: "protocols.http.endpoint".into(),
                address: h.endpoint.clone(),
            });
        }
        out
    }

    fn auth_uses(&self) -> Vec<AuthUse> {
        let grpc = self.protocols.grpc.as_ref().and_then(|g| g.auth.as_ref());
        let http = self.protocols.http.as_ref().and_then(|h| h.auth.as_ref());
        [("protocols.grpc.auth", grpc), ("protocols.http.auth", http)]
            .into_iter()
            .filter_map(|(field, a)| Some(AuthUse::new(field, a?, AuthSide::Listener)))
            .collect()
    }

    fn build(self, ctx: &BuildContext) -> Result<Box<dyn Receiver>, BuildError> {
        Ok(Box::new(self.build_otlp(ctx)?))
    }
}

impl Config {
    fn build_otlp(self, ctx: &BuildContext) -> Result<OtlpReceiver, BuildError> {
        let name = ctx.id.to_string();
        let options = |what: &str, tls, auth| {
            ctx.secure_listener(
                ctx.listener_options(&format!("receivers.{name}/{what}")),
                &format!("protocols.{what}."),
                tls,
                auth,
            )
        };
        let grpc = match &self.protocols.grpc {
            Some(g) => Some((
                sidekick_transport::server::bind(&g.endpoint, "protocols.grpc.endpoint")?,
                g.clone(),
                options("grpc", g.tls.as_ref(), g.auth.as_ref())?,
            )),
            None => None,
        };
        let http = match &self.protocols.http {
            Some(h) => Some((
                sidekick_transport::server::bind(&h.endpoint, "protocols.http.endpoint")?,
                h.clone(),
                options("http", h.tls.as_ref(), h.auth.as_ref())?,
            )),
            None => None,
        };
        let listeners = [
            (grpc.as_ref().map(|(l, _, _)| l), "grpc"),
            (http.as_ref().map(|(l, _, _)| l), "http"),
        ];
        for (listener, what) in listeners {
            if let Some(l) = listener {
                log_listening(&name, what, l);
            }
        }
        Ok(OtlpReceiver {
            name,
            telemetry: ctx.telemetry.clone(),
            grpc,
            http,
        })
    }
}

pub struct OtlpReceiver {
    name: String,
    telemetry: Telemetry,
    grpc: Option<(TcpListener, GrpcConfig, ServerOptions)>,
    http: Option<(TcpListener, HttpConfig, ServerOptions)>,
}

/// One signal's way into the pipelines, with its accepted/refused counters.
pub(crate) struct Entry<S: Signal> {
    output: Output<S>,
    accepted: Counter,
    refused: Counter,
}

impl<S: Signal> Clone for Entry<S> {
    fn clone(&self) -> Self {
        Entry {
            output: self.output.clone(),
            accepted: self.accepted.clone(),
            refused: self.refused.clone(),
        }
    }
}

impl<S: Signal> Entry<S> {
    fn new(output: Output<S>, telemetry: &Telemetry, receiver: &str, transport: &str) -> Self {
        let labels = [("receiver", receiver), ("transport", transport)];
        Entry {
            output,
            accepted: telemetry.counter(
                &format!("otelcol_receiver_accepted_{}", S::ITEMS),
                "Items successfully pushed into the pipeline.",
                &labels,
            ),
            refused: telemetry.counter(
                &format!("otelcol_receiver_refused_{}", S::ITEMS),
                "Items that could not be pushed into the pipeline.",
                &labels,
            ),
        }
    }

    /// Hands a batch to the pipelines, or says why not.
    pub(crate) async fn accept(&self, batch: Batch<S>) -> Result<(), SendError> {
        let n = batch.len() as u64;
        match self.output.offer(batch, BACKPRESSURE_WAIT).await {
            Ok(()) => {
                self.accepted.add(n);
                Ok(())
            }
            Err(e) => {
                self.refused.add(n);
                Err(e)
            }
        }
    }
}

/// Per-signal entries for one transport.
pub(crate) struct Entries {
    pub traces: Option<Entry<sidekick_collector::payload::TracesSignal>>,
    pub metrics: Option<Entry<sidekick_collector::payload::MetricsSignal>>,
    pub logs: Option<Entry<sidekick_collector::payload::LogsSignal>>,
}

impl Entries {
    fn new(
        outputs: &ReceiverOutputs,
        telemetry: &Telemetry,
        receiver: &str,
        transport: &str,
    ) -> Self {
        Entries {
            traces: outputs
                .traces
                .clone()
                .map(|o| Entry::new(o, telemetry, receiver, transport)),
            metrics: outputs
                .metrics
                .clone()
                .map(|o| Entry::new(o, telemetry, receiver, transport)),
            logs: outputs
                .logs
                .clone()
                .map(|o| Entry::new(o, telemetry, receiver, transport)),
        }
    }
}

impl Receiver for OtlpReceiver {
    fn run(self: Box<Self>, outputs: ReceiverOutputs, stop: Stop) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let limits = router::Limits {
                grpc_message: self
                    .grpc
                    .as_ref()
                    .map(|(_, g, _)| g.max_recv_msg_size_mib)
                    .unwrap_or(GrpcConfig::default().max_recv_msg_size_mib)
                    << 20,
                http_body: self
                    .http
                    .as_ref()
                    .map(|(_, h, _)| h.max_request_body_size)
                    .unwrap_or(HttpConfig::default().max_request_body_size),
            };
            let mut paths = self
                .http
                .as_ref()
                .map(|(_, h, _)| h.clone())
                .unwrap_or_default();
            for p in [
                &mut paths.traces_url_path,
                &mut paths.metrics_url_path,
                &mut paths.logs_url_path,
            ] {
                *p = url_path(p);
            }
            let cors = paths.cors.clone();
            let router = router::router(router::State {
                grpc: Entries::new(&outputs, &self.telemetry, &self.name, "grpc"),
                http: Entries::new(&outputs, &self.telemetry, &self.name, "http"),
                refused: router::Refusals::new(&self.telemetry, &self.name),
                limits,
                paths,
            });
            let router = match cors {
                Some(c) => router.layer(router::cors(&c)),
                None => router,
            };
            let mut tasks = tokio::task::JoinSet::new();
            if let Some((listener, g, options)) = self.grpc {
                let keepalive = g
                    .keepalive
                    .and_then(|k| k.server_parameters)
                    .unwrap_or_default();
                let options = ServerOptions {
                    keepalive_interval: keepalive.time.map(|d| d.get()),
                    keepalive_timeout: keepalive.timeout.map(|d| d.get()),
                    max_concurrent_streams: g.max_concurrent_streams,
                    ..options
                };
                let (router, stop) = (router.clone(), stop.clone().fired());
                tasks.spawn(async move { serve_with(listener, router, &options, stop).await });
            }
            if let Some((listener, _, options)) = self.http {
                let (router, stop) = (router.clone(), stop.clone().fired());
                tasks.spawn(async move { serve_with(listener, router, &options, stop).await });
            }
            // The router holds clones of the outputs; ours go now, and the router's when
            // both listeners stop, so that the pipelines see their inputs close.
            drop(outputs);
            drop(router);
            while tasks.join_next().await.is_some() {}
        })
    }
}

fn log_listening(name: &str, endpoint: &str, listener: &TcpListener) {
    if let Ok(address) = listener.local_addr() {
        info!(receiver = %name, endpoint, address = %address, "listening (OTLP/gRPC and OTLP/HTTP)");
    }
}

#[cfg(test)]
mod tests;
