//! Exporters: where telemetry leaves Sidekick.
//!
//! Layout:
//! - [`otlp`]: OTLP over gRPC (`otlp`, also `otlp_grpc`).
//! - [`otlp_http`]: OTLP over HTTP with protobuf bodies (`otlphttp`, also `otlp_http`).
//! - [`debug`]: prints what passes, for people trying Sidekick out.
//! - [`compression`], [`partial`]: what the OTLP exporters share (TLS, headers and
//!   clients come from `sidekick-transport`).

pub mod collector_options;
pub mod compression;
pub mod debug;
pub mod otlp;
pub mod otlp_http;
pub mod partial;
pub mod prom;
pub mod prometheus;
pub mod prometheus_remote_write;
