//! Resolves a parsed statement or condition against a context: paths to fields,
//! function names to the functions Sidekick has, literal patterns to compiled regexes.
//! Everything that can be refused is refused here, at load.

use regex::Regex;

use super::funcs::{Converter, Editor, Strategy, SUPPORTED_CONVERTERS, SUPPORTED_EDITORS};
use super::item::{resolve, Access, Context, On, Source, Ty};
use super::parse::{self, Arg, Call, CmpOp, Condition, Expr, Key, Literal, MathOp};
use super::value::Value;

/// A refusal: where in the text (0-based character) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    pub at: usize,
    pub message: String,
}

impl std::fmt::Display for CompileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "at character {}: {}", self.at + 1, self.message)
    }
}

impl From<parse::ParseError> for CompileError {
    fn from(e: parse::ParseError) -> Self {
        CompileError {
            at: e.at,
            message: e.message,
        }
    }
}

#[derive(Debug, Clone)]
pub enum CExpr {
    Lit(Value<'static>),
    Read(Access),
    Call(Box<Converter>, Vec<Key>),
    List(Vec<CExpr>),
    Map(Vec<(String, CExpr)>),
    Math(Box<CExpr>, MathOp, Box<CExpr>),
    Cond(Box<Cond>),
}

#[derive(Debug, Clone)]
pub enum Cond {
    Or(Vec<Cond>),
    And(Vec<Cond>),
    Not(Box<Cond>),
    Compare(CExpr, CmpOp, CExpr),
    Value(CExpr),
}

#[derive(Debug, Clone)]
pub struct Statement {
    pub editor: Editor,
    pub condition: Option<Cond>,
}

pub fn condition(text: &str, context: Context) -> Result<Cond, CompileError> {
    let parsed = parse::condition(text)?;
    Compiler { context }.condition(&parsed)
}

pub fn statement(text: &str, context: Context) -> Result<Statement, CompileError> {
    let parsed = parse::statement(text)?;
    let c = Compiler { context };
    Ok(Statement {
        editor: c.editor(&parsed.editor)?,
        condition: parsed
            .condition
            .as_ref()
            .map(|x| c.condition(x))
            .transpose()?,
    })
}

/// Regexes from configs are bounded, so a pattern cannot take unbounded memory.
pub fn regex(pattern: &str) -> Result<Regex, String> {
    regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .dfa_size_limit(1 << 20)
        .build()
        .map_err(|e| {
            format!(
                "invalid regex: {}",
                e.to_string().lines().last().unwrap_or("")
            )
        })
}

pub(super) struct Compiler {
    pub context: Context,
}

/// The arguments of one call, by position or name.
pub(super) struct Args<'c> {
    pub call: &'c Call,
    pub names: &'static [&'static str],
}

