//! The OpenTelemetry Collector's `k8sattributes` options, mapped onto what a sidecar
//! reads from the downward API, so Collector configs load unchanged:
//!
//! ```yaml
//! processors:
//!   k8sattributes:
//!     extract:
//!       metadata: [k8s.pod.name, k8s.namespace.name, k8s.deployment.name]
//!       labels:
//!         - tag_name: app.label.$$1
//!           key_regex: (.*)
//!           from: pod
//! ```
//!
//! `metadata` keeps only the listed attributes of those Sidekick adds; `labels` and
//! `annotations` rules pick keys (`key` or a full-match `key_regex`) of the Pod's own
//! labels and annotations and name them `tag_name` (`$1`… from the regex; default
//! `k8s.pod.labels.<key>` / `k8s.pod.annotations.<key>` as in the Collector). The
//! Collector's API-server options (`auth_type`, `filter`, `pod_association`) have no
//! meaning here: the Pod is always Sidekick's own.

use regex::Regex;
use serde::Deserialize;
use sidekick_collector::component::FieldError;

/// What the downward API and the Pod's name give.
pub const AVAILABLE: &[&str] = &[
    "k8s.pod.name",
    "k8s.pod.uid",
    "k8s.namespace.name",
    "k8s.node.name",
    "k8s.pod.ip",
    "k8s.container.name",
    "k8s.pod.start_time",
    "k8s.deployment.name",
    "k8s.replicaset.name",
    "k8s.statefulset.name",
    "k8s.daemonset.name",
    "k8s.job.name",
    "k8s.cronjob.name",
];

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Extract {
    /// Attributes to add, among [`AVAILABLE`]. Absent: all of them.
    pub metadata: Option<Vec<String>>,
    pub labels: Vec<Rule>,
    pub annotations: Vec<Rule>,
    /// The Collector's `otel_annotations` (`resource.opentelemetry.io/*`): not read.
    pub otel_annotations: Option<bool>,
}

/// One `labels`/`annotations` rule.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rule {
    /// Attribute name; `$1`, `$2`… are the regex's groups.
    pub tag_name: Option<String>,
    /// The exact key.
    pub key: Option<String>,
    /// A regex the whole key must match.
    pub key_regex: Option<String>,
    /// `pod` (default). `namespace` and `node` labels are not in the downward API.
    pub from: Option<String>,
}

impl Extract {
    pub fn validate(&self, out: &mut Vec<FieldError>) {
        if let Some(keys) = &self.metadata {
            for (i, key) in keys.iter().enumerate() {
                if !AVAILABLE.contains(&key.as_str()) {
                    out.push(FieldError::warning(
                        format!("extract.metadata[{i}]"),
                        format!(
                            "{key} is not available to a sidecar (no API-server access); it is left out. Sidekick offers: {}",
                            AVAILABLE.join(", ")
                        ),
                    ));
                }
            }
        }
        if self.otel_annotations.is_some() {
            out.push(FieldError::no_effect(
                "extract.otel_annotations",
                "list the annotations to add under extract.annotations",
            ));
        }
        for (list, rules) in [("labels", &self.labels), ("annotations", &self.annotations)] {
            for (i, rule) in rules.iter().enumerate() {
                let at = format!("extract.{list}[{i}]");
                match rule.from.as_deref() {
                    None | Some("pod") => {}
                    Some(from) => out.push(FieldError::warning(
                        format!("{at}.from"),
                        format!("the {from}'s {list} are not in the downward API; this rule adds nothing"),
                    )),
                }
                match (&rule.key, &rule.key_regex) {
                    (None, None) => out.push(FieldError::new(at, "give key or key_regex")),
                    (Some(_), Some(_)) => {
                        out.push(FieldError::new(at, "give key or key_regex, not both"))
                    }
                    (None, Some(re)) => {
                        if let Err(e) = full_match(re) {
                            out.push(FieldError::new(format!("{at}.key_regex"), e.to_string()));
                        }
                    }
                    (Some(_), None) => {}
                }
            }
        }
    }

    /// Whether Sidekick adds `key` (one of [`AVAILABLE`]).
    pub fn wants(&self, key: &str) -> bool {
        match &self.metadata {
            Some(keys) => keys.iter().any(|k| k == key),
            None => true,
        }
    }
}

