//! Serving HTTP/1 and HTTP/2 (including gRPC) on a bound listener until told to stop,
//! then letting in-flight requests finish. Every surface is an axum [`Router`], so
//! unknown paths answer 404 and wrong methods 405 with `Allow` by construction.
//!
//! Every listener is bounded ([`ServerOptions`]): at most `max_connections` open
//! connections, HTTP/1 request headers within `header_read_timeout` of their first byte,
//! a request body within `body_read_timeout` of the handler starting to read it, and no
//! connection kept longer than `idle_timeout` without a request in flight. What each
//! listener did about it is counted in [`ListenerStats`].

use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use sidekick_config::BuildError;

use crate::auth::Authenticator;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::time::{Instant, Sleep};
use tracing::{debug, warn};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long open connections get to finish their requests after stop.
const GRACE: Duration = Duration::from_secs(5);

/// Default for [`ServerOptions::max_connections`] where the open-file limit is high
/// enough (see [`default_max_connections`]).
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default for [`ServerOptions::header_read_timeout`].
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default for [`ServerOptions::idle_timeout`]: longer than the 60 s between exports of
/// an OTLP SDK's periodic metric reader (so its connection is reused) and than the 90 s
/// after which Go's and most other HTTP clients drop an idle pooled connection themselves
/// (so the client, not the server, usually closes first and no export races a close).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Default for [`ServerOptions::body_read_timeout`].
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// HTTP/2 header block limit advertised to clients (hyper's default, stated here).
const H2_MAX_HEADER_LIST_SIZE: u32 = 16 * 1024;
/// Streams a client may open and reset before they are accepted (h2's default, stated
/// here: the bound against "rapid reset" floods).
const H2_MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;

/// The HTTP/2 client connection preface.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

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

/// How a listener treats its connections. Build it with
/// `ServerOptions { field: value, ..ServerOptions::default() }` so that new fields keep
/// their defaults. `None` turns a limit off.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Send an HTTP/2 ping after this long without frames, to find dead peers.
    pub keepalive_interval: Option<Duration>,
    /// Close the connection when a ping is not answered within this. Default 20s.
    pub keepalive_timeout: Option<Duration>,
    /// Concurrent HTTP/2 streams per connection. Default: hyper's (200).
    pub max_concurrent_streams: Option<u32>,
    /// Open connections on this listener at most. One more is accepted and closed at
    /// once (the client sees the connection closed or reset, and can back off and
    /// retry), and counted in [`ListenerStats::refused_connections`]. Default:
    /// [`default_max_connections`].
    pub max_connections: Option<usize>,
    /// An HTTP/1 request's headers must have arrived this long after their first byte;
    /// otherwise the connection is closed (slowloris). HTTP/2 header blocks are bounded
    /// by `idle_timeout` instead (no request is in flight until they are complete).
    /// Default [`DEFAULT_HEADER_READ_TIMEOUT`].
    pub header_read_timeout: Option<Duration>,
    /// A connection with no request in flight for this long is closed (HTTP/1 keep-alive
    /// and HTTP/2 alike, including one that never sends a request; HTTP/2 gets a GOAWAY
    /// first). HTTP/2 pings do not count as activity. Default [`DEFAULT_IDLE_TIMEOUT`].
    pub idle_timeout: Option<Duration>,
    /// A request body must have been received this long after the handler starts reading
    /// it. Past that the read fails (for gRPC with `DEADLINE_EXCEEDED`), and an HTTP
    /// request is answered 408 (HTTP/1: and its connection closed). Time the handler
    /// spends before or after reading the body does not count. Not applied by
    /// [`serve_service`]. Default [`DEFAULT_BODY_READ_TIMEOUT`].
    pub body_read_timeout: Option<Duration>,
    /// Where to count what this listener did; `None`: not counted anywhere readable.
    pub stats: Option<Arc<ListenerStats>>,
    /// Serve TLS (and, if it asks for client certificates, mutual TLS). The handshake
    /// must be done within `header_read_timeout` of the connection opening.
    pub tls: Option<crate::tls::listener::Acceptor>,
    /// Check every request's headers with this before the handler runs (so before its
    /// body is read); refused requests are answered 401 (gRPC: `UNAUTHENTICATED`).
    pub auth: Option<Arc<Authenticator>>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            keepalive_interval: None,
            keepalive_timeout: None,
            max_concurrent_streams: None,
            max_connections: Some(default_max_connections()),
            header_read_timeout: Some(DEFAULT_HEADER_READ_TIMEOUT),
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            body_read_timeout: Some(DEFAULT_BODY_READ_TIMEOUT),
            stats: None,
            tls: None,
            auth: None,
        }
    }
}

