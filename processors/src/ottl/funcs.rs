//! The OTTL functions Sidekick has: converters (values) and editors (changes), each with
//! the Collector's arguments and semantics.

use std::borrow::Cow;

use regex::Regex;

use super::compile::{Args, CExpr, CompileError, Compiler};
use super::eval::{value, EvalError};
use super::item::{Access, Item};
use super::parse::{Call, Expr};
use super::value::Value;

pub const SUPPORTED_CONVERTERS: &[&str] = &[
    "Concat",
    "Double",
    "Int",
    "IsBool",
    "IsDouble",
    "IsInt",
    "IsList",
    "IsMap",
    "IsMatch",
    "IsString",
    "Len",
    "ParseJSON",
    "SHA256",
    "Split",
    "String",
    "ToLowerCase",
    "ToUpperCase",
];

pub const SUPPORTED_EDITORS: &[&str] = &[
    "delete_key",
    "delete_matching_keys",
    "keep_keys",
    "limit",
    "merge_maps",
    "replace_all_patterns",
    "replace_pattern",
    "set",
    "truncate_all",
];

#[derive(Debug, Clone)]
pub enum Converter {
    IsMatch(CExpr, Regex),
    Is(IsType, CExpr),
    Concat(CExpr, CExpr),
    Split(CExpr, CExpr),
    Int(CExpr),
    Double(CExpr),
    String(CExpr),
    Sha256(CExpr),
    ParseJson(CExpr),
    Len(CExpr),
    Lower(CExpr),
    Upper(CExpr),
}

#[derive(Debug, Clone, Copy)]
pub enum IsType {
    String,
    Int,
    Double,
    Bool,
    Map,
    List,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    Insert,
    Update,
    Upsert,
}

/// What `replace_*` does with each match: expand the replacement, optionally hash it
/// and put it into a format.
#[derive(Debug, Clone)]
pub struct Replace {
    pub regex: Regex,
    pub replacement: CExpr,
    pub hash: bool,
    pub format: Option<String>,
}

#[derive(Debug, Clone)]
pub enum Editor {
    Set(Access, CExpr),
    DeleteKey(Access, CExpr),
    DeleteMatchingKeys(Access, Regex),
    KeepKeys(Access, Vec<String>),
    Limit(Access, usize, Vec<String>),
    TruncateAll {
        target: Access,
        limit: usize,
        utf8_safe: bool,
        marker: String,
    },
    ReplacePattern(Access, Replace),
    ReplaceAllPatterns {
        target: Access,
        keys: bool,
        replace: Replace,
    },
    MergeMaps(Access, CExpr, Strategy),
}

/// Lowercase hex, as OTTL writes ids and bytes.
pub fn hex(bytes: &[u8]) -> String {
    sidekick_collector::util::hex(bytes)
}

impl Converter {
    /// `None` when the name is not a converter Sidekick has.
    pub(super) fn compile(c: &Compiler, call: &Call) -> Option<Result<Converter, CompileError>> {
        let one = |f: fn(CExpr) -> Converter| -> Result<Converter, CompileError> {
            let args = Args::new(call, &["target"], 1)?;
            Ok(f(arg(c, &args, 0)?))
        };
        Some(match call.name.as_str() {
            "IsMatch" => (|| {
                let args = Args::new(call, &["target", "pattern"], 2)?;
                Ok(Converter::IsMatch(arg(c, &args, 0)?, args.regex(1)?))
            })(),
            "IsString" => one(|e| Converter::Is(IsType::String, e)),
            "IsInt" => one(|e| Converter::Is(IsType::Int, e)),
            "IsDouble" => one(|e| Converter::Is(IsType::Double, e)),
            "IsBool" => one(|e| Converter::Is(IsType::Bool, e)),
            "IsMap" => one(|e| Converter::Is(IsType::Map, e)),
            "IsList" => one(|e| Converter::Is(IsType::List, e)),
            "Concat" => (|| {
                let args = Args::new(call, &["vals", "delimiter"], 2)?;
                Ok(Converter::Concat(arg(c, &args, 0)?, arg(c, &args, 1)?))
            })(),
            "Split" => (|| {
                let args = Args::new(call, &["target", "delimiter"], 2)?;
                Ok(Converter::Split(arg(c, &args, 0)?, arg(c, &args, 1)?))
            })(),
            "Int" => one(Converter::Int),
            "Double" => one(Converter::Double),
            "String" => one(Converter::String),
            "SHA256" => one(Converter::Sha256),
            "ParseJSON" => one(Converter::ParseJson),
            "Len" => one(Converter::Len),
            "ToLowerCase" => one(Converter::Lower),
            "ToUpperCase" => one(Converter::Upper),
            _ => return None,
        })
    }

