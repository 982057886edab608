//! One router for both of the receiver's listeners: gRPC methods and OTLP/HTTP paths
//! side by side, told apart by content type and path, and every request that cannot
//! be served answered with an error status, counted by reason and logged.

use std::sync::Arc;
use std::time::Duration;

use ::http::{header, HeaderValue, StatusCode};
use axum::extract::{Request, State as Extract};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use sidekick_collector::payload::{LogsSignal, MetricsSignal, Signal, TracesSignal};
use sidekick_collector::telemetry::{Counter, LogBurst, Telemetry};
use tracing::warn;

use super::{grpc, http, CorsConfig, Entries, Entry, HttpConfig};

/// Size limits of each protocol, whichever listener a request arrives on.
#[derive(Clone, Copy)]
pub(super) struct Limits {
    /// Largest gRPC message after decompression, in bytes.
    pub grpc_message: usize,
    /// Largest OTLP/HTTP body, as sent and after decompression, in bytes.
    pub http_body: usize,
}

pub(super) struct State {
    pub grpc: Entries,
    pub http: Entries,
    pub refused: Refusals,
    pub limits: Limits,
    /// The OTLP/HTTP paths.
    pub paths: HttpConfig,
}

/// Why a request was refused before its items could be counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Reason {
    UnknownPath,
    MethodNotAllowed,
    UnsupportedMediaType,
    NoPipeline,
    Malformed,
    TooLarge,
}

impl Reason {
    const ALL: [Reason; 6] = [
        Reason::UnknownPath,
        Reason::MethodNotAllowed,
        Reason::UnsupportedMediaType,
        Reason::NoPipeline,
        Reason::Malformed,
        Reason::TooLarge,
    ];

    fn label(self) -> &'static str {
        match self {
            Reason::UnknownPath => "unknown_path",
            Reason::MethodNotAllowed => "method_not_allowed",
            Reason::UnsupportedMediaType => "unsupported_media_type",
            Reason::NoPipeline => "no_pipeline",
            Reason::Malformed => "malformed",
            Reason::TooLarge => "too_large",
        }
    }
}

/// `sidekick_receiver_refused_requests{receiver,reason}` and a log line per burst.
pub(super) struct Refusals {
    receiver: String,
    counters: Vec<(Reason, Counter)>,
    log: LogBurst,
}

impl Refusals {
    pub fn new(telemetry: &Telemetry, receiver: &str) -> Self {
        let counters = Reason::ALL
            .iter()
            .map(|r| {
                let c = telemetry.counter(
                    "sidekick_receiver_refused_requests",
                    "Requests refused before their items could be read, by reason.",
                    &[("receiver", receiver), ("reason", r.label())],
                );
                (*r, c)
            })
            .collect();
        Refusals {
            receiver: receiver.to_string(),
            counters,
            log: LogBurst::new(Duration::from_secs(10)),
        }
    }

    /// Counts and (rate-limited) logs one refused request.
    pub fn record(&self, reason: Reason, method: &str, path: &str, message: &str) {
        if let Some((_, c)) = self.counters.iter().find(|(r, _)| *r == reason) {
            c.add(1);
        }
        if let Some(held_back) = self.log.check() {
            warn!(
                receiver = %self.receiver,
                reason = reason.label(),
                method,
                path,
                error = message,
                similar_since_last = held_back,
                "refused an OTLP request"
            );
        }
    }
}

/// A signal whose entries can be picked from [`Entries`].
pub(super) trait Pick: Signal {
    fn pick(entries: &Entries) -> Option<&Entry<Self>>;
}

impl Pick for TracesSignal {
    fn pick(entries: &Entries) -> Option<&Entry<Self>> {
        entries.traces.as_ref()
    }
}

impl Pick for MetricsSignal {
    fn pick(entries: &Entries) -> Option<&Entry<Self>> {
        entries.metrics.as_ref()
    }
}

impl Pick for LogsSignal {
    fn pick(entries: &Entries) -> Option<&Entry<Self>> {
        entries.logs.as_ref()
    }
}

type Shared = Arc<State>;

pub(super) fn router(state: State) -> Router {
    let paths = state.paths.clone();
    Router::new()
        .route(
            TracesSignal::GRPC_PATH,
            post(grpc_method::<TracesSignal>).fallback(wrong_method),
        )
        .route(
            MetricsSignal::GRPC_PATH,
            post(grpc_method::<MetricsSignal>).fallback(wrong_method),
        )
        .route(
            LogsSignal::GRPC_PATH,
            post(grpc_method::<LogsSignal>).fallback(wrong_method),
        )
        .route(
            &paths.traces_url_path,
            post(http_path::<TracesSignal>).fallback(wrong_method),
        )
        .route(
            &paths.metrics_url_path,
            post(http_path::<MetricsSignal>).fallback(wrong_method),
        )
        .route(
            &paths.logs_url_path,
            post(http_path::<LogsSignal>).fallback(wrong_method),
        )
        .fallback(unknown)
        .with_state(Arc::new(state))
}