/// The default connection limit per listener: [`DEFAULT_MAX_CONNECTIONS`], lowered to a
/// quarter of the process's open-file limit (Linux, read once) when that is lower, so
/// that one flooded listener cannot take every file descriptor from the others.
pub fn default_max_connections() -> usize {
    static DEFAULT: OnceLock<usize> = OnceLock::new();
    *DEFAULT.get_or_init(|| {
        let soft = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|limits| open_files_soft_limit(&limits));
        match soft {
            Some(soft) => (soft / 4).clamp(16, DEFAULT_MAX_CONNECTIONS),
            None => DEFAULT_MAX_CONNECTIONS,
        }
    })
}

/// The soft "Max open files" of a `/proc/self/limits` text; `None` if unlimited or absent.
fn open_files_soft_limit(limits: &str) -> Option<usize> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// What one listener did, for the caller to read (e.g. into self-metrics). Shared through
/// [`ServerOptions::stats`]; all counts are since the listener started.
#[derive(Debug, Default)]
pub struct ListenerStats {
    accepted: AtomicU64,
    open: AtomicUsize,
    refused: AtomicU64,
    idle_closed: AtomicU64,
    header_timeouts: AtomicU64,
    body_timeouts: AtomicU64,
    tls_failures: AtomicU64,
    unauthenticated: AtomicU64,
}

