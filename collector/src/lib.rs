//! The runtime: payload types, component traits, the pipeline graph, the exporter helper,
//! shutdown, self-telemetry and health.
//!
//! Layout:
//! - [`payload`]: [`Batch`](payload::Batch) of traces, metrics or logs, kept encoded
//!   until a stage needs to look inside; [`payload::wire`] walks the protobuf framing.
//! - [`component`]: the config-is-factory traits and the [`Registry`](component::Registry).
//! - [`pipe`]: bounded queues ([`Input`](pipe::Input), [`Output`](pipe::Output)) and [`Stop`](pipe::Stop).
//! - [`downward`]: the Kubernetes downward-API volume file format.
//! - [`exporter`]: queue, consumers, timeout and retry shared by every exporter.
//! - [`topology`]: config document → checked plan → built service → run and drain.
//! - [`telemetry`]: self-metrics under the OpenTelemetry Collector's names.
//! - [`admin`]: `/metrics`, `/healthz`, `/readyz`.
//! - [`grpc`]: a gRPC codec for protobuf bytes that stay encoded.
//! - [`http`]: binding and serving HTTP/1 and HTTP/2 with graceful stop.
//! - [`tls`]: client TLS from PEM files (rustls, ring).
//! - [`util`]: clock and error-formatting helpers.
//! - [`logging`]: `tracing` output, text or JSON.

pub mod admin;
pub mod component;
pub mod downward;
pub mod exporter;
pub mod grpc;
pub mod http;
pub mod logging;
pub mod payload;
pub mod pipe;
pub mod telemetry;
pub mod tls;
pub mod topology;
pub mod util;

pub use sidekick_config as config;
