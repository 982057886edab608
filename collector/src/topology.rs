//! From a config document to running tasks, in three phases:
//!
//! 1. [`Plan::new`] checks the document against the registry and reports every problem
//!    at once: unknown kinds, bad component settings, undefined references, pipelines
//!    without receivers or exporters, unsupported signals, two listeners on one address.
//! 2. [`Plan::build`] builds every used component (binding sockets) and wires the
//!    bounded queues: receiver → pipelines (fan-out) → processors in order → exporters
//!    (fan-out). A receiver or exporter used by several pipelines is one instance;
//!    processors are per pipeline.
//! 3. [`Service::run`] runs until the shutdown signal, then drains in order: receivers
//!    stop, processors flush as their inputs close, exporters drain their queues until
//!    the deadline, and whatever is left is counted as dropped.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sidekick_config::document::{ComponentEntry, Ref};
use sidekick_config::error::unknown;
use sidekick_config::{
    ComponentId, ConfigError, Document, Errors, PipelineId, Signal as SignalKind,
    Telemetry as TelemetryConfig,
};
use sidekick_transport::server::ServerOptions;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::admin::{self, Health};
use crate::component::{
    AnyProcessor, BuildContext, BuildError, ExporterParts, Extension, Kind, Listen, LoadedExporter,
    LoadedExtension, LoadedProcessor, LoadedReceiver, Processor, Receiver, ReceiverOutputs,
    Registry,
};
use crate::exporter::{self, Deadline, Export, ExportSettings, ExporterMetrics};
use crate::journal::{self, Journal, JournalSettings};
use crate::payload::{LogsSignal, MetricsSignal, Signal, TracesSignal};
use crate::pipe::{self, Output, Sender, StopTrigger, Target};
use crate::telemetry::{Gauge, Telemetry};

/// Batches waiting in front of each processor.
/// Bytes (encoded) that may wait in front of each processor, including what the
/// processor holds (the batch processor's buffer counts here until it sends it on).
const PROCESSOR_QUEUE_BYTES: usize = 4 << 20;

struct PlannedReceiver {
    id: ComponentId,
    loaded: Box<dyn LoadedReceiver>,
    signals: BTreeSet<SignalKind>,
}

struct PlannedExporter {
    id: ComponentId,
    loaded: Box<dyn LoadedExporter>,
    settings: ExportSettings,
    signals: BTreeSet<SignalKind>,
}

struct PlannedPipeline {
    id: PipelineId,
    receivers: Vec<usize>,
    processors: Vec<(ComponentId, Arc<dyn LoadedProcessor>)>,
    exporters: Vec<usize>,
}

struct PlannedExtension {
    id: ComponentId,
    loaded: Box<dyn LoadedExtension>,
}

