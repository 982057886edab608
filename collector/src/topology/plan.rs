//! The first phase: a config document checked against the registry, every problem
//! reported at once.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sidekick_config::document::{ComponentEntry, Ref};
use sidekick_config::error::unknown;
use sidekick_config::Node;
use sidekick_config::{
    ComponentId, ConfigError, Document, Errors, PipelineId, Signal as SignalKind,
    Telemetry as TelemetryConfig,
};

use crate::component::{
    Kind, Listen, LoadedExporter, LoadedExtension, LoadedProcessor, LoadedReceiver, Registry,
};
use crate::exporter::ExportSettings;

pub(super) struct PlannedReceiver {
    pub(super) id: ComponentId,
    pub(super) loaded: Box<dyn LoadedReceiver>,
    pub(super) signals: BTreeSet<SignalKind>,
    /// Its config as written: a reload keeps a running receiver whose config is the same.
    pub(super) node: Node,
}

pub(super) struct PlannedExporter {
    pub(super) id: ComponentId,
    pub(super) loaded: Box<dyn LoadedExporter>,
    pub(super) settings: ExportSettings,
    pub(super) signals: BTreeSet<SignalKind>,
    /// Its config as written: a reload keeps a running exporter whose config is the same.
    pub(super) node: Node,
}

pub(super) struct PlannedPipeline {
    pub(super) id: PipelineId,
    pub(super) receivers: Vec<usize>,
    pub(super) processors: Vec<(ComponentId, Arc<dyn LoadedProcessor>)>,
    pub(super) exporters: Vec<usize>,
}

pub(super) struct PlannedExtension {
    pub(super) id: ComponentId,
    pub(super) loaded: Box<dyn LoadedExtension>,
}

/// A checked config, ready to build.
pub struct Plan {
    pub(super) receivers: Vec<PlannedReceiver>,
    pub(super) exporters: Vec<PlannedExporter>,
    pub(super) pipelines: Vec<PlannedPipeline>,
    pub(super) extensions: Vec<PlannedExtension>,
    pub telemetry: TelemetryConfig,
    pub shutdown_timeout: Duration,
    /// The `extensions` section as written: receivers use what it builds (authenticators),
    /// so a reload keeps running receivers only while it is the same.
    pub(super) extension_nodes: Vec<(ComponentId, Node)>,
    /// Accepted but worth logging (unset environment variables, unused components).
    pub warnings: Vec<String>,
}

/// Loads every entry of one section with its kind's factory.
fn load_section<T>(
    section: &str,
    entries: &[ComponentEntry],
    kinds: &BTreeMap<&'static str, Kind<T>>,
    errors: &mut Errors,
    warnings: &mut Vec<String>,
) -> BTreeMap<ComponentId, (T, &'static [SignalKind], usize)> {
    let mut out = BTreeMap::new();
    let valid: Vec<&str> = kinds.keys().copied().collect();
    for (index, entry) in entries.iter().enumerate() {
        let Some(kind) = kinds.get(entry.id.kind()) else {
            let what = format!("{} kind", section.trim_end_matches('s'));
            errors.push(ConfigError::new(
                entry.path.clone(),
                Some(entry.mark),
                unknown(&what, entry.id.kind(), &valid),
            ));
            continue;
        };
        match kind.load(&entry.node, &entry.path) {
            Ok(loaded) => {
                warnings.extend(loaded.warnings.iter().map(ToString::to_string));
                out.insert(entry.id.clone(), (loaded.config, kind.signals, index));
            }
            Err(problems) => problems.into_iter().for_each(|e| errors.push(e)),
        }
    }
    out
}

fn signals_of<T>(
    m: &BTreeMap<ComponentId, (T, &'static [SignalKind], usize)>,
) -> BTreeMap<ComponentId, &'static [SignalKind]> {
    m.iter().map(|(id, (_, s, _))| (id.clone(), *s)).collect()
}

