use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use sidekick_config::{Document, Signal as SignalKind};

use super::*;
use crate::component::{
    BoxFuture, BuildContext, BuildError, ExporterConfig, ExporterParts, Listen, Receiver,
    ReceiverConfig, ReceiverOutputs, Registry,
};
use crate::exporter::{
    Delivered, Export, ExportError, ExportSettings, QueueSettings, RetrySettings,
};
use crate::payload::{Batch, MetricsSignal};
use crate::pipe::Stop;
use crate::telemetry::Telemetry;

/// A receiver of every signal that sends nothing.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct Source {
    endpoint: Option<String>,
}

struct Idle;

impl Receiver for Idle {
    fn run(self: Box<Self>, _outputs: ReceiverOutputs, mut stop: Stop) -> BoxFuture<'static, ()> {
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
