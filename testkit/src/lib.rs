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

pub mod gen;
pub mod harness;
pub mod remote_write;
pub mod sink;
pub mod target;
