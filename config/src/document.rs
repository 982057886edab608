//! The document's outline: component sections, `service.pipelines`, `service.telemetry`.
//!
//! ```yaml
//! receivers:
//!   otlp:
//!     protocols:
//!       grpc:
//! processors:
//!   batch:
//! exporters:
//!   debug:
//! service:
//!   pipelines:
//!     traces:
//!       receivers: [otlp]
//!       processors: [batch]
//!       exporters: [debug]
//! ```

use serde::Deserialize;

use crate::de::from_node;
use crate::error::{unknown, ConfigError, Errors};
use crate::id::{ComponentId, PipelineId};
use crate::node::{self, EnvLookup, Mark, Node, Value};
use crate::types::Duration;

/// One entry under `receivers`, `processors`, `exporters` or `extensions`. Its subtree is
/// parsed later by the component's own config type.
#[derive(Debug, Clone)]
pub struct ComponentEntry {
    pub id: ComponentId,
    pub node: Node,
    /// e.g. `receivers.otlp/2`.
    pub path: String,
    pub mark: Mark,
}

/// A reference to a component from a pipeline or `service.extensions`.
#[derive(Debug, Clone)]
pub struct Ref {
    pub id: ComponentId,
    pub path: String,
    pub mark: Mark,
}

#[derive(Debug, Clone)]
pub struct PipelineSpec {
    pub id: PipelineId,
    pub path: String,
    pub mark: Mark,
    pub receivers: Vec<Ref>,
    pub processors: Vec<Ref>,
    pub exporters: Vec<Ref>,
}

#[derive(Debug, Clone)]
pub struct Document {
    pub receivers: Vec<ComponentEntry>,
    pub processors: Vec<ComponentEntry>,
    pub exporters: Vec<ComponentEntry>,
    pub extensions: Vec<ComponentEntry>,
    pub service_extensions: Vec<Ref>,
    pub pipelines: Vec<PipelineSpec>,
    pub telemetry: Telemetry,
    /// How long shutdown may take to flush batches and drain exporter queues.
    pub shutdown_timeout: std::time::Duration,
    /// Accepted but worth telling the user about (unset environment variables).
    pub warnings: Vec<ConfigError>,
    /// Problems in the outline. The rest of the document is still read so that checks
    /// further on can report their problems too, all at once.
    pub errors: Errors,
}

/// `service.telemetry`: Sidekick's own logs and metrics.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Telemetry {
    pub logs: LogsTelemetry,
    pub metrics: MetricsTelemetry,
    /// Attributes of Sidekick itself, put as labels on every self-metric (e.g.
    /// `service.name: sidekick` → `service_name="sidekick"`). A key with no value is
    /// left out.
    pub resource: std::collections::BTreeMap<String, Option<String>>,
    /// Collector tracing of its own pipeline; Sidekick does not trace itself.
    pub traces: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogsTelemetry {
    /// `debug`, `info` (default), `warn` or `error`.
    pub level: LogLevel,
    /// `console` (default, human-readable) or `json`.
    pub encoding: LogEncoding,
    /// The Collector's zap development mode (stack traces on warnings); no effect here.
    pub development: Option<bool>,
    /// The Collector's log sampling; Sidekick already logs a repeated line once per
    /// burst with the count held back, so this has no effect.
    pub sampling: Option<serde::de::IgnoredAny>,
    /// Collector logger options with no counterpart here (Sidekick logs to stderr).
    pub disable_caller: Option<bool>,
    pub disable_stacktrace: Option<bool>,
    pub output_paths: Option<Vec<String>>,
    pub error_output_paths: Option<Vec<String>>,
    pub initial_fields: Option<serde::de::IgnoredAny>,
}

impl Default for LogsTelemetry {
    fn default() -> Self {
        LogsTelemetry {
            level: LogLevel::Info,
            encoding: LogEncoding::Console,
            development: None,
            sampling: None,
            disable_caller: None,
            disable_stacktrace: None,
            output_paths: None,
            error_output_paths: None,
            initial_fields: None,
        }
    }
}

