//! What a component is: its config type is its factory.
//!
//! A receiver, processor or exporter kind is one `#[derive(Deserialize)]` config struct
//! implementing [`ReceiverConfig`], [`ProcessorConfig`] or [`ExporterConfig`]: the signals
//! it supports, `validate()`, the addresses it will listen on (for conflict checks) and a
//! synchronous, fallible `build()` that acquires resources (binds sockets, reads TLS
//! files), so a port conflict fails before anything runs. The registry turns each into a
//! kind name with [`Registry::receiver`] and friends.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use sidekick_config::de::{from_node_partial, sort_by_position};
use sidekick_config::{AuthRef, ComponentId, ConfigError, Node, ServerTls, Signal};
pub use sidekick_config::{BuildError, FieldError};
use sidekick_transport::server::ServerOptions;
use sidekick_transport::tls::listener;

use crate::auth::{AuthAbilities, AuthSide, AuthUse, Authenticator, Authenticators};
pub use crate::base::BoxFuture;
use crate::base::Stop;
use crate::exporter::{ClientRules, ClientSettings, Export, ExportSettings};
use crate::payload::{LogsSignal, MetricsSignal, TracesSignal};
use crate::pipe::{Input, Output};
use crate::storage::Storage;
use crate::telemetry::Telemetry;

/// An address a component will listen on, for conflict checks before anything binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    pub field: String,
    pub address: String,
}

/// What a component gets when it is built.
pub struct BuildContext<'a> {
    pub id: &'a ComponentId,
    pub telemetry: &'a Telemetry,
    /// The signals of the pipelines this instance serves.
    pub signals: &'a [Signal],
    /// The authenticator extensions, for `auth:` blocks
    /// ([`BuildContext::authenticator`]).
    pub authenticators: &'a Authenticators,
    /// The `file_storage` extensions ([`BuildContext::storage`]).
    pub storages: &'a crate::storage::Storages,
}

/// Where a receiver sends each signal; `None` when no pipeline of that signal uses it.
#[derive(Default)]
pub struct ReceiverOutputs {
    pub traces: Option<Output<TracesSignal>>,
    pub metrics: Option<Output<MetricsSignal>>,
    pub logs: Option<Output<LogsSignal>>,
}

pub trait ReceiverConfig: DeserializeOwned + Send + 'static {
    const SIGNALS: &'static [Signal];

    fn validate(&self) -> Vec<FieldError> {
        Vec::new()
    }

    fn listen_addresses(&self) -> Vec<Listen> {
        Vec::new()
    }

    /// The `auth:` blocks of this config, checked against `service.extensions`.
    fn auth_uses(&self) -> Vec<AuthUse> {
        Vec::new()
    }

    /// The `storage:` this config names (field, extension id), checked against
    /// `service.extensions`.
    fn storage_uses(&self) -> Vec<(String, String)> {
        Vec::new()
    }

    fn build(self, ctx: &BuildContext) -> Result<Box<dyn Receiver>, BuildError>;
}

pub trait Receiver: Send {
    /// Runs until `stop` fires, then returns after in-flight requests are answered.
    /// Dropping `outputs` is what tells the pipelines downstream that no more data comes.
    fn run(self: Box<Self>, outputs: ReceiverOutputs, stop: Stop) -> BoxFuture<'static, ()>;
}

pub trait ProcessorConfig: DeserializeOwned + Send + Sync + 'static {
    const SIGNALS: &'static [Signal];

    fn validate(&self) -> Vec<FieldError> {
        Vec::new()
    }

    fn build<S: crate::payload::Signal>(
        &self,
        ctx: &BuildContext,
    ) -> Result<Box<dyn Processor<S>>, BuildError>;
}

pub trait Processor<S: crate::payload::Signal>: Send {
    /// Runs until `input` closes, then flushes what it holds into `output` and returns.
    fn run(self: Box<Self>, input: Input<S>, output: Output<S>) -> BoxFuture<'static, ()>;

    /// A per-batch stage (no state across batches, no timers) gives itself up as a
    /// [`Sieve`], so that consecutive ones run in one task as a [`Chain`]: a batch goes
    /// through them without a channel and a task wake-up between each. Others keep
    /// their own task.
    fn into_sieve(self: Box<Self>) -> Result<Box<dyn Sieve<S>>, Box<dyn Processor<S>>>;

