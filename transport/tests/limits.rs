//! The listener limits of `sidekick_transport::server`, over real sockets on 127.0.0.1:
//! connection count, idle connections (HTTP/1 and HTTP/2), slow headers, slow bodies.
//! Timeouts are short; assertions are about what happens, with generous time margins.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::Request;
use axum::routing::{get, post};
use axum::Router;
use http_body_util::BodyExt;
use sidekick_transport::server::{serve_with, ListenerStats, ServerOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Longest any expected close or answer may take.
const PATIENCE: Duration = Duration::from_secs(5);

struct Server {
    addr: SocketAddr,
    stats: Arc<ListenerStats>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Server {
    async fn start(options: ServerOptions) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(ListenerStats::default());
        let options = ServerOptions {
            stats: Some(stats.clone()),
            ..options
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            serve_with(listener, router(), &options, async {
                let _ = stopped.await;
            })
            .await
        });
        Server {
            addr,
            stats,
            stop: Some(stop),
            task,
        }
    }

    async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.addr).await.unwrap()
    }
}

fn router() -> Router {
    Router::new()
        .route("/", get(|| async { "hello" }))
        .route(
            "/echo",
            post(|body: Bytes| async move { body.len().to_string() }),
        )
        // Reads the whole body, then takes longer than every timeout of the tests.
        .route(
            "/slow",
            post(|body: Bytes| async move {
                tokio::time::sleep(Duration::from_millis(600)).await;
                body.len().to_string()
            }),
        )
        // Waits longer than every timeout before it starts reading the body.
        .route(
            "/late",
            post(|req: Request| async move {
                tokio::time::sleep(Duration::from_millis(600)).await;
                let body = req.into_body().collect().await.unwrap().to_bytes();
                body.len().to_string()
            }),
        )
        // Tells the gRPC status tonic makes of a body read error.
        .route(
            "/grpc",
            post(|req: Request| async move {
                match req.into_body().collect().await {
                    Ok(body) => body.to_bytes().len().to_string(),
                    Err(e) => format!("{:?}", tonic::Status::from_error(Box::new(e)).code()),
                }
            }),
        )
}

/// Options with every limit far away, for a test to bring one close.
fn relaxed() -> ServerOptions {
    ServerOptions {
        max_connections: None,
        header_read_timeout: Some(Duration::from_secs(30)),
        idle_timeout: Some(Duration::from_secs(30)),
        body_read_timeout: Some(Duration::from_secs(30)),
        ..ServerOptions::default()
    }
}

/// Reads one HTTP/1 response: status and body (by Content-Length). `None`: the
/// connection was closed (or reset) before a response arrived.
async fn read_response(s: &mut TcpStream) -> Option<(u16, String)> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 1024];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => {
                assert!(buf.is_empty(), "connection closed mid-response: {buf:?}");
                return None;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status = head[9..12].parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let mut chunk = [0u8; 1024];
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed mid-body");
        body.extend_from_slice(&chunk[..n]);
    }
    Some((status, String::from_utf8(body).unwrap()))
}

async fn request(s: &mut TcpStream, raw: &str) -> (u16, String) {
    s.write_all(raw.as_bytes()).await.unwrap();
    tokio::time::timeout(PATIENCE, read_response(s))
        .await
        .expect("no response in time")
        .expect("connection closed instead of answering")
}

async fn send_get(s: &mut TcpStream) -> (u16, String) {
    request(s, "GET / HTTP/1.1\r\nHost: test\r\n\r\n").await
}

async fn send_post(s: &mut TcpStream, path: &str, body: &str) -> (u16, String) {
    let raw = format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    request(s, &raw).await
}

