//! How Sidekick talks to the network, kept apart from the runtime's own nouns: the
//! pieces every receiver, exporter and the admin endpoint share.
//!
//! Layout:
//! - [`server`]: binding listeners at build time and serving HTTP/1, HTTP/2 and gRPC
//!   (axum routers) on them until stop, then letting requests finish.
//! - [`tls`]: client TLS from PEM files (rustls, ring) and the Collector-shaped `tls:`
//!   settings of exporters; one rustls config for HTTP and gRPC clients alike. Its
//!   [`tls::listener`] is the server side: listener certificates and mutual TLS.
//! - [`auth`]: the `bearertokenauth` and `basicauth` authenticators, checking requests on
//!   listeners and adding credentials to outgoing ones.
//! - [`client`]: outgoing HTTP (reqwest) and gRPC (tonic) clients: headers, auth,
//!   proxy, TLS, timeouts — built one way for every exporter.
//! - [`grpc`]: a gRPC codec for protobuf bytes that stay encoded, and `google.rpc.Status`.
//! - [`downward`]: the Kubernetes downward-API volume file format.

pub mod auth;
pub mod client;
mod coalesce;
pub mod downward;
pub mod grpc;
pub mod server;
pub mod tls;
mod watch;

pub use sidekick_config::{BuildError, FieldError};
