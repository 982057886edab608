//! The settings every exporter that sends over the network shares, written at the top
//! level of its config as in the Collector (its client, timeout, queue and retry blocks):
//! `endpoint`, `tls`, `headers`, `proxy_url`, `timeout`, `auth`, `sending_queue` and
//! `retry_on_failure`.
//!
//! An exporter keeps them in one [`ClientSettings`] field marked `#[serde(skip)]` and
//! says so with [`ExporterConfig::CLIENT`](crate::component::ExporterConfig::CLIENT). The
//! registry hands these keys to [`ClientSettings`] and the rest to the exporter's own
//! type, applies what is written over the kind's defaults, and checks them the same way
//! for every kind: header names and values, the proxy URL, TLS files when a target uses
//! TLS, credentials sent in clear text, the queue and the retry settings. The exporter
//! checks only what is its own, and says where its requests go
//! ([`ExporterConfig::endpoints`](crate::component::ExporterConfig::endpoints)).

use std::collections::BTreeMap;

use serde::Deserialize;
use sidekick_config::de::struct_fields;
use sidekick_config::error::unknown;
use sidekick_config::{
    AuthRef, ConfigError, Duration as ConfigDuration, FieldError, Node, Secret, Value,
};
use sidekick_transport::client::{check_headers, check_proxy_url, plaintext_credentials};
use sidekick_transport::tls::TlsSettings;

use super::{ExportSettings, QueueSettings, RetrySettings};
use crate::auth::{AuthSide, AuthUse};

/// The shared part of a network exporter's config.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// Where requests go; each kind says what form it takes.
    pub endpoint: String,
    pub tls: TlsSettings,
    /// Extra request headers, e.g. an API key. Values are kept out of logs.
    pub headers: BTreeMap<String, Secret>,
    /// Send every request through this HTTP proxy (`http://host:port`).
    pub proxy_url: Option<String>,
    /// Per attempt.
    pub timeout: ConfigDuration,
    /// An authenticator extension whose credentials go with every request.
    pub auth: Option<AuthRef>,
    pub sending_queue: QueueSettings,
    pub retry_on_failure: RetrySettings,
}

impl Default for ClientSettings {
    fn default() -> Self {
        ClientSettings {
            endpoint: String::new(),
            tls: TlsSettings::default(),
            headers: BTreeMap::new(),
            proxy_url: None,
            timeout: ConfigDuration::from_secs(5),
            auth: None,
            sending_queue: QueueSettings::default(),
            retry_on_failure: RetrySettings::default(),
        }
    }
}

/// How one exporter kind uses the shared settings.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientRules {
    /// Headers the protocol sets itself; refused in `headers`.
    pub reserved_headers: &'static [&'static str],
    /// Set when the kind cannot send through a proxy: why, and what to do instead.
    pub no_proxy: Option<&'static str>,
    /// Set when the kind's sending is configured by a key of its own (e.g.
    /// `remote_write_queue`): `sending_queue` then takes only the persistent queue's keys.
    pub sends_with: Option<&'static str>,
}

/// The `sending_queue` keys that set up a persistent queue.
const PERSISTENT_QUEUE_KEYS: [&str; 4] = ["storage", "when_full", "sizer", "queue_size"];

impl ClientSettings {
    /// The settings with another default timeout (`otlphttp`'s is 30s).
    pub fn with_timeout(timeout: ConfigDuration) -> Self {
        ClientSettings {
            timeout,
            ..ClientSettings::default()
        }
    }

    /// Queue, retry and timeout for the exporter helper; `max_request_bytes` is the
    /// kind's largest request, if it has one.
    pub fn export_settings(&self, max_request_bytes: Option<usize>) -> ExportSettings {
        ExportSettings {
            timeout: self.timeout.get(),
            queue: self.sending_queue.clone(),
            retry: self.retry_on_failure.clone(),
            max_request_bytes,
            persist: self.sending_queue.persist(),
        }
    }

    /// `auth`, checked against `service.extensions`.
    pub fn auth_uses(&self) -> Vec<AuthUse> {
        self.auth
            .iter()
            .map(|a| AuthUse::new("auth", a, AuthSide::Exporter))
            .collect()
    }

