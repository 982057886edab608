//! Client TLS from PEM files, shared by everything that connects out (exporters, the
//! scrape receiver): which CAs to trust, an optional client certificate for mutual TLS,
//! protocol versions and the server name. One rustls config (ring provider) serves the
//! HTTP clients and the gRPC channel alike, so both read files and report mistakes the
//! same way.
//!
//! Exporters take it in the OpenTelemetry Collector's shape:
//!
//! ```yaml
//! tls:
//!   insecure: false          # plaintext (gRPC exporter without a scheme in endpoint)
//!   ca_file: /etc/ssl/backend-ca.pem
//!   include_system_ca_certs_pool: false
//!   cert_file: /etc/ssl/client.pem   # client certificate for mTLS
//!   key_file: /etc/ssl/client-key.pem
//!   min_version: "1.2"
//! ```

pub mod listener;

use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::Deserialize;
use sidekick_config::{BuildError, FieldError};

use crate::watch::Watched;

/// A TLS setting that cannot be used, with the field it is about (`tls.ca_file`).
#[derive(Debug, Clone)]
pub struct TlsError {
    pub field: String,
    pub message: String,
}

impl From<TlsError> for BuildError {
    fn from(e: TlsError) -> Self {
        BuildError::new(format!("{}: {}", e.field, e.message))
    }
}

impl From<TlsError> for FieldError {
    fn from(e: TlsError) -> Self {
        FieldError::new(e.field, e.message)
    }
}

/// Where the trust roots and client identity come from, borrowed from a config.
#[derive(Debug, Clone, Default)]
pub struct ClientTls<'a> {
    /// PEM CA certificates to trust.
    pub ca_file: Option<&'a str>,
    /// Trust the system's roots too (always, when there is no `ca_file`).
    pub include_system_roots: bool,
    /// PEM client certificate chain and its key, for mutual TLS.
    pub cert_file: Option<&'a str>,
    pub key_file: Option<&'a str>,
    /// Accept any server certificate. Only for tests against self-signed backends.
    pub insecure_skip_verify: bool,
    /// Lowest and highest protocol version, `"1.2"` or `"1.3"`.
    pub min_version: Option<&'a str>,
    pub max_version: Option<&'a str>,
    /// Prefix for error messages, e.g. `tls` or `tls_config`.
    pub field: &'a str,
    /// How often the CA, certificate and key files are read again (on the next handshake
    /// after this long): a changed file is taken when it parses, the old one kept (and a
    /// warning logged) when it does not. `None`: never.
    pub reload_every: Option<Duration>,
}

/// How often TLS files are read again by default: Kubernetes rotates mounted Secrets in
/// place, and a few KiB read every 10 s costs nothing.
pub const DEFAULT_RELOAD: Duration = Duration::from_secs(10);

