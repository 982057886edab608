//! The admin endpoint (default `0.0.0.0:8888`): `/metrics` (self-metrics in the
//! Prometheus text format), `/healthz` (the process is alive), `/readyz` (pipelines
//! started and not shutting down) and, when enabled, `POST /-/reload` (load the config
//! file again).

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use http::StatusCode;
use sidekick_transport::server::{response, serve_with, ServerOptions};
use tokio::net::TcpListener;

pub use crate::base::Health;
use crate::base::Stop;
use crate::telemetry::Telemetry;

const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What `POST /-/reload` calls: asks for a reload and returns at once.
pub type Reload = Arc<dyn Fn() + Send + Sync>;

/// What the admin listener serves.
pub struct Routes {
    /// `/metrics`, when self-metrics are on.
    pub telemetry: Option<Telemetry>,
    pub health: Health,
    /// `POST /-/reload`, when enabled.
    pub reload: Option<Reload>,
}

/// Serves the admin endpoints until `stop` fires.
pub async fn run(listener: TcpListener, routes: Routes, options: ServerOptions, stop: Stop) {
    serve_with(listener, router(routes), &options, stop.fired()).await;
}

/// `/metrics` (when self-metrics are on), `/healthz` and `/readyz`, GET or HEAD; `POST
/// /-/reload` when enabled.
pub fn router(routes: Routes) -> Router {
    let Routes {
        telemetry,
        health,
        reload,
    } = routes;
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
    if let Some(reload) = reload {
        router = router.route(
            "/-/reload",
            post(move || async move {
                reload();
                response(
                    StatusCode::ACCEPTED,
                    "text/plain",
                    "reload requested: the log and sidekick_config_reloads_total say how it went\n",
                )
            }),
        );
    }
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
