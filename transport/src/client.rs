//! Outgoing connections, built one way for every exporter: request headers (kept
//! out of logs), credentials, an HTTP client (reqwest) and a gRPC channel (tonic), both
//! on the same rustls config from [`crate::tls`].

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine;
use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde::Deserialize;
use sidekick_config::{BuildError, FieldError, Secret};

use crate::coalesce::Coalesce;
use tokio::io::{AsyncRead, AsyncWrite};
use tonic::transport::{Channel, Endpoint};

/// Sent as `User-Agent` by every exporter.
pub const USER_AGENT: &str = concat!("Sidekick/", env!("CARGO_PKG_VERSION"));

/// How long a TCP (and TLS) connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// `basic_auth:` on an exporter.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BasicAuth {
    pub username: String,
    pub password: Option<Secret>,
    /// Read the password from this file (e.g. a mounted Secret).
    pub password_file: Option<String>,
}

/// Where an `Authorization` header comes from.
#[derive(Debug, Clone, Copy)]
pub enum Credentials<'a> {
    Basic(&'a BasicAuth),
    /// `Authorization: <scheme> <token>`, e.g. `Bearer`.
    Token {
        scheme: &'a str,
        token: &'a Secret,
    },
    /// The same, the token read from the file at `path`; `field` names the option in
    /// errors (`bearer_token_file`, `authorization.credentials_file`).
    TokenFile {
        scheme: &'a str,
        path: &'a str,
        field: &'a str,
    },
}

impl Credentials<'_> {
    /// The header value, files read now.
    pub fn header(&self) -> Result<HeaderValue, BuildError> {
        let read = |path: &str, field: &str| {
            std::fs::read_to_string(path)
                .map(|s| s.trim().to_string())
                .map_err(|e| BuildError::new(format!("{field}: cannot read {path}: {e}")))
        };
        let text = match self {
            Credentials::Basic(b) => {
                let password = match (&b.password, &b.password_file) {
                    (Some(p), _) => p.expose().to_string(),
                    (None, Some(f)) => read(f, "basic_auth.password_file")?,
                    (None, None) => String::new(),
                };
                let pair = format!("{}:{password}", b.username);
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                )
            }
            Credentials::Token { scheme, token } => format!("{scheme} {}", token.expose()),
            Credentials::TokenFile {
                scheme,
                path,
                field,
            } => format!("{scheme} {}", read(path, field)?),
        };
        let mut value = HeaderValue::from_str(&text)
            .map_err(|_| BuildError::new("credentials contain characters a header cannot"))?;
        value.set_sensitive(true);
        Ok(value)
    }
}

/// Problems with configured `headers:`; `reserved` names headers the protocol sets
/// itself (lower case).
pub fn check_headers(headers: &BTreeMap<String, Secret>, reserved: &[&str]) -> Vec<FieldError> {
    let mut out = Vec::new();
    for (name, value) in headers {
        let field = format!("headers.{name}");
        if reserved.contains(&name.to_ascii_lowercase().as_str()) {
            out.push(FieldError::new(
                field,
                "this header is set by the protocol and cannot be changed",
            ));
        } else if HeaderName::from_bytes(name.as_bytes()).is_err() {
            out.push(FieldError::new(field, "invalid header name"));
        } else if HeaderValue::from_str(value.expose()).is_err() {
            // The value is a secret: say what is wrong, never what it is.
            out.push(FieldError::new(
                field,
                "invalid header value (control characters or non-ASCII)",
            ));
        }
    }
    out
}

/// Whether a header's name says it carries a credential (`Authorization`, `X-API-Key`,
/// a token, a secret, a password, a cookie).
pub fn is_credential_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    ["auth", "token", "key", "secret", "password", "cookie"]
        .iter()
        .any(|w| n.contains(w))
}

/// Whether `host` (a name or an address, IPv6 with or without brackets) is this machine.
pub fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A warning for each credential sent in clear text: `url` is plain `http://` to a host
/// other than this machine, and a credential-bearing header or one of `credentials`
/// (the fields that hold one, when set) would travel with every request. Values are never
/// part of the message.
pub fn plaintext_credentials(
    url: &str,
    headers: &BTreeMap<String, Secret>,
    credentials: &[&str],
) -> Vec<FieldError> {
    let Ok(uri) = url.parse::<http::Uri>() else {
        return Vec::new();
    };
    if uri.scheme_str() != Some("http") || uri.host().is_none_or(is_loopback) {
        return Vec::new();
    }
    let to = uri.authority().map_or("", |a| a.as_str());
    let fields = headers
        .keys()
        .filter(|name| is_credential_header(name))
        .map(|name| format!("headers.{name}"))
        .chain(credentials.iter().map(|f| f.to_string()));
    fields
        .map(|field| {
            FieldError::warning(
                field,
                format!("a credential sent in clear text over http:// to {to}, readable by anyone on the way: use https://"),
            )
        })
        .collect()
}

