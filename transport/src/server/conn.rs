//! What a served connection is made of: the idle and header-read watch, the count of
//! requests in flight, the I/O that tracks activity and sniffs the protocol, bodies with
//! read deadlines, and the per-request limits wrapped around the service.

use super::*;
use http_body_util::BodyExt;

/// A listener's limits, shared by its connections.
pub(super) struct Limits {
    pub(super) header_read: Option<Duration>,
    pub(super) idle: Option<Duration>,
    pub(super) body_read: Option<Duration>,
    pub(super) stats: Arc<ListenerStats>,
}

/// Counts a connection open until dropped.
pub(super) struct Open(pub(super) Arc<ListenerStats>);

impl Open {
    pub(super) fn new(stats: &Arc<ListenerStats>) -> Self {
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
pub(super) struct Watch {
    pub(super) epoch: Instant,
    /// Requests whose response has not been fully written (or dropped).
    pub(super) in_flight: AtomicUsize,
    /// When `in_flight` last became 0 (or the connection opened), in `stamp`s.
    pub(super) idle_since: AtomicU64,
    /// When the first byte of the HTTP/1 request being read arrived; 0: none.
    pub(super) headers_since: AtomicU64,
    /// The connection speaks HTTP/2 (its preface arrived).
    http2: AtomicBool,
    /// When the driver's timer fires, in `stamp`s; `u64::MAX` while it has none or is
    /// looking at the deadlines. A deadline that starts later than this needs no wake-up:
    /// the timer fires first, finds nothing expired and is set again. So a busy
    /// connection wakes its driver about once per timeout, not once per request.
    timer_at: AtomicU64,
    /// Tells the driver that a deadline came closer than its timer.
    pub(super) wake: Notify,
    /// `idle_timeout` and `header_read_timeout` in nanoseconds (`None`: off).
    idle: Option<u64>,
    header_read: Option<u64>,
}

pub(super) enum Expired {
    Headers,
    Idle(Duration),
}

impl Watch {
    pub(super) fn new(limits: &Limits) -> Self {
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Watch {
            epoch: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(1),
            headers_since: AtomicU64::new(0),
            http2: AtomicBool::new(false),
            timer_at: AtomicU64::new(u64::MAX),
            wake: Notify::new(),
            idle: limits.idle.map(nanos),
            header_read: limits.header_read.map(nanos),
        }
    }

    /// Now as nanoseconds since the connection opened, plus one (0 means "none").
    fn stamp(&self) -> u64 {
        self.stamp_at(Instant::now())
    }

    /// `at` as a stamp.
    fn stamp_at(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.epoch).as_nanos();
        u64::try_from(since).unwrap_or(u64::MAX - 1) + 1
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
            let now = self.stamp();
            self.idle_since.store(now, Ordering::SeqCst);
            self.deadline_set(now, self.idle);
        }
    }

    /// Bytes arrived: between HTTP/1 requests they start the header clock.
    fn bytes_read(&self) {
        if self.http2.load(Ordering::Relaxed) || self.in_flight.load(Ordering::SeqCst) > 0 {
            return;
        }
        let now = self.stamp();
        if self
            .headers_since
            .compare_exchange(0, now, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            self.deadline_set(now, self.header_read);
        }
    }

    /// A deadline `after` `since` now applies: the driver is woken if its timer would
    /// fire too late for it.
    fn deadline_set(&self, since: u64, after: Option<u64>) {
        let Some(after) = after else { return };
        if since.saturating_add(after) < self.timer_at.load(Ordering::SeqCst) {
            self.wake.notify_one();
        }
    }

    /// The driver is about to read the deadlines: until it says when its timer fires,
    /// every new deadline wakes it.
    pub(super) fn timer_unknown(&self) {
        self.timer_at.store(u64::MAX, Ordering::SeqCst);
    }

