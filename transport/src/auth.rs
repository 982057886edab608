//! The authenticator extensions of the Collector, `bearertokenauth` and `basicauth`, as
//! one [`Authenticator`] with two uses:
//!
//! - on a listener (`auth: {authenticator: bearertokenauth}` under a receiver protocol
//!   or the `prometheus` exporter) it checks each request's headers before the body is
//!   read ([`Authenticator::check`]);
//! - on an exporter it adds the credentials to each outgoing request
//!   ([`Authenticator::credentials`]).
//!
//! Token and htpasswd files are read again when they change (checked at most once a
//! second, on use), so a rotated Secret takes effect without a restart. Secrets never
//! appear in errors or logs: messages name files, lines and users, never values.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use sidekick_config::{FieldError, Secret};

use crate::watch::Watched;

/// How often token and htpasswd files are looked at again (on use).
const FILE_RELOAD: Duration = Duration::from_secs(1);

/// The highest bcrypt cost accepted: 2^14 rounds take about a second here, and a
/// listener must not spend longer on one client's first request.
const MAX_BCRYPT_COST: u32 = 14;

/// Verified Basic credentials remembered per htpasswd version, so a bcrypt hash (tens of
/// milliseconds by design) is computed once per client, not once per request.
const VERIFIED_CACHE: usize = 32;

/// `bearertokenauth`, in the Collector's shape:
///
/// ```yaml
/// extensions:
///   bearertokenauth:
///     filename: /var/run/secrets/otel/token   # or token: ${env:TOKEN}
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BearerTokenSettings {
    /// The scheme before the token in the header value. Default `Bearer`; empty: the
    /// header carries the bare token.
    pub scheme: Option<String>,
    /// The header carrying the token. Default `Authorization`.
    pub header: Option<String>,
    /// The token.
    pub token: Option<Secret>,
    /// More tokens a listener accepts (to rotate without a gap); an exporter sends the
    /// first.
    pub tokens: Vec<Secret>,
    /// A file holding the token (surrounding whitespace ignored), read again on change.
    pub filename: Option<String>,
}

/// `basicauth`, in the Collector's shape: `htpasswd` for listeners, `client_auth` for
/// exporters.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BasicAuthSettings {
    pub htpasswd: Option<HtpasswdSettings>,
    pub client_auth: Option<ClientAuthSettings>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HtpasswdSettings {
    /// An htpasswd file (`user:hash` lines; bcrypt, `{SHA}`, `{SSHA}` or plain), read
    /// again on change.
    pub file: Option<String>,
    /// The same lines inline; users here win over the file's.
    pub inline: Option<Secret>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientAuthSettings {
    pub username: String,
    pub password: Secret,
}

/// Why a request was refused, for the response: the challenge to send back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// The `WWW-Authenticate` value.
    pub challenge: &'static str,
}

/// A configured authenticator extension.
pub struct Authenticator {
    kind: Kind,
}

enum Kind {
    Bearer {
        header: HeaderName,
        /// `"Bearer "` (with the space), or empty for a bare token.
        prefix: String,
        tokens: Tokens,
    },
    Basic {
        users: Option<Users>,
        client: Option<HeaderValue>,
    },
}

enum Tokens {
    Fixed(Arc<Vec<Vec<u8>>>),
    File(Watched<Vec<Vec<u8>>>),
}

impl Tokens {
    fn current(&self) -> Arc<Vec<Vec<u8>>> {
        match self {
            Tokens::Fixed(t) => Arc::clone(t),
            Tokens::File(w) => w.current(),
        }
    }
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            Kind::Bearer { .. } => "bearertokenauth",
            Kind::Basic { .. } => "basicauth",
        };
        f.debug_struct("Authenticator")
            .field("kind", &kind)
            .finish()
    }
}

impl BearerTokenSettings {
    /// Every problem with these settings, the token file read.
    pub fn validate(&self) -> Vec<FieldError> {
        match self.build() {
            Ok(_) => Vec::new(),
            Err(e) => vec![e],
        }
    }