impl ListenerStats {
    /// Connections accepted and served (refused ones not included).
    pub fn accepted_connections(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Connections closed at once because `max_connections` were open.
    pub fn refused_connections(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Connections closed after `idle_timeout` without a request (normal housekeeping).
    pub fn idle_closed(&self) -> u64 {
        self.idle_closed.load(Ordering::Relaxed)
    }

    /// Connections closed because request headers did not arrive in time.
    pub fn header_timeouts(&self) -> u64 {
        self.header_timeouts.load(Ordering::Relaxed)
    }

    /// Requests whose body did not arrive in time.
    pub fn body_timeouts(&self) -> u64 {
        self.body_timeouts.load(Ordering::Relaxed)
    }

    /// TLS handshakes that failed or did not finish in time (a client without a
    /// certificate under mutual TLS, plain HTTP sent to a TLS port, an untrusted CA).
    pub fn tls_failures(&self) -> u64 {
        self.tls_failures.load(Ordering::Relaxed)
    }

    /// Requests refused by the listener's authenticator.
    pub fn unauthenticated(&self) -> u64 {
        self.unauthenticated.load(Ordering::Relaxed)
    }

    /// Header and body read timeouts together: clients too slow to be served.
    pub fn timed_out(&self) -> u64 {
        self.header_timeouts() + self.body_timeouts()
    }
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
    let router = match &options.auth {
        Some(auth) => {
            let stats = options.stats.clone().unwrap_or_default();
            router.layer(axum::middleware::from_fn_with_state(
                (auth.clone(), stats),
                authenticate,
            ))
        }
        None => router,
    };
    let service = TowerToHyperService::new(router);
    run::<_, TimedBody, _>(listener, service, options, stop).await
}

/// Lets a request through to the handler only when its headers pass the listener's
/// authenticator; otherwise answers at once, the body unread.
async fn authenticate(
    axum::extract::State((auth, stats)): axum::extract::State<(
        Arc<Authenticator>,
        Arc<ListenerStats>,
    )>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    // A browser's CORS preflight never carries credentials (the Fetch standard): it is
    // answered by the CORS layer, and the real request that follows is checked.
    let preflight = request.method() == http::Method::OPTIONS
        && request
            .headers()
            .contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD);
    let checked = if auth.slow() {
        // bcrypt takes milliseconds by design: on a blocking thread, two at a time, so
        // wrong passwords cannot stall the workers that serve everything else.
        static SLOW: OnceLock<Arc<Semaphore>> = OnceLock::new();
        let slots = SLOW.get_or_init(|| Arc::new(Semaphore::new(2))).clone();
        let (auth, headers) = (auth.clone(), request.headers().clone());
        let permit = slots.acquire_owned().await;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            auth.check(&headers)
        })
        .await
        .unwrap_or(Err(crate::auth::Refused {
            challenge: "Basic realm=\"sidekick\"",
        }))
    } else {
        auth.check(request.headers())
    };
    let refused = match checked {
        Ok(()) => return next.run(request).await,
        Err(_) if preflight => return next.run(request).await,
        Err(refused) => refused,
    };
    stats.unauthenticated.fetch_add(1, Ordering::Relaxed);
    let grpc = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let mut response = if grpc {
        // A trailers-only gRPC answer: status 16, UNAUTHENTICATED.
        let mut r = response(http::StatusCode::OK, "application/grpc", Bytes::new());
        let h = r.headers_mut();
        h.insert("grpc-status", http::HeaderValue::from_static("16"));
        h.insert(
            "grpc-message",
            http::HeaderValue::from_static("missing%20or%20wrong%20credentials"),
        );
        r
    } else {
        response(
            http::StatusCode::UNAUTHORIZED,
            "text/plain; charset=utf-8",
            "missing or wrong credentials\n",
        )
    };
    response.headers_mut().insert(
        http::header::WWW_AUTHENTICATE,
        http::HeaderValue::from_static(refused.challenge),
    );
    response
}

fn builder(options: &ServerOptions) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper's own header timer restarts as soon as a response is written, so it would
    // also close every idle keep-alive connection after `header_read_timeout`; ours
    // starts at a request's first byte instead (see `Watch`).
    builder.http1().header_read_timeout(None);
    let mut h2 = builder.http2();
    h2.timer(TokioTimer::new())
        .max_header_list_size(H2_MAX_HEADER_LIST_SIZE)
        .max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESET_STREAMS);
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

/// [`serve`] for a plain hyper service (test fakes that answer every path alike). The
/// default limits apply, except `body_read_timeout` (the service reads hyper's body).
pub async fn serve_service<S, B>(listener: TcpListener, service: S, stop: impl Future<Output = ()>)
where
    S: hyper::service::Service<http::Request<Incoming>, Response = http::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    run::<_, Incoming, _>(listener, service, &ServerOptions::default(), stop).await
}

