//! Client TLS settings shared by the exporters, in the OpenTelemetry Collector's shape:
//!
//! ```yaml
//! tls:
//!   insecure: false          # plaintext (gRPC exporter without a scheme in endpoint)
//!   ca_file: /etc/ssl/backend-ca.pem
//!   include_system_ca_certs_pool: false
//!   cert_file: /etc/ssl/client.pem   # client certificate for mTLS
//!   key_file: /etc/ssl/client-key.pem
//! ```

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use sidekick_collector::component::{BuildError, FieldError};

/// A client certificate (chain) and its private key, in PEM.
pub struct IdentityPem {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSettings {
    /// Send in plaintext. Only meaningful when the endpoint has no `http://`/`https://`.
    pub insecure: bool,
    /// PEM file with the CA certificates that sign the backend's certificate. Replaces
    /// the system roots unless `include_system_ca_certs_pool` is true.
    pub ca_file: Option<String>,
    pub include_system_ca_certs_pool: bool,
    /// PEM client certificate (chain) for mutual TLS; needs `key_file`.
    pub cert_file: Option<String>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<String>,
    /// Name to verify the backend's certificate against instead of the endpoint's host.
    pub server_name_override: Option<String>,
}

impl TlsSettings {
    pub fn validate(&self) -> Vec<FieldError> {
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => vec![FieldError::new(
                "tls.key_file",
                "cert_file needs key_file too",
            )],
            (None, Some(_)) => vec![FieldError::new(
                "tls.cert_file",
                "key_file needs cert_file too",
            )],
            _ => Vec::new(),
        }
    }

    fn read(path: &str, what: &str) -> Result<Vec<u8>, BuildError> {
        std::fs::read(path)
            .map_err(|e| BuildError::new(format!("tls.{what}: cannot read {path}: {e}")))
    }

    /// CA certificates from `ca_file`, in PEM.
    pub fn ca_pem(&self) -> Result<Option<Vec<u8>>, BuildError> {
        self.ca_file
            .as_deref()
            .map(|p| Self::read(p, "ca_file"))
            .transpose()
    }

    /// Client certificate and key, in PEM.
    pub fn identity_pem(&self) -> Result<Option<IdentityPem>, BuildError> {
        match (&self.cert_file, &self.key_file) {
            (Some(c), Some(k)) => Ok(Some(IdentityPem {
                cert: Self::read(c, "cert_file")?,
                key: Self::read(k, "key_file")?,
            })),
            _ => Ok(None),
        }
    }

    /// Whether the system's root certificates are trusted.
    pub fn use_system_roots(&self) -> bool {
        self.ca_file.is_none() || self.include_system_ca_certs_pool
    }

    /// A rustls client config (ring provider) with these settings.
    pub fn rustls_config(&self) -> Result<rustls::ClientConfig, BuildError> {
        let mut roots = rustls::RootCertStore::empty();
        if self.use_system_roots() {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert);
            }
        }
        if let Some(pem) = self.ca_pem()? {
            let certs = parse_certs(&pem, "ca_file")?;
            if certs.is_empty() {
                return Err(BuildError::new("tls.ca_file: no PEM certificates found"));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| {
                    BuildError::new(format!("tls.ca_file: invalid certificate: {e}"))
                })?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| BuildError::new(format!("tls: {e}")))?
            .with_root_certificates(roots);
        let mut config = match self.identity_pem()? {
            Some(IdentityPem { cert, key }) => {
                let chain = parse_certs(&cert, "cert_file")?;
                let key = parse_key(&key)?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| BuildError::new(format!("tls.cert_file: {e}")))?
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

fn parse_certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, BuildError> {
    rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| BuildError::new(format!("tls.{what}: invalid PEM: {e}")))
}

fn parse_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, BuildError> {
    rustls_pemfile::private_key(&mut &pem[..])
        .map_err(|e| BuildError::new(format!("tls.key_file: invalid PEM: {e}")))?
        .ok_or_else(|| BuildError::new("tls.key_file: no private key found"))
}