impl<'c> Args<'c> {
    pub fn new(
        call: &'c Call,
        names: &'static [&'static str],
        required: usize,
    ) -> Result<Self, CompileError> {
        let err = |message: String| CompileError {
            at: call.at,
            message,
        };
        let signature = || format!("{}({})", call.name, names.join(", "));
        if call.args.len() > names.len() {
            return Err(err(format!(
                "{} takes at most {} arguments: {}",
                call.name,
                names.len(),
                signature()
            )));
        }
        for a in &call.args {
            if let Some(n) = &a.name {
                if !names.contains(&n.as_str()) {
                    return Err(CompileError {
                        at: a.at,
                        message: format!("{} has no argument `{n}`: {}", call.name, signature()),
                    });
                }
            }
        }
        let args = Args { call, names };
        for (i, name) in names.iter().enumerate().take(required) {
            if args.get(i).is_none() {
                return Err(err(format!(
                    "{} needs its argument `{name}`: {}",
                    call.name,
                    signature()
                )));
            }
        }
        Ok(args)
    }

    pub fn get(&self, i: usize) -> Option<&'c Arg> {
        let name = self.names[i];
        self.call
            .args
            .iter()
            .find(|a| a.name.as_deref() == Some(name))
            .or_else(|| self.call.args.get(i).filter(|a| a.name.is_none()))
    }

    pub fn at(&self, i: usize) -> usize {
        self.get(i).map(|a| a.at).unwrap_or(self.call.at)
    }

    /// A literal string argument (patterns, modes).
    pub fn literal_str(&self, i: usize) -> Result<Option<String>, CompileError> {
        match self.get(i).map(|a| &a.value) {
            None => Ok(None),
            Some(Expr::Literal(Literal::Str(s))) => Ok(Some(s.clone())),
            Some(_) => Err(CompileError {
                at: self.at(i),
                message: format!(
                    "{}'s `{}` must be a quoted string",
                    self.call.name, self.names[i]
                ),
            }),
        }
    }

    pub fn literal_int(&self, i: usize) -> Result<Option<i64>, CompileError> {
        match self.get(i).map(|a| &a.value) {
            None => Ok(None),
            Some(Expr::Literal(Literal::Int(n))) => Ok(Some(*n)),
            Some(_) => Err(CompileError {
                at: self.at(i),
                message: format!(
                    "{}'s `{}` must be an integer",
                    self.call.name, self.names[i]
                ),
            }),
        }
    }

    pub fn literal_strs(&self, i: usize) -> Result<Vec<String>, CompileError> {
        match self.get(i).map(|a| &a.value) {
            None => Ok(Vec::new()),
            Some(Expr::List(items)) => items
                .iter()
                .map(|e| match e {
                    Expr::Literal(Literal::Str(s)) => Ok(s.clone()),
                    _ => Err(CompileError {
                        at: self.at(i),
                        message: format!(
                            "{}'s `{}` must be a list of quoted strings",
                            self.call.name, self.names[i]
                        ),
                    }),
                })
                .collect(),
            Some(Expr::Literal(Literal::Str(s))) => Ok(vec![s.clone()]),
            Some(_) => Err(CompileError {
                at: self.at(i),
                message: format!(
                    "{}'s `{}` must be a list of quoted strings",
                    self.call.name, self.names[i]
                ),
            }),
        }
    }

    pub fn regex(&self, i: usize) -> Result<Regex, CompileError> {
        let pattern = self.literal_str(i)?.unwrap_or_default();
        regex(&pattern).map_err(|message| CompileError {
            at: self.at(i),
            message,
        })
    }
}

impl Compiler {
    pub fn condition(&self, c: &Condition) -> Result<Cond, CompileError> {
        Ok(match c {
            Condition::Or(terms) => Cond::Or(
                terms
                    .iter()
                    .map(|t| self.condition(t))
                    .collect::<Result<_, _>>()?,
            ),
            Condition::And(terms) => Cond::And(
                terms
                    .iter()
                    .map(|t| self.condition(t))
                    .collect::<Result<_, _>>()?,
            ),
            Condition::Not(inner) => Cond::Not(Box::new(self.condition(inner)?)),
            Condition::Compare(a, op, b) => Cond::Compare(self.expr(a)?, *op, self.expr(b)?),
            Condition::Value(e) => Cond::Value(self.expr(e)?),
        })
    }

    pub fn expr(&self, e: &Expr) -> Result<CExpr, CompileError> {
        Ok(match e {
            Expr::Literal(l) => CExpr::Lit(literal(l)),
            Expr::Enum(name, at) => CExpr::Lit(Value::Int(enum_value(name).ok_or_else(|| CompileError {
                at: *at,
                message: format!(
                    "unknown name `{name}`: enums are e.g. SPAN_KIND_SERVER, STATUS_CODE_ERROR, SEVERITY_NUMBER_WARN, METRIC_DATA_TYPE_SUM, AGGREGATION_TEMPORALITY_CUMULATIVE; a converter needs (...)"
                ),
            })?)),
            Expr::Path(p) => CExpr::Read(resolve(self.context, p).map_err(|message| CompileError { at: p.at, message })?),
            Expr::Call(call) => CExpr::Call(Box::new(self.converter(call)?), call.keys.clone()),
            Expr::List(items) => CExpr::List(items.iter().map(|i| self.expr(i)).collect::<Result<_, _>>()?),
            Expr::Map(entries) => CExpr::Map(
                entries
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), self.expr(v)?)))
                    .collect::<Result<_, CompileError>>()?,
            ),
            Expr::Math(a, op, b) => CExpr::Math(Box::new(self.expr(a)?), *op, Box::new(self.expr(b)?)),
            Expr::Condition(c) => CExpr::Cond(Box::new(self.condition(c)?)),
        })
    }

    fn converter(&self, call: &Call) -> Result<Converter, CompileError> {
        Converter::compile(self, call).unwrap_or_else(|| {
            Err(CompileError {
                at: call.at,
                message: unknown_function(&call.name, SUPPORTED_CONVERTERS),
            })
        })
    }

    fn editor(&self, call: &Call) -> Result<Editor, CompileError> {
        Editor::compile(self, call).unwrap_or_else(|| {
            Err(CompileError {
                at: call.at,
                message: unknown_function(&call.name, SUPPORTED_EDITORS),
            })
        })
    }

    /// A path an editor writes: a field of the item itself.
    pub fn target(
        &self,
        args: &Args<'_>,
        i: usize,
        want_map: bool,
    ) -> Result<Access, CompileError> {
        let at = args.at(i);
        let err = |message: String| CompileError { at, message };
        let Some(Expr::Path(p)) = args.get(i).map(|a| &a.value) else {
            return Err(err(format!(
                "{}'s `{}` must be a path, e.g. attributes",
                args.call.name, args.names[i]
            )));
        };
        let access = resolve(self.context, p).map_err(err)?;
        let Source::Loc(loc) = &access.source else {
            return Err(err(format!("`{p}` is computed and cannot be changed")));
        };
        if loc.on != On::Item {
            let context = match loc.on {
                On::Resource => "resource",
                On::Scope => "scope",
                _ => "the parent's",
            };
            return Err(err(format!(
                "`{p}` belongs to the {context}: change it with a statement in `context: {context}`"
            )));
        }
        if want_map && !(loc.ty == Ty::Attributes || loc.ty == Ty::Any || !access.keys.is_empty()) {
            return Err(err(format!(
                "{} works on a map such as attributes, not `{p}`",
                args.call.name
            )));
        }
        Ok(access)
    }

    pub fn strategy(&self, args: &Args<'_>, i: usize) -> Result<Strategy, CompileError> {
        match args.literal_str(i)?.as_deref() {
            None | Some("upsert") => Ok(Strategy::Upsert),
            Some("insert") => Ok(Strategy::Insert),
            Some("update") => Ok(Strategy::Update),
            Some(other) => Err(CompileError {
                at: args.at(i),
                message: format!(
                    "merge_maps strategy is \"insert\", \"update\" or \"upsert\", not {other:?}"
                ),
            }),
        }
    }
}

