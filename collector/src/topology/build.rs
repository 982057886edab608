//! The second phase: every used component built (sockets bound) and the bounded queues
//! wired between them.

use std::path::PathBuf;
use std::sync::Arc;

use sidekick_config::{ComponentId, Signal as SignalKind};
use tracing::warn;

use super::plan::{Plan, PlannedPipeline};
use super::run::{BuiltExporter, BuiltReceiver, Service, Switches, Task};
use crate::admin::Health;
use crate::batching::{Batcher, Unit};
use crate::component::{
    AnyProcessor, BuildContext, BuildError, Chain, Entry, ExporterParts, Processor, ReceiverOutputs,
};
use crate::exporter::{self, Deadline, Export, ExportSettings, ExporterMetrics};
use crate::journal::{self, Journal, JournalSettings};
use crate::payload::{LogsSignal, MetricsSignal, Signal, TracesSignal};
use crate::pipe::{self, Output, Sender, Target};
use crate::telemetry::{Gauge, Telemetry};

/// Bytes (encoded) that may wait in front of each processor, including what the
/// processor holds (the batch processor's buffer counts here until it sends it on).
const PROCESSOR_QUEUE_BYTES: usize = 4 << 20;

impl Plan {
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

    /// Builds every component and wires the queues. Fails on the first component that
    /// cannot be built (port taken, unreadable file), before anything runs.
    pub fn build(self, telemetry: Telemetry) -> Result<Service, BuildError> {
        self.build_keeping(telemetry, &Keep::default())
    }

    /// [`Plan::build`] for a config reload that keeps the running receivers `keep`: they
    /// are not built again; the service holds the outputs to repoint them to instead.
    pub(super) fn build_keeping(
        self,
        telemetry: Telemetry,
        keep: &Keep,
    ) -> Result<Service, BuildError> {
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
        let (stop_admin, _) = pipe::stop_pair();
        let (deadline_trigger, deadline) = exporter::deadline_pair();
        let health = Health::default();
        let mut svc = Service {
            receivers: Vec::new(),
            kept_outputs: Vec::new(),
            extension_nodes: self.extension_nodes.clone(),
            processors: Vec::new(),
            exporters: Vec::new(),
            journals: Vec::new(),
            storages: Default::default(),
            extensions: Vec::new(),
            admin: None,
            stop_admin,
            deadline_trigger,
            health: health.clone(),
            telemetry: telemetry.clone(),
            shutdown_timeout: self.shutdown_timeout,
            reload: None,
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
            if let Some((_, senders)) = keep.exporters.iter().find(|(id, _)| *id == e.id) {
                exporter_senders.push(senders.clone());
                continue;
            }
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
            // One that serves a port or batches in front of its queue has parts that run
            // with the rest of its config: a reload builds it anew.
            let keepable = parts.server.is_none() && e.settings.queue.batch.is_none();
            if let Some(server) = parts.server.take() {
                svc.extensions.push(server);
            }
            let (trigger, deadline) = exporter::deadline_pair();
            let mut tasks = Vec::new();
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
                            &mut tasks,
                        )
                    }
                    SignalKind::Metrics => {
                        senders.metrics = start_exporter::<MetricsSignal>(
                            &mut svc,
                            &parts,
                            &e.settings,
                            &name,
                            &deadline,
                            &mut tasks,
                        )
                    }
                    SignalKind::Logs => {
                        senders.logs = start_exporter::<LogsSignal>(
                            &mut svc,
                            &parts,
                            &e.settings,
                            &name,
                            &deadline,
                            &mut tasks,
                        )
                    }
                }
            }
            svc.exporters.push(BuiltExporter {
                id: e.id,
                node: e.node,
                signals: e.signals,
                keepable,
                senders: senders.clone(),
                tasks,
                deadline: trigger,
            });
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
            let mut outputs = Entries::default();
            for (p, entry) in self.pipelines.iter().zip(&entries) {
                if p.receivers.contains(&i) {
                    outputs.extend(entry);
                }
            }
            if keep.receivers.contains(&r.id) {
                svc.kept_outputs.push((r.id, outputs.into_outputs()));
                continue;
            }
            let signals: Vec<SignalKind> = r.signals.iter().copied().collect();
            let ctx = BuildContext {
                id: &r.id,
                telemetry: &telemetry,
                signals: &signals,
                authenticators: &authenticators,
                storages: &storages,
            };
            let listen = r
                .loaded
                .listen_addresses()
                .into_iter()
                .map(|l| l.address)
                .collect();
            let receiver = r
                .loaded
                .build(&ctx)
                .map_err(|err| BuildError::new(format!("receivers.{}: {err}", r.id)))?;
            let (outputs, switches) = Switches::wrap(outputs.into_outputs());
            svc.receivers.push(BuiltReceiver {
                id: r.id,
                node: r.node,
                signals: r.signals,
                listen,
                receiver,
                outputs,
                switches,
            });
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
            ctx.listener_options("service.telemetry.metrics"),
            "service.telemetry.metrics.",
            m.tls.as_ref(),
            m.auth.as_ref(),
        )?;
        svc.admin = Some((listener, metrics, options));
        svc.storages = storages;
        Ok(svc)
    }
}

