//! The extensions Sidekick provides, as config-is-factory kinds: `health_check`,
//! `bearertokenauth` and `basicauth`, `file_storage`. What they provide (readiness,
//! authenticators, storage directories) is defined by the lower modules they build.

use axum::routing::get;
use axum::Router;
use http::StatusCode;
use sidekick_config::{BuildError, FieldError};
use sidekick_transport::server::{response, serve_with, ServerOptions};
use tokio::net::TcpListener;

use crate::auth::{AuthAbilities, AuthSettings, Authenticator};
use crate::base::{Health, Stop};
use crate::component::{BuildContext, Extension, ExtensionConfig};
use crate::storage::{FileStorageConfig, Storage};

/// The `health_check` extension, for configs written for the OpenTelemetry Collector:
/// `GET <path>` on its own port answers 200 while Sidekick is ready, 503 otherwise.
/// Sidekick's admin port also serves `/healthz` and `/readyz`.
///
/// ```yaml
/// extensions:
///   health_check:
///     endpoint: 0.0.0.0:13133
/// service:
///   extensions: [health_check]
/// ```
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheckConfig {
    /// Default `127.0.0.1:13133`.
    pub endpoint: String,
    /// Default `/`.
    pub path: String,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        HealthCheckConfig {
            endpoint: "127.0.0.1:13133".into(),
            path: "/".into(),
        }
    }
}

impl crate::component::ExtensionConfig for HealthCheckConfig {
    fn validate(&self) -> Vec<crate::component::FieldError> {
        if self.path.starts_with('/') {
            Vec::new()
        } else {
            vec![crate::component::FieldError::new(
                "path",
                "must start with /",
            )]
        }
    }

    fn listen_addresses(&self) -> Vec<crate::component::Listen> {
        vec![crate::component::Listen {
            field: "endpoint".into(),
            address: self.endpoint.clone(),
        }]
    }

    fn build(
        self,
        ctx: &crate::component::BuildContext,
        health: Health,
    ) -> Result<Box<dyn crate::component::Extension>, crate::component::BuildError> {
        let listener = sidekick_transport::server::bind(&self.endpoint, "endpoint")?;
        Ok(Box::new(HealthCheck {
            listener,
            path: self.path,
            health,
            options: ctx.listener_options(&format!("extensions.{}", ctx.id)),
        }))
    }
}

struct HealthCheck {
    listener: TcpListener,
    path: String,
    health: Health,
    options: ServerOptions,
}

impl crate::component::Extension for HealthCheck {
    fn run(self: Box<Self>, stop: Stop) -> crate::component::BoxFuture<'static, ()> {
        let HealthCheck {
            listener,
            path,
            health,
            options,
        } = *self;
        let started = std::time::SystemTime::now();
        let check = move || async move {
            let up_since = started
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let uptime = started.elapsed().map(|d| d.as_secs_f64()).unwrap_or(0.0);
            let (status, text) = if health.is_ready() {
                (StatusCode::OK, "Server available")
            } else {
                (StatusCode::SERVICE_UNAVAILABLE, "Server not available")
            };
            let body = format!(
                "{{\"status\":\"{text}\",\"upSince\":{up_since},\"uptime\":\"{uptime:.3}s\"}}"
            );
            response(status, "application/json", body)
        };
        let router = Router::new().route(&path, get(check));
        Box::pin(async move { serve_with(listener, router, &options, stop.fired()).await })
    }
}

/// An authenticator extension kind: register `AuthExtension<BearerTokenSettings>` as
/// `bearertokenauth` and `AuthExtension<BasicAuthSettings>` as `basicauth`.
#[derive(serde::Deserialize)]
#[serde(transparent)]
pub struct AuthExtension<S>(pub S);

impl<S: AuthSettings> ExtensionConfig for AuthExtension<S> {
    fn validate(&self) -> Vec<FieldError> {
        self.0.check()
    }

    fn authenticator(&self) -> Option<Result<Authenticator, BuildError>> {
        let made = self.0.make();
        Some(made.map_err(|e| BuildError::new(format!("{}: {}", e.field, e.message))))
    }

    fn auth_abilities(&self) -> Option<AuthAbilities> {
        Some(self.0.abilities())
    }

    fn build(self, _ctx: &BuildContext, _health: Health) -> Result<Box<dyn Extension>, BuildError> {
        Ok(Box::new(crate::component::NoTask))
    }
}

impl ExtensionConfig for FileStorageConfig {
    fn validate(&self) -> Vec<FieldError> {
        let mut out = Vec::new();
        if self.directory.trim().is_empty() {
            out.push(FieldError::new(
                "directory",
                "write a directory, e.g. /var/lib/sidekick",
            ));
        }
        for (field, set) in [
            ("timeout", self.timeout.is_some()),
            ("compaction", self.compaction.is_some()),
        ] {
            if set {
                out.push(FieldError::no_effect(
                    field,
                    "Sidekick keeps each value in a small file of its own, with no database to wait for or compact",
                ));
            }
        }
        out
    }

    fn provides_storage(&self) -> bool {
        true
    }

    fn storage(&self) -> Option<Result<Storage, BuildError>> {
        Some(Storage::open(self).map_err(|e| BuildError::new(format!("directory: {e}"))))
    }

    fn build(self, _ctx: &BuildContext, _health: Health) -> Result<Box<dyn Extension>, BuildError> {
        Ok(Box::new(crate::component::NoTask))
    }
}