impl Telemetry {
    /// Options accepted for Collector configs that do nothing here, as (field, why).
    pub fn no_effect(&self) -> Vec<(&'static str, &'static str)> {
        let l = &self.logs;
        let mut out = Vec::new();
        if l.development.is_some() {
            out.push(("logs.development", "there is no development logging mode"));
        }
        if l.sampling.is_some() {
            out.push((
                "logs.sampling",
                "repeated log lines are already held back and counted, once per burst",
            ));
        }
        if l.disable_caller.is_some() || l.disable_stacktrace.is_some() {
            out.push((
                "logs.disable_caller",
                "log lines carry the module, never a caller or stack trace",
            ));
        }
        if l.output_paths.is_some() || l.error_output_paths.is_some() || l.initial_fields.is_some()
        {
            out.push((
                "logs.output_paths",
                "logs always go to stderr, where Kubernetes collects them",
            ));
        }
        if self.traces.is_some() {
            out.push(("traces", "Sidekick does not trace its own pipeline"));
        }
        out
    }
}

/// `debug`, `info`, `warn` or `error`, in any case (`DEBUG` as in Collector configs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

impl<'de> Deserialize<'de> for LogLevel {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        match text.to_ascii_lowercase().as_str() {
            "debug" => Ok(LogLevel::Debug),
            "info" => Ok(LogLevel::Info),
            "warn" | "warning" => Ok(LogLevel::Warn),
            "error" => Ok(LogLevel::Error),
            _ => Err(serde::de::Error::custom(crate::error::unknown(
                "value",
                &text,
                &["debug", "info", "warn", "error"],
            ))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogEncoding {
    Console,
    Json,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsTelemetry {
    /// `none` turns self-metrics off (health endpoints stay); anything else serves them.
    pub level: Option<MetricsLevel>,
    /// Older Collector form of the listen address, e.g. `0.0.0.0:8888`.
    pub address: Option<String>,
    /// Newer Collector form: `readers: [{pull: {exporter: {prometheus: {host, port}}}}]`.
    pub readers: Vec<Reader>,
    /// Serve the admin port over TLS (Sidekick's own key). Mutual TLS here also applies
    /// to `/healthz` and `/readyz`, which kubelet probes cannot pass: probe the
    /// `health_check` extension instead.
    pub tls: Option<crate::ServerTls>,
    /// Check every request to the admin port with an authenticator extension (Sidekick's
    /// own key); kubelet probes then need `httpHeaders` with the credentials.
    pub auth: Option<crate::AuthRef>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricsLevel {
    None,
    Basic,
    Normal,
    Detailed,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Reader {
    pub pull: Option<PullReader>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PullReader {
    pub exporter: PullExporter,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PullExporter {
    pub prometheus: Option<PrometheusReader>,
}

/// Sidekick always renders its metrics like the Collector's default reader (no unit or
/// type suffixes), so the `without_*` switches are accepted and have no effect.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrometheusReader {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub without_units: Option<bool>,
    pub without_type_suffix: Option<bool>,
    pub without_scope_info: Option<bool>,
}

/// Where Sidekick serves `/metrics`, `/healthz` and `/readyz` unless configured.
pub const DEFAULT_ADMIN_ADDRESS: &str = "0.0.0.0:8888";

impl Telemetry {
    /// The admin listen address: the first pull reader, else `metrics.address`, else 8888.
    pub fn admin_address(&self) -> String {
        let reader = self
            .metrics
            .readers
            .iter()
            .filter_map(|r| r.pull.as_ref()?.exporter.prometheus.as_ref())
            .next();
        if let Some(r) = reader {
            let host = r.host.as_deref().unwrap_or("0.0.0.0");
            let port = r.port.unwrap_or(8888);
            return if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
        }
        self.metrics
            .address
            .clone()
            .unwrap_or_else(|| DEFAULT_ADMIN_ADDRESS.to_string())
    }

    pub fn metrics_enabled(&self) -> bool {
        self.metrics.level != Some(MetricsLevel::None)
    }
}

const TOP_KEYS: &[&str] = &[
    "receivers",
    "processors",
    "exporters",
    "extensions",
    "connectors",
    "service",
];
const SERVICE_KEYS: &[&str] = &["extensions", "pipelines", "telemetry", "shutdown_timeout"];
const PIPELINE_KEYS: &[&str] = &["receivers", "processors", "exporters"];

/// Default for `service.shutdown_timeout`: inside Kubernetes' 30 s grace period.
pub const DEFAULT_SHUTDOWN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

impl Document {
    /// Parses and checks the outline. Fails only when the text is not YAML; problems in
    /// the outline are collected in [`Document::errors`].
    pub fn parse(text: &str, env: &dyn EnvLookup) -> Result<Document, Errors> {
        let (root, warnings) = node::parse(text, env)?;
        let mut errors = Errors::default();
        let mut doc = Document {
            receivers: Vec::new(),
            processors: Vec::new(),
            exporters: Vec::new(),
            extensions: Vec::new(),
            service_extensions: Vec::new(),
            pipelines: Vec::new(),
            telemetry: Telemetry::default(),
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            warnings: warnings.0,
            errors: Errors::default(),
        };
        let Some(entries) = map_entries(&root, "", &mut errors) else {
            return Err(errors);
        };
        let mut saw_service = false;
        for (key, value) in entries {
            let name = key.as_str().unwrap_or("");
            match name {
                "receivers" => doc.receivers = components(value, name, &mut errors),
                "processors" => doc.processors = components(value, name, &mut errors),
                "exporters" => doc.exporters = components(value, name, &mut errors),
                "extensions" => doc.extensions = components(value, name, &mut errors),
                "connectors" => {
                    if !matches!(&value.value, Value::Null)
                        && !matches!(&value.value, Value::Map(m) if m.is_empty())
                    {
                        errors.push(ConfigError::new(
                            "connectors",
                            Some(key.mark),
                            "connectors are not supported; connect pipelines through a shared receiver or exporter instead",
                        ));
                    }
                }
                "service" => {
                    saw_service = true;
                    doc.parse_service(value, &mut errors);
                }
                other => errors.push(ConfigError::new(
                    other,
                    Some(key.mark),
                    unknown("top-level key", other, TOP_KEYS),
                )),
            }
        }
        if !saw_service {
            errors.push(ConfigError::new(
                "service",
                None,
                "missing \"service\" section: add service.pipelines",
            ));
        }
        doc.errors = errors;
        Ok(doc)
    }

    fn parse_service(&mut self, service: &Node, errors: &mut Errors) {
        let Some(entries) = map_entries(service, "service", errors) else {
            return;
        };
        let mut saw_pipelines = false;
        for (key, value) in entries {
            let name = key.as_str().unwrap_or("");
            let path = format!("service.{name}");
            match name {
                "extensions" => self.service_extensions = refs(value, &path, errors),
                "pipelines" => {
                    saw_pipelines = true;
                    self.parse_pipelines(value, errors);
                }
                "telemetry" => match from_node::<Telemetry>(value, &path) {
                    Ok(t) => {
                        for (field, why) in t.no_effect() {
                            let mut at = value;
                            for part in field.split('.') {
                                match at.get(part) {
                                    Some(n) => at = n,
                                    None => break,
                                }
                            }
                            self.warnings.push(ConfigError::new(
                                format!("{path}.{field}"),
                                Some(at.mark),
                                format!("has no effect in Sidekick: {why}"),
                            ));
                        }
                        self.telemetry = t;
                    }
                    Err(e) => errors.push(e),
                },
                "shutdown_timeout" => match from_node::<Duration>(value, &path) {
                    Ok(d) => self.shutdown_timeout = d.get(),
                    Err(e) => errors.push(e),
                },
                other => errors.push(ConfigError::new(
                    path,
                    Some(key.mark),
                    unknown("field", other, SERVICE_KEYS),
                )),
            }
        }
        if !saw_pipelines {
            errors.push(ConfigError::new(
                "service.pipelines",
                Some(service.mark),
                "missing \"pipelines\": at least one pipeline is needed",
            ));
        }
    }

    fn parse_pipelines(&mut self, node: &Node, errors: &mut Errors) {
        let Some(entries) = map_entries(node, "service.pipelines", errors) else {
            return;
        };
        if entries.is_empty() {
            errors.push(ConfigError::new(
                "service.pipelines",
                Some(node.mark),
                "no pipelines: add e.g. traces: {receivers: [otlp], exporters: [debug]}",
            ));
        }
        for (key, value) in entries {
            let name = key.as_str().unwrap_or("");
            let path = format!("service.pipelines.{name}");
            let id = match name.parse::<PipelineId>() {
                Ok(id) => id,
                Err(message) => {
                    errors.push(ConfigError::new(path, Some(key.mark), message));
                    continue;
                }
            };
            let mut spec = PipelineSpec {
                id,
                path: path.clone(),
                mark: key.mark,
                receivers: Vec::new(),
                processors: Vec::new(),
                exporters: Vec::new(),
            };
            for (k, v) in map_entries(value, &path, errors).unwrap_or_default() {
                let field = k.as_str().unwrap_or("");
                let field_path = format!("{path}.{field}");
                match field {
                    "receivers" => spec.receivers = refs(v, &field_path, errors),
                    "processors" => spec.processors = refs(v, &field_path, errors),
                    "exporters" => spec.exporters = refs(v, &field_path, errors),
                    other => errors.push(ConfigError::new(
                        field_path,
                        Some(k.mark),
                        unknown("field", other, PIPELINE_KEYS),
                    )),
                }
            }
            self.pipelines.push(spec);
        }
    }
}

fn map_entries<'a>(node: &'a Node, path: &str, errors: &mut Errors) -> Option<&'a [(Node, Node)]> {
    match &node.value {
        Value::Map(entries) => Some(entries),
        Value::Null => Some(&[]),
        _ => {
            errors.push(ConfigError::new(
                path,
                Some(node.mark),
                format!("expected a map, found {}", node.kind_name()),
            ));
            None
        }
    }
}

fn components(node: &Node, section: &str, errors: &mut Errors) -> Vec<ComponentEntry> {
    let mut out = Vec::new();
    for (key, value) in map_entries(node, section, errors).unwrap_or_default() {
        let text = key.as_str().unwrap_or("");
        let path = format!("{section}.{text}");
        match text.parse::<ComponentId>() {
            Ok(id) => out.push(ComponentEntry {
                id,
                node: value.clone(),
                path,
                mark: key.mark,
            }),
            Err(message) => errors.push(ConfigError::new(path, Some(key.mark), message)),
        }
    }
    out
}

fn refs(node: &Node, path: &str, errors: &mut Errors) -> Vec<Ref> {
    let items = match &node.value {
        Value::Seq(items) => items.as_slice(),
        Value::Null => &[],
        _ => {
            errors.push(ConfigError::new(
                path,
                Some(node.mark),
                format!(
                    "expected a list of component ids, found {}",
                    node.kind_name()
                ),
            ));
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let item_path = format!("{path}[{i}]");
        let parsed = item
            .as_str()
            .ok_or_else(|| format!("expected a component id, found {}", item.kind_name()))
            .and_then(str::parse::<ComponentId>);
        match parsed {
            Ok(id) => out.push(Ref {
                id,
                path: item_path,
                mark: item.mark,
            }),
            Err(message) => errors.push(ConfigError::new(item_path, Some(item.mark), message)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn parse(text: &str) -> Result<Document, Errors> {
        Document::parse(text, &HashMap::new())
    }

    #[test]
    fn reads_the_outline() {
        let doc = parse(
            "receivers:\n  otlp:\n  otlp/2:\nexporters:\n  debug:\nservice:\n  telemetry:\n    logs: {level: debug}\n    metrics:\n      readers:\n        - pull: {exporter: {prometheus: {host: 127.0.0.1, port: 9999}}}\n  pipelines:\n    traces:\n      receivers: [otlp, otlp/2]\n      exporters: [debug]\n",
        )
        .unwrap();
        assert_eq!(doc.receivers.len(), 2);
        assert_eq!(doc.receivers[1].id.to_string(), "otlp/2");
        assert_eq!(
            doc.pipelines[0].receivers[1].path,
            "service.pipelines.traces.receivers[1]"
        );
        assert_eq!(doc.telemetry.admin_address(), "127.0.0.1:9999");
        assert_eq!(doc.telemetry.logs.level, LogLevel::Debug);
    }

    #[test]
    fn reports_every_outline_error() {
        let doc = parse("recievers: {}\nconnectors:\n  forward:\nservice:\n  pipelines:\n    trace:\n      receivers: [otlp]\n    logs:\n      exporter: [debug]\n").unwrap();
        let text = doc.errors.into_result(()).unwrap_err().to_string();
        assert_eq!(
            text,
            "1:1: recievers: unknown top-level key \"recievers\"; did you mean \"receivers\"?\n\
             2:1: connectors: connectors are not supported; connect pipelines through a shared receiver or exporter instead\n\
             6:5: service.pipelines.trace: unknown pipeline signal \"trace\"; did you mean \"traces\"?\n\
             9:7: service.pipelines.logs.exporter: unknown field \"exporter\"; did you mean \"exporters\"?"
        );
    }
}
