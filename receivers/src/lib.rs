//! Receivers: where telemetry enters Sidekick.
//!
//! Layout:
//! - [`otlp`]: OTLP over gRPC (:4317) and HTTP (:4318), protobuf and JSON, gzip/zstd.
//! - [`prometheus`]: scrapes Prometheus endpoints into OTLP metrics.
//! - [`filelog`]: tails log files into OTLP logs (rotation, operators).

pub mod filelog;
pub mod otlp;
pub mod prometheus;
