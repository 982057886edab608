//! Client TLS from PEM files, shared by everything that connects out (exporters, the
//! scrape receiver): which CAs to trust and an optional client certificate for mutual
//! TLS. Uses rustls with the ring provider.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::component::BuildError;

/// Where the trust roots and client identity come from.
#[derive(Debug, Clone, Default)]
pub struct ClientTls<'a> {
    /// PEM CA certificates to trust.
    pub ca_file: Option<&'a str>,
    /// Trust the system's roots too (always, when there is no `ca_file`).
    pub include_system_roots: bool,
    /// PEM client certificate chain and its key, for mutual TLS.
    pub cert_file: Option<&'a str>,
    pub key_file: Option<&'a str>,
    /// Prefix for error messages, e.g. `tls` or `tls_config`.
    pub field: &'a str,
}

/// A client certificate (chain) and its private key, in PEM.
pub struct IdentityPem {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

impl ClientTls<'_> {
    fn read(&self, path: &str, what: &str) -> Result<Vec<u8>, BuildError> {
        std::fs::read(path)
            .map_err(|e| BuildError::new(format!("{}.{what}: cannot read {path}: {e}", self.field)))
    }

    pub fn ca_pem(&self) -> Result<Option<Vec<u8>>, BuildError> {
        self.ca_file.map(|p| self.read(p, "ca_file")).transpose()
    }

    pub fn identity_pem(&self) -> Result<Option<IdentityPem>, BuildError> {
        match (self.cert_file, self.key_file) {
            (Some(c), Some(k)) => Ok(Some(IdentityPem {
                cert: self.read(c, "cert_file")?,
                key: self.read(k, "key_file")?,
            })),
            _ => Ok(None),
        }
    }

    pub fn use_system_roots(&self) -> bool {
        self.ca_file.is_none() || self.include_system_roots
    }

    /// A rustls client config, offering HTTP/2 and HTTP/1.1.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, BuildError> {
        let field = self.field;
        let mut roots = rustls::RootCertStore::empty();
        if self.use_system_roots() {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
        if let Some(pem) = self.ca_pem()? {
            let certs = parse_certs(&pem, &format!("{field}.ca_file"))?;
            if certs.is_empty() {
                return Err(BuildError::new(format!(
                    "{field}.ca_file: no PEM certificates found"
                )));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| {
                    BuildError::new(format!("{field}.ca_file: invalid certificate: {e}"))
                })?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| BuildError::new(format!("{field}: {e}")))?
            .with_root_certificates(roots);
        let mut config = match self.identity_pem()? {
            Some(IdentityPem { cert, key }) => {
                let chain = parse_certs(&cert, &format!("{field}.cert_file"))?;
                let key = parse_key(&key, &format!("{field}.key_file"))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| BuildError::new(format!("{field}.cert_file: {e}")))?
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
        .map_err(|e| BuildError::new(format!("{what}: invalid PEM: {e}")))
}

fn parse_key(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>, BuildError> {
    rustls_pemfile::private_key(&mut &pem[..])
        .map_err(|e| BuildError::new(format!("{what}: invalid PEM: {e}")))?
        .ok_or_else(|| BuildError::new(format!("{what}: no private key found")))
}