    pub fn build(&self) -> Result<Authenticator, FieldError> {
        let header_name = self.header.as_deref().unwrap_or("Authorization");
        let header = HeaderName::from_bytes(header_name.as_bytes()).map_err(|_| {
            FieldError::new("header", format!("\"{header_name}\" is not a header name"))
        })?;
        let scheme = self.scheme.as_deref().unwrap_or("Bearer");
        let prefix = if scheme.is_empty() {
            String::new()
        } else {
            format!("{scheme} ")
        };
        if HeaderValue::from_str(&prefix).is_err() {
            return Err(FieldError::new(
                "scheme",
                "must be printable text without line breaks",
            ));
        }
        let mut fixed: Vec<Vec<u8>> = Vec::new();
        for (i, t) in self.token.iter().chain(&self.tokens).enumerate() {
            let field = if self.token.is_some() && i == 0 {
                "token".to_string()
            } else {
                format!("tokens[{}]", i - usize::from(self.token.is_some()))
            };
            fixed.push(token_bytes(t.expose().as_bytes()).map_err(|m| FieldError::new(field, m))?);
        }
        let tokens = match (&self.filename, fixed.is_empty()) {
            (Some(_), false) => {
                return Err(FieldError::new(
                    "filename",
                    "set either token(s) or filename, not both",
                ))
            }
            (None, true) => {
                return Err(FieldError::new(
                    "token",
                    "no token: set token (e.g. token: ${env:OTEL_TOKEN}) or filename",
                ))
            }
            (None, false) => Tokens::Fixed(Arc::new(fixed)),
            (Some(path), true) => Tokens::File(watch_file(path, "filename", "token file", |b| {
                token_bytes(b).map(|t| vec![t])
            })?),
        };
        Ok(Authenticator {
            kind: Kind::Bearer {
                header,
                prefix,
                tokens,
            },
        })
    }
}

/// A token as configured or read from a file: trimmed, non-empty, sendable in a header.
fn token_bytes(raw: &[u8]) -> Result<Vec<u8>, String> {
    let t = raw.trim_ascii();
    if t.is_empty() {
        return Err("the token is empty".into());
    }
    if HeaderValue::from_bytes(t).is_err() {
        return Err(
            "the token has characters a header cannot carry (line breaks or control characters)"
                .into(),
        );
    }
    Ok(t.to_vec())
}

impl BasicAuthSettings {
    /// Every problem with these settings, the htpasswd file read.
    pub fn validate(&self) -> Vec<FieldError> {
        match self.build() {
            Ok(_) => Vec::new(),
            Err(e) => vec![e],
        }
    }