/// A checked config, ready to build.
pub struct Plan {
    receivers: Vec<PlannedReceiver>,
    exporters: Vec<PlannedExporter>,
    pipelines: Vec<PlannedPipeline>,
    extensions: Vec<PlannedExtension>,
    pub telemetry: TelemetryConfig,
    pub shutdown_timeout: Duration,
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
                    plan.receivers.push(PlannedReceiver {
                        id: id.clone(),
                        loaded,
                        signals: BTreeSet::new(),
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
                    plan.exporters.push(PlannedExporter {
                        id: id.clone(),
                        loaded,
                        settings,
                        signals: BTreeSet::new(),
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

    /// Builds every component and wires the queues. Fails on the first component that
    /// cannot be built (port taken, unreadable file), before anything runs.
    /// The persistent queue of pipeline `p`: where, and how bounded. A pipeline has one
    /// when an exporter of it names `sending_queue.storage`; with several, the tightest
    /// bounds hold, and it drops its oldest data only if every one of them says so.
    fn persistence(
        &self,
        p: &PlannedPipeline,
        storages: &crate::storage::Storages,
    ) -> Result<Option<(PathBuf, JournalSettings)>, BuildError> {
        let asks: Vec<&exporter::Persist> = p
            .exporters
            .iter()
            .filter_map(|&i| self.exporters[i].settings.persist.as_ref())
            .collect();
        let Some(first) = asks.first() else {
            return Ok(None);
        };
        let storage = storages.get(&first.storage).ok_or_else(|| {
            BuildError::new(format!(
                "sending_queue.storage: \"{}\" is not an enabled file_storage extension",
                first.storage
            ))
        })?;
        let min = |a: Option<usize>, b: Option<usize>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let limit = asks
            .iter()
            .fold(pipe::Limit::default(), |l, x| pipe::Limit {
                requests: min(l.requests, x.limit.requests),
                items: min(l.items, x.limit.items),
                bytes: min(l.bytes, x.limit.bytes),
            });
        let drop_oldest = asks
            .iter()
            .all(|x| x.when_full == exporter::WhenFull::DropOldest);
        let dir = crate::storage::file_name_part(&p.id.to_string());
        Ok(Some((
            storage.directory().join(format!("queue-{dir}")),
            JournalSettings {
                limit,
                drop_oldest,
                fsync: storage.fsync(),
                segment_bytes: journal::SEGMENT_BYTES,
            },
        )))
    }

    pub fn build(self, telemetry: Telemetry) -> Result<Service, BuildError> {
        // `service.telemetry.resource`: Sidekick's own identity on every self-metric; a
        // key without a value is left out.
        let resource: Vec<(String, String)> = self
            .telemetry
            .resource
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.clone()?)))
            .collect();
        if !resource.is_empty() {
            telemetry.set_const_labels(resource);
        }
        let (stop_receivers, _) = pipe::stop_pair();
        let (stop_admin, _) = pipe::stop_pair();
        let (deadline_trigger, deadline) = exporter::deadline_pair();
        let health = Health::default();
        let mut svc = Service {
            receivers: Vec::new(),
            processors: Vec::new(),
            exporters: Vec::new(),
            journals: Vec::new(),
            storages: Default::default(),
            extensions: Vec::new(),
            admin: None,
            stop_receivers,
            stop_admin,
            deadline_trigger,
            health: health.clone(),
            telemetry: telemetry.clone(),
            shutdown_timeout: self.shutdown_timeout,
        };

        // Authenticators before everything that names one in `auth:`.
        let mut authenticators = crate::auth::Authenticators::default();
        let mut storages = crate::storage::Storages::default();
        for x in &self.extensions {
            let err = |err: BuildError| BuildError::new(format!("extensions.{}: {err}", x.id));
            if let Some(built) = x.loaded.authenticator() {
                authenticators.insert(x.id.to_string(), Arc::new(built.map_err(err)?));
            }
            if let Some(opened) = x.loaded.storage() {
                storages.insert(x.id.to_string(), Arc::new(opened.map_err(err)?));
            }
        }

        let persistence = self
            .pipelines
            .iter()
            .map(|p| self.persistence(p, &storages))
            .collect::<Result<Vec<_>, _>>()?;

        // Exporters first: pipelines need their queues.
        let mut exporter_senders: Vec<Senders> = Vec::new();
        for e in self.exporters {
            let signals: Vec<SignalKind> = e.signals.iter().copied().collect();
            let ctx = BuildContext {
                id: &e.id,
                telemetry: &telemetry,
                signals: &signals,
                authenticators: &authenticators,
                storages: &storages,
            };
            let mut parts = e
                .loaded
                .build(&ctx)
                .map_err(|err| BuildError::new(format!("exporters.{}: {err}", e.id)))?;
            if let Some(server) = parts.server.take() {
                svc.extensions.push(server);
            }
            let mut senders = Senders::default();
            let name = e.id.to_string();
            for s in &signals {
                match s {
                    SignalKind::Traces => {
                        senders.traces = start_exporter::<TracesSignal>(
                            &mut svc,
                            &parts,
                            &e.settings,
                            &name,
                            &deadline,
                        )
                    }
                    SignalKind::Metrics => {
                        senders.metrics = start_exporter::<MetricsSignal>(
                            &mut svc,
                            &parts,
                            &e.settings,
                            &name,
                            &deadline,
                        )
                    }
                    SignalKind::Logs => {
                        senders.logs = start_exporter::<LogsSignal>(
                            &mut svc,
                            &parts,
                            &e.settings,
                            &name,
                            &deadline,
                        )
                    }
                }
            }
            exporter_senders.push(senders);
        }

        // Pipelines, back to front: each stage's output is the next stage's queue.
        let mut entries: Vec<Entries> = Vec::new();
        for (p, persist) in self.pipelines.iter().zip(persistence) {
            let w = Wiring {
                exporters: &exporter_senders,
                telemetry: &telemetry,
                persist,
                deadline: &deadline,
            };
            let mut entry = Entries::default();
            match p.id.signal {
                SignalKind::Traces => {
                    entry.traces = wire_pipeline::<TracesSignal>(&mut svc, p, &w)?
                }
                SignalKind::Metrics => {
                    entry.metrics = wire_pipeline::<MetricsSignal>(&mut svc, p, &w)?
                }
                SignalKind::Logs => entry.logs = wire_pipeline::<LogsSignal>(&mut svc, p, &w)?,
            }
            entries.push(entry);
        }

        for (i, r) in self.receivers.into_iter().enumerate() {
            let signals: Vec<SignalKind> = r.signals.iter().copied().collect();
            let ctx = BuildContext {
                id: &r.id,
                telemetry: &telemetry,
                signals: &signals,
                authenticators: &authenticators,
                storages: &storages,
            };
            let receiver = r
                .loaded
                .build(&ctx)
                .map_err(|err| BuildError::new(format!("receivers.{}: {err}", r.id)))?;
            let mut outputs = Entries::default();
            for (p, entry) in self.pipelines.iter().zip(&entries) {
                if p.receivers.contains(&i) {
                    outputs.extend(entry);
                }
            }
            svc.receivers.push((receiver, outputs.into_outputs()));
        }

        for x in self.extensions {
            let ctx = BuildContext {
                id: &x.id,
                telemetry: &telemetry,
                signals: &[],
                authenticators: &authenticators,
                storages: &storages,
            };
            let ext = x
                .loaded
                .build(&ctx, health.clone())
                .map_err(|err| BuildError::new(format!("extensions.{}: {err}", x.id)))?;
            svc.extensions.push(ext);
        }

        let address = self.telemetry.admin_address();
        let listener = sidekick_transport::server::bind(&address, "service.telemetry.metrics")?;
        let metrics = self.telemetry.metrics_enabled().then(|| telemetry.clone());
        let id: ComponentId = "admin".parse().expect("a valid id");
        let ctx = BuildContext {
            id: &id,
            telemetry: &telemetry,
            signals: &[],
            authenticators: &authenticators,
            storages: &storages,
        };
        let m = &self.telemetry.metrics;
        let options = ctx.secure_listener(
            telemetry.listener_options("service.telemetry.metrics"),
            "service.telemetry.metrics.",
            m.tls.as_ref(),
            m.auth.as_ref(),
        )?;
        svc.admin = Some((listener, metrics, options));
        svc.storages = storages;
        Ok(svc)
    }
}

/// The queues of one exporter, per signal.
#[derive(Default)]
struct Senders {
    traces: Vec<Sender<TracesSignal>>,
    metrics: Vec<Sender<MetricsSignal>>,
    logs: Vec<Sender<LogsSignal>>,
}

/// Where receivers send, per signal: the entries of the pipelines they are in.
#[derive(Default)]
struct Entries {
    traces: Vec<Target<TracesSignal>>,
    metrics: Vec<Target<MetricsSignal>>,
    logs: Vec<Target<LogsSignal>>,
}

impl Entries {
    fn extend(&mut self, other: &Entries) {
        self.traces.extend(other.traces.iter().cloned());
        self.metrics.extend(other.metrics.iter().cloned());
        self.logs.extend(other.logs.iter().cloned());
    }

