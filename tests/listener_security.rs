//! Sidekick's listeners under TLS, mutual TLS and authenticator extensions, with the real
//! binary: the OpenTelemetry SDK sending over gRPC with TLS and a bearer token, HTTPS
//! clients with and without client certificates, certificates rotated under a live
//! connection, and credentials refused before the request body is read.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{metric_value, runtime, Sidekick, TempFile};
use opentelemetry::trace::{Tracer, TracerProvider};
use opentelemetry_otlp::{SpanExporter, WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use prost::Message;
use sidekick_testkit::free_port;
use sidekick_testkit::gen::traces_request;
use sidekick_testkit::pki::Pki;
use sidekick_testkit::sink::OtlpSink;

const TOKEN: &str = "t0ken-for-the-listener";

/// reqwest's TLS needs a crypto provider installed in the process.
fn setup() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The admin endpoint over TLS, JSON logs as the test harness needs them.
fn tls_telemetry(pki: &Pki) -> String {
    format!(
        "  telemetry:\n    logs:\n      encoding: json\n    metrics:\n      address: 127.0.0.1:0\n      tls:\n        cert_file: {}\n        key_file: {}\n",
        pki.path("server.pem"),
        pki.path("server-key.pem")
    )
}

fn https_client(pki: &Pki, with_client_cert: bool) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_backend_preconfigured(pki.client_config(with_client_cert))
        .tls_info(true)
        .build()
        .unwrap()
}

fn traces_body() -> Vec<u8> {
    traces_request(0, 1, 3).encode_to_vec()
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    auth: Option<&str>,
) -> reqwest::Result<reqwest::Response> {
    let mut request = client
        .post(url)
        .header("content-type", "application/x-protobuf")
        .body(traces_body());
    if let Some(a) = auth {
        request = request.header("authorization", a);
    }
    request.send().await
}

fn peer_certificate(response: &reqwest::Response) -> Vec<u8> {
    response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .expect("a TLS connection")
        .to_vec()
}

