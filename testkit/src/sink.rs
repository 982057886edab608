//! A fake OTLP backend: accepts OTLP over gRPC and over HTTP (protobuf, gzip or zstd) on
//! one port, records every request decoded, and fails on demand.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use sidekick_collector::payload::{LogsSignal, MetricsSignal, Signal, TracesSignal};
use sidekick_collector::pipe::{stop_pair, StopTrigger};
use sidekick_transport::grpc::RawCodec;
use tokio::sync::Notify;
use tonic::codec::CompressionEncoding;

/// How the sink answers the next request instead of accepting it.
#[derive(Debug, Clone)]
pub enum Failure {
    /// A gRPC request gets this status.
    Grpc(tonic::Code),
    /// An HTTP request gets this status, with `Retry-After` seconds when given.
    Http(u16, Option<u64>),
    /// A gRPC request is taken, and answered with a partial success that rejects this
    /// many items.
    Partial(i64),
}

#[derive(Default)]
struct State {
    /// Count items without decoding or keeping them (for load tests).
    count_only: bool,
    counted: std::sync::atomic::AtomicUsize,
    traces: Mutex<Vec<ExportTraceServiceRequest>>,
    metrics: Mutex<Vec<ExportMetricsServiceRequest>>,
    logs: Mutex<Vec<ExportLogsServiceRequest>>,
    /// Request headers seen, in order: (content-encoding or grpc-encoding, all headers).
    headers: Mutex<Vec<http::HeaderMap>>,
    failures: Mutex<VecDeque<Failure>>,
    rejected: Mutex<usize>,
    changed: Notify,
    /// Refuse, as invalid, any traces request holding a span of this name (a backend
    /// validating its input).
    reject_span_named: Mutex<Option<String>>,
    /// Refuse requests over this many bytes (a backend's message size limit).
    max_request_bytes: Mutex<Option<usize>>,
}

pub struct OtlpSink {
    pub address: SocketAddr,
    state: Arc<State>,
    _stop: StopTrigger,
}

impl OtlpSink {
    /// Starts a sink on a free loopback port.
    pub async fn start() -> OtlpSink {
        Self::start_with(State::default()).await
    }

    /// A sink that only counts items (checking their framing), for load tests where
    /// keeping every request would dominate.
    pub async fn start_counting() -> OtlpSink {
        Self::start_with(State {
            count_only: true,
            ..State::default()
        })
        .await
    }

    /// Items received by a counting sink.
    pub fn counted(&self) -> usize {
        self.state
            .counted
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A sink that speaks TLS with `config` (which decides whether clients must present
    /// a certificate). Offer `h2` and `http/1.1` in its ALPN protocols.
    pub async fn start_tls(config: Arc<rustls::ServerConfig>) -> OtlpSink {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind sink");
        let address = listener.local_addr().expect("sink address");
        let state = Arc::new(State::default());
        let (trigger, mut stop) = stop_pair();
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let s = Arc::clone(&state);
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                    _ = stop.wait() => return,
                };
                let acceptor = acceptor.clone();
                let s = Arc::clone(&s);
                tokio::spawn(async move {
                    // A failed handshake (a client without a certificate) just ends here.
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let s = Arc::clone(&s);
                        async move { Ok::<_, Infallible>(handle(s, req).await) }
                    });
                    let builder = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    );
                    let _ = builder
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        OtlpSink {
            address,
            state,
            _stop: trigger,
        }
    }