    fn into_outputs(self) -> ReceiverOutputs {
        fn out<S: Signal>(v: Vec<Target<S>>) -> Option<Output<S>> {
            (!v.is_empty()).then(|| Output::from_targets(v))
        }
        ReceiverOutputs {
            traces: out(self.traces),
            metrics: out(self.metrics),
            logs: out(self.logs),
        }
    }
}

/// What wiring a pipeline needs besides the pipeline.
struct Wiring<'a> {
    exporters: &'a [Senders],
    telemetry: &'a Telemetry,
    /// The persistent queue's directory and settings, if the pipeline has one.
    persist: Option<(PathBuf, JournalSettings)>,
    deadline: &'a Deadline,
}

/// Per-signal access to the type-erased parts, so wiring is written once.
trait Route: Signal {
    fn export(parts: &ExporterParts) -> Option<Arc<dyn Export<Self>>>;
    fn senders(s: &Senders) -> &Vec<Sender<Self>>;
    fn processor(p: AnyProcessor) -> Option<Box<dyn Processor<Self>>>;
}

macro_rules! route {
    ($signal:ty, $field:ident, $variant:ident) => {
        impl Route for $signal {
            fn export(parts: &ExporterParts) -> Option<Arc<dyn Export<Self>>> {
                parts.$field.clone()
            }
            fn senders(s: &Senders) -> &Vec<Sender<Self>> {
                &s.$field
            }
            fn processor(p: AnyProcessor) -> Option<Box<dyn Processor<Self>>> {
                match p {
                    AnyProcessor::$variant(p) => Some(p),
                    _ => None,
                }
            }
        }
    };
}

