//! YAML → [`Node`] tree. Every node keeps the line and column where it starts, and scalar
//! values have `${env:VAR}` references expanded as they are read.
//!
//! Expansion happens inside scalars, after YAML parsing, so an environment value can never
//! change the document's structure and line numbers stay those of the file.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use crate::error::{ConfigError, Errors};

/// A position in the config file, both 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Mark {
    pub line: usize,
    pub column: usize,
}

impl Mark {
    fn from_marker(m: &Marker) -> Self {
        Mark {
            line: m.line(),
            column: m.col() + 1,
        }
    }
}

/// One YAML value and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub mark: Mark,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `~`, `null` or nothing at all.
    Null,
    /// A scalar's text; `plain` is true when it was unquoted, so it may be a number or bool.
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    /// Keys in file order; duplicate keys are refused at parse time.
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// The scalar text, if this node is a scalar.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// A short name of this node's shape for error messages.
    pub fn kind_name(&self) -> &'static str {
        match self.value {
            Value::Null => "nothing",
            Value::Scalar { .. } => "a value",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a map",
        }
    }

    /// Whether `other` holds the same values, wherever in the file either stands: what a
    /// config reload compares to tell which components changed.
    pub fn same_as(&self, other: &Node) -> bool {
        match (&self.value, &other.value) {
            (Value::Null, Value::Null) => true,
            (Value::Scalar { text: a, plain: p }, Value::Scalar { text: b, plain: q }) => {
                a == b && p == q
            }
            (Value::Seq(a), Value::Seq(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.same_as(y))
            }
            (Value::Map(a), Value::Map(b)) => {
                a.len() == b.len()
                    && a.iter()
                        .zip(b)
                        .all(|((k, v), (l, w))| k.same_as(l) && v.same_as(w))
            }
            _ => false,
        }
    }

    /// The entry under `key` when this node is a map.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }
}

/// Where `${env:VAR}` values come from. Tests pass a map; the binary passes the process
/// environment.
pub trait EnvLookup {
    fn get(&self, name: &str) -> Option<String>;
}

impl<F: Fn(&str) -> Option<String>> EnvLookup for F {
    fn get(&self, name: &str) -> Option<String> {
        self(name)
    }
}

impl EnvLookup for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).cloned()
    }
}

/// What parsing noticed but accepted (unset variables expand to an empty string, as in
/// the OpenTelemetry Collector).
#[derive(Debug, Default)]
pub struct Warnings(pub Vec<ConfigError>);

/// Parses one YAML document. An empty document is an empty map.
pub fn parse(text: &str, env: &dyn EnvLookup) -> Result<(Node, Warnings), Errors> {
    let mut builder = Builder {
        env,
        stack: Vec::new(),
        anchors: HashMap::new(),
        root: None,
        errors: Errors::default(),
        warnings: Warnings::default(),
    };
    let mut parser = Parser::new_from_str(text);
    if let Err(e) = parser.load(&mut builder, false) {
        let mark = Mark::from_marker(e.marker());
        return Err(ConfigError::new("", Some(mark), format!("invalid YAML: {}", e.info())).into());
    }
    let root = builder.root.take().unwrap_or(Node {
        value: Value::Map(Vec::new()),
        mark: Mark { line: 1, column: 1 },
    });
    let root = match root.value {
        Value::Null => Node {
            value: Value::Map(Vec::new()),
            mark: root.mark,
        },
        _ => root,
    };
    builder.errors.into_result((root, builder.warnings))
}

struct Builder<'a> {
    env: &'a dyn EnvLookup,
    stack: Vec<(Node, usize)>,
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
    errors: Errors,
    warnings: Warnings,
}

