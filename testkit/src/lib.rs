//! Test and benchmark fixtures shared by every crate: deterministic data generators, a
//! fake OTLP backend ([`sink::OtlpSink`]) and a harness that runs one processor.
//!
//! Layout:
//! - [`gen`]: OTLP traces, metrics and logs with predictable names and ids.
//! - [`sink`]: an OTLP backend over gRPC and HTTP that records what it receives and can
//!   be told to fail.
//! - [`remote_write`]: a Prometheus remote-write receiver that records and fails on demand.
//! - [`target`]: a scrape target serving a page the test controls.
//! - [`harness`]: run a processor between two queues and collect its output.
//! - [`pki`]: a throwaway CA with server and client certificates as PEM files.
//! - [`external`]: a real program on `PATH` (`curl`, …), required under CI.
//! - [`promtool`]: the Debian `prometheus` package's binaries, and `promtool check metrics`.
//! - [`free_port`]: a local port for a listener the test starts; [`http_get`]: a bare GET.

pub mod external;
pub mod gen;
pub mod harness;
pub mod pki;
pub mod promtool;
pub mod remote_write;
pub mod sink;
pub mod target;

/// A local TCP port free right now (bound to port 0 and released), for a process or
/// listener the test starts next.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free local port")
}

/// A bare HTTP/1.1 GET, so tests need no client runtime: (status, body).
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let chunked = head
        .lines()
        .any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

/// The body of a `Transfer-Encoding: chunked` response.
fn dechunk(mut rest: &str) -> String {
    let mut body = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size line {size:?}"));
        if size == 0 {
            break;
        }
        body.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    body
}
