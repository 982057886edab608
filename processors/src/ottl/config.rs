//! What the `filter` and `transform` processors share in their configs: `error_mode`,
//! lists of conditions and statements checked with errors at their YAML line, and the
//! context of a flat (context-prefixed) condition or statement.

use serde::Deserialize;
use sidekick_collector::component::FieldError;
use sidekick_collector::config::Signal as SignalKind;
use sidekick_collector::telemetry::{Counter, LogBurst, Telemetry};
use std::time::Duration;

use super::compile::{self, CompileError, Cond, Statement};
use super::item::Context;
use super::parse::{self, Condition, Expr};

/// What happens when a condition or statement fails on an item.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorMode {
    /// The item goes on unchanged; the error is counted and logged (at most every 10 s).
    /// The Collector's default in current releases.
    #[default]
    Ignore,
    /// As `ignore`, without the log line.
    Silent,
    /// The whole batch is refused: to the client when the processor leads its pipeline
    /// (its receiver answers with the error), otherwise dropped; counted and logged.
    Propagate,
}

/// Counts and logs evaluation errors under `ignore` and `silent`.
pub struct Errors {
    mode: ErrorMode,
    count: Counter,
    log: LogBurst,
    processor: String,
}

impl Errors {
    pub fn new(mode: ErrorMode, telemetry: &Telemetry, processor: &str) -> Self {
        Errors {
            mode,
            count: telemetry.counter(
                "sidekick_processor_ottl_errors",
                "OTTL conditions and statements that failed on an item.",
                &[("processor", processor)],
            ),
            log: LogBurst::new(Duration::from_secs(10)),
            processor: processor.to_string(),
        }
    }

    /// Handles one failure: `Err` when the batch must be refused (`propagate`).
    pub fn fail(&self, error: String) -> Result<(), String> {
        self.count.add(1);
        match self.mode {
            ErrorMode::Propagate => {
                if let Some(held_back) = self.log.check() {
                    tracing::warn!(processor = %self.processor, %error, similar_errors_not_logged = held_back, "OTTL failed on an item; the batch is refused (error_mode: propagate)");
                }
                Err(error)
            }
            ErrorMode::Silent => Ok(()),
            ErrorMode::Ignore => {
                if let Some(held_back) = self.log.check() {
                    tracing::warn!(processor = %self.processor, %error, similar_errors_not_logged = held_back, "OTTL failed on an item; the item goes on unchanged (error_mode: ignore)");
                }
                Ok(())
            }
        }
    }

    pub fn mode(&self) -> ErrorMode {
        self.mode
    }
}

/// A field error for an OTTL text at `field`: the line and column of the YAML value
/// come from the field path; the message says where in the text.
pub fn field_error(field: String, text: &str, e: &CompileError) -> FieldError {
    let shown: String = text.chars().take(e.at.min(text.chars().count())).collect();
    let at = if e.at >= text.chars().count() {
        "at the end".to_string()
    } else {
        format!("at character {} (after `{}`)", e.at + 1, tail(&shown, 24))
    };
    FieldError::new(field, format!("{at}: {}", e.message))
}

fn tail(s: &str, n: usize) -> String {
    let chars: Vec<char> = s.chars().collect();
    chars[chars.len().saturating_sub(n)..].iter().collect()
}

/// Compiles conditions in one context, collecting errors with their fields.
pub fn conditions(
    texts: &[String],
    context: Context,
    at: &str,
    errors: &mut Vec<FieldError>,
) -> Vec<Cond> {
    texts
        .iter()
        .enumerate()
        .filter_map(|(i, text)| match compile::condition(text, context) {
            Ok(c) => Some(c),
            Err(e) => {
                errors.push(field_error(format!("{at}[{i}]"), text, &e));
                None
            }
        })
        .collect()
}

pub fn statements(
    texts: &[String],
    context: Context,
    at: &str,
    errors: &mut Vec<FieldError>,
) -> Vec<Statement> {
    texts
        .iter()
        .enumerate()
        .filter_map(|(i, text)| match compile::statement(text, context) {
            Ok(s) => Some(s),
            Err(e) => {
                errors.push(field_error(format!("{at}[{i}]"), text, &e));
                None
            }
        })
        .collect()
}

/// The contexts of a signal, outermost first.
pub fn contexts(signal: SignalKind) -> &'static [Context] {
    match signal {
        SignalKind::Traces => &[
            Context::Resource,
            Context::Scope,
            Context::Span,
            Context::SpanEvent,
        ],
        SignalKind::Metrics => &[
            Context::Resource,
            Context::Scope,
            Context::Metric,
            Context::DataPoint,
        ],
        SignalKind::Logs => &[Context::Resource, Context::Scope, Context::Log],
    }
}

/// The context a flat statement or condition runs in: the innermost one its paths name
/// by prefix (`span.name`, `resource.attributes[...]`), as the Collector infers it.
pub fn infer(signal: SignalKind, texts: &[&str]) -> Result<Context, String> {
    let order = contexts(signal);
    let mut deepest: Option<usize> = None;
    for text in texts {
        let mut names = Vec::new();
        match parse::statement(text) {
            Ok(s) => {
                s.editor
                    .args
                    .iter()
                    .for_each(|a| expr_prefixes(&a.value, &mut names));
                if let Some(c) = &s.condition {
                    cond_prefixes(c, &mut names);
                }
            }
            Err(_) => {
                if let Ok(c) = parse::condition(text) {
                    cond_prefixes(&c, &mut names);
                }
            }
        }
        for name in names {
            let Some(ctx) = Context::parse(&name) else {
                return Err(format!(
                    "`{name}` is not a context: in this form every path starts with its context, one of {}",
                    order.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ")
                ));
            };
            let Some(i) = order.iter().position(|c| *c == ctx) else {
                return Err(format!(
                    "the {} context is not one of {signal}'s",
                    ctx.name()
                ));
            };
            deepest = Some(deepest.map_or(i, |d| d.max(i)));
        }
    }
    deepest.map(|i| order[i]).ok_or_else(|| {
        "no path names its context: write e.g. span.name, log.body, metric.name, resource.attributes[\"k\"]".to_string()
    })
}

fn cond_prefixes(c: &Condition, out: &mut Vec<String>) {
    match c {
        Condition::Or(t) | Condition::And(t) => t.iter().for_each(|c| cond_prefixes(c, out)),
        Condition::Not(c) => cond_prefixes(c, out),
        Condition::Compare(a, _, b) => {
            expr_prefixes(a, out);
            expr_prefixes(b, out);
        }
        Condition::Value(e) => expr_prefixes(e, out),
    }
}

fn expr_prefixes(e: &Expr, out: &mut Vec<String>) {
    match e {
        Expr::Path(p) => out.push(p.names[0].clone()),
        Expr::Call(c) => c.args.iter().for_each(|a| expr_prefixes(&a.value, out)),
        Expr::List(items) => items.iter().for_each(|e| expr_prefixes(e, out)),
        Expr::Map(entries) => entries.iter().for_each(|(_, e)| expr_prefixes(e, out)),
        Expr::Math(a, _, b) => {
            expr_prefixes(a, out);
            expr_prefixes(b, out);
        }
        Expr::Condition(c) => cond_prefixes(c, out),
        Expr::Literal(_) | Expr::Enum(..) => {}
    }
}

/// Quotes a string as an OTTL literal.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
