//! The `operators` of a `filelog` receiver, in the Collector's shape and a common subset
//! of its kinds: `json_parser`, `regex_parser`, `move`, `remove`, `add`,
//! `severity_parser`, `time_parser` and `container` (Docker and CRI log lines, with the
//! Pod's identity from `/var/log/pods/...` paths).
//!
//! Operators run in order on each entry. When a parser fails the entry goes on unchanged
//! (its body the raw line) and the failure is counted: a line is never dropped.

use regex::Regex;
use serde::Deserialize;
use serde_json::{Map, Value};
use sidekick_collector::component::FieldError;

use super::time::{rfc3339, Layout};

/// A log entry while operators work on it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Entry {
    pub body: Value,
    pub attributes: Map<String, Value>,
    pub resource: Map<String, Value>,
    pub time_ns: Option<u64>,
    pub severity: i32,
    pub severity_text: String,
}

/// One operator as configured. Which keys apply depends on `type`; the others are
/// refused by [`Operator::new`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OperatorConfig {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: Option<String>,
    pub output: Option<String>,
    /// `send` (default: keep the entry as it was) or `drop`... only `send` variants are
    /// accepted: Sidekick never drops a line.
    pub on_error: Option<String>,
    pub parse_from: Option<String>,
    pub parse_to: Option<String>,
    pub regex: Option<String>,
    pub timestamp: Option<TimeConfig>,
    pub severity: Option<SeverityConfig>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub field: Option<String>,
    pub value: Option<Value>,
    pub format: Option<String>,
    pub add_metadata_from_filepath: Option<bool>,
    pub layout_type: Option<String>,
    pub layout: Option<String>,
    pub mapping: Option<Map<String, Value>>,
    pub preset: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeConfig {
    pub parse_from: Option<String>,
    pub layout_type: Option<String>,
    pub layout: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SeverityConfig {
    pub parse_from: Option<String>,
    pub mapping: Option<Map<String, Value>>,
    pub preset: Option<String>,
}

/// Where a value lives: `body`, `body.key`, `attributes.key`, `resource.key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    root: Root,
    path: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Root {
    Body,
    Attributes,
    Resource,
}

impl Field {
    pub fn parse(text: &str) -> Result<Field, String> {
        let mut parts = text.split('.');
        let root = match parts.next().unwrap_or("") {
            "body" => Root::Body,
            "attributes" => Root::Attributes,
            "resource" => Root::Resource,
            other => {
                return Err(format!(
                "field \"{text}\" must start with body, attributes or resource (not \"{other}\")"
            ))
            }
        };
        let path: Vec<String> = parts.map(str::to_string).collect();
        if path.iter().any(String::is_empty) {
            return Err(format!("field \"{text}\" has an empty part"));
        }
        if root != Root::Body && path.is_empty() {
            return Err(format!("field \"{text}\" needs a key, e.g. {text}.name"));
        }
        Ok(Field { root, path })
    }

    fn body() -> Field {
        Field {
            root: Root::Body,
            path: Vec::new(),
        }
    }

    fn attributes() -> Field {
        Field {
            root: Root::Attributes,
            path: Vec::new(),
        }
    }

    pub fn get<'e>(&self, e: &'e Entry) -> Option<&'e Value> {
        let (first, rest) = match self.root {
            Root::Body => {
                let mut v = &e.body;
                for k in &self.path {
                    v = v.as_object()?.get(k)?;
                }
                return Some(v);
            }
            Root::Attributes => (e.attributes.get(&self.path[0])?, &self.path[1..]),
            Root::Resource => (e.resource.get(&self.path[0])?, &self.path[1..]),
        };
        let mut v = first;
        for k in rest {
            v = v.as_object()?.get(k)?;
        }
        Some(v)
    }

    fn take(&self, e: &mut Entry) -> Option<Value> {
        let (map, path) = match self.root {
            Root::Body if self.path.is_empty() => {
                return Some(std::mem::replace(&mut e.body, Value::Null))
            }
            Root::Body => (e.body.as_object_mut()?, &self.path[..]),
            Root::Attributes => (&mut e.attributes, &self.path[..]),
            Root::Resource => (&mut e.resource, &self.path[..]),
        };
        let mut map = map;
        for k in &path[..path.len() - 1] {
            map = map.get_mut(k)?.as_object_mut()?;
        }
        map.remove(&path[path.len() - 1])
    }

    fn set(&self, e: &mut Entry, value: Value) {
        let (map, path) = match self.root {
            Root::Body if self.path.is_empty() => {
                e.body = value;
                return;
            }
            Root::Body => {
                if !e.body.is_object() {
                    e.body = Value::Object(Map::new());
                }
                let Value::Object(m) = &mut e.body else {
                    return;
                };
                (m, &self.path[..])
            }
            Root::Attributes => (&mut e.attributes, &self.path[..]),
            Root::Resource => (&mut e.resource, &self.path[..]),
        };
        if path.is_empty() {
            // `attributes` itself: merge an object in.
            if let Value::Object(o) = value {
                map.extend(o);
            }
            return;
        }
        let mut map = map;
        for k in &path[..path.len() - 1] {
            let slot = map
                .entry(k.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            if !slot.is_object() {
                *slot = Value::Object(Map::new());
            }
            let Value::Object(m) = slot else { return };
            map = m;
        }
        map.insert(path[path.len() - 1].clone(), value);
    }

    /// `attributes` as a target for a parser's fields (`parse_to`).
    fn merge(&self, e: &mut Entry, fields: Map<String, Value>) {
        match self.root {
            Root::Attributes if self.path.is_empty() => e.attributes.extend(fields),
            Root::Resource if self.path.is_empty() => e.resource.extend(fields),
            _ => self.set(e, Value::Object(fields)),
        }
    }
}