    pub fn eval<'s>(&'s self, item: &'s Item<'_>) -> Result<Value<'s>, EvalError> {
        Ok(match self {
            Converter::IsMatch(target, regex) => match value(target, item)? {
                Value::Nil => Value::Bool(false),
                Value::Str(s) => Value::Bool(regex.is_match(&s)),
                other => Value::Bool(regex.is_match(&other.to_text())),
            },
            Converter::Is(ty, target) => {
                let v = value(target, item)?;
                Value::Bool(matches!(
                    (ty, v),
                    (IsType::String, Value::Str(_))
                        | (IsType::Int, Value::Int(_))
                        | (IsType::Double, Value::Double(_))
                        | (IsType::Bool, Value::Bool(_))
                        | (IsType::Map, Value::Map(_))
                        | (IsType::List, Value::List(_))
                ))
            }
            Converter::Concat(vals, delimiter) => {
                let delimiter = string_arg("Concat", "delimiter", value(delimiter, item)?)?;
                let Value::List(vals) = value(vals, item)? else {
                    return Err("Concat's vals must be a list".into());
                };
                let mut out = String::new();
                for (i, v) in vals.iter().enumerate() {
                    if i > 0 {
                        out.push_str(&delimiter);
                    }
                    match v {
                        Value::Nil => out.push_str("<nil>"),
                        v => out.push_str(&v.to_text()),
                    }
                }
                Value::str(out)
            }
            Converter::Split(target, delimiter) => {
                let s = string_arg("Split", "target", value(target, item)?)?;
                let d = string_arg("Split", "delimiter", value(delimiter, item)?)?;
                Value::List(
                    go_split(&s, &d)
                        .into_iter()
                        .map(|p| Value::str(p.to_string()))
                        .collect(),
                )
            }
            Converter::Int(target) => match value(target, item)? {
                Value::Int(i) => Value::Int(i),
                Value::Double(d) if d.is_finite() => Value::Int(d.trunc() as i64),
                Value::Bool(b) => Value::Int(i64::from(b)),
                Value::Str(s) => s.parse::<i64>().map(Value::Int).unwrap_or(Value::Nil),
                Value::Nil | Value::Double(_) => Value::Nil,
                other => return Err(format!("Int cannot convert {}", other.type_name())),
            },
            Converter::Double(target) => match value(target, item)? {
                Value::Double(d) => Value::Double(d),
                Value::Int(i) => Value::Double(i as f64),
                Value::Bool(b) => Value::Double(if b { 1.0 } else { 0.0 }),
                Value::Str(s) => s.parse::<f64>().map(Value::Double).unwrap_or(Value::Nil),
                _ => Value::Nil,
            },
            Converter::String(target) => match value(target, item)? {
                Value::Nil => Value::Nil,
                Value::Str(s) => Value::Str(s),
                other => Value::str(other.to_text()),
            },
            Converter::Sha256(target) => {
                let s = string_arg("SHA256", "value", value(target, item)?)?;
                Value::str(hex(ring::digest::digest(
                    &ring::digest::SHA256,
                    s.as_bytes(),
                )
                .as_ref()))
            }
            Converter::ParseJson(target) => {
                let s = string_arg("ParseJSON", "target", value(target, item)?)?;
                parse_json(&s)?
            }
            Converter::Len(target) => match value(target, item)? {
                Value::Str(s) => Value::Int(s.len() as i64),
                Value::List(l) => Value::Int(l.len() as i64),
                Value::Map(m) => Value::Int(m.len() as i64),
                other => {
                    return Err(format!(
                        "Len takes a string, list or map, not {}",
                        other.type_name()
                    ))
                }
            },
            Converter::Lower(target) => Value::str(
                string_arg("ToLowerCase", "target", value(target, item)?)?.to_lowercase(),
            ),
            Converter::Upper(target) => Value::str(
                string_arg("ToUpperCase", "target", value(target, item)?)?.to_uppercase(),
            ),
        })
    }
}

fn arg(c: &Compiler, args: &Args<'_>, i: usize) -> Result<CExpr, CompileError> {
    match args.get(i) {
        Some(a) => c.expr(&a.value),
        None => Ok(CExpr::Lit(Value::Nil)),
    }
}

