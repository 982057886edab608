//! The `prometheus` exporter: Sidekick as a scrape target. Serves the metrics that reached
//! it at `/metrics` (default `0.0.0.0:8889`, which Prometheus reaches by Pod IP) in the
//! Prometheus text format, or in OpenMetrics (with exemplars) when the scraper asks for
//! it and `enable_open_metrics` is on.
//!
//! ```yaml
//! exporters:
//!   prometheus:
//!     endpoint: 0.0.0.0:8889
//!     metric_expiration: 5m
//!     enable_open_metrics: true
//!     include_self_metrics: true   # Sidekick's own metrics on the same page
//! ```
//!
//! Incoming batches update a store of the latest sample per series (translated by
//! [`crate::prom`]); a scrape renders the store. Series not updated for
//! `metric_expiration` are dropped from the page. Each series keeps its rendered name
//! and labels, so a render is string concatenation and ingestion waits at most that
//! long for the lock.

mod store;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::routing::get;
use axum::Router;
use http::{header, HeaderMap, StatusCode};
use serde::Deserialize;
use sidekick_collector::component::{
    BoxFuture, BuildContext, BuildError, ExporterConfig, ExporterParts, Extension, FieldError,
    Listen,
};
use sidekick_collector::config::{Duration as ConfigDuration, Signal as SignalKind};
use sidekick_collector::exporter::{Delivered, Export, ExportError, ExportSettings};
use sidekick_collector::payload::{Metrics, MetricsSignal};
use sidekick_collector::pipe::Stop;
use sidekick_collector::telemetry::Telemetry;
use sidekick_transport::server::{response, serve_with, ServerOptions};
use tokio::net::TcpListener;

use crate::prom::{self, Accumulator, ResourceToTelemetry, Settings, TranslationStrategy};
pub use store::{Format, Snapshot, Store};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listen address. Default `0.0.0.0:8889`.
    pub endpoint: String,
    /// Prefix for every metric name.
    pub namespace: String,
    /// Labels added to every series.
    pub const_labels: BTreeMap<String, String>,
    /// Put the samples' own timestamps on the page. Default false (Prometheus stamps them).
    pub send_timestamps: bool,
    /// Series not updated this long leave the page. Default 5m.
    pub metric_expiration: ConfigDuration,
    /// Answer in OpenMetrics (with exemplars) when the scraper asks for it. Default false.
    pub enable_open_metrics: bool,
    pub translation_strategy: TranslationStrategy,
    /// Deprecated Collector switch; `false` means `UnderscoreEscapingWithoutSuffixes`.
    pub add_metric_suffixes: Option<bool>,
    pub resource_to_telemetry_conversion: ResourceToTelemetry,
    /// Also serve Sidekick's own metrics on this page, so one Pod port has everything.
    pub include_self_metrics: bool,
    /// Serve the page over HTTPS (and mutual TLS with `client_ca_file`).
    pub tls: Option<sidekick_collector::config::ServerTls>,
    /// Require credentials from scrapers: an authenticator extension, e.g.
    /// `{authenticator: bearertokenauth}` (Prometheus: `authorization:` in its job).
    pub auth: Option<sidekick_collector::config::AuthRef>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            endpoint: "0.0.0.0:8889".into(),
            namespace: String::new(),
            const_labels: BTreeMap::new(),
            send_timestamps: false,
            metric_expiration: ConfigDuration::from_secs(300),
            enable_open_metrics: false,
            translation_strategy: TranslationStrategy::default(),
            add_metric_suffixes: None,
            resource_to_telemetry_conversion: ResourceToTelemetry::default(),
            include_self_metrics: false,
            tls: None,
            auth: None,
        }
    }
}

impl ExporterConfig for Config {
    const SIGNALS: &'static [SignalKind] = &[SignalKind::Metrics];

    fn validate(&self) -> Vec<FieldError> {
        let mut out = sidekick_collector::auth::check_listener(
            "",
            &self.endpoint,
            self.tls.as_ref(),
            self.auth.as_ref(),
        );
        if let Err(e) = sidekick_transport::server::resolve(&self.endpoint) {
            out.push(FieldError::new("endpoint", e));
        }
        for k in self.const_labels.keys() {
            if prom::label_name(k) != *k {
                out.push(FieldError::new(
                    format!("const_labels.{k}"),
                    "not a valid Prometheus label name",
                ));
            }
        }
        if self.metric_expiration.is_zero() {
            out.push(FieldError::new("metric_expiration", "must be more than 0"));
        }
        out
    }

    fn export_settings(&self) -> ExportSettings {
        ExportSettings::in_process()
    }

    fn listen_addresses(&self) -> Vec<Listen> {
        vec![Listen {
            field: "endpoint".into(),
            address: self.endpoint.clone(),
        }]
    }

    fn auth_uses(&self) -> Vec<sidekick_collector::auth::AuthUse> {
        self.auth
            .iter()
            .map(|a| {
                sidekick_collector::auth::AuthUse::new(
                    "auth",
                    a,
                    sidekick_collector::auth::AuthSide::Listener,
                )
            })
            .collect()
    }