/// A value as text, for parsers that read strings.
fn as_text(v: &Value) -> Option<std::borrow::Cow<'_, str>> {
    match v {
        Value::String(s) => Some(s.as_str().into()),
        Value::Number(n) => Some(n.to_string().into()),
        _ => None,
    }
}

/// Severity text → OTLP severity number.
#[derive(Debug, Clone)]
pub struct Severity {
    from: Field,
    /// (lower-cased text, number) pairs searched first; then the default names.
    mapping: Vec<(String, i32)>,
    /// HTTP-status-like ranges: (min, max, number).
    ranges: Vec<(i64, i64, i32)>,
}

/// The OTLP severity numbers of the level names (the first of each range).
const LEVELS: [(&str, i32); 6] = [
    ("trace", 1),
    ("debug", 5),
    ("info", 9),
    ("warn", 13),
    ("error", 17),
    ("fatal", 21),
];

/// The names recognised without a mapping (lower case).
fn default_severity(text: &str) -> Option<i32> {
    Some(match text {
        "trace" => 1,
        "trace2" => 2,
        "trace3" => 3,
        "trace4" => 4,
        "debug" | "dbg" => 5,
        "debug2" => 6,
        "debug3" => 7,
        "debug4" => 8,
        "info" | "information" | "informational" | "notice" => 9,
        "info2" => 10,
        "info3" => 11,
        "info4" => 12,
        "warn" | "warning" => 13,
        "warn2" => 14,
        "warn3" => 15,
        "warn4" => 16,
        "error" | "err" => 17,
        "error2" => 18,
        "error3" => 19,
        "error4" => 20,
        "fatal" | "critical" | "crit" | "emergency" | "emerg" | "alert" | "panic" => 21,
        "fatal2" => 22,
        "fatal3" => 23,
        "fatal4" => 24,
        _ => return None,
    })
}

