//! A throwaway certificate authority for TLS tests: a CA, a server certificate for
//! `localhost` / `127.0.0.1` and a client certificate, written as PEM files into a
//! directory removed on drop. The server certificate can be reissued in place, as
//! Kubernetes rotates a mounted Secret.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

pub struct Pki {
    pub dir: PathBuf,
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    /// A new CA (common name `name`) with `ca.pem`, `server.pem`/`server-key.pem` and
    /// `client.pem`/`client-key.pem` in a fresh directory.
    pub fn new(name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sidekick-pki-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        let pki = Pki { dir, ca };
        pki.issue_server();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["sidekick-client".to_string()])
            .unwrap()
            .signed_by(&key, &pki.ca)
            .unwrap();
        pki.write("client.pem", &cert.pem());
        pki.write("client-key.pem", &key.serialize_pem());
        pki
    }

    /// The path of one of the files, e.g. `ca.pem`.
    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// Replaces a file the way a Secret update does: the new bytes appear at once.
    pub fn write(&self, name: &str, contents: &str) {
        let tmp = self.dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, contents).unwrap();
        std::fs::rename(&tmp, self.dir.join(name)).unwrap();
    }

    /// Issues a new server certificate and key into `server.pem` / `server-key.pem`;
    /// returns the certificate.
    pub fn issue_server(&self) -> CertificateDer<'static> {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&key, &self.ca)
            .unwrap();
        // The key first: a reader between the two sees a pair that does not match,
        // which it must reject and read again later.
        self.write("server-key.pem", &key.serialize_pem());
        self.write("server.pem", &cert.pem());
        cert.der().clone()
    }

    /// The server certificate and key now in the files.
    pub fn server_identity(&self) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        use rustls::pki_types::pem::PemObject;
        let cert = CertificateDer::from_pem_file(self.dir.join("server.pem")).unwrap();
        let key = PrivatePkcs8KeyDer::from_pem_file(self.dir.join("server-key.pem")).unwrap();
        (cert, key.into())
    }

    pub fn ca_der(&self) -> CertificateDer<'static> {
        self.ca.der().clone()
    }

    /// A client config trusting this CA, offering HTTP/2 and HTTP/1.1, with the client
    /// certificate when `with_client_cert`.
    pub fn client_config(&self, with_client_cert: bool) -> rustls::ClientConfig {
        self.client_config_presenting(with_client_cert.then_some(self))
    }

    /// A client config trusting this CA and presenting the client certificate of
    /// `identity` (this CA's or another's), if any.
    pub fn client_config_presenting(&self, identity: Option<&Pki>) -> rustls::ClientConfig {
        use rustls::pki_types::pem::PemObject;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der()).unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let mut config = match identity {
            Some(id) => {
                let cert = CertificateDer::from_pem_file(id.dir.join("client.pem")).unwrap();
                let key = PrivateKeyDer::from_pem_file(id.dir.join("client-key.pem")).unwrap();
                builder.with_client_auth_cert(vec![cert], key).unwrap()
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config
    }

    /// A server config with the current server certificate that requires a client
    /// certificate from this CA.
    pub fn mtls_server_config(&self) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der()).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .unwrap();
        let (cert, key) = self.server_identity();
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![cert], key)
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
