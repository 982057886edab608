//! The receiver's configuration: a Prometheus `scrape_configs` block as Prometheus reads
//! it (durations, sizes, relabeling, auth), and what is checked before start.

use std::collections::BTreeMap;

use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer};
use sidekick_collector::component::FieldError;
use sidekick_collector::config::Secret;
use sidekick_transport::client::plaintext_credentials;

use sidekick_prometheus::relabel::RuleConfig;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// A Prometheus configuration: `global` and `scrape_configs`.
    pub config: PromConfig,
    /// Also scrape this Pod's app as its `prometheus.io/*` annotations say (read from the
    /// downward-API annotations file at start): `prometheus.io/scrape: "true"`,
    /// `prometheus.io/port`, `prometheus.io/path` (default `/metrics`),
    /// `prometheus.io/scheme` (default `http`). The target is `127.0.0.1:<port>`.
    pub pod_annotations: bool,
    /// Default `/etc/podinfo/annotations`.
    pub pod_annotations_file: Option<String>,
    /// `job` for the annotated target. Default `app`.
    pub pod_annotations_job: Option<String>,
    /// Annotation prefix to read. Default `prometheus.io`; use another (e.g.
    /// `sidekick.io`) when the Pod's `prometheus.io/*` annotations point Prometheus at
    /// Sidekick itself.
    pub pod_annotations_prefix: Option<String>,
    /// Series whose start time the receiver remembers at most, over all its targets
    /// (about 40 bytes each). Default 500000. Beyond it, new series are still delivered,
    /// with start = their scrape time (see [`series`]).
    pub max_series_state: Option<usize>,
}

