//! The `k8s_attributes` processor: adds the Pod's identity to every span, metric and log,
//! read locally from the downward API (environment variables and volume files) — no API
//! server access, no cluster permissions, which suits the sidecar topology the
//! OpenTelemetry Collector's `k8sattributes` processor does not support.
//!
//! ```yaml
//! processors:
//!   k8s_attributes:
//!     labels: [app.kubernetes.io/name, app.kubernetes.io/version]  # or ["*"]
//!     annotations: []
//!     otel_resource_attributes: true   # also OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME
//! ```
//!
//! Attributes (semantic-convention names): `k8s.pod.name`, `k8s.pod.uid`,
//! `k8s.namespace.name`, `k8s.node.name`, `k8s.pod.ip`, `k8s.container.name`,
//! `k8s.pod.start_time`, `k8s.pod.label.<key>`, `k8s.pod.annotation.<key>`, and the
//! workload (`k8s.deployment.name`, `k8s.replicaset.name`, `k8s.statefulset.name`,
//! `k8s.daemonset.name`, `k8s.job.name`, `k8s.cronjob.name`). By default an attribute
//! the app set itself wins (`policy: insert`); `policy: override`, or listing keys in
//! `overrides`, makes Sidekick's value win. The labels and annotations files are re-read
//! every `reload_interval` (labels can change while the Pod runs). Only resources are
//! edited: encoded batches stay encoded.

pub mod extract;
pub mod workload;

use sidekick_transport::downward;

use std::time::Instant;

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use serde::de::IgnoredAny;
use serde::Deserialize;
use sidekick_collector::component::{
    BuildContext, BuildError, Edit, FieldError, MapProcessor, Processor, ProcessorConfig,
};
use sidekick_collector::config::{Duration, Signal as SignalKind};
use sidekick_collector::payload::{Batch, Signal};
use tracing::{info, warn};

/// Names of the environment variables the Pod spec fills from the downward API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnvNames {
    pub pod_name: String,
    pub namespace: String,
    pub pod_uid: String,
    pub node_name: String,
    pub pod_ip: String,
    pub container_name: String,
    pub pod_start_time: String,
}

impl Default for EnvNames {
    fn default() -> Self {
        EnvNames {
            pod_name: "K8S_POD_NAME".into(),
            namespace: "K8S_NAMESPACE".into(),
            pod_uid: "K8S_POD_UID".into(),
            node_name: "K8S_NODE_NAME".into(),
            pod_ip: "K8S_POD_IP".into(),
            container_name: "K8S_CONTAINER_NAME".into(),
            pod_start_time: "K8S_POD_START_TIME".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Add an attribute only when the resource does not have it (the app wins).
    #[default]
    Insert,
    /// Always set it (Sidekick wins).
    Override,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub env: EnvNames,
    /// Downward-API volume file with the Pod's labels. Default `/etc/podinfo/labels`.
    pub labels_file: String,
    /// Downward-API volume file with the Pod's annotations.
    /// Default `/etc/podinfo/annotations`.
    pub annotations_file: String,
    /// Label keys to add as `k8s.pod.label.<key>`; `["*"]` for all. Default none.
    pub labels: Vec<String>,
    /// Annotation keys to add as `k8s.pod.annotation.<key>`; `["*"]` for all.
    pub annotations: Vec<String>,
    /// Also read `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_SERVICE_NAME`. Default false.
    pub otel_resource_attributes: bool,
    pub policy: Policy,
    /// Attribute keys whose value always overrides the app's, whatever `policy` says.
    pub overrides: Vec<String>,
    /// How often the labels and annotations files are re-read. Default 10s.
    pub reload_interval: Duration,
    /// The Collector's `extract` block (see [`extract`]).
    pub extract: extract::Extract,
    /// Collector options for the API-server watch; no effect here.
    pub auth_type: Option<IgnoredAny>,
    pub filter: Option<IgnoredAny>,
    pub pod_association: Option<IgnoredAny>,
    pub wait_for_metadata: Option<IgnoredAny>,
    pub wait_for_metadata_timeout: Option<IgnoredAny>,
    /// Refused: see [`extract::validate_collector_options`].
    pub passthrough: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            env: EnvNames::default(),
            labels_file: "/etc/podinfo/labels".into(),
            annotations_file: "/etc/podinfo/annotations".into(),
            labels: Vec::new(),
            annotations: Vec::new(),
            otel_resource_attributes: false,
            policy: Policy::Insert,
            overrides: Vec::new(),
            reload_interval: Duration::from_secs(10),
            extract: extract::Extract::default(),
            auth_type: None,
            filter: None,
            pod_association: None,
            wait_for_metadata: None,
            wait_for_metadata_timeout: None,
            passthrough: false,
        }
    }
}