    /// A stage that only decides whether the pipeline takes data now (the memory
    /// limiter) gives its decision as an [`Admission`] when it leads its pipeline: it is
    /// then asked in the receiver's call, which refuses the data retryably while it says
    /// no, and the stage does not run as a task.
    fn admission(&self) -> Option<Box<dyn Admission>> {
        None
    }
}

/// Whether a pipeline takes data now; see [`Processor::admission`].
pub trait Admission: Send + Sync + 'static {
    /// `None` while it takes data; otherwise how long to wait before asking again.
    fn closed(&self) -> Option<std::time::Duration>;
}

/// A processor that edits each batch on its own (no state across batches, no timers):
/// the per-batch shape of processor, run by [`MapProcessor`].
pub trait Edit<S: crate::payload::Signal>: Send + Sync + 'static {
    fn edit(&self, batch: &mut crate::payload::Batch<S>);
}

/// Runs an [`Edit`] on every batch between its input and output.
pub struct MapProcessor<E>(pub E);

impl<S: crate::payload::Signal, E: Edit<S>> Sieve<S> for MapProcessor<E> {
    fn sift(&self, batch: &mut crate::payload::Batch<S>) -> Result<(), String> {
        self.0.edit(batch);
        Ok(())
    }
}

impl<S: crate::payload::Signal, E: Edit<S>> Processor<S> for MapProcessor<E> {
    fn run(self: Box<Self>, input: Input<S>, output: Output<S>) -> BoxFuture<'static, ()> {
        Box::new(Chain(vec![self as Box<dyn Sieve<S>>])).run(input, output)
    }

    fn into_sieve(self: Box<Self>) -> Result<Box<dyn Sieve<S>>, Box<dyn Processor<S>>> {
        Ok(self)
    }
}

/// A per-batch stage that may remove items (`filter`, a sampler) or refuse a batch whole
/// (`error_mode: propagate`), run by [`SieveProcessor`].
/// It takes `&self`: at a pipeline's entry it runs in every receiver's call at once.
pub trait Sieve<S: crate::payload::Signal>: Send + Sync + 'static {
    /// Edits the batch in place; an error means the batch cannot go on.
    fn sift(&self, batch: &mut crate::payload::Batch<S>) -> Result<(), String>;
}

/// Runs a [`Sieve`] on every batch.
pub struct SieveProcessor<E>(pub E);

impl<S: crate::payload::Signal, E: Sieve<S>> Sieve<S> for SieveProcessor<E> {
    fn sift(&self, batch: &mut crate::payload::Batch<S>) -> Result<(), String> {
        self.0.sift(batch)
    }
}

impl<S: crate::payload::Signal, E: Sieve<S>> Processor<S> for SieveProcessor<E> {
    fn run(self: Box<Self>, input: Input<S>, output: Output<S>) -> BoxFuture<'static, ()> {
        Box::new(Chain(vec![self as Box<dyn Sieve<S>>])).run(input, output)
    }

    fn into_sieve(self: Box<Self>) -> Result<Box<dyn Sieve<S>>, Box<dyn Processor<S>>> {
        Ok(self)
    }
}

/// Consecutive [`Sieve`]s of a pipeline, run in order on each batch in one task. Items
/// they remove on purpose are done with (a batch left empty goes no further); a batch
/// one refuses is dropped through its hold, which counts its items as lost, and logged.
pub struct Chain<S: crate::payload::Signal>(pub Vec<Box<dyn Sieve<S>>>);

impl<S: crate::payload::Signal> Sieve<S> for Chain<S> {
    /// Each stage in order, until one refuses the batch or leaves it empty.
    fn sift(&self, batch: &mut crate::payload::Batch<S>) -> Result<(), String> {
        for stage in &self.0 {
            stage.sift(batch)?;
            if batch.is_empty() {
                break;
            }
        }
        Ok(())
    }
}