    async fn start_with(state: State) -> OtlpSink {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind sink");
        let address = listener.local_addr().expect("sink address");
        let state = Arc::new(state);
        let (trigger, stop) = stop_pair();
        let s = Arc::clone(&state);
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let s = Arc::clone(&s);
            async move { Ok::<_, Infallible>(handle(s, req).await) }
        });
        tokio::spawn(sidekick_transport::server::serve_service(
            listener,
            service,
            stop.fired(),
        ));
        OtlpSink {
            address,
            state,
            _stop: trigger,
        }
    }

    /// `http://127.0.0.1:port`, for exporter endpoints.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Refuses every traces request that holds a span named `name` (400 /
    /// `INVALID_ARGUMENT`), with all the other spans in it.
    pub fn reject_spans_named(&self, name: &str) {
        *self.state.reject_span_named.lock().unwrap() = Some(name.to_string());
    }

    /// Refuses every request over `bytes` (413 / `RESOURCE_EXHAUSTED`).
    pub fn limit_request_size(&self, bytes: usize) {
        *self.state.max_request_bytes.lock().unwrap() = Some(bytes);
    }

    /// Answers the next `n` requests with `failure`.
    pub fn fail_next(&self, n: usize, failure: Failure) {
        let mut f = self.state.failures.lock().unwrap();
        f.extend(std::iter::repeat_n(failure, n));
    }

    /// Forgets the failures still queued by [`OtlpSink::fail_next`]: the backend is back.
    pub fn recover(&self) {
        self.state.failures.lock().unwrap().clear();
    }

    pub fn traces(&self) -> Vec<ExportTraceServiceRequest> {
        self.state.traces.lock().unwrap().clone()
    }

    pub fn metrics(&self) -> Vec<ExportMetricsServiceRequest> {
        self.state.metrics.lock().unwrap().clone()
    }

    pub fn logs(&self) -> Vec<ExportLogsServiceRequest> {
        self.state.logs.lock().unwrap().clone()
    }

    pub fn headers(&self) -> Vec<http::HeaderMap> {
        self.state.headers.lock().unwrap().clone()
    }

    /// Requests answered with a scripted failure.
    pub fn rejected(&self) -> usize {
        *self.state.rejected.lock().unwrap()
    }

    pub fn span_count(&self) -> usize {
        self.traces().iter().map(TracesSignal::count).sum()
    }

    pub fn metric_point_count(&self) -> usize {
        self.metrics().iter().map(MetricsSignal::count).sum()
    }

    pub fn log_count(&self) -> usize {
        self.logs().iter().map(LogsSignal::count).sum()
    }

    /// Waits until `done` holds for this sink, or `limit` passes; returns whether it held.
    pub async fn wait_until(&self, limit: Duration, done: impl Fn(&OtlpSink) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.state.changed.notified();
            if done(self) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return done(self);
            }
        }
    }
}

fn record(state: &State, path: &str, body: &[u8]) -> Result<(), String> {
    if state.count_only {
        let schema = if path.ends_with(TracesSignal::HTTP_PATH) || path == TracesSignal::GRPC_PATH {
            TracesSignal::SCHEMA
        } else if path.ends_with(MetricsSignal::HTTP_PATH) || path == MetricsSignal::GRPC_PATH {
            MetricsSignal::SCHEMA
        } else {
            LogsSignal::SCHEMA
        };
        let n = schema.count(body).map_err(|e| e.to_string())?;
        state
            .counted
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        state.changed.notify_waiters();
        return Ok(());
    }
    let err = |e: prost::DecodeError| e.to_string();
    if path.ends_with(TracesSignal::HTTP_PATH) || path == TracesSignal::GRPC_PATH {
        let request = ExportTraceServiceRequest::decode(body).map_err(err)?;
        if let Some(bad) = state.reject_span_named.lock().unwrap().as_deref() {
            let spans = request
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .flat_map(|s| &s.spans);
            if spans.clone().any(|s| s.name == bad) {
                *state.rejected.lock().unwrap() += 1;
                return Err(format!("span named {bad} refused"));
            }
        }
        state.traces.lock().unwrap().push(request);
    } else if path.ends_with(MetricsSignal::HTTP_PATH) || path == MetricsSignal::GRPC_PATH {
        state
            .metrics
            .lock()
            .unwrap()
            .push(ExportMetricsServiceRequest::decode(body).map_err(err)?);
    } else if path.ends_with(LogsSignal::HTTP_PATH) || path == LogsSignal::GRPC_PATH {
        state
            .logs
            .lock()
            .unwrap()
            .push(ExportLogsServiceRequest::decode(body).map_err(err)?);
    } else {
        return Err(format!("unknown path {path}"));
    }
    state.changed.notify_waiters();
    Ok(())
}