/// Whether the request is gRPC (`application/grpc`, `application/grpc+proto`, …).
fn is_grpc(req: &Request) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

async fn grpc_method<S: Pick>(Extract(state): Extract<Shared>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    if !is_grpc(&req) {
        let message = format!(
            "{path} is a gRPC method and this request is not gRPC; for OTLP/HTTP POST to {}",
            http_path_of::<S>(&state.paths)
        );
        state
            .refused
            .record(Reason::UnsupportedMediaType, "POST", &path, &message);
        return http::refuse(&req, StatusCode::UNSUPPORTED_MEDIA_TYPE, message);
    }
    let Some(entry) = S::pick(&state.grpc) else {
        let message = format!("no pipeline takes {} from this receiver", S::KIND);
        state
            .refused
            .record(Reason::NoPipeline, "POST", &path, &message);
        return grpc::unimplemented(&message);
    };
    let response = grpc::export(entry, req, state.limits.grpc_message).await;
    match grpc::status_code(&response) {
        Some(tonic::Code::InvalidArgument) => {
            state
                .refused
                .record(Reason::Malformed, "POST", &path, "malformed message")
        }
        Some(tonic::Code::ResourceExhausted) => state.refused.record(
            Reason::TooLarge,
            "POST",
            &path,
            "message larger than max_recv_msg_size_mib",
        ),
        _ => {}
    }
    response
}

fn http_path_of<S: Signal>(paths: &HttpConfig) -> &str {
    match S::KIND {
        sidekick_collector::config::Signal::Traces => &paths.traces_url_path,
        sidekick_collector::config::Signal::Metrics => &paths.metrics_url_path,
        sidekick_collector::config::Signal::Logs => &paths.logs_url_path,
    }
}

async fn http_path<S: Pick>(Extract(state): Extract<Shared>, req: Request) -> Response
where
    S::Request: serde::de::DeserializeOwned,
{
    let path = req.uri().path().to_string();
    if is_grpc(&req) {
        let message = format!(
            "{path} is the OTLP/HTTP path; gRPC clients call {}",
            S::GRPC_PATH
        );
        state
            .refused
            .record(Reason::UnsupportedMediaType, "POST", &path, &message);
        return grpc::unimplemented(&message);
    }
    match http::export(S::pick(&state.http), state.limits.http_body, req).await {
        Ok(response) => response,
        Err((reason, message, response)) => {
            state.refused.record(reason, "POST", &path, &message);
            response
        }
    }
}

async fn wrong_method(Extract(state): Extract<Shared>, req: Request) -> Response {
    let message = format!("use POST, not {}", req.method());
    state.refused.record(
        Reason::MethodNotAllowed,
        req.method().as_str(),
        req.uri().path(),
        &message,
    );
    let mut response = http::refuse(&req, StatusCode::METHOD_NOT_ALLOWED, message);
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST"));
    response
}

async fn unknown(Extract(state): Extract<Shared>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let message = format!(
        "unknown path {path}: OTLP/HTTP goes to {}, {} or {}",
        state.paths.traces_url_path, state.paths.metrics_url_path, state.paths.logs_url_path
    );
    state
        .refused
        .record(Reason::UnknownPath, req.method().as_str(), &path, &message);
    if is_grpc(&req) {
        return grpc::unimplemented(&message);
    }
    http::refuse(&req, StatusCode::NOT_FOUND, message)
}

/// CORS for browser SDKs: preflight answers and `Access-Control-Allow-Origin` on posts
/// from the allowed origins (`*` for any; `https://*.example.com` for subdomains).
pub(super) fn cors(config: &CorsConfig) -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};
    let patterns = config.allowed_origins.clone();
    let origin = if patterns.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::predicate(move |origin: &HeaderValue, _| {
            let origin = origin.to_str().unwrap_or("");
            patterns.iter().any(|p| origin_matches(p, origin))
        })
    };
    let headers = if config.allowed_headers.iter().any(|h| h == "*") {
        AllowHeaders::mirror_request()
    } else {
        let mut names: Vec<header::HeaderName> = config
            .allowed_headers
            .iter()
            .filter_map(|h| header::HeaderName::from_bytes(h.as_bytes()).ok())
            .collect();
        names.extend([header::CONTENT_TYPE, header::CONTENT_ENCODING]);
        AllowHeaders::list(names)
    };
    let mut layer = CorsLayer::new()
        .allow_origin(origin)
        .allow_methods([::http::Method::POST])
        .allow_headers(headers);
    if let Some(age) = config.max_age {
        layer = layer.max_age(Duration::from_secs(age));
    }
    layer
}

/// `https://*.example.com` matches `https://a.example.com`; other patterns match exactly.
fn origin_matches(pattern: &str, origin: &str) -> bool {
    match pattern.split_once('*') {
        Some((prefix, suffix)) => {
            origin.len() > prefix.len() + suffix.len()
                && origin.starts_with(prefix)
                && origin.ends_with(suffix)
        }
        None => pattern == origin,
    }
}