impl ClientTls<'_> {
    fn error(&self, what: &str, message: impl Into<String>) -> TlsError {
        TlsError {
            field: if what.is_empty() {
                self.field.to_string()
            } else {
                format!("{}.{what}", self.field)
            },
            message: message.into(),
        }
    }

    fn read(&self, path: &str, what: &str) -> Result<Vec<u8>, TlsError> {
        std::fs::read(path).map_err(|e| self.error(what, format!("cannot read {path}: {e}")))
    }

    fn use_system_roots(&self) -> bool {
        self.ca_file.is_none() || self.include_system_roots
    }

    fn versions(&self) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, TlsError> {
        versions(self.min_version, self.max_version).map_err(|(what, m)| self.error(what, m))
    }

    /// Reads and parses every file now, without building anything: what `validate`
    /// reports.
    pub fn check(&self) -> Vec<FieldError> {
        match self.config() {
            Ok(_) => Vec::new(),
            Err(e) => vec![e.into()],
        }
    }

    /// A rustls client config offering HTTP/2 and HTTP/1.1.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, BuildError> {
        Ok(self.config()?)
    }

    fn config(&self) -> Result<rustls::ClientConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let ca = match self.ca_file {
            Some(path) => Some((path, self.read(path, "ca_file")?)),
            None => None,
        };
        let system = self.use_system_roots();
        let roots = move |pem: Option<(&str, &[u8])>| -> Result<rustls::RootCertStore, String> {
            let mut roots = rustls::RootCertStore::empty();
            if system {
                for cert in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(cert);
                }
            }
            if let Some((path, pem)) = pem {
                for cert in certificates(pem, path)? {
                    roots
                        .add(cert)
                        .map_err(|e| format!("invalid certificate in {path}: {e}"))?;
                }
            }
            Ok(roots)
        };
        let initial = roots(ca.as_ref().map(|(p, b)| (*p, b.as_slice())))
            .map_err(|m| self.error("ca_file", m))?;
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&self.versions()?)
            .map_err(|e| self.error("", e.to_string()))?
            .with_root_certificates(initial.clone());
        let mut config = match (self.cert_file, self.key_file) {
            (Some(cert), Some(key)) => {
                let files = vec![self.read(cert, "cert_file")?, self.read(key, "key_file")?];
                let certified = certified_key(&files, cert, key, &provider)
                    .map_err(|(what, m)| self.error(what, m))?;
                // Without reloading, the files are simply never looked at again.
                let every = self.reload_every.unwrap_or(Duration::MAX);
                let paths = vec![cert.to_string(), key.to_string()];
                let provider = provider.clone();
                let (cert, key) = (cert.to_string(), key.to_string());
                let load = move |files: &[Vec<u8>]| {
                    certified_key(files, &cert, &key, &provider).map_err(|(_, m)| m)
                };
                let watched =
                    Watched::new("TLS files", paths, every, files, certified, Box::new(load));
                builder.with_client_cert_resolver(Arc::new(ReloadingClientCert(watched)))
            }
            (Some(_), None) => return Err(self.error("key_file", "cert_file needs key_file too")),
            (None, Some(_)) => return Err(self.error("cert_file", "key_file needs cert_file too")),
            (None, None) => builder.with_no_client_auth(),
        };
        if self.insecure_skip_verify {
            config
                .dangerous()
                .set_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)));
        } else if let (Some((path, pem)), Some(every)) = (ca, self.reload_every) {
            let build = move |roots: rustls::RootCertStore| {
                rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider.clone(),
                )
                .build()
                .map(|v| v as Arc<dyn ServerCertVerifier>)
                .map_err(|e| e.to_string())
            };
            let first = build(initial).map_err(|m| self.error("ca_file", m))?;
            let owned = path.to_string();
            let load = move |files: &[Vec<u8>]| build(roots(Some((&owned, &files[0])))?);
            let watched = Watched::new(
                "TLS files",
                vec![path.to_string()],
                every,
                vec![pem],
                first,
                Box::new(load),
            );
            config
                .dangerous()
                .set_certificate_verifier(Arc::new(ReloadingVerifier { watched }));
        }
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// A client certificate and its key, ready to sign; on failure the field at fault.
fn certified_key(
    files: &[Vec<u8>],
    cert: &str,
    key: &str,
    provider: &CryptoProvider,
) -> Result<rustls::sign::CertifiedKey, (&'static str, String)> {
    let chain = certificates(&files[0], cert).map_err(|m| ("cert_file", m))?;
    let key_der = private_key(&files[1], key).map_err(|m| ("key_file", m))?;
    let signing = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| ("key_file", format!("{key}: {e}")))?;
    let certified = rustls::sign::CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| ("cert_file", format!("{e} (with {key})")))?;
    Ok(certified)
}