impl<S: crate::payload::Signal> Processor<S> for Chain<S> {
    fn run(self: Box<Self>, mut input: Input<S>, output: Output<S>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            while let Some((mut batch, hold)) = input.recv_held().await {
                match Sieve::sift(&*self, &mut batch) {
                    Err(error) => {
                        tracing::error!(dropped_items = hold.items(), %error, "a processor refused a batch (error_mode: propagate); dropped it");
                        drop(hold);
                    }
                    Ok(()) if batch.is_empty() => hold.release(),
                    Ok(()) => forward(&output, batch, hold).await,
                }
            }
        })
    }

    fn into_sieve(self: Box<Self>) -> Result<Box<dyn Sieve<S>>, Box<dyn Processor<S>>> {
        Err(self)
    }
}

/// The processors that lead a pipeline and can run in the receiver's call: admissions,
/// then a [`Chain`] of sieves, run on every request in its receiver's task (several at
/// once). A batch the chain refuses is refused to the client.
pub struct Entry<S: crate::payload::Signal> {
    pub admissions: Vec<Box<dyn Admission>>,
    pub chain: Chain<S>,
}

impl<S: crate::payload::Signal> crate::pipe::Front<S> for Entry<S> {
    fn closed(&self) -> Option<std::time::Duration> {
        self.admissions.iter().find_map(|a| a.closed())
    }

    fn sift(&self, batch: &mut crate::payload::Batch<S>) -> Result<(), String> {
        Sieve::sift(&self.chain, batch)
    }
}

/// Sends `batch` on and frees its `hold`; if the next stage has shut down, the data
/// is counted as dropped (through the hold) and logged.
pub async fn forward<S: crate::payload::Signal>(
    output: &Output<S>,
    batch: crate::payload::Batch<S>,
    hold: crate::pipe::Hold,
) {
    let n = batch.len();
    match output.send_ticketed(batch, hold.tickets()).await {
        Ok(()) => hold.release(),
        // Dropping the hold unreleased counts its items as lost (or, for items of a
        // persistent queue, keeps them there for the next start).
        Err(_) => tracing::error!(dropped_items = n, "next stage has shut down; dropped data"),
    }
}

/// An exporter instance: one sender per signal it serves (they usually share one client),
/// driven by the exporter helper's queue and retry loop, and optionally a server that
/// runs beside it until the very end of shutdown (the `prometheus` scrape endpoint).
#[derive(Default)]
pub struct ExporterParts {
    pub traces: Option<Arc<dyn Export<TracesSignal>>>,
    pub metrics: Option<Arc<dyn Export<MetricsSignal>>>,
    pub logs: Option<Arc<dyn Export<LogsSignal>>>,
    pub server: Option<Box<dyn Extension>>,
}

impl ExporterParts {
    /// The same sender for every signal.
    pub fn all<E>(exporter: Arc<E>) -> Self
    where
        E: Export<TracesSignal> + Export<MetricsSignal> + Export<LogsSignal>,
    {
        ExporterParts {
            traces: Some(exporter.clone()),
            metrics: Some(exporter.clone()),
            logs: Some(exporter),
            server: None,
        }
    }
}

pub trait ExporterConfig: DeserializeOwned + Send + 'static {
    const SIGNALS: &'static [Signal];

    /// Set by an exporter that sends over the network: it keeps the shared
    /// [`ClientSettings`] in a `#[serde(skip)]` field ([`Self::client`]), which the
    /// registry reads and checks for it (see [`crate::exporter::client`]).
    const CLIENT: Option<ClientRules> = None;

    /// The shared settings, for an exporter with [`Self::CLIENT`].
    fn client(&self) -> Option<&ClientSettings> {
        None
    }

    fn client_mut(&mut self) -> Option<&mut ClientSettings> {
        None
    }

    /// Where its requests go, from `endpoint` and any keys of its own: one URI per
    /// target, or what is wrong with the key that names it.
    fn endpoints(&self) -> Vec<Result<String, FieldError>> {
        Vec::new()
    }

    /// Its own keys that carry credentials and are set, for the clear-text warning.
    fn credential_fields(&self) -> Vec<&'static str> {
        Vec::new()
    }

    /// Checks of its own keys; the registry checks the shared ones and the export
    /// settings (see [`check_exporter`]).
    fn validate(&self) -> Vec<FieldError> {
        Vec::new()
    }

    /// Queue, retry and timeout settings for the exporter helper.
    fn export_settings(&self) -> ExportSettings;

    /// Addresses a server of this exporter will listen on.
    fn listen_addresses(&self) -> Vec<Listen> {
        Vec::new()
    }

    /// The `auth:` blocks of this config, checked against `service.extensions`.
    fn auth_uses(&self) -> Vec<AuthUse> {
        self.client()
            .map(ClientSettings::auth_uses)
            .unwrap_or_default()
    }

    fn build(self, ctx: &BuildContext) -> Result<ExporterParts, BuildError>;
}

