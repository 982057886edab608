//! The `filter` processor: drops spans, span events, metrics, data points and log
//! records that match OTTL conditions (or the older `include`/`exclude` match form),
//! with the OpenTelemetry Collector's config and semantics. Batches stay encoded: the
//! conditions read each item where it lies and dropped items are cut out of the bytes.
//!
//! ```yaml
//! processors:
//!   filter:
//!     error_mode: ignore
//!     traces:
//!       span:
//!         - 'attributes["http.route"] == "/healthz"'
//!     logs:
//!       log_record:
//!         - 'severity_number < SEVERITY_NUMBER_INFO'
//! ```
//!
//! A condition that holds drops the item; conditions are ORed. A resource or metric
//! that matches takes everything below it; a metric whose data points are all dropped
//! goes too, a span whose events are all dropped stays. Dropped items are counted in
//! `otelcol_processor_filter_{spans,datapoints,logs}_filtered_total`.

mod legacy;

use serde::Deserialize;
use sidekick_collector::component::{
    BuildContext, BuildError, FieldError, Processor, ProcessorConfig, Sieve, SieveProcessor,
};
use sidekick_collector::config::Signal as SignalKind;
use sidekick_collector::payload::{Batch, Signal};
use sidekick_collector::telemetry::Counter;

use crate::ottl::config::{conditions, infer, ErrorMode, Errors};
use crate::ottl::run::for_each;
use crate::ottl::{Cond, Context, Verdict};

pub use legacy::{LogMatch, MatchSet, MetricMatch, SpanMatch};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `ignore` (default), `silent` or `propagate`.
    pub error_mode: ErrorMode,
    pub traces: TracesConfig,
    pub metrics: MetricsConfig,
    pub logs: LogsConfig,
    /// The older match form for spans.
    pub spans: MatchSet<SpanMatch>,
    /// The flat form of newer Collector releases: conditions whose paths name their
    /// context (`span.name`, `resource.attributes["k"]`).
    pub trace_conditions: Vec<String>,
    pub metric_conditions: Vec<String>,
    pub log_conditions: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracesConfig {
    pub resource: Vec<String>,
    pub scope: Vec<String>,
    pub span: Vec<String>,
    pub spanevent: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    pub resource: Vec<String>,
    pub scope: Vec<String>,
    pub metric: Vec<String>,
    pub datapoint: Vec<String>,
    pub include: Option<MetricMatch>,
    pub exclude: Option<MetricMatch>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogsConfig {
    pub resource: Vec<String>,
    pub scope: Vec<String>,
    pub log_record: Vec<String>,
    pub include: Option<LogMatch>,
    pub exclude: Option<LogMatch>,
}

/// Compiled conditions of one signal, per context, outermost first.
type Stages = Vec<(Context, Vec<Cond>)>;

impl Config {
    fn stages(&self, signal: SignalKind, errors: &mut Vec<FieldError>) -> Stages {
        let mut stages: Stages = Vec::new();
        let mut add = |context: Context, conds: Vec<Cond>| {
            if conds.is_empty() {
                return;
            }
            match stages.iter_mut().find(|(c, _)| *c == context) {
                Some((_, list)) => list.extend(conds),
                None => stages.push((context, conds)),
            }
        };
        let (flat, flat_at) = match signal {
            SignalKind::Traces => {
                let t = &self.traces;
                add(
                    Context::Resource,
                    conditions(&t.resource, Context::Resource, "traces.resource", errors),
                );
                add(
                    Context::Scope,
                    conditions(&t.scope, Context::Scope, "traces.scope", errors),
                );
                add(
                    Context::Span,
                    conditions(&t.span, Context::Span, "traces.span", errors),
                );
                add(
                    Context::SpanEvent,
                    conditions(&t.spanevent, Context::SpanEvent, "traces.spanevent", errors),
                );
                add(Context::Span, self.spans.compile("spans", errors));
                (&self.trace_conditions, "trace_conditions")
            }
            SignalKind::Metrics => {
                let m = &self.metrics;
                add(
                    Context::Resource,
                    conditions(&m.resource, Context::Resource, "metrics.resource", errors),
                );
                add(
                    Context::Scope,
                    conditions(&m.scope, Context::Scope, "metrics.scope", errors),
                );
                add(
                    Context::Metric,
                    conditions(&m.metric, Context::Metric, "metrics.metric", errors),
                );
                add(
                    Context::DataPoint,
                    conditions(
                        &m.datapoint,
                        Context::DataPoint,
                        "metrics.datapoint",
                        errors,
                    ),
                );
                let set = MatchSet {
                    include: m.include.clone(),
                    exclude: m.exclude.clone(),
                };
                add(Context::Metric, set.compile("metrics", errors));
                (&self.metric_conditions, "metric_conditions")
            }
            SignalKind::Logs => {
                let l = &self.logs;
                add(
                    Context::Resource,
                    conditions(&l.resource, Context::Resource, "logs.resource", errors),
                );
                add(
                    Context::Scope,
                    conditions(&l.scope, Context::Scope, "logs.scope", errors),
                );
                add(
                    Context::Log,
                    conditions(&l.log_record, Context::Log, "logs.log_record", errors),
                );
                let set = MatchSet {
                    include: l.include.clone(),
                    exclude: l.exclude.clone(),
                };
                add(Context::Log, set.compile("logs", errors));
                (&self.log_conditions, "log_conditions")
            }
        };
        for (i, text) in flat.iter().enumerate() {
            match infer(signal, &[text]) {
                Ok(context) => add(
                    context,
                    conditions(
                        std::slice::from_ref(text),
                        context,
                        &format!("{flat_at}[{i}]"),
                        errors,
                    ),
                ),
                Err(message) => errors.push(FieldError::new(format!("{flat_at}[{i}]"), message)),
            }
        }
        // Outermost first, so a dropped resource is not looked into again.
        let order = crate::ottl::config::contexts(signal);
        stages.sort_by_key(|(c, _)| order.iter().position(|o| o == c));
        stages
    }
}

impl ProcessorConfig for Config {
    const SIGNALS: &'static [SignalKind] = &SignalKind::ALL;

    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let mut any = false;
        for signal in SignalKind::ALL {
            any |= !self.stages(signal, &mut errors).is_empty();
        }
        if !any && errors.is_empty() {
            errors.push(FieldError::new(
                "",
                "no conditions: add e.g. traces: {span: ['attributes[\"http.route\"] == \"/healthz\"']}",
            ));
        }
        errors
    }

    fn build<S: Signal>(&self, ctx: &BuildContext) -> Result<Box<dyn Processor<S>>, BuildError> {
        let mut errors = Vec::new();
        let stages = self.stages(S::KIND, &mut errors);
        if let Some(e) = errors.first() {
            return Err(BuildError::new(format!("{}: {}", e.field, e.message)));
        }
        let name = ctx.id.to_string();
        let (metric, help) = match S::KIND {
            SignalKind::Traces => (
                "otelcol_processor_filter_spans_filtered",
                "Spans dropped by the filter processor.",
            ),
            SignalKind::Metrics => (
                "otelcol_processor_filter_datapoints_filtered",
                "Data points dropped by the filter processor.",
            ),
            SignalKind::Logs => (
                "otelcol_processor_filter_logs_filtered",
                "Log records dropped by the filter processor.",
            ),
        };
        Ok(Box::new(SieveProcessor(Filter {
            stages,
            filtered: ctx
                .telemetry
                .counter(metric, help, &[("filter", name.as_str())]),
            errors: Errors::new(self.error_mode, ctx.telemetry, &name),
        })))
    }
}

