//! Serving HTTP/1 and HTTP/2 (including gRPC) on a bound listener until told to stop,
//! then letting in-flight requests finish. Every surface is an axum [`Router`], so
//! unknown paths answer 404 and wrong methods 405 with `Allow` by construction.
//!
//! Every listener is bounded ([`ServerOptions`]): at most `max_connections` open
//! connections, HTTP/1 request headers within `header_read_timeout` of their first byte,
//! a request body within `body_read_timeout` of the handler starting to read it, and no
//! connection kept longer than `idle_timeout` without a request in flight. What each
//! listener did about it is counted in [`ListenerStats`].

mod conn;

use conn::*;
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
/// The largest HTTP/2 frame a client may send, advertised in SETTINGS (HTTP/2's default
/// is 16 KiB). At 1 MiB, the size of a stream's flow-control window, a client that
/// honours it sends a unary gRPC message in one DATA frame, which the connection reads
/// with fewer system calls and the OTLP receiver copies out in one piece. It bounds
/// nothing the window does not already bound.
pub const H2_MAX_FRAME_SIZE: u32 = 1024 * 1024;
/// Streams a client may open and reset before they are accepted (h2's default, stated
/// here: the bound against "rapid reset" floods).
const H2_MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;

/// The HTTP/2 client connection preface.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Binds a TCP listener now (at build time), so a taken port is a startup error. A socket
/// that a config reload offered for the same address is taken over instead (see
/// [`offer_kept_listeners`]).
pub fn bind(address: &str, what: &str) -> Result<TcpListener, BuildError> {
    let std_listener = match kept::take(address) {
        Some(listener) => listener,
        None => {
            let addr = resolve(address).map_err(|e| BuildError::new(format!("{what}: {e}")))?;
            let listener = std::net::TcpListener::bind(addr)
                .map_err(|e| BuildError::new(format!("{what}: cannot listen on {addr}: {e}")))?;
            listener
                .set_nonblocking(true)
                .map_err(|e| BuildError::new(format!("{what}: {e}")))?;
            listener
        }
    };
    kept::record(address, &std_listener);
    TcpListener::from_std(std_listener).map_err(|e| BuildError::new(format!("{what}: {e}")))
}

pub use kept::{
    close_unclaimed_listeners, close_unclaimed_listeners_except, keep_listeners_for_reloads,
    offer_kept_listeners, restore_kept_listeners,
};

/// Listening sockets kept open across a config reload, so that a listener whose address
/// did not change never refuses a connection: while the old components stop and the new
/// ones start, new connections wait in the socket's backlog and are accepted by the new
/// listener.
mod kept {
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;

    /// Off unless the process can reload its config: a kept copy holds the port open
    /// until the next generation takes it or the process ends.
    static ON: AtomicBool = AtomicBool::new(false);

    /// From now on, every socket bound is kept for the next config reload.
    pub fn keep_listeners_for_reloads() {
        ON.store(true, Ordering::Relaxed);
    }

    #[derive(Default)]
    struct Kept {
        /// A duplicate of every socket the running components listen on, by the address
        /// asked for.
        current: Vec<(String, TcpListener)>,
        /// The previous generation's sockets, waiting for the next one to take them.
        offered: Vec<(String, TcpListener)>,
    }

    static KEPT: Mutex<Kept> = Mutex::new(Kept {
        current: Vec::new(),
        offered: Vec::new(),
    });

    fn lock() -> std::sync::MutexGuard<'static, Kept> {
        KEPT.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn take(address: &str) -> Option<TcpListener> {
        let mut kept = lock();
        let i = kept.offered.iter().position(|(a, _)| a == address)?;
        Some(kept.offered.swap_remove(i).1)
    }

    pub(super) fn record(address: &str, listener: &TcpListener) {
        // Port 0 asks for any port: a reload gets a new one, as a restart would.
        let any_port = super::resolve(address).is_ok_and(|a| a.port() == 0);
        if !ON.load(Ordering::Relaxed) || any_port {
            return;
        }
        let mut kept = lock();
        if kept.current.iter().any(|(a, _)| a == address) {
            return;
        }
        if let Ok(copy) = listener.try_clone() {
            kept.current.push((address.to_string(), copy));
        }
    }

    /// Before the components of a reloaded config are built: the running ones' sockets
    /// are offered to them, by address.
    pub fn offer_kept_listeners() {
        let mut kept = lock();
        let current = std::mem::take(&mut kept.current);
        kept.offered.extend(current);
    }

    /// After they are built: the sockets no component took are closed.
    pub fn close_unclaimed_listeners() {
        close_unclaimed_listeners_except(&[]);
    }

    /// [`close_unclaimed_listeners`], but the sockets of `addresses` stay kept: those of
    /// components a reload left running.
    pub fn close_unclaimed_listeners_except(addresses: &[String]) {
        let mut kept = lock();
        let offered = std::mem::take(&mut kept.offered);
        for (address, listener) in offered {
            if addresses.contains(&address) && !kept.current.iter().any(|(a, _)| *a == address) {
                kept.current.push((address, listener));
            }
        }
    }

    /// When a reloaded config could not be built: the running components' sockets are
    /// kept again, as before the attempt.
    pub fn restore_kept_listeners() {
        let mut kept = lock();
        let offered = std::mem::take(&mut kept.offered);
        for (address, listener) in offered {
            if !kept.current.iter().any(|(a, _)| *a == address) {
                kept.current.push((address, listener));
            }
        }
    }
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
        .max_frame_size(H2_MAX_FRAME_SIZE)
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
            let watch = Arc::new(Watch::new(&limits));
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
/// [`GRACE`]. One timer serves all its deadlines; it is set again only when a deadline
/// comes closer than it (see [`Watch::timer_unknown`]), so requests that start and end
/// do not wake this task or touch the timer.
async fn drive<C>(conn: C, watch: &Watch, limits: &Limits, mut stop: watch::Receiver<bool>)
where
    C: Future<Output = Result<(), BoxError>> + GracefulShutdown,
{
    tokio::pin!(conn);
    let mut stopping = false;
    // Set once the connection was asked to close: then it is dropped at this instant.
    let mut close_at: Option<Instant> = None;
    let timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(timer);
    // When the timer fires; `None`: it is not waited for.
    let mut armed: Option<Instant> = None;
    loop {
        if close_at.is_none() {
            watch.timer_unknown();
            // A timer set for earlier is kept: it fires, finds nothing expired and is
            // set again for what is due then.
            if let Some(check) = watch.next_check(limits) {
                if armed.is_none_or(|armed| check < armed) {
                    timer.as_mut().reset(check);
                    armed = Some(check);
                }
            }
            watch.timer_set(armed);
        }
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
                    let at = Instant::now() + GRACE;
                    close_at = Some(at);
                    timer.as_mut().reset(at);
                    armed = Some(at);
                }
            }
            _ = timer.as_mut(), if armed.is_some() => {
                armed = None;
                if close_at.is_some() {
                    debug!("closing a connection that did not finish in time");
                    return;
                }
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
                        let at = Instant::now() + idle.min(GRACE);
                        close_at = Some(at);
                        timer.as_mut().reset(at);
                        armed = Some(at);
                    }
                    None => {}
                }
            }
            _ = watch.wake.notified(), if close_at.is_none() => {}
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
