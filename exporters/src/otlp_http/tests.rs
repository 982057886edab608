use std::collections::HashMap;
use std::time::Duration;

use sidekick_collector::component::{check_exporter, load_exporter};
use sidekick_collector::config::{node, Secret};
use sidekick_testkit::gen::{logs, traces};
use sidekick_testkit::harness::build_exporter;
use sidekick_testkit::sink::{Failure, OtlpSink};

use super::*;

fn build(config: Config) -> ExporterParts {
    build_exporter("otlphttp", config).unwrap()
}

fn to(endpoint: impl Into<String>) -> Config {
    let mut c = Config::default();
    c.client.endpoint = endpoint.into();
    c
}

fn config_for(sink: &OtlpSink, compression: Compression) -> Config {
    let mut c = Config {
        compression,
        ..to(sink.url())
    };
    c.client.headers = [("authorization".to_string(), Secret("Bearer t0ken".into()))].into();
    c
}

#[test]
fn config_example_parses_and_checks_urls() {
    let text = "endpoint: https://otlp.example.com\ncompression: gzip\nheaders:\n  authorization: Bearer x\n";
    let (root, _) = node::parse(text, &HashMap::new()).unwrap();
    let c: Config = load_exporter(&root, "exporters.otlphttp").unwrap().config;
    assert!(check_exporter(&c).is_empty());
    assert_eq!(
        c.urls()[0].1.as_deref(),
        Some("https://otlp.example.com/v1/traces")
    );
    let c = to("otlp.example.com:4318");
    assert_eq!(
        check_exporter(&c)[0].message,
        "invalid URL \"otlp.example.com:4318\": write http://host:port or https://host:port"
    );
    let c = Config {
        encoding: "json".into(),
        ..to("http://x")
    };
    assert_eq!(check_exporter(&c)[0].message, "only \"proto\" is supported");
}

#[tokio::test]
async fn sends_protobuf_with_each_compression() {
    let sink = OtlpSink::start().await;
    for compression in [Compression::Gzip, Compression::Zstd, Compression::None] {
        let parts = build(config_for(&sink, compression));
        parts
            .traces
            .as_ref()
            .unwrap()
            .export(&traces(0, 1, 4))
            .await
            .unwrap();
        let headers = sink.headers();
        let last = headers.last().unwrap();
        assert_eq!(last["authorization"], "Bearer t0ken");
        assert_eq!(last["content-type"], "application/x-protobuf");
        assert!(last["user-agent"]
            .to_str()
            .unwrap()
            .starts_with("Sidekick/"));
        match compression.encoding() {
            Some(enc) => assert_eq!(last["content-encoding"], enc),
            None => assert!(!last.contains_key("content-encoding")),
        }
    }
    assert_eq!(sink.span_count(), 12);
    let parts = build(config_for(&sink, Compression::Gzip));
    parts
        .logs
        .as_ref()
        .unwrap()
        .export(&logs(0, 2, 2))
        .await
        .unwrap();
    assert_eq!(sink.logs()[0], logs(0, 2, 2).to_request().unwrap());
}

#[tokio::test]
async fn retries_only_what_the_spec_allows() {
    let sink = OtlpSink::start().await;
    let exporter = build(config_for(&sink, Compression::None)).traces.unwrap();
    sink.fail_next(1, Failure::Http(503, Some(7)));
    match exporter.export(&traces(0, 1, 1)).await {
        Err(ExportError::Retryable { retry_after, .. }) => {
            assert_eq!(retry_after, Some(Duration::from_secs(7)))
        }
        other => panic!("expected retryable, got {other:?}"),
    }
    for code in [429, 502, 504] {
        sink.fail_next(1, Failure::Http(code, None));
        assert!(
            matches!(
                exporter.export(&traces(0, 1, 1)).await,
                Err(ExportError::Retryable { .. })
            ),
            "{code}"
        );
    }
    for code in [401, 403, 404, 500] {
        sink.fail_next(1, Failure::Http(code, None));
        assert!(
            matches!(
                exporter.export(&traces(0, 1, 1)).await,
                Err(ExportError::Permanent { .. })
            ),
            "{code}"
        );
    }
    // The data was refused: the helper splits it to find the item at fault.
    for code in [400, 413] {
        sink.fail_next(1, Failure::Http(code, None));
        assert!(
            matches!(
                exporter.export(&traces(0, 1, 1)).await,
                Err(ExportError::Rejected { .. })
            ),
            "{code}"
        );
    }
    exporter.export(&traces(0, 1, 1)).await.unwrap();
    assert_eq!(sink.span_count(), 1);
}
