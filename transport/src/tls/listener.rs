//! Server TLS for Sidekick's listeners from the Collector-shaped `tls:` block
//! ([`ServerTls`]): the certificate the listener presents and, with `client_ca_file`,
//! the CAs whose client certificates it requires (mutual TLS).
//!
//! The certificate, key and client CA files are read again every `reload_interval`
//! (on the next handshake after it), so a Kubernetes Secret rotated in place is picked
//! up without a restart: connections already open keep the certificate they were
//! made with, new ones get the new files. A change that does not load (a key that does
//! not match, a half-written file) keeps the old files and logs why.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use sidekick_config::{FieldError, ServerTls};

use super::{certificates, certified_key, versions, TlsError, DEFAULT_RELOAD};
use crate::watch::Watched;

/// A listener's TLS, ready to accept connections with.
#[derive(Clone)]
pub struct Acceptor(pub(crate) tokio_rustls::TlsAcceptor);

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Acceptor")
    }
}

/// Reads and parses every file of `tls` now: what `validate` reports, under `field`
/// (e.g. `protocols.grpc.tls`). Settings without effect are warnings.
pub fn validate(tls: &ServerTls, field: &str) -> Vec<FieldError> {
    let mut out = Vec::new();
    if let Err(e) = server_config(tls, field) {
        out.push(e.into());
    }
    if tls.ca_file.is_some() {
        out.push(FieldError::no_effect(
            format!("{field}.ca_file"),
            "a listener verifies clients with client_ca_file; ca_file is for connecting out",
        ));
    }
    out
}

/// A TLS acceptor for `tls`, its files read now; errors name the field under `field`.
pub fn acceptor(tls: &ServerTls, field: &str) -> Result<Acceptor, TlsError> {
    let config = server_config(tls, field)?;
    Ok(Acceptor(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
}

fn server_config(tls: &ServerTls, field: &str) -> Result<rustls::ServerConfig, TlsError> {
    let error = |what: &str, message: String| TlsError {
        field: if what.is_empty() {
            field.to_string()
        } else {
            format!("{field}.{what}")
        },
        message,
    };
    let read = |path: &str, what: &str| {
        std::fs::read(path).map_err(|e| error(what, format!("cannot read {path}: {e}")))
    };
    let every = tls.reload_interval.map_or(DEFAULT_RELOAD, |d| d.get());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions = versions(tls.min_version.as_deref(), tls.max_version.as_deref())
        .map_err(|(what, m)| error(what, m))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| error("", e.to_string()))?;

    let builder = match &tls.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let pem = read(path, "client_ca_file")?;
            let load = {
                let (path, provider) = (path.clone(), provider.clone());
                move |files: &[Vec<u8>]| client_verifier(&files[0], &path, &provider)
            };
            let first = load(std::slice::from_ref(&pem)).map_err(|m| error("client_ca_file", m))?;
            let watched = Watched::new(
                "client CA file",
                vec![path.clone()],
                every,
                vec![pem],
                first,
                Box::new(load),
            );
            builder.with_client_cert_verifier(Arc::new(ReloadingClientVerifier(watched)))
        }
    };

    let (cert, key) = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => (cert.clone(), key.clone()),
        (None, _) => {
            return Err(error(
                "cert_file",
                "a listener with tls needs cert_file and key_file (the certificate it presents)"
                    .into(),
            ))
        }
        (Some(_), None) => return Err(error("key_file", "cert_file needs key_file too".into())),
    };
    let files = vec![read(&cert, "cert_file")?, read(&key, "key_file")?];
    let certified =
        certified_key(&files, &cert, &key, &provider).map_err(|(what, m)| error(what, m))?;
    let load = {
        let (cert, key) = (cert.clone(), key.clone());
        move |files: &[Vec<u8>]| certified_key(files, &cert, &key, &provider).map_err(|(_, m)| m)
    };
    let watched = Watched::new(
        "TLS certificate files",
        vec![cert, key],
        every,
        files,
        certified,
        Box::new(load),
    );
    let mut config = builder.with_cert_resolver(Arc::new(ReloadingServerCert(watched)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// A verifier requiring client certificates signed by the CAs of `pem`.
fn client_verifier(
    pem: &[u8],
    path: &str,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates(pem, path)? {
        roots
            .add(cert)
            .map_err(|e| format!("invalid certificate in {path}: {e}"))?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| format!("{path}: {e}"))
}

/// The listener's certificate from the files as they are now.
#[derive(Debug)]
struct ReloadingServerCert(Watched<rustls::sign::CertifiedKey>);

impl ResolvesServerCert for ReloadingServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.current())
    }
}

/// Checks client certificates against the client CA file as it is now.
#[derive(Debug)]
struct ReloadingClientVerifier(Watched<Arc<dyn ClientCertVerifier>>);

impl ClientCertVerifier for ReloadingClientVerifier {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    /// No hints: they would have to outlive a reload. Clients then offer the
    /// certificate they have, which is what a sidecar's client does anyway.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0
            .current()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.current().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.current().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.current().supported_verify_schemes()
    }
}
