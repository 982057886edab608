//! The `resourcedetection` processor: resource attributes detected once, at start, from
//! where a sidecar runs, as the Collector's processor of that name does.
//!
//! ```yaml
//! processors:
//!   resourcedetection:
//!     detectors: [env, system, k8snode]
//!     override: false
//! ```
//!
//! Detectors:
//! - `env`: `OTEL_RESOURCE_ATTRIBUTES` (`k1=v1,k2=v2`, percent-encoded), read as the
//!   `k8s_attributes` processor reads it.
//! - `system`: `host.name` (the kernel's host name: the Pod's name in Kubernetes) and
//!   `os.type` (`linux`).
//! - `k8snode`: `k8s.node.name` from the downward API's environment variable
//!   (`K8S_NODE_NAME`, as `k8s_attributes` reads it), without the API server.
//!
//! With `override: true` (the default) a detected attribute replaces one the data
//! already has; with `false` it is only added where missing. The cloud detectors of the
//! Collector (`ec2`, `gcp`, `azure`, ...) ask a cloud's metadata service, which Sidekick
//! does not do: they are refused by name at load, never skipped.
//!
//! Encoded batches stay encoded: only their resources are rewritten.

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use serde::de::IgnoredAny;
use serde::Deserialize;
use sidekick_collector::component::{
    BuildContext, BuildError, Edit, FieldError, MapProcessor, Processor, ProcessorConfig,
};
use sidekick_collector::config::{Duration, Signal as SignalKind};
use sidekick_collector::payload::{Batch, Signal};
use tracing::{info, warn};

use crate::k8s_attributes::{parse_resource_attributes, EnvNames};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Detectors, in order: a later one's attribute wins over an earlier one's.
    pub detectors: Vec<String>,
    /// Replace attributes the data already has. Default true.
    #[serde(rename = "override")]
    pub override_: bool,
    /// The Collector's bound on detection; detection here reads no network service.
    pub timeout: Option<Duration>,
    /// `system` detector options; `hostname_sources` other than `os` need DNS or a cloud.
    pub system: Option<SystemConfig>,
    /// The Collector's per-attribute switches: accepted, see [`Config::validate`].
    pub attributes: Option<IgnoredAny>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SystemConfig {
    pub hostname_sources: Vec<String>,
    pub resource_attributes: Option<IgnoredAny>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            detectors: Vec::new(),
            override_: true,
            timeout: None,
            system: None,
            attributes: None,
        }
    }
}

/// The detectors of the Collector that read a cloud's metadata service or an API.
const ELSEWHERE: &[&str] = &[
    "ec2",
    "ecs",
    "eks",
    "elasticbeanstalk",
    "lambda",
    "gcp",
    "azure",
    "aks",
    "consul",
    "docker",
    "heroku",
    "openshift",
    "dynatrace",
    "akamai",
    "scaleway",
    "hetzner",
    "openstack",
    "oraclecloud",
    "upcloud",
    "vultr",
    "digitalocean",
    "kubeadm",
];

const DETECTORS: &[&str] = &["env", "system", "k8snode"];

impl ProcessorConfig for Config {
    const SIGNALS: &'static [SignalKind] = &SignalKind::ALL;

    fn validate(&self) -> Vec<FieldError> {
        let mut out = Vec::new();
        if self.detectors.is_empty() {
            out.push(FieldError::new(
                "detectors",
                "name at least one detector: env, system or k8snode",
            ));
        }
        for (i, d) in self.detectors.iter().enumerate() {
            let field = format!("detectors[{i}]");
            if ELSEWHERE.contains(&d.as_str()) {
                out.push(FieldError::new(
                    field,
                    format!("the {d} detector asks a metadata service, which Sidekick does not: set what it would find in OTEL_RESOURCE_ATTRIBUTES and use the env detector, or the resource processor"),
                ));
            } else if !DETECTORS.contains(&d.as_str()) {
                out.push(FieldError::new(
                    field,
                    sidekick_collector::config::error::unknown("detector", d, DETECTORS),
                ));
            }
        }
        let sources = self.system.iter().flat_map(|s| &s.hostname_sources);
        for (i, source) in sources.enumerate() {
            if source != "os" {
                out.push(FieldError::new(
                    format!("system.hostname_sources[{i}]"),
                    format!("\"{source}\" is not supported: Sidekick reads the host name the kernel has (os)"),
                ));
            }
        }
        if self.attributes.is_some() {
            out.push(FieldError::no_effect(
                "attributes",
                "every attribute a detector finds is added",
            ));
        }
        out
    }

    fn build<S: Signal>(&self, ctx: &BuildContext) -> Result<Box<dyn Processor<S>>, BuildError> {
        let env = |name: &str| std::env::var(name).ok();
        let attributes = detect(&self.detectors, &env, &host_name);
        if ctx.signals.first() == Some(&S::KIND) {
            info!(processor = %ctx.id, attributes = ?attributes.iter().map(|(k, _)| k).collect::<Vec<_>>(), "resource attributes detected");
        }
        Ok(Box::new(MapProcessor(Detected {
            attributes: attributes
                .into_iter()
                .map(|(key, value)| KeyValue {
                    key,
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(value)),
                    }),
                    ..Default::default()
                })
                .collect(),
            override_: self.override_,
        })))
    }
}

/// The kernel's host name, if it can be read.
fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_string())
}

/// What `detectors` find, in order; a later detector's value for a key wins.
pub fn detect(
    detectors: &[String],
    env: &dyn Fn(&str) -> Option<String>,
    host_name: &dyn Fn() -> Option<String>,
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut put = |k: String, v: String| {
        out.retain(|(key, _)| *key != k);
        out.push((k, v));
    };
    for d in detectors {
        match d.as_str() {
            "env" => {
                for (k, v) in env("OTEL_RESOURCE_ATTRIBUTES")
                    .map(|s| parse_resource_attributes(&s))
                    .unwrap_or_default()
                {
                    put(k, v);
                }
            }
            "system" => {
                match host_name() {
                    Some(name) => put("host.name".into(), name),
                    None => warn!("resourcedetection: the host name cannot be read"),
                }
                put("os.type".into(), std::env::consts::OS.into());
            }
            "k8snode" => {
                let var = EnvNames::default().node_name;
                match env(&var) {
                    Some(node) => put("k8s.node.name".into(), node),
                    None => {
                        warn!(variable = %var, "resourcedetection: k8snode needs the node name from the downward API: set env {var} from spec.nodeName")
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Puts the detected attributes on every resource.
pub struct Detected {
    attributes: Vec<KeyValue>,
    override_: bool,
}

impl<S: Signal> Edit<S> for Detected {
    fn edit(&self, batch: &mut Batch<S>) {
        if self.attributes.is_empty() {
            return;
        }
        batch.resources_mut(|r| {
            for kv in &self.attributes {
                match r.attributes.iter_mut().find(|a| a.key == kv.key) {
                    Some(existing) if self.override_ => *existing = kv.clone(),
                    Some(_) => {}
                    None => r.attributes.push(kv.clone()),
                }
            }
        });
    }
}

#[cfg(test)]
mod tests;