async fn run<S, RB, B>(
    listener: TcpListener,
    service: S,
    options: &ServerOptions,
    stop: impl Future<Output = ()>,
) where
    S: hyper::service::Service<http::Request<RB>, Response = http::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + Send + 'static,
    RB: FromIncoming + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let builder = Arc::new(builder(options));
    let stats = options.stats.clone().unwrap_or_default();
    let limits = Arc::new(Limits {
        header_read: options.header_read_timeout,
        idle: options.idle_timeout,
        body_read: options.body_read_timeout,
        stats: stats.clone(),
    });
    let slots = options
        .max_connections
        .map(|n| Arc::new(Semaphore::new(n.min(Semaphore::MAX_PERMITS))));
    let mut warned_full: Option<Instant> = None;
    let (stop_tx, stop_rx) = watch::channel(false);
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
        let permit = match &slots {
            None => None,
            Some(slots) => match slots.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    stats.refused.fetch_add(1, Ordering::Relaxed);
                    if warned_full.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                        warned_full = Some(Instant::now());
                        let address = listener.local_addr().ok();
                        warn!(
                            ?address,
                            max_connections = options.max_connections,
                            "listener is at max_connections: closing new connections at once"
                        );
                    }
                    drop(stream);
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let open = Open::new(&stats);
        let (service, builder, limits, mut stop_rx) = (
            service.clone(),
            builder.clone(),
            limits.clone(),
            stop_rx.clone(),
        );
        let tls = options.tls.clone();
        tokio::spawn(async move {
            let io = match tls {
                None => Stream::Plain(stream),
                Some(acceptor) => {
                    let within = limits.header_read.unwrap_or(DEFAULT_HEADER_READ_TIMEOUT);
                    let handshake = tokio::time::timeout(within, acceptor.0.accept(stream));
                    let done = tokio::select! {
                        done = handshake => done,
                        _ = stop_rx.wait_for(|stop| *stop) => return,
                    };
                    match done {
                        Ok(Ok(tls)) => Stream::Tls(Box::new(tls)),
                        Ok(Err(e)) => {
                            limits.stats.tls_failures.fetch_add(1, Ordering::Relaxed);
                            debug!(error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            limits.stats.tls_failures.fetch_add(1, Ordering::Relaxed);
                            debug!("TLS handshake not finished in time");
                            return;
                        }
                    }
                }
            };
            let watch = Arc::new(Watch::new());
            let io = TokioIo::new(TrackedIo {
                io,
                watch: watch.clone(),
                sniff: Sniff::Matched(0),
            });
            let service = Limited {
                inner: service,
                watch: watch.clone(),
                limits: limits.clone(),
                _body: PhantomData::<fn(RB)>,
            };
            let conn = builder.serve_connection(io, service);
            drive(conn, &watch, &limits, stop_rx).await;
            drop((permit, open));
        });
    }
    drop(listener);
    drop(stop_rx);
    let _ = stop_tx.send(true);
    // Each connection closes itself within GRACE of stop; the margin is for the last one.
    let _ = tokio::time::timeout(GRACE + Duration::from_secs(1), stop_tx.closed()).await;
}