route!(TracesSignal, traces, Traces);
route!(MetricsSignal, metrics, Metrics);
route!(LogsSignal, logs, Logs);

type Task = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

fn start_exporter<S: Route>(
    svc: &mut Service,
    parts: &ExporterParts,
    settings: &ExportSettings,
    name: &str,
    deadline: &Deadline,
) -> Vec<Sender<S>> {
    let Some(export) = S::export(parts) else {
        // The plan only routes signals the kind declares; a kind that declares a signal
        // but builds no sender for it is a programming error worth a loud log.
        warn!(exporter = %name, signal = %S::KIND, "exporter has no sender for this signal");
        return Vec::new();
    };
    let t = &svc.telemetry;
    let labels = [("exporter", name), ("data_type", S::KIND.as_str())];
    // The queue's size and capacity are in its sizer's units, as in the Collector:
    // bytes by default, batches for the requests sizer.
    let size = t.gauge(
        "otelcol_exporter_queue_size",
        "Current size of the retry queue (in the units of its sizer: bytes by default).",
        &labels,
    );
    let capacity = settings.capacity();
    t.gauge(
        "otelcol_exporter_queue_capacity",
        "Fixed capacity of the retry queue (in the units of its sizer).",
        &labels,
    )
    .set(capacity as i64);
    let (batches, bytes) = match settings.queue.effective_sizer() {
        pipe::Sizer::Bytes => (Gauge::default(), size),
        _ => (size, Gauge::default()),
    };
    let (tx, rx) =
        pipe::channel_with::<S>(settings.queue.limit(), batches, bytes, t.account().clone());
    let tx = tx.with_item_limit(settings.max_request_bytes);
    let metrics = ExporterMetrics::new::<S>(t, name);
    let task: Task = Box::pin(exporter::run_queue(
        export,
        rx,
        settings.clone(),
        metrics,
        name.to_string(),
        deadline.clone(),
    ));
    svc.exporters.push(task);
    vec![tx]
}