fn literal(l: &Literal) -> Value<'static> {
    match l {
        Literal::Nil => Value::Nil,
        Literal::Bool(b) => Value::Bool(*b),
        Literal::Int(i) => Value::Int(*i),
        Literal::Double(d) => Value::Double(*d),
        Literal::Str(s) => Value::str(s.clone()),
        Literal::Bytes(b) => Value::Bytes(b.clone().into()),
    }
}

/// Collector function names that Sidekick does not have: refused by name, with the list
/// of what there is.
const NOT_YET: &[&str] = &[
    "append",
    "delete_index",
    "flatten",
    "keep_matching_keys",
    "set_semconv_span_name",
    "replace_match",
    "replace_all_matches",
    "Base64Decode",
    "Decode",
    "CommunityID",
    "ConvertCase",
    "ConvertAttributesToElementsXML",
    "ConvertTextToElementsXML",
    "Day",
    "ExtractPatterns",
    "ExtractGrokPatterns",
    "FNV",
    "Format",
    "FormatTime",
    "GetXML",
    "Hour",
    "Hours",
    "InsertXML",
    "IsRootSpan",
    "IsValidLuhn",
    "Keys",
    "Log",
    "MD5",
    "Microseconds",
    "Milliseconds",
    "Minute",
    "Minutes",
    "Month",
    "Murmur3Hash",
    "Murmur3Hash128",
    "Nanosecond",
    "Nanoseconds",
    "Now",
    "ParseCSV",
    "ParseInt",
    "ParseKeyValue",
    "ParseSimplifiedXML",
    "ParseXML",
    "RemoveXML",
    "Second",
    "Seconds",
    "SHA1",
    "SHA512",
    "SliceToMap",
    "Sort",
    "SpanID",
    "Substring",
    "Time",
    "ToKeyValueString",
    "TraceID",
    "TruncateTime",
    "Unix",
    "UnixMicro",
    "UnixMilli",
    "UnixNano",
    "UnixSeconds",
    "URL",
    "UserAgent",
    "UUID",
    "Values",
    "Weekday",
    "Year",
    "Trim",
    "TrimPrefix",
    "TrimSuffix",
    "ToCamelCase",
    "ToSnakeCase",
    "ContainsValue",
    "Index",
    "IsValidUUID",
    "XXH3",
    "XXH128",
    "Hex",
    "aggregate_on_attributes",
    "aggregate_on_attribute_value",
    "convert_gauge_to_sum",
    "convert_sum_to_gauge",
    "convert_summary_count_val_to_sum",
    "convert_summary_sum_val_to_sum",
    "convert_exponential_histogram_to_histogram",
    "copy_metric",
    "extract_count_metric",
    "extract_sum_metric",
    "scale_metric",
    "merge_histogram_buckets",
];