/// Runs one connection: until it ends, or is closed for a timeout, or for stop after
/// [`GRACE`].
async fn drive<C>(conn: C, watch: &Watch, limits: &Limits, mut stop: watch::Receiver<bool>)
where
    C: Future<Output = Result<(), BoxError>> + GracefulShutdown,
{
    tokio::pin!(conn);
    let mut stopping = false;
    // Set once the connection was asked to close: then it is dropped at this instant.
    let mut close_at: Option<Instant> = None;
    loop {
        let check = if close_at.is_none() {
            watch.next_check(limits)
        } else {
            None
        };
        let far = || Instant::now() + Duration::from_secs(86_400);
        tokio::select! {
            biased;
            ended = conn.as_mut() => {
                if let Err(e) = ended {
                    debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stop.wait_for(|stop| *stop), if !stopping => {
                stopping = true;
                if close_at.is_none() {
                    conn.as_mut().graceful_shutdown();
                    close_at = Some(Instant::now() + GRACE);
                }
            }
            _ = tokio::time::sleep_until(close_at.unwrap_or_else(far)), if close_at.is_some() => {
                debug!("closing a connection that did not finish in time");
                return;
            }
            _ = tokio::time::sleep_until(check.unwrap_or_else(far)), if check.is_some() => {
                match watch.expired(limits, Instant::now()) {
                    Some(Expired::Headers) => {
                        limits.stats.header_timeouts.fetch_add(1, Ordering::Relaxed);
                        debug!("closing a connection whose request headers did not arrive in time");
                        return;
                    }
                    Some(Expired::Idle(idle)) => {
                        limits.stats.idle_closed.fetch_add(1, Ordering::Relaxed);
                        debug!("closing an idle connection");
                        conn.as_mut().graceful_shutdown();
                        // Nothing is in flight; the grace only covers a request that
                        // raced the GOAWAY, and a peer that does not answer it.
                        close_at = Some(Instant::now() + idle.min(GRACE));
                    }
                    None => {}
                }
            }
            _ = watch.wake.notified() => {}
        }
    }
}

/// hyper-util's connection futures, which can be asked to finish and close.
trait GracefulShutdown {
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<I, S, E> GracefulShutdown for auto::Connection<'_, I, S, E>
where
    S: hyper::service::HttpService<Incoming>,
    S::Error: Into<BoxError>,
    S::ResBody: Body + Send + 'static,
    <S::ResBody as Body>::Error: Into<BoxError>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, S::ResBody>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        auto::Connection::graceful_shutdown(self)
    }
}

/// A listener's limits, shared by its connections.
struct Limits {
    header_read: Option<Duration>,
    idle: Option<Duration>,
    body_read: Option<Duration>,
    stats: Arc<ListenerStats>,
}

/// Counts a connection open until dropped.
struct Open(Arc<ListenerStats>);

impl Open {
    fn new(stats: &Arc<ListenerStats>) -> Self {
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        stats.open.fetch_add(1, Ordering::Relaxed);
        Open(stats.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One connection's clocks, shared by its IO, its service and its driver; dropped with
/// the connection.
struct Watch {
    epoch: Instant,
    /// Requests whose response has not been fully written (or dropped).
    in_flight: AtomicUsize,
    /// When `in_flight` last became 0 (or the connection opened), in `stamp`s.
    idle_since: AtomicU64,
    /// When the first byte of the HTTP/1 request being read arrived; 0: none.
    headers_since: AtomicU64,
    /// The connection speaks HTTP/2 (its preface arrived).
    http2: AtomicBool,
    /// Tells the driver that a deadline may have come closer.
    wake: Notify,
}

enum Expired {
    Headers,
    Idle(Duration),
}

impl Watch {
    fn new() -> Self {
        Watch {
            epoch: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(1),
            headers_since: AtomicU64::new(0),
            http2: AtomicBool::new(false),
            wake: Notify::new(),
        }
    }

    /// Now as nanoseconds since the connection opened, plus one (0 means "none").
    fn stamp(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX - 1) + 1
    }

    fn instant(&self, stamp: u64) -> Instant {
        self.epoch + Duration::from_nanos(stamp.saturating_sub(1))
    }

    fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.headers_since.store(0, Ordering::SeqCst);
    }

    fn request_ended(&self) {
        if self.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.idle_since.store(self.stamp(), Ordering::SeqCst);
            self.wake.notify_one();
        }
    }

    /// Bytes arrived: between HTTP/1 requests they start the header clock.
    fn bytes_read(&self) {
        if self.http2.load(Ordering::Relaxed) || self.in_flight.load(Ordering::SeqCst) > 0 {
            return;
        }
        if self
            .headers_since
            .compare_exchange(0, self.stamp(), Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            self.wake.notify_one();
        }
    }

    fn is_http2(&self) {
        self.http2.store(true, Ordering::Relaxed);
        self.headers_since.store(0, Ordering::SeqCst);
    }

    fn deadlines(&self, limits: &Limits) -> (Option<Instant>, Option<Instant>) {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return (None, None);
        }
        let since = self.headers_since.load(Ordering::SeqCst);
        let headers = limits
            .header_read
            .filter(|_| since != 0)
            .map(|t| self.instant(since) + t);
        let idle = limits
            .idle
            .map(|t| self.instant(self.idle_since.load(Ordering::SeqCst)) + t);
        (headers, idle)
    }

    /// When to look again, or `None` to wait for a request to end or bytes to arrive.
    fn next_check(&self, limits: &Limits) -> Option<Instant> {
        match self.deadlines(limits) {
            (Some(h), Some(i)) => Some(h.min(i)),
            (h, i) => h.or(i),
        }
    }

    fn expired(&self, limits: &Limits, now: Instant) -> Option<Expired> {
        let (headers, idle) = self.deadlines(limits);
        if headers.is_some_and(|h| h <= now) {
            return Some(Expired::Headers);
        }
        match (idle, limits.idle) {
            (Some(i), Some(after)) if i <= now => Some(Expired::Idle(after)),
            _ => None,
        }
    }
}

