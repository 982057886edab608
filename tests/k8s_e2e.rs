//! End to end: Sidekick in a (simulated) Pod. The downward API's environment variables
//! and volume files come from a temp dir; the OpenTelemetry SDK sends traces, metrics and
//! logs; the backend must see the Pod's identity on all of them, the app's own value must
//! win, and a labels file change must show up on new data.

mod common;

use std::time::Duration;

use common::{runtime, Sidekick, TempFile};
use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::{LogExporter, MetricExporter, SpanExporter, WithExportConfig};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use sidekick_testkit::sink::OtlpSink;

fn attr(r: &Resource, key: &str) -> Option<String> {
    r.attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.clone()),
            _ => None,
        }
    })
}

#[test]
fn pod_identity_on_every_signal() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = runtime();
    let sink = rt.block_on(OtlpSink::start());
    let labels = TempFile::new(
        "labels",
        "app=\"checkout\"\npod-template-hash=\"7d9f8b6c5\"\nversion=\"1.0\"\n",
    );
    let annotations = TempFile::new("annotations", "team=\"payments\"\n");
    let mut sk = Sidekick::start_with_env(
        &format!(
            "receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:0
processors:
  k8s_attributes:
    labels_file: {}
    annotations_file: {}
    labels: [\"*\"]
    annotations: [team]
    reload_interval: 100ms
  batch:
    timeout: 50ms
exporters:
  otlp:
    endpoint: {}
service:
  pipelines:
    traces: {{receivers: [otlp], processors: [k8s_attributes, batch], exporters: [otlp]}}
    metrics: {{receivers: [otlp], processors: [k8s_attributes, batch], exporters: [otlp]}}
    logs: {{receivers: [otlp], processors: [k8s_attributes, batch], exporters: [otlp]}}
",
            labels.0.display(),
            annotations.0.display(),
            sink.url()
        ),
        &[
            ("K8S_POD_NAME", "checkout-7d9f8b6c5-x2k9q"),
            ("K8S_NAMESPACE", "shop"),
            ("K8S_POD_UID", "0d1c2b3a"),
            ("K8S_NODE_NAME", "node-a"),
            ("K8S_POD_IP", "10.1.2.3"),
        ],
    );
    let endpoint = format!("http://{}", sk.grpc.unwrap());
    // The app sets its own namespace attribute: it must win over Sidekick's.
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("checkout")
        .with_attribute(KeyValue::new("k8s.namespace.name", "set-by-app"))
        .build();
    let send = |version: &str| {
        let spans = rt
            .block_on(async {
                SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(&endpoint)
                    .build()
            })
            .unwrap();
        let tracer_provider = SdkTracerProvider::builder()
            .with_simple_exporter(spans)
            .with_resource(resource.clone())
            .build();
        let mut span = tracer_provider.tracer("t").start(format!("op-{version}"));
        span.end();
        tracer_provider.shutdown().unwrap();
        let metrics = rt
            .block_on(async {
                MetricExporter::builder()
                    .with_tonic()
                    .with_endpoint(&endpoint)
                    .build()
            })
            .unwrap();
        let meter_provider = SdkMeterProvider::builder()
            .with_periodic_exporter(metrics)
            .with_resource(resource.clone())
            .build();
        meter_provider
            .meter("m")
            .u64_counter("hits")
            .build()
            .add(1, &[]);
        meter_provider.shutdown().unwrap();
        let logs = rt
            .block_on(async {
                LogExporter::builder()
                    .with_tonic()
                    .with_endpoint(&endpoint)
                    .build()
            })
            .unwrap();
        let logger_provider = SdkLoggerProvider::builder()
            .with_simple_exporter(logs)
            .with_resource(resource.clone())
            .build();
        let logger = logger_provider.logger("l");
        let mut record = logger.create_log_record();
        record.set_body(AnyValue::from(format!("log-{version}")));
        logger.emit(record);
        logger_provider.shutdown().unwrap();
    };
    send("1");
    assert!(rt.block_on(sink.wait_until(Duration::from_secs(15), |s| {
        s.span_count() >= 1 && s.log_count() >= 1 && s.metric_point_count() >= 1
    })));
    let resources: Vec<Resource> = sink
        .traces()
        .iter()
        .flat_map(|r| {
            r.resource_spans
                .iter()
                .map(|rs| rs.resource.clone().unwrap())
        })
        .chain(sink.metrics().iter().flat_map(|r| {
            r.resource_metrics
                .iter()
                .map(|rm| rm.resource.clone().unwrap())
        }))
        .chain(sink.logs().iter().flat_map(|r| {
            r.resource_logs
                .iter()
                .map(|rl| rl.resource.clone().unwrap())
        }))
        .collect();
    assert!(resources.len() >= 3);
    for r in &resources {
        assert_eq!(
            attr(r, "k8s.pod.name").as_deref(),
            Some("checkout-7d9f8b6c5-x2k9q")
        );
        assert_eq!(attr(r, "k8s.pod.uid").as_deref(), Some("0d1c2b3a"));
        assert_eq!(attr(r, "k8s.node.name").as_deref(), Some("node-a"));
        assert_eq!(attr(r, "k8s.pod.ip").as_deref(), Some("10.1.2.3"));
        assert_eq!(attr(r, "k8s.deployment.name").as_deref(), Some("checkout"));
        assert_eq!(
            attr(r, "k8s.replicaset.name").as_deref(),
            Some("checkout-7d9f8b6c5")
        );
        assert_eq!(attr(r, "k8s.pod.label.version").as_deref(), Some("1.0"));
        assert_eq!(
            attr(r, "k8s.pod.annotation.team").as_deref(),
            Some("payments")
        );
        assert_eq!(
            attr(r, "k8s.namespace.name").as_deref(),
            Some("set-by-app"),
            "the app's value wins"
        );
        assert_eq!(attr(r, "service.name").as_deref(), Some("checkout"));
    }

    // The labels change while the Pod runs.
    std::fs::write(
        &labels.0,
        "app=\"checkout\"\npod-template-hash=\"7d9f8b6c5\"\nversion=\"2.0\"\n",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    send("2");
    assert!(rt.block_on(sink.wait_until(Duration::from_secs(15), |s| {
        s.traces()
            .iter()
            .flat_map(|r| r.resource_spans.clone())
            .any(|rs| {
                attr(rs.resource.as_ref().unwrap(), "k8s.pod.label.version").as_deref()
                    == Some("2.0")
                    && rs
                        .scope_spans
                        .iter()
                        .flat_map(|ss| &ss.spans)
                        .any(|s| s.name == "op-2")
            })
    })));
    assert!(sk.terminate().success());
}