fn next_failure(state: &State) -> Option<Failure> {
    let f = state.failures.lock().unwrap().pop_front();
    if f.is_some() {
        *state.rejected.lock().unwrap() += 1;
        state.changed.notify_waiters();
    }
    f
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<tonic::body::Body> {
    if !state.count_only {
        state.headers.lock().unwrap().push(req.headers().clone());
    }
    let is_grpc = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if is_grpc {
        return handle_grpc(state, req).await;
    }
    let (status, body) = handle_http(&state, req).await;
    let mut r = Response::new(tonic::body::Body::new(Full::new(body)));
    *r.status_mut() = status.0;
    if let Some(secs) = status.1 {
        r.headers_mut()
            .insert(http::header::RETRY_AFTER, secs.into());
    }
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/x-protobuf"),
    );
    r
}

async fn handle_http(state: &State, req: Request<Incoming>) -> ((StatusCode, Option<u64>), Bytes) {
    if let Some(Failure::Http(code, retry_after)) = next_failure(state) {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return ((status, retry_after), Bytes::new());
    }
    let path = req.uri().path().to_string();
    let encoding = req
        .headers()
        .get(http::header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return ((StatusCode::BAD_REQUEST, None), Bytes::new()),
    };
    let mut plain = Vec::new();
    let decoded = match encoding.as_str() {
        "gzip" => flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut plain)
            .map(|_| &plain[..]),
        "zstd" => zstd::stream::read::Decoder::new(&body[..])
            .and_then(|mut d| d.read_to_end(&mut plain))
            .map(|_| &plain[..]),
        _ => Ok(&body[..]),
    };
    match decoded
        .map_err(|e| e.to_string())
        .and_then(|b| record(state, &path, b))
    {
        Ok(()) => ((StatusCode::OK, None), Bytes::new()),
        Err(_) => ((StatusCode::BAD_REQUEST, None), Bytes::new()),
    }
}

#[derive(Clone)]
struct GrpcExport {
    state: Arc<State>,
    path: String,
}

impl tonic::server::UnaryService<Bytes> for GrpcExport {
    type Response = Vec<Bytes>;
    type Future = std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<tonic::Response<Vec<Bytes>>, tonic::Status>>
                + Send,
        >,
    >;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let failure = next_failure(&this.state);
            if let Some(Failure::Grpc(code)) = failure {
                return Err(tonic::Status::new(code, "scripted failure"));
            }
            let limit = *this.state.max_request_bytes.lock().unwrap();
            if limit.is_some_and(|max| request.get_ref().len() > max) {
                *this.state.rejected.lock().unwrap() += 1;
                return Err(tonic::Status::resource_exhausted("request too large"));
            }
            record(&this.state, &this.path, request.get_ref())
                .map_err(tonic::Status::invalid_argument)?;
            let answer = match failure {
                // The three signals' responses share this layout.
                Some(Failure::Partial(rejected)) => vec![Bytes::from(
                    opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse {
                        partial_success: Some(
                            opentelemetry_proto::tonic::collector::trace::v1::ExportTracePartialSuccess {
                                rejected_spans: rejected,
                                error_message: "scripted partial success".into(),
                            },
                        ),
                    }
                    .encode_to_vec(),
                )],
                _ => Vec::new(),
            };
            Ok(tonic::Response::new(answer))
        })
    }
}

async fn handle_grpc(state: Arc<State>, req: Request<Incoming>) -> Response<tonic::body::Body> {
    let path = req.uri().path().to_string();
    let mut grpc = tonic::server::Grpc::new(RawCodec)
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd)
        .max_decoding_message_size(64 << 20);
    grpc.unary(GrpcExport { state, path }, req).await
}
