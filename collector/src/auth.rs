//! The authenticator extensions, `bearertokenauth` and `basicauth`, as Collector configs
//! use them: defined under `extensions:`, listed in `service.extensions`, and named from
//! a listener or an exporter with `auth: {authenticator: <id>}`.
//!
//! ```yaml
//! extensions:
//!   bearertokenauth:
//!     token: ${env:OTEL_AUTH_TOKEN}   # or filename: a mounted Secret's file
//! receivers:
//!   otlp:
//!     protocols:
//!       grpc:
//!         auth: {authenticator: bearertokenauth}
//! service:
//!   extensions: [bearertokenauth]
//! ```
//!
//! The checks and credentials themselves are the transport's ([`Authenticator`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use sidekick_config::{AuthRef, BuildError, FieldError, ServerTls};
pub use sidekick_transport::auth::Authenticator;
use sidekick_transport::auth::{BasicAuthSettings, BearerTokenSettings};
use sidekick_transport::tls::listener;

/// Where an authenticator is used from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthSide {
    /// A listener checks requests with it.
    Listener,
    /// An exporter sends its credentials.
    Exporter,
}

/// One `auth:` of a component: the field it is at and the extension it names.
#[derive(Debug, Clone)]
pub struct AuthUse {
    /// The `auth` field's path inside the component, e.g. `protocols.grpc.auth`.
    pub field: String,
    pub authenticator: String,
    pub side: AuthSide,
}

impl AuthUse {
    pub fn new(field: impl Into<String>, reference: &AuthRef, side: AuthSide) -> Self {
        AuthUse {
            field: field.into(),
            authenticator: reference.authenticator.clone(),
            side,
        }
    }
}

/// What an authenticator extension's settings can do, known before anything is built.
#[derive(Debug, Clone, Copy)]
pub struct AuthAbilities {
    pub listener: bool,
    pub exporter: bool,
}

/// The authenticators of `service.extensions`, by id, for components to look up when
/// they are built.
#[derive(Default)]
pub struct Authenticators(BTreeMap<String, Arc<Authenticator>>);

/// No authenticators (component tests without extensions).
pub static NO_AUTHENTICATORS: Authenticators = Authenticators(BTreeMap::new());

impl Authenticators {
    pub fn insert(&mut self, id: String, authenticator: Arc<Authenticator>) {
        self.0.insert(id, authenticator);
    }

    /// The authenticator `reference` names. The plan has checked that it exists and can
    /// serve `side`, so a miss here is a config that skipped planning.
    pub fn get(
        &self,
        reference: &AuthRef,
        field: &str,
        side: AuthSide,
    ) -> Result<Arc<Authenticator>, BuildError> {
        let a = self.0.get(&reference.authenticator).ok_or_else(|| {
            BuildError::new(format!(
                "{field}: authenticator \"{}\" is not an extension in service.extensions",
                reference.authenticator
            ))
        })?;
        let usable = match side {
            AuthSide::Listener => a.serves(),
            AuthSide::Exporter => a.sends(),
        };
        if !usable {
            return Err(BuildError::new(format!(
                "{field}: authenticator \"{}\" cannot be used here",
                reference.authenticator
            )));
        }
        Ok(Arc::clone(a))
    }
}

/// What `validate` says about a listener at `prefix` listening on `endpoint`: its `tls`
/// files read and parsed, and a warning when it takes credentials in clear text from
/// beyond this machine.
pub fn check_listener(
    prefix: &str,
    endpoint: &str,
    tls: Option<&ServerTls>,
    auth: Option<&AuthRef>,
) -> Vec<FieldError> {
    let mut out = tls
        .map(|t| listener::validate(t, &format!("{prefix}tls")))
        .unwrap_or_default();
    let host = endpoint.rsplit_once(':').map_or(endpoint, |(h, _)| h);
    if auth.is_some() && tls.is_none() && !sidekick_transport::client::is_loopback(host) {
        out.push(FieldError::warning(
            format!("{prefix}auth"),
            format!("credentials arrive in clear text on {endpoint}, readable by anyone on the way: add tls (cert_file, key_file)"),
        ));
    }
    out
}

/// The settings of an authenticator extension kind.
pub trait AuthSettings: serde::de::DeserializeOwned + Send + 'static {
    fn check(&self) -> Vec<FieldError>;
    fn make(&self) -> Result<Authenticator, FieldError>;
    fn abilities(&self) -> AuthAbilities;
}

impl AuthSettings for BearerTokenSettings {
    fn check(&self) -> Vec<FieldError> {
        self.validate()
    }

    fn make(&self) -> Result<Authenticator, FieldError> {
        self.build()
    }

    fn abilities(&self) -> AuthAbilities {
        AuthAbilities {
            listener: true,
            exporter: true,
        }
    }
}

impl AuthSettings for BasicAuthSettings {
    fn check(&self) -> Vec<FieldError> {
        self.validate()
    }

    fn make(&self) -> Result<Authenticator, FieldError> {
        self.build()
    }

    fn abilities(&self) -> AuthAbilities {
        AuthAbilities {
            listener: self.htpasswd.is_some(),
            exporter: self.client_auth.is_some(),
        }
    }
}