fn string_arg<'s>(func: &str, name: &str, v: Value<'s>) -> Result<Cow<'s, str>, EvalError> {
    match v {
        Value::Str(s) => Ok(s),
        other => Err(format!(
            "{func}'s {name} must be a string, got {}",
            other.type_name()
        )),
    }
}

/// Go's `strings.Split`: an empty separator splits into characters; an empty string
/// with an empty separator gives nothing.
fn go_split<'s>(s: &'s str, sep: &str) -> Vec<&'s str> {
    if sep.is_empty() {
        return s
            .char_indices()
            .map(|(i, c)| &s[i..i + c.len_utf8()])
            .collect();
    }
    s.split(sep).collect()
}

/// JSON bodies larger or deeper than this are an error, not a parse.
const JSON_MAX_BYTES: usize = 1 << 20;
const JSON_MAX_DEPTH: usize = 32;

fn parse_json(s: &str) -> Result<Value<'static>, EvalError> {
    if s.len() > JSON_MAX_BYTES {
        return Err(format!(
            "ParseJSON: {} bytes is over the {} byte limit",
            s.len(),
            JSON_MAX_BYTES
        ));
    }
    // serde_json stops at 128 levels on its own; ours is lower and checked after.
    let json: serde_json::Value = serde_json::from_str(s).map_err(|e| format!("ParseJSON: {e}"))?;
    let v = from_json(json, 0)?;
    match v {
        Value::Map(_) | Value::List(_) => Ok(v),
        other => Err(format!(
            "ParseJSON: expected an object or array, got {}",
            other.type_name()
        )),
    }
}