/// The protocol versions from `min_version` to `max_version` (default TLS 1.2 to 1.3); on
/// error the field at fault.
fn versions(
    min: Option<&str>,
    max: Option<&str>,
) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, (&'static str, String)> {
    let parse = |v: Option<&str>, what: &'static str, default: u8| match v.map(str::trim) {
        None | Some("") => Ok(default),
        Some("1.2") => Ok(2),
        Some("1.3") => Ok(3),
        Some(v @ ("1.0" | "1.1")) => Err((
            what,
            format!("TLS {v} is not supported (it is insecure): write \"1.2\" or \"1.3\""),
        )),
        Some(v) => Err((
            what,
            format!("unknown TLS version \"{v}\": write \"1.2\" or \"1.3\""),
        )),
    };
    let min = parse(min, "min_version", 2)?;
    let max = parse(max, "max_version", 3)?;
    if min > max {
        return Err(("min_version", "is higher than max_version".into()));
    }
    Ok([(2, &rustls::version::TLS12), (3, &rustls::version::TLS13)]
        .into_iter()
        .filter(|(v, _)| (min..=max).contains(v))
        .map(|(_, p)| p)
        .collect())
}

/// The client certificate of the files as they are now.
#[derive(Debug)]
struct ReloadingClientCert(Watched<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for ReloadingClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Verifies the backend against the CA file as it is now: every check goes to the
/// verifier made from it.
#[derive(Debug)]
struct ReloadingVerifier {
    watched: Watched<Arc<dyn ServerCertVerifier>>,
}

impl ServerCertVerifier for ReloadingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.watched.current().verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.watched
            .current()
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.watched
            .current()
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.watched.current().supported_verify_schemes()
    }
}

/// The certificates of a PEM file, or what is wrong with it in words an operator can
/// act on.
fn certificates(pem: &[u8], path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{path} is not valid PEM: {e}"))?;
    if certs.is_empty() {
        return Err(not_pem(pem, path, "CERTIFICATE"));
    }
    Ok(certs)
}

fn private_key(pem: &[u8], path: &str) -> Result<PrivateKeyDer<'static>, String> {
    match PrivateKeyDer::from_pem_slice(pem) {
        Ok(key) => Ok(key),
        Err(rustls::pki_types::pem::Error::NoItemsFound) => Err(not_pem(pem, path, "PRIVATE KEY")),
        Err(e) => Err(format!("{path} is not a valid PEM private key: {e}")),
    }
}

fn not_pem(bytes: &[u8], path: &str, block: &str) -> String {
    if bytes.first() == Some(&0x30) {
        format!(
            "{path} looks like DER (binary); convert it to PEM, e.g. `openssl x509 -inform der -in {path} -out {path}.pem`"
        )
    } else if bytes.is_empty() {
        format!("{path} is empty")
    } else {
        format!("{path} has no PEM \"-----BEGIN {block}-----\" block")
    }
}

/// `insecure_skip_verify`: signatures are still checked, the chain and name are not.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// An exporter's `tls:` block.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSettings {
    /// Send in plaintext. Only meaningful when the endpoint has no `http://`/`https://`.
    pub insecure: bool,
    /// Accept any server certificate (no chain or name check). A warning at start and in
    /// `validate`.
    pub insecure_skip_verify: bool,
    /// PEM file with the CA certificates that sign the backend's certificate. Replaces
    /// the system roots unless `include_system_ca_certs_pool` is true.
    pub ca_file: Option<String>,
    pub include_system_ca_certs_pool: bool,
    /// PEM client certificate (chain) for mutual TLS; needs `key_file`.
    pub cert_file: Option<String>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<String>,
    /// Lowest TLS version, `"1.2"` (default) or `"1.3"`.
    pub min_version: Option<String>,
    /// Highest TLS version, `"1.3"` (default) or `"1.2"`.
    pub max_version: Option<String>,
    /// Name to verify the backend's certificate against instead of the endpoint's host.
    pub server_name_override: Option<String>,
    /// How often `ca_file`, `cert_file` and `key_file` are read again, so certificates
    /// rotated in place (a mounted Kubernetes Secret) are used by new connections.
    /// Default 10s; `0s` reads them on every new connection.
    pub reload_interval: Option<sidekick_config::Duration>,
}