// ---- type-erased factories, one per kind -------------------------------------------------

/// A component config that parsed and validated, waiting to be built.
pub trait LoadedReceiver: Send {
    fn listen_addresses(&self) -> Vec<Listen>;
    fn auth_uses(&self) -> Vec<AuthUse>;
    fn storage_uses(&self) -> Vec<(String, String)>;
    fn build(self: Box<Self>, ctx: &BuildContext) -> Result<Box<dyn Receiver>, BuildError>;
}

impl<C: ReceiverConfig> LoadedReceiver for C {
    fn listen_addresses(&self) -> Vec<Listen> {
        ReceiverConfig::listen_addresses(self)
    }

    fn auth_uses(&self) -> Vec<AuthUse> {
        ReceiverConfig::auth_uses(self)
    }

    fn storage_uses(&self) -> Vec<(String, String)> {
        ReceiverConfig::storage_uses(self)
    }

    fn build(self: Box<Self>, ctx: &BuildContext) -> Result<Box<dyn Receiver>, BuildError> {
        ReceiverConfig::build(*self, ctx)
    }
}

/// A processor instance for one pipeline, typed by the pipeline's signal.
pub enum AnyProcessor {
    Traces(Box<dyn Processor<TracesSignal>>),
    Metrics(Box<dyn Processor<MetricsSignal>>),
    Logs(Box<dyn Processor<LogsSignal>>),
}

pub trait LoadedProcessor: Send + Sync {
    fn build(&self, signal: Signal, ctx: &BuildContext) -> Result<AnyProcessor, BuildError>;
}

impl<C: ProcessorConfig> LoadedProcessor for C {
    fn build(&self, signal: Signal, ctx: &BuildContext) -> Result<AnyProcessor, BuildError> {
        Ok(match signal {
            Signal::Traces => {
                AnyProcessor::Traces(ProcessorConfig::build::<TracesSignal>(self, ctx)?)
            }
            Signal::Metrics => {
                AnyProcessor::Metrics(ProcessorConfig::build::<MetricsSignal>(self, ctx)?)
            }
            Signal::Logs => AnyProcessor::Logs(ProcessorConfig::build::<LogsSignal>(self, ctx)?),
        })
    }
}

pub trait LoadedExporter: Send {
    fn export_settings(&self) -> ExportSettings;
    fn listen_addresses(&self) -> Vec<Listen>;
    fn auth_uses(&self) -> Vec<AuthUse>;
    fn build(self: Box<Self>, ctx: &BuildContext) -> Result<ExporterParts, BuildError>;
}

impl<C: ExporterConfig> LoadedExporter for C {
    fn export_settings(&self) -> ExportSettings {
        ExporterConfig::export_settings(self)
    }

    fn listen_addresses(&self) -> Vec<Listen> {
        ExporterConfig::listen_addresses(self)
    }

    fn auth_uses(&self) -> Vec<AuthUse> {
        ExporterConfig::auth_uses(self)
    }

    fn build(self: Box<Self>, ctx: &BuildContext) -> Result<ExporterParts, BuildError> {
        ExporterConfig::build(*self, ctx)
    }
}

/// Every check of an exporter's config: the shared client settings (for a network
/// exporter), the export settings, then its own `validate()`.
pub fn check_exporter<C: ExporterConfig>(config: &C) -> Vec<FieldError> {
    let mut out = Vec::new();
    if let (Some(rules), Some(client)) = (C::CLIENT, config.client()) {
        out.extend(client.validate(&rules, config.endpoints(), &config.credential_fields()));
    }
    out.extend(config.export_settings().validate());
    out.extend(config.validate());
    out
}

