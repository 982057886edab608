//! The `debug` exporter: logs what passes through, for trying Sidekick out.
//!
//! ```yaml
//! exporters:
//!   debug:
//!     verbosity: basic   # basic: one line per batch; normal: a line per item;
//!                        # detailed: every field
//! ```

use serde::Deserialize;
use sidekick_collector::component::{
    BoxFuture, BuildContext, BuildError, ExporterConfig, ExporterParts,
};
use sidekick_collector::config::Signal as SignalKind;
use sidekick_collector::exporter::{Delivered, Export, ExportError, ExportSettings};
use sidekick_collector::payload::{Batch, Signal};
use tracing::info;

mod render;

use render::Render;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verbosity {
    #[default]
    Basic,
    Normal,
    Detailed,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub verbosity: Verbosity,
    /// Accepted for compatibility; every batch is printed.
    pub sampling_initial: Option<u32>,
    /// Accepted for compatibility; every batch is printed.
    pub sampling_thereafter: Option<u32>,
}

impl ExporterConfig for Config {
    const SIGNALS: &'static [SignalKind] = &SignalKind::ALL;

    fn export_settings(&self) -> ExportSettings {
        ExportSettings::in_process()
    }

    fn build(self, ctx: &BuildContext) -> Result<ExporterParts, BuildError> {
        Ok(ExporterParts::all(std::sync::Arc::new(DebugExporter {
            name: ctx.id.to_string(),
            verbosity: self.verbosity,
        })))
    }
}

pub struct DebugExporter {
    name: String,
    verbosity: Verbosity,
}

impl DebugExporter {
    fn print<S: Signal>(&self, batch: &Batch<S>) -> Result<Delivered, ExportError>
    where
        S::Request: Render,
    {
        let noun = match S::KIND {
            SignalKind::Traces => "spans",
            SignalKind::Metrics => "data points",
            SignalKind::Logs => "log records",
        };
        let summary = format!("{}: {} {noun}", S::KIND, batch.len());
        if self.verbosity == Verbosity::Basic {
            info!(exporter = %self.name, "{summary}");
            return Ok(Delivered::default());
        }
        let details = match batch.to_request() {
            Ok(r) => r.render(self.verbosity == Verbosity::Detailed),
            Err(e) => format!("(cannot decode: {e})"),
        };
        info!(exporter = %self.name, "{summary}\n{details}");
        Ok(Delivered::default())
    }
}

impl<S: Signal> Export<S> for DebugExporter
where
    S::Request: Render,
{
    fn export<'a>(&'a self, batch: &'a Batch<S>) -> BoxFuture<'a, Result<Delivered, ExportError>> {
        let result = self.print(batch);
        Box::pin(async move { result })
    }
}