impl Severity {
    fn new(
        from: Option<&str>,
        mapping: Option<&Map<String, Value>>,
        preset: Option<&str>,
    ) -> Result<Severity, String> {
        if let Some(p) = preset.filter(|p| *p != "default" && *p != "none") {
            return Err(format!(
                "severity preset \"{p}\" is not known: write default or none"
            ));
        }
        let from = Field::parse(from.unwrap_or("body"))?;
        let mut s = Severity {
            from,
            mapping: Vec::new(),
            ranges: Vec::new(),
        };
        for (level, values) in mapping.into_iter().flatten() {
            let number = default_severity(&level.to_ascii_lowercase()).ok_or_else(|| {
                format!(
                    "unknown severity \"{level}\": write one of {}",
                    LEVELS.map(|(n, _)| n).join(", ")
                )
            })?;
            let items = match values {
                Value::Array(a) => a.clone(),
                v => vec![v.clone()],
            };
            for item in items {
                match item {
                    Value::String(t) => s.mapping.push((t.to_ascii_lowercase(), number)),
                    Value::Number(n) => s.mapping.push((n.to_string(), number)),
                    Value::Object(o) => {
                        let min = o.get("min").and_then(Value::as_i64);
                        let max = o.get("max").and_then(Value::as_i64);
                        match (min, max) {
                            (Some(min), Some(max)) => s.ranges.push((min, max, number)),
                            _ => {
                                return Err(format!(
                                    "severity {level}: a range needs min and max numbers"
                                ))
                            }
                        }
                    }
                    other => return Err(format!("severity {level}: cannot map {other}")),
                }
            }
        }
        Ok(s)
    }

    /// Sets the entry's severity from its field; false when the field is missing.
    fn apply(&self, e: &mut Entry) -> bool {
        let Some(v) = self.from.get(e) else {
            return false;
        };
        let Some(text) = as_text(v).map(|t| t.into_owned()) else {
            return false;
        };
        let lower = text.to_ascii_lowercase();
        let number = self
            .mapping
            .iter()
            .find(|(t, _)| *t == lower)
            .map(|(_, n)| *n)
            .or_else(|| {
                let n: i64 = lower.parse().ok()?;
                self.ranges
                    .iter()
                    .find(|(min, max, _)| (*min..=*max).contains(&n))
                    .map(|(_, _, s)| *s)
            })
            .or_else(|| default_severity(&lower));
        e.severity = number.unwrap_or(0);
        e.severity_text = text;
        true
    }
}

#[derive(Debug, Clone)]
struct Timestamp {
    from: Field,
    layout: Layout,
}

impl Timestamp {
    fn new(
        from: Option<&str>,
        layout_type: Option<&str>,
        layout: Option<&str>,
    ) -> Result<Self, String> {
        let layout = layout.ok_or("a timestamp needs layout")?;
        Ok(Timestamp {
            from: Field::parse(from.ok_or("a timestamp needs parse_from")?)?,
            layout: Layout::new(layout_type, layout)?,
        })
    }

    fn apply(&self, e: &mut Entry) -> bool {
        let t = self
            .from
            .get(e)
            .and_then(as_text)
            .and_then(|t| self.layout.parse(&t));
        match t {
            Some(t) => {
                e.time_ns = Some(t);
                true
            }
            None => false,
        }
    }
}

/// Which container log format a `container` operator reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ContainerFormat {
    Auto,
    Docker,
    Cri,
}

#[derive(Debug, Clone)]
enum Kind {
    Json {
        from: Field,
        to: Field,
    },
    Regex {
        regex: Regex,
        from: Field,
        to: Field,
    },
    Move {
        from: Field,
        to: Field,
    },
    Remove(Field),
    Add(Field, Value),
    Severity(Severity),
    Time(Timestamp),
    Container {
        format: ContainerFormat,
        from_path: bool,
    },
}

/// An operator ready to run.
#[derive(Debug, Clone)]
pub struct Operator {
    /// `id`, or the kind: what failures are counted under.
    pub name: String,
    kind: Kind,
    timestamp: Option<Timestamp>,
    severity: Option<Severity>,
}

