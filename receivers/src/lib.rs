//! Receivers: where telemetry enters Sidekick.
//!
//! Layout:
//! - [`otlp`]: OTLP over gRPC (:4317) and HTTP (:4318), protobuf and JSON, gzip/zstd.

pub mod otlp;