    /// The checks every network exporter gets. `targets` are where its requests go (or
    /// what is wrong with its endpoints); `credentials` are its own keys that carry
    /// credentials and are set, for the clear-text warning.
    pub fn validate(
        &self,
        rules: &ClientRules,
        targets: Vec<Result<String, FieldError>>,
        credentials: &[&'static str],
    ) -> Vec<FieldError> {
        let mut out = Vec::new();
        let mut fields = credentials.to_vec();
        if self.auth.is_some() {
            fields.push("auth");
        }
        let mut tls = false;
        for target in targets {
            match target {
                Err(e) => out.push(e),
                Ok(uri) if uri.starts_with("https://") => tls = true,
                Ok(uri) => {
                    for warning in plaintext_credentials(&uri, &self.headers, &fields) {
                        if !out.contains(&warning) {
                            out.push(warning);
                        }
                    }
                }
            }
        }
        if tls {
            out.extend(self.tls.validate());
        }
        out.extend(check_headers(&self.headers, rules.reserved_headers));
        match (&self.proxy_url, rules.no_proxy) {
            (Some(_), Some(why)) => out.push(FieldError::new("proxy_url", why)),
            (Some(p), None) => out.extend(check_proxy_url(p)),
            (None, _) => {}
        }
        out
    }
}

/// The shared keys as written: what is absent keeps the kind's default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ClientKeys {
    endpoint: Option<String>,
    tls: Option<TlsSettings>,
    headers: Option<BTreeMap<String, Secret>>,
    proxy_url: Option<String>,
    timeout: Option<ConfigDuration>,
    auth: Option<AuthRef>,
    sending_queue: Option<QueueSettings>,
    retry_on_failure: Option<RetrySettings>,
}

impl ClientKeys {
    /// Sets what was written over `to`.
    pub(crate) fn apply(self, to: &mut ClientSettings) {
        macro_rules! set {
            ($($field:ident),*) => {$(
                if let Some(v) = self.$field {
                    to.$field = v;
                }
            )*};
        }
        set!(
            endpoint,
            tls,
            headers,
            timeout,
            sending_queue,
            retry_on_failure
        );
        if self.proxy_url.is_some() {
            to.proxy_url = self.proxy_url;
        }
        if self.auth.is_some() {
            to.auth = self.auth;
        }
    }
}

/// The keys [`ClientSettings`] reads.
pub fn shared_keys() -> &'static [&'static str] {
    struct_fields::<ClientKeys>()
}

/// `node`'s entries in two maps, the shared keys' and the exporter's own (`own_keys`); a
/// key neither reads is reported with the nearest key of either.
pub(crate) fn split(
    node: &Node,
    path: &str,
    own_keys: &[&str],
    rules: &ClientRules,
) -> (Node, Node, Vec<ConfigError>) {
    let Value::Map(entries) = &node.value else {
        return (node.clone(), node.clone(), Vec::new());
    };
    let shared_keys = shared_keys();
    let (mut shared, mut own, mut errors) = (Vec::new(), Vec::new(), Vec::new());
    for (key, value) in entries {
        let name = key.as_str().unwrap_or_default();
        if shared_keys.contains(&name) {
            if name == "sending_queue" {
                errors.extend(queue_keys(value, path, rules));
            }
            shared.push((key.clone(), value.clone()));
        } else if own_keys.contains(&name) {
            own.push((key.clone(), value.clone()));
        } else {
            let all: Vec<&str> = shared_keys.iter().chain(own_keys).copied().collect();
            errors.push(ConfigError::new(
                format!("{path}.{name}"),
                Some(key.mark),
                unknown("field", name, &all),
            ));
        }
    }
    let map = |entries| Node {
        value: Value::Map(entries),
        mark: node.mark,
    };
    (map(shared), map(own), errors)
}