impl Config {
    /// Every problem with the configuration, each naming its field.
    pub fn check(&self) -> Vec<FieldError> {
        let mut out = Vec::new();
        let c = &self.config;
        for (key, set) in [
            ("rule_files", c.rule_files.is_some()),
            ("alerting", c.alerting.is_some()),
            ("remote_write", c.remote_write.is_some()),
            ("remote_read", c.remote_read.is_some()),
            ("scrape_config_files", c.scrape_config_files.is_some()),
            ("global.external_labels", c.global.external_labels.is_some()),
            ("global.query_log_file", c.global.query_log_file.is_some()),
        ] {
            if set {
                out.push(FieldError::new(
                    format!("config.{key}"),
                    format!("{key} is not supported by the prometheus receiver; remove it"),
                ));
            }
        }
        if self.max_series_state == Some(0) {
            out.push(FieldError::new(
                "max_series_state",
                "must be at least 1 (series whose start time is remembered)",
            ));
        }
        if c.scrape_configs.is_empty() && !self.pod_annotations {
            out.push(FieldError::new(
                "config.scrape_configs",
                "add at least one scrape config (or pod_annotations: true)",
            ));
        }
        let mut jobs = std::collections::BTreeSet::new();
        for (i, sc) in c.scrape_configs.iter().enumerate() {
            let at = |field: &str| format!("config.scrape_configs[{i}].{field}");
            let credentials: Vec<String> = [
                ("authorization", sc.authorization.is_some()),
                ("basic_auth", sc.basic_auth.is_some()),
                ("bearer_token", sc.bearer_token.is_some()),
                ("bearer_token_file", sc.bearer_token_file.is_some()),
            ]
            .into_iter()
            .filter(|(_, set)| *set)
            .map(|(field, _)| at(field))
            .collect();
            let fields: Vec<&str> = credentials.iter().map(String::as_str).collect();
            let warnings = sc
                .static_configs
                .iter()
                .flat_map(|s| &s.targets)
                .find_map(|t| {
                    let url = format!("{}://{t}", sc.scheme);
                    let w = plaintext_credentials(&url, &BTreeMap::new(), &fields);
                    (!w.is_empty()).then_some(w)
                });
            out.extend(warnings.unwrap_or_default());
            if sc.job_name.is_empty() {
                out.push(FieldError::new(at("job_name"), "job_name is required"));
            } else if !jobs.insert(sc.job_name.clone()) {
                out.push(FieldError::new(
                    at("job_name"),
                    format!("job_name \"{}\" is used twice", sc.job_name),
                ));
            }
            for key in sc.unsupported() {
                out.push(FieldError::new(
                    at(key),
                    format!("{key} is not supported by Sidekick's prometheus receiver; use static_configs"),
                ));
            }
            if !matches!(sc.scheme.as_str(), "http" | "https") {
                out.push(FieldError::new(
                    at("scheme"),
                    "scheme must be http or https",
                ));
            }
            if !sc.metrics_path.starts_with('/') {
                out.push(FieldError::new(at("metrics_path"), "must start with /"));
            }
            let (interval, timeout) = timing(&c.global, sc);
            if interval.is_zero() {
                out.push(FieldError::new(
                    at("scrape_interval"),
                    "must be more than 0",
                ));
            }
            if timeout > interval {
                out.push(FieldError::new(
                    at("scrape_timeout"),
                    format!("scrape_timeout ({timeout:?}) must not exceed scrape_interval ({interval:?})"),
                ));
            }
            if let Some(Err(e)) = sc.scrape_protocols.as_deref().map(check_protocols) {
                out.push(FieldError::new(at("scrape_protocols"), e));
            }
            if let Some(limit) = &sc.body_size_limit {
                if let Err(e) = parse_size(limit) {
                    out.push(FieldError::new(at("body_size_limit"), e));
                }
            }
            let auths = [
                sc.basic_auth.is_some(),
                sc.authorization.is_some(),
                sc.bearer_token.is_some() || sc.bearer_token_file.is_some(),
            ];
            if auths.iter().filter(|a| **a).count() > 1 {
                out.push(FieldError::new(
                    at("authorization"),
                    "use only one of basic_auth, authorization and bearer_token",
                ));
            }
            if let Some(a) = &sc.authorization {
                if a.credentials.is_some() && a.credentials_file.is_some() {
                    out.push(FieldError::new(
                        at("authorization"),
                        "use credentials or credentials_file, not both",
                    ));
                }
            }
            if let Some(tls) = &sc.tls_config {
                if tls.cert_file.is_some() != tls.key_file.is_some() {
                    out.push(FieldError::new(
                        at("tls_config"),
                        "cert_file and key_file go together",
                    ));
                }
                if tls.server_name.is_some() || tls.min_version.is_some() {
                    out.push(FieldError::new(
                        at("tls_config"),
                        "server_name and min_version are not supported",
                    ));
                }
            }
            for (list, rules) in [
                ("relabel_configs", &sc.relabel_configs),
                ("metric_relabel_configs", &sc.metric_relabel_configs),
            ] {
                for (j, r) in rules.iter().enumerate() {
                    if let Err((field, message)) = r.compile() {
                        out.push(FieldError::new(
                            at(&format!("{list}[{j}].{field}")),
                            message,
                        ));
                    }
                }
            }
            for (j, s) in sc.static_configs.iter().enumerate() {
                for (k, t) in s.targets.iter().enumerate() {
                    if t.contains('/') || t.is_empty() {
                        out.push(FieldError::new(
                            at(&format!("static_configs[{j}].targets[{k}]")),
                            format!("target \"{t}\" must be host:port (set scheme and metrics_path separately)"),
                        ));
                    }
                }
            }
        }
        out
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PromConfig {
    pub global: Global,
    pub scrape_configs: Vec<ScrapeConfig>,
    // Prometheus keys that make no sense in a scrape receiver.
    rule_files: Option<IgnoredAny>,
    alerting: Option<IgnoredAny>,
    remote_write: Option<IgnoredAny>,
    remote_read: Option<IgnoredAny>,
    scrape_config_files: Option<IgnoredAny>,
}

/// A Prometheus duration: `15s`, `1m`, `1h30m`, `1d`, `1w`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PromDuration(pub std::time::Duration);

impl<'de> Deserialize<'de> for PromDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_prom_duration(&text)
            .map(PromDuration)
            .map_err(serde::de::Error::custom)
    }
}

pub(super) fn parse_prom_duration(text: &str) -> Result<std::time::Duration, String> {
    let bad = || {
        format!(
            "invalid duration \"{text}\": write e.g. 15s, 1m or 1h30m (units ms, s, m, h, d, w, y)"
        )
    };
    if text == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    let mut rest = text;
    let mut total_ms: u64 = 0;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let ms = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            "y" => 31_536_000_000,
            _ => return Err(bad()),
        };
        total_ms = total_ms.saturating_add(n.saturating_mul(ms));
        rest = &rest[unit_len..];
    }
    Ok(std::time::Duration::from_millis(total_ms))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Global {
    /// Default 1m.
    pub scrape_interval: PromDuration,
    /// Default 10s (never more than the interval).
    pub scrape_timeout: PromDuration,
    /// Accepted for compatibility with prometheus.yml files; unused.
    pub evaluation_interval: Option<PromDuration>,
    external_labels: Option<IgnoredAny>,
    query_log_file: Option<IgnoredAny>,
}