/// The admin page over HTTPS.
async fn admin_metrics(sk: &Sidekick, pki: &Pki) -> String {
    https_client(pki, false)
        .get(format!("https://localhost:{}/metrics", sk.admin.port()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[test]
fn otlp_listeners_serve_tls_mutual_tls_and_bearer_tokens() {
    setup();
    let pki = Pki::new("Sidekick listener CA");
    let rt = runtime();
    let sink = rt.block_on(OtlpSink::start());
    let token_file = TempFile::new("token", &format!("{TOKEN}\n"));
    let config = format!(
        "extensions:
  bearertokenauth:
    filename: {token}
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:0
        tls:
          cert_file: {cert}
          key_file: {key}
        auth:
          authenticator: bearertokenauth
      http:
        endpoint: 127.0.0.1:0
        tls:
          cert_file: {cert}
          key_file: {key}
          client_ca_file: {ca}
exporters:
  otlp:
    endpoint: {sink}
service:
  extensions: [bearertokenauth]
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlp]
",
        token = token_file.0.display(),
        cert = pki.path("server.pem"),
        key = pki.path("server-key.pem"),
        ca = pki.path("ca.pem"),
        sink = sink.url(),
    );
    let mut sk = Sidekick::start_with_telemetry(&config, &tls_telemetry(&pki), &[]);
    let grpc = sk.grpc.unwrap();
    let http = sk.http.unwrap();

    // The real SDK over gRPC with TLS: with the token its spans arrive...
    let sdk_export = |token: Option<&str>, spans: usize| {
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(
                std::fs::read(pki.path("ca.pem")).unwrap(),
            ))
            .domain_name("localhost");
        let mut metadata = tonic::metadata::MetadataMap::new();
        if let Some(t) = token {
            metadata.insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        let exporter = rt
            .block_on(async {
                SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(format!("https://localhost:{}", grpc.port()))
                    .with_tls_config(tls)
                    .with_metadata(metadata)
                    .build()
            })
            .unwrap();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter)
            .build();
        let tracer = provider.tracer("listener-security");
        for i in 0..spans {
            tracer.in_span(format!("span-{i}"), |_| {});
        }
        let _ = provider.force_flush();
        let _ = provider.shutdown();
    };
    sdk_export(Some(TOKEN), 3);
    assert!(
        rt.block_on(sink.wait_until(Duration::from_secs(10), |s| s.span_count() >= 3)),
        "spans sent over TLS with the token did not arrive"
    );
    // ...and without it, or with a wrong one, they are refused as UNAUTHENTICATED.
    sdk_export(None, 2);
    sdk_export(Some("wrong"), 2);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sink.span_count(), 3);
    let page = rt.block_on(admin_metrics(&sk, &pki));
    let refused = metric_value(
        &page,
        "sidekick_listener_unauthenticated_requests_total{listener=\"receivers.otlp/grpc\"}",
    )
    .unwrap_or(0.0);
    assert!(refused >= 4.0, "{page}");

    // OTLP/HTTP under mutual TLS: a client certificate from the CA gets in...
    let url = format!("https://localhost:{}/v1/traces", http.port());
    let ok = rt
        .block_on(post(&https_client(&pki, true), &url, None))
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert!(rt.block_on(sink.wait_until(Duration::from_secs(10), |s| s.span_count() >= 6)));
    // ...no certificate, a certificate of another CA, or plain HTTP do not.
    assert!(rt
        .block_on(post(&https_client(&pki, false), &url, None))
        .is_err());
    let other = Pki::new("Someone else's CA");
    // Trusts our server, but presents a certificate our CA did not sign.
    let foreign = reqwest::Client::builder()
        .tls_backend_preconfigured(pki.client_config_presenting(Some(&other)))
        .build()
        .unwrap();
    assert!(rt.block_on(post(&foreign, &url, None)).is_err());
    let plain = reqwest::Client::new();
    assert!(rt
        .block_on(post(
            &plain,
            &format!("http://127.0.0.1:{}/v1/traces", http.port()),
            None
        ))
        .is_err());
    assert_eq!(sink.span_count(), 6);
    let page = rt.block_on(admin_metrics(&sk, &pki));
    let failures = metric_value(
        &page,
        "sidekick_listener_tls_handshake_failures_total{listener=\"receivers.otlp/http\"}",
    )
    .unwrap_or(0.0);
    assert!(failures >= 3.0, "{page}");
    // The admin port itself refuses plain HTTP.
    assert!(TcpStream::connect(sk.admin)
        .map(|mut s| {
            let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out);
            !out.starts_with(b"HTTP/1.1 200")
        })
        .unwrap());
    assert!(sk.terminate().success());
}

#[test]
fn rotated_certificates_reach_new_connections_and_spare_open_ones() {
    setup();
    let pki = Pki::new("Sidekick rotation CA");
    let rt = runtime();
    let sink = rt.block_on(OtlpSink::start());
    let config = format!(
        "receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:0
        tls:
          cert_file: {cert}
          key_file: {key}
          reload_interval: 100ms
exporters:
  otlp:
    endpoint: {sink}
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlp]
",
        cert = pki.path("server.pem"),
        key = pki.path("server-key.pem"),
        sink = sink.url(),
    );
    let mut sk = Sidekick::start(&config);
    let url = format!("https://localhost:{}/v1/traces", sk.http.unwrap().port());
    let first = pki.server_identity().0.to_vec();

    // A client with a connection open before the rotation...
    let live = https_client(&pki, false);
    let r = rt.block_on(post(&live, &url, None)).unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(peer_certificate(&r), first);

    let second = pki.issue_server().to_vec();
    assert_ne!(first, second);
    std::thread::sleep(Duration::from_millis(400));
    // ...keeps it and keeps being served on it,
    let r = rt.block_on(post(&live, &url, None)).unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        peer_certificate(&r),
        first,
        "the open connection was replaced"
    );
    // while a new connection gets the new certificate.
    let r = rt
        .block_on(post(&https_client(&pki, false), &url, None))
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(peer_certificate(&r), second);

    // A broken replacement keeps the last good certificate, and says why.
    pki.write("server.pem", "-----BEGIN CERTIFICATE-----\nbroken\n");
    std::thread::sleep(Duration::from_millis(400));
    let r = rt
        .block_on(post(&https_client(&pki, false), &url, None))
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(peer_certificate(&r), second);
    assert!(rt.block_on(sink.wait_until(Duration::from_secs(10), |s| s.span_count() >= 12)));
    assert!(sk.terminate().success());
    assert!(
        sk.lines()
            .iter()
            .any(|l| l.contains("changed but cannot be used")),
        "{}",
        sk.lines().join("\n")
    );
}

