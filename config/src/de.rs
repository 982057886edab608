//! A serde deserializer over a [`Node`]: component configs are plain `#[derive(Deserialize)]`
//! structs with `deny_unknown_fields`, and their errors come back with the dotted path and
//! line of the offending key or value, plus the nearest valid key for a misspelt one.

use std::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};

use crate::error::{unknown, ConfigError};
use crate::node::{Mark, Node, Value};

/// Deserializes `node` (found at `path`) into `T`; the first problem on failure.
pub fn from_node<'de, T: de::Deserialize<'de>>(
    node: &'de Node,
    path: &str,
) -> Result<T, ConfigError> {
    from_node_all(node, path).map_err(|mut all| all.remove(0))
}

std::thread_local! {
    /// Unknown keys met while deserializing, reported together with the first other
    /// error so that one run lists every misspelt key, not only the first.
    static UNKNOWN_KEYS: std::cell::RefCell<Vec<Error>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Deserializes `node` (found at `path`) into `T`, reporting every unknown key (they
/// are skipped so the rest can still be read) and the first other problem.
pub fn from_node_all<'de, T: de::Deserialize<'de>>(
    node: &'de Node,
    path: &str,
) -> Result<T, Vec<ConfigError>> {
    match from_node_partial(node, path) {
        (Some(value), errors) if errors.is_empty() => Ok(value),
        (_, errors) => Err(errors),
    }
}

/// Like [`from_node_all`], but also hands back the value when only unknown keys were
/// wrong, so that its own checks can run and report their problems in the same pass.
pub fn from_node_partial<'de, T: de::Deserialize<'de>>(
    node: &'de Node,
    path: &str,
) -> (Option<T>, Vec<ConfigError>) {
    let outer = UNKNOWN_KEYS.with(|u| std::mem::take(&mut *u.borrow_mut()));
    let result = T::deserialize(NodeDe {
        node,
        path: path.to_string(),
    });
    let unknown = UNKNOWN_KEYS.with(|u| std::mem::replace(&mut *u.borrow_mut(), outer));
    let located = |e: Error| ConfigError {
        path: e.path.unwrap_or_else(|| path.to_string()),
        mark: e.mark.or(Some(node.mark)),
        message: e.message,
    };
    let mut errors: Vec<ConfigError> = unknown.into_iter().map(located).collect();
    let value = match result {
        Ok(value) => Some(value),
        Err(e) => {
            let e = located(e);
            if !errors.contains(&e) {
                errors.push(e);
            }
            None
        }
    };
    sort_by_position(&mut errors);
    (value, errors)
}

/// Orders errors as they appear in the file.
pub fn sort_by_position(errors: &mut [ConfigError]) {
    errors.sort_by_key(|e| e.mark.map(|m| (m.line, m.column)));
}

#[derive(Debug)]
pub struct Error {
    message: String,
    path: Option<String>,
    mark: Option<Mark>,
}

impl Error {
    fn at(mut self, path: &str, mark: Mark) -> Self {
        if self.path.is_none() {
            self.path = Some(path.to_string());
            self.mark = Some(mark);
        }
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error {
            message: msg.to_string(),
            path: None,
            mark: None,
        }
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        Self::custom(unknown("field", field, expected))
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        Self::custom(unknown("value", variant, expected))
    }

    fn missing_field(field: &'static str) -> Self {
        Self::custom(format!("missing required field \"{field}\""))
    }
}

struct NodeDe<'de> {
    node: &'de Node,
    path: String,
}

fn child_path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

impl<'de> NodeDe<'de> {
    fn scalar(&self) -> Result<&'de str, Error> {
        match &self.node.value {
            Value::Scalar { text, .. } => Ok(text),
            _ => Err(self.invalid("a value")),
        }
    }

    fn invalid(&self, expected: &str) -> Error {
        let found = match &self.node.value {
            Value::Scalar { text, .. } => format!("\"{text}\""),
            _ => self.node.kind_name().to_string(),
        };
        <Error as de::Error>::custom(format!("expected {expected}, found {found}"))
            .at(&self.path, self.node.mark)
    }

    fn visit_entries<V: Visitor<'de>>(
        self,
        visitor: V,
        fields: Option<&'static [&'static str]>,
    ) -> Result<V::Value, Error> {
        static EMPTY: Vec<(Node, Node)> = Vec::new();
        let entries = match &self.node.value {
            Value::Map(entries) => entries,
            // `otlp:` with nothing under it means "all defaults", as in the Collector.
            Value::Null => &EMPTY,
            _ => return Err(self.invalid("a map")),
        };
        visitor
            .visit_map(MapDe {
                entries: entries.iter(),
                current: None,
                path: &self.path,
                fields,
            })
            .map_err(|e: Error| e.at(&self.path, self.node.mark))
    }

    fn parse<T: std::str::FromStr>(&self, expected: &str) -> Result<T, Error> {
        let text = self.scalar()?;
        parse_number(text).ok_or_else(|| self.invalid(expected))
    }
}

