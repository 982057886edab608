//! The admin endpoint (default `0.0.0.0:8888`): `/metrics` (self-metrics in the
//! Prometheus text format), `/healthz` (the process is alive) and `/readyz` (pipelines
//! started and not shutting down).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use http::StatusCode;
use sidekick_transport::server::{response, serve_with, ServerOptions};
use tokio::net::TcpListener;

use crate::pipe::Stop;
use crate::telemetry::Telemetry;

/// Readiness shared between the runtime and whoever serves health endpoints.
#[derive(Clone, Default)]
pub struct Health {
    ready: Arc<AtomicBool>,
}

impl Health {
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

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

/// The `health_check` extension, for configs written for the OpenTelemetry Collector:
/// `GET <path>` on its own port answers 200 while Sidekick is ready, 503 otherwise.
/// Sidekick's admin port also serves `/healthz` and `/readyz`.
///
/// ```yaml
/// extensions:
///   health_check:
///     endpoint: 0.0.0.0:13133
/// service:
///   extensions: [health_check]
/// ```
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheckConfig {
    /// Default `127.0.0.1:13133`.
    pub endpoint: String,
    /// Default `/`.
    pub path: String,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        HealthCheckConfig {
            endpoint: "127.0.0.1:13133".into(),
            path: "/".into(),
        }
    }
}

impl crate::component::ExtensionConfig for HealthCheckConfig {
    fn validate(&self) -> Vec<crate::component::FieldError> {
        if self.path.starts_with('/') {
            Vec::new()
        } else {
            vec![crate::component::FieldError::new(
                "path",
                "must start with /",
            )]
        }
    }

    fn listen_addresses(&self) -> Vec<crate::component::Listen> {
        vec![crate::component::Listen {
            field: "endpoint".into(),
            address: self.endpoint.clone(),
        }]
    }

    fn build(
        self,
        ctx: &crate::component::BuildContext,
        health: Health,
    ) -> Result<Box<dyn crate::component::Extension>, crate::component::BuildError> {
        let listener = sidekick_transport::server::bind(&self.endpoint, "endpoint")?;
        Ok(Box::new(HealthCheck {
            listener,
            path: self.path,
            health,
            options: ctx
                .telemetry
                .listener_options(&format!("extensions.{}", ctx.id)),
        }))
    }
}

struct HealthCheck {
    listener: TcpListener,
    path: String,
    health: Health,
    options: ServerOptions,
}

impl crate::component::Extension for HealthCheck {
    fn run(self: Box<Self>, stop: Stop) -> crate::component::BoxFuture<'static, ()> {
        let HealthCheck {
            listener,
            path,
            health,
            options,
        } = *self;
        let started = std::time::SystemTime::now();
        let check = move || async move {
            let up_since = started
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let uptime = started.elapsed().map(|d| d.as_secs_f64()).unwrap_or(0.0);
            let (status, text) = if health.is_ready() {
                (StatusCode::OK, "Server available")
            } else {
                (StatusCode::SERVICE_UNAVAILABLE, "Server not available")
            };
            let body = format!(
                "{{\"status\":\"{text}\",\"upSince\":{up_since},\"uptime\":\"{uptime:.3}s\"}}"
            );
            response(status, "application/json", body)
        };
        let router = Router::new().route(&path, get(check));
        Box::pin(async move { serve_with(listener, router, &options, stop.fired()).await })
    }
}