    /// The driver's timer fires at `at` (`None`: it has none).
    pub(super) fn timer_set(&self, at: Option<Instant>) {
        let at = at.map_or(u64::MAX, |at| self.stamp_at(at));
        self.timer_at.store(at, Ordering::SeqCst);
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
    pub(super) fn next_check(&self, limits: &Limits) -> Option<Instant> {
        match self.deadlines(limits) {
            (Some(h), Some(i)) => Some(h.min(i)),
            (h, i) => h.or(i),
        }
    }

    pub(super) fn expired(&self, limits: &Limits, now: Instant) -> Option<Expired> {
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
pub(super) struct InFlight(pub(super) Arc<Watch>);

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
pub(super) enum Sniff {
    Matched(usize),
    Decided,
}

/// A connection's socket, under TLS or not.
pub(super) enum Stream {
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
pub(super) struct TrackedIo {
    pub(super) io: Stream,
    pub(super) watch: Arc<Watch>,
    pub(super) sniff: Sniff,
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
pub(super) trait FromIncoming: Send {
    /// Whether the body enforces `body_read_timeout`.
    const TIMED: bool;
    fn from_incoming(body: Incoming, deadline: Option<BodyDeadline>, park: Option<Park>) -> Self;
}

impl FromIncoming for Incoming {
    const TIMED: bool = false;

    fn from_incoming(body: Incoming, _: Option<BodyDeadline>, _: Option<Park>) -> Self {
        body
    }
}

/// Where an HTTP/2 request body that its handler let go of unread (an answer sent before
/// the body is read: 401, 413, 415) waits, so that the client reads the answer instead of
/// a failed upload. Before the answer goes out, the rest of the body is read and thrown
/// away, up to [`DRAIN_BYTES`] within [`DRAIN_TIME`] (while it keeps coming): a client still sending its body
/// when the stream is closed under it (curl, among others) reports a framing error, not
/// the status. A longer body is let go after the answer is written, which ends the
/// stream with NO_ERROR ("the response is complete, stop sending", RFC 9113 §8.1), never
/// with the CANCEL that dropping it before the answer would send.
#[derive(Clone, Default)]
pub(super) struct Park(Arc<std::sync::Mutex<Option<Incoming>>>);

/// How much of an unread HTTP/2 request body is read and thrown away before an early
/// answer: more than an SDK's usual request, well below what a listener accepts.
const DRAIN_BYTES: usize = 4 << 20;
/// How long an early answer waits for the rest of the request body.
const DRAIN_TIME: Duration = Duration::from_secs(2);
/// How long it waits for the next part of the body: a client that waits for the answer
/// before it sends its body gets the answer this soon.
const DRAIN_GAP: Duration = Duration::from_millis(250);

impl Park {
    fn keep(&self, body: Incoming) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(body);
        }
    }

    fn take(&self) -> Option<Incoming> {
        self.0.lock().ok()?.take()
    }

    /// Reads and discards what is left of a parked body, within the bounds; a body that
    /// does not end within them is parked again, to be let go after the answer.
    pub(super) async fn drain(&self) {
        let Some(mut body) = self.take() else {
            return;
        };
        let mut read = 0usize;
        let ended = tokio::time::timeout(DRAIN_TIME, async {
            while read <= DRAIN_BYTES {
                match tokio::time::timeout(DRAIN_GAP, body.frame()).await {
                    Ok(Some(Ok(frame))) => {
                        read += frame.data_ref().map_or(0, Bytes::len);
                    }
                    Ok(Some(Err(_)) | None) => return true,
                    Err(_) => return false,
                }
            }
            false
        })
        .await
        .unwrap_or(false);
        if !ended {
            self.keep(body);
        }
    }
}

/// One request's body read limit.
pub(super) struct BodyDeadline {
    pub(super) after: Duration,
    pub(super) timed_out: Arc<AtomicBool>,
    pub(super) stats: Arc<ListenerStats>,
}

/// A request body that fails when it has not arrived `after` its first read.
pub(super) struct TimedBody {
    /// `None` only while being dropped.
    pub(super) inner: Option<Incoming>,
    pub(super) park: Option<Park>,
    pub(super) deadline: Option<BodyDeadline>,
    pub(super) started: Option<Instant>,
    pub(super) sleep: Option<Pin<Box<Sleep>>>,
    pub(super) failed: bool,
}

impl FromIncoming for TimedBody {
    const TIMED: bool = true;

    fn from_incoming(inner: Incoming, deadline: Option<BodyDeadline>, park: Option<Park>) -> Self {
        TimedBody {
            inner: Some(inner),
            park,
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
        let Some(inner) = this.inner.as_mut().filter(|_| !this.failed) else {
            return Poll::Ready(None);
        };
        let started = *this.started.get_or_insert_with(Instant::now);
        // What has arrived is always handed over, however late the reader is.
        if let Poll::Ready(frame) = Pin::new(inner).poll_frame(cx) {
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
        self.failed || self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl Drop for TimedBody {
    fn drop(&mut self) {
        if let (Some(park), Some(inner)) = (&self.park, self.inner.take()) {
            if !inner.is_end_stream() {
                park.keep(inner);
            }
        }
    }
}

/// The error of a request body that did not arrive within `body_read_timeout`. Its
/// source is a gRPC `DEADLINE_EXCEEDED` status, which tonic answers gRPC calls with.
#[derive(Debug)]
pub(super) struct BodyReadTimeout {
    pub(super) after: Duration,
    pub(super) status: tonic::Status,
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
pub(super) struct Limited<S, RB> {
    pub(super) inner: S,
    pub(super) watch: Arc<Watch>,
    pub(super) limits: Arc<Limits>,
    pub(super) _body: PhantomData<fn(RB)>,
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
        let park = (!http1).then(Park::default);
        let (parts, body) = req.into_parts();
        let future = self.inner.call(http::Request::from_parts(
            parts,
            RB::from_incoming(body, deadline, park.clone()),
        ));
        Box::pin(async move {
            let response = future.await?;
            if let Some(park) = &park {
                park.drain().await;
            }
            if !grpc && timed_out.is_some_and(|t| t.load(Ordering::SeqCst)) {
                return Ok(request_timeout(http1, in_flight, park));
            }
            Ok(response.map(|body| Tracked {
                body: Some(Box::pin(body)),
                _in_flight: in_flight,
                _park: park,
            }))
        })
    }
}

/// 408 with no body; HTTP/1 closes the connection (the rest of the body is not read).
pub(super) fn request_timeout<B>(
    http1: bool,
    in_flight: InFlight,
    park: Option<Park>,
) -> http::Response<Tracked<B>> {
    let mut response = http::Response::new(Tracked {
        body: None,
        _in_flight: in_flight,
        _park: park,
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
pub(super) struct Tracked<B> {
    pub(super) body: Option<Pin<Box<B>>>,
    pub(super) _in_flight: InFlight,
    /// The request body, if the handler left it unread: let go once this is written.
    pub(super) _park: Option<Park>,
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