/// What running the operators did to one entry.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Index of the first operator that failed on it, if any.
    pub failed: Option<usize>,
    /// A CRI partial line (`P`): hold the body and join it with the next.
    pub partial: bool,
}

impl Operator {
    /// Checks one configured operator; errors name the key at fault (relative to it).
    pub fn new(c: &OperatorConfig) -> Result<Operator, FieldError> {
        let err = |field: &str, m: String| FieldError::new(field, m);
        let field = |key: &str, v: &Option<String>, default: fn() -> Field| match v {
            Some(t) => Field::parse(t).map_err(|m| err(key, m)),
            None => Ok(default()),
        };
        let allowed: &[&str] = match c.kind.as_str() {
            "json_parser" => &["parse_from", "parse_to", "timestamp", "severity"],
            "regex_parser" => &["regex", "parse_from", "parse_to", "timestamp", "severity"],
            "move" => &["from", "to"],
            "remove" => &["field"],
            "add" => &["field", "value"],
            "severity_parser" => &["parse_from", "mapping", "preset"],
            "time_parser" => &["parse_from", "layout_type", "layout"],
            "container" => &["format", "add_metadata_from_filepath"],
            other => {
                return Err(err(
                    "type",
                    format!("operator type \"{other}\" is not supported: use json_parser, regex_parser, move, remove, add, severity_parser, time_parser or container"),
                ))
            }
        };
        let set = [
            ("parse_from", c.parse_from.is_some()),
            ("parse_to", c.parse_to.is_some()),
            ("regex", c.regex.is_some()),
            ("timestamp", c.timestamp.is_some()),
            ("severity", c.severity.is_some()),
            ("from", c.from.is_some()),
            ("to", c.to.is_some()),
            ("field", c.field.is_some()),
            ("value", c.value.is_some()),
            ("format", c.format.is_some()),
            (
                "add_metadata_from_filepath",
                c.add_metadata_from_filepath.is_some(),
            ),
            ("layout_type", c.layout_type.is_some()),
            ("layout", c.layout.is_some()),
            ("mapping", c.mapping.is_some()),
            ("preset", c.preset.is_some()),
        ];
        if let Some((key, _)) = set.iter().find(|(k, s)| *s && !allowed.contains(k)) {
            return Err(err(key, format!("{} does not take {key}", c.kind)));
        }
        if c.output.is_some() {
            return Err(err(
                "output",
                "operators run in the order listed; output (routing) is not supported".into(),
            ));
        }
        if let Some(o) = c.on_error.as_deref() {
            if !o.starts_with("send") {
                return Err(err(
                    "on_error",
                    format!("on_error \"{o}\" is not supported: a line that fails to parse is always sent as it was (send)"),
                ));
            }
        }
        let kind = match c.kind.as_str() {
            "json_parser" => Kind::Json {
                from: field("parse_from", &c.parse_from, Field::body)?,
                to: field("parse_to", &c.parse_to, Field::attributes)?,
            },
            "regex_parser" => {
                let text = c
                    .regex
                    .as_deref()
                    .ok_or_else(|| err("regex", "regex_parser needs regex".into()))?;
                let regex = Regex::new(text).map_err(|e| err("regex", e.to_string()))?;
                if regex.capture_names().flatten().next().is_none() {
                    return Err(err(
                        "regex",
                        "the regex has no named groups (?P<name>...) to parse into".into(),
                    ));
                }
                Kind::Regex {
                    regex,
                    from: field("parse_from", &c.parse_from, Field::body)?,
                    to: field("parse_to", &c.parse_to, Field::attributes)?,
                }
            }
            "move" => Kind::Move {
                from: Field::parse(c.from.as_deref().ok_or_else(|| err("from", "move needs from".into()))?)
                    .map_err(|m| err("from", m))?,
                to: Field::parse(c.to.as_deref().ok_or_else(|| err("to", "move needs to".into()))?)
                    .map_err(|m| err("to", m))?,
            },
            "remove" => Kind::Remove(
                Field::parse(c.field.as_deref().ok_or_else(|| err("field", "remove needs field".into()))?)
                    .map_err(|m| err("field", m))?,
            ),
            "add" => Kind::Add(
                Field::parse(c.field.as_deref().ok_or_else(|| err("field", "add needs field".into()))?)
                    .map_err(|m| err("field", m))?,
                c.value
                    .clone()
                    .ok_or_else(|| err("value", "add needs value".into()))?,
            ),
            "severity_parser" => Kind::Severity(
                Severity::new(
                    c.parse_from.as_deref(),
                    c.mapping.as_ref(),
                    c.preset.as_deref(),
                )
                .map_err(|m| err("mapping", m))?,
            ),
            "time_parser" => Kind::Time(
                Timestamp::new(
                    c.parse_from.as_deref(),
                    c.layout_type.as_deref(),
                    c.layout.as_deref(),
                )
                .map_err(|m| err("layout", m))?,
            ),
            _ => Kind::Container {
                format: match c.format.as_deref().unwrap_or("auto") {
                    "auto" => ContainerFormat::Auto,
                    "docker" => ContainerFormat::Docker,
                    "crio" | "containerd" | "cri" => ContainerFormat::Cri,
                    other => {
                        return Err(err(
                            "format",
                            format!("unknown container format \"{other}\": write auto, docker, crio or containerd"),
                        ))
                    }
                },
                from_path: c.add_metadata_from_filepath.unwrap_or(true),
            },
        };
        let timestamp = c
            .timestamp
            .as_ref()
            .map(|t| {
                Timestamp::new(
                    t.parse_from.as_deref(),
                    t.layout_type.as_deref(),
                    t.layout.as_deref(),
                )
                .map_err(|m| err("timestamp", m))
            })
            .transpose()?;
        let severity = c
            .severity
            .as_ref()
            .map(|s| {
                Severity::new(
                    s.parse_from.as_deref(),
                    s.mapping.as_ref(),
                    s.preset.as_deref(),
                )
                .map_err(|m| err("severity", m))
            })
            .transpose()?;
        Ok(Operator {
            name: c.id.clone().unwrap_or_else(|| c.kind.clone()),
            kind,
            timestamp,
            severity,
        })
    }

