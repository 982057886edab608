//! Prometheus relabeling: `relabel_configs` on targets and `metric_relabel_configs` on
//! samples, with the actions `replace`, `keep`, `drop`, `labelmap`, `labeldrop` and
//! `labelkeep`.

use std::borrow::Cow;

use regex::Regex;
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    #[default]
    Replace,
    Keep,
    Drop,
    Labelmap,
    Labeldrop,
    Labelkeep,
}

/// One relabel config as written in YAML.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuleConfig {
    pub source_labels: Vec<String>,
    /// Joins the source label values. Default `;`.
    pub separator: String,
    pub target_label: Option<String>,
    /// Matched against the joined source values, anchored at both ends. Default `(.*)`.
    pub regex: String,
    /// `$1`, `${1}` and `${name}` refer to the regex's groups. Default `$1`. In Sidekick's
    /// config `$` before `{` must be written `$$` (env expansion), e.g. `$${1}`.
    pub replacement: String,
    pub action: Action,
    /// `hashmod` is not supported; accepted only so the error can say so.
    pub modulus: Option<u64>,
}

impl Default for RuleConfig {
    fn default() -> Self {
        RuleConfig {
            source_labels: Vec::new(),
            separator: ";".into(),
            target_label: None,
            regex: "(.*)".into(),
            replacement: "$1".into(),
            action: Action::Replace,
            modulus: None,
        }
    }
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    source_labels: Vec<String>,
    separator: String,
    target_label: String,
    regex: Regex,
    replacement: String,
    action: Action,
}

impl RuleConfig {
    /// Compiles the rule, or says what is wrong (relative field name, message).
    pub fn compile(&self) -> Result<Rule, (&'static str, String)> {
        if self.modulus.is_some() {
            return Err(("modulus", "the hashmod action is not supported".into()));
        }
        let regex = Regex::new(&format!("^(?:{})$", self.regex)).map_err(|e| {
            // The regex crate's message draws a caret under the pattern over several
            // lines; its last line says what is wrong.
            let text = e.to_string();
            let reason = text
                .lines()
                .last()
                .unwrap_or("")
                .trim_start_matches("error: ")
                .to_string();
            (
                "regex",
                format!("invalid regex \"{}\": {reason}", self.regex),
            )
        })?;
        let target_label = self.target_label.clone().unwrap_or_default();
        match self.action {
            Action::Replace if target_label.is_empty() => {
                return Err((
                    "target_label",
                    "the replace action needs target_label".into(),
                ));
            }
            Action::Keep | Action::Drop if self.source_labels.is_empty() => {
                return Err(("source_labels", "keep and drop need source_labels".into()));
            }
            _ => {}
        }
        Ok(Rule {
            source_labels: self.source_labels.clone(),
            separator: self.separator.clone(),
            target_label,
            regex,
            replacement: self.replacement.clone(),
            action: self.action,
        })
    }
}

/// A label set being relabeled. Values may borrow from a scraped page.
pub type LabelSet<'a> = Vec<(Cow<'a, str>, Cow<'a, str>)>;

fn get<'s>(labels: &'s LabelSet<'_>, name: &str) -> &'s str {
    labels
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_ref())
        .unwrap_or("")
}

fn set<'a>(labels: &mut LabelSet<'a>, name: &str, value: String) {
    if value.is_empty() {
        labels.retain(|(k, _)| k != name);
        return;
    }
    match labels.iter_mut().find(|(k, _)| k == name) {
        Some((_, v)) => *v = Cow::Owned(value),
        None => labels.push((Cow::Owned(name.to_string()), Cow::Owned(value))),
    }
}

/// Applies `rules` in order. Returns false when the set is dropped.
pub fn apply(rules: &[Rule], labels: &mut LabelSet<'_>) -> bool {
    for rule in rules {
        match rule.action {
            Action::Replace | Action::Keep | Action::Drop => {
                let joined = rule
                    .source_labels
                    .iter()
                    .map(|n| get(labels, n))
                    .collect::<Vec<_>>()
                    .join(&rule.separator);
                let caps = rule.regex.captures(&joined);
                match rule.action {
                    Action::Keep if caps.is_none() => return false,
                    Action::Drop if caps.is_some() => return false,
                    Action::Replace => {
                        if let Some(caps) = caps {
                            let mut target = String::new();
                            caps.expand(&rule.target_label, &mut target);
                            let mut value = String::new();
                            caps.expand(&rule.replacement, &mut value);
                            if valid_label_name(&target) {
                                set(labels, &target, value);
                            }
                        }
                    }
                    _ => {}
                }
            }
            Action::Labelmap => {
                let mut added = Vec::new();
                for (k, v) in labels.iter() {
                    if let Some(caps) = rule.regex.captures(k) {
                        let mut name = String::new();
                        caps.expand(&rule.replacement, &mut name);
                        added.push((name, v.to_string()));
                    }
                }
                for (k, v) in added {
                    set(labels, &k, v);
                }
            }
            Action::Labeldrop => labels.retain(|(k, _)| !rule.regex.is_match(k)),
            Action::Labelkeep => labels.retain(|(k, _)| rule.regex.is_match(k)),
        }
    }
    true
}