pub struct Filter {
    stages: Stages,
    filtered: Counter,
    errors: Errors,
}

impl Filter {
    /// A filter with no telemetry, for benchmarks and tests.
    pub fn from_config(config: &Config, signal: SignalKind) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let stages = config.stages(signal, &mut errors);
        if !errors.is_empty() {
            return Err(errors);
        }
        let telemetry = sidekick_collector::telemetry::Telemetry::new();
        Ok(Filter {
            stages,
            filtered: telemetry.counter("filtered", "", &[]),
            errors: Errors::new(config.error_mode, &telemetry, "filter"),
        })
    }
}

impl<S: Signal> Sieve<S> for Filter {
    fn sift(&self, batch: &mut Batch<S>) -> Result<(), String> {
        let before = batch.len();
        let mut refused = None;
        for (context, conds) in &self.stages {
            if batch.is_empty() {
                break;
            }
            let errors = &self.errors;
            for_each(batch, *context, &mut |item| {
                if refused.is_some() {
                    return Verdict::Keep;
                }
                for c in conds {
                    match c.matches(item) {
                        Ok(true) => return Verdict::Drop,
                        Ok(false) => {}
                        Err(e) => {
                            if let Err(e) = errors.fail(e) {
                                refused = Some(e);
                                return Verdict::Keep;
                            }
                        }
                    }
                }
                Verdict::Keep
            });
            if let Some(e) = refused {
                return Err(e);
            }
        }
        self.filtered.add((before - batch.len()) as u64);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