fn from_json(j: serde_json::Value, depth: usize) -> Result<Value<'static>, EvalError> {
    if depth > JSON_MAX_DEPTH {
        return Err(format!(
            "ParseJSON: nested deeper than {JSON_MAX_DEPTH} levels"
        ));
    }
    Ok(match j {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Bool(b),
        // Every JSON number is a double, as in the Collector.
        serde_json::Value::Number(n) => Value::Double(n.as_f64().unwrap_or(0.0)),
        serde_json::Value::String(s) => Value::str(s),
        serde_json::Value::Array(items) => Value::List(
            items
                .into_iter()
                .map(|i| from_json(i, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        serde_json::Value::Object(map) => Value::Map(
            map.into_iter()
                .map(|(k, v)| Ok((Cow::Owned(k), from_json(v, depth + 1)?)))
                .collect::<Result<_, EvalError>>()?,
        ),
    })
}

impl Editor {
    pub(super) fn compile(c: &Compiler, call: &Call) -> Option<Result<Editor, CompileError>> {
        let result = (|| -> Result<Editor, CompileError> {
            Ok(match call.name.as_str() {
                "set" => {
                    let args = Args::new(call, &["target", "value"], 2)?;
                    Editor::Set(c.target(&args, 0, false)?, arg(c, &args, 1)?)
                }
                "delete_key" => {
                    let args = Args::new(call, &["target", "key"], 2)?;
                    Editor::DeleteKey(c.target(&args, 0, true)?, arg(c, &args, 1)?)
                }
                "delete_matching_keys" => {
                    let args = Args::new(call, &["target", "pattern"], 2)?;
                    Editor::DeleteMatchingKeys(c.target(&args, 0, true)?, args.regex(1)?)
                }
                "keep_keys" => {
                    let args = Args::new(call, &["target", "keys"], 2)?;
                    Editor::KeepKeys(c.target(&args, 0, true)?, args.literal_strs(1)?)
                }
                "limit" => {
                    let args = Args::new(call, &["target", "limit", "priority_keys"], 3)?;
                    let limit = args.literal_int(1)?.unwrap_or(0);
                    let priority = args.literal_strs(2)?;
                    let bad = |message: String| CompileError {
                        at: args.at(1),
                        message,
                    };
                    let limit = usize::try_from(limit)
                        .map_err(|_| bad(format!("limit {limit} cannot be negative")))?;
                    if limit < priority.len() {
                        return Err(bad(format!(
                            "limit {limit} is less than the {} priority keys",
                            priority.len()
                        )));
                    }
                    Editor::Limit(c.target(&args, 0, true)?, limit, priority)
                }
                "truncate_all" => {
                    let args = Args::new(
                        call,
                        &["target", "limit", "utf8_safe", "truncation_marker"],
                        2,
                    )?;
                    let limit = args.literal_int(1)?.unwrap_or(0);
                    let limit = usize::try_from(limit).map_err(|_| CompileError {
                        at: args.at(1),
                        message: format!(
                            "invalid limit for truncate_all, {limit} cannot be negative"
                        ),
                    })?;
                    let utf8_safe = match args.get(2).map(|a| &a.value) {
                        None => true,
                        Some(Expr::Literal(super::parse::Literal::Bool(b))) => *b,
                        Some(_) => {
                            return Err(CompileError {
                                at: args.at(2),
                                message: "truncate_all's utf8_safe must be true or false".into(),
                            })
                        }
                    };
                    let marker = args.literal_str(3)?.unwrap_or_default();
                    if marker.len() > limit {
                        return Err(CompileError {
                            at: args.at(3),
                            message: "the truncation marker is longer than the limit".into(),
                        });
                    }
                    Editor::TruncateAll {
                        target: c.target(&args, 0, true)?,
                        limit,
                        utf8_safe,
                        marker,
                    }
                }
                "replace_pattern" => {
                    let args = Args::new(
                        call,
                        &[
                            "target",
                            "regex",
                            "replacement",
                            "function",
                            "replacement_format",
                        ],
                        3,
                    )?;
                    Editor::ReplacePattern(c.target(&args, 0, false)?, replace(c, &args, 1)?)
                }
                "replace_all_patterns" => {
                    let args = Args::new(
                        call,
                        &[
                            "target",
                            "mode",
                            "regex",
                            "replacement",
                            "function",
                            "replacement_format",
                        ],
                        4,
                    )?;
                    let keys = match args.literal_str(1)?.as_deref() {
                        Some("key") => true,
                        Some("value") => false,
                        other => {
                            return Err(CompileError {
                                at: args.at(1),
                                message: format!(
                                "replace_all_patterns mode is \"key\" or \"value\", not {other:?}"
                            ),
                            })
                        }
                    };
                    Editor::ReplaceAllPatterns {
                        target: c.target(&args, 0, true)?,
                        keys,
                        replace: replace(c, &args, 2)?,
                    }
                }
                "merge_maps" => {
                    let args = Args::new(call, &["target", "source", "strategy"], 3)?;
                    Editor::MergeMaps(
                        c.target(&args, 0, true)?,
                        arg(c, &args, 1)?,
                        c.strategy(&args, 2)?,
                    )
                }
                _ => {
                    return Err(CompileError {
                        at: usize::MAX,
                        message: String::new(),
                    })
                }
            })
        })();
        match result {
            Err(e) if e.at == usize::MAX => None,
            other => Some(other),
        }
    }

    /// Applies the editor to one item.
    pub fn apply(&self, item: &mut Item<'_>) -> Result<(), EvalError> {
        match self {
            Editor::Set(target, v) => {
                let v = value(v, item)?.into_owned();
                item.write(target, v)
            }
            Editor::DeleteKey(target, key) => {
                let key = value(key, item)?.into_owned();
                let Value::Str(key) = key else {
                    return Err("delete_key's key must be a string".into());
                };
                edit_map(item, target, |m| m.retain(|(k, _)| *k != *key))
            }
            Editor::DeleteMatchingKeys(target, re) => {
                edit_map(item, target, |m| m.retain(|(k, _)| !re.is_match(k)))
            }
            Editor::KeepKeys(target, keys) => edit_map(item, target, |m| {
                m.retain(|(k, _)| keys.iter().any(|x| x == k))
            }),
            Editor::Limit(target, limit, priority) => edit_map(item, target, |m| {
                if m.len() <= *limit {
                    return;
                }
                let mut count = m
                    .iter()
                    .filter(|(k, _)| priority.iter().any(|p| p == k))
                    .count();
                m.retain(|(k, _)| {
                    if priority.iter().any(|p| p == k) {
                        return true;
                    }
                    if count < *limit {
                        count += 1;
                        return true;
                    }
                    false
                });
            }),
            Editor::TruncateAll {
                target,
                limit,
                utf8_safe,
                marker,
            } => edit_map(item, target, |m| {
                for (_, v) in m.iter_mut() {
                    if let Value::Str(s) = v {
                        if s.len() > *limit {
                            *v = Value::str(truncate(s, *limit, *utf8_safe, marker));
                        }
                    }
                }
            }),
            Editor::ReplacePattern(target, r) => {
                let replacement = replacement(r, item)?;
                let current = item.read(target);
                let Value::Str(s) = current else {
                    return Ok(());
                };
                let new = r.apply(&s, &replacement);
                if new == *s {
                    return Ok(());
                }
                item.write(target, Value::str(new))
            }
            Editor::ReplaceAllPatterns {
                target,
                keys,
                replace: r,
            } => {
                let replacement = replacement(r, item)?;
                edit_map(item, target, |m| {
                    for (k, v) in m.iter_mut() {
                        if *keys {
                            if r.regex.is_match(k) {
                                *k = Cow::Owned(r.apply(k, &replacement));
                            }
                        } else if let Value::Str(s) = v {
                            if r.regex.is_match(s) {
                                *v = Value::str(r.apply(s, &replacement));
                            }
                        }
                    }
                })
            }
            Editor::MergeMaps(target, source, strategy) => {
                let source = value(source, item)?.into_owned();
                let Value::Map(source) = source else {
                    return Err(format!(
                        "merge_maps' source must be a map, got {}",
                        source.type_name()
                    ));
                };
                edit_map(item, target, |m| {
                    for (k, v) in source {
                        let pos = m.iter().position(|(key, _)| *key == k);
                        match (pos, strategy) {
                            (Some(i), Strategy::Update | Strategy::Upsert) => m[i].1 = v,
                            (None, Strategy::Insert | Strategy::Upsert) => m.push((k, v)),
                            _ => {}
                        }
                    }
                })
            }
        }
    }
}

fn replace(c: &Compiler, args: &Args<'_>, first: usize) -> Result<Replace, CompileError> {
    let regex = args.regex(first)?;
    let replacement = arg(c, args, first + 1)?;
    let hash = match args.get(first + 2).map(|a| &a.value) {
        None => false,
        Some(Expr::Enum(name, _)) if name == "SHA256" => true,
        Some(_) => {
            return Err(CompileError {
                at: args.at(first + 2),
                message: format!("{}'s function can be SHA256", args.call.name),
            })
        }
    };
    let format = args.literal_str(first + 3)?;
    if let Some(f) = &format {
        if f.matches("%s").count() != 1 {
            return Err(CompileError {
                at: args.at(first + 3),
                message: "replacement_format must contain %s once".into(),
            });
        }
    }
    Ok(Replace {
        regex,
        replacement,
        hash,
        format,
    })
}

fn replacement(r: &Replace, item: &Item<'_>) -> Result<String, EvalError> {
    match value(&r.replacement, item)? {
        Value::Str(s) => Ok(s.into_owned()),
        other => Err(format!(
            "the replacement must be a string, got {}",
            other.type_name()
        )),
    }
}

impl Replace {
    /// Every match replaced, `$1`/`${name}`/`$$` expanded as Go's regexp does.
    fn apply(&self, s: &str, replacement: &str) -> String {
        if !self.hash && self.format.is_none() {
            return self.regex.replace_all(s, replacement).into_owned();
        }
        self.regex
            .replace_all(s, |caps: &regex::Captures<'_>| {
                let mut expanded = String::new();
                caps.expand(replacement, &mut expanded);
                let hashed = if self.hash {
                    hex(ring::digest::digest(&ring::digest::SHA256, expanded.as_bytes()).as_ref())
                } else {
                    expanded
                };
                match &self.format {
                    Some(f) => f.replacen("%s", &hashed, 1),
                    None => hashed,
                }
            })
            .into_owned()
    }
}

/// `s` cut to at most `limit` bytes with `marker` counted in; on a character boundary
/// when `utf8_safe`.
fn truncate(s: &str, limit: usize, utf8_safe: bool, marker: &str) -> String {
    let mut cut = limit - marker.len();
    if utf8_safe {
        while cut > 0 && !s.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}{marker}", &s[..cut])
    } else {
        let mut bytes = s.as_bytes()[..cut].to_vec();
        bytes.extend_from_slice(marker.as_bytes());
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// Reads a map, lets `f` change it, writes it back if it changed. A target that is not
/// a map is left alone, as the Collector's map editors do.
fn edit_map(
    item: &mut Item<'_>,
    target: &Access,
    f: impl FnOnce(&mut Vec<(Cow<'static, str>, Value<'static>)>),
) -> Result<(), EvalError> {
    let Value::Map(mut map) = item.read(target).into_owned() else {
        return Ok(());
    };
    let before = map.clone();
    f(&mut map);
    if map == before {
        return Ok(());
    }
    item.write(target, Value::Map(map))
}