impl ProcessorConfig for Config {
    const SIGNALS: &'static [SignalKind] = &SignalKind::ALL;

    fn validate(&self) -> Vec<FieldError> {
        let mut out = Vec::new();
        if self.reload_interval.is_zero() {
            out.push(FieldError::new("reload_interval", "must be more than 0"));
        }
        self.extract.validate(&mut out);
        extract::validate_collector_options(self, &mut out);
        out
    }

    fn build<S: Signal>(&self, ctx: &BuildContext) -> Result<Box<dyn Processor<S>>, BuildError> {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let mut p = PodAttributes::new(self.clone(), &env);
        // Missing sources are worth one line at start, not one per batch, nor one per
        // pipeline the processor is in (it is built once for each).
        static REPORTED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
        let id = ctx.id.to_string();
        let mut reported = REPORTED.lock().unwrap_or_else(|p| p.into_inner());
        if !reported.contains(&id) {
            reported.push(id);
            let missing = p.missing.join(", ");
            if !missing.is_empty() {
                warn!(processor = %ctx.id, missing = %missing, "some Pod metadata sources are missing; their attributes are left out");
            }
            info!(processor = %ctx.id, attributes = p.attributes.len(), "Pod metadata loaded");
        }
        drop(reported);
        p.missing.clear();
        Ok(Box::new(MapProcessor(LivePod(std::sync::Mutex::new(p)))))
    }
}

/// Percent-decodes a value of `OTEL_RESOURCE_ATTRIBUTES` (W3C Baggage octets).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `k1=v1,k2=v2` pairs from `OTEL_RESOURCE_ATTRIBUTES`; malformed entries are skipped.
pub fn parse_resource_attributes(s: &str) -> Vec<(String, String)> {
    s.split(',')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            let k = percent_decode(k.trim());
            (!k.is_empty()).then(|| (k, percent_decode(v.trim())))
        })
        .collect()
}

fn string_kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.to_string())),
        }),
        ..Default::default()
    }
}

/// The current Pod attributes and where they came from.
pub struct PodAttributes {
    config: Config,
    /// From the environment (fixed for the Pod's life).
    fixed: Vec<(String, String)>,
    pod_name: String,
    labels_text: Option<String>,
    annotations_text: Option<String>,
    pub attributes: Vec<KeyValue>,
    missing: Vec<String>,
    next_reload: Instant,
}

impl PodAttributes {
    pub fn new(config: Config, env: &dyn Fn(&str) -> Option<String>) -> Self {
        let mut fixed = Vec::new();
        let mut missing = Vec::new();
        let e = &config.env;
        for (attr, var) in [
            ("k8s.pod.name", &e.pod_name),
            ("k8s.namespace.name", &e.namespace),
            ("k8s.pod.uid", &e.pod_uid),
            ("k8s.node.name", &e.node_name),
            ("k8s.pod.ip", &e.pod_ip),
            ("k8s.container.name", &e.container_name),
            ("k8s.pod.start_time", &e.pod_start_time),
        ] {
            match env(var) {
                Some(v) => fixed.push((attr.to_string(), v)),
                // A start time and container name are often not provided; not worth a warning.
                None if attr == "k8s.pod.start_time" || attr == "k8s.container.name" => {}
                None => missing.push(format!("${var}")),
            }
        }
        if config.otel_resource_attributes {
            if let Some(v) = env("OTEL_RESOURCE_ATTRIBUTES") {
                for (k, v) in parse_resource_attributes(&v) {
                    if !fixed.iter().any(|(fk, _)| *fk == k) {
                        fixed.push((k, v));
                    }
                }
            }
            if let Some(name) = env("OTEL_SERVICE_NAME") {
                fixed.retain(|(k, _)| k != "service.name");
                fixed.push(("service.name".into(), name));
            }
        }
        let pod_name = fixed
            .iter()
            .find(|(k, _)| k == "k8s.pod.name")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let mut p = PodAttributes {
            next_reload: Instant::now() + config.reload_interval.get(),
            config,
            fixed,
            pod_name,
            labels_text: None,
            annotations_text: None,
            attributes: Vec::new(),
            missing,
        };
        p.reload_files(true);
        p
    }