/// The configured headers plus `Authorization` from `credentials`, every value marked
/// sensitive so it never shows in debug output.
pub fn header_map(
    headers: &BTreeMap<String, Secret>,
    credentials: Option<Credentials<'_>>,
) -> Result<HeaderMap, BuildError> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let n = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| BuildError::new(format!("headers.{name}: invalid header name")))?;
        let mut v = HeaderValue::from_str(value.expose())
            .map_err(|_| BuildError::new(format!("headers.{name}: invalid header value")))?;
        v.set_sensitive(true);
        map.insert(n, v);
    }
    if let Some(c) = credentials {
        map.insert(http::header::AUTHORIZATION, c.header()?);
    }
    Ok(map)
}

/// The headers an exporter sends with every request: its fixed ones, and the
/// credentials of its authenticator extension as they are at the time of the request
/// (a token file may have been rotated since the last one).
#[derive(Debug, Clone, Default)]
pub struct RequestHeaders {
    fixed: HeaderMap,
    auth: Option<Arc<crate::auth::Authenticator>>,
}

impl RequestHeaders {
    pub fn new(fixed: HeaderMap, auth: Option<Arc<crate::auth::Authenticator>>) -> Self {
        RequestHeaders { fixed, auth }
    }

    /// The headers for a request sent now.
    pub fn current(&self) -> HeaderMap {
        let mut map = self.fixed.clone();
        if let Some((name, value)) = self.auth.as_ref().and_then(|a| a.credentials()) {
            map.insert(name, value);
        }
        map
    }
}

/// `proxy_url` is an `http://` or `https://` URL.
pub fn check_proxy_url(proxy_url: &str) -> Vec<FieldError> {
    let ok = (proxy_url.starts_with("http://") || proxy_url.starts_with("https://"))
        && reqwest::Url::parse(proxy_url).is_ok();
    if ok {
        Vec::new()
    } else {
        vec![FieldError::new(
            "proxy_url",
            format!("invalid proxy URL \"{proxy_url}\": write http://host:port"),
        )]
    }
}

/// An HTTP client for one exporter: TLS from `tls`, all requests through `proxy_url`
/// when set (otherwise the standard proxy environment variables apply).
pub fn http_client(
    tls: rustls::ClientConfig,
    proxy_url: Option<&str>,
) -> Result<reqwest::Client, BuildError> {
    let mut builder = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .user_agent(USER_AGENT)
        .connect_timeout(CONNECT_TIMEOUT)
        .pool_idle_timeout(Duration::from_secs(90));
    if let Some(url) = proxy_url.filter(|u| !u.is_empty()) {
        let proxy =
            reqwest::Proxy::all(url).map_err(|e| BuildError::new(format!("proxy_url: {e}")))?;
        builder = builder.proxy(proxy);
    }
    builder
        .build()
        .map_err(|e| BuildError::new(format!("http client: {e}")))
}

/// HTTP/2 keepalive of a gRPC channel (the Collector's `keepalive:` on gRPC clients).
#[derive(Debug, Clone, Copy, Default)]
pub struct Keepalive {
    /// Ping after this long without activity.
    pub time: Option<Duration>,
    /// Close the connection when a ping is not answered within this.
    pub timeout: Option<Duration>,
    /// Ping even when no request is in flight.
    pub permit_without_stream: bool,
}

impl Keepalive {
    fn apply(&self, mut endpoint: Endpoint) -> Endpoint {
        if let Some(t) = self.time {
            endpoint = endpoint.http2_keep_alive_interval(t);
        }
        if let Some(t) = self.timeout {
            endpoint = endpoint.keep_alive_timeout(t);
        }
        endpoint.keep_alive_while_idle(self.permit_without_stream)
    }
}

