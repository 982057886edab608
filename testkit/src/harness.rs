//! Runs one processor between a queue the test feeds and a queue the test drains.

use sidekick_collector::component::Processor;
use sidekick_collector::payload::{Batch, Signal};
use sidekick_collector::pipe::{channel, Input, Output};
use sidekick_collector::telemetry::Gauge;
use tokio::task::JoinHandle;

pub struct ProcessorHarness<S: Signal> {
    /// Feed batches here; drop it (with [`ProcessorHarness::close`]) to end the input.
    pub input: Option<Output<S>>,
    /// What the processor sent on.
    pub output: Input<S>,
    pub task: JoinHandle<()>,
}

pub fn run_processor<S: Signal>(processor: Box<dyn Processor<S>>) -> ProcessorHarness<S> {
    let (in_tx, in_rx) = channel::<S>(1024, Gauge::default());
    let (out_tx, out_rx) = channel::<S>(1024, Gauge::default());
    let task = tokio::spawn(processor.run(in_rx, Output::new(vec![out_tx])));
    ProcessorHarness {
        input: Some(Output::new(vec![in_tx])),
        output: out_rx,
        task,
    }
}

impl<S: Signal> ProcessorHarness<S> {
    pub async fn send(&self, batch: Batch<S>) {
        self.input
            .as_ref()
            .expect("input still open")
            .send(batch)
            .await
            .expect("processor is running");
    }

    /// Ends the input and waits for the processor to finish.
    pub async fn close(&mut self) {
        self.input = None;
        (&mut self.task).await.expect("processor did not panic");
    }

    /// Every batch sent on so far.
    pub fn drain(&mut self) -> Vec<Batch<S>> {
        std::iter::from_fn(|| self.output.try_recv()).collect()
    }
}

/// Validates and builds an exporter the way the runtime would, for component tests.
pub fn build_exporter<C: sidekick_collector::component::ExporterConfig>(
    id: &str,
    config: C,
) -> Result<sidekick_collector::component::ExporterParts, sidekick_collector::component::BuildError>
{
    build_exporter_with(id, config, &sidekick_collector::telemetry::Telemetry::new())
}

/// [`build_exporter`] registering its metrics in `telemetry`.
pub fn build_exporter_with<C: sidekick_collector::component::ExporterConfig>(
    id: &str,
    config: C,
    telemetry: &sidekick_collector::telemetry::Telemetry,
) -> Result<sidekick_collector::component::ExporterParts, sidekick_collector::component::BuildError>
{
    let problems = sidekick_collector::component::check_exporter(&config);
    assert!(problems.is_empty(), "{id}: {problems:?}");
    let id: sidekick_collector::config::ComponentId = id.parse().expect("component id");
    let ctx = sidekick_collector::component::BuildContext {
        id: &id,
        telemetry,
        signals: &sidekick_collector::config::Signal::ALL,
        authenticators: &sidekick_collector::auth::NO_AUTHENTICATORS,
        storages: &sidekick_collector::storage::NO_STORAGES,
    };
    config.build(&ctx)
}
