use std::collections::HashMap;

use sidekick_collector::component::{check_exporter, load_exporter};
use sidekick_collector::config::{node, Secret};
use sidekick_testkit::gen::{metrics, span_names, traces};
use sidekick_testkit::harness::build_exporter;
use sidekick_testkit::sink::{Failure, OtlpSink};

use super::*;

fn build(config: Config) -> ExporterParts {
    build_exporter("otlp", config).unwrap()
}

fn to(endpoint: impl Into<String>) -> Config {
    let mut c = Config::default();
    c.client.endpoint = endpoint.into();
    c
}

fn config_for(sink: &OtlpSink, compression: Compression) -> Config {
    let mut c = Config {
        compression,
        ..to(sink.address.to_string())
    };
    c.client.tls.insecure = true;
    c.client.headers = [("x-tenant".to_string(), Secret("team-a".into()))].into();
    c
}

#[test]
fn config_example_parses() {
    let text = "endpoint: otel-gateway.observability:4317\ntls:\n  insecure: true\ncompression: gzip\nheaders:\n  x-tenant: team-a\ntimeout: 5s\n";
    let (root, _) = node::parse(text, &HashMap::new()).unwrap();
    let c: Config = load_exporter(&root, "exporters.otlp").unwrap().config;
    assert!(check_exporter(&c).is_empty());
    assert_eq!(
        c.target().unwrap(),
        ("http://otel-gateway.observability:4317".into(), false)
    );
    let c = to("backend:4317");
    assert_eq!(c.target().unwrap(), ("https://backend:4317".into(), true));
    let c = Config::default();
    assert_eq!(
        check_exporter(&c)[0].message,
        "endpoint is required, e.g. backend:4317"
    );
}

#[tokio::test]
async fn sends_to_a_grpc_backend_with_each_compression() {
    let sink = OtlpSink::start().await;
    for (i, compression) in [Compression::Gzip, Compression::Zstd, Compression::None]
        .into_iter()
        .enumerate()
    {
        let parts = build(config_for(&sink, compression));
        let batch = traces(i as u64 * 10, 2, 5);
        let delivered = parts.traces.as_ref().unwrap().export(&batch).await.unwrap();
        assert_eq!(delivered, Delivered::default());
        let headers = sink.headers();
        let last = headers.last().unwrap();
        assert_eq!(last["x-tenant"], "team-a");
        match compression.encoding() {
            Some(enc) => assert_eq!(last["grpc-encoding"], enc),
            None => assert!(!last.contains_key("grpc-encoding")),
        }
    }
    assert_eq!(sink.span_count(), 30);
    let first = &sink.traces()[0];
    assert_eq!(span_names(first)[0], "span-0");
    assert_eq!(first, &traces(0, 2, 5).to_request().unwrap());
    let parts = build(config_for(&sink, Compression::Gzip));
    parts
        .metrics
        .as_ref()
        .unwrap()
        .export(&metrics(0, 1, 3))
        .await
        .unwrap();
    assert_eq!(sink.metric_point_count(), 3);
}

#[tokio::test]
async fn classifies_grpc_failures() {
    let sink = OtlpSink::start().await;
    let parts = build(config_for(&sink, Compression::None));
    let exporter = parts.traces.unwrap();
    sink.fail_next(1, Failure::Grpc(tonic::Code::Unavailable));
    assert!(matches!(
        exporter.export(&traces(0, 1, 1)).await,
        Err(ExportError::Retryable { .. })
    ));
    // The data was refused: the helper splits it to find the item at fault.
    sink.fail_next(1, Failure::Grpc(tonic::Code::InvalidArgument));
    assert!(matches!(
        exporter.export(&traces(0, 1, 1)).await,
        Err(ExportError::Rejected { .. })
    ));
    sink.fail_next(1, Failure::Grpc(tonic::Code::ResourceExhausted));
    assert!(matches!(
        exporter.export(&traces(0, 1, 1)).await,
        Err(ExportError::Rejected { .. })
    ));
    exporter.export(&traces(0, 1, 1)).await.unwrap();
    assert_eq!(sink.rejected(), 3);
    // A partial success is read from the answer's message.
    sink.fail_next(1, Failure::Partial(2));
    let delivered = exporter.export(&traces(0, 1, 3)).await.unwrap();
    assert_eq!(delivered.rejected, 2);
    assert_eq!(delivered.reason, "scripted partial success");
}

#[tokio::test]
async fn a_batch_of_many_parts_is_sent_as_one_message() {
    let sink = OtlpSink::start().await;
    let parts = build(config_for(&sink, Compression::None));
    let mut batch = traces(0, 1, 2);
    for i in 1..50 {
        batch.append(traces(i * 2, 1, 2));
    }
    parts.traces.unwrap().export(&batch).await.unwrap();
    assert_eq!(sink.span_count(), 100);
    assert_eq!(sink.traces().len(), 1);
    assert_eq!(span_names(&sink.traces()[0])[99], "span-99");
}

#[tokio::test]
async fn unreachable_backend_is_retryable() {
    // Bind and drop to find a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let parts = build(to(format!("http://127.0.0.1:{port}")));
    let result = parts.traces.unwrap().export(&traces(0, 1, 1)).await;
    assert!(
        matches!(result, Err(ExportError::Retryable { .. })),
        "{result:?}"
    );
}