fn parse_number<T: std::str::FromStr>(text: &str) -> Option<T> {
    let cleaned = text.replace('_', "");
    cleaned.parse().ok()
}

macro_rules! number {
    ($method:ident, $visit:ident, $ty:ty, $what:literal) => {
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            let value: $ty = self.parse($what)?;
            visitor
                .$visit(value)
                .map_err(|e: Error| e.at(&self.path, self.node.mark))
        }
    };
}

impl<'de> de::Deserializer<'de> for NodeDe<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let result = match &self.node.value {
            Value::Null => visitor.visit_unit(),
            Value::Scalar { text, plain: true } => {
                if let Some(b) = parse_bool(text) {
                    visitor.visit_bool(b)
                } else if let Ok(i) = text.parse::<i64>() {
                    visitor.visit_i64(i)
                } else if let Ok(u) = text.parse::<u64>() {
                    visitor.visit_u64(u)
                } else if let Some(f) = parse_float(text) {
                    visitor.visit_f64(f)
                } else {
                    visitor.visit_borrowed_str(text)
                }
            }
            Value::Scalar { text, plain: false } => visitor.visit_borrowed_str(text),
            Value::Seq(_) => return self.deserialize_seq(visitor),
            Value::Map(_) => return self.deserialize_map(visitor),
        };
        result.map_err(|e: Error| e.at(&self.path, self.node.mark))
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let b = parse_bool(self.scalar()?).ok_or_else(|| self.invalid("true or false"))?;
        visitor.visit_bool(b)
    }

    number!(deserialize_i8, visit_i8, i8, "an integer");
    number!(deserialize_i16, visit_i16, i16, "an integer");
    number!(deserialize_i32, visit_i32, i32, "an integer");
    number!(deserialize_i64, visit_i64, i64, "an integer");
    number!(deserialize_u8, visit_u8, u8, "a non-negative integer");
    number!(deserialize_u16, visit_u16, u16, "a non-negative integer");
    number!(deserialize_u32, visit_u32, u32, "a non-negative integer");
    number!(deserialize_u64, visit_u64, u64, "a non-negative integer");

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let f = parse_float(self.scalar()?).ok_or_else(|| self.invalid("a number"))?;
        visitor
            .visit_f64(f)
            .map_err(|e: Error| e.at(&self.path, self.node.mark))
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let text = self.scalar()?;
        visitor
            .visit_borrowed_str(text)
            .map_err(|e: Error| e.at(&self.path, self.node.mark))
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.node.value {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.node.value {
            Value::Null => visitor.visit_unit(),
            _ => Err(self.invalid("nothing")),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        static EMPTY: Vec<Node> = Vec::new();
        let items = match &self.node.value {
            Value::Seq(items) => items,
            Value::Null => &EMPTY,
            _ => return Err(self.invalid("a list")),
        };
        visitor
            .visit_seq(SeqDe {
                items: items.iter().enumerate(),
                path: &self.path,
            })
            .map_err(|e: Error| e.at(&self.path, self.node.mark))
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.visit_entries(visitor, None)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.visit_entries(visitor, Some(fields))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match &self.node.value {
            Value::Scalar { text, .. } => visitor
                .visit_enum(text.as_str().into_deserializer())
                .map_err(|e: Error| e.at(&self.path, self.node.mark)),
            Value::Map(entries) if entries.len() == 1 => {
                let (key, value) = &entries[0];
                visitor.visit_enum(EnumDe {
                    key,
                    value,
                    path: &self.path,
                })
            }
            _ => Err(self.invalid("one of the listed values")),
        }
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }
}

fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

fn parse_float(text: &str) -> Option<f64> {
    match text {
        ".inf" | ".Inf" | "+.inf" => Some(f64::INFINITY),
        "-.inf" | "-.Inf" => Some(f64::NEG_INFINITY),
        ".nan" | ".NaN" => Some(f64::NAN),
        // Rust would accept "inf"/"nan" words that YAML treats as strings.
        t if t.chars().any(|c| c.is_ascii_digit()) => parse_number(t),
        _ => None,
    }
}

struct SeqDe<'a, 'de> {
    items: std::iter::Enumerate<std::slice::Iter<'de, Node>>,
    path: &'a str,
}

impl<'de> de::SeqAccess<'de> for SeqDe<'_, 'de> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        match self.items.next() {
            None => Ok(None),
            Some((i, node)) => {
                let path = format!("{}[{i}]", self.path);
                seed.deserialize(NodeDe {
                    node,
                    path: path.clone(),
                })
                .map(Some)
                .map_err(|e: Error| e.at(&path, node.mark))
            }
        }
    }
}

struct MapDe<'a, 'de> {
    entries: std::slice::Iter<'de, (Node, Node)>,
    current: Option<&'de (Node, Node)>,
    path: &'a str,
    /// A struct's fields: other keys are recorded as unknown and skipped.
    fields: Option<&'static [&'static str]>,
}

impl<'de> de::MapAccess<'de> for MapDe<'_, 'de> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let entry = loop {
            let Some(entry) = self.entries.next() else {
                return Ok(None);
            };
            let key_text = entry.0.as_str().unwrap_or("");
            match self.fields {
                Some(fields) if !fields.contains(&key_text) => {
                    let e = <Error as de::Error>::unknown_field(key_text, fields)
                        .at(&child_path(self.path, key_text), entry.0.mark);
                    UNKNOWN_KEYS.with(|u| u.borrow_mut().push(e));
                }
                _ => break entry,
            }
        };
        self.current = Some(entry);
        let key = &entry.0;
        let key_text = key.as_str().unwrap_or("");
        let path = child_path(self.path, key_text);
        seed.deserialize(NodeDe { node: key, path })
            .map(Some)
            // An unknown key is reported at the map that holds it, on the key's line.
            .map_err(|e| Error { path: None, ..e }.at(&child_path(self.path, key_text), key.mark))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let (key, value) = self.current.take().expect("value requested before key");
        let path = child_path(self.path, key.as_str().unwrap_or(""));
        seed.deserialize(NodeDe {
            node: value,
            path: path.clone(),
        })
        .map_err(|e: Error| e.at(&path, value.mark))
    }
}

struct EnumDe<'a, 'de> {
    key: &'de Node,
    value: &'de Node,
    path: &'a str,
}

impl<'de> de::EnumAccess<'de> for EnumDe<'_, 'de> {
    type Error = Error;
    type Variant = NodeDe<'de>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, NodeDe<'de>), Error> {
        let name = self.key.as_str().unwrap_or("");
        let path = child_path(self.path, name);
        let variant = seed
            .deserialize(NodeDe {
                node: self.key,
                path: path.clone(),
            })
            .map_err(|e: Error| e.at(&path, self.key.mark))?;
        Ok((
            variant,
            NodeDe {
                node: self.value,
                path,
            },
        ))
    }
}

