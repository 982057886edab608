//! Exporters: where telemetry leaves Sidekick.
//!
//! Layout:
//! - [`otlp`]: OTLP over gRPC (`otlp`, also `otlp_grpc`).
//! - [`otlp_http`]: OTLP over HTTP with protobuf bodies (`otlphttp`, also `otlp_http`).
//! - [`debug`]: prints what passes, for people trying Sidekick out.
//! - [`prometheus`], [`prometheus_remote_write`]: the scrape target and remote-write; the
//!   translation ([`prom`]) and the remote-write encoder are `sidekick-prometheus`'s.
//! - [`compression`], [`partial`]: what the OTLP exporters share (TLS, headers and
//!   clients come from `sidekick-transport`).

pub mod collector_options;
pub mod compression;
pub mod debug;
pub mod otlp;
pub mod otlp_http;
pub mod partial;
pub use sidekick_prometheus::from_otlp as prom;
pub mod prometheus;
pub mod prometheus_remote_write;