/// The Collector's API-server options of `k8sattributes`.
pub fn validate_collector_options(c: &super::Config, out: &mut Vec<FieldError>) {
    let why = "Sidekick reads its own Pod from the downward API, with no API-server access";
    for (field, set) in [
        ("auth_type", c.auth_type.is_some()),
        ("filter", c.filter.is_some()),
        ("pod_association", c.pod_association.is_some()),
        ("wait_for_metadata", c.wait_for_metadata.is_some()),
        (
            "wait_for_metadata_timeout",
            c.wait_for_metadata_timeout.is_some(),
        ),
    ] {
        if set {
            out.push(FieldError::no_effect(field, why));
        }
    }
    if c.passthrough {
        out.push(FieldError::new(
            "passthrough",
            "passthrough only tags the client's IP for a gateway to resolve; Sidekick is in the Pod and adds its metadata itself: remove passthrough",
        ));
    }
}

fn full_match(re: &str) -> Result<Regex, regex::Error> {
    Regex::new(&format!("^(?:{re})$"))
}

/// Compiled `labels` or `annotations` rules.
pub struct Rules {
    rules: Vec<(Matcher, Option<String>)>,
    /// `k8s.pod.labels` or `k8s.pod.annotations`: the default name's prefix.
    prefix: &'static str,
}

enum Matcher {
    Key(String),
    Regex(Regex),
}

impl Rules {
    pub fn new(rules: &[Rule], prefix: &'static str) -> Self {
        let rules = rules
            .iter()
            .filter(|r| matches!(r.from.as_deref(), None | Some("pod")))
            .filter_map(|r| {
                let m = match (&r.key, &r.key_regex) {
                    (Some(k), _) => Matcher::Key(k.clone()),
                    (None, Some(re)) => Matcher::Regex(full_match(re).ok()?),
                    (None, None) => return None,
                };
                Some((m, r.tag_name.clone()))
            })
            .collect();
        Rules { rules, prefix }
    }

    /// The attribute names `key` gets (one per matching rule).
    pub fn names(&self, key: &str) -> Vec<String> {
        let mut out = Vec::new();
        for (matcher, tag) in &self.rules {
            let name = match matcher {
                Matcher::Key(k) if k == key => tag.clone(),
                Matcher::Key(_) => continue,
                Matcher::Regex(re) => {
                    let Some(caps) = re.captures(key) else {
                        continue;
                    };
                    tag.as_ref().map(|t| {
                        let mut name = String::new();
                        caps.expand(t, &mut name);
                        name
                    })
                }
            };
            out.push(name.unwrap_or_else(|| format!("{}.{key}", self.prefix)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use serde::de::IgnoredAny;

    use super::*;

    fn rule(tag: Option<&str>, key: Option<&str>, re: Option<&str>) -> Rule {
        Rule {
            tag_name: tag.map(Into::into),
            key: key.map(Into::into),
            key_regex: re.map(Into::into),
            from: None,
        }
    }

    #[test]
    fn rules_name_keys_like_the_collector() {
        let rules = Rules::new(
            &[
                rule(None, Some("app"), None),
                rule(Some("team"), Some("team.io/owner"), None),
                rule(Some("app.label.$1"), None, Some("(.*)")),
                rule(None, None, Some("tier")),
            ],
            "k8s.pod.labels",
        );
        assert_eq!(
            rules.names("app"),
            vec!["k8s.pod.labels.app".to_string(), "app.label.app".into()]
        );
        assert_eq!(
            rules.names("team.io/owner"),
            vec!["team", "app.label.team.io/owner"]
        );
        assert_eq!(
            rules.names("tier"),
            vec!["app.label.tier", "k8s.pod.labels.tier"]
        );
        // key_regex must match the whole key.
        assert_eq!(
            Rules::new(&[rule(None, None, Some("ti"))], "p").names("tier"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn unavailable_metadata_and_api_options_are_warnings_passthrough_an_error() {
        let mut out = Vec::new();
        Extract {
            metadata: Some(vec!["k8s.pod.name".into(), "container.image.name".into()]),
            ..Extract::default()
        }
        .validate(&mut out);
        assert_eq!(out.len(), 1);
        assert!(out[0].warning && out[0].field == "extract.metadata[1]");
        let mut out = Vec::new();
        let config = super::super::Config {
            filter: Some(IgnoredAny),
            passthrough: true,
            ..super::super::Config::default()
        };
        validate_collector_options(&config, &mut out);
        assert!(out[0].warning && out[0].field == "filter");
        assert!(!out[1].warning && out[1].field == "passthrough");
    }
}