pub fn valid_label_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(yaml_like: RuleConfig) -> Rule {
        yaml_like.compile().unwrap()
    }

    fn labels(pairs: &[(&'static str, &'static str)]) -> LabelSet<'static> {
        pairs
            .iter()
            .map(|(k, v)| (Cow::Borrowed(*k), Cow::Borrowed(*v)))
            .collect()
    }

    fn sorted(l: &LabelSet<'_>) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = l
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn replace_with_groups() {
        let r = rule(RuleConfig {
            source_labels: vec!["__address__".into()],
            regex: "([^:]+):(\\d+)".into(),
            target_label: Some("host".into()),
            replacement: "${1}-port$2".into(),
            ..RuleConfig::default()
        });
        let mut l = labels(&[("__address__", "app:8080")]);
        assert!(apply(&[r], &mut l));
        assert_eq!(get(&l, "host"), "app-port8080");
    }

    #[test]
    fn keep_and_drop() {
        let keep = rule(RuleConfig {
            source_labels: vec!["__name__".into()],
            regex: "http_.*".into(),
            action: Action::Keep,
            ..RuleConfig::default()
        });
        let drop = rule(RuleConfig {
            source_labels: vec!["__name__".into(), "code".into()],
            regex: "http_requests_total;5..".into(),
            action: Action::Drop,
            ..RuleConfig::default()
        });
        let rules = [keep, drop];
        assert!(apply(
            &rules,
            &mut labels(&[("__name__", "http_requests_total"), ("code", "200")])
        ));
        assert!(!apply(
            &rules,
            &mut labels(&[("__name__", "http_requests_total"), ("code", "503")])
        ));
        assert!(!apply(
            &rules,
            &mut labels(&[("__name__", "go_goroutines")])
        ));
    }

    #[test]
    fn labelmap_labeldrop_labelkeep() {
        let map = rule(RuleConfig {
            regex: "__meta_(.+)".into(),
            action: Action::Labelmap,
            ..RuleConfig::default()
        });
        let drop = rule(RuleConfig {
            regex: "__meta_.*".into(),
            action: Action::Labeldrop,
            ..RuleConfig::default()
        });
        let mut l = labels(&[("__meta_zone", "a"), ("job", "x")]);
        assert!(apply(&[map, drop], &mut l));
        assert_eq!(
            sorted(&l),
            vec![("job".into(), "x".into()), ("zone".into(), "a".into())]
        );
        let keep = rule(RuleConfig {
            regex: "job".into(),
            action: Action::Labelkeep,
            ..RuleConfig::default()
        });
        assert!(apply(&[keep], &mut l));
        assert_eq!(sorted(&l), vec![("job".into(), "x".into())]);
    }

    #[test]
    fn regex_is_anchored_and_empty_value_deletes() {
        let r = rule(RuleConfig {
            source_labels: vec!["a".into()],
            regex: "b".into(),
            target_label: Some("c".into()),
            replacement: "".into(),
            ..RuleConfig::default()
        });
        let mut l = labels(&[("a", "abc"), ("c", "keep")]);
        apply(std::slice::from_ref(&r), &mut l);
        assert_eq!(get(&l, "c"), "keep", "regex must match the whole value");
        let mut l = labels(&[("a", "b"), ("c", "gone")]);
        apply(&[r], &mut l);
        assert_eq!(get(&l, "c"), "");
    }

    #[test]
    fn compile_errors_name_the_field() {
        let bad = RuleConfig {
            regex: "(".into(),
            target_label: Some("x".into()),
            ..RuleConfig::default()
        };
        assert_eq!(bad.compile().unwrap_err().0, "regex");
        let no_target = RuleConfig::default();
        assert_eq!(no_target.compile().unwrap_err().0, "target_label");
    }
}