    fn read(path: &str) -> Option<String> {
        std::fs::read_to_string(path).ok()
    }

    /// Re-reads the volume files; rebuilds the attributes when something changed.
    fn reload_files(&mut self, first: bool) {
        let labels = Self::read(&self.config.labels_file);
        let annotations = Self::read(&self.config.annotations_file);
        if first {
            if labels.is_none() {
                self.missing.push(self.config.labels_file.clone());
            }
            let wants_annotations =
                !self.config.annotations.is_empty() || !self.config.extract.annotations.is_empty();
            if annotations.is_none() && wants_annotations {
                self.missing.push(self.config.annotations_file.clone());
            }
        }
        if !first && labels == self.labels_text && annotations == self.annotations_text {
            return;
        }
        if !first {
            info!("Pod labels or annotations changed; new data carries the new values");
        }
        self.labels_text = labels;
        self.annotations_text = annotations;
        self.rebuild();
    }

    fn rebuild(&mut self) {
        let parse = |text: &Option<String>, file: &str| -> Vec<(String, String)> {
            let Some(text) = text else { return Vec::new() };
            let (pairs, errors) = downward::parse(text);
            if let Some(e) = errors.first() {
                warn!(file, error = %e, skipped_lines = errors.len(), "unreadable lines in a downward-API file");
            }
            pairs
        };
        let labels = parse(&self.labels_text, &self.config.labels_file);
        let annotations = parse(&self.annotations_text, &self.config.annotations_file);
        let mut attrs: Vec<KeyValue> = self.fixed.iter().map(|(k, v)| string_kv(k, v)).collect();
        let wanted = |keys: &[String], k: &str| keys.iter().any(|w| w == "*" || w == k);
        for (k, v) in &labels {
            if wanted(&self.config.labels, k) {
                attrs.push(string_kv(&format!("k8s.pod.label.{k}"), v));
            }
        }
        for (k, v) in &annotations {
            if wanted(&self.config.annotations, k) {
                attrs.push(string_kv(&format!("k8s.pod.annotation.{k}"), v));
            }
        }
        for (k, v) in workload::derive(&self.pod_name, &labels) {
            attrs.push(string_kv(k, &v));
        }
        let x = &self.config.extract;
        attrs.retain(|kv| !extract::AVAILABLE.contains(&kv.key.as_str()) || x.wants(&kv.key));
        for (rules, pairs, prefix) in [
            (&x.labels, &labels, "k8s.pod.labels"),
            (&x.annotations, &annotations, "k8s.pod.annotations"),
        ] {
            if rules.is_empty() {
                continue;
            }
            let rules = extract::Rules::new(rules, prefix);
            for (k, v) in pairs {
                for name in rules.names(k) {
                    if !attrs.iter().any(|a| a.key == name) {
                        attrs.push(string_kv(&name, v));
                    }
                }
            }
        }
        self.attributes = attrs;
    }

    /// Adds the attributes to one resource's, per the policy.
    pub fn apply(&self, resource: &mut Vec<KeyValue>) {
        for kv in &self.attributes {
            let wins =
                self.config.policy == Policy::Override || self.config.overrides.contains(&kv.key);
            match resource.iter_mut().find(|r| r.key == kv.key) {
                Some(existing) if wins => existing.value = kv.value.clone(),
                Some(_) => {}
                None => resource.push(kv.clone()),
            }
        }
    }
}

/// The Pod's attributes as a processor: shared by every receiver's call, so the files
/// are read again (at most once per `reload_interval`) under a lock.
pub struct LivePod(std::sync::Mutex<PodAttributes>);

impl<S: Signal> Edit<S> for LivePod {
    fn edit(&self, batch: &mut Batch<S>) {
        // Each edit leaves the attributes whole, so a lock a panic poisoned is taken over.
        let mut pod = self.0.lock().unwrap_or_else(|e| e.into_inner());
        pod.edit(batch);
    }
}

impl PodAttributes {
    /// Reads the files again if `reload_interval` has passed, then puts the attributes
    /// on every resource of `batch`.
    pub fn edit<S: Signal>(&mut self, batch: &mut Batch<S>) {
        let now = Instant::now();
        if now >= self.next_reload {
            self.next_reload = now + self.config.reload_interval.get();
            self.reload_files(false);
        }
        if self.attributes.is_empty() {
            return;
        }
        batch.resources_mut(|r| self.apply(&mut r.attributes));
    }
}

#[cfg(test)]
mod tests;
