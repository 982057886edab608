//! The `transform` processor: edits telemetry with OTTL statements, with the
//! OpenTelemetry Collector's config: groups with a `context`, optional `conditions` and
//! `statements`, or the flat list of newer releases whose paths name their context.
//! Batches stay encoded: an item a statement does not change is not rewritten, and an
//! edited item is rewritten alone.
//!
//! ```yaml
//! processors:
//!   transform:
//!     error_mode: ignore
//!     trace_statements:
//!       - context: span
//!         conditions: ['kind == SPAN_KIND_SERVER']
//!         statements:
//!           - set(attributes["deployment.environment.name"], "prod")
//!           - delete_key(attributes, "http.request.header.authorization")
//!     log_statements:
//!       - set(log.severity_text, "FAIL") where log.body == "request failed"
//! ```
//!
//! Flat statements run each in the innermost context its paths name, in order.

use serde::Deserialize;
use sidekick_collector::component::{
    BuildContext, BuildError, FieldError, Processor, ProcessorConfig, Sieve, SieveProcessor,
};
use sidekick_collector::config::Signal as SignalKind;
use sidekick_collector::payload::{Batch, Signal};
use sidekick_collector::telemetry::Telemetry;

use crate::ottl::config::{conditions, contexts, infer, statements, ErrorMode, Errors};
use crate::ottl::run::for_each;
use crate::ottl::{Cond, Context, Statement, Verdict};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `ignore` (default), `silent` or `propagate`.
    pub error_mode: ErrorMode,
    pub trace_statements: Vec<Entry>,
    pub metric_statements: Vec<Entry>,
    pub log_statements: Vec<Entry>,
}

/// A group, or one statement of the flat form.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Entry {
    Flat(String),
    Group(GroupConfig),
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GroupConfig {
    /// resource, scope, span, spanevent, metric, datapoint or log; inferred from the
    /// paths' prefixes when left out.
    pub context: Option<String>,
    /// The statements run on an item when any of these holds (all items without any).
    pub conditions: Vec<String>,
    pub statements: Vec<String>,
    /// Overrides the processor's `error_mode` for this group.
    pub error_mode: Option<ErrorMode>,
}

struct Group {
    context: Context,
    conditions: Vec<Cond>,
    statements: Vec<Statement>,
    error_mode: ErrorMode,
}

impl Config {
    fn entries(&self, signal: SignalKind) -> (&[Entry], &'static str) {
        match signal {
            SignalKind::Traces => (&self.trace_statements, "trace_statements"),
            SignalKind::Metrics => (&self.metric_statements, "metric_statements"),
            SignalKind::Logs => (&self.log_statements, "log_statements"),
        }
    }

    fn groups(&self, signal: SignalKind, errors: &mut Vec<FieldError>) -> Vec<Group> {
        let (entries, key) = self.entries(signal);
        let mut groups: Vec<Group> = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let at = format!("{key}[{i}]");
            match entry {
                Entry::Flat(text) => {
                    let context = match infer(signal, &[text]) {
                        Ok(c) => c,
                        Err(message) => {
                            errors.push(FieldError::new(at, message));
                            continue;
                        }
                    };
                    let compiled = statements(std::slice::from_ref(text), context, &at, errors);
                    // Consecutive flat statements of one context run in one walk.
                    match groups.last_mut() {
                        Some(g)
                            if g.context == context
                                && g.conditions.is_empty()
                                && g.error_mode == self.error_mode =>
                        {
                            g.statements.extend(compiled)
                        }
                        _ => groups.push(Group {
                            context,
                            conditions: Vec::new(),
                            statements: compiled,
                            error_mode: self.error_mode,
                        }),
                    }
                }
                Entry::Group(g) => {
                    let context = match &g.context {
                        Some(name) => {
                            match Context::parse(name).filter(|c| contexts(signal).contains(c)) {
                                Some(c) => c,
                                None => {
                                    errors.push(FieldError::new(
                                    format!("{at}.context"),
                                    format!(
                                        "{signal} statements run in one of the contexts {}, not {name:?}",
                                        contexts(signal).iter().map(|c| c.name()).collect::<Vec<_>>().join(", ")
                                    ),
                                ));
                                    continue;
                                }
                            }
                        }
                        None => {
                            let texts: Vec<&str> = g
                                .statements
                                .iter()
                                .chain(&g.conditions)
                                .map(String::as_str)
                                .collect();
                            match infer(signal, &texts) {
                                Ok(c) => c,
                                Err(message) => {
                                    errors.push(FieldError::new(at, message));
                                    continue;
                                }
                            }
                        }
                    };
                    if g.statements.is_empty() {
                        errors.push(FieldError::new(
                            format!("{at}.statements"),
                            "add at least one statement",
                        ));
                    }
                    groups.push(Group {
                        context,
                        conditions: conditions(
                            &g.conditions,
                            context,
                            &format!("{at}.conditions"),
                            errors,
                        ),
                        statements: statements(
                            &g.statements,
                            context,
                            &format!("{at}.statements"),
                            errors,
                        ),
                        error_mode: g.error_mode.unwrap_or(self.error_mode),
                    });
                }
            }
        }
        groups
    }
}

impl ProcessorConfig for Config {
    const SIGNALS: &'static [SignalKind] = &SignalKind::ALL;

    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let mut any = false;
        for signal in SignalKind::ALL {
            any |= !self.groups(signal, &mut errors).is_empty();
        }
        if !any && errors.is_empty() {
            errors.push(FieldError::new(
                "",
                "no statements: add e.g. trace_statements: ['set(span.attributes[\"env\"], \"prod\")']",
            ));
        }
        errors
    }

    fn build<S: Signal>(&self, ctx: &BuildContext) -> Result<Box<dyn Processor<S>>, BuildError> {
        Transform::new(self, S::KIND, ctx.telemetry, &ctx.id.to_string())
            .map(|t| Box::new(SieveProcessor(t)) as Box<dyn Processor<S>>)
            .map_err(|errors| {
                let e = &errors[0];
                BuildError::new(format!("{}: {}", e.field, e.message))
            })
    }
}

pub struct Transform {
    groups: Vec<(Group, Errors)>,
}

impl Transform {
    pub fn new(
        config: &Config,
        signal: SignalKind,
        telemetry: &Telemetry,
        name: &str,
    ) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let groups = config.groups(signal, &mut errors);
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Transform {
            groups: groups
                .into_iter()
                .map(|g| {
                    let e = Errors::new(g.error_mode, telemetry, name);
                    (g, e)
                })
                .collect(),
        })
    }
}

impl<S: Signal> Sieve<S> for Transform {
    fn sift(&self, batch: &mut Batch<S>) -> Result<(), String> {
        let mut refused = None;
        for (group, errors) in &self.groups {
            for_each(batch, group.context, &mut |item| {
                if refused.is_some() {
                    return Verdict::Keep;
                }
                if !group.conditions.is_empty() {
                    let mut any = false;
                    for c in &group.conditions {
                        match c.matches(item) {
                            Ok(true) => {
                                any = true;
                                break;
                            }
                            Ok(false) => {}
                            Err(e) => {
                                if let Err(e) = errors.fail(e) {
                                    refused = Some(e);
                                    return Verdict::Keep;
                                }
                            }
                        }
                    }
                    if !any {
                        return Verdict::Keep;
                    }
                }
                for st in &group.statements {
                    if let Err(e) = st.run(item) {
                        if let Err(e) = errors.fail(e) {
                            refused = Some(e);
                            return Verdict::Keep;
                        }
                    }
                }
                Verdict::Keep
            });
            if let Some(e) = refused {
                return Err(e);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