/// Parses a component's subtree into its config type and runs its `validate()`, turning
/// field errors into located config errors. Warnings come back beside the config.
fn load<C: DeserializeOwned>(
    node: &Node,
    path: &str,
    validate: impl FnOnce(&C) -> Vec<FieldError>,
) -> Result<Loaded<C>, Vec<ConfigError>> {
    let (config, errors) = from_node_partial::<C>(node, path);
    checked(node, path, config, errors, validate)
}

/// An exporter's config as the registry reads it (a network exporter's shared keys apart
/// from its own), checked by [`check_exporter`].
pub fn load_exporter<C: ExporterConfig>(
    node: &Node,
    path: &str,
) -> Result<Loaded<C>, Vec<ConfigError>> {
    match C::CLIENT {
        None => load::<C>(node, path, check_exporter),
        Some(rules) => {
            let (config, errors) = read_network_exporter::<C>(node, path, &rules);
            checked(node, path, config, errors, check_exporter)
        }
    }
}

/// Reads a network exporter's config from `node`: the shared keys into its
/// [`ClientSettings`] over the kind's defaults, the rest into its own type.
fn read_network_exporter<C: ExporterConfig>(
    node: &Node,
    path: &str,
    rules: &ClientRules,
) -> (Option<C>, Vec<ConfigError>) {
    use crate::exporter::client::{split, ClientKeys};
    let own_keys = sidekick_config::de::struct_fields::<C>();
    let (shared, own, mut errors) = split(node, path, own_keys, rules);
    let (config, own_errors) = from_node_partial::<C>(&own, path);
    let (keys, shared_errors) = from_node_partial::<ClientKeys>(&shared, path);
    errors.extend(own_errors);
    errors.extend(shared_errors);
    let config = config.zip(keys).map(|(mut config, keys)| {
        if let Some(client) = config.client_mut() {
            keys.apply(client);
        }
        config
    });
    (config, errors)
}

/// A config as read, with its problems located in `node`.
fn checked<C>(
    node: &Node,
    path: &str,
    config: Option<C>,
    mut errors: Vec<ConfigError>,
    validate: impl FnOnce(&C) -> Vec<FieldError>,
) -> Result<Loaded<C>, Vec<ConfigError>> {
    let Some(config) = config else {
        return Err(errors);
    };
    let (warnings, problems): (Vec<_>, Vec<_>) =
        validate(&config).into_iter().partition(|p| p.warning);
    let locate_all = |problems: Vec<FieldError>| {
        problems
            .into_iter()
            .map(|p| {
                let (full, at) = locate(node, path, &p.field);
                ConfigError::new(full, Some(at.mark), p.message)
            })
            .collect::<Vec<_>>()
    };
    errors.extend(locate_all(problems));
    if !errors.is_empty() {
        sort_by_position(&mut errors);
        return Err(errors);
    }
    Ok(Loaded {
        config,
        warnings: locate_all(warnings),
    })
}

/// A component config that loaded, and what is worth telling about it.
#[derive(Debug)]
pub struct Loaded<T> {
    pub config: T,
    pub warnings: Vec<ConfigError>,
}

impl<T> Loaded<T> {
    fn map<U>(self, f: impl FnOnce(T) -> U) -> Loaded<U> {
        Loaded {
            config: f(self.config),
            warnings: self.warnings,
        }
    }
}

/// The node at a dotted `field` path below `node` (or the nearest existing ancestor).
/// Segments may index lists: `scrape_configs[0].relabel_configs[2].regex`.
pub(crate) fn locate<'a>(node: &'a Node, path: &str, field: &str) -> (String, &'a Node) {
    let mut at = node;
    if !field.is_empty() {
        'walk: for part in field.split('.') {
            let (key, indexes) = match part.find('[') {
                Some(i) => (&part[..i], &part[i..]),
                None => (part, ""),
            };
            match at.get(key) {
                Some(child) => at = child,
                None => break,
            }
            for index in indexes.split(']').filter(|s| !s.is_empty()) {
                let Ok(i) = index.trim_start_matches('[').parse::<usize>() else {
                    break 'walk;
                };
                match &at.value {
                    sidekick_config::Value::Seq(items) if i < items.len() => at = &items[i],
                    _ => break 'walk,
                }
            }
        }
    }
    let full = match (path.is_empty(), field.is_empty()) {
        (_, true) => path.to_string(),
        (true, false) => field.to_string(),
        (false, false) => format!("{path}.{field}"),
    };
    (full, at)
}

