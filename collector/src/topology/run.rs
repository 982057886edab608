//! The third phase: the built service runs until the shutdown signal, then drains.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sidekick_transport::server::ServerOptions;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::admin::{self, Health};
use crate::component::{Extension, Receiver, ReceiverOutputs};
use crate::exporter;
use crate::journal;
use crate::pipe::StopTrigger;
use crate::telemetry::Telemetry;

/// A running component: a processor's or an exporter's task.
pub(super) type Task = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// A built topology, ready to run.
pub struct Service {
    pub(super) receivers: Vec<(Box<dyn Receiver>, ReceiverOutputs)>,
    pub(super) processors: Vec<Task>,
    pub(super) exporters: Vec<Task>,
    pub(super) journals: Vec<Arc<dyn journal::Close>>,
    /// Held for the whole run: each keeps its directory locked.
    pub(super) storages: crate::storage::Storages,
    pub(super) extensions: Vec<Box<dyn Extension>>,
    pub(super) admin: Option<(TcpListener, Option<Telemetry>, ServerOptions)>,
    pub(super) stop_receivers: StopTrigger,
    pub(super) stop_admin: StopTrigger,
    pub(super) deadline_trigger: exporter::DeadlineTrigger,
    pub(super) health: Health,
    pub(super) telemetry: Telemetry,
    pub(super) shutdown_timeout: Duration,
    /// `POST /-/reload` on the admin listener calls this, when set.
    pub(super) reload: Option<admin::Reload>,
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

    /// Serves `POST /-/reload` on the admin listener, calling `reload` (off by default).
    pub fn with_reload_endpoint(mut self, reload: admin::Reload) -> Self {
        self.reload = Some(reload);
        self
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
                    reload,
                },
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
        let dropped = telemetry.account().dropped();
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
