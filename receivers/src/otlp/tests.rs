use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use sidekick_collector::component::{BuildContext, Receiver, ReceiverOutputs};
use sidekick_collector::config::{from_node, node, ComponentId};
use sidekick_collector::payload::{MetricsSignal, Signal, TracesSignal};
use sidekick_collector::pipe::{channel, stop_pair, Input, Output, StopTrigger};
use sidekick_collector::telemetry::{Gauge, Telemetry};
use sidekick_testkit::gen::{span_names, traces_request};
use sidekick_transport::grpc::RawCodec;

use super::*;

struct Running {
    grpc: SocketAddr,
    http: SocketAddr,
    traces: Input<TracesSignal>,
    metrics: Input<MetricsSignal>,
    telemetry: Telemetry,
    _stop: StopTrigger,
}

/// Starts a receiver on free ports whose traces go to a queue of `capacity` batches.
fn start(capacity: usize, http_limit: usize) -> Running {
    start_limited(capacity, http_limit, None)
}

/// [`start`], with exporters behind the queue that send no item over `item_limit`.
fn start_limited(capacity: usize, http_limit: usize, item_limit: Option<usize>) -> Running {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = Config {
        protocols: Protocols {
            grpc: Some(GrpcConfig {
                endpoint: "127.0.0.1:0".into(),
                ..GrpcConfig::default()
            }),
            http: Some(HttpConfig {
                endpoint: "127.0.0.1:0".into(),
                max_request_body_size: http_limit,
                ..HttpConfig::default()
            }),
        },
    };
    let telemetry = Telemetry::new();
    let id: ComponentId = "otlp".parse().unwrap();
    let ctx = BuildContext {
        id: &id,
        telemetry: &telemetry,
        signals: &[SignalKind::Traces],
        authenticators: &sidekick_collector::auth::NO_AUTHENTICATORS,
        storages: &sidekick_collector::storage::NO_STORAGES,
    };
    let receiver = config.build_otlp(&ctx).unwrap();
    let grpc = receiver.grpc.as_ref().unwrap().0.local_addr().unwrap();
    let http = receiver.http.as_ref().unwrap().0.local_addr().unwrap();
    let (tx, traces) = channel::<TracesSignal>(capacity, Gauge::default());
    let (mtx, metrics) = channel::<MetricsSignal>(capacity, Gauge::default());
    let outputs = ReceiverOutputs {
        traces: Some(Output::new(vec![tx.with_item_limit(item_limit)])),
        metrics: Some(Output::new(vec![mtx])),
        ..ReceiverOutputs::default()
    };
    let (trigger, stop) = stop_pair();
    tokio::spawn(Box::new(receiver).run(outputs, stop));
    Running {
        grpc,
        http,
        traces,
        metrics,
        telemetry,
        _stop: trigger,
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().build().unwrap()
}

async fn post(
    addr: SocketAddr,
    path: &str,
    content_type: &str,
    encoding: Option<&str>,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut req = client()
        .post(format!("http://{addr}{path}"))
        .header("content-type", content_type)
        .body(body);
    if let Some(e) = encoding {
        req = req.header("content-encoding", e);
    }
    req.send().await.unwrap()
}

async fn grpc_export(addr: SocketAddr, body: Vec<u8>) -> Result<(), tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = tonic::client::Grpc::new(channel);
    client.ready().await.unwrap();
    let path = ::http::uri::PathAndQuery::from_static(TracesSignal::GRPC_PATH);
    client
        .unary(tonic::Request::new(vec![Bytes::from(body)]), path, RawCodec)
        .await
        .map(|_| ())
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[test]
fn config_example_and_protocol_selection() {
    let env = HashMap::new();
    let (root, _) = node::parse("protocols:\n  grpc:\n", &env).unwrap();
    let c: Config = from_node(&root, "receivers.otlp").unwrap();
    assert!(c.protocols.grpc.is_some() && c.protocols.http.is_none());
    let (root, _) = node::parse("", &env).unwrap();
    let c: Config = from_node(&root, "receivers.otlp").unwrap();
    assert!(c.protocols.grpc.is_some() && c.protocols.http.is_some());
    let (root, _) = node::parse("protocols: {}\n", &env).unwrap();
    let c: Config = from_node(&root, "receivers.otlp").unwrap();
    assert_eq!(
        c.validate()[0].message,
        "enable at least one protocol: grpc or http"
    );
    let (root, _) = node::parse("protocols:\n  grpc:\n    endpoint: 0.0.0.0:4317\n    max_recv_msg_size_mib: 16\n  http:\n    endpoint: 0.0.0.0:4318\n", &env).unwrap();
    let c: Config = from_node(&root, "receivers.otlp").unwrap();
    assert_eq!(c.protocols.grpc.unwrap().max_recv_msg_size_mib, 16);
}

#[tokio::test]
async fn grpc_passes_bytes_through_unchanged() {
    let mut r = start(16, 1 << 20);
    let request = traces_request(0, 2, 3);
    let encoded = request.encode_to_vec();
    grpc_export(r.grpc, encoded.clone()).await.unwrap();
    let batch = r.traces.recv().await.unwrap();
    assert_eq!(batch.len(), 6);
    assert_eq!(batch.encoded(), Bytes::from(encoded));
    assert!(r
        .telemetry
        .render()
        .contains("otelcol_receiver_accepted_spans_total{receiver=\"otlp\",transport=\"grpc\"} 6"));
}

#[tokio::test]
async fn grpc_refuses_malformed_data_and_keeps_serving() {
    let mut r = start(16, 1 << 20);
    let encoded = traces_request(0, 1, 3).encode_to_vec();
    let err = grpc_export(r.grpc, encoded[..encoded.len() - 3].to_vec())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    grpc_export(r.grpc, encoded).await.unwrap();
    assert_eq!(r.traces.recv().await.unwrap().len(), 3);
}

#[tokio::test]
async fn http_protobuf_gzip_and_zstd() {
    let mut r = start(16, 1 << 20);
    let encoded = traces_request(0, 1, 4).encode_to_vec();
    let resp = post(
        r.http,
        "/v1/traces",
        "application/x-protobuf",
        None,
        encoded.clone(),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/x-protobuf");
    assert!(resp.bytes().await.unwrap().is_empty());
    let resp = post(
        r.http,
        "/v1/traces",
        "application/x-protobuf",
        Some("gzip"),
        gzip(&encoded),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let zstd_body = zstd::encode_all(&encoded[..], 3).unwrap();
    let resp = post(
        r.http,
        "/v1/traces",
        "application/x-protobuf",
        Some("zstd"),
        zstd_body,
    )
    .await;
    assert_eq!(resp.status(), 200);
    for _ in 0..3 {
        assert_eq!(
            r.traces.recv().await.unwrap().encoded(),
            Bytes::from(encoded.clone())
        );
    }
}

/// The OTLP/JSON encoding: lowerCamelCase keys, hex ids, enums as integers, 64-bit
/// integers as strings.
#[tokio::test]
async fn http_json() {
    let mut r = start(16, 1 << 20);
    let json = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"checkout"}}]},
      "scopeSpans":[{"scope":{"name":"my.lib","version":"1.0"},"spans":[{
        "traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","parentSpanId":"eee19b7ec3c1b173",
        "name":"GET /cart","kind":2,"startTimeUnixNano":"1544712660000000000","endTimeUnixNano":"1544712661000000000",
        "attributes":[{"key":"http.response.status_code","value":{"intValue":"200"}},{"key":"ok","value":{"boolValue":true}}],
        "status":{"code":1}}]}]}]}"#;
    let resp = post(
        r.http,
        "/v1/traces",
        "application/json",
        None,
        json.as_bytes().to_vec(),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(resp.text().await.unwrap(), "{}");
    let batch = r.traces.recv().await.unwrap();
    let req: ExportTraceServiceRequest = batch.to_request().unwrap();
    let span = &req.resource_spans[0].scope_spans[0].spans[0];
    assert_eq!(span.trace_id, hex("5b8efff798038103d269b633813fc60c"));
    assert_eq!(span.span_id, hex("eee19b7ec3c1b174"));
    assert_eq!(span.parent_span_id, hex("eee19b7ec3c1b173"));
    assert_eq!(span.kind, 2);
    assert_eq!(span.start_time_unix_nano, 1544712660000000000);
    assert_eq!(span.name, "GET /cart");
    assert_eq!(span.status.as_ref().unwrap().code, 1);
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    assert_eq!(
        span.attributes[0].value.as_ref().unwrap().value,
        Some(Value::IntValue(200))
    );
    assert_eq!(
        span.attributes[1].value.as_ref().unwrap().value,
        Some(Value::BoolValue(true))
    );
    assert_eq!(
        req.resource_spans[0].scope_spans[0]
            .scope
            .as_ref()
            .unwrap()
            .name,
        "my.lib"
    );
    assert_eq!(span_names(&req), vec!["GET /cart"]);
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[tokio::test]
async fn http_bad_input_gets_the_right_status_and_server_keeps_serving() {
    let mut r = start(16, 64 * 1024);
    let good = traces_request(0, 1, 2).encode_to_vec();
    // Truncated protobuf: 400 with a google.rpc.Status body.
    let resp = post(
        r.http,
        "/v1/traces",
        "application/x-protobuf",
        None,
        good[..good.len() - 2].to_vec(),
    )
    .await;
    assert_eq!(resp.status(), 400);
    let status = sidekick_transport::grpc::RpcStatus::decode(resp.bytes().await.unwrap()).unwrap();
    assert_eq!(status.code, 3);
    assert!(
        status.message.starts_with("malformed protobuf"),
        "{}",
        status.message
    );
    // Wrong content type.
    let resp = post(r.http, "/v1/traces", "text/plain", None, good.clone()).await;
    assert_eq!(resp.status(), 415);
    // Unknown compression.
    let resp = post(
        r.http,
        "/v1/traces",
        "application/x-protobuf",
        Some("br"),
        good.clone(),
    )
    .await;
    assert_eq!(resp.status(), 415);
    // A gzip bomb: 16 MiB of zeros compress to ~16 KiB, under the 64 KiB body limit, so
    // only the inflated size can trip it.
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(&vec![0u8; 16 << 20]).unwrap();
    let bomb = e.finish().unwrap();
    assert!(bomb.len() < 64 * 1024, "bomb is {} bytes", bomb.len());
    let resp = post(
        r.http,
        "/v1/traces",
        "application/x-protobuf",
        Some("gzip"),
        bomb,
    )
    .await;
    assert_eq!(resp.status(), 413);
    // An oversize body.
    let resp = post(
        r.http,
        "/v1/traces",
        "application/x-protobuf",
        None,
        vec![0u8; 65 * 1024],
    )
    .await;
    assert_eq!(resp.status(), 413);
    // Invalid JSON: 400 with a JSON status body.
    let resp = post(
        r.http,
        "/v1/traces",
        "application/json",
        None,
        b"{\"resourceSpans\": [".to_vec(),
    )
    .await;
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    assert_eq!(body["code"], 3);
    // Unknown path and a signal with no pipeline.
    assert_eq!(
        post(
            r.http,
            "/v1/nope",
            "application/x-protobuf",
            None,
            good.clone()
        )
        .await
        .status(),
        404
    );
    assert_eq!(
        post(
            r.http,
            "/v1/logs",
            "application/x-protobuf",
            None,
            Vec::new()
        )
        .await
        .status(),
        404
    );
    // Wrong method.
    let resp = client()
        .get(format!("http://{}/v1/traces", r.http))
        .header("content-type", "application/x-protobuf")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    // The next good request still succeeds, and only it reached the pipeline.
    let resp = post(r.http, "/v1/traces", "application/x-protobuf", None, good).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(r.traces.recv().await.unwrap().len(), 2);
    assert!(r.traces.try_recv().is_none());
}

#[tokio::test]
async fn full_pipeline_is_refused_retryably() {
    let mut r = start(1, 1 << 20);
    let good = traces_request(0, 1, 2).encode_to_vec();
    assert_eq!(
        post(
            r.http,
            "/v1/traces",
            "application/x-protobuf",
            None,
            good.clone()
        )
        .await
        .status(),
        200
    );
    // The queue holds one batch and nobody drains it.
    let resp = post(
        r.http,
        "/v1/traces",
        "application/x-protobuf",
        None,
        good.clone(),
    )
    .await;
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    let err = grpc_export(r.grpc, good.clone()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    let text = r.telemetry.render();
    assert!(
        text.contains(
            "otelcol_receiver_refused_spans_total{receiver=\"otlp\",transport=\"http\"} 2"
        ),
        "{text}"
    );
    // Once there is room again, data is accepted.
    r.traces.recv().await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        post(r.http, "/v1/traces", "application/x-protobuf", None, good)
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn grpc_refuses_oversize_and_compression_bombs() {
    let mut r = start(16, 1 << 20);
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", r.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let path = || ::http::uri::PathAndQuery::from_static(TracesSignal::GRPC_PATH);
    // 16 MiB of zeros, gzip-compressed to a few KiB: the 4 MiB limit applies after
    // decompression.
    let mut client = tonic::client::Grpc::new(channel.clone())
        .send_compressed(tonic::codec::CompressionEncoding::Gzip)
        .max_encoding_message_size(usize::MAX);
    client.ready().await.unwrap();
    let bomb = vec![Bytes::from(vec![0u8; 16 << 20])];
    let err = client
        .unary(tonic::Request::new(bomb), path(), RawCodec)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err}");
    // 5 MiB uncompressed: over the limit before any decoding.
    let mut plain = tonic::client::Grpc::new(channel).max_encoding_message_size(usize::MAX);
    plain.ready().await.unwrap();
    let big = vec![Bytes::from(vec![0u8; 5 << 20])];
    let err = plain
        .unary(tonic::Request::new(big), path(), RawCodec)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err}");
    // Still serving.
    grpc_export(r.grpc, traces_request(0, 1, 1).encode_to_vec())
        .await
        .unwrap();
    assert_eq!(r.traces.recv().await.unwrap().len(), 1);
    assert!(r.traces.try_recv().is_none());
}

/// OTLP/JSON metrics: a gauge with `asDouble`, a sum with `asInt` as a string, a
/// histogram with string counts.
#[tokio::test]
async fn http_json_metrics() {
    use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point::Value as Num};
    let mut r = start(16, 1 << 20);
    let json = r#"{"resourceMetrics":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"svc"}}]},
      "scopeMetrics":[{"scope":{"name":"m"},"metrics":[
        {"name":"temp","unit":"Cel","gauge":{"dataPoints":[{"asDouble":21.5,"timeUnixNano":"1700000000000000000"}]}},
        {"name":"hits","sum":{"aggregationTemporality":2,"isMonotonic":true,"dataPoints":[{"asInt":"42","startTimeUnixNano":"1690000000000000000","timeUnixNano":"1700000000000000000","attributes":[{"key":"path","value":{"stringValue":"/a"}}]}]}},
        {"name":"lat","histogram":{"aggregationTemporality":2,"dataPoints":[{"count":"3","sum":1.5,"bucketCounts":["1","2"],"explicitBounds":[0.5],"timeUnixNano":"1700000000000000000"}]}}
      ]}]}]}"#;
    let resp = post(
        r.http,
        "/v1/metrics",
        "application/json",
        None,
        json.as_bytes().to_vec(),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let batch = r.metrics.recv().await.unwrap();
    assert_eq!(batch.len(), 3);
    let req = batch.to_request().unwrap();
    let metrics = &req.resource_metrics[0].scope_metrics[0].metrics;
    match &metrics[0].data {
        Some(Data::Gauge(g)) => assert_eq!(g.data_points[0].value, Some(Num::AsDouble(21.5))),
        other => panic!("{other:?}"),
    }
    match &metrics[1].data {
        Some(Data::Sum(s)) => {
            assert!(s.is_monotonic);
            assert_eq!(s.aggregation_temporality, 2);
            assert_eq!(s.data_points[0].value, Some(Num::AsInt(42)));
            assert_eq!(s.data_points[0].start_time_unix_nano, 1690000000000000000);
        }
        other => panic!("{other:?}"),
    }
    match &metrics[2].data {
        Some(Data::Histogram(h)) => {
            assert_eq!(h.data_points[0].count, 3);
            assert_eq!(h.data_points[0].bucket_counts, vec![1, 2]);
            assert_eq!(h.data_points[0].explicit_bounds, vec![0.5]);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn both_protocols_are_served_on_both_listeners() {
    let mut r = start(16, 1 << 20);
    for (i, addr) in [r.grpc, r.http].into_iter().enumerate() {
        let spans = i as u64 * 10;
        grpc_export(addr, traces_request(spans, 1, 2).encode_to_vec())
            .await
            .unwrap();
        assert_eq!(r.traces.recv().await.unwrap().len(), 2);
        let body = traces_request(spans + 5, 1, 3).encode_to_vec();
        let resp = post(addr, "/v1/traces", "application/x-protobuf", None, body).await;
        assert_eq!(resp.status(), 200, "OTLP/HTTP on listener {i}");
        assert_eq!(r.traces.recv().await.unwrap().len(), 3);
    }
    let page = r.telemetry.render();
    assert!(page
        .contains("otelcol_receiver_accepted_spans_total{receiver=\"otlp\",transport=\"grpc\"} 4"));
    assert!(page
        .contains("otelcol_receiver_accepted_spans_total{receiver=\"otlp\",transport=\"http\"} 6"));
}

#[tokio::test]
async fn unservable_requests_get_an_error_status_and_are_counted() {
    let r = start(16, 1 << 20);
    let body = || traces_request(0, 1, 1).encode_to_vec();
    // Plain HTTP to a gRPC method path, on the gRPC port: not a silent 200.
    let resp = post(
        r.grpc,
        TracesSignal::GRPC_PATH,
        "application/x-protobuf",
        None,
        body(),
    )
    .await;
    assert_eq!(resp.status(), 415);
    // Unknown path, wrong method, a signal no pipeline takes (logs).
    let resp = post(r.grpc, "/v1/trace", "application/x-protobuf", None, body()).await;
    assert_eq!(resp.status(), 404);
    let resp = client()
        .get(format!("http://{}/v1/traces", r.http))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "POST");
    let resp = post(r.http, "/v1/logs", "application/json", None, b"{}".to_vec()).await;
    assert_eq!(resp.status(), 404);
    let resp = post(r.http, "/v1/traces", "text/plain", None, body()).await;
    assert_eq!(resp.status(), 415);
    let page = r.telemetry.render();
    for (reason, n) in [
        ("unsupported_media_type", 2),
        ("unknown_path", 1),
        ("method_not_allowed", 1),
        ("no_pipeline", 1),
    ] {
        let series = format!(
            "sidekick_receiver_refused_requests_total{{receiver=\"otlp\",reason=\"{reason}\"}} {n}\n"
        );
        assert!(page.contains(&series), "{series} in\n{page}");
    }
}

/// A span attribute holding an AnyValue nested `levels` arrays deep, as a whole traces
/// request. Written outside-in: encoding it with prost would recurse once per level.
fn deeply_nested_request(levels: usize) -> Vec<u8> {
    use prost::encoding::{encode_varint, encoded_len_varint};
    use sidekick_collector::payload::wire::put_len_field;
    let framed = |len: u64| 1 + encoded_len_varint(len) as u64 + len;
    let mut leaf = Vec::new();
    put_len_field(&mut leaf, 1, b"leaf");
    let mut headers = Vec::with_capacity(levels);
    let mut size = leaf.len() as u64;
    for _ in 0..levels {
        // AnyValue.array_value(5) → ArrayValue.values(1) → the next AnyValue.
        let array = framed(size);
        let mut h = vec![0x2a];
        encode_varint(array, &mut h);
        h.push(0x0a);
        encode_varint(size, &mut h);
        headers.push(h);
        size = framed(array);
    }
    let mut value: Vec<u8> = headers.into_iter().rev().flatten().collect();
    value.extend_from_slice(&leaf);
    let mut kv = Vec::new();
    put_len_field(&mut kv, 1, b"k");
    put_len_field(&mut kv, 2, &value);
    let mut span = sidekick_testkit::gen::span(0).encode_to_vec();
    put_len_field(&mut span, 9, &kv);
    let mut scope = Vec::new();
    put_len_field(&mut scope, 2, &span);
    let mut rs = Vec::new();
    put_len_field(&mut rs, 2, &scope);
    let mut request = Vec::new();
    put_len_field(&mut request, 1, &rs);
    request
}

/// Requests that frame correctly but break the OTLP schema in their second span, each
/// with the reason its refusal must name.
fn invalid_trace_requests() -> Vec<(&'static str, Vec<u8>)> {
    let mut req = traces_request(0, 1, 2);
    req.resource_spans[0].scope_spans[0].spans[1].name = "bad-name".into();
    let mut utf8 = req.encode_to_vec();
    let at = utf8.windows(8).position(|w| w == b"bad-name").unwrap();
    utf8[at..at + 2].copy_from_slice(&[0xff, 0xfe]);
    let mut req = traces_request(0, 1, 2);
    req.resource_spans[0].scope_spans[0].spans[1].trace_id = vec![7; 17];
    let long_id = req.encode_to_vec();
    vec![
        ("invalid UTF-8 in a string field", utf8),
        ("trace_id must be 16 bytes", long_id),
        ("AnyValue nested too deeply", deeply_nested_request(100_000)),
    ]
}

/// One bad span refuses its whole request, over gRPC and OTLP/HTTP protobuf alike, with
/// a message naming the problem and its byte offset; nothing of it reaches the pipeline
/// and the receiver keeps serving.
#[tokio::test]
async fn requests_with_an_invalid_item_are_refused_whole_on_both_protocols() {
    let mut r = start(16, 8 << 20);
    for (reason, body) in invalid_trace_requests() {
        let err = grpc_export(r.grpc, body.clone()).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{reason}");
        assert!(
            err.message().starts_with("malformed protobuf at byte ")
                && err.message().contains(reason),
            "{reason}: {}",
            err.message()
        );
        let resp = post(r.http, "/v1/traces", "application/x-protobuf", None, body).await;
        assert_eq!(resp.status(), 400, "{reason}");
        let status =
            sidekick_transport::grpc::RpcStatus::decode(resp.bytes().await.unwrap()).unwrap();
        assert_eq!(status.code, 3, "{reason}");
        assert!(
            status.message.contains(reason),
            "{reason}: {}",
            status.message
        );
    }
    let good = traces_request(0, 1, 2).encode_to_vec();
    grpc_export(r.grpc, good.clone()).await.unwrap();
    let resp = post(r.http, "/v1/traces", "application/x-protobuf", None, good).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(r.traces.recv().await.unwrap().len(), 2);
    assert_eq!(r.traces.recv().await.unwrap().len(), 2);
    assert!(r.traces.try_recv().is_none());
}

/// OTLP/JSON: serde accepts a `traceId` of any even number of hex digits, so the decoded
/// request goes through the same check. Invalid UTF-8 and deep nesting stop at serde
/// already; all of them get 400 with a JSON status naming the problem.
#[tokio::test]
async fn json_requests_are_held_to_the_same_rules() {
    let mut r = start(16, 8 << 20);
    let span = |trace_id: &str, span_id: &str| {
        format!(
            r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{"name":"a","traceId":"{trace_id}","spanId":"{span_id}"}}]}}]}}]}}"#
        )
        .into_bytes()
    };
    let trace_id = "5b8efff798038103d269b633813fc60c";
    let span_id = "eee19b7ec3c1b174";
    let missing_trace_id =
        br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"name":"a","spanId":"eee19b7ec3c1b174"}]}]}]}"#
            .to_vec();
    let mut bad_utf8 = span(trace_id, span_id);
    let at = bad_utf8
        .windows(8)
        .position(|w| w == b"\"name\":\"")
        .unwrap()
        + 8;
    bad_utf8[at] = 0xff;
    let lone_surrogate = String::from_utf8(span(trace_id, span_id))
        .unwrap()
        .replace(r#""name":"a""#, r#""name":"\udcff""#)
        .into_bytes();
    let levels = 100_000;
    let deep = format!(
        r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{"traceId":"{trace_id}","spanId":"{span_id}","attributes":[{{"key":"k","value":{}{{"stringValue":"leaf"}}{}}}]}}]}}]}}]}}"#,
        r#"{"arrayValue":{"values":["#.repeat(levels),
        "]}}".repeat(levels)
    )
    .into_bytes();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "trace_id must be 16 bytes",
            span(&format!("{trace_id}ab"), span_id),
        ),
        ("trace_id must be 16 bytes", span("abcd", span_id)),
        ("trace_id must be 16 bytes", span("", span_id)),
        ("trace_id must be 16 bytes", missing_trace_id),
        ("span_id must be 8 bytes", span(trace_id, "eee19b7ec3c1b1")),
        ("invalid OTLP/JSON", bad_utf8),
        ("invalid OTLP/JSON", lone_surrogate),
        ("invalid OTLP/JSON", deep),
    ];
    for (reason, body) in cases {
        let resp = post(r.http, "/v1/traces", "application/json", None, body).await;
        assert_eq!(resp.status(), 400, "{reason}");
        let status: serde_json::Value =
            serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
        assert_eq!(status["code"], 3, "{reason}");
        let message = status["message"].as_str().unwrap();
        assert!(
            message.starts_with("invalid OTLP/JSON: ") && message.contains(reason),
            "{reason}: {message}"
        );
    }
    // A root span (empty parentSpanId) is fine, and the receiver still serves.
    let good = String::from_utf8(span(trace_id, span_id))
        .unwrap()
        .replace(r#""name":"a""#, r#""name":"a","parentSpanId":"""#);
    let resp = post(
        r.http,
        "/v1/traces",
        "application/json",
        None,
        good.into_bytes(),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(r.traces.recv().await.unwrap().len(), 1);
    assert!(r.traces.try_recv().is_none());
}

/// The testkit's generated data, which tests and benches everywhere rely on, passes.
#[tokio::test]
async fn testkit_requests_of_every_signal_pass_the_check() {
    use sidekick_collector::payload::{Logs, Metrics, Traces};
    use sidekick_testkit::gen::{logs_request, metrics_request};
    let traces = traces_request(0, 3, 4).encode_to_vec();
    assert_eq!(Traces::from_encoded(Bytes::from(traces)).unwrap().len(), 12);
    let metrics = metrics_request(0, 2, 5).encode_to_vec();
    assert_eq!(
        Metrics::from_encoded(Bytes::from(metrics.clone()))
            .unwrap()
            .len(),
        10
    );
    let logs = logs_request(0, 2, 3).encode_to_vec();
    assert_eq!(Logs::from_encoded(Bytes::from(logs)).unwrap().len(), 6);
    let mut r = start(16, 1 << 20);
    let resp = post(
        r.http,
        "/v1/metrics",
        "application/x-protobuf",
        None,
        metrics,
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(r.metrics.recv().await.unwrap().len(), 10);
}

#[tokio::test]
async fn an_item_no_exporter_could_send_is_refused_at_once() {
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    let mut r = start_limited(16, 8 << 20, Some(64 << 10));
    let mut request = traces_request(0, 1, 3);
    let spans = &mut request.resource_spans[0].scope_spans[0].spans;
    spans[1].attributes.push(KeyValue {
        key: "blob".into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue("x".repeat(100 << 10))),
        }),
        ..Default::default()
    });
    let body = request.encode_to_vec();
    let err = grpc_export(r.grpc, body.clone()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    let resp = post(r.http, "/v1/traces", "application/x-protobuf", None, body).await;
    assert_eq!(resp.status(), 413);
    assert!(r.traces.try_recv().is_none());
    // Many small items over the limit together are fine: exporters split them.
    let big = traces_request(0, 50, 100).encode_to_vec();
    assert!(big.len() > 64 << 10, "{}", big.len());
    grpc_export(r.grpc, big).await.unwrap();
    assert_eq!(r.traces.recv().await.unwrap().len(), 5000);
}