/// Marks a request in flight until dropped (with its response body, or its future).
struct InFlight(Arc<Watch>);

impl InFlight {
    fn new(watch: &Arc<Watch>) -> Self {
        watch.request_started();
        InFlight(watch.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

/// How far the connection's first bytes matched the HTTP/2 preface.
enum Sniff {
    Matched(usize),
    Decided,
}

/// A connection's socket, under TLS or not.
enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// The socket, noting the bytes that arrive for the connection's [`Watch`]. It must see
/// the plain HTTP bytes (under any TLS layer) for the HTTP/2 preface to be recognised.
struct TrackedIo {
    io: Stream,
    watch: Arc<Watch>,
    sniff: Sniff,
}

impl TrackedIo {
    fn observe(&mut self, bytes: &[u8]) {
        if let Sniff::Matched(matched) = self.sniff {
            let n = bytes.len().min(H2_PREFACE.len() - matched);
            if bytes[..n] != H2_PREFACE[matched..matched + n] {
                self.sniff = Sniff::Decided;
            } else if matched + n == H2_PREFACE.len() {
                self.sniff = Sniff::Decided;
                self.watch.is_http2();
                return;
            } else {
                self.sniff = Sniff::Matched(matched + n);
            }
        }
        self.watch.bytes_read();
    }
}

impl AsyncRead for TrackedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.observe(&buf.filled()[before..]);
        }
        read
    }
}

impl AsyncWrite for TrackedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The request body a served service gets: hyper's own, or one with a read deadline.
trait FromIncoming: Send {
    /// Whether the body enforces `body_read_timeout`.
    const TIMED: bool;
    fn from_incoming(body: Incoming, deadline: Option<BodyDeadline>) -> Self;
}

impl FromIncoming for Incoming {
    const TIMED: bool = false;

    fn from_incoming(body: Incoming, _: Option<BodyDeadline>) -> Self {
        body
    }
}

/// One request's body read limit.
struct BodyDeadline {
    after: Duration,
    timed_out: Arc<AtomicBool>,
    stats: Arc<ListenerStats>,
}

/// A request body that fails when it has not arrived `after` its first read.
struct TimedBody {
    inner: Incoming,
    deadline: Option<BodyDeadline>,
    started: Option<Instant>,
    sleep: Option<Pin<Box<Sleep>>>,
    failed: bool,
}

impl FromIncoming for TimedBody {
    const TIMED: bool = true;

    fn from_incoming(inner: Incoming, deadline: Option<BodyDeadline>) -> Self {
        TimedBody {
            inner,
            deadline,
            started: None,
            sleep: None,
            failed: false,
        }
    }
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.failed {
            return Poll::Ready(None);
        }
        let started = *this.started.get_or_insert_with(Instant::now);
        // What has arrived is always handed over, however late the reader is.
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let Some(deadline) = &this.deadline else {
            return Poll::Pending;
        };
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(started + deadline.after)));
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        this.failed = true;
        deadline.timed_out.store(true, Ordering::SeqCst);
        deadline.stats.body_timeouts.fetch_add(1, Ordering::Relaxed);
        debug!(after = ?deadline.after, "request body did not arrive in time");
        Poll::Ready(Some(Err(Box::new(BodyReadTimeout::new(deadline.after)))))
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The error of a request body that did not arrive within `body_read_timeout`. Its
/// source is a gRPC `DEADLINE_EXCEEDED` status, which tonic answers gRPC calls with.
#[derive(Debug)]
struct BodyReadTimeout {
    after: Duration,
    status: tonic::Status,
}

