//! The third phase: the built service runs until the shutdown signal, then drains. A
//! config reload in between starts the new config's pipelines beside the running ones,
//! repoints the receivers whose config did not change to them (their sockets and
//! connections stay), and drains the old pipelines in the background.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sidekick_config::{ComponentId, Node, Signal as SignalKind};
use sidekick_transport::server::ServerOptions;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{info, warn};

use crate::admin::{self, Health};
use crate::component::{BuildError, Extension, Receiver, ReceiverOutputs};
use crate::exporter;
use crate::journal;
use crate::payload::{LogsSignal, MetricsSignal, Signal, TracesSignal};
use crate::pipe::{self, Output, StopTrigger, Switch};
use crate::telemetry::Telemetry;

use super::build::{Keep, Senders};
use super::Plan;

/// A running component: a processor's or an exporter's task.
pub(super) type Task = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// A receiver's switches, per signal: where a reload repoints it.
#[derive(Default)]
pub(super) struct Switches {
    traces: Option<Arc<Switch<TracesSignal>>>,
    metrics: Option<Arc<Switch<MetricsSignal>>>,
    logs: Option<Arc<Switch<LogsSignal>>>,
}

impl Switches {
    /// `outputs` behind switches: what the receiver gets, and the switches.
    pub(super) fn wrap(outputs: ReceiverOutputs) -> (ReceiverOutputs, Switches) {
        fn one<S: Signal>(o: Option<Output<S>>) -> (Option<Output<S>>, Option<Arc<Switch<S>>>) {
            match o.map(Output::switched) {
                Some((out, switch)) => (Some(out), Some(switch)),
                None => (None, None),
            }
        }
        let (traces, t) = one(outputs.traces);
        let (metrics, m) = one(outputs.metrics);
        let (logs, l) = one(outputs.logs);
        (
            ReceiverOutputs {
                traces,
                metrics,
                logs,
            },
            Switches {
                traces: t,
                metrics: m,
                logs: l,
            },
        )
    }

    /// Sends go to `outputs` from now on (signal by signal; the receiver's signals are the
    /// same, or it would not have been kept).
    fn repoint(&self, outputs: ReceiverOutputs) {
        fn one<S: Signal>(switch: &Option<Arc<Switch<S>>>, o: Option<Output<S>>) {
            if let (Some(switch), Some(o)) = (switch, o) {
                switch.repoint(o);
            }
        }
        one(&self.traces, outputs.traces);
        one(&self.metrics, outputs.metrics);
        one(&self.logs, outputs.logs);
    }
}

/// A receiver built and not yet running, with what a reload compares.
pub(super) struct BuiltReceiver {
    pub(super) id: ComponentId,
    pub(super) node: Node,
    pub(super) signals: BTreeSet<SignalKind>,
    /// The addresses it listens on, as configured.
    pub(super) listen: Vec<String>,
    pub(super) receiver: Box<dyn Receiver>,
    pub(super) outputs: ReceiverOutputs,
    pub(super) switches: Switches,
}

/// An exporter built and not yet running, with what a reload compares.
pub(super) struct BuiltExporter {
    pub(super) id: ComponentId,
    pub(super) node: Node,
    pub(super) signals: BTreeSet<SignalKind>,
    /// Whether a reload may keep it running (nothing of it runs with the rest of its
    /// config: no port served, no batcher in front of its queue).
    pub(super) keepable: bool,
    /// Its queues, for a reload that keeps it to feed.
    pub(super) senders: Senders,
    pub(super) tasks: Vec<Task>,
    pub(super) deadline: exporter::DeadlineTrigger,
}

/// An exporter running, its queues open while a config feeds them.
struct RunningExporter {
    id: ComponentId,
    node: Node,
    signals: BTreeSet<SignalKind>,
    keepable: bool,
    senders: Senders,
    tasks: Vec<JoinHandle<()>>,
    deadline: exporter::DeadlineTrigger,
}

