//! The OTLP exporters against a backend that requires TLS and a client certificate,
//! with certificates made for the test by a throwaway CA.

use sidekick_collector::component::{ExporterConfig, ExporterParts};
use sidekick_exporters::{otlp, otlp_http};
use sidekick_testkit::gen::traces;
use sidekick_testkit::harness::build_exporter;
use sidekick_testkit::pki::Pki;
use sidekick_testkit::sink::OtlpSink;
use sidekick_transport::tls::TlsSettings;

/// The exporter's `tls:` against the test CA, with or without the client certificate
/// and the CA.
fn tls(pki: &Pki, with_client_cert: bool, with_ca: bool) -> TlsSettings {
    let path = |name: &str, on: bool| on.then(|| pki.path(name));
    TlsSettings {
        ca_file: path("ca.pem", with_ca),
        cert_file: path("client.pem", with_client_cert),
        key_file: path("client-key.pem", with_client_cert),
        ..TlsSettings::default()
    }
}

fn build<C: ExporterConfig>(config: C) -> ExporterParts {
    build_exporter("otlp", config).unwrap()
}

fn http_exporter(sink: &OtlpSink, tls: TlsSettings) -> ExporterParts {
    let mut config = otlp_http::Config::default();
    config.client.endpoint = format!("https://localhost:{}", sink.address.port());
    config.client.tls = tls;
    build(config)
}

fn grpc_exporter(sink: &OtlpSink, tls: TlsSettings) -> ExporterParts {
    // No scheme and no `insecure`: TLS, as in the Collector.
    let mut config = otlp::Config::default();
    config.client.endpoint = format!("localhost:{}", sink.address.port());
    config.client.tls = tls;
    build(config)
}

#[tokio::test]
async fn mutual_tls_with_a_private_ca() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pki = Pki::new("Sidekick test CA");
    let sink = OtlpSink::start_tls(pki.mtls_server_config()).await;

    let http = http_exporter(&sink, tls(&pki, true, true));
    http.traces.unwrap().export(&traces(0, 1, 3)).await.unwrap();
    let grpc = grpc_exporter(&sink, tls(&pki, true, true));
    grpc.traces.unwrap().export(&traces(3, 1, 4)).await.unwrap();
    assert_eq!(sink.span_count(), 7);

    // Without a client certificate the backend refuses the handshake.
    let http = http_exporter(&sink, tls(&pki, false, true));
    assert!(http.traces.unwrap().export(&traces(0, 1, 1)).await.is_err());
    let grpc = grpc_exporter(&sink, tls(&pki, false, true));
    assert!(grpc.traces.unwrap().export(&traces(0, 1, 1)).await.is_err());

    // Without our CA the exporters do not trust the backend.
    let http = http_exporter(&sink, tls(&pki, true, false));
    assert!(http.traces.unwrap().export(&traces(0, 1, 1)).await.is_err());
    let grpc = grpc_exporter(&sink, tls(&pki, true, false));
    assert!(grpc.traces.unwrap().export(&traces(0, 1, 1)).await.is_err());
    assert_eq!(sink.span_count(), 7);
}

/// Kubernetes rotates a mounted Secret by replacing its files: new connections must use
/// the new CA and client certificate, and a broken replacement must not break anything.
#[tokio::test]
async fn certificates_rotated_in_place_are_used_by_new_connections() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pki = Pki::new("Sidekick test CA");
    let other = Pki::new("Sidekick test CA");
    let sink = OtlpSink::start_tls(pki.mtls_server_config()).await;
    let every_connection = TlsSettings {
        reload_interval: Some(sidekick_collector::config::Duration(
            std::time::Duration::ZERO,
        )),
        ..tls(&pki, true, true)
    };
    let ca_pem = std::fs::read(pki.dir.join("ca.pem")).unwrap();
    let copy = |from: &Pki, name: &str| {
        std::fs::copy(from.dir.join(name), pki.dir.join(name)).unwrap();
    };

    // The CA file trusts another CA: the backend is not trusted...
    copy(&other, "ca.pem");
    let http = http_exporter(&sink, every_connection.clone())
        .traces
        .unwrap();
    assert!(http.export(&traces(0, 1, 1)).await.is_err());
    // ...until the right CA is put in place; the same exporter then connects.
    std::fs::write(pki.dir.join("ca.pem"), ca_pem).unwrap();
    http.export(&traces(0, 1, 2)).await.unwrap();
    assert_eq!(sink.span_count(), 2);

    // A client certificate the backend does not accept, then the right one.
    let good_cert = std::fs::read(pki.dir.join("client.pem")).unwrap();
    let good_key = std::fs::read(pki.dir.join("client-key.pem")).unwrap();
    copy(&other, "client.pem");
    copy(&other, "client-key.pem");
    let grpc = grpc_exporter(&sink, every_connection.clone())
        .traces
        .unwrap();
    assert!(grpc.export(&traces(0, 1, 1)).await.is_err());
    std::fs::write(pki.dir.join("client.pem"), &good_cert).unwrap();
    std::fs::write(pki.dir.join("client-key.pem"), &good_key).unwrap();
    grpc.export(&traces(2, 1, 3)).await.unwrap();
    assert_eq!(sink.span_count(), 5);

    // A broken replacement keeps what worked.
    let http = http_exporter(&sink, every_connection).traces.unwrap();
    std::fs::write(pki.dir.join("ca.pem"), "not a certificate").unwrap();
    std::fs::write(pki.dir.join("client.pem"), "nor this").unwrap();
    http.export(&traces(5, 1, 1)).await.unwrap();
    assert_eq!(sink.span_count(), 6);
}

#[test]
fn unreadable_tls_files_fail_validation_with_the_field_named() {
    let mut config = otlp_http::Config::default();
    config.client.endpoint = "https://localhost:1".into();
    config.client.tls.ca_file = Some("/nonexistent/ca.pem".into());
    let problems = sidekick_collector::component::check_exporter(&config);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].field, "tls.ca_file");
    assert!(
        problems[0]
            .message
            .starts_with("cannot read /nonexistent/ca.pem"),
        "{problems:?}"
    );
}