type LoadFn<T> = Box<dyn Fn(&Node, &str) -> Result<Loaded<T>, Vec<ConfigError>> + Send + Sync>;

/// One component kind: the signals it supports and how to load its config.
pub struct Kind<T> {
    pub signals: &'static [Signal],
    load: LoadFn<T>,
}

impl<T> Kind<T> {
    pub fn load(&self, node: &Node, path: &str) -> Result<Loaded<T>, Vec<ConfigError>> {
        (self.load)(node, path)
    }
}

/// An extension: something that runs beside the pipelines (health endpoints, …).
pub trait ExtensionConfig: DeserializeOwned + Send + 'static {
    fn validate(&self) -> Vec<FieldError> {
        Vec::new()
    }

    fn listen_addresses(&self) -> Vec<Listen> {
        Vec::new()
    }

    /// For an authenticator extension: what its settings let it do.
    fn auth_abilities(&self) -> Option<AuthAbilities> {
        None
    }

    /// For an authenticator extension: the authenticator, its files read now.
    fn authenticator(&self) -> Option<Result<Authenticator, BuildError>> {
        None
    }

    /// For a storage extension: the storage, opened (and locked) now.
    fn storage(&self) -> Option<Result<crate::storage::Storage, BuildError>> {
        None
    }

    /// Whether this is a storage extension (checked before anything is opened).
    fn provides_storage(&self) -> bool {
        false
    }

    fn build(
        self,
        ctx: &BuildContext,
        health: crate::base::Health,
    ) -> Result<Box<dyn Extension>, BuildError>;
}

pub trait Extension: Send {
    fn run(self: Box<Self>, stop: Stop) -> BoxFuture<'static, ()>;
}

/// An extension that runs nothing of its own: what it provides is handed to components
/// when they are built (authenticators, storage).
pub struct NoTask;

impl Extension for NoTask {
    fn run(self: Box<Self>, _stop: Stop) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

pub trait LoadedExtension: Send {
    fn listen_addresses(&self) -> Vec<Listen>;
    fn auth_abilities(&self) -> Option<AuthAbilities>;
    fn authenticator(&self) -> Option<Result<Authenticator, BuildError>>;
    fn storage(&self) -> Option<Result<crate::storage::Storage, BuildError>>;
    fn provides_storage(&self) -> bool;
    fn build(
        self: Box<Self>,
        ctx: &BuildContext,
        health: crate::base::Health,
    ) -> Result<Box<dyn Extension>, BuildError>;
}

impl<C: ExtensionConfig> LoadedExtension for C {
    fn listen_addresses(&self) -> Vec<Listen> {
        ExtensionConfig::listen_addresses(self)
    }

    fn auth_abilities(&self) -> Option<AuthAbilities> {
        ExtensionConfig::auth_abilities(self)
    }

    fn authenticator(&self) -> Option<Result<Authenticator, BuildError>> {
        ExtensionConfig::authenticator(self)
    }

    fn storage(&self) -> Option<Result<crate::storage::Storage, BuildError>> {
        ExtensionConfig::storage(self)
    }

    fn provides_storage(&self) -> bool {
        ExtensionConfig::provides_storage(self)
    }

    fn build(
        self: Box<Self>,
        ctx: &BuildContext,
        health: crate::base::Health,
    ) -> Result<Box<dyn Extension>, BuildError> {
        ExtensionConfig::build(*self, ctx, health)
    }
}

/// Every component kind Sidekick knows, by name.
#[derive(Default)]
pub struct Registry {
    pub receivers: BTreeMap<&'static str, Kind<Box<dyn LoadedReceiver>>>,
    pub processors: BTreeMap<&'static str, Kind<Arc<dyn LoadedProcessor>>>,
    pub exporters: BTreeMap<&'static str, Kind<Box<dyn LoadedExporter>>>,
    pub extensions: BTreeMap<&'static str, Kind<Box<dyn LoadedExtension>>>,
}

impl Registry {
    pub fn receiver<C: ReceiverConfig>(mut self, kind: &'static str) -> Self {
        let load: LoadFn<Box<dyn LoadedReceiver>> = Box::new(|node, path| {
            load::<C>(node, path, |c| c.validate())
                .map(|l| l.map(|c| Box::new(c) as Box<dyn LoadedReceiver>))
        });
        self.receivers.insert(
            kind,
            Kind {
                signals: C::SIGNALS,
                load,
            },
        );
        self
    }

