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

use serde::Deserialize;
use sidekick_collector::component::{BuildError, FieldError};
use sidekick_collector::tls::{ClientTls, IdentityPem};

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

    fn client(&self) -> ClientTls<'_> {
        ClientTls {
            ca_file: self.ca_file.as_deref(),
            include_system_roots: self.include_system_ca_certs_pool,
            cert_file: self.cert_file.as_deref(),
            key_file: self.key_file.as_deref(),
            field: "tls",
        }
    }

    /// CA certificates from `ca_file`, in PEM.
    pub fn ca_pem(&self) -> Result<Option<Vec<u8>>, BuildError> {
        self.client().ca_pem()
    }

    /// Client certificate and key, in PEM.
    pub fn identity_pem(&self) -> Result<Option<IdentityPem>, BuildError> {
        self.client().identity_pem()
    }

    /// Whether the system's root certificates are trusted.
    pub fn use_system_roots(&self) -> bool {
        self.client().use_system_roots()
    }

    /// A rustls client config (ring provider) with these settings.
    pub fn rustls_config(&self) -> Result<rustls::ClientConfig, BuildError> {
        self.client().client_config()
    }
}
