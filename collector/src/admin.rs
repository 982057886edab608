//! The admin endpoint (default `0.0.0.0:8888`): `/metrics` (self-metrics in the
//! Prometheus text format), `/healthz` (the process is alive) and `/readyz` (pipelines
//! started and not shutting down).

use axum::routing::get;
use axum::Router;
use http::StatusCode;
use sidekick_transport::server::{response, serve_with, ServerOptions};
use tokio::net::TcpListener;

pub use crate::base::Health;
use crate::base::Stop;
use crate::telemetry::Telemetry;

const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves the admin endpoints until `stop` fires.
pub async fn run(
    listener: TcpListener,
    telemetry: Option<Telemetry>,
    health: Health,
    options: ServerOptions,
    stop: Stop,
) {
    serve_with(listener, router(telemetry, health), &options, stop.fired()).await;
}

/// `/metrics` (when self-metrics are on), `/healthz` and `/readyz`; GET or HEAD.
pub fn router(telemetry: Option<Telemetry>, health: Health) -> Router {
    let mut router = Router::new()
        .route(
            "/healthz",
            get(|| async { response(StatusCode::OK, "text/plain", "ok\n") }),
        )
        .route(
            "/readyz",
            get(move || async move {
                if health.is_ready() {
                    response(StatusCode::OK, "text/plain", "ready\n")
                } else {
                    response(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "not ready\n")
                }
            }),
        );
    if let Some(t) = telemetry {
        router = router.route(
            "/metrics",
            get(move || async move { response(StatusCode::OK, TEXT_FORMAT, t.render()) }),
        );
    }
    router.fallback(|| async {
        response(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics, /healthz or /readyz\n",
        )
    })
}