/// Sends only the head of a request announcing a large body, and returns what comes
/// back within a few seconds: an answer before the body is what "checked before the
/// body is read" means.
fn head_only(addr: SocketAddr, path: &str, authorization: Option<&str>) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-protobuf\r\nContent-Length: 10000000\r\n{auth}\r\n"
    )
    .unwrap();
    let mut out = vec![0u8; 4096];
    let started = Instant::now();
    let n = s.read(&mut out).unwrap_or(0);
    assert!(started.elapsed() < Duration::from_secs(5));
    String::from_utf8_lossy(&out[..n]).into_owned()
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

#[test]
fn credentials_are_checked_before_the_body_and_token_files_rotate() {
    setup();
    let rt = runtime();
    let token_file = TempFile::new("token", "first-token\n");
    let htpasswd = TempFile::new("htpasswd", "app:app-password\n");
    let exporter = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config = format!(
        "extensions:
  basicauth:
    htpasswd:
      file: {htpasswd}
  bearertokenauth/scrape:
    filename: {token}
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:0
        auth:
          authenticator: basicauth
        cors:
          allowed_origins: [\"https://app.example.com\"]
exporters:
  prometheus:
    endpoint: {exporter}
    auth:
      authenticator: bearertokenauth/scrape
service:
  extensions: [basicauth, bearertokenauth/scrape]
  pipelines:
    metrics:
      receivers: [otlp]
      exporters: [prometheus]
",
        htpasswd = htpasswd.0.display(),
        token = token_file.0.display(),
    );
    let mut sk = Sidekick::start(&config);
    let http = sk.http.unwrap();

    // Refused at once, the 10 MB body never sent: the handler never waited for it.
    let refused = head_only(http, "/v1/metrics", None);
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    assert!(
        refused
            .to_ascii_lowercase()
            .contains("www-authenticate: basic"),
        "{refused}"
    );
    let wrong = head_only(http, "/v1/metrics", Some(&basic("app", "nope")));
    assert!(wrong.starts_with("HTTP/1.1 401"), "{wrong}");
    // A browser's CORS preflight carries no credentials and is answered; the request
    // after it is checked.
    let preflight = rt.block_on(async {
        reqwest::Client::new()
            .request(
                reqwest::Method::OPTIONS,
                format!("http://{http}/v1/metrics"),
            )
            .header("origin", "https://app.example.com")
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
            .await
            .unwrap()
    });
    assert!(preflight.status().is_success(), "{preflight:?}");
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    // The right password lets the request through to the body (which never comes).
    let mut s = TcpStream::connect(http).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    write!(
        s,
        "POST /v1/metrics HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Length: 10000000\r\nAuthorization: {}\r\n\r\n",
        basic("app", "app-password")
    )
    .unwrap();
    let mut buf = [0u8; 64];
    assert!(
        s.read(&mut buf).is_err(),
        "accepted credentials must reach the handler, which waits for the body"
    );
    drop(s);

    // The scrape endpoint takes the token in the file, and the new one once it changes.
    let scrape = |token: &str| {
        rt.block_on(async {
            reqwest::Client::new()
                .get(format!("http://{exporter}/metrics"))
                .header("authorization", format!("Bearer {token}"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    assert_eq!(scrape("first-token"), 200);
    assert_eq!(scrape("second-token"), 401);
    std::fs::write(&token_file.0, "second-token").unwrap();
    let started = Instant::now();
    while scrape("second-token") != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the token file was not read again"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(scrape("first-token"), 401);

    let page = sk.metrics();
    assert_eq!(
        metric_value(
            &page,
            "sidekick_listener_unauthenticated_requests_total{listener=\"receivers.otlp/http\"}"
        ),
        Some(2.0),
        "{page}"
    );
    assert!(sk.terminate().success());
}

#[test]
fn exporters_send_the_credentials_of_their_authenticator() {
    setup();
    let rt = runtime();
    let sink = rt.block_on(OtlpSink::start());
    let config = format!(
        "extensions:
  bearertokenauth/backend:
    token: backend-token
  basicauth/backend:
    client_auth:
      username: sidekick
      password: basic-secret
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:0
exporters:
  otlp:
    endpoint: {url}
    auth:
      authenticator: bearertokenauth/backend
  otlphttp:
    endpoint: {url}
    auth:
      authenticator: basicauth/backend
service:
  extensions: [bearertokenauth/backend, basicauth/backend]
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlp]
    logs:
      receivers: [otlp]
      exporters: [otlphttp]
",
        url = sink.url()
    );
    let mut sk = Sidekick::start(&config);
    let http = sk.http.unwrap();
    let body = traces_body();
    rt.block_on(async {
        let r = reqwest::Client::new()
            .post(format!("http://{http}/v1/traces"))
            .header("content-type", "application/x-protobuf")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let r = reqwest::Client::new()
            .post(format!("http://{http}/v1/logs"))
            .header("content-type", "application/x-protobuf")
            .body(sidekick_testkit::gen::logs_request(0, 1, 2).encode_to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    });
    assert!(rt.block_on(sink.wait_until(Duration::from_secs(10), |s| {
        s.span_count() >= 3 && s.log_count() >= 2
    })));
    let seen: Vec<String> = sink
        .headers()
        .iter()
        .filter_map(|h| h.get("authorization")?.to_str().ok().map(String::from))
        .collect();
    assert!(seen.iter().any(|v| v == "Bearer backend-token"), "{seen:?}");
    assert!(
        seen.iter().any(|v| *v == basic("sidekick", "basic-secret")),
        "{seen:?}"
    );
    assert!(sk.terminate().success());
}

#[test]
fn auth_references_are_checked_when_the_config_loads() {
    let check = |yaml: &str| {
        let file = TempFile::new("bad.yaml", yaml);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sidekick"))
            .args(["validate", "--config"])
            .arg(&file.0)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout)
    };
    let base = "receivers:\n  otlp:\n    protocols:\n      http:\n        endpoint: 127.0.0.1:0\n        auth:\n          authenticator: bearertokenauth\nexporters:\n  debug:\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [debug]\n";
    let undefined = check(base);
    assert!(
        undefined.contains("receivers.otlp.protocols.http.auth.authenticator")
            && undefined.contains("authenticator \"bearertokenauth\" is not defined"),
        "{undefined}"
    );
    let disabled = check(&format!(
        "extensions:\n  bearertokenauth:\n    token: x\n{base}"
    ));
    assert!(
        disabled.contains("add it to service.extensions"),
        "{disabled}"
    );
    let client_only = check(&format!(
        "extensions:\n  basicauth:\n    client_auth:\n      username: u\n      password: p\n{}\n  extensions: [basicauth]\n",
        base.replace("bearertokenauth", "basicauth").trim_end()
    ));
    assert!(client_only.contains("has no htpasswd"), "{client_only}");
}

/// `curl --http2` over TLS, posting `body` to `path` with `headers`: the status code it
/// reports, or its error.
fn curl_http2(
    curl: &std::path::Path,
    pki: &Pki,
    addr: SocketAddr,
    path: &str,
    headers: &[&str],
    body: &std::path::Path,
) -> String {
    let mut cmd = std::process::Command::new(curl);
    cmd.args([
        "--http2",
        "--silent",
        "--show-error",
        "--output",
        "/dev/null",
    ])
    .args([
        "--write-out",
        "%{http_code}",
        "--cacert",
        &pki.path("ca.pem"),
    ])
    .arg("--data-binary")
    .arg(format!("@{}", body.display()));
    for h in headers {
        cmd.args(["--header", h]);
    }
    let out = cmd
        .arg(format!("https://localhost:{}{path}", addr.port()))
        .output()
        .unwrap();
    let code = String::from_utf8_lossy(&out.stdout).into_owned();
    match out.status.success() {
        true => code,
        false => format!("{code} {}", String::from_utf8_lossy(&out.stderr).trim()),
    }
}

/// Answers sent before the request body is read (401, 413, 415), and the 503 of a full
/// pipeline (its backend down), reach a real HTTP/2 client over TLS every time: the client is not cut off
/// with a stream error while it is still sending its body.
#[test]
fn early_answers_reach_http2_clients() {
    setup();
    let Some(curl) = sidekick_testkit::external::binary("curl", "curl") else {
        return;
    };
    let pki = Pki::new("Sidekick listener CA");
    let token_file = TempFile::new("token", &format!("{TOKEN}\n"));
    let config = format!(
        "extensions:
  bearertokenauth:
    filename: {token}
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:0
        max_request_body_size: 100000
        tls:
          cert_file: {cert}
          key_file: {key}
        auth:
          authenticator: bearertokenauth
exporters:
  otlp:
    endpoint: http://127.0.0.1:{dead}
    sending_queue:
      num_consumers: 1
      sizer: requests
      queue_size: 1
    retry_on_failure:
      max_elapsed_time: 0s
service:
  extensions: [bearertokenauth]
  shutdown_timeout: 1s
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlp]
",
        dead = free_port(),
        token = token_file.0.display(),
        cert = pki.path("server.pem"),
        key = pki.path("server-key.pem"),
    );
    let sk = Sidekick::start_with_telemetry(&config, &tls_telemetry(&pki), &[]);
    let http = sk.http.unwrap();
    // A body of an SDK's size, and one over max_request_body_size (concatenated
    // requests are one valid request, their resources appended).
    let one = traces_body();
    let body = one.repeat(50_000 / one.len() + 1);
    let small = TempFile::bytes("small.bin", &body);
    let large = TempFile::bytes("large.bin", &body.repeat(4));
    let token = format!("Authorization: Bearer {TOKEN}");
    let protobuf = "Content-Type: application/x-protobuf";
    let cases: [(&str, Vec<&str>, &TempFile); 4] = [
        ("401", vec![protobuf], &small),
        ("413", vec![protobuf, &token], &large),
        ("415", vec!["Content-Type: text/plain", &token], &small),
        ("503", vec![protobuf, &token], &small),
    ];
    for (status, headers, file) in &cases {
        if *status == "503" {
            // The backend is down: the first requests fill the exporter's queue.
            let first = (0..5)
                .map(|_| curl_http2(&curl, &pki, http, "/v1/traces", headers, &file.0))
                .find(|got| got != "200");
            assert_eq!(first.as_deref(), Some("503"));
        }
        // 401 is what every client without credentials meets: 100 tries. A full
        // pipeline answers after waiting for room (half a second): fewer tries.
        let attempts = match *status {
            "401" => 100,
            "503" => 5,
            _ => 20,
        };
        for attempt in 0..attempts {
            let got = curl_http2(&curl, &pki, http, "/v1/traces", headers, &file.0);
            assert_eq!(&got, status, "attempt {attempt} of {status}");
        }
    }
}
