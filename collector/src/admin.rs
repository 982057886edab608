//! The admin endpoint (default `0.0.0.0:8888`): `/metrics` (self-metrics in the
//! Prometheus text format), `/healthz` (the process is alive) and `/readyz` (pipelines
//! started and not shutting down).

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::net::TcpListener;

use crate::http::{response, serve};
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
pub async fn run(listener: TcpListener, telemetry: Option<Telemetry>, health: Health, stop: Stop) {
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let reply = handle(&req, telemetry.as_ref(), &health);
        async move { Ok::<_, Infallible>(reply) }
    });
    serve(listener, service, stop).await;
}

fn handle(
    req: &Request<Incoming>,
    telemetry: Option<&Telemetry>,
    health: &Health,
) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return response(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "use GET\n");
    }
    match (req.uri().path(), telemetry) {
        ("/metrics", Some(t)) => response(StatusCode::OK, TEXT_FORMAT, t.render()),
        ("/healthz", _) => response(StatusCode::OK, "text/plain", "ok\n"),
        ("/readyz", _) if health.is_ready() => response(StatusCode::OK, "text/plain", "ready\n"),
        ("/readyz", _) => response(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "not ready\n"),
        _ => response(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics, /healthz or /readyz\n",
        ),
    }
}