/// What a reload keeps running: receivers, and exporters with the queues to feed.
#[derive(Default)]
pub(super) struct Keep {
    pub(super) receivers: Vec<ComponentId>,
    pub(super) exporters: Vec<(ComponentId, Senders)>,
}

/// The queues of one exporter, per signal.
#[derive(Default, Clone)]
pub(super) struct Senders {
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

fn start_exporter<S: Route>(
    svc: &mut Service,
    parts: &ExporterParts,
    settings: &ExportSettings,
    name: &str,
    deadline: &Deadline,
    tasks: &mut Vec<Task>,
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
    tasks.push(task);
    let Some(batch) = &settings.queue.batch else {
        return vec![tx];
    };
    // `sending_queue.batch`: a batcher in front of the queue, run with the processors
    // so that it flushes before the exporter drains.
    let item_limit = tx.item_limit();
    let labels = [("exporter", name), ("data_type", S::KIND.as_str())];
    let (front, input) = pipe::channel_with::<S>(
        pipe::Limit::bytes(PROCESSOR_QUEUE_BYTES),
        Gauge::default(),
        t.gauge(
            "sidekick_exporter_batch_queue_bytes",
            "Encoded bytes waiting for an exporter's sending_queue.batch.",
            &labels,
        ),
        t.account().clone(),
    );
    let batcher = Batcher {
        send_size: batch.min_size.max(1),
        max_size: match batch.max_size {
            0 => usize::MAX,
            n => n,
        },
        unit: match batch.sizer {
            Some(pipe::Sizer::Bytes) => Unit::Bytes,
            _ => Unit::Items,
        },
        timeout: batch.flush_timeout.get(),
        size_triggers: t.counter(
            "otelcol_exporter_batch_size_trigger_send",
            "Number of times an exporter's sending_queue.batch sent because of its size.",
            &labels,
        ),
        timeout_triggers: t.counter(
            "otelcol_exporter_batch_timeout_trigger_send",
            "Number of times an exporter's sending_queue.batch sent because of its flush_timeout.",
            &labels,
        ),
    };
    svc.processors
        .push(Box::pin(batcher.run(input, Output::new(vec![tx]))));
    vec![front.with_item_limit(item_limit)]
}

/// A task of a pipeline: the processor (or chain) and the id its queue is named by.
type Stage<'p, S> = (&'p ComponentId, Box<dyn Processor<S>>);

/// A pipeline's processors as built: its entry, if processors lead it that run in the
/// receiver's call, and its stages that run as tasks.
type Stages<'p, S> = (Option<Entry<S>>, Vec<Stage<'p, S>>);

/// A pipeline's processors, built: the [`Entry`] its receivers run in their own call
/// (the admissions and per-batch processors that lead it, see
/// [`Processor::admission`] and [`Processor::into_sieve`]), and the stages that run
/// as tasks after it. Consecutive per-batch processors among those are one [`Chain`],
/// named by its first processor (the one whose queue is in front of it).
fn stages<'p, S: Route>(
    p: &'p PlannedPipeline,
    telemetry: &Telemetry,
) -> Result<Stages<'p, S>, BuildError> {
    let mut entry = Entry {
        admissions: Vec::new(),
        chain: Chain(Vec::new()),
    };
    let mut stages: Vec<Stage<'p, S>> = Vec::new();
    let mut chain: Option<(&ComponentId, Chain<S>)> = None;
    for (id, loaded) in &p.processors {
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
        let mut processor = S::processor(built).ok_or_else(|| {
            BuildError::new(format!("processors.{id}: built for the wrong signal"))
        })?;
        if stages.is_empty() && chain.is_none() {
            if let Some(admission) = processor.admission() {
                entry.admissions.push(admission);
                continue;
            }
            processor = match processor.into_sieve() {
                Ok(sieve) => {
                    entry.chain.0.push(sieve);
                    continue;
                }
                Err(p) => p,
            };
        }
        match processor.into_sieve() {
            Ok(sieve) => chain
                .get_or_insert_with(|| (id, Chain(Vec::new())))
                .1
                 .0
                .push(sieve),
            Err(processor) => {
                if let Some((first, sieves)) = chain.take() {
                    stages.push((first, Box::new(sieves)));
                }
                stages.push((id, processor));
            }
        }
    }
    if let Some((first, sieves)) = chain {
        stages.push((first, Box::new(sieves)));
    }
    let entry = (!entry.admissions.is_empty() || !entry.chain.0.is_empty()).then_some(entry);
    Ok((entry, stages))
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
    let (entry, stages) = stages(p, telemetry)?;
    for (id, processor) in stages.into_iter().rev() {
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
    // The entry runs in front of everything, the persistent queue too: what it
    // removes is never kept, what it refuses is refused to the client.
    let front = |targets: Vec<Target<S>>| match entry {
        Some(entry) => vec![Target::Front(Arc::new(entry), targets)],
        None => targets,
    };
    let Some((dir, settings)) = &w.persist else {
        return Ok(front(next.into_iter().map(Target::Queue).collect()));
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
    Ok(front(vec![Target::Durable(Box::new(sender))]))
}
