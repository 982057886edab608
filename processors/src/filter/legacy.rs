//! The older `include`/`exclude` match form, translated into OTTL conditions so one
//! evaluator serves both forms.
//!
//! ```yaml
//! spans:
//!   exclude:
//!     match_type: regexp
//!     services: [app_1, app_2]
//!     span_names: [hello_world]
//!     attributes: [{key: container.name, value: (app_container_1|app_container_2)}]
//! ```
//!
//! Within one match block every given field must match (each list matches if any entry
//! does); `include` keeps only what matches, `exclude` drops what matches.

use serde::Deserialize;
use sidekick_collector::component::FieldError;

use crate::attributes::actions::ConfigValue;
use crate::ottl::compile;
use crate::ottl::config::{field_error, quote};
use crate::ottl::{Cond, Context};
use opentelemetry_proto::tonic::common::v1::any_value;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MatchType {
    #[default]
    Strict,
    Regexp,
    Expr,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyValueMatch {
    pub key: String,
    pub value: Option<ConfigValue>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Library {
    pub name: String,
    pub version: Option<String>,
}

/// Regex options of the Collector's match form; accepted, with no effect here.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RegexpOptions {
    pub cacheenabled: bool,
    pub cachemaxnumentries: usize,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpanMatch {
    pub match_type: MatchType,
    pub regexp: Option<RegexpOptions>,
    pub services: Vec<String>,
    pub span_names: Vec<String>,
    pub span_kinds: Vec<String>,
    pub attributes: Vec<KeyValueMatch>,
    pub resources: Vec<KeyValueMatch>,
    pub libraries: Vec<Library>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricMatch {
    pub match_type: MatchType,
    pub regexp: Option<RegexpOptions>,
    pub metric_names: Vec<String>,
    pub resource_attributes: Vec<KeyValueMatch>,
    pub expressions: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SeverityMatch {
    pub min: String,
    pub match_undefined: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogMatch {
    pub match_type: MatchType,
    pub regexp: Option<RegexpOptions>,
    pub resource_attributes: Vec<KeyValueMatch>,
    pub record_attributes: Vec<KeyValueMatch>,
    pub severity_texts: Vec<String>,
    pub bodies: Vec<String>,
    pub severity_number: Option<SeverityMatch>,
    pub libraries: Vec<Library>,
}

/// `include` and `exclude` of one signal.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MatchSet<T> {
    pub include: Option<T>,
    pub exclude: Option<T>,
}

/// A match block as one OTTL condition that holds when the block matches.
pub trait Match {
    const CONTEXT: Context;
    fn condition(&self, at: &str) -> Result<String, FieldError>;
}

impl<T: Match> MatchSet<T> {
    /// One condition that holds for the items to drop; none without a block.
    pub fn compile(&self, at: &str, errors: &mut Vec<FieldError>) -> Vec<Cond> {
        let mut parts = Vec::new();
        for (block, name, negate) in [
            (&self.include, "include", true),
            (&self.exclude, "exclude", false),
        ] {
            let Some(block) = block else { continue };
            match block.condition(&format!("{at}.{name}")) {
                Ok(c) if negate => parts.push(format!("not ({c})")),
                Ok(c) => parts.push(format!("({c})")),
                Err(e) => errors.push(e),
            }
        }
        if parts.is_empty() {
            return Vec::new();
        }
        let text = parts.join(" or ");
        match compile::condition(&text, T::CONTEXT) {
            Ok(c) => vec![c],
            Err(e) => {
                errors.push(field_error(at.to_string(), &text, &e));
                Vec::new()
            }
        }
    }
}

/// Builds the condition of one block: every clause must hold.
struct Clauses<'a> {
    at: &'a str,
    regexp: bool,
    all: Vec<String>,
}

impl<'a> Clauses<'a> {
    fn new(at: &'a str, match_type: MatchType) -> Result<Self, FieldError> {
        if match_type == MatchType::Expr {
            return Err(FieldError::new(
                format!("{at}.match_type"),
                "match_type: expr is not supported: write the condition in OTTL (metrics: {metric: [...]})",
            ));
        }
        Ok(Clauses {
            at,
            regexp: match_type == MatchType::Regexp,
            all: Vec::new(),
        })
    }

    /// `path` equals (strict) or matches (regexp) one of `values`.
    fn any_of(&mut self, path: &str, values: &[String]) -> Result<(), FieldError> {
        if values.is_empty() {
            return Ok(());
        }
        let mut any = Vec::new();
        for v in values {
            any.push(self.one(path, v)?);
        }
        self.all.push(format!("({})", any.join(" or ")));
        Ok(())
    }

    fn one(&self, path: &str, value: &str) -> Result<String, FieldError> {
        if self.regexp {
            compile::regex(value).map_err(|m| FieldError::new(self.at.to_string(), m))?;
            Ok(format!("IsMatch({path}, {})", quote(value)))
        } else {
            Ok(format!("{path} == {}", quote(value)))
        }
    }

    /// Every listed attribute is present (no value) or has the value.
    fn attributes(&mut self, map: &str, list: &[KeyValueMatch]) -> Result<(), FieldError> {
        for kv in list {
            let path = format!("{map}[{}]", quote(&kv.key));
            let clause = match &kv.value {
                None => format!("{path} != nil"),
                Some(ConfigValue(any_value::Value::StringValue(s))) => self.one(&path, s)?,
                Some(ConfigValue(v)) if self.regexp => {
                    let text = literal(v);
                    self.one(&path, &text)?
                }
                Some(ConfigValue(v)) => format!("{path} == {}", literal(v)),
            };
            self.all.push(clause);
        }
        Ok(())
    }

    fn libraries(&mut self, list: &[Library]) {
        if list.is_empty() {
            return;
        }
        let any: Vec<String> = list
            .iter()
            .map(|l| match &l.version {
                Some(v) => format!(
                    "(instrumentation_scope.name == {} and instrumentation_scope.version == {})",
                    quote(&l.name),
                    quote(v)
                ),
                None => format!("instrumentation_scope.name == {}", quote(&l.name)),
            })
            .collect();
        self.all.push(format!("({})", any.join(" or ")));
    }

    fn finish(self) -> Result<String, FieldError> {
        if self.all.is_empty() {
            return Err(FieldError::new(
                self.at.to_string(),
                "give at least one property to match",
            ));
        }
        Ok(self.all.join(" and "))
    }
}

fn literal(v: &any_value::Value) -> String {
    match v {
        any_value::Value::StringValue(s) => quote(s),
        any_value::Value::IntValue(i) => i.to_string(),
        any_value::Value::DoubleValue(d) => format!("{d:?}"),
        any_value::Value::BoolValue(b) => b.to_string(),
        _ => "nil".into(),
    }
}

impl Match for SpanMatch {
    const CONTEXT: Context = Context::Span;

    fn condition(&self, at: &str) -> Result<String, FieldError> {
        let mut c = Clauses::new(at, self.match_type)?;
        c.any_of("resource.attributes[\"service.name\"]", &self.services)?;
        c.any_of("name", &self.span_names)?;
        if !self.span_kinds.is_empty() {
            let mut any = Vec::new();
            for k in &self.span_kinds {
                let known = [
                    "SPAN_KIND_UNSPECIFIED",
                    "SPAN_KIND_INTERNAL",
                    "SPAN_KIND_SERVER",
                    "SPAN_KIND_CLIENT",
                    "SPAN_KIND_PRODUCER",
                    "SPAN_KIND_CONSUMER",
                ];
                if !known.contains(&k.as_str()) {
                    return Err(FieldError::new(
                        format!("{at}.span_kinds"),
                        format!("unknown span kind {k:?}: write one of {}", known.join(", ")),
                    ));
                }
                any.push(format!("kind == {k}"));
            }
            c.all.push(format!("({})", any.join(" or ")));
        }
        c.attributes("attributes", &self.attributes)?;
        c.attributes("resource.attributes", &self.resources)?;
        c.libraries(&self.libraries);
        c.finish()
    }
}

impl Match for MetricMatch {
    const CONTEXT: Context = Context::Metric;

    fn condition(&self, at: &str) -> Result<String, FieldError> {
        if !self.expressions.is_empty() {
            return Err(FieldError::new(
                format!("{at}.expressions"),
                "expr expressions are not supported: write the condition in OTTL (metrics: {datapoint: [...]})",
            ));
        }
        let mut c = Clauses::new(at, self.match_type)?;
        c.any_of("name", &self.metric_names)?;
        c.attributes("resource.attributes", &self.resource_attributes)?;
        c.finish()
    }
}

impl Match for LogMatch {
    const CONTEXT: Context = Context::Log;

    fn condition(&self, at: &str) -> Result<String, FieldError> {
        let mut c = Clauses::new(at, self.match_type)?;
        c.attributes("resource.attributes", &self.resource_attributes)?;
        c.attributes("attributes", &self.record_attributes)?;
        c.any_of("severity_text", &self.severity_texts)?;
        c.any_of("body", &self.bodies)?;
        if let Some(s) = &self.severity_number {
            let min = severity(&s.min).ok_or_else(|| {
                FieldError::new(
                    format!("{at}.severity_number.min"),
                    format!(
                        "unknown severity {:?}: write 1 to 24 or a name such as INFO, WARN2, ERROR",
                        s.min
                    ),
                )
            })?;
            let clause = if s.match_undefined {
                format!("(severity_number >= {min} or severity_number == 0)")
            } else {
                format!("severity_number >= {min}")
            };
            c.all.push(clause);
        }
        c.libraries(&self.libraries);
        c.finish()
    }
}

/// A severity by number (`"9"`) or name (`INFO`, `warn2`), as the Collector reads it.
fn severity(text: &str) -> Option<i64> {
    if let Ok(n) = text.parse::<i64>() {
        return (1..=24).contains(&n).then_some(n);
    }
    let upper = text.to_ascii_uppercase();
    let (name, n) = match upper.find(|c: char| c.is_ascii_digit()) {
        Some(i) => (
            &upper[..i],
            upper[i..]
                .parse::<i64>()
                .ok()
                .filter(|n| (2..=4).contains(n))?,
        ),
        None => (upper.as_str(), 1),
    };
    let base = match name {
        "TRACE" => 1,
        "DEBUG" => 5,
        "INFO" => 9,
        "WARN" => 13,
        "ERROR" => 17,
        "FATAL" => 21,
        _ => return None,
    };
    Some(base + n - 1)
}
