//! Value types that component configs share.

use std::fmt;

use serde::de::{self, Deserializer};
use serde::Deserialize;

/// A duration written as in the OpenTelemetry Collector: `200ms`, `5s`, `1m30s`, `1h`, `0`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    pub const fn from_millis(ms: u64) -> Self {
        Duration(std::time::Duration::from_millis(ms))
    }

    pub const fn from_secs(s: u64) -> Self {
        Duration(std::time::Duration::from_secs(s))
    }

    pub fn get(self) -> std::time::Duration {
        self.0
    }

    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }
}

impl fmt::Debug for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// Parses a Go-style duration string.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let t = text.trim();
    if t == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    let bad = || {
        format!("invalid duration \"{text}\": write a number with a unit (ns, us, ms, s, m, h), e.g. \"5s\" or \"200ms\"")
    };
    let mut total = 0f64;
    let mut rest = t;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let number: f64 = rest[..num_end].parse().map_err(|_| bad())?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos_per = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        total += number * nanos_per;
        rest = &rest[unit_end..];
    }
    Ok(std::time::Duration::from_nanos(total.round() as u64))
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text)
            .map(Duration)
            .map_err(de::Error::custom)
    }
}

/// A value that must not appear in logs (tokens, passwords, auth headers).
#[derive(Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"[redacted]\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration as D;

    #[test]
    fn parses_go_durations() {
        assert_eq!(parse_duration("200ms").unwrap(), D::from_millis(200));
        assert_eq!(parse_duration("1m30s").unwrap(), D::from_secs(90));
        assert_eq!(parse_duration("1.5h").unwrap(), D::from_secs(5400));
        assert_eq!(parse_duration("0").unwrap(), D::ZERO);
        assert!(parse_duration("5").unwrap_err().contains("with a unit"));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn secrets_do_not_print() {
        assert_eq!(format!("{:?}", Secret("token".into())), "\"[redacted]\"");
    }
}

/// A listener's `tls:` block, in the Collector's shape (`configtls.ServerConfig`):
///
/// ```yaml
/// tls:
///   cert_file: /etc/tls/tls.crt
///   key_file: /etc/tls/tls.key
///   client_ca_file: /etc/tls/ca.crt   # mutual TLS: clients must present a certificate
///   min_version: "1.2"
///   reload_interval: 10s
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerTls {
    /// PEM certificate chain the listener presents; needs `key_file`.
    pub cert_file: Option<String>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<String>,
    /// PEM CA certificates that sign client certificates. Set: every client must present
    /// a certificate signed by one of them (mutual TLS).
    pub client_ca_file: Option<String>,
    /// Collector switch to re-read `client_ca_file` on change; Sidekick always does, at
    /// `reload_interval`.
    pub client_ca_file_reload: Option<bool>,
    /// A client-side setting in the Collector's shared block; no effect on a listener.
    pub ca_file: Option<String>,
    /// Lowest TLS version, `"1.2"` (default) or `"1.3"`.
    pub min_version: Option<String>,
    /// Highest TLS version, `"1.3"` (default) or `"1.2"`.
    pub max_version: Option<String>,
    /// How often the certificate, key and client CA files are read again, so a mounted
    /// Secret rotated in place is used by new connections. Default 10s.
    pub reload_interval: Option<Duration>,
}

/// `auth: {authenticator: bearertokenauth}`: which authenticator extension a listener
/// checks requests with, or an exporter sends credentials from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthRef {
    /// The extension's id, e.g. `bearertokenauth` or `basicauth/prometheus`; it must be
    /// listed in `service.extensions`.
    pub authenticator: String,
}
