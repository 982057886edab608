//! The OTLP exporters against a backend that requires TLS and a client certificate,
//! with certificates made for the test by a throwaway CA.

use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sidekick_collector::component::{ExporterConfig, ExporterParts};
use sidekick_exporters::{otlp, otlp_http};
use sidekick_testkit::gen::traces;
use sidekick_testkit::harness::build_exporter;
use sidekick_testkit::sink::OtlpSink;
use sidekick_transport::tls::TlsSettings;

struct Pki {
    dir: PathBuf,
    ca_pem: String,
    server: (CertificateDer<'static>, PrivateKeyDer<'static>),
    ca_der: CertificateDer<'static>,
}

impl Pki {
    fn new() -> Pki {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Sidekick test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let server_key = KeyPair::generate().unwrap();
        let server_cert = CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&server_key, &ca)
            .unwrap();
        let client_key = KeyPair::generate().unwrap();
        let client_cert = CertificateParams::new(vec!["sidekick-client".to_string()])
            .unwrap()
            .signed_by(&client_key, &ca)
            .unwrap();
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sidekick-tls-{}-{:?}-{}",
            std::process::id(),
            std::thread::current().id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.join("client.pem"), client_cert.pem()).unwrap();
        std::fs::write(dir.join("client-key.pem"), client_key.serialize_pem()).unwrap();
        Pki {
            dir,
            ca_pem: ca.pem(),
            server: (
                server_cert.der().clone(),
                PrivatePkcs8KeyDer::from(server_key.serialize_der()).into(),
            ),
            ca_der: ca.der().clone(),
        }
    }

    fn path(&self, name: &str) -> Option<String> {
        Some(self.dir.join(name).display().to_string())
    }

    /// A server config that requires a client certificate from our CA.
    fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![self.server.0.clone()], self.server.1.clone_key())
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }

    fn tls(&self, with_client_cert: bool, with_ca: bool) -> TlsSettings {
        TlsSettings {
            ca_file: if with_ca { self.path("ca.pem") } else { None },
            cert_file: if with_client_cert {
                self.path("client.pem")
            } else {
                None
            },
            key_file: if with_client_cert {
                self.path("client-key.pem")
            } else {
                None
            },
            ..TlsSettings::default()
        }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn build<C: ExporterConfig>(config: C) -> ExporterParts {
    build_exporter("otlp", config).unwrap()
}

fn http_exporter(sink: &OtlpSink, tls: TlsSettings) -> ExporterParts {
    build(otlp_http::Config {
        endpoint: format!("https://localhost:{}", sink.address.port()),
        tls,
        ..otlp_http::Config::default()
    })
}

fn grpc_exporter(sink: &OtlpSink, tls: TlsSettings) -> ExporterParts {
    // No scheme and no `insecure`: TLS, as in the Collector.
    build(otlp::Config {
        endpoint: format!("localhost:{}", sink.address.port()),
        tls,
        ..otlp::Config::default()
    })
}

#[tokio::test]
async fn mutual_tls_with_a_private_ca() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pki = Pki::new();
    assert!(pki.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    let sink = OtlpSink::start_tls(pki.server_config()).await;

    let http = http_exporter(&sink, pki.tls(true, true));
    http.traces.unwrap().export(&traces(0, 1, 3)).await.unwrap();
    let grpc = grpc_exporter(&sink, pki.tls(true, true));
    grpc.traces.unwrap().export(&traces(3, 1, 4)).await.unwrap();
    assert_eq!(sink.span_count(), 7);

    // Without a client certificate the backend refuses the handshake.
    let http = http_exporter(&sink, pki.tls(false, true));
    assert!(http.traces.unwrap().export(&traces(0, 1, 1)).await.is_err());
    let grpc = grpc_exporter(&sink, pki.tls(false, true));
    assert!(grpc.traces.unwrap().export(&traces(0, 1, 1)).await.is_err());

    // Without our CA the exporters do not trust the backend.
    let http = http_exporter(&sink, pki.tls(true, false));
    assert!(http.traces.unwrap().export(&traces(0, 1, 1)).await.is_err());
    let grpc = grpc_exporter(&sink, pki.tls(true, false));
    assert!(grpc.traces.unwrap().export(&traces(0, 1, 1)).await.is_err());
    assert_eq!(sink.span_count(), 7);
}

/// Kubernetes rotates a mounted Secret by replacing its files: new connections must use
/// the new CA and client certificate, and a broken replacement must not break anything.
#[tokio::test]
async fn certificates_rotated_in_place_are_used_by_new_connections() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pki = Pki::new();
    let other = Pki::new();
    let sink = OtlpSink::start_tls(pki.server_config()).await;
    let every_connection = TlsSettings {
        reload_interval: Some(sidekick_collector::config::Duration(
            std::time::Duration::ZERO,
        )),
        ..pki.tls(true, true)
    };
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
    std::fs::write(pki.dir.join("ca.pem"), &pki.ca_pem).unwrap();
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
    let config = otlp_http::Config {
        endpoint: "https://localhost:1".into(),
        tls: TlsSettings {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..TlsSettings::default()
        },
        ..otlp_http::Config::default()
    };
    let problems = sidekick_collector::component::ExporterConfig::validate(&config);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].field, "tls.ca_file");
    assert!(
        problems[0]
            .message
            .starts_with("cannot read /nonexistent/ca.pem"),
        "{problems:?}"
    );
}
