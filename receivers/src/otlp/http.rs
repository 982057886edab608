//! OTLP over HTTP: `POST /v1/traces|metrics|logs` with a protobuf or JSON body, optionally
//! gzip-, zstd- or deflate-compressed. Errors follow the OTLP/HTTP spec: a
//! `google.rpc.Status` body in the request's encoding, 400 for bad data, 413 for too
//! large, 415 for an unknown content type or encoding, 503 with `Retry-After` when full.

use std::io::Read;

use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde::de::DeserializeOwned;
use sidekick_collector::payload::{Batch, Signal};
use sidekick_collector::pipe::SendError;
use sidekick_transport::grpc::RpcStatus;
use tracing::debug;

use super::router::Reason;
use super::Entry;

/// Seconds a client should wait before retrying a refused request.
const RETRY_AFTER_SECONDS: u32 = 1;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

struct Failure {
    /// Set when the request is refused before its items could be counted.
    reason: Option<Reason>,
    status: StatusCode,
    /// gRPC code for the body: 3 invalid argument, 8 resource exhausted, 14 unavailable.
    code: i32,
    message: String,
}

impl Failure {
    fn new(status: StatusCode, code: i32, message: impl Into<String>) -> Self {
        Failure {
            reason: match status {
                StatusCode::NOT_FOUND => Some(Reason::NoPipeline),
                StatusCode::UNSUPPORTED_MEDIA_TYPE => Some(Reason::UnsupportedMediaType),
                StatusCode::PAYLOAD_TOO_LARGE => Some(Reason::TooLarge),
                StatusCode::BAD_REQUEST => Some(Reason::Malformed),
                _ => None,
            },
            status,
            code,
            message: message.into(),
        }
    }
}

/// Serves one OTLP/HTTP export into `entry`. A refusal comes back with its reason
/// (when its items could not be counted) and message, for the caller to count and log.
pub(super) async fn export<S: Signal>(
    entry: Option<&Entry<S>>,
    limit: usize,
    req: Request,
) -> Result<Response, (Reason, String, Response)>
where
    S::Request: DeserializeOwned,
{
    let (encoding, result) = match content_type(req.headers()) {
        Ok(e) => (e, handle(entry, limit, req, e).await),
        // The client's encoding is unknown, so answer in the one a person can read.
        Err(f) => (Encoding::Json, Err(f)),
    };
    match result {
        Ok(()) => Ok(reply(encoding, Ok(()))),
        Err(f) => match f.reason {
            Some(reason) => {
                let message = f.message.clone();
                Err((reason, message, reply(encoding, Err(f))))
            }
            None => Ok(reply(encoding, Err(f))),
        },
    }
}

/// An error answer in the request's encoding (JSON unless it sent protobuf).
pub(super) fn refuse(req: &Request, status: StatusCode, message: String) -> Response {
    let encoding = content_type(req.headers()).unwrap_or(Encoding::Json);
    let code = match status {
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => 12,
        _ => 3,
    };
    reply(encoding, Err(Failure::new(status, code, message)))
}

fn content_type(headers: &http::HeaderMap) -> Result<Encoding, Failure> {
    let value = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/x-protobuf" | "application/protobuf" => Ok(Encoding::Protobuf),
        "application/json" => Ok(Encoding::Json),
        _ => Err(Failure::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            3,
            format!("unsupported content type \"{value}\": send application/x-protobuf or application/json"),
        )),
    }
}

async fn handle<S: Signal>(
    entry: Option<&Entry<S>>,
    limit: usize,
    req: Request,
    encoding: Encoding,
) -> Result<(), Failure>
where
    S::Request: DeserializeOwned,
{
    let Some(entry) = entry else {
        return Err(Failure::new(
            StatusCode::NOT_FOUND,
            12,
            format!("no pipeline takes {} from this receiver", S::KIND),
        ));
    };
    let compression = req
        .headers()
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let too_large = || {
        Failure::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            8,
            format!("request body exceeds max_request_body_size ({limit} bytes)"),
        )
    };
    let body = match Limited::new(req.into_body(), limit).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
        Err(e) => {
            return Err(Failure::new(
                StatusCode::BAD_REQUEST,
                3,
                format!("cannot read body: {e}"),
            ));
        }
    };
    let body = decompress(&compression, body, limit).map_err(|e| match e {
        DecompressError::TooLarge => too_large(),
        DecompressError::Unsupported => Failure::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            3,
            format!(
                "unsupported content encoding \"{compression}\": send gzip, zstd, deflate or none"
            ),
        ),
        DecompressError::Corrupt(e) => Failure::new(
            StatusCode::BAD_REQUEST,
            3,
            format!("cannot decompress {compression} body: {e}"),
        ),
    })?;
    let batch = parse_body::<S>(encoding, body).map_err(|message| {
        debug!(error = %message, "refused malformed OTLP/HTTP request");
        Failure::new(StatusCode::BAD_REQUEST, 3, message)
    })?;
    entry.accept(batch).await.map_err(|e| match e {
        SendError::Full => Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            14,
            "pipeline is full; retry later",
        ),
        SendError::Closed => Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            14,
            "shutting down; retry later",
        ),
        e @ SendError::TooLarge { .. } => {
            Failure::new(StatusCode::PAYLOAD_TOO_LARGE, 8, e.to_string())
        }
        // The data itself fails a processor: sending it again fails the same way.
        e @ SendError::Refused(_) => Failure::new(StatusCode::BAD_REQUEST, 3, e.to_string()),
    })
}

