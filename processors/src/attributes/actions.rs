//! Attribute actions as the OpenTelemetry Collector's `attributes` and `resource`
//! processors have them: `insert`, `update`, `upsert`, `delete`, `hash`, `extract`,
//! `convert`.

use std::fmt;

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use regex::Regex;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use sidekick_collector::component::FieldError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionKind {
    Insert,
    Update,
    Upsert,
    Delete,
    Hash,
    Extract,
    Convert,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConvertedType {
    Int,
    Double,
    String,
}

/// A literal attribute value from the config: string, integer, float or bool.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigValue(pub any_value::Value);

impl<'de> Deserialize<'de> for ConfigValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ConfigValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or bool")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<ConfigValue, E> {
                Ok(ConfigValue(any_value::Value::BoolValue(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ConfigValue, E> {
                Ok(ConfigValue(any_value::Value::IntValue(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ConfigValue, E> {
                Ok(ConfigValue(any_value::Value::IntValue(v as i64)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ConfigValue, E> {
                Ok(ConfigValue(any_value::Value::DoubleValue(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ConfigValue, E> {
                Ok(ConfigValue(any_value::Value::StringValue(v.to_string())))
            }
        }
        d.deserialize_any(V)
    }
}

/// One action as written in YAML.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionConfig {
    pub key: Option<String>,
    pub value: Option<ConfigValue>,
    pub from_attribute: Option<String>,
    /// For `extract`: a regex whose named groups become attributes. For `delete` and
    /// `hash`: keys matching it.
    pub pattern: Option<String>,
    pub action: ActionKind,
    /// For `convert`.
    pub converted_type: Option<ConvertedType>,
}

#[derive(Debug, Clone)]
pub struct Action {
    kind: ActionKind,
    key: Option<String>,
    value: Option<any_value::Value>,
    from_attribute: Option<String>,
    pattern: Option<Regex>,
    converted_type: Option<ConvertedType>,
}

impl ActionConfig {
    /// Checks and compiles the action; `at` prefixes field names in errors.
    pub fn compile(&self, at: &str) -> Result<Action, FieldError> {
        let err = |field: &str, message: &str| FieldError::new(format!("{at}.{field}"), message);
        let pattern = match &self.pattern {
            Some(p) => Some(Regex::new(p).map_err(|e| {
                err(
                    "pattern",
                    &format!(
                        "invalid regex: {}",
                        e.to_string().lines().last().unwrap_or("")
                    ),
                )
            })?),
            None => None,
        };
        let needs_key =
            !(matches!(self.kind(), ActionKind::Delete | ActionKind::Hash) && pattern.is_some());
        if needs_key && self.key.as_deref().unwrap_or("").is_empty() {
            return Err(err("key", "key is required"));
        }
        match self.action {
            ActionKind::Insert | ActionKind::Update | ActionKind::Upsert
                if self.value.is_some() == self.from_attribute.is_some() =>
            {
                return Err(err("value", "give exactly one of value and from_attribute"));
            }
            ActionKind::Extract => match &pattern {
                None => return Err(err("pattern", "extract needs a pattern with named groups")),
                Some(p) if p.capture_names().flatten().next().is_none() => {
                    return Err(err(
                        "pattern",
                        "the pattern has no named groups, e.g. (?P<user>[^/]+)",
                    ));
                }
                _ => {}
            },
            ActionKind::Convert if self.converted_type.is_none() => {
                return Err(err(
                    "converted_type",
                    "convert needs converted_type: int, double or string",
                ));
            }
            _ => {}
        }
        Ok(Action {
            kind: self.action,
            key: self.key.clone(),
            value: self.value.clone().map(|v| v.0),
            from_attribute: self.from_attribute.clone(),
            pattern,
            converted_type: self.converted_type,
        })
    }

    fn kind(&self) -> ActionKind {
        self.action
    }
}

/// Compiles a list of actions, collecting every problem.
pub fn compile_all(configs: &[ActionConfig], field: &str) -> (Vec<Action>, Vec<FieldError>) {
    let mut actions = Vec::new();
    let mut errors = Vec::new();
    for (i, c) in configs.iter().enumerate() {
        match c.compile(&format!("{field}[{i}]")) {
            Ok(a) => actions.push(a),
            Err(e) => errors.push(e),
        }
    }
    (actions, errors)
}

fn position(attrs: &[KeyValue], key: &str) -> Option<usize> {
    attrs.iter().position(|kv| kv.key == key)
}

fn as_string(v: &Option<AnyValue>) -> Option<String> {
    Some(match v.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(s) => s.clone(),
        any_value::Value::BoolValue(b) => b.to_string(),
        any_value::Value::IntValue(i) => i.to_string(),
        any_value::Value::DoubleValue(d) => d.to_string(),
        any_value::Value::BytesValue(b) => b.iter().map(|x| format!("{x:02x}")).collect(),
        _ => return None,
    })
}

fn string_value(s: String) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::StringValue(s)),
    })
}

fn sha256_hex(s: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, s.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn set(attrs: &mut Vec<KeyValue>, key: &str, value: Option<AnyValue>) {
    match position(attrs, key) {
        Some(i) => attrs[i].value = value,
        None => attrs.push(KeyValue {
            key: key.to_string(),
            value,
            ..Default::default()
        }),
    }
}

impl Action {
    /// Applies the action to one attribute list.
    pub fn apply(&self, attrs: &mut Vec<KeyValue>) {
        let key = self.key.as_deref().unwrap_or("");
        let new_value = || -> Option<Option<AnyValue>> {
            match (&self.value, &self.from_attribute) {
                (Some(v), _) => Some(Some(AnyValue {
                    value: Some(v.clone()),
                })),
                (None, Some(from)) => position(attrs, from).map(|i| attrs[i].value.clone()),
                (None, None) => None,
            }
        };
        match self.kind {
            ActionKind::Insert => {
                if position(attrs, key).is_none() {
                    if let Some(v) = new_value() {
                        set(attrs, key, v);
                    }
                }
            }
            ActionKind::Update => {
                if position(attrs, key).is_some() {
                    if let Some(v) = new_value() {
                        set(attrs, key, v);
                    }
                }
            }
            ActionKind::Upsert => {
                if let Some(v) = new_value() {
                    set(attrs, key, v);
                }
            }
            ActionKind::Delete => match &self.pattern {
                Some(p) if key.is_empty() => attrs.retain(|kv| !p.is_match(&kv.key)),
                _ => attrs.retain(|kv| kv.key != key),
            },
            ActionKind::Hash => {
                for kv in attrs.iter_mut() {
                    let hit = match &self.pattern {
                        Some(p) if key.is_empty() => p.is_match(&kv.key),
                        _ => kv.key == key,
                    };
                    if hit {
                        if let Some(s) = as_string(&kv.value) {
                            kv.value = string_value(sha256_hex(&s));
                        }
                    }
                }
            }
            ActionKind::Extract => {
                let Some(pattern) = &self.pattern else { return };
                let Some(text) = position(attrs, key).and_then(|i| as_string(&attrs[i].value))
                else {
                    return;
                };
                if let Some(caps) = pattern.captures(&text) {
                    for name in pattern.capture_names().flatten() {
                        if let Some(m) = caps.name(name) {
                            set(attrs, name, string_value(m.as_str().to_string()));
                        }
                    }
                }
            }
            ActionKind::Convert => {
                let Some(i) = position(attrs, key) else {
                    return;
                };
                let Some(text) = as_string(&attrs[i].value) else {
                    return;
                };
                let converted = match self.converted_type {
                    Some(ConvertedType::Int) => text
                        .parse::<i64>()
                        .ok()
                        .or_else(|| text.parse::<f64>().ok().map(|f| f as i64))
                        .or_else(|| text.parse::<bool>().ok().map(i64::from))
                        .map(any_value::Value::IntValue),
                    Some(ConvertedType::Double) => {
                        text.parse::<f64>().ok().map(any_value::Value::DoubleValue)
                    }
                    Some(ConvertedType::String) => Some(any_value::Value::StringValue(text)),
                    None => None,
                };
                // A value that does not convert is left as it was, as in the Collector.
                if let Some(v) = converted {
                    attrs[i].value = Some(AnyValue { value: Some(v) });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: string_value(v.into()),
            ..Default::default()
        }
    }

    fn get(attrs: &[KeyValue], k: &str) -> Option<any_value::Value> {
        attrs
            .iter()
            .find(|kv| kv.key == k)?
            .value
            .as_ref()?
            .value
            .clone()
    }

    fn action(kind: ActionKind, key: &str) -> ActionConfig {
        ActionConfig {
            key: Some(key.into()),
            value: None,
            from_attribute: None,
            pattern: None,
            action: kind,
            converted_type: None,
        }
    }

    fn s(v: &str) -> Option<any_value::Value> {
        Some(any_value::Value::StringValue(v.into()))
    }

    #[test]
    fn insert_update_upsert_delete() {
        let mut attrs = vec![kv("env", "dev"), kv("user", "ann")];
        let value = |v: &str| Some(ConfigValue(any_value::Value::StringValue(v.into())));
        let apply =
            |c: ActionConfig, attrs: &mut Vec<KeyValue>| c.compile("x").unwrap().apply(attrs);
        apply(
            ActionConfig {
                value: value("prod"),
                ..action(ActionKind::Insert, "env")
            },
            &mut attrs,
        );
        assert_eq!(get(&attrs, "env"), s("dev"), "insert never overwrites");
        apply(
            ActionConfig {
                value: value("eu"),
                ..action(ActionKind::Update, "region")
            },
            &mut attrs,
        );
        assert_eq!(get(&attrs, "region"), None, "update never adds");
        apply(
            ActionConfig {
                value: value("prod"),
                ..action(ActionKind::Upsert, "env")
            },
            &mut attrs,
        );
        assert_eq!(get(&attrs, "env"), s("prod"));
        apply(
            ActionConfig {
                from_attribute: Some("user".into()),
                ..action(ActionKind::Insert, "owner")
            },
            &mut attrs,
        );
        assert_eq!(get(&attrs, "owner"), s("ann"));
        apply(action(ActionKind::Delete, "user"), &mut attrs);
        assert_eq!(get(&attrs, "user"), None);
    }

    #[test]
    fn hash_extract_convert() {
        let mut attrs = vec![
            kv("email", "a@b.c"),
            kv("path", "/users/42/orders"),
            kv("n", "17"),
        ];
        action(ActionKind::Hash, "email")
            .compile("x")
            .unwrap()
            .apply(&mut attrs);
        assert_eq!(get(&attrs, "email"), s(&sha256_hex("a@b.c")));
        ActionConfig {
            pattern: Some("^/users/(?P<user_id>\\d+)/(?P<resource>\\w+)$".into()),
            ..action(ActionKind::Extract, "path")
        }
        .compile("x")
        .unwrap()
        .apply(&mut attrs);
        assert_eq!(get(&attrs, "user_id"), s("42"));
        assert_eq!(get(&attrs, "resource"), s("orders"));
        ActionConfig {
            converted_type: Some(ConvertedType::Int),
            ..action(ActionKind::Convert, "n")
        }
        .compile("x")
        .unwrap()
        .apply(&mut attrs);
        assert_eq!(get(&attrs, "n"), Some(any_value::Value::IntValue(17)));
    }

    #[test]
    fn config_errors() {
        let e = action(ActionKind::Insert, "k")
            .compile("actions[0]")
            .unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.message.as_str()),
            (
                "actions[0].value",
                "give exactly one of value and from_attribute"
            )
        );
        let e = ActionConfig {
            pattern: Some("(\\d+)".into()),
            ..action(ActionKind::Extract, "k")
        }
        .compile("a")
        .unwrap_err();
        assert!(e.message.contains("no named groups"));
        let e = action(ActionKind::Convert, "k").compile("a").unwrap_err();
        assert_eq!(e.field, "a.converted_type");
    }
}