    pub fn processor<C: ProcessorConfig>(mut self, kind: &'static str) -> Self {
        let load: LoadFn<Arc<dyn LoadedProcessor>> = Box::new(|node, path| {
            load::<C>(node, path, |c| c.validate())
                .map(|l| l.map(|c| Arc::new(c) as Arc<dyn LoadedProcessor>))
        });
        self.processors.insert(
            kind,
            Kind {
                signals: C::SIGNALS,
                load,
            },
        );
        self
    }

    pub fn exporter<C: ExporterConfig>(mut self, kind: &'static str) -> Self {
        if C::CLIENT.is_some() {
            let shared = crate::exporter::client::shared_keys();
            let own = sidekick_config::de::struct_fields::<C>();
            assert!(
                !own.iter().any(|k| shared.contains(k)),
                "exporter {kind}: a key of its own shadows a shared client key"
            );
        }
        let load: LoadFn<Box<dyn LoadedExporter>> = Box::new(|node, path| {
            load_exporter::<C>(node, path)
                .map(|l| l.map(|c| Box::new(c) as Box<dyn LoadedExporter>))
        });
        self.exporters.insert(
            kind,
            Kind {
                signals: C::SIGNALS,
                load,
            },
        );
        self
    }

    pub fn extension<C: ExtensionConfig>(mut self, kind: &'static str) -> Self {
        let load: LoadFn<Box<dyn LoadedExtension>> = Box::new(|node, path| {
            load::<C>(node, path, |c| c.validate())
                .map(|l| l.map(|c| Box::new(c) as Box<dyn LoadedExtension>))
        });
        self.extensions.insert(kind, Kind { signals: &[], load });
        self
    }
}

impl BuildContext<'_> {
    /// Server options for the listener named `listener` (e.g. `receivers.otlp/grpc`),
    /// its connection counts registered as self-metrics.
    pub fn listener_options(&self, listener: &str) -> ServerOptions {
        crate::listener::options(self.telemetry, listener)
    }
}

impl BuildContext<'_> {
    /// The authenticator for an `auth:` block at `field`, if one is set.
    pub fn authenticator(
        &self,
        reference: Option<&AuthRef>,
        field: &str,
        side: AuthSide,
    ) -> Result<Option<Arc<Authenticator>>, BuildError> {
        reference
            .map(|r| self.authenticators.get(r, field, side))
            .transpose()
    }
}

impl BuildContext<'_> {
    /// `options` with a listener's `tls` and `auth` applied; `prefix` is where they sit
    /// in the component's config, e.g. `protocols.grpc.` (or empty).
    pub fn secure_listener(
        &self,
        options: ServerOptions,
        prefix: &str,
        tls: Option<&ServerTls>,
        auth: Option<&AuthRef>,
    ) -> Result<ServerOptions, BuildError> {
        let tls = tls
            .map(|t| listener::acceptor(t, &format!("{prefix}tls")))
            .transpose()?;
        let auth = self.authenticator(auth, &format!("{prefix}auth"), AuthSide::Listener)?;
        Ok(ServerOptions {
            tls,
            auth,
            ..options
        })
    }
}

impl BuildContext<'_> {
    /// The storage extension named at `field` (e.g. a receiver's `storage`), if set.
    pub fn storage(
        &self,
        name: Option<&str>,
        field: &str,
    ) -> Result<Option<Arc<Storage>>, BuildError> {
        let Some(name) = name else {
            return Ok(None);
        };
        self.storages.get(name).cloned().map(Some).ok_or_else(|| {
            BuildError::new(format!(
                "{field}: \"{name}\" is not a file_storage extension in service.extensions: define it under extensions and list it in service.extensions"
            ))
        })
    }
}
