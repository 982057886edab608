//! The `prometheus` receiver: scrapes Prometheus endpoints (the app's `/metrics`) and
//! turns what it reads into OTLP metrics, configured like the OpenTelemetry Collector's
//! receiver with Prometheus `scrape_configs`.
//!
//! ```yaml
//! receivers:
//!   prometheus:
//!     config:
//!       global:
//!         scrape_interval: 15s
//!       scrape_configs:
//!         - job_name: app
//!           static_configs:
//!             - targets: ["localhost:8080"]
//!               labels:
//!                 team: checkout
//!           metric_relabel_configs:
//!             - source_labels: [__name__]
//!               regex: "go_gc_.*"
//!               action: drop
//! ```
//!
//! Layout: `config` is the configuration and its checks; `discovery` finds the Pod's
//! annotated target; `scrape` fetches pages and runs each target. Reading a page and
//! turning it into OTLP ([`translate`], with [`series`] remembering start times and the
//! previous scrape, and [`openmetrics`]' rules) is `sidekick-prometheus`'s, like the
//! parser and relabeling.

mod config;
mod discovery;
mod scrape;
pub use sidekick_prometheus::to_otlp as translate;
pub use sidekick_prometheus::to_otlp::{openmetrics, series};

use std::sync::Arc;

use sidekick_collector::component::{
    BoxFuture, BuildContext, BuildError, FieldError, Receiver, ReceiverConfig, ReceiverOutputs,
};
use sidekick_collector::config::Signal as SignalKind;
use sidekick_collector::pipe::Stop;
use sidekick_collector::telemetry::Telemetry;

pub use config::*;
pub use discovery::from_annotations;
use scrape::ScrapeTarget;

impl ReceiverConfig for Config {
    const SIGNALS: &'static [SignalKind] = &[SignalKind::Metrics];

    fn validate(&self) -> Vec<FieldError> {
        self.check()
    }

    fn build(self, ctx: &BuildContext) -> Result<Box<dyn Receiver>, BuildError> {
        let name = ctx.id.to_string();
        let mut targets = Vec::new();
        let mut scrape_configs = self.config.scrape_configs.clone();
        if let Some(sc) = discovery::annotated(&self, &name)? {
            scrape_configs.push(sc);
        }
        for sc in &scrape_configs {
            targets.extend(scrape::targets_for(
                &self.config.global,
                sc,
                &name,
                ctx.telemetry,
            )?);
        }
        Ok(Box::new(PrometheusReceiver {
            name,
            telemetry: ctx.telemetry.clone(),
            targets,
            max_series_state: self
                .max_series_state
                .unwrap_or(series::DEFAULT_MAX_SERIES_STATE),
        }))
    }
}

pub struct PrometheusReceiver {
    name: String,
    telemetry: Telemetry,
    targets: Vec<ScrapeTarget>,
    max_series_state: usize,
}

/// The start-time budget all targets of receiver `name` share, counting its overflows in
/// `sidekick_scrape_series_state_overflow{receiver}`.
fn series_budget(telemetry: &Telemetry, name: &str, limit: usize) -> series::SeriesBudget {
    let overflow = telemetry.counter(
        "sidekick_scrape_series_state_overflow",
        "Series (counted once per scrape) delivered without remembered start time because the receiver's max_series_state was reached.",
        &[("receiver", name)],
    );
    series::SeriesBudget::new(limit, overflow, name)
}

impl Receiver for PrometheusReceiver {
    fn run(self: Box<Self>, outputs: ReceiverOutputs, stop: Stop) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let Some(output) = outputs.metrics else {
                return;
            };
            let counters = Arc::new(scrape::Counters::new(&self.telemetry, &self.name));
            let budget = Arc::new(series_budget(
                &self.telemetry,
                &self.name,
                self.max_series_state,
            ));
            let mut tasks = tokio::task::JoinSet::new();
            for t in self.targets {
                tasks.spawn(t.run(
                    output.clone(),
                    Arc::clone(&counters),
                    Arc::clone(&budget),
                    stop.clone(),
                ));
            }
            drop(output);
            while tasks.join_next().await.is_some() {}
        })
    }
}

#[cfg(test)]
mod tests;
