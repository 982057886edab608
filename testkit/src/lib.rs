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
//! - [`free_port`]: a local port for a listener the test starts.

pub mod gen;
pub mod harness;
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