    /// Whether this operator reads the file's path (the `container` operator).
    pub fn wants_path(&self) -> bool {
        matches!(
            self.kind,
            Kind::Container {
                from_path: true,
                ..
            }
        )
    }

    /// Runs the operator on `e`; false when it could not (the entry is left as it was,
    /// or with what succeeded before the failure).
    fn apply(&self, e: &mut Entry, path: &str, partial: &mut bool) -> bool {
        let ok = match &self.kind {
            Kind::Json { from, to } => {
                let parsed = from.get(e).and_then(|v| match v {
                    Value::String(s) => serde_json::from_str::<Map<String, Value>>(s).ok(),
                    _ => None,
                });
                match parsed {
                    Some(fields) => {
                        // The body stays the original line, as in the Collector.
                        to.merge(e, fields);
                        true
                    }
                    None => false,
                }
            }
            Kind::Regex { regex, from, to } => {
                let fields = from.get(e).and_then(as_text).and_then(|text| {
                    let caps = regex.captures(&text)?;
                    let mut m = Map::new();
                    for name in regex.capture_names().flatten() {
                        if let Some(c) = caps.name(name) {
                            m.insert(name.to_string(), Value::String(c.as_str().to_string()));
                        }
                    }
                    Some(m)
                });
                match fields {
                    Some(f) => {
                        to.merge(e, f);
                        true
                    }
                    None => false,
                }
            }
            Kind::Move { from, to } => match from.take(e) {
                Some(v) => {
                    to.set(e, v);
                    true
                }
                None => false,
            },
            Kind::Remove(f) => f.take(e).is_some(),
            Kind::Add(f, v) => {
                f.set(e, v.clone());
                true
            }
            Kind::Severity(s) => s.apply(e),
            Kind::Time(t) => t.apply(e),
            Kind::Container { format, from_path } => {
                let ok = container(e, *format, partial);
                if *from_path {
                    pod_from_path(e, path);
                }
                ok
            }
        };
        if !ok {
            return false;
        }
        let ts = self.timestamp.as_ref().is_none_or(|t| t.apply(e));
        let sev = self.severity.as_ref().is_none_or(|s| s.apply(e));
        ts && sev
    }
}