/// A lazily connecting gRPC channel to `uri`; over TLS with `tls` (HTTP/2 only is
/// offered), verifying the certificate against `server_name` or the URI's host. Its
/// connection gathers HTTP/2 frames into fewer writes ([`Coalesce`]).
pub fn grpc_channel(
    uri: &str,
    tls: Option<rustls::ClientConfig>,
    server_name: Option<&str>,
    keepalive: Keepalive,
) -> Result<Channel, BuildError> {
    let endpoint = |uri: String| -> Result<Endpoint, BuildError> {
        let e = Endpoint::from_shared(uri)
            .map_err(|e| BuildError::new(format!("endpoint: {e}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(USER_AGENT)
            .map_err(|e| BuildError::new(e.to_string()))?;
        Ok(keepalive.apply(e))
    };
    let Some(mut tls) = tls else {
        return Ok(endpoint(uri.to_string())?.connect_with_connector_lazy(Connector::new(None)));
    };
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let server_name = match server_name.filter(|s| !s.is_empty()) {
        Some(name) => Some(
            ServerName::try_from(name.to_string())
                .map_err(|e| BuildError::new(format!("tls.server_name_override: {e}")))?,
        ),
        None => None,
    };
    // tonic refuses an `https` URI without its own TLS; ours runs in the connector, so
    // the channel connects to the `http` form while requests keep the `https` origin.
    let origin: Uri = uri
        .parse()
        .map_err(|e| BuildError::new(format!("endpoint: {e}")))?;
    let plain = match uri.strip_prefix("https://") {
        Some(rest) => format!("http://{rest}"),
        None => uri.to_string(),
    };
    Ok(endpoint(plain)?
        .origin(origin)
        .connect_with_connector_lazy(Connector::new(Some(Tls {
            config: Arc::new(tls),
            server_name,
        }))))
}

/// Opens TCP, then TLS with our rustls config when there is one, for tonic.
#[derive(Clone)]
struct Connector {
    http: HttpConnector,
    tls: Option<Tls>,
}

impl Connector {
    fn new(tls: Option<Tls>) -> Self {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        Connector { http, tls }
    }
}

#[derive(Clone)]
struct Tls {
    config: Arc<rustls::ClientConfig>,
    server_name: Option<ServerName<'static>>,
}

/// A connection's byte stream, under TLS or not.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

type Connection = TokioIo<Coalesce<Box<dyn Io>>>;

type Connecting = Pin<Box<dyn Future<Output = Result<Connection, std::io::Error>> + Send>>;

impl tower_service::Service<Uri> for Connector {
    type Response = Connection;
    type Error = std::io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.tls.clone();
        let mut http = self.http.clone();
        Box::pin(async move {
            let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
            let host = uri
                .host()
                .ok_or_else(|| invalid(format!("no host in {uri}")))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            // hyper-util's connector tries each address of the name, IPv6 and IPv4
            // side by side (happy eyeballs).
            let target = tcp_target(&uri, tls.is_some()).map_err(invalid)?;
            let tcp = http
                .call(target)
                .await
                .map_err(std::io::Error::other)?
                .into_inner();
            let Some(Tls {
                config,
                server_name,
            }) = tls
            else {
                return Ok(TokioIo::new(Coalesce::new(Box::new(tcp) as Box<dyn Io>)));
            };
            let name = match server_name {
                Some(n) => n,
                None => ServerName::try_from(host.clone())
                    .map_err(|e| invalid(format!("{host}: {e}")))?,
            };
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok(TokioIo::new(Coalesce::new(Box::new(stream) as Box<dyn Io>)))
        })
    }
}

/// Where to open TCP for `uri`. A TLS endpoint reaches the connector as `http://` (see
/// [`grpc_channel`]), so without a port of its own it gets TLS's 443, not HTTP's 80.
fn tcp_target(uri: &Uri, tls: bool) -> Result<Uri, String> {
    match (uri.port_u16(), tls, uri.host()) {
        (None, true, Some(host)) => format!("http://{host}:443")
            .parse()
            .map_err(|e| format!("{uri}: {e}")),
        _ => Ok(uri.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tls_endpoint_without_a_port_is_reached_on_443() {
        let target = |uri: &str, tls: bool| tcp_target(&uri.parse().unwrap(), tls).unwrap();
        assert_eq!(target("http://backend", true), "http://backend:443/");
        assert_eq!(target("http://[::1]", true), "http://[::1]:443/");
        assert_eq!(target("http://backend:4317", true), "http://backend:4317/");
        // Plain HTTP keeps its own default, 80, which the connector applies.
        assert_eq!(target("http://backend", false), "http://backend/");
    }

    #[test]
    fn basic_auth_is_base64_of_user_and_password() {
        let auth = BasicAuth {
            username: "Aladdin".into(),
            password: Some(Secret("open sesame".into())),
            password_file: None,
        };
        let v = Credentials::Basic(&auth).header().unwrap();
        assert_eq!(v.to_str().unwrap(), "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
        assert!(v.is_sensitive());
    }

    #[test]
    fn header_problems_never_echo_the_value() {
        let mut headers = BTreeMap::new();
        headers.insert("x-key".to_string(), Secret("sec\nret".into()));
        headers.insert("content-type".to_string(), Secret("a".into()));
        headers.insert("bad name".to_string(), Secret("a".into()));
        let problems = check_headers(&headers, &["content-type"]);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems.iter().all(|p| !p.message.contains("sec")));
    }
}

#[cfg(test)]
mod plaintext_tests {
    use super::*;

    fn headers(names: &[&str]) -> BTreeMap<String, Secret> {
        names
            .iter()
            .map(|n| (n.to_string(), Secret("v".into())))
            .collect()
    }

    #[test]
    fn credentials_over_plain_http_to_another_host_are_warned_about() {
        let h = headers(&["Authorization", "x-api-key", "x-tenant"]);
        let w = plaintext_credentials("http://backend.example:4318", &h, &["bearer_token"]);
        let fields: Vec<&str> = w.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["headers.Authorization", "headers.x-api-key", "bearer_token"]
        );
        assert!(w
            .iter()
            .all(|e| e.warning && e.message.contains("backend.example")));
        // https, this machine, or nothing secret: no warning.
        for quiet in [
            plaintext_credentials("https://backend.example", &h, &["bearer_token"]),
            plaintext_credentials("http://localhost:4318", &h, &["bearer_token"]),
            plaintext_credentials("http://127.0.0.2:4318", &h, &[]),
            plaintext_credentials("http://[::1]:4318", &h, &[]),
            plaintext_credentials("http://backend.example", &headers(&["x-tenant"]), &[]),
        ] {
            assert!(quiet.is_empty(), "{quiet:?}");
        }
    }
}