fn wire_pipeline<S: Route>(
    svc: &mut Service,
    p: &PlannedPipeline,
    w: &Wiring,
) -> Result<Vec<Target<S>>, BuildError> {
    let telemetry = w.telemetry;
    let mut next: Vec<Sender<S>> = p
        .exporters
        .iter()
        .flat_map(|&i| S::senders(&w.exporters[i]).iter().cloned())
        .collect();
    for (id, loaded) in p.processors.iter().rev() {
        let ctx = BuildContext {
            id,
            telemetry,
            signals: &[S::KIND],
            authenticators: &crate::auth::NO_AUTHENTICATORS,
            storages: &crate::storage::NO_STORAGES,
        };
        let built = loaded.build(S::KIND, &ctx).map_err(|err| {
            BuildError::new(format!("processors.{id} in pipeline {}: {err}", p.id))
        })?;
        let processor = S::processor(built).ok_or_else(|| {
            BuildError::new(format!("processors.{id}: built for the wrong signal"))
        })?;
        let labels = [
            ("processor", id.to_string()),
            ("pipeline", p.id.to_string()),
        ];
        let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let queued = telemetry.gauge(
            "sidekick_processor_queue_size",
            "Batches waiting in front of a processor.",
            &labels,
        );
        let queued_bytes = telemetry.gauge(
            "sidekick_processor_queue_bytes",
            "Encoded bytes waiting in front of a processor.",
            &labels,
        );
        let (tx, rx) = pipe::channel_with::<S>(
            pipe::Limit::bytes(PROCESSOR_QUEUE_BYTES),
            queued,
            queued_bytes,
            telemetry.account().clone(),
        );
        let tx = tx.with_item_limit(next.iter().filter_map(Sender::item_limit).min());
        svc.processors.push(processor.run(rx, Output::new(next)));
        next = vec![tx];
    }
    let Some((dir, settings)) = &w.persist else {
        return Ok(next.into_iter().map(Target::Queue).collect());
    };
    let name = p.id.to_string();
    let journal = Journal::<S>::open(dir.clone(), &name, *settings, Some(telemetry))
        .map_err(|e| BuildError::new(format!("service.pipelines.{name}: persistent queue: {e}")))?;
    let item_limit = next.iter().filter_map(Sender::item_limit).min();
    let sender = journal.sender().with_item_limit(item_limit);
    svc.processors.push(Box::pin(journal::feed(
        Arc::clone(&journal),
        Output::new(next),
        w.deadline.clone(),
    )));
    svc.journals.push(journal);
    Ok(vec![Target::Durable(Box::new(sender))])
}

/// A built topology, ready to run.
pub struct Service {
    receivers: Vec<(Box<dyn Receiver>, ReceiverOutputs)>,
    processors: Vec<Task>,
    exporters: Vec<Task>,
    journals: Vec<Arc<dyn journal::Close>>,
    /// Held for the whole run: each keeps its directory locked.
    storages: crate::storage::Storages,
    extensions: Vec<Box<dyn Extension>>,
    admin: Option<(TcpListener, Option<Telemetry>, ServerOptions)>,
    stop_receivers: StopTrigger,
    stop_admin: StopTrigger,
    deadline_trigger: exporter::DeadlineTrigger,
    health: Health,
    telemetry: Telemetry,
    shutdown_timeout: Duration,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Items accepted but never delivered, over the whole run.
    pub dropped: u64,
    /// Items not delivered yet but kept in persistent queues for the next start.
    pub kept: u64,
}

impl Service {
    pub fn health(&self) -> Health {
        self.health.clone()
    }

    /// Runs until `shutdown` resolves, then drains within the shutdown timeout.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Outcome {
        let Service {
            receivers,
            processors,
            exporters,
            journals,
            storages,
            extensions,
            admin,
            stop_receivers,
            stop_admin,
            deadline_trigger,
            health,
            telemetry,
            shutdown_timeout,
        } = self;
        let mut admin_tasks = JoinSet::new();
        if let Some((listener, metrics, options)) = admin {
            if let Ok(address) = listener.local_addr() {
                info!(address = %address, "admin endpoint listening (/metrics, /healthz, /readyz)");
            }
            admin_tasks.spawn(admin::run(
                listener,
                metrics,
                health.clone(),
                options,
                stop_admin.stop(),
            ));
        }
        for x in extensions {
            admin_tasks.spawn(x.run(stop_admin.stop()));
        }
        let mut exporter_tasks = JoinSet::new();
        exporters.into_iter().for_each(|t| {
            exporter_tasks.spawn(t);
        });
        let mut processor_tasks = JoinSet::new();
        processors.into_iter().for_each(|t| {
            processor_tasks.spawn(t);
        });
        let mut receiver_tasks = JoinSet::new();
        for (r, outputs) in receivers {
            receiver_tasks.spawn(r.run(outputs, stop_receivers.stop()));
        }
        health.set_ready(true);
        info!("everything is ready; begin running and processing data");