    fn build(self, ctx: &BuildContext) -> Result<ExporterParts, BuildError> {
        let options = ctx.secure_listener(
            ctx.listener_options(&format!("exporters.{}", ctx.id)),
            "",
            self.tls.as_ref(),
            self.auth.as_ref(),
        )?;
        let listener = sidekick_transport::server::bind(&self.endpoint, "endpoint")?;
        let strategy = match self.add_metric_suffixes {
            Some(false) => TranslationStrategy::UnderscoreEscapingWithoutSuffixes,
            _ => self.translation_strategy,
        };
        let settings = Settings {
            strategy,
            namespace: self.namespace.clone(),
            resource_to_telemetry: self.resource_to_telemetry_conversion.enabled,
            extra_labels: self
                .const_labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            target_info: true,
            // Kept as native histograms: the protobuf page has them, the text pages show
            // them as classic ones.
            native_histograms: true,
        };
        let store = Arc::new(Mutex::new(Store::new(
            self.metric_expiration.get(),
            self.send_timestamps,
        )));
        let exporter = Arc::new(ScrapeExporter {
            store: Arc::clone(&store),
            settings: settings.clone(),
            accumulator: Mutex::new(Accumulator::default()),
        });
        let server = ScrapeServer {
            listener,
            store,
            open_metrics: self.enable_open_metrics,
            self_metrics: self
                .include_self_metrics
                .then(|| (ctx.telemetry.clone(), settings)),
            options,
        };
        Ok(ExporterParts {
            metrics: Some(exporter),
            server: Some(Box::new(server)),
            ..ExporterParts::default()
        })
    }
}

pub struct ScrapeExporter {
    store: Arc<Mutex<Store>>,
    settings: Settings,
    accumulator: Mutex<Accumulator>,
}

impl ScrapeExporter {
    fn ingest(&self, batch: &Metrics) -> Result<Delivered, ExportError> {
        // An encoded batch is decoded before the lock is taken; then samples go into the
        // store as the translation makes them, under its lock (a render holds it only
        // to copy the page's references out).
        let (request, detached) = prom::request_of(batch)?;
        let mut acc = self.accumulator.lock().unwrap_or_else(|p| p.into_inner());
        let mut store = self.store.lock().unwrap_or_else(|p| p.into_inner());
        store.begin_batch();
        let now = std::time::Instant::now();
        let translation = prom::translate_detached(
            &request,
            detached,
            &self.settings,
            &mut acc,
            sidekick_collector::util::now_ms(),
            &mut |s| store.ingest(s, now),
        );
        drop(store);
        let rejected = translation.dropped_points();
        let reason = translation
            .dropped
            .first()
            .map(|(_, r)| r.to_string())
            .unwrap_or_default();
        Ok(Delivered { rejected, reason })
    }
}

impl Export<MetricsSignal> for ScrapeExporter {
    fn export<'a>(&'a self, batch: &'a Metrics) -> BoxFuture<'a, Result<Delivered, ExportError>> {
        let result = self.ingest(batch);
        Box::pin(async move { result })
    }
}

struct ScrapeServer {
    listener: TcpListener,
    store: Arc<Mutex<Store>>,
    open_metrics: bool,
    self_metrics: Option<(Telemetry, Settings)>,
    options: ServerOptions,
}

impl Extension for ScrapeServer {
    fn run(self: Box<Self>, stop: Stop) -> BoxFuture<'static, ()> {
        let ScrapeServer {
            listener,
            store,
            open_metrics,
            self_metrics,
            options,
        } = *self;
        if let Ok(address) = listener.local_addr() {
            tracing::info!(address = %address, "prometheus exporter listening (/metrics)");
        }
        let self_metrics = Arc::new(self_metrics);
        let page = move |headers: HeaderMap| async move {
            let accept = headers
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let format = if open_metrics && accept.contains("application/openmetrics-text") {
                Format::OpenMetrics
            } else {
                Format::Text
            };
            let extra = match self_metrics.as_ref() {
                Some((telemetry, settings)) => store::self_metrics(telemetry, settings),
                None => prom::Translation::default(),
            };
            // Only the copy-out holds the lock; the page is written after it, a piece
            // at a time as the connection takes it.
            let snapshot = store.lock().unwrap_or_else(|p| p.into_inner()).snapshot();
            if protobuf_first(accept) {
                let content_type = sidekick_prometheus::exposition::CONTENT_TYPE;
                let mut r = response(StatusCode::OK, content_type, "");
                *r.body_mut() = axum::body::Body::from(snapshot.protobuf(extra));
                return r;
            }
            let mut r = response(StatusCode::OK, format.content_type(), "");
            *r.body_mut() = axum::body::Body::new(PageBody(snapshot.pages(format, extra)));
            r
        };
        let router = Router::new()
            .route("/metrics", get(page))
            .fallback(|| async {
                response(
                    StatusCode::NOT_FOUND,
                    "text/plain",
                    "not found: try /metrics\n",
                )
            });
        Box::pin(async move { serve_with(listener, router, &options, stop.fired()).await })
    }
}

/// Whether `accept` prefers the protobuf exposition to the text formats: it names it,
/// and first or with the highest `q` among what it names.
fn protobuf_first(accept: &str) -> bool {
    let mut best: Option<(f64, bool)> = None;
    for item in accept.split(',') {
        let mut parts = item.split(';').map(str::trim);
        let media = parts.next().unwrap_or("");
        let mut q = 1.0;
        let mut proto = "";
        for p in parts {
            if let Some(v) = p.strip_prefix("q=") {
                q = v.parse().unwrap_or(0.0);
            } else if let Some(v) = p.strip_prefix("proto=") {
                proto = v;
            }
        }
        let is_protobuf = media == "application/vnd.google.protobuf"
            && proto == "io.prometheus.client.MetricFamily";
        let known = is_protobuf || media == "text/plain" || media == "application/openmetrics-text";
        // Ties go to the earlier item.
        if known && q > 0.0 && best.is_none_or(|(b, _)| q > b) {
            best = Some((q, is_protobuf));
        }
    }
    best.is_some_and(|(_, p)| p)
}

/// A page as a response body, written a piece at a time.
struct PageBody(store::Pages);

impl http_body::Body for PageBody {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        let chunk = self.0.next();
        std::task::Poll::Ready(chunk.map(|c| Ok(http_body::Frame::data(c.into()))))
    }
}

#[cfg(test)]
mod tests;