impl RunningExporter {
    fn start(e: BuiltExporter) -> Self {
        RunningExporter {
            id: e.id,
            node: e.node,
            signals: e.signals,
            keepable: e.keepable,
            senders: e.senders,
            tasks: e.tasks.into_iter().map(tokio::spawn).collect(),
            deadline: e.deadline,
        }
    }
}

/// A built topology, ready to run.
pub struct Service {
    pub(super) receivers: Vec<BuiltReceiver>,
    /// For a reload: the outputs of the running receivers it keeps.
    pub(super) kept_outputs: Vec<(ComponentId, ReceiverOutputs)>,
    pub(super) extension_nodes: Vec<(ComponentId, Node)>,
    pub(super) processors: Vec<Task>,
    pub(super) exporters: Vec<BuiltExporter>,
    pub(super) journals: Vec<Arc<dyn journal::Close>>,
    /// Held for the whole run: each keeps its directory locked.
    pub(super) storages: crate::storage::Storages,
    pub(super) extensions: Vec<Box<dyn Extension>>,
    pub(super) admin: Option<(TcpListener, Option<Telemetry>, ServerOptions)>,
    pub(super) stop_admin: StopTrigger,
    pub(super) deadline_trigger: exporter::DeadlineTrigger,
    pub(super) health: Health,
    pub(super) telemetry: Telemetry,
    pub(super) shutdown_timeout: Duration,
    /// `POST /-/reload` on the admin listener calls this, when set.
    pub(super) reload: Option<admin::Reload>,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Outcome {
    /// Items accepted but never delivered, over the whole run.
    pub dropped: u64,
    /// Items not delivered yet but kept in persistent queues for the next start.
    pub kept: u64,
}

impl Outcome {
    fn add(&mut self, other: Outcome) {
        self.dropped += other.dropped;
        self.kept += other.kept;
    }
}

impl Service {
    pub fn health(&self) -> Health {
        self.health.clone()
    }

    /// Serves `POST /-/reload` on the admin listener, calling `reload` (off by default).
    pub fn with_reload_endpoint(mut self, reload: admin::Reload) -> Self {
        self.reload = Some(reload);
        self
    }

    /// Runs until `shutdown` resolves, then drains within the shutdown timeout.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Outcome {
        let running = self.start();
        shutdown.await;
        running.stop().await
    }

    /// Starts every component; receivers last, once everything behind them runs.
    pub fn start(self) -> Running {
        let (generation, receivers, _) = self.launch();
        info!("everything is ready; begin running and processing data");
        Running {
            accounts: vec![Arc::clone(generation.telemetry.account())],
            receivers,
            generation,
            retiring: JoinSet::new(),
            retired: Outcome::default(),
        }
    }

    /// Starts the pipelines, the admin listener and the extensions, then the receivers
    /// built here; returns what runs and the outputs for receivers kept from before.
    fn launch(
        self,
    ) -> (
        Generation,
        Vec<RunningReceiver>,
        Vec<(ComponentId, ReceiverOutputs)>,
    ) {
        let Service {
            receivers,
            kept_outputs,
            extension_nodes,
            processors,
            exporters,
            journals,
            storages,
            extensions,
            admin,
            stop_admin,
            deadline_trigger,
            health,
            telemetry,
            shutdown_timeout,
            reload,
        } = self;
        let mut admin_tasks = JoinSet::new();
        if let Some((listener, metrics, options)) = admin {
            if let Ok(address) = listener.local_addr() {
                info!(address = %address, "admin endpoint listening (/metrics, /healthz, /readyz)");
            }
            admin_tasks.spawn(admin::run(
                listener,
                admin::Routes {
                    telemetry: metrics,
                    health: health.clone(),
                    reload: reload.clone(),
                },
                options,
                stop_admin.stop(),
            ));
        }
        for x in extensions {
            admin_tasks.spawn(x.run(stop_admin.stop()));
        }
        let exporters = exporters.into_iter().map(RunningExporter::start).collect();
        let mut processor_tasks = JoinSet::new();
        processors.into_iter().for_each(|t| {
            processor_tasks.spawn(t);
        });
        let running = receivers.into_iter().map(RunningReceiver::start).collect();
        health.set_ready(true);
        let generation = Generation {
            processors: processor_tasks,
            exporters,
            admin: admin_tasks,
            journals,
            storages,
            stop_admin,
            deadline_trigger,
            health,
            telemetry,
            shutdown_timeout,
            reload,
            extension_nodes,
        };
        (generation, running, kept_outputs)
    }
}