    pub fn build(&self) -> Result<Authenticator, FieldError> {
        if self.htpasswd.is_none() && self.client_auth.is_none() {
            return Err(FieldError::new(
                "htpasswd",
                "set htpasswd (to check requests on a listener) or client_auth (to send credentials from an exporter)",
            ));
        }
        let users = match &self.htpasswd {
            None => None,
            Some(h) => Some(Users::new(h)?),
        };
        let client = match &self.client_auth {
            None => None,
            Some(c) => {
                if c.username.contains(':') {
                    return Err(FieldError::new(
                        "client_auth.username",
                        "a Basic auth user name cannot contain ':'",
                    ));
                }
                let encoded = base64::engine::general_purpose::STANDARD.encode(format!(
                    "{}:{}",
                    c.username,
                    c.password.expose()
                ));
                let mut value = HeaderValue::from_str(&format!("Basic {encoded}"))
                    .map_err(|_| FieldError::new("client_auth", "cannot be sent in a header"))?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        Ok(Authenticator {
            kind: Kind::Basic { users, client },
        })
    }
}

impl Authenticator {
    /// Whether a listener may use it (it has something to check requests against).
    pub fn serves(&self) -> bool {
        match &self.kind {
            Kind::Bearer { .. } => true,
            Kind::Basic { users, .. } => users.is_some(),
        }
    }

    /// Whether an exporter may use it (it has credentials to send).
    pub fn sends(&self) -> bool {
        match &self.kind {
            Kind::Bearer { .. } => true,
            Kind::Basic { client, .. } => client.is_some(),
        }
    }

    /// Whether a check may compute a slow hash (bcrypt): then it belongs on a blocking
    /// thread, not on the runtime's workers.
    pub fn slow(&self) -> bool {
        match &self.kind {
            Kind::Bearer { .. } => false,
            Kind::Basic { users, .. } => users.as_ref().is_some_and(Users::slow),
        }
    }

    /// Checks a request's headers; nothing else of the request is looked at.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), Refused> {
        match &self.kind {
            Kind::Bearer {
                header,
                prefix,
                tokens,
            } => {
                let refused = Refused {
                    challenge: "Bearer realm=\"sidekick\"",
                };
                let value = headers.get(header).ok_or(refused)?.as_bytes();
                let given = strip_prefix_ignore_case(value, prefix.as_bytes()).ok_or(refused)?;
                let tokens = tokens.current();
                // Every token is compared, so the time taken does not say which matched.
                let matched = tokens
                    .iter()
                    .fold(false, |m, t| constant_time_eq(t, given) | m);
                if matched {
                    Ok(())
                } else {
                    Err(refused)
                }
            }
            Kind::Basic { users, .. } => {
                let refused = Refused {
                    challenge: "Basic realm=\"sidekick\"",
                };
                let users = users.as_ref().ok_or(refused)?;
                let value = headers
                    .get(http::header::AUTHORIZATION)
                    .ok_or(refused)?
                    .as_bytes();
                let encoded = strip_prefix_ignore_case(value, b"Basic ").ok_or(refused)?;
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(encoded.trim_ascii())
                    .map_err(|_| refused)?;
                let colon = decoded.iter().position(|&b| b == b':').ok_or(refused)?;
                let (user, password) = (&decoded[..colon], &decoded[colon + 1..]);
                if users.verify(user, password) {
                    Ok(())
                } else {
                    Err(refused)
                }
            }
        }
    }

    /// The header an exporter adds to each request, as the files are now; `None` when
    /// this authenticator has nothing to send.
    pub fn credentials(&self) -> Option<(HeaderName, HeaderValue)> {
        match &self.kind {
            Kind::Bearer {
                header,
                prefix,
                tokens,
            } => {
                let tokens = tokens.current();
                let mut value = prefix.as_bytes().to_vec();
                value.extend_from_slice(tokens.first()?);
                let mut value = HeaderValue::from_bytes(&value).ok()?;
                value.set_sensitive(true);
                Some((header.clone(), value))
            }
            Kind::Basic { client, .. } => {
                Some((http::header::AUTHORIZATION, client.as_ref()?.clone()))
            }
        }
    }
}

/// The value made by `parse` from the file at `path` (the setting `field`), read again
/// within [`FILE_RELOAD`] of changing.
fn watch_file<T: 'static>(
    path: &str,
    field: &str,
    what: &'static str,
    parse: fn(&[u8]) -> Result<T, String>,
) -> Result<Watched<T>, FieldError> {
    let bytes = std::fs::read(path)
        .map_err(|e| FieldError::new(field, format!("cannot read {path}: {e}")))?;
    let owned = path.to_string();
    let load = move |files: &[Vec<u8>]| parse(&files[0]).map_err(|m| format!("{owned}: {m}"));
    let first = load(std::slice::from_ref(&bytes)).map_err(|m| FieldError::new(field, m))?;
    Ok(Watched::new(
        what,
        vec![path.to_string()],
        FILE_RELOAD,
        vec![bytes],
        first,
        Box::new(load),
    ))
}

fn strip_prefix_ignore_case<'a>(value: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    if value.len() < prefix.len() || !value[..prefix.len()].eq_ignore_ascii_case(prefix) {
        return None;
    }
    Some(&value[prefix.len()..])
}

/// Equality whose time depends on the lengths only, not on where the bytes differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The users of `htpasswd`: the inline lines over the file's (which is watched).
struct Users {
    inline: Arc<Htpasswd>,
    file: Option<Watched<Htpasswd>>,
}

impl Users {
    fn new(settings: &HtpasswdSettings) -> Result<Self, FieldError> {
        let inline = match &settings.inline {
            Some(text) => Htpasswd::parse(text.expose().as_bytes())
                .map_err(|m| FieldError::new("htpasswd.inline", m))?,
            None => Htpasswd::default(),
        };
        let file = match &settings.file {
            None => None,
            Some(path) => Some(watch_file(
                path,
                "htpasswd.file",
                "htpasswd file",
                Htpasswd::parse,
            )?),
        };
        if inline.users.is_empty() && file.is_none() {
            return Err(FieldError::new(
                "htpasswd",
                "no users: set file or inline (user:password lines)",
            ));
        }
        Ok(Users {
            inline: Arc::new(inline),
            file,
        })
    }

    fn slow(&self) -> bool {
        self.inline.slow() || self.file.as_ref().is_some_and(|f| f.current().slow())
    }