impl Builder<'_> {
    fn push_value(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some((parent, _)) => match &mut parent.value {
                Value::Seq(items) => items.push(node),
                Value::Map(entries) => {
                    // Keys and values arrive alternately; a pending key has a Null value
                    // placeholder marked by `pending_key`.
                    if let Some((_, v)) = entries.last_mut().filter(|(_, v)| is_hole(v)) {
                        *v = node;
                    } else {
                        if let Some(key) = node.as_str() {
                            if entries.iter().any(|(k, _)| k.as_str() == Some(key)) {
                                self.errors.push(ConfigError::new(
                                    key.to_string(),
                                    Some(node.mark),
                                    "duplicate key",
                                ));
                            }
                        }
                        entries.push((node, hole()));
                    }
                }
                _ => unreachable!("only collections are pushed on the stack"),
            },
        }
    }

    fn scalar(&mut self, text: String, style: TScalarStyle, mark: Mark) -> Node {
        let plain = style == TScalarStyle::Plain;
        if plain && matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL") {
            return Node {
                value: Value::Null,
                mark,
            };
        }
        let text = match expand(&text, self.env) {
            Ok((expanded, unset)) => {
                for name in unset {
                    self.warnings.0.push(ConfigError::new(
                        "",
                        Some(mark),
                        format!("{UNSET_PREFIX}{name}{UNSET_SUFFIX}"),
                    ));
                }
                expanded
            }
            Err(message) => {
                self.errors.push(ConfigError::new("", Some(mark), message));
                text
            }
        };
        Node {
            value: Value::Scalar { text, plain },
            mark,
        }
    }
}

/// A placeholder for a map value not yet seen. Distinct from every parsed node because
/// parsed nodes never have line 0.
fn hole() -> Node {
    Node {
        value: Value::Null,
        mark: Mark { line: 0, column: 0 },
    }
}

fn is_hole(n: &Node) -> bool {
    n.mark.line == 0 && n.value == Value::Null
}

impl MarkedEventReceiver for Builder<'_> {
    fn on_event(&mut self, ev: Event, marker: Marker) {
        let mark = Mark::from_marker(&marker);
        match ev {
            Event::Scalar(text, style, anchor, _) => {
                let node = self.scalar(text, style, mark);
                self.push_value(node, anchor);
            }
            Event::SequenceStart(anchor, _) => self.stack.push((
                Node {
                    value: Value::Seq(Vec::new()),
                    mark,
                },
                anchor,
            )),
            Event::MappingStart(anchor, _) => self.stack.push((
                Node {
                    value: Value::Map(Vec::new()),
                    mark,
                },
                anchor,
            )),
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some((node, anchor)) = self.stack.pop() {
                    self.push_value(node, anchor);
                }
            }
            Event::Alias(id) => {
                let node = match self.anchors.get(&id) {
                    Some(n) => n.clone(),
                    None => {
                        self.errors.push(ConfigError::new(
                            "",
                            Some(mark),
                            "alias to an unknown anchor",
                        ));
                        Node {
                            value: Value::Null,
                            mark,
                        }
                    }
                };
                self.push_value(node, 0);
            }
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
    }
}

/// Expands `${env:VAR}`, `${env:VAR:-default}` and `${VAR}`; `$$` is a literal `$`.
/// Returns the text and the names of variables that were unset without a default.
pub fn expand(text: &str, env: &dyn EnvLookup) -> Result<(String, Vec<String>), String> {
    if !text.contains('$') {
        return Ok((text.to_string(), Vec::new()));
    }
    let mut out = String::with_capacity(text.len());
    let mut unset = Vec::new();
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        rest = &rest[pos..];
        if let Some(after) = rest.strip_prefix("$$") {
            out.push('$');
            rest = after;
        } else if let Some(after) = rest.strip_prefix("${") {
            // The value may be a secret (a header, a password): say where, never what.
            let end = after.find('}').ok_or_else(|| {
                let at = text.len() - rest.len() + 1;
                format!(
                    "unterminated \"${{\" at character {at} of the value; write $$ for a literal $"
                )
            })?;
            let inner = &after[..end];
            let reference = inner.strip_prefix("env:").unwrap_or(inner);
            let (name, default) = match reference.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (reference, None),
            };
            if inner.contains(':') && !inner.starts_with("env:") {
                return Err(format!(
                    "unsupported reference \"${{{inner}}}\": only ${{env:NAME}} is supported"
                ));
            }
            if !valid_env_name(name) {
                return Err(format!(
                    "invalid environment variable name {name:?} in \"${{{inner}}}\""
                ));
            }
            match (env.get(name), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => unset.push(name.to_string()),
            }
            rest = &after[end + 1..];
        } else {
            // A lone `$` not starting a reference stays as it is (e.g. a regex anchor).
            out.push('$');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    Ok((out, unset))
}

fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

const UNSET_PREFIX: &str = "environment variable ";
const UNSET_SUFFIX: &str = " is not set; using an empty value";

/// Adds to each error whose value came from an unset `${env:VAR}` which variable it
/// was, since the error alone ("endpoint is required") would not say why it is empty.
pub fn name_unset_variables(errors: &mut crate::Errors, warnings: &[ConfigError]) {
    for w in warnings {
        let Some(name) = w
            .message
            .strip_prefix(UNSET_PREFIX)
            .and_then(|m| m.strip_suffix(UNSET_SUFFIX))
        else {
            continue;
        };
        for e in errors
            .0
            .iter_mut()
            .filter(|e| e.mark.is_some() && e.mark == w.mark)
        {
            e.message.push_str(&format!(
                " (the value comes from ${{env:{name}}}, which is not set)"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> HashMap<String, String> {
        HashMap::from([("HOST".to_string(), "10.0.0.1".to_string())])
    }

    #[test]
    fn expands_references_and_escapes() {
        let e = env();
        assert_eq!(expand("${env:HOST}:4317", &e).unwrap().0, "10.0.0.1:4317");
        assert_eq!(expand("${HOST}", &e).unwrap().0, "10.0.0.1");
        assert_eq!(expand("${env:PORT:-4318}", &e).unwrap().0, "4318");
        assert_eq!(expand("$$1 and $$$${x}", &e).unwrap().0, "$1 and $${x}");
        assert_eq!(expand("^a$", &e).unwrap().0, "^a$");
        let (text, unset) = expand("x${env:NOPE}y", &e).unwrap();
        assert_eq!((text.as_str(), unset), ("xy", vec!["NOPE".to_string()]));
        assert!(expand("${env:HOST", &e)
            .unwrap_err()
            .contains("unterminated"));
        // A secret with a stray "${" is pointed at, never echoed.
        let err = expand("Bearer s3cr3t-${oops", &e).unwrap_err();
        assert!(err.contains("at character 15"), "{err}");
        assert!(!err.contains("s3cr3t"), "{err}");
        assert!(expand("${file:/x}", &e)
            .unwrap_err()
            .contains("only ${env:NAME}"));
        assert!(expand("${env:1A}", &e)
            .unwrap_err()
            .contains("invalid environment"));
    }

    #[test]
    fn builds_a_marked_tree() {
        let text = "a:\n  b: 1\n  c: [x, 'y']\nd:\n";
        let (root, _) = parse(text, &env()).unwrap();
        let a = root.get("a").unwrap();
        assert_eq!(a.mark.line, 2);
        let b = a.get("b").unwrap();
        assert_eq!(b.as_str(), Some("1"));
        assert_eq!(b.mark, Mark { line: 2, column: 6 });
        match &a.get("c").unwrap().value {
            Value::Seq(items) => {
                assert_eq!(
                    items[1].value,
                    Value::Scalar {
                        text: "y".into(),
                        plain: false
                    }
                )
            }
            other => panic!("expected a list, got {other:?}"),
        }
        assert_eq!(root.get("d").unwrap().value, Value::Null);
    }

    #[test]
    fn refuses_duplicate_keys_and_bad_yaml() {
        let err = parse("a: 1\na: 2\n", &env()).unwrap_err();
        assert_eq!(err.to_string(), "2:1: a: duplicate key");
        let err = parse("a: [1, 2\n", &env()).unwrap_err();
        assert!(err.to_string().contains("invalid YAML"), "{err}");
    }

    #[test]
    fn anchors_and_aliases_copy_nodes() {
        let (root, _) = parse("x: &v {k: 1}\ny: *v\n", &env()).unwrap();
        assert_eq!(root.get("y").unwrap().get("k").unwrap().as_str(), Some("1"));
    }
}