/// A receiver running in its own task, with its own stop.
struct RunningReceiver {
    id: ComponentId,
    node: Node,
    signals: BTreeSet<SignalKind>,
    listen: Vec<String>,
    switches: Switches,
    stop: StopTrigger,
    task: JoinHandle<()>,
}

impl RunningReceiver {
    fn start(r: BuiltReceiver) -> Self {
        let (stop, _) = pipe::stop_pair();
        let task = tokio::spawn(r.receiver.run(r.outputs, stop.stop()));
        RunningReceiver {
            id: r.id,
            node: r.node,
            signals: r.signals,
            listen: r.listen,
            switches: r.switches,
            stop,
            task,
        }
    }
}

/// One config's pipelines, admin listener and extensions, running.
struct Generation {
    processors: JoinSet<()>,
    exporters: Vec<RunningExporter>,
    admin: JoinSet<()>,
    journals: Vec<Arc<dyn journal::Close>>,
    storages: crate::storage::Storages,
    stop_admin: StopTrigger,
    deadline_trigger: exporter::DeadlineTrigger,
    health: Health,
    telemetry: Telemetry,
    shutdown_timeout: Duration,
    reload: Option<admin::Reload>,
    extension_nodes: Vec<(ComponentId, Node)>,
}

impl Generation {
    /// Waits for `receivers` to stop, then for the pipelines to drain, within the
    /// shutdown timeout; stops what is left and counts it.
    async fn drain(mut self, receivers: Vec<JoinHandle<()>>) -> Outcome {
        let deadline = tokio::time::Instant::now() + self.shutdown_timeout;
        let mut deadlines = Vec::new();
        let mut exporters: Vec<Option<JoinHandle<()>>> = Vec::new();
        for e in std::mem::take(&mut self.exporters) {
            // Its queues close once the pipelines feeding them are done.
            exporters.extend(e.tasks.into_iter().map(Some));
            deadlines.push(e.deadline);
        }
        let mut receivers: Vec<Option<JoinHandle<()>>> = receivers.into_iter().map(Some).collect();
        /// Waits for each task in turn, marking the finished ones.
        async fn join_all(tasks: &mut [Option<JoinHandle<()>>]) {
            for slot in tasks.iter_mut() {
                if let Some(task) = slot {
                    let _ = task.await;
                    *slot = None;
                }
            }
        }
        {
            let drain = async {
                join_all(&mut receivers).await;
                while self.processors.join_next().await.is_some() {}
                join_all(&mut exporters).await;
            };
            tokio::pin!(drain);
            if tokio::time::timeout_at(deadline, &mut drain).await.is_err() {
                if self.journals.is_empty() {
                    warn!("shutdown deadline passed; dropping what is still queued");
                } else {
                    warn!("shutdown deadline passed; dropping what is still queued in memory, keeping what is in persistent queues");
                }
                self.deadline_trigger.fire();
                deadlines.iter().for_each(exporter::DeadlineTrigger::fire);
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
        for task in receivers.iter().chain(&exporters).flatten() {
            task.abort();
        }
        join_all(&mut receivers).await;
        join_all(&mut exporters).await;
        self.processors.shutdown().await;
        self.stop_admin.fire();
        while self.admin.join_next().await.is_some() {}
        let kept: u64 = self.journals.iter().map(|j| j.close()).sum();
        drop(self.storages);
        Outcome {
            dropped: self.telemetry.account().dropped(),
            kept,
        }
    }
}

/// A service running: its receivers, the pipelines of the current config, and those of
/// earlier configs still draining after a reload.
pub struct Running {
    receivers: Vec<RunningReceiver>,
    generation: Generation,
    retiring: JoinSet<Outcome>,
    /// What the earlier configs' pipelines dropped or kept, once drained.
    retired: Outcome,
    /// Every config's account of what it accepted: an exporter a reload kept counts in
    /// the account of the config that built it, after that config's pipelines are gone.
    accounts: Vec<Arc<crate::base::Account>>,
}

/// What a reload changed.
#[derive(Debug, Default)]
pub struct Reloaded {
    /// Receivers that kept running, their sockets and connections with them.
    pub kept: Vec<String>,
    /// Receivers built anew (the pipelines and extensions always are).
    pub rebuilt: Vec<String>,
    /// Exporters that kept running, their queues with them.
    pub kept_exporters: Vec<String>,
}

impl Running {
    /// Whether a reload to `plan` can run the new pipelines beside the old ones while
    /// those drain: not when either config has a persistent queue, whose directory one
    /// process at a time may hold.
    pub fn can_reload_in_place(&self, plan: &Plan) -> bool {
        self.generation.journals.is_empty()
            && self.generation.storages.is_empty()
            && !plan.uses_storage()
    }

    /// Builds `plan` and runs it in place of the running config. Receivers whose config,
    /// signals and the extensions are unchanged keep running (with their sockets,
    /// connections and state) and are repointed to the new pipelines; the other
    /// receivers stop; the old pipelines drain in the background, as at shutdown. When
    /// the new config cannot be built, nothing running is touched. Counters carry over
    /// into `telemetry`, so the reload is no counter reset.
    pub fn reload(&mut self, plan: Plan, telemetry: Telemetry) -> Result<Reloaded, BuildError> {
        let same_extensions = same_nodes(&self.generation.extension_nodes, &plan.extension_nodes);
        let keep: Vec<ComponentId> =
            self.receivers
                .iter()
                .filter(|r| {
                    same_extensions
                        && plan.receivers.iter().any(|p| {
                            p.id == r.id && p.signals == r.signals && p.node.same_as(&r.node)
                        })
                })
                .map(|r| r.id.clone())
                .collect();
        // Exporters whose config and signals are the same keep running, their queues and
        // what is in flight with them: the new pipelines feed the same queues.
        let keep_exporters: Vec<(ComponentId, Senders)> =
            self.generation
                .exporters
                .iter()
                .filter(|e| {
                    same_extensions
                        && e.keepable
                        && plan.exporters.iter().any(|p| {
                            p.id == e.id && p.signals == e.signals && p.node.same_as(&e.node)
                        })
                })
                .map(|e| (e.id.clone(), e.senders.clone()))
                .collect();
        let kept_names: Vec<String> = keep.iter().map(ToString::to_string).collect();
        let kept_exporters: Vec<String> = keep_exporters
            .iter()
            .map(|(id, _)| id.to_string())
            .collect();
        telemetry.carry_over(&self.generation.telemetry, |labels| {
            labels.iter().any(|(k, v)| {
                (k == "receiver" && kept_names.contains(v))
                    || (k == "exporter" && kept_exporters.contains(v))
            })
        });
        let keep = Keep {
            receivers: keep,
            exporters: keep_exporters,
        };
        sidekick_transport::server::offer_kept_listeners();
        let mut service = match plan.build_keeping(telemetry, &keep) {
            Ok(service) => service,
            Err(e) => {
                sidekick_transport::server::restore_kept_listeners();
                return Err(e);
            }
        };
        let kept_addresses: Vec<String> = self
            .receivers
            .iter()
            .filter(|r| keep.receivers.contains(&r.id))
            .flat_map(|r| r.listen.iter().cloned())
            .collect();
        sidekick_transport::server::close_unclaimed_listeners_except(&kept_addresses);
        service.reload = self.generation.reload.clone();
        let rebuilt = service.receivers.iter().map(|r| r.id.to_string()).collect();
        let (mut generation, started, kept_outputs) = service.launch();
        self.accounts
            .push(Arc::clone(generation.telemetry.account()));
        let (moved, staying): (Vec<_>, Vec<_>) = std::mem::take(&mut self.generation.exporters)
            .into_iter()
            .partition(|e| keep.exporters.iter().any(|(id, _)| *id == e.id));
        self.generation.exporters = staying;
        generation.exporters.extend(moved);
        for (id, outputs) in kept_outputs {
            if let Some(r) = self.receivers.iter().find(|r| r.id == id) {
                r.switches.repoint(outputs);
            }
        }
        let (kept, stopped): (Vec<_>, Vec<_>) = std::mem::take(&mut self.receivers)
            .into_iter()
            .partition(|r| keep.receivers.contains(&r.id));
        stopped.iter().for_each(|r| r.stop.fire());
        // Earlier configs' pipelines that have drained by now are counted and let go.
        while let Some(done) = self.retiring.try_join_next() {
            self.retired.add(done.unwrap_or_default());
        }
        let old = std::mem::replace(&mut self.generation, generation);
        // The new admin listener serves from now on.
        old.stop_admin.fire();
        old.health.set_ready(false);
        let receivers = stopped.into_iter().map(|r| r.task).collect();
        self.retiring.spawn(async move {
            let outcome = old.drain(receivers).await;
            if outcome.dropped > 0 {
                tracing::error!(
                    dropped_items = outcome.dropped,
                    "the previous config's pipelines drained; what they could not deliver within the shutdown timeout was dropped"
                );
            } else {
                info!("the previous config's pipelines drained; everything they held was delivered");
            }
            outcome
        });
        self.receivers = kept;
        self.receivers.extend(started);
        Ok(Reloaded {
            kept: kept_names,
            rebuilt,
            kept_exporters,
        })
    }

    /// Stops the receivers, then drains the pipelines within the shutdown timeout.
    pub async fn stop(mut self) -> Outcome {
        let timeout = self.generation.shutdown_timeout;
        info!(
            ?timeout,
            "shutting down: stopping receivers, flushing batches, draining exporters"
        );
        self.generation.health.set_ready(false);
        self.receivers.iter().for_each(|r| r.stop.fire());
        let account = Arc::clone(self.generation.telemetry.account());
        let tasks = self.receivers.into_iter().map(|r| r.task).collect();
        let mut outcome = self.generation.drain(tasks).await;
        outcome.add(self.retired);
        while let Some(earlier) = self.retiring.join_next().await {
            outcome.add(earlier.unwrap_or_default());
        }
        // Everything has stopped: every config's account is final.
        outcome.dropped = self.accounts.iter().map(|a| a.dropped()).sum();
        let lost = account.lost();
        if outcome.dropped > 0 {
            tracing::error!(
                dropped_items = outcome.dropped,
                of_which_held_in_queues_or_buffers = lost,
                still_held_items = account.items(),
                kept_on_disk_items = outcome.kept,
                "stopped; some accepted data was dropped"
            );
        } else if outcome.kept > 0 {
            info!(
                kept_on_disk_items = outcome.kept,
                "stopped; nothing was lost: undelivered data is kept in the persistent queue for the next start"
            );
        } else {
            info!("stopped; all accepted data was delivered");
        }
        outcome
    }
}

/// Whether two `extensions` sections are the same, entry by entry.
fn same_nodes(a: &[(ComponentId, Node)], b: &[(ComponentId, Node)]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((i, x), (j, y))| i == j && x.same_as(y))
}