fn unknown_function(name: &str, supported: &[&str]) -> String {
    if NOT_YET.contains(&name) {
        format!(
            "function `{name}` is an OTTL function Sidekick does not support; it has {}",
            supported.join(", ")
        )
    } else {
        format!(
            "unknown function `{name}`; Sidekick's OTTL has {}",
            supported.join(", ")
        )
    }
}

fn enum_value(name: &str) -> Option<i64> {
    Some(match name {
        "SPAN_KIND_UNSPECIFIED" => 0,
        "SPAN_KIND_INTERNAL" => 1,
        "SPAN_KIND_SERVER" => 2,
        "SPAN_KIND_CLIENT" => 3,
        "SPAN_KIND_PRODUCER" => 4,
        "SPAN_KIND_CONSUMER" => 5,
        "STATUS_CODE_UNSET" => 0,
        "STATUS_CODE_OK" => 1,
        "STATUS_CODE_ERROR" => 2,
        "METRIC_DATA_TYPE_NONE" => 0,
        "METRIC_DATA_TYPE_GAUGE" => 1,
        "METRIC_DATA_TYPE_SUM" => 2,
        "METRIC_DATA_TYPE_HISTOGRAM" => 3,
        "METRIC_DATA_TYPE_EXPONENTIAL_HISTOGRAM" => 4,
        "METRIC_DATA_TYPE_SUMMARY" => 5,
        "AGGREGATION_TEMPORALITY_UNSPECIFIED" => 0,
        "AGGREGATION_TEMPORALITY_DELTA" => 1,
        "AGGREGATION_TEMPORALITY_CUMULATIVE" => 2,
        "FLAG_NONE" => 0,
        "FLAG_NO_RECORDED_VALUE" => 1,
        _ => return severity(name),
    })
}

fn severity(name: &str) -> Option<i64> {
    let rest = name.strip_prefix("SEVERITY_NUMBER_")?;
    if rest == "UNSPECIFIED" {
        return Some(0);
    }
    let (level, n) = match rest.find(|c: char| c.is_ascii_digit()) {
        Some(i) => (
            &rest[..i],
            rest[i..]
                .parse::<i64>()
                .ok()
                .filter(|n| (2..=4).contains(n))?,
        ),
        None => (rest, 1),
    };
    let base = match level {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_have_the_otlp_numbers() {
        assert_eq!(enum_value("SEVERITY_NUMBER_INFO"), Some(9));
        assert_eq!(enum_value("SEVERITY_NUMBER_WARN3"), Some(15));
        assert_eq!(enum_value("SEVERITY_NUMBER_FATAL4"), Some(24));
        assert_eq!(enum_value("SEVERITY_NUMBER_INFO5"), None);
        assert_eq!(enum_value("SPAN_KIND_CONSUMER"), Some(5));
    }

    #[test]
    fn unsupported_functions_are_refused_by_name() {
        let e = statement(r#"set(attributes["a"], UUID())"#, Context::Span).unwrap_err();
        assert!(
            e.message.contains("`UUID`") && e.message.contains("does not support"),
            "{e}"
        );
        let e = statement(r#"flatten(attributes)"#, Context::Log).unwrap_err();
        assert!(e.message.contains("`flatten`"), "{e}");
        let e = condition(r#"Frobnicate(name)"#, Context::Span).unwrap_err();
        assert!(e.message.contains("unknown function `Frobnicate`"), "{e}");
        assert_eq!(e.at, 0);
    }

    #[test]
    fn paths_are_checked_against_the_context() {
        let e = condition(r#"body == "x""#, Context::Span).unwrap_err();
        assert!(
            e.message.contains("the span context has no path `body`"),
            "{e}"
        );
        let e = statement(r#"set(resource.attributes["a"], "b")"#, Context::Span).unwrap_err();
        assert!(e.message.contains("context: resource"), "{e}");
        assert!(condition(
            r#"span.name == "x" and resource.attributes["a"] == nil"#,
            Context::SpanEvent
        )
        .is_ok());
        assert!(condition(
            r#"metric.name == "x" and value_double > 1"#,
            Context::DataPoint
        )
        .is_ok());
        let e = statement(
            r#"set(attributes["a"], "x") where IsMatch(name, "(")"#,
            Context::Span,
        )
        .unwrap_err();
        assert!(e.message.contains("invalid regex"), "{e}");
    }
}
