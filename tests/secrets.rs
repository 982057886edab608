//! A secret planted in every secret-bearing field (header values, passwords, tokens,
//! token and key files' contents, `${env:…}` values) never appears in what Sidekick
//! prints: `validate` output, a failed start, or a normal run at debug level that
//! exports (to a backend that refuses) and scrapes.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Sidekick, TempFile};
use sidekick_testkit::free_port;

const SECRET: &str = "pl4nted-S3CRET-value";

/// Files holding the secret: a token file and a "key" that is not a key.
struct Files {
    token: TempFile,
    key: TempFile,
}

fn files() -> Files {
    Files {
        token: TempFile::new("token", SECRET),
        key: TempFile::new(
            "key.pem",
            &format!("-----BEGIN PRIVATE KEY-----\n{SECRET}\n-----END PRIVATE KEY-----\n"),
        ),
    }
}

/// Every exporter and the scrape receiver with the secret wherever one can go; the
/// backends are local ports nobody listens on, so exports fail and are logged.
fn config(f: &Files, tls_key: bool) -> String {
    let dead = free_port();
    let http = free_port();
    let scheme = if tls_key { "https" } else { "http" };
    let key = if tls_key {
        format!(
            "    tls:\n      cert_file: {}\n      key_file: {}\n",
            f.key.0.display(),
            f.key.0.display()
        )
    } else {
        String::new()
    };
    format!(
        "extensions:
  bearertokenauth:
    token: {SECRET}
  bearertokenauth/file:
    filename: {}
  basicauth:
    htpasswd:
      inline: \"u:{SECRET}\"
    client_auth:
      username: u
      password: {SECRET}
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{http}
        auth:
          authenticator: basicauth
  prometheus:
    config:
      scrape_configs:
        - job_name: app
          scrape_interval: 1s
          authorization:
            credentials: {SECRET}
          static_configs:
            - targets: [\"127.0.0.1:{dead}\"]
        - job_name: app2
          scrape_interval: 1s
          basic_auth:
            username: u
            password: {SECRET}
          static_configs:
            - targets: [\"127.0.0.1:{dead}\"]
processors:
  batch:
    timeout: 100ms
exporters:
  otlp:
    endpoint: {scheme}://127.0.0.1:{dead}
    headers:
      authorization: Bearer {SECRET}
      x-from-env: ${{env:PLANTED}}
{key}  otlphttp:
    endpoint: http://127.0.0.1:{dead}
    headers:
      x-api-key: {SECRET}
    auth:
      authenticator: bearertokenauth
  otlphttp/file:
    endpoint: http://127.0.0.1:{dead}
    auth:
      authenticator: bearertokenauth/file
  otlphttp/basic:
    endpoint: http://127.0.0.1:{dead}
    auth:
      authenticator: basicauth
  prometheusremotewrite:
    endpoint: http://127.0.0.1:{dead}/api/v1/write
    bearer_token_file: {}
    headers:
      x-scope-orgid: {SECRET}
  prometheusremotewrite/basic:
    endpoint: http://127.0.0.1:{dead}/api/v1/write
    basic_auth:
      username: u
      password: {SECRET}
service:
  extensions: [bearertokenauth, bearertokenauth/file, basicauth]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [otlp, otlphttp, otlphttp/file, otlphttp/basic]
    metrics:
      receivers: [prometheus]
      processors: [batch]
      exporters: [prometheusremotewrite, prometheusremotewrite/basic]
",
        f.token.0.display(),
        f.token.0.display()
    )
}

fn assert_clean(what: &str, output: &str) {
    assert!(
        !output.contains(SECRET),
        "{what} printed the planted secret:\n{output}"
    );
    assert!(
        !output.is_empty(),
        "{what} printed nothing: the check would be empty"
    );
}

/// Runs `sidekick` to its exit (killed after 20 s: a start that should fail but does
/// not fails the test); all it printed.
fn run(args: &[&str]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sidekick"))
        .args(args)
        .env("PLANTED", SECRET)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sidekick");
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "sidekick {args:?} did not exit:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn validate_never_prints_a_secret() {
    let f = files();
    // A config with something wrong in every exporter, so `validate` has a lot to say.
    let text = config(&f, false).replace("endpoint: http://", "endpoint: ftp://")
        + "  telemetry:\n    logs:\n      level: debug\n";
    let cfg = TempFile::new("bad.yaml", &text);
    let out = run(&["validate", "--config", cfg.0.to_str().unwrap()]);
    assert!(out.contains("ftp"), "validate found the problems: {out}");
    assert_clean("validate", &out);
    // And an unterminated `${` in a header value.
    let cfg = TempFile::new(
        "unterminated.yaml",
        &format!("exporters:\n  otlp:\n    endpoint: http://127.0.0.1:1\n    headers:\n      authorization: \"Bearer {SECRET}${{env:X\"\n"),
    );
    assert_clean(
        "validate (unterminated ${)",
        &run(&["validate", "--config", cfg.0.to_str().unwrap()]),
    );
}

#[test]
fn a_failed_start_never_prints_a_secret() {
    let f = files();
    // The key file holds the secret and is not a key: the start fails on it.
    let text = config(&f, true)
        + "  telemetry:\n    logs:\n      level: debug\n    metrics:\n      address: 127.0.0.1:0\n";
    let cfg = TempFile::new("failing.yaml", &text);
    let out = run(&["--config", cfg.0.to_str().unwrap()]);
    assert!(
        out.to_lowercase().contains("key"),
        "the start failed on the key file: {out}"
    );
    assert_clean("a failed start", &out);
}

#[test]
fn a_debug_run_that_exports_and_scrapes_never_prints_a_secret() {
    let f = files();
    let mut sk = Sidekick::start_with_telemetry(
        &config(&f, false),
        "  telemetry:\n    logs:\n      level: debug\n      encoding: json\n    metrics:\n      address: 127.0.0.1:0\n",
        &[("PLANTED", SECRET)],
    );
    // Traces to export (the backend refuses the connection), scrapes that fail.
    let body = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708","name":"s","startTimeUnixNano":"1","endTimeUnixNano":"2"}]}]}]}"#;
    let address = sk.http.expect("the OTLP/HTTP listener");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    use std::io::Write;
    write!(
        stream,
        "POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nAuthorization: Basic {}\r\nConnection: close\r\n\r\n",
        body.len(),
        {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(format!("u:{SECRET}"))
        }
    )
    .unwrap();
    stream.write_all(body).unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut stream, &mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "the credentials were accepted: {answer}"
    );
    std::thread::sleep(Duration::from_secs(3));
    sk.terminate();
    let out = sk.lines().join("\n");
    assert!(out.contains("scrape"), "the run logged its scrapes: {out}");
    assert!(
        out.contains("otlphttp/basic"),
        "the exports were logged: {out}"
    );
    assert_clean("a debug run", &out);
}