        shutdown.await;
        info!(timeout = ?shutdown_timeout, "shutting down: stopping receivers, flushing batches, draining exporters");
        health.set_ready(false);
        stop_receivers.fire();
        let deadline = tokio::time::Instant::now() + shutdown_timeout;
        {
            let drain = async {
                while receiver_tasks.join_next().await.is_some() {}
                while processor_tasks.join_next().await.is_some() {}
                while exporter_tasks.join_next().await.is_some() {}
            };
            tokio::pin!(drain);
            if tokio::time::timeout_at(deadline, &mut drain).await.is_err() {
                if journals.is_empty() {
                    warn!("shutdown deadline passed; dropping what is still queued");
                } else {
                    warn!("shutdown deadline passed; dropping what is still queued in memory, keeping what is in persistent queues");
                }
                deadline_trigger.fire();
                // Exporters now count what is left and return; receivers and processors
                // finish as soon as their outputs stop blocking.
                if tokio::time::timeout(Duration::from_secs(5), &mut drain)
                    .await
                    .is_err()
                {
                    warn!("components did not stop within 5s after the deadline; stopping them");
                }
            }
        }
        // Whatever is still running is stopped now, so that every batch it held is
        // dropped here and counted (a hold dropped undelivered counts as lost).
        receiver_tasks.shutdown().await;
        processor_tasks.shutdown().await;
        exporter_tasks.shutdown().await;
        stop_admin.fire();
        while admin_tasks.join_next().await.is_some() {}
        let kept: u64 = journals.iter().map(|j| j.close()).sum();
        drop(storages);
        let account = telemetry.account();
        let lost = account.lost();
        let dropped = telemetry.dropped();
        if dropped > 0 {
            tracing::error!(
                dropped_items = dropped,
                of_which_held_in_queues_or_buffers = lost,
                still_held_items = account.items(),
                kept_on_disk_items = kept,
                "stopped; some accepted data was dropped"
            );
        } else if kept > 0 {
            info!(
                kept_on_disk_items = kept,
                "stopped; nothing was lost: undelivered data is kept in the persistent queue for the next start"
            );
        } else {
            info!("stopped; all accepted data was delivered");
        }
        Outcome { dropped, kept }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde::Deserialize;

    use super::*;
    use crate::component::{BoxFuture, ExporterConfig, ReceiverConfig};
    use crate::exporter::{Delivered, ExportError, QueueSettings, RetrySettings};
    use crate::payload::Batch;
    use crate::pipe::Stop;