/// Runs `operators` in order on `e` (read from the file at `path`).
pub fn run(operators: &[Operator], e: &mut Entry, path: &str) -> Outcome {
    let mut out = Outcome::default();
    for (i, op) in operators.iter().enumerate() {
        if !op.apply(e, path, &mut out.partial) && out.failed.is_none() {
            out.failed = Some(i);
        }
    }
    out
}

/// A Docker (`{"log":…,"stream":…,"time":…}`) or CRI (`<time> <stream> <F|P> <log>`)
/// line: the body becomes the log text, `log.iostream` the stream, the time the entry's.
fn container(e: &mut Entry, format: ContainerFormat, partial: &mut bool) -> bool {
    let Value::String(line) = &e.body else {
        return false;
    };
    let docker = match format {
        ContainerFormat::Docker => true,
        ContainerFormat::Cri => false,
        ContainerFormat::Auto => line.starts_with('{'),
    };
    if docker {
        let Ok(mut m) = serde_json::from_str::<Map<String, Value>>(line) else {
            return false;
        };
        let Some(Value::String(mut log)) = m.remove("log") else {
            return false;
        };
        if log.ends_with('\n') {
            log.pop();
        } else {
            // Docker splits lines over 16 KiB; only the last piece ends in a newline.
            *partial = true;
        }
        if let Some(t) = m.get("time").and_then(Value::as_str).and_then(rfc3339) {
            e.time_ns = Some(t);
        }
        if let Some(s) = m.remove("stream") {
            e.attributes.insert("log.iostream".into(), s);
        }
        e.body = Value::String(log);
        return true;
    }
    let mut parts = line.splitn(4, ' ');
    let (Some(time), Some(stream), Some(tag)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let log = parts.next().unwrap_or("");
    let Some(t) = rfc3339(time) else {
        return false;
    };
    if tag != "F" && tag != "P" {
        return false;
    }
    *partial = tag == "P";
    let (stream, log) = (stream.to_string(), log.to_string());
    e.time_ns = Some(t);
    e.attributes
        .insert("log.iostream".into(), Value::String(stream));
    e.attributes
        .insert("logtag".into(), Value::String(tag.to_string()));
    e.body = Value::String(log);
    true
}

/// `/var/log/pods/<namespace>_<pod>_<uid>/<container>/<restart>.log` → the Pod's
/// identity as resource attributes.
fn pod_from_path(e: &mut Entry, path: &str) {
    let mut parts = path.rsplit('/');
    let (Some(file), Some(container), Some(pod_dir)) = (parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    let mut pod = pod_dir.splitn(3, '_');
    let (Some(ns), Some(name), Some(uid)) = (pod.next(), pod.next(), pod.next()) else {
        return;
    };
    let Some(restart) = file
        .strip_suffix(".log")
        .filter(|r| r.parse::<u32>().is_ok())
    else {
        return;
    };
    for (k, v) in [
        ("k8s.namespace.name", ns),
        ("k8s.pod.name", name),
        ("k8s.pod.uid", uid),
        ("k8s.container.name", container),
        ("k8s.container.restart_count", restart),
    ] {
        e.resource.insert(k.into(), Value::String(v.into()));
    }
}

#[cfg(test)]
mod tests;