impl TlsSettings {
    pub fn client(&self) -> ClientTls<'_> {
        ClientTls {
            ca_file: self.ca_file.as_deref(),
            include_system_roots: self.include_system_ca_certs_pool,
            cert_file: self.cert_file.as_deref(),
            key_file: self.key_file.as_deref(),
            insecure_skip_verify: self.insecure_skip_verify,
            min_version: self.min_version.as_deref(),
            max_version: self.max_version.as_deref(),
            field: "tls",
            reload_every: Some(self.reload_interval.map_or(DEFAULT_RELOAD, |d| d.get())),
        }
    }

    /// Every problem with these settings, files read and parsed; and a warning when the
    /// backend's certificate goes unverified.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut out = self.client().check();
        if self.insecure_skip_verify {
            out.push(FieldError::warning(
                "tls.insecure_skip_verify",
                "the backend's certificate is NOT verified: anyone on the path can pose as the backend and read everything sent, credentials included; for tests only (set ca_file to trust a private CA instead)",
            ));
        }
        out
    }

    /// A rustls client config (ring provider) with these settings.
    pub fn rustls_config(&self) -> Result<rustls::ClientConfig, BuildError> {
        self.client().client_config()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &std::path::Path, name: &str, bytes: &[u8]) -> String {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path.to_string_lossy().into_owned()
    }

    fn errors(settings: &TlsSettings) -> String {
        settings
            .validate()
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn ca_files_that_are_not_pem_say_what_they_are() {
        let dir = std::env::temp_dir().join(format!("sidekick-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let der = write(&dir, "ca.der", cert.cert.der());
        let text = write(&dir, "ca.txt", b"hello\n");
        let good = write(&dir, "ca.pem", cert.cert.pem().as_bytes());
        let key = write(&dir, "key.pem", cert.signing_key.serialize_pem().as_bytes());

        let with_ca = |ca: &str| TlsSettings {
            ca_file: Some(ca.into()),
            ..TlsSettings::default()
        };
        assert!(
            errors(&with_ca(&der)).contains("looks like DER"),
            "{}",
            errors(&with_ca(&der))
        );
        assert!(errors(&with_ca(&text)).contains("no PEM \"-----BEGIN CERTIFICATE-----\" block"));
        assert!(errors(&with_ca("/nonexistent/ca.pem")).starts_with("tls.ca_file: cannot read"));
        assert_eq!(errors(&with_ca(&good)), "");

        let mtls = TlsSettings {
            cert_file: Some(good.clone()),
            key_file: Some(key),
            ..TlsSettings::default()
        };
        assert_eq!(errors(&mtls), "");
        let swapped = TlsSettings {
            cert_file: Some(good.clone()),
            key_file: Some(good),
            ..TlsSettings::default()
        };
        assert!(
            errors(&swapped).starts_with("tls.key_file:"),
            "{}",
            errors(&swapped)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn versions_are_checked() {
        let v = |min: &str, max: &str| TlsSettings {
            min_version: Some(min.into()),
            max_version: Some(max.into()),
            ..TlsSettings::default()
        };
        assert_eq!(errors(&v("1.2", "1.3")), "");
        assert_eq!(errors(&v("1.3", "1.3")), "");
        assert!(errors(&v("1.1", "1.3")).contains("not supported"));
        assert!(errors(&v("1.3", "1.2")).contains("higher than max_version"));
        assert!(errors(&v("2", "")).contains("unknown TLS version"));
    }
}

#[cfg(test)]
mod skip_verify_tests {
    use super::*;

    #[test]
    fn skipping_verification_is_warned_about() {
        let quiet = TlsSettings::default().validate();
        assert!(quiet.is_empty(), "{quiet:?}");
        let w = TlsSettings {
            insecure_skip_verify: true,
            ..TlsSettings::default()
        }
        .validate();
        assert_eq!(w.len(), 1);
        assert!(w[0].warning && w[0].field == "tls.insecure_skip_verify");
        assert!(w[0].message.contains("NOT verified"));
    }
}