impl Default for Global {
    fn default() -> Self {
        Global {
            scrape_interval: PromDuration(std::time::Duration::from_secs(60)),
            scrape_timeout: PromDuration(std::time::Duration::from_secs(10)),
            evaluation_interval: None,
            external_labels: None,
            query_log_file: None,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StaticConfig {
    /// `host:port` of each target.
    pub targets: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

pub use sidekick_transport::client::BasicAuth;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Authorization {
    /// Default `Bearer`.
    #[serde(rename = "type")]
    pub kind: String,
    pub credentials: Option<Secret>,
    pub credentials_file: Option<String>,
}

impl Default for Authorization {
    fn default() -> Self {
        Authorization {
            kind: "Bearer".into(),
            credentials: None,
            credentials_file: None,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    /// Accept any certificate from the target (no chain or name check).
    pub insecure_skip_verify: Option<bool>,
    server_name: Option<IgnoredAny>,
    min_version: Option<IgnoredAny>,
}

/// One Prometheus `scrape_config`: the keys Sidekick supports, plus the well-known keys it
/// does not, so that using one gives a clear error instead of "unknown field".
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScrapeConfig {
    pub job_name: String,
    pub scrape_interval: Option<PromDuration>,
    pub scrape_timeout: Option<PromDuration>,
    /// Default `/metrics`.
    pub metrics_path: String,
    /// `http` (default) or `https`.
    pub scheme: String,
    pub params: BTreeMap<String, Vec<String>>,
    /// Keep the page's `job`/`instance`/… labels when they clash with the target's.
    pub honor_labels: bool,
    /// Use the page's timestamps. Default true.
    pub honor_timestamps: bool,
    pub static_configs: Vec<StaticConfig>,
    pub basic_auth: Option<BasicAuth>,
    pub authorization: Option<Authorization>,
    pub bearer_token: Option<Secret>,
    pub bearer_token_file: Option<String>,
    pub tls_config: Option<TlsConfig>,
    /// Fail the scrape when more samples than this remain after metric relabeling; the
    /// page is read no further than the first sample over it. 0: no limit.
    pub sample_limit: usize,
    /// Fail the scrape when a series has more labels than this after metric relabeling
    /// (`__name__`, `job`, `instance` and the target's labels count). 0: no limit.
    pub label_limit: usize,
    /// Fail the scrape when a label name is longer than this (bytes). 0: no limit.
    pub label_name_length_limit: usize,
    /// Fail the scrape when a label value (or metric name) is longer than this (bytes).
    /// 0: no limit.
    pub label_value_length_limit: usize,
    /// Largest page accepted (uncompressed), e.g. `10MB`; reading stops at the first byte
    /// over it. Default [`DEFAULT_BODY_SIZE_LIMIT`] (16 MiB); `0` means no limit, as in
    /// Prometheus.
    pub body_size_limit: Option<String>,
    pub relabel_configs: Vec<RuleConfig>,
    pub metric_relabel_configs: Vec<RuleConfig>,
    pub(super) kubernetes_sd_configs: Option<IgnoredAny>,
    pub(super) file_sd_configs: Option<IgnoredAny>,
    pub(super) dns_sd_configs: Option<IgnoredAny>,
    pub(super) consul_sd_configs: Option<IgnoredAny>,
    pub(super) http_sd_configs: Option<IgnoredAny>,
    pub(super) ec2_sd_configs: Option<IgnoredAny>,
    pub(super) azure_sd_configs: Option<IgnoredAny>,
    pub(super) gce_sd_configs: Option<IgnoredAny>,
    pub(super) oauth2: Option<IgnoredAny>,
    pub(super) proxy_url: Option<IgnoredAny>,
    pub(super) follow_redirects: Option<IgnoredAny>,
    pub(super) enable_http2: Option<IgnoredAny>,
    /// The formats asked for, most wanted first, as Prometheus names them
    /// (`PrometheusProto`, `OpenMetricsText1.0.0`, `OpenMetricsText0.0.1`,
    /// `PrometheusText0.0.4`, `PrometheusText1.0.0`). Default: OpenMetrics, then text;
    /// with `scrape_native_histograms`, the protobuf format first.
    pub scrape_protocols: Option<Vec<String>>,
    /// Ask for the protobuf format first (unless `scrape_protocols` says otherwise), the
    /// one that carries native histograms; they become OTLP exponential histograms.
    pub scrape_native_histograms: bool,
    pub(super) target_limit: Option<IgnoredAny>,
    pub(super) track_timestamps_staleness: Option<IgnoredAny>,
    pub(super) native_histogram_bucket_limit: Option<IgnoredAny>,
    pub(super) scrape_classic_histograms: Option<IgnoredAny>,
    pub(super) always_scrape_classic_histograms: Option<IgnoredAny>,
    pub(super) enable_compression: Option<IgnoredAny>,
    pub(super) http_headers: Option<IgnoredAny>,
}

impl Default for ScrapeConfig {
    fn default() -> Self {
        ScrapeConfig {
            job_name: String::new(),
            scrape_interval: None,
            scrape_timeout: None,
            metrics_path: "/metrics".into(),
            scheme: "http".into(),
            params: BTreeMap::new(),
            honor_labels: false,
            honor_timestamps: true,
            static_configs: Vec::new(),
            basic_auth: None,
            authorization: None,
            bearer_token: None,
            bearer_token_file: None,
            tls_config: None,
            sample_limit: 0,
            label_limit: 0,
            label_name_length_limit: 0,
            label_value_length_limit: 0,
            body_size_limit: None,
            relabel_configs: Vec::new(),
            metric_relabel_configs: Vec::new(),
            kubernetes_sd_configs: None,
            file_sd_configs: None,
            dns_sd_configs: None,
            consul_sd_configs: None,
            http_sd_configs: None,
            ec2_sd_configs: None,
            azure_sd_configs: None,
            gce_sd_configs: None,
            oauth2: None,
            proxy_url: None,
            follow_redirects: None,
            enable_http2: None,
            scrape_protocols: None,
            scrape_native_histograms: false,
            target_limit: None,
            track_timestamps_staleness: None,
            native_histogram_bucket_limit: None,
            scrape_classic_histograms: None,
            always_scrape_classic_histograms: None,
            enable_compression: None,
            http_headers: None,
        }
    }
}

impl ScrapeConfig {
    /// The supported-in-Prometheus keys present here that Sidekick does not support.
    fn unsupported(&self) -> Vec<&'static str> {
        let keys: [(&'static str, bool); 19] = [
            (
                "kubernetes_sd_configs",
                self.kubernetes_sd_configs.is_some(),
            ),
            ("file_sd_configs", self.file_sd_configs.is_some()),
            ("dns_sd_configs", self.dns_sd_configs.is_some()),
            ("consul_sd_configs", self.consul_sd_configs.is_some()),
            ("http_sd_configs", self.http_sd_configs.is_some()),
            ("ec2_sd_configs", self.ec2_sd_configs.is_some()),
            ("azure_sd_configs", self.azure_sd_configs.is_some()),
            ("gce_sd_configs", self.gce_sd_configs.is_some()),
            ("oauth2", self.oauth2.is_some()),
            ("proxy_url", self.proxy_url.is_some()),
            ("follow_redirects", self.follow_redirects.is_some()),
            ("enable_http2", self.enable_http2.is_some()),
            ("target_limit", self.target_limit.is_some()),
            (
                "track_timestamps_staleness",
                self.track_timestamps_staleness.is_some(),
            ),
            (
                "native_histogram_bucket_limit",
                self.native_histogram_bucket_limit.is_some(),
            ),
            (
                "scrape_classic_histograms",
                self.scrape_classic_histograms.is_some(),
            ),
            (
                "always_scrape_classic_histograms",
                self.always_scrape_classic_histograms.is_some(),
            ),
            ("enable_compression", self.enable_compression.is_some()),
            ("http_headers", self.http_headers.is_some()),
        ];
        keys.iter()
            .filter(|(_, set)| *set)
            .map(|(k, _)| *k)
            .collect()
    }
}

/// The scrape protocols Prometheus knows, with the media type each asks for.
pub const SCRAPE_PROTOCOLS: [(&str, &str); 5] = [
    (
        "PrometheusProto",
        sidekick_prometheus::exposition::CONTENT_TYPE,
    ),
    (
        "OpenMetricsText1.0.0",
        "application/openmetrics-text;version=1.0.0",
    ),
    (
        "OpenMetricsText0.0.1",
        "application/openmetrics-text;version=0.0.1",
    ),
    ("PrometheusText0.0.4", "text/plain;version=0.0.4"),
    ("PrometheusText1.0.0", "text/plain;version=1.0.0"),
];

/// The `Accept` header of a scrape config: its protocols in order, each less wanted than
/// the one before, then anything.
pub(super) fn accept_header(sc: &ScrapeConfig) -> String {
    const TEXT: [&str; 3] = [
        "OpenMetricsText1.0.0",
        "OpenMetricsText0.0.1",
        "PrometheusText0.0.4",
    ];
    let protocols: Vec<&str> = match &sc.scrape_protocols {
        Some(p) => p.iter().map(String::as_str).collect(),
        None if sc.scrape_native_histograms => {
            std::iter::once("PrometheusProto").chain(TEXT).collect()
        }
        None => TEXT.to_vec(),
    };
    let mut out = String::new();
    for (i, p) in protocols.iter().enumerate() {
        let Some((_, media)) = SCRAPE_PROTOCOLS.iter().find(|(name, _)| name == p) else {
            continue;
        };
        if i > 0 {
            out.push(',');
        }
        out.push_str(media);
        if i > 0 {
            out.push_str(&format!(";q=0.{}", 9usize.saturating_sub(i).max(2)));
        }
    }
    out.push_str(",*/*;q=0.1");
    out
}

/// What is wrong with `scrape_protocols`, if anything.
fn check_protocols(protocols: &[String]) -> Result<(), String> {
    if protocols.is_empty() {
        return Err("scrape_protocols is empty; leave it out for the default".into());
    }
    for (i, p) in protocols.iter().enumerate() {
        if !SCRAPE_PROTOCOLS.iter().any(|(name, _)| name == p) {
            let names: Vec<&str> = SCRAPE_PROTOCOLS.iter().map(|(n, _)| *n).collect();
            return Err(format!(
                "unknown scrape protocol \"{p}\"; write one of {}",
                names.join(", ")
            ));
        }
        if protocols[..i].contains(p) {
            return Err(format!("scrape protocol \"{p}\" is listed twice"));
        }
    }
    Ok(())
}

/// `10MB`, `512KiB`, `1GB`, … (base 2, as Prometheus reads them); 0 means no limit.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let n: usize = t[..split]
        .parse()
        .map_err(|_| format!("invalid size \"{text}\": write e.g. 10MB"))?;
    let mult = match t[split..].trim() {
        "" | "B" => 1,
        "KB" | "KiB" => 1 << 10,
        "MB" | "MiB" => 1 << 20,
        "GB" | "GiB" => 1 << 30,
        _ => return Err(format!("invalid size \"{text}\": units are B, KB, MB, GB")),
    };
    Ok(n.saturating_mul(mult))
}

/// `body_size_limit` when the scrape config does not set it: 16 MiB, room for about
/// 150,000 series of a typical page (100 bytes a line) while bounding what one scrape can
/// hold in a sidecar's memory. `body_size_limit: 0` lifts it, as in Prometheus.
pub const DEFAULT_BODY_SIZE_LIMIT: usize = 16 << 20;

/// The page size a scrape config accepts.
pub(super) fn body_limit(sc: &ScrapeConfig) -> Result<usize, String> {
    match &sc.body_size_limit {
        None => Ok(DEFAULT_BODY_SIZE_LIMIT),
        Some(s) => match parse_size(s)? {
            0 => Ok(usize::MAX),
            n => Ok(n),
        },
    }
}

/// Interval and timeout for a scrape config, falling back to `global`; the timeout is
/// capped at the interval only by validation.
pub(super) fn timing(
    global: &Global,
    sc: &ScrapeConfig,
) -> (std::time::Duration, std::time::Duration) {
    let interval = sc.scrape_interval.unwrap_or(global.scrape_interval).0;
    let timeout = match sc.scrape_timeout {
        Some(t) => t.0,
        None => global.scrape_timeout.0.min(interval),
    };
    (interval, timeout)
}