/// Reads until the server closes (or resets) the connection; what it sent meanwhile.
async fn wait_closed(s: &mut TcpStream) -> Vec<u8> {
    let read_all = async {
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return got,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(PATIENCE, read_all)
        .await
        .expect("the server did not close the connection")
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn connections_over_the_limit_are_refused_until_one_closes() {
    let server = Server::start(ServerOptions {
        max_connections: Some(2),
        ..relaxed()
    })
    .await;
    let mut first = server.connect().await;
    let mut second = server.connect().await;
    assert_eq!(send_get(&mut first).await, (200, "hello".into()));
    assert_eq!(send_get(&mut second).await, (200, "hello".into()));
    assert_eq!(server.stats.open_connections(), 2);

    let mut third = server.connect().await;
    let _ = third
        .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        .await;
    let answer = wait_closed(&mut third).await;
    assert!(answer.is_empty(), "a refused connection got {answer:?}");
    assert_eq!(server.stats.refused_connections(), 1);

    // The two held their slots and are still served.
    assert_eq!(send_get(&mut first).await.0, 200);
    assert_eq!(send_get(&mut second).await.0, 200);

    drop(first);
    drop(second);
    wait_until("the slots to free", || server.stats.open_connections() == 0).await;
    let mut fourth = server.connect().await;
    let mut fifth = server.connect().await;
    assert_eq!(send_get(&mut fourth).await.0, 200);
    assert_eq!(send_get(&mut fifth).await.0, 200);
    assert_eq!(server.stats.refused_connections(), 1);
    assert_eq!(server.stats.accepted_connections(), 4);
}

#[tokio::test]
async fn idle_http1_keep_alive_connection_is_closed() {
    let server = Server::start(ServerOptions {
        idle_timeout: Some(Duration::from_millis(300)),
        ..relaxed()
    })
    .await;
    let mut s = server.connect().await;
    assert_eq!(send_get(&mut s).await.0, 200);
    // Within the idle timeout the connection is kept and reused.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(send_post(&mut s, "/echo", "abc").await, (200, "3".into()));

    let idle_from = Instant::now();
    assert!(wait_closed(&mut s).await.is_empty());
    assert!(idle_from.elapsed() >= Duration::from_millis(100));
    assert_eq!(server.stats.idle_closed(), 1);
    assert_eq!(server.stats.timed_out(), 0);
    wait_until("the connection to be released", || {
        server.stats.open_connections() == 0
    })
    .await;
}

#[tokio::test]
async fn the_idle_clock_starts_at_the_last_request() {
    let server = Server::start(ServerOptions {
        idle_timeout: Some(Duration::from_millis(300)),
        ..relaxed()
    })
    .await;
    let mut s = server.connect().await;
    // Requests for twice the idle timeout, each well within it of the one before.
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(600) {
        assert_eq!(send_get(&mut s).await.0, 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(send_get(&mut s).await.0, 200);
    let idle_from = Instant::now();
    assert!(wait_closed(&mut s).await.is_empty());
    assert!(
        idle_from.elapsed() >= Duration::from_millis(250),
        "closed {:?} after the last request",
        idle_from.elapsed()
    );
    assert_eq!(server.stats.idle_closed(), 1);
}

#[tokio::test]
async fn slow_headers_after_a_served_request_are_cut() {
    // The idle timeout, far away, is what the connection waits for after the first
    // request; the second request's header clock must still cut it in time.
    let server = Server::start(ServerOptions {
        header_read_timeout: Some(Duration::from_millis(300)),
        ..relaxed()
    })
    .await;
    let mut s = server.connect().await;
    assert_eq!(send_get(&mut s).await.0, 200);
    s.write_all(b"GET / HTTP/1.1\r\nHost: te").await.unwrap();
    let cut_from = Instant::now();
    assert!(wait_closed(&mut s).await.is_empty());
    assert!(cut_from.elapsed() >= Duration::from_millis(250));
    assert_eq!(server.stats.header_timeouts(), 1);
    assert_eq!(server.stats.idle_closed(), 0);
}

#[tokio::test]
async fn silent_connection_is_closed_after_the_idle_timeout() {
    let server = Server::start(ServerOptions {
        idle_timeout: Some(Duration::from_millis(200)),
        header_read_timeout: Some(Duration::from_millis(100)),
        ..relaxed()
    })
    .await;
    let mut s = server.connect().await;
    assert!(wait_closed(&mut s).await.is_empty());
    assert_eq!(server.stats.idle_closed(), 1);
    assert_eq!(server.stats.header_timeouts(), 0);
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const H2_SETTINGS: u8 = 0x4;
const H2_HEADERS: u8 = 0x1;
const H2_GOAWAY: u8 = 0x7;
const H2_DATA: u8 = 0x0;

fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// (type, stream) of each complete frame in what the server sent after its preface.
fn h2_frames(mut bytes: &[u8]) -> Vec<(u8, u32)> {
    let mut frames = Vec::new();
    while bytes.len() >= 9 {
        let len =
            (usize::from(bytes[0]) << 16) | (usize::from(bytes[1]) << 8) | usize::from(bytes[2]);
        let stream = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) & 0x7fff_ffff;
        frames.push((bytes[3], stream));
        bytes = &bytes[(9 + len).min(bytes.len())..];
    }
    frames
}

/// A client that speaks HTTP/2 by hand: preface, empty SETTINGS, and never answers.
async fn h2_connect(server: &Server) -> TcpStream {
    let mut s = server.connect().await;
    let mut hello = H2_PREFACE.to_vec();
    hello.extend(h2_frame(H2_SETTINGS, 0, 0, &[]));
    s.write_all(&hello).await.unwrap();
    s
}

#[tokio::test]
async fn idle_http2_connection_without_requests_gets_goaway_and_is_closed() {
    let server = Server::start(ServerOptions {
        idle_timeout: Some(Duration::from_millis(400)),
        // Shorter than the idle timeout: must not apply to HTTP/2 frames.
        header_read_timeout: Some(Duration::from_millis(100)),
        ..relaxed()
    })
    .await;
    let mut s = h2_connect(&server).await;
    let got = wait_closed(&mut s).await;
    let frames = h2_frames(&got);
    assert_eq!(frames.first().map(|f| f.0), Some(H2_SETTINGS), "{frames:?}");
    assert!(frames.iter().any(|f| f.0 == H2_GOAWAY), "{frames:?}");
    assert_eq!(server.stats.idle_closed(), 1);
    assert_eq!(server.stats.header_timeouts(), 0);
}

#[tokio::test]
async fn idle_http2_connection_after_a_request_is_closed() {
    let server = Server::start(ServerOptions {
        idle_timeout: Some(Duration::from_millis(300)),
        ..relaxed()
    })
    .await;
    let mut s = h2_connect(&server).await;
    // GET / on stream 1: :method GET, :scheme http, :path / (static table), and a
    // literal :authority; END_STREAM | END_HEADERS.
    let mut block = vec![0x82, 0x86, 0x84, 0x41, 9];
    block.extend_from_slice(b"localhost");
    s.write_all(&h2_frame(H2_HEADERS, 0x5, 1, &block))
        .await
        .unwrap();
    let got = wait_closed(&mut s).await;
    let frames = h2_frames(&got);
    let answered = frames.iter().position(|&f| f == (H2_HEADERS, 1));
    let goaway = frames.iter().position(|f| f.0 == H2_GOAWAY);
    assert!(answered.is_some(), "no response headers: {frames:?}");
    assert!(
        goaway > answered,
        "no GOAWAY after the response: {frames:?}"
    );
    assert_eq!(server.stats.idle_closed(), 1);
}

#[tokio::test]
async fn http2_clients_may_send_a_message_in_one_large_frame() {
    let server = Server::start(relaxed()).await;
    let mut s = h2_connect(&server).await;
    // The server's SETTINGS frame comes first: its MAX_FRAME_SIZE (0x5) is 1 MiB.
    let mut head = [0u8; 9];
    s.read_exact(&mut head).await.unwrap();
    assert_eq!(head[3], H2_SETTINGS);
    let mut settings = vec![0u8; usize::from(head[1]) << 8 | usize::from(head[2])];
    s.read_exact(&mut settings).await.unwrap();
    let max_frame = settings
        .chunks_exact(6)
        .find(|e| e[..2] == [0, 5])
        .map(|e| u32::from_be_bytes([e[2], e[3], e[4], e[5]]));
    assert_eq!(
        max_frame,
        Some(sidekick_transport::server::H2_MAX_FRAME_SIZE)
    );
    // A 200,000-byte body in one DATA frame, over HTTP/2's 16 KiB default, is served.
    s.write_all(&h2_frame(H2_SETTINGS, 0x1, 0, &[]))
        .await
        .unwrap();
    // POST /echo: :method POST, :scheme http, literal :path, literal :authority.
    let mut block = vec![0x83, 0x86, 0x44, 5];
    block.extend_from_slice(b"/echo");
    block.extend_from_slice(&[0x41, 9]);
    block.extend_from_slice(b"localhost");
    s.write_all(&h2_frame(H2_HEADERS, 0x4, 1, &block))
        .await
        .unwrap();
    let body = vec![b'x'; 200_000];
    s.write_all(&h2_frame(H2_DATA, 0x1, 1, &body))
        .await
        .unwrap();
    let mut got = Vec::new();
    let answered = tokio::time::timeout(PATIENCE, async {
        let mut buf = [0u8; 4096];
        loop {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before the answer: {:?}", h2_frames(&got));
            got.extend_from_slice(&buf[..n]);
            if got.windows(6).any(|w| w == b"200000") {
                break;
            }
        }
    })
    .await;
    assert!(answered.is_ok(), "no answer: {:?}", h2_frames(&got));
    assert!(!h2_frames(&got).iter().any(|f| f.0 == H2_GOAWAY));
}

#[tokio::test]
async fn slowloris_headers_are_cut_after_the_header_read_timeout() {
    let server = Server::start(ServerOptions {
        header_read_timeout: Some(Duration::from_millis(300)),
        ..relaxed()
    })
    .await;
    let (mut reader, mut writer) = server.connect().await.into_split();
    let trickle = tokio::spawn(async move {
        let headers = format!("GET / HTTP/1.1\r\nHost: test\r\nX-Pad: {}", "a".repeat(200));
        for byte in headers.as_bytes() {
            if writer.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let read_all = async {
        let mut got = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            match reader.read(&mut chunk).await {
                Ok(0) | Err(_) => return got,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
    };
    let got = tokio::time::timeout(PATIENCE, read_all)
        .await
        .expect("the slow client was not cut");
    assert!(got.is_empty(), "answered {got:?}");
    assert_eq!(server.stats.header_timeouts(), 1);
    assert_eq!(server.stats.idle_closed(), 0);
    trickle.abort();

    // A normal client is still served.
    let mut s = server.connect().await;
    assert_eq!(send_get(&mut s).await.0, 200);
}

#[tokio::test]
async fn short_body_is_answered_408_while_others_are_served() {
    let server = Server::start(ServerOptions {
        body_read_timeout: Some(Duration::from_millis(300)),
        ..relaxed()
    })
    .await;
    let mut slow = server.connect().await;
    slow.write_all(b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 1000\r\n\r\n0123456789")
        .await
        .unwrap();

    // Meanwhile another client is served at once, several times.
    let mut other = server.connect().await;
    for _ in 0..3 {
        assert_eq!(
            send_post(&mut other, "/echo", "hello").await,
            (200, "5".into())
        );
    }
    assert_eq!(server.stats.body_timeouts(), 0);

    let answer = tokio::time::timeout(PATIENCE, read_response(&mut slow))
        .await
        .expect("no answer to the short body");
    assert_eq!(answer.map(|a| a.0), Some(408));
    assert!(wait_closed(&mut slow).await.is_empty());
    assert_eq!(server.stats.body_timeouts(), 1);
    assert_eq!(server.stats.timed_out(), 1);
    assert_eq!(send_post(&mut other, "/echo", "hello").await.0, 200);
}

#[tokio::test]
async fn trickled_body_is_answered_408() {
    let server = Server::start(ServerOptions {
        body_read_timeout: Some(Duration::from_millis(300)),
        ..relaxed()
    })
    .await;
    let (mut reader, mut writer) = server.connect().await.into_split();
    writer
        .write_all(b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\n\r\n")
        .await
        .unwrap();
    let trickle = tokio::spawn(async move {
        for _ in 0..100 {
            if writer.write_all(b"x").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let read_all = async {
        let mut got = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            match reader.read(&mut chunk).await {
                Ok(0) | Err(_) => return got,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
    };
    let got = tokio::time::timeout(PATIENCE, read_all)
        .await
        .expect("the trickling client was not cut");
    assert!(
        got.starts_with(b"HTTP/1.1 408"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    assert_eq!(server.stats.body_timeouts(), 1);
    trickle.abort();
}

#[tokio::test]
async fn grpc_body_timeout_is_deadline_exceeded_for_the_handler() {
    let server = Server::start(ServerOptions {
        body_read_timeout: Some(Duration::from_millis(200)),
        ..relaxed()
    })
    .await;
    let mut s = server.connect().await;
    s.write_all(
        b"POST /grpc HTTP/1.1\r\nHost: test\r\nContent-Type: application/grpc\r\n\
          Content-Length: 100\r\n\r\n01234",
    )
    .await
    .unwrap();
    let answer = tokio::time::timeout(PATIENCE, read_response(&mut s))
        .await
        .expect("no answer");
    // Not replaced by a 408: a gRPC client reads the handler's status.
    assert_eq!(answer, Some((200, "DeadlineExceeded".into())));
    assert_eq!(server.stats.body_timeouts(), 1);
}

#[tokio::test]
async fn slow_handler_with_its_body_read_is_not_cut() {
    let server = Server::start(ServerOptions {
        header_read_timeout: Some(Duration::from_millis(200)),
        idle_timeout: Some(Duration::from_millis(200)),
        body_read_timeout: Some(Duration::from_millis(200)),
        ..relaxed()
    })
    .await;
    let mut s = server.connect().await;
    // Reads the body at once, then takes 600 ms: three times every timeout.
    assert_eq!(send_post(&mut s, "/slow", "hello").await, (200, "5".into()));
    // Waits 600 ms before reading a body that arrived long before.
    assert_eq!(
        send_post(&mut s, "/late", "hello!").await,
        (200, "6".into())
    );
    assert_eq!(server.stats.timed_out(), 0);
    assert_eq!(server.stats.idle_closed(), 0);
    // Still the same keep-alive connection.
    assert_eq!(send_get(&mut s).await.0, 200);
    assert_eq!(server.stats.accepted_connections(), 1);
}

#[tokio::test]
async fn stop_closes_idle_connections_and_returns() {
    let mut server = Server::start(relaxed()).await;
    let mut s = server.connect().await;
    assert_eq!(send_get(&mut s).await.0, 200);
    let _ = server.stop.take().unwrap().send(());
    assert!(wait_closed(&mut s).await.is_empty());
    tokio::time::timeout(PATIENCE, &mut server.task)
        .await
        .expect("serve did not return after stop")
        .unwrap();
    assert_eq!(server.stats.open_connections(), 0);
}

#[tokio::test]
async fn defaults_bound_every_listener() {
    let options = ServerOptions::default();
    assert!(options.max_connections.is_some_and(|n| n > 0));
    assert_eq!(options.header_read_timeout, Some(Duration::from_secs(10)));
    assert_eq!(options.idle_timeout, Some(Duration::from_secs(120)));
    assert_eq!(options.body_read_timeout, Some(Duration::from_secs(30)));
    // Not every HTTP/1 request of `serve` must come from a fresh connection: the
    // defaults serve a plain request.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(sidekick_transport::server::serve(
        listener,
        router(),
        async {
            let _ = stopped.await;
        },
    ));
    let mut s = TcpStream::connect(addr).await.unwrap();
    assert_eq!(send_post(&mut s, "/echo", "abc").await, (200, "3".into()));
    let _ = stop.send(());
    tokio::time::timeout(PATIENCE, task).await.unwrap().unwrap();
}