/// With `sends_with`, `sending_queue` keys other than the persistent queue's.
fn queue_keys(queue: &Node, path: &str, rules: &ClientRules) -> Vec<ConfigError> {
    let (Some(sends_with), Value::Map(entries)) = (rules.sends_with, &queue.value) else {
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|(key, _)| {
            let name = key.as_str().unwrap_or_default();
            let instead = match name {
                "batch" => {
                    "this exporter cuts its own requests: put a batch processor in the pipeline"
                        .to_string()
                }
                _ => format!(
                    "this exporter's sending is set by `{sends_with}`: write {sends_with}.{name}"
                ),
            };
            (!PERSISTENT_QUEUE_KEYS.contains(&name)).then(|| {
                ConfigError::new(
                    format!("{path}.sending_queue.{name}"),
                    Some(key.mark),
                    format!(
                        "{instead} (sending_queue takes only {}, for a persistent queue)",
                        PERSISTENT_QUEUE_KEYS.join(", ")
                    ),
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde::Deserialize;
    use sidekick_config::node;

    use super::*;
    use crate::component::{
        check_exporter, load_exporter, BuildContext, BuildError, ExporterConfig, ExporterParts,
        Loaded,
    };
    use sidekick_config::Signal;

    /// A whole new network exporter's config: its one key of its own, and the lines
    /// that hand the shared settings to the framework.
    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Minimal {
        #[serde(skip)]
        client: ClientSettings,
        greeting: String,
    }

    impl ExporterConfig for Minimal {
        const SIGNALS: &'static [Signal] = &Signal::ALL;
        const CLIENT: Option<ClientRules> = Some(ClientRules {
            reserved_headers: &["content-type"],
            no_proxy: None,
            sends_with: None,
        });

        fn client(&self) -> Option<&ClientSettings> {
            Some(&self.client)
        }

        fn client_mut(&mut self) -> Option<&mut ClientSettings> {
            Some(&mut self.client)
        }

        fn endpoints(&self) -> Vec<Result<String, FieldError>> {
            vec![Ok(self.client.endpoint.clone())]
        }

        fn export_settings(&self) -> ExportSettings {
            self.client.export_settings(None)
        }

        fn build(self, _: &BuildContext) -> Result<ExporterParts, BuildError> {
            Ok(ExporterParts::default())
        }
    }

    fn load(text: &str) -> Result<Loaded<Minimal>, Vec<String>> {
        let (root, _) = node::parse(text, &HashMap::new()).unwrap();
        load_exporter::<Minimal>(&root, "exporters.minimal")
            .map_err(|errors| errors.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn a_new_exporter_gets_the_shared_keys_read_and_checked() {
        let loaded = load(
            "endpoint: https://backend:443\ngreeting: hi\ntimeout: 7s\nheaders:\n  x-tenant: a\nsending_queue:\n  num_consumers: 3\nauth:\n  authenticator: bearertokenauth\n",
        )
        .unwrap();
        let m = loaded.config;
        assert_eq!(m.greeting, "hi");
        assert_eq!(m.client.endpoint, "https://backend:443");
        assert_eq!(m.client.timeout.get(), std::time::Duration::from_secs(7));
        assert_eq!(m.client.headers["x-tenant"].expose(), "a");
        assert_eq!(m.client.sending_queue.num_consumers, 3);
        // What is not written keeps the kind's default.
        assert!(m.client.retry_on_failure.enabled);
        assert_eq!(
            m.export_settings().timeout,
            std::time::Duration::from_secs(7)
        );
        assert_eq!(m.auth_uses().len(), 1);
        assert!(check_exporter(&m).is_empty());
    }

    #[test]
    fn a_new_exporter_s_bad_shared_keys_are_reported_where_they_are() {
        let errors = load(
            "endpoint: http://backend:80\ngreting: hi\nheaders:\n  Content-Type: x\nproxy_url: proxy:3128\nretry_on_failure:\n  randomization_factor: 2\ntls:\n  ca_file: /nonexistent/ca.pem\n",
        )
        .unwrap_err();
        assert_eq!(
            errors,
            [
                "2:1: exporters.minimal.greting: unknown field \"greting\"; did you mean \"greeting\"?",
                "4:17: exporters.minimal.headers.Content-Type: this header is set by the protocol and cannot be changed",
                "5:12: exporters.minimal.proxy_url: invalid proxy URL \"proxy:3128\": write http://host:port",
                "7:25: exporters.minimal.retry_on_failure.randomization_factor: must be between 0 and 1",
            ]
        );
        // TLS files are read only when a target uses TLS.
        let errors =
            load("endpoint: https://backend\ntls:\n  ca_file: /nonexistent/ca.pem\n").unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with("3:12: exporters.minimal.tls.ca_file: cannot read"));
        // A misspelt shared key is suggested across both halves.
        let errors = load("endpont: http://backend\n").unwrap_err();
        assert_eq!(
            errors[0],
            "1:1: exporters.minimal.endpont: unknown field \"endpont\"; did you mean \"endpoint\"?"
        );
    }

    #[test]
    fn credentials_in_clear_text_to_another_host_are_warned_about() {
        let loaded =
            load("endpoint: http://backend.example\nheaders:\n  authorization: Bearer x\n")
                .unwrap();
        assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
        assert!(loaded.warnings[0]
            .to_string()
            .contains("exporters.minimal.headers.authorization: a credential sent in clear text"));
    }
}