    fn verify(&self, user: &[u8], password: &[u8]) -> bool {
        if self.inline.find(user).is_some() {
            return self.inline.verify(user, password);
        }
        match &self.file {
            Some(file) => file.current().verify(user, password),
            None => false,
        }
    }
}

/// Parsed `user:hash` lines.
#[derive(Default)]
struct Htpasswd {
    users: Vec<(Vec<u8>, Hash)>,
    /// Digests of `user:password` pairs that verified (see [`VERIFIED_CACHE`]).
    verified: Mutex<Vec<ring::digest::Digest>>,
}

enum Hash {
    Bcrypt(String),
    Sha1(Vec<u8>),
    /// `{SSHA}`: SHA-1 digest, then salt.
    SaltedSha1(Vec<u8>, Vec<u8>),
    Plain(Vec<u8>),
}

impl Htpasswd {
    /// The lines of an htpasswd file. Errors say the line and the user, never the hash.
    fn parse(text: &[u8]) -> Result<Self, String> {
        let mut users = Vec::new();
        for (n, line) in text.split(|&b| b == b'\n').enumerate() {
            let line = line.trim_ascii();
            if line.is_empty() || line.starts_with(b"#") {
                continue;
            }
            let line_no = n + 1;
            let colon = line
                .iter()
                .position(|&b| b == b':')
                .ok_or_else(|| format!("line {line_no} is not user:password"))?;
            let (user, hash) = (&line[..colon], &line[colon + 1..]);
            let name = String::from_utf8_lossy(user);
            let sha = |b64: &[u8]| base64::engine::general_purpose::STANDARD.decode(b64);
            let hash = if hash.starts_with(b"$2a$")
                || hash.starts_with(b"$2b$")
                || hash.starts_with(b"$2y$")
                || hash.starts_with(b"$2x$")
            {
                // `$2y$NN$` + 53 characters of salt and hash.
                let cost = std::str::from_utf8(&hash[4..hash.len().min(6)])
                    .ok()
                    .and_then(|c| c.parse::<u32>().ok())
                    .filter(|_| hash.len() == 60 && hash.get(6) == Some(&b'$'))
                    .ok_or_else(|| format!("line {line_no} (user {name}): not a bcrypt hash"))?;
                if !(4..=MAX_BCRYPT_COST).contains(&cost) {
                    return Err(format!(
                        "line {line_no} (user {name}): bcrypt cost {cost} is outside 4..={MAX_BCRYPT_COST} (each new client would wait seconds); create the entry with `htpasswd -B -C 10`"
                    ));
                }
                Hash::Bcrypt(String::from_utf8_lossy(hash).into_owned())
            } else if let Some(b64) = hash.strip_prefix(b"{SHA}") {
                let digest = sha(b64)
                    .ok()
                    .filter(|d| d.len() == 20)
                    .ok_or_else(|| format!("line {line_no} (user {name}): bad {{SHA}} hash"))?;
                Hash::Sha1(digest)
            } else if let Some(b64) = hash.strip_prefix(b"{SSHA}") {
                let mut digest = sha(b64)
                    .ok()
                    .filter(|d| d.len() > 20)
                    .ok_or_else(|| format!("line {line_no} (user {name}): bad {{SSHA}} hash"))?;
                let salt = digest.split_off(20);
                Hash::SaltedSha1(digest, salt)
            } else if hash.starts_with(b"$apr1$") || hash.starts_with(b"$1$") {
                return Err(format!(
                    "line {line_no} (user {name}): MD5 hashes are not supported; create the entry with `htpasswd -B` (bcrypt)"
                ));
            } else if hash.starts_with(b"$5$") || hash.starts_with(b"$6$") {
                return Err(format!(
                    "line {line_no} (user {name}): SHA-crypt hashes are not supported; create the entry with `htpasswd -B` (bcrypt)"
                ));
            } else if hash.starts_with(b"$") || hash.starts_with(b"{") {
                // A hash of a kind not known here must not be taken for a password
                // (anyone reading the file could then log in with the hash itself).
                return Err(format!(
                    "line {line_no} (user {name}): this hash kind is not supported; create the entry with `htpasswd -B` (bcrypt)"
                ));
            } else {
                Hash::Plain(hash.to_vec())
            };
            users.push((user.to_vec(), hash));
        }
        Ok(Htpasswd {
            users,
            verified: Mutex::new(Vec::new()),
        })
    }