/// A body as protobuf or OTLP/JSON.
fn parse_body<S: Signal>(encoding: Encoding, body: Bytes) -> Result<Batch<S>, String>
where
    S::Request: DeserializeOwned,
{
    match encoding {
        Encoding::Protobuf => Batch::<S>::from_encoded(body).map_err(|e| e.to_string()),
        Encoding::Json => serde_json::from_slice::<S::Request>(&body)
            .map_err(|e| format!("invalid OTLP/JSON: {e}"))
            .and_then(from_json::<S>),
    }
}

/// A request body taken as the OTLP/HTTP receiver takes it: decompressed per
/// `content_encoding` into at most `limit` bytes, then read as OTLP/JSON when `json`,
/// else protobuf (what fuzzing drives).
pub fn decode_body<S: Signal>(
    content_encoding: &str,
    json: bool,
    body: Bytes,
    limit: usize,
) -> Result<Batch<S>, String>
where
    S::Request: DeserializeOwned,
{
    let body = decompress(content_encoding, body, limit).map_err(|e| match e {
        DecompressError::TooLarge => "too large".to_string(),
        DecompressError::Unsupported => "unsupported encoding".to_string(),
        DecompressError::Corrupt(e) => e.to_string(),
    })?;
    let encoding = if json {
        Encoding::Json
    } else {
        Encoding::Protobuf
    };
    parse_body(encoding, body)
}

/// serde checks JSON syntax and types but not OTLP's rules: a `traceId` of any even
/// number of hex digits decodes, empty included. So the request goes through the same
/// check as a protobuf body, once encoded; JSON is the slow path and one encode is small
/// next to the parse. The batch keeps that encoding, which exporters need anyway. The
/// error's byte offset would point into bytes the client never sent, so only the reason
/// is given.
fn from_json<S: Signal>(request: S::Request) -> Result<Batch<S>, String> {
    let encoded = Bytes::from(prost::Message::encode_to_vec(&request));
    Batch::from_encoded(encoded).map_err(|e| format!("invalid OTLP/JSON: {}", e.reason))
}

pub(super) enum DecompressError {
    TooLarge,
    Unsupported,
    Corrupt(std::io::Error),
}

/// Decompresses into at most `limit` bytes; a body that would grow past it (a
/// compression bomb) is refused without inflating the rest.
pub(super) fn decompress(
    encoding: &str,
    body: Bytes,
    limit: usize,
) -> Result<Bytes, DecompressError> {
    fn read_limited(reader: impl Read, limit: usize) -> Result<Bytes, DecompressError> {
        let mut out = Vec::new();
        reader
            .take(limit as u64 + 1)
            .read_to_end(&mut out)
            .map_err(DecompressError::Corrupt)?;
        if out.len() > limit {
            return Err(DecompressError::TooLarge);
        }
        Ok(Bytes::from(out))
    }
    match encoding {
        "" | "identity" | "none" => Ok(body),
        "gzip" | "x-gzip" => read_limited(flate2::read::GzDecoder::new(&body[..]), limit),
        "deflate" => read_limited(flate2::read::ZlibDecoder::new(&body[..]), limit),
        "zstd" => {
            let decoder =
                zstd::stream::read::Decoder::new(&body[..]).map_err(DecompressError::Corrupt)?;
            read_limited(decoder, limit)
        }
        _ => Err(DecompressError::Unsupported),
    }
}

fn reply(encoding: Encoding, result: Result<(), Failure>) -> Response {
    let (status, body, retry) = match result {
        // An empty Export*ServiceResponse: no bytes in protobuf, `{}` in JSON.
        Ok(()) => (
            StatusCode::OK,
            match encoding {
                Encoding::Protobuf => Bytes::new(),
                Encoding::Json => Bytes::from_static(b"{}"),
            },
            false,
        ),
        Err(f) => {
            let body = match encoding {
                Encoding::Protobuf => Bytes::from(prost::Message::encode_to_vec(&RpcStatus {
                    code: f.code,
                    message: f.message.clone(),
                    details: Vec::new(),
                })),
                Encoding::Json => Bytes::from(
                    serde_json::json!({"code": f.code, "message": f.message}).to_string(),
                ),
            };
            (f.status, body, f.status == StatusCode::SERVICE_UNAVAILABLE)
        }
    };
    let mut r = Response::new(axum::body::Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(encoding.content_type()),
    );
    if retry {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
    }
    r
}