impl<'de> de::VariantAccess<'de> for NodeDe<'de> {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_seq(self, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_map(self, visitor)
    }
}

/// The keys a struct config type reads, as its derived `Deserialize` declares them;
/// empty for a type that is not a struct. Lets a caller that hands parts of one map to
/// several types say which type a key belongs to, and suggest across all of them.
pub fn struct_fields<'de, T: de::Deserialize<'de>>() -> &'static [&'static str] {
    match T::deserialize(FieldsProbe) {
        Err(Probe(Some(fields))) => fields,
        _ => &[],
    }
}

/// A deserializer that stops at the first `deserialize_struct` with the struct's fields.
struct FieldsProbe;

#[derive(Debug)]
struct Probe(Option<&'static [&'static str]>);

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a struct")
    }
}

impl std::error::Error for Probe {}

impl de::Error for Probe {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Probe(None)
    }
}

impl<'de> de::Deserializer<'de> for FieldsProbe {
    type Error = Probe;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Probe> {
        Err(Probe(None))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Probe> {
        Err(Probe(Some(fields)))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
        identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use serde::Deserialize;

    use super::*;
    use crate::node::parse;

    #[derive(Debug, Deserialize, Default, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Grpc {
        endpoint: String,
        max_recv_msg_size_mib: u32,
        enabled: bool,
        ratio: f64,
        tags: Vec<String>,
        headers: BTreeMap<String, String>,
        level: Option<Level>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "lowercase")]
    enum Level {
        Basic,
        Detailed,
    }

    fn load<T: for<'a> Deserialize<'a>>(text: &str) -> Result<T, ConfigError> {
        let (root, _) = parse(text, &HashMap::new()).unwrap();
        from_node(&root, "receivers.otlp")
    }

    #[test]
    fn reads_typed_values() {
        let g: Grpc = load(
            "endpoint: localhost:4317\nmax_recv_msg_size_mib: 4\nenabled: true\nratio: 0.5\n\
             tags: [a, b]\nheaders: {x: \"1\"}\nlevel: detailed\n",
        )
        .unwrap();
        assert_eq!(g.endpoint, "localhost:4317");
        assert_eq!(g.max_recv_msg_size_mib, 4);
        assert!(g.enabled);
        assert_eq!(g.ratio, 0.5);
        assert_eq!(g.tags, vec!["a", "b"]);
        assert_eq!(g.headers["x"], "1");
        assert_eq!(g.level, Some(Level::Detailed));
    }

    #[test]
    fn empty_node_means_defaults() {
        let (root, _) = parse("otlp:\n", &HashMap::new()).unwrap();
        let g: Grpc = from_node(root.get("otlp").unwrap(), "receivers.otlp").unwrap();
        assert_eq!(g, Grpc::default());
    }

    #[test]
    fn struct_fields_lists_a_struct_s_keys() {
        assert_eq!(
            struct_fields::<Grpc>(),
            [
                "endpoint",
                "max_recv_msg_size_mib",
                "enabled",
                "ratio",
                "tags",
                "headers",
                "level"
            ]
        );
        assert!(struct_fields::<String>().is_empty());
    }

    #[test]
    fn errors_point_at_the_key_and_suggest() {
        let err = load::<Grpc>("endpoint: x\nendpont: y\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "2:1: receivers.otlp.endpont: unknown field \"endpont\"; did you mean \"endpoint\"?"
        );
        let err = load::<Grpc>("max_recv_msg_size_mib: lots\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "1:24: receivers.otlp.max_recv_msg_size_mib: expected a non-negative integer, found \"lots\""
        );
        let err = load::<Grpc>("level: loud\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "1:8: receivers.otlp.level: unknown value \"loud\"; expected one of: basic, detailed"
        );
        let err = load::<Grpc>("tags: [a, [b]]\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "1:11: receivers.otlp.tags[1]: expected a value, found a list"
        );
    }
}