    /// A receiver of every signal that sends nothing.
    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields, default)]
    struct Source {
        endpoint: Option<String>,
    }

    struct Idle;

    impl Receiver for Idle {
        fn run(
            self: Box<Self>,
            _outputs: ReceiverOutputs,
            mut stop: Stop,
        ) -> BoxFuture<'static, ()> {
            Box::pin(async move { stop.wait().await })
        }
    }

    impl ReceiverConfig for Source {
        const SIGNALS: &'static [SignalKind] = &SignalKind::ALL;

        fn listen_addresses(&self) -> Vec<Listen> {
            self.endpoint
                .iter()
                .map(|a| Listen {
                    field: "endpoint".into(),
                    address: a.clone(),
                })
                .collect()
        }

        fn build(self, _ctx: &BuildContext) -> Result<Box<dyn Receiver>, BuildError> {
            Ok(Box::new(Idle))
        }
    }

    /// An exporter that only takes metrics.
    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    struct MetricsOnly {}

    struct Discard;

    impl Export<MetricsSignal> for Discard {
        fn export<'a>(
            &'a self,
            _b: &'a Batch<MetricsSignal>,
        ) -> BoxFuture<'a, Result<Delivered, ExportError>> {
            Box::pin(async { Ok(Delivered::default()) })
        }
    }

    impl ExporterConfig for MetricsOnly {
        const SIGNALS: &'static [SignalKind] = &[SignalKind::Metrics];

        fn export_settings(&self) -> ExportSettings {
            ExportSettings {
                timeout: Duration::from_secs(1),
                queue: QueueSettings::default(),
                retry: RetrySettings::default(),
                max_request_bytes: None,
                persist: None,
            }
        }

        fn build(self, _ctx: &BuildContext) -> Result<ExporterParts, BuildError> {
            Ok(ExporterParts {
                metrics: Some(Arc::new(Discard)),
                ..ExporterParts::default()
            })
        }
    }

    fn registry() -> Registry {
        Registry::default()
            .receiver::<Source>("source")
            .exporter::<MetricsOnly>("metrics_only")
    }

    fn plan(text: &str) -> Result<Plan, String> {
        let doc = Document::parse(text, &HashMap::new()).map_err(|e| e.to_string())?;
        Plan::new(&doc, &registry()).map_err(|e| e.to_string())
    }

    #[test]
    fn refuses_a_component_in_a_pipeline_of_a_signal_it_lacks() {
        let err = plan(
            "receivers:\n  source:\nexporters:\n  metrics_only:\nservice:\n  pipelines:\n    metrics:\n      receivers: [source]\n      exporters: [metrics_only]\n    traces:\n      receivers: [source]\n      exporters: [metrics_only]\n",
        )
        .err()
        .unwrap();
        assert_eq!(
            err,
            "12:19: service.pipelines.traces.exporters[0]: exporter \"metrics_only\" does not support traces; it supports metrics"
        );
    }

    #[test]
    fn shared_receiver_and_exporter_are_one_instance_each() {
        let p = plan(
            "receivers:\n  source:\n  source/unused:\nexporters:\n  metrics_only:\nservice:\n  pipelines:\n    metrics/a:\n      receivers: [source]\n      exporters: [metrics_only]\n    metrics/b:\n      receivers: [source]\n      exporters: [metrics_only]\n",
        )
        .unwrap();
        assert_eq!(p.receivers.len(), 1);
        assert_eq!(p.exporters.len(), 1);
        assert_eq!(p.pipelines.len(), 2);
        assert_eq!(
            p.warnings,
            vec!["receivers.source/unused is defined but not used by any pipeline"]
        );
    }

    #[test]
    fn wildcard_and_specific_listeners_on_one_port_conflict() {
        let err = plan(
            "receivers:\n  source/a:\n    endpoint: 0.0.0.0:9999\n  source/b:\n    endpoint: 127.0.0.1:9999\nexporters:\n  metrics_only:\nservice:\n  pipelines:\n    metrics:\n      receivers: [source/a, source/b]\n      exporters: [metrics_only]\n",
        )
        .err()
        .unwrap();
        assert_eq!(
            err,
            "5:15: receivers.source/b.endpoint: address 127.0.0.1:9999 is already used by receivers.source/a.endpoint (0.0.0.0:9999); give each listener its own port"
        );
    }

    #[tokio::test]
    async fn runs_and_stops_cleanly() {
        let p = plan(
            "receivers:\n  source:\nexporters:\n  metrics_only:\nservice:\n  pipelines:\n    metrics:\n      receivers: [source]\n      exporters: [metrics_only]\n  telemetry:\n    metrics:\n      address: 127.0.0.1:0\n",
        )
        .unwrap();
        let service = p.build(Telemetry::new()).unwrap();
        let health = service.health();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(service.run(async {
            let _ = rx.await;
        }));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(health.is_ready());
        tx.send(()).unwrap();
        let outcome = run.await.unwrap();
        assert_eq!(
            outcome,
            Outcome {
                dropped: 0,
                kept: 0
            }
        );
        assert!(!health.is_ready());
    }

    #[tokio::test]
    async fn telemetry_resource_labels_every_self_metric() {
        let p = plan(
            "receivers:\n  source:\nexporters:\n  metrics_only:\nservice:\n  pipelines:\n    metrics:\n      receivers: [source]\n      exporters: [metrics_only]\n  telemetry:\n    resource:\n      service.name: sidekick\n      service.version:\n    metrics:\n      address: 127.0.0.1:0\n",
        )
        .unwrap();
        let telemetry = Telemetry::new();
        let _service = p.build(telemetry.clone()).unwrap();
        let page = telemetry.render();
        let series: Vec<&str> = page.lines().filter(|l| !l.starts_with('#')).collect();
        assert!(!series.is_empty());
        for line in series {
            assert!(line.contains("service_name=\"sidekick\""), "{line}");
            assert!(!line.contains("service_version"), "{line}");
        }
    }
}