impl BodyReadTimeout {
    fn new(after: Duration) -> Self {
        BodyReadTimeout {
            after,
            status: tonic::Status::deadline_exceeded(format!(
                "request body not received within {after:?}"
            )),
        }
    }
}

impl std::fmt::Display for BodyReadTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "request body not received within {:?}", self.after)
    }
}

impl std::error::Error for BodyReadTimeout {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.status)
    }
}

/// The service of one connection: marks requests in flight, puts the body deadline on
/// request bodies, and answers 408 for a (non-gRPC) request whose body timed out.
struct Limited<S, RB> {
    inner: S,
    watch: Arc<Watch>,
    limits: Arc<Limits>,
    _body: PhantomData<fn(RB)>,
}

impl<S, RB, B> hyper::service::Service<http::Request<Incoming>> for Limited<S, RB>
where
    S: hyper::service::Service<http::Request<RB>, Response = http::Response<B>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    RB: FromIncoming,
    B: Body + Send + 'static,
{
    type Response = http::Response<Tracked<B>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn call(&self, req: http::Request<Incoming>) -> Self::Future {
        let in_flight = InFlight::new(&self.watch);
        let http1 = req.version() < http::Version::HTTP_2;
        if !http1 {
            // Known from the preface already, unless the bytes were not plain text.
            self.watch.is_http2();
        }
        let grpc = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        let deadline = match self.limits.body_read {
            Some(after) if RB::TIMED => Some(BodyDeadline {
                after,
                timed_out: Arc::new(AtomicBool::new(false)),
                stats: self.limits.stats.clone(),
            }),
            _ => None,
        };
        let timed_out = deadline.as_ref().map(|d| d.timed_out.clone());
        let (parts, body) = req.into_parts();
        let future = self.inner.call(http::Request::from_parts(
            parts,
            RB::from_incoming(body, deadline),
        ));
        Box::pin(async move {
            let response = future.await?;
            if !grpc && timed_out.is_some_and(|t| t.load(Ordering::SeqCst)) {
                return Ok(request_timeout(http1, in_flight));
            }
            Ok(response.map(|body| Tracked {
                body: Some(Box::pin(body)),
                _in_flight: in_flight,
            }))
        })
    }
}

/// 408 with no body; HTTP/1 closes the connection (the rest of the body is not read).
fn request_timeout<B>(http1: bool, in_flight: InFlight) -> http::Response<Tracked<B>> {
    let mut response = http::Response::new(Tracked {
        body: None,
        _in_flight: in_flight,
    });
    *response.status_mut() = http::StatusCode::REQUEST_TIMEOUT;
    if http1 {
        response.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    response
}

/// A response body that keeps its request in flight until written or dropped; `None`:
/// empty.
struct Tracked<B> {
    body: Option<Pin<Box<B>>>,
    _in_flight: InFlight,
}

impl<B: Body> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        match &mut self.body {
            Some(body) => body.as_mut().poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        match &self.body {
            Some(body) => body.size_hint(),
            None => SizeHint::with_exact(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_soft_open_file_limit() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max cpu time              unlimited            unlimited            seconds   \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(open_files_soft_limit(limits), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(open_files_soft_limit(unlimited), None);
        assert_eq!(open_files_soft_limit(""), None);
    }

    #[test]
    fn default_connection_limit_is_bounded() {
        let n = default_max_connections();
        assert!((16..=DEFAULT_MAX_CONNECTIONS).contains(&n), "{n}");
    }
}