/// Checks that each reference names a defined component that supports `signal`.
fn check_refs(
    refs: &[Ref],
    section: &str,
    defined: &BTreeMap<ComponentId, &'static [SignalKind]>,
    entries: &[ComponentEntry],
    signal: Option<SignalKind>,
    errors: &mut Errors,
) -> Vec<ComponentId> {
    let mut seen = BTreeSet::new();
    let mut ok = Vec::new();
    let noun = section.trim_end_matches('s');
    for r in refs {
        if !seen.insert(r.id.clone()) {
            errors.push(ConfigError::new(
                r.path.clone(),
                Some(r.mark),
                format!("{noun} \"{}\" is listed twice", r.id),
            ));
            continue;
        }
        let declared = entries.iter().any(|e| e.id == r.id);
        match defined.get(&r.id) {
            None if declared => {} // its own errors were reported where it is defined
            None => {
                let names: Vec<String> = entries.iter().map(|e| e.id.to_string()).collect();
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                let hint =
                    match sidekick_config::error::nearest(&r.id.to_string(), names.iter().copied())
                    {
                        Some(n) => format!("; did you mean \"{n}\"?"),
                        None => format!("; define it under {section}"),
                    };
                errors.push(ConfigError::new(
                    r.path.clone(),
                    Some(r.mark),
                    format!("{noun} \"{}\" is not defined{hint}", r.id),
                ));
            }
            Some(signals) => match signal {
                Some(s) if !signals.contains(&s) => errors.push(ConfigError::new(
                    r.path.clone(),
                    Some(r.mark),
                    format!(
                        "{noun} \"{}\" does not support {s}; it supports {}",
                        r.id,
                        signals
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )),
                _ => ok.push(r.id.clone()),
            },
        }
    }
    ok
}

impl Plan {
    /// Whether this config holds a storage directory (a `file_storage` extension, a
    /// persistent queue, a receiver keeping its state on disk): one process at a time
    /// may hold it.
    pub fn uses_storage(&self) -> bool {
        self.extensions
            .iter()
            .any(|x| x.id.kind() == "file_storage")
            || self.exporters.iter().any(|e| e.settings.persist.is_some())
            || self
                .receivers
                .iter()
                .any(|r| !r.loaded.storage_uses().is_empty())
    }

    pub fn new(doc: &Document, registry: &Registry) -> Result<Plan, Errors> {
        let mut errors = doc.errors.clone();
        let mut warnings: Vec<String> = doc.warnings.iter().map(ToString::to_string).collect();
        let mut receivers = load_section(
            "receivers",
            &doc.receivers,
            &registry.receivers,
            &mut errors,
            &mut warnings,
        );
        let processors = load_section(
            "processors",
            &doc.processors,
            &registry.processors,
            &mut errors,
            &mut warnings,
        );
        let mut exporters = load_section(
            "exporters",
            &doc.exporters,
            &registry.exporters,
            &mut errors,
            &mut warnings,
        );
        let mut extensions = load_section(
            "extensions",
            &doc.extensions,
            &registry.extensions,
            &mut errors,
            &mut warnings,
        );

        let receiver_signals = signals_of(&receivers);
        let processor_signals = signals_of(&processors);
        let exporter_signals = signals_of(&exporters);
        let extension_signals = signals_of(&extensions);

        let mut plan = Plan {
            receivers: Vec::new(),
            exporters: Vec::new(),
            pipelines: Vec::new(),
            extensions: Vec::new(),
            telemetry: doc.telemetry.clone(),
            shutdown_timeout: doc.shutdown_timeout,
            extension_nodes: doc
                .extensions
                .iter()
                .map(|e| (e.id.clone(), e.node.clone()))
                .collect(),
            warnings,
        };
        let mut receiver_index: BTreeMap<ComponentId, usize> = BTreeMap::new();
        let mut exporter_index: BTreeMap<ComponentId, usize> = BTreeMap::new();

        for spec in &doc.pipelines {
            let signal = spec.id.signal;
            if spec.receivers.is_empty() {
                errors.push(ConfigError::new(
                    spec.path.clone(),
                    Some(spec.mark),
                    "pipeline has no receivers: add receivers: [...]",
                ));
            }
            if spec.exporters.is_empty() {
                errors.push(ConfigError::new(
                    spec.path.clone(),
                    Some(spec.mark),
                    "pipeline has no exporters: add exporters: [...]",
                ));
            }
            let r = check_refs(
                &spec.receivers,
                "receivers",
                &receiver_signals,
                &doc.receivers,
                Some(signal),
                &mut errors,
            );
            let p = check_refs(
                &spec.processors,
                "processors",
                &processor_signals,
                &doc.processors,
                Some(signal),
                &mut errors,
            );
            let e = check_refs(
                &spec.exporters,
                "exporters",
                &exporter_signals,
                &doc.exporters,
                Some(signal),
                &mut errors,
            );
            let mut pipeline = PlannedPipeline {
                id: spec.id.clone(),
                receivers: Vec::new(),
                processors: Vec::new(),
                exporters: Vec::new(),
            };
            for id in r {
                let i = *receiver_index.entry(id.clone()).or_insert_with(|| {
                    let (loaded, _, _) = receivers.remove(&id).expect("checked above");
                    let node = doc
                        .receivers
                        .iter()
                        .find(|e| e.id == id)
                        .map(|e| e.node.clone())
                        .expect("loaded from this entry");
                    plan.receivers.push(PlannedReceiver {
                        id: id.clone(),
                        loaded,
                        signals: BTreeSet::new(),
                        node,
                    });
                    plan.receivers.len() - 1
                });
                plan.receivers[i].signals.insert(signal);
                pipeline.receivers.push(i);
            }
            for id in p {
                let (loaded, _, _) = &processors[&id];
                pipeline.processors.push((id.clone(), Arc::clone(loaded)));
            }
            for id in e {
                let i = *exporter_index.entry(id.clone()).or_insert_with(|| {
                    let (loaded, _, _) = exporters.remove(&id).expect("checked above");
                    let settings = loaded.export_settings();
                    let node = doc
                        .exporters
                        .iter()
                        .find(|e| e.id == id)
                        .map(|e| e.node.clone())
                        .expect("loaded from this entry");
                    plan.exporters.push(PlannedExporter {
                        id: id.clone(),
                        loaded,
                        settings,
                        signals: BTreeSet::new(),
                        node,
                    });
                    plan.exporters.len() - 1
                });
                plan.exporters[i].signals.insert(signal);
                pipeline.exporters.push(i);
            }
            plan.pipelines.push(pipeline);
        }
        for id in check_refs(
            &doc.service_extensions,
            "extensions",
            &extension_signals,
            &doc.extensions,
            None,
            &mut errors,
        ) {
            let (loaded, _, _) = extensions.remove(&id).expect("checked above");
            plan.extensions.push(PlannedExtension { id, loaded });
        }
        for (section, unused) in [
            ("receivers", receivers.keys().collect::<Vec<_>>()),
            ("exporters", exporters.keys().collect()),
            ("extensions", extensions.keys().collect()),
        ] {
            for id in unused {
                plan.warnings.push(format!(
                    "{section}.{id} is defined but not used by any pipeline"
                ));
            }
        }
        plan.check_addresses(doc, &mut errors);
        plan.check_auth(doc, &mut errors);
        plan.check_storage(doc, &mut errors);
        let admin = &plan.telemetry.metrics;
        let admin_checks = crate::auth::check_listener(
            "service.telemetry.metrics.",
            &plan.telemetry.admin_address(),
            admin.tls.as_ref(),
            admin.auth.as_ref(),
        );
        for p in admin_checks {
            if p.warning {
                plan.warnings.push(format!("{}: {}", p.field, p.message));
            } else {
                errors.push(ConfigError::new(p.field, None, p.message));
            }
        }
        sidekick_config::node::name_unset_variables(&mut errors, &doc.warnings);
        errors.into_result(plan)
    }

    /// Two listeners on one address (or one on a wildcard and one on the same port) would
    /// fail at bind time with a less helpful message; catch them here with both paths.
    fn check_addresses(&self, doc: &Document, errors: &mut Errors) {
        let mut listens: Vec<(String, Option<sidekick_config::Mark>, String)> = Vec::new();
        let mut add = |section: &[ComponentEntry], id: &ComponentId, list: Vec<Listen>| {
            if let Some(entry) = section.iter().find(|e| &e.id == id) {
                for l in list {
                    let node = crate::component::locate(&entry.node, &entry.path, &l.field);
                    listens.push((node.0, Some(node.1.mark), l.address));
                }
            }
        };
        for r in &self.receivers {
            add(&doc.receivers, &r.id, r.loaded.listen_addresses());
        }
        for x in &self.extensions {
            add(&doc.extensions, &x.id, x.loaded.listen_addresses());
        }
        for e in &self.exporters {
            add(&doc.exporters, &e.id, e.loaded.listen_addresses());
        }
        listens.push((
            "service.telemetry.metrics".into(),
            None,
            self.telemetry.admin_address(),
        ));
        let mut seen: Vec<(SocketAddr, &str)> = Vec::new();
        for (path, mark, address) in &listens {
            let addr = match sidekick_transport::server::resolve(address) {
                Ok(a) => a,
                Err(message) => {
                    errors.push(ConfigError::new(path.clone(), *mark, message));
                    continue;
                }
            };
            if addr.port() == 0 {
                continue;
            }
            let clash = seen.iter().find(|(other, _)| {
                other.port() == addr.port()
                    && (other.ip() == addr.ip()
                        || other.ip().is_unspecified()
                        || addr.ip().is_unspecified())
            });
            match clash {
                Some((other, other_path)) => errors.push(ConfigError::new(
                    path.clone(),
                    *mark,
                    format!("address {addr} is already used by {other_path} ({other}); give each listener its own port"),
                )),
                None => seen.push((addr, path)),
            }
        }
    }

    /// Every `storage:` names a storage extension of `service.extensions`, and the
    /// exporters of one pipeline that ask for a persistent queue name the same one.
    fn check_storage(&self, doc: &Document, errors: &mut Errors) {
        let enabled: BTreeMap<String, bool> = self
            .extensions
            .iter()
            .map(|x| (x.id.to_string(), x.loaded.provides_storage()))
            .collect();
        let mut check = |section: &[ComponentEntry], id: &ComponentId, field: &str, name: &str| {
            let message = match enabled.get(name) {
                Some(true) => return,
                Some(false) => format!("\"{name}\" is not a storage extension: name a file_storage extension"),
                None if doc.extensions.iter().any(|e| e.id.to_string() == name) => format!(
                    "storage \"{name}\" is defined but not enabled: add it to service.extensions"
                ),
                None => format!(
                    "storage \"{name}\" is not defined: define a file_storage extension (extensions: {{{name}: {{directory: /var/lib/sidekick}}}}) and list it in service.extensions"
                ),
            };
            match section.iter().find(|e| &e.id == id) {
                Some(entry) => {
                    let (path, node) = crate::component::locate(&entry.node, &entry.path, field);
                    errors.push(ConfigError::new(path, Some(node.mark), message));
                }
                None => errors.push(ConfigError::new(field, None, message)),
            }
        };
        for r in &self.receivers {
            for (field, name) in r.loaded.storage_uses() {
                check(&doc.receivers, &r.id, &field, &name);
            }
        }
        for e in &self.exporters {
            if let Some(p) = &e.settings.persist {
                check(&doc.exporters, &e.id, "sending_queue.storage", &p.storage);
            }
        }
        for p in &self.pipelines {
            let named: BTreeSet<&str> = p
                .exporters
                .iter()
                .filter_map(|&i| self.exporters[i].settings.persist.as_ref())
                .map(|x| x.storage.as_str())
                .collect();
            if named.len() > 1 {
                let spec = doc.pipelines.iter().find(|s| s.id == p.id);
                let names: Vec<&str> = named.into_iter().collect();
                errors.push(ConfigError::new(
                    spec.map_or_else(|| format!("service.pipelines.{}", p.id), |s| s.path.clone()),
                    spec.map(|s| s.mark),
                    format!(
                        "the exporters of this pipeline name different storages ({}) in sending_queue.storage: a pipeline keeps one persistent queue; name the same file_storage in each",
                        names.join(", ")
                    ),
                ));
            }
        }
    }

    /// Every `auth:` names an authenticator extension of `service.extensions` that can
    /// do what it is used for there.
    fn check_auth(&self, doc: &Document, errors: &mut Errors) {
        use crate::auth::{AuthSide, AuthUse};
        let enabled: BTreeMap<String, _> = self
            .extensions
            .iter()
            .map(|x| (x.id.to_string(), x.loaded.auth_abilities()))
            .collect();
        let mut check = |section: Option<&[ComponentEntry]>,
                         id: &ComponentId,
                         uses: Vec<AuthUse>| {
            let entry = section.and_then(|s| s.iter().find(|e| &e.id == id));
            for u in uses {
                let name = &u.authenticator;
                let message = match enabled.get(name) {
                    None if doc.extensions.iter().any(|e| e.id.to_string() == *name) => format!(
                        "authenticator \"{name}\" is defined but not enabled: add it to service.extensions"
                    ),
                    None => format!(
                        "authenticator \"{name}\" is not defined: define it under extensions (bearertokenauth or basicauth) and list it in service.extensions"
                    ),
                    Some(None) => format!(
                        "\"{name}\" is not an authenticator: name a bearertokenauth or basicauth extension"
                    ),
                    Some(Some(a)) => match u.side {
                        AuthSide::Listener if !a.listener => format!(
                            "\"{name}\" has no htpasswd: a listener needs it to check requests"
                        ),
                        AuthSide::Exporter if !a.exporter => format!(
                            "\"{name}\" has no client_auth: an exporter needs it to send credentials"
                        ),
                        _ => continue,
                    },
                };
                let field = format!("{}.authenticator", u.field);
                match entry {
                    Some(entry) => {
                        let (path, node) =
                            crate::component::locate(&entry.node, &entry.path, &field);
                        errors.push(ConfigError::new(path, Some(node.mark), message));
                    }
                    None => errors.push(ConfigError::new(field, None, message)),
                }
            }
        };
        for r in &self.receivers {
            check(Some(&doc.receivers), &r.id, r.loaded.auth_uses());
        }
        for e in &self.exporters {
            check(Some(&doc.exporters), &e.id, e.loaded.auth_uses());
        }
        if let Some(a) = &self.telemetry.metrics.auth {
            let admin: ComponentId = "admin".parse().expect("a valid id");
            let field = "service.telemetry.metrics.auth";
            check(
                None,
                &admin,
                vec![AuthUse::new(field, a, AuthSide::Listener)],
            );
        }
    }
}
