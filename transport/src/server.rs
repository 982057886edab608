//! Serving HTTP/1 and HTTP/2 (including gRPC) on a bound listener until told to stop,
//! then letting in-flight requests finish. Every surface is an axum [`Router`], so
//! unknown paths answer 404 and wrong methods 405 with `Allow` by construction.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use sidekick_config::BuildError;
use tokio::net::TcpListener;
use tracing::debug;

/// How long open connections get to finish their requests after stop.
const GRACE: Duration = Duration::from_secs(5);

/// Binds a TCP listener now (at build time), so a taken port is a startup error.
pub fn bind(address: &str, what: &str) -> Result<TcpListener, BuildError> {
    let addr = resolve(address).map_err(|e| BuildError::new(format!("{what}: {e}")))?;
    let std_listener = std::net::TcpListener::bind(addr)
        .map_err(|e| BuildError::new(format!("{what}: cannot listen on {addr}: {e}")))?;
    std_listener
        .set_nonblocking(true)
        .map_err(|e| BuildError::new(format!("{what}: {e}")))?;
    TcpListener::from_std(std_listener).map_err(|e| BuildError::new(format!("{what}: {e}")))
}

/// `host:port` → a socket address; `localhost` means the IPv4 loopback.
pub fn resolve(address: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = address.parse() {
        return Ok(a);
    }
    let (host, port) = address.rsplit_once(':').ok_or_else(|| {
        format!("invalid address \"{address}\": write host:port, e.g. 127.0.0.1:4317")
    })?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("invalid port in \"{address}\""))?;
    let ip = match host {
        "localhost" | "" => [127, 0, 0, 1].into(),
        h => h
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| {
                format!(
                    "invalid address \"{address}\": the host must be an IP address or localhost"
                )
            })?,
    };
    Ok(SocketAddr::new(ip, port))
}

/// A simple response with a body.
pub fn response(status: http::StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response {
    let mut r = (status, body.into()).into_response();
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r
}

/// How a listener treats its connections.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// Send an HTTP/2 ping after this long without frames, to find dead peers.
    pub keepalive_interval: Option<Duration>,
    /// Close the connection when a ping is not answered within this. Default 20s.
    pub keepalive_timeout: Option<Duration>,
    /// Concurrent HTTP/2 streams per connection. Default: hyper's (200).
    pub max_concurrent_streams: Option<u32>,
}

/// Serves connections from `listener` with `router` until `stop` resolves, then gives
/// open connections [`GRACE`] to finish their requests.
pub async fn serve(listener: TcpListener, router: Router, stop: impl Future<Output = ()>) {
    serve_with(listener, router, &ServerOptions::default(), stop).await
}

/// [`serve`] with connection options.
pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    options: &ServerOptions,
    stop: impl Future<Output = ()>,
) {
    let builder = builder(options);
    run(listener, TowerToHyperService::new(router), builder, stop).await
}

fn builder(options: &ServerOptions) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    let mut h2 = builder.http2();
    h2.timer(TokioTimer::new());
    if let Some(i) = options.keepalive_interval {
        h2.keep_alive_interval(i);
    }
    if let Some(t) = options.keepalive_timeout {
        h2.keep_alive_timeout(t);
    }
    if let Some(n) = options.max_concurrent_streams {
        h2.max_concurrent_streams(n);
    }
    builder
}

/// [`serve`] for a plain hyper service (test fakes that answer every path alike).
pub async fn serve_service<S, B>(listener: TcpListener, service: S, stop: impl Future<Output = ()>)
where
    S: hyper::service::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    run(listener, service, builder(&ServerOptions::default()), stop).await
}

async fn run<S, B>(
    listener: TcpListener,
    service: S,
    builder: auto::Builder<TokioExecutor>,
    stop: impl Future<Output = ()>,
) where
    S: hyper::service::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let graceful = GracefulShutdown::new();
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = &mut stop => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Usually out of file descriptors; back off instead of spinning.
                debug!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let conn = builder
            .serve_connection(TokioIo::new(stream), service.clone())
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(GRACE, graceful.shutdown()).await;
}
