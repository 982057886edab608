//! A listener's server options with its connection counts registered as self-metrics
//! (open, refused, TLS failures, unauthenticated requests, timeouts).

use std::sync::Arc;

use sidekick_transport::server::{ListenerStats, ServerOptions};

use crate::telemetry::Telemetry;

/// Server options for a listener named `listener` (e.g. `receivers.otlp/grpc`), with
/// its connection counts registered as self-metrics.
pub fn options(telemetry: &Telemetry, listener: &str) -> ServerOptions {
    let stats = Arc::new(ListenerStats::default());
    let labels = [("listener", listener)];
    let s = Arc::clone(&stats);
    telemetry.gauge_fn(
        "sidekick_listener_open_connections",
        "Connections open on a listener.",
        &labels,
        move || s.open_connections() as f64,
    );
    let s = Arc::clone(&stats);
    telemetry.counter_fn(
        "sidekick_listener_refused_connections",
        "Connections closed at once because the listener had max_connections open.",
        &labels,
        move || s.refused_connections() as f64,
    );
    let s = Arc::clone(&stats);
    telemetry.counter_fn(
        "sidekick_listener_tls_handshake_failures",
        "TLS handshakes that failed or did not finish in time (no or an untrusted client certificate, plain HTTP on a TLS port).",
        &labels,
        move || s.tls_failures() as f64,
    );
    let s = Arc::clone(&stats);
    telemetry.counter_fn(
        "sidekick_listener_unauthenticated_requests",
        "Requests refused by the listener's authenticator (HTTP 401, gRPC UNAUTHENTICATED).",
        &labels,
        move || s.unauthenticated() as f64,
    );
    for (kind, read) in [
        (
            "header",
            ListenerStats::header_timeouts as fn(&ListenerStats) -> u64,
        ),
        ("body", ListenerStats::body_timeouts),
        ("idle", ListenerStats::idle_closed),
    ] {
        let s = Arc::clone(&stats);
        telemetry.counter_fn(
            "sidekick_listener_timeouts",
            "Connections or requests cut by a timeout: header read, body read, idle.",
            &[("listener", listener), ("timeout", kind)],
            move || read(&s) as f64,
        );
    }
    ServerOptions {
        stats: Some(stats),
        ..ServerOptions::default()
    }
}