    fn slow(&self) -> bool {
        self.users.iter().any(|(_, h)| matches!(h, Hash::Bcrypt(_)))
    }

    fn find(&self, user: &[u8]) -> Option<&Hash> {
        self.users
            .iter()
            .rev()
            .find(|(u, _)| u == user)
            .map(|(_, h)| h)
    }

    fn verify(&self, user: &[u8], password: &[u8]) -> bool {
        let Some(hash) = self.find(user) else {
            return false;
        };
        let sha1 = |parts: &[&[u8]]| {
            let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
            for p in parts {
                ctx.update(p);
            }
            ctx.finish()
        };
        match hash {
            Hash::Plain(p) => constant_time_eq(p, password),
            Hash::Sha1(d) => constant_time_eq(d, sha1(&[password]).as_ref()),
            Hash::SaltedSha1(d, salt) => constant_time_eq(d, sha1(&[password, salt]).as_ref()),
            Hash::Bcrypt(h) => {
                let mut key = ring::digest::Context::new(&ring::digest::SHA256);
                key.update(user);
                key.update(b"\0");
                key.update(password);
                let key = key.finish();
                let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
                if verified.iter().any(|k| k.as_ref() == key.as_ref()) {
                    return true;
                }
                drop(verified);
                let ok = bcrypt::verify(password, h).unwrap_or(false);
                if ok {
                    verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
                    if verified.len() >= VERIFIED_CACHE {
                        verified.remove(0);
                    }
                    verified.push(key);
                }
                ok
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(name: &str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
        h
    }

    fn inline(text: &str) -> Result<Authenticator, FieldError> {
        BasicAuthSettings {
            htpasswd: Some(HtpasswdSettings {
                inline: Some(Secret(text.into())),
                file: None,
            }),
            client_auth: None,
        }
        .build()
    }

    fn basic(user: &str, password: &str) -> HeaderMap {
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        headers("authorization", &format!("Basic {b64}"))
    }

    #[test]
    fn bearer_tokens_are_checked_and_sent() {
        let a = BearerTokenSettings {
            token: Some(Secret("s3cret-token".into())),
            tokens: vec![Secret("next-token".into())],
            ..Default::default()
        }
        .build()
        .unwrap();
        assert!(a
            .check(&headers("authorization", "Bearer s3cret-token"))
            .is_ok());
        assert!(a
            .check(&headers("authorization", "bearer next-token"))
            .is_ok());
        assert!(a.check(&headers("authorization", "Bearer wrong")).is_err());
        assert!(a.check(&headers("authorization", "s3cret-token")).is_err());
        assert!(a.check(&HeaderMap::new()).is_err());
        let (name, value) = a.credentials().unwrap();
        assert_eq!(name, http::header::AUTHORIZATION);
        assert_eq!(value, "Bearer s3cret-token");
        assert!(value.is_sensitive());

        let custom = BearerTokenSettings {
            token: Some(Secret("t".into())),
            header: Some("x-api-key".into()),
            scheme: Some(String::new()),
            ..Default::default()
        }
        .build()
        .unwrap();
        assert!(custom.check(&headers("x-api-key", "t")).is_ok());
        assert!(custom.check(&headers("authorization", "Bearer t")).is_err());
    }

    #[test]
    fn bearer_settings_errors_name_the_field_not_the_secret() {
        let err = |s: BearerTokenSettings| s.build().unwrap_err();
        let none = err(BearerTokenSettings::default());
        assert_eq!(none.field, "token");
        let both = err(BearerTokenSettings {
            token: Some(Secret("a".into())),
            filename: Some("/x".into()),
            ..Default::default()
        });
        assert_eq!(both.field, "filename");
        let broken = err(BearerTokenSettings {
            token: Some(Secret("line\nbreak-SECRET".into())),
            ..Default::default()
        });
        assert_eq!(broken.field, "token");
        assert!(!broken.message.contains("SECRET"), "{}", broken.message);
        let missing = err(BearerTokenSettings {
            filename: Some("/nonexistent/token".into()),
            ..Default::default()
        });
        assert!(missing.message.contains("cannot read /nonexistent/token"));
    }

    #[test]
    fn a_token_file_is_read_again_when_it_changes() {
        let dir = std::env::temp_dir().join(format!("sidekick-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        std::fs::write(&path, "first\n").unwrap();
        let a = BearerTokenSettings {
            filename: Some(path.to_string_lossy().into_owned()),
            ..Default::default()
        }
        .build()
        .unwrap();
        assert!(a.check(&headers("authorization", "Bearer first")).is_ok());
        std::fs::write(&path, "second").unwrap();
        std::thread::sleep(FILE_RELOAD + Duration::from_millis(100));
        assert!(a.check(&headers("authorization", "Bearer second")).is_ok());
        assert!(a.check(&headers("authorization", "Bearer first")).is_err());
        assert_eq!(a.credentials().unwrap().1, "Bearer second");
        // An emptied file (a rotation caught half-way) keeps the last good token.
        std::fs::write(&path, "").unwrap();
        std::thread::sleep(FILE_RELOAD + Duration::from_millis(100));
        assert!(a.check(&headers("authorization", "Bearer second")).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn htpasswd_hashes_verify() {
        let bcrypt = bcrypt::hash_with_salt("pw-b", 4, [7u8; 16])
            .unwrap()
            .format_for_version(bcrypt::Version::TwoY);
        let sha = |p: &[u8]| {
            base64::engine::general_purpose::STANDARD
                .encode(ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, p).as_ref())
        };
        let ssha = {
            let mut d = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, b"pw-ssalt")
                .as_ref()
                .to_vec();
            d.extend_from_slice(b"salt");
            base64::engine::general_purpose::STANDARD.encode(d)
        };
        let text = format!(
            "# comment\nb:{bcrypt}\ns:{{SHA}}{}\nss:{{SSHA}}{ssha}\np:pw-p\n",
            sha(b"pw-s")
        );
        let a = inline(&text).unwrap();
        for (user, good) in [("b", "pw-b"), ("s", "pw-s"), ("ss", "pw-s"), ("p", "pw-p")] {
            assert!(a.check(&basic(user, good)).is_ok(), "{user}");
            // Twice: the second time from the cache for bcrypt.
            assert!(a.check(&basic(user, good)).is_ok(), "{user}");
            assert!(a.check(&basic(user, "wrong")).is_err(), "{user}");
        }
        assert!(a.check(&basic("nobody", "pw-p")).is_err());
        assert!(a
            .check(&headers("authorization", "Basic !!notbase64"))
            .is_err());
        assert!(a.check(&headers("authorization", "Bearer pw-p")).is_err());
        assert!(!a.sends() && a.serves());
        assert!(a.credentials().is_none());
    }

    #[test]
    fn htpasswd_errors_say_line_and_user_only() {
        let e = inline("ok:pw\nmd5:$apr1$SECRETSALT$SECRETHASH\n").unwrap_err();
        assert_eq!(e.field, "htpasswd.inline");
        assert!(e.message.contains("line 2 (user md5)"), "{}", e.message);
        assert!(!e.message.contains("SECRET"), "{}", e.message);
        let e = inline("no-colon-SECRET\n").unwrap_err();
        assert!(!e.message.contains("SECRET"), "{}", e.message);
        // A bcrypt cost that would make every new client wait, and a cut-off hash.
        let slow = format!("slow:$2y$20${}", "a".repeat(53));
        let e = inline(&slow).unwrap_err();
        assert!(e.message.contains("bcrypt cost 20"), "{}", e.message);
        let e = inline("cut:$2y$10$SECRET").unwrap_err();
        assert!(e.message.contains("not a bcrypt hash"), "{}", e.message);
        // A hash of an unknown kind is refused, not taken for the password itself.
        let e = inline("argon:$argon2id$v=19$SECRET").unwrap_err();
        assert!(
            e.message.contains("hash kind is not supported"),
            "{}",
            e.message
        );
        assert!(!e.message.contains("SECRET"), "{}", e.message);
        assert!(inline("sha256:{SHA256}SECRET").is_err());
        assert!(!e.message.contains("SECRET"), "{}", e.message);
    }

    #[test]
    fn basic_client_auth_is_sent() {
        let a = BasicAuthSettings {
            htpasswd: None,
            client_auth: Some(ClientAuthSettings {
                username: "u".into(),
                password: Secret("p".into()),
            }),
        }
        .build()
        .unwrap();
        assert!(a.sends() && !a.serves());
        let (name, value) = a.credentials().unwrap();
        assert_eq!(name, http::header::AUTHORIZATION);
        assert_eq!(value, "Basic dTpw");
        assert!(
            a.check(&basic("u", "p")).is_err(),
            "no htpasswd: nothing to check against"
        );
    }
}
