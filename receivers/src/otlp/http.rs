//! OTLP over HTTP: `POST /v1/traces|metrics|logs` with a protobuf or JSON body, optionally
//! gzip-, zstd- or deflate-compressed. Errors follow the OTLP/HTTP spec: a
//! `google.rpc.Status` body in the request's encoding, 400 for bad data, 413 for too
//! large, 415 for an unknown content type or encoding, 503 with `Retry-After` when full.

use std::convert::Infallible;
use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::de::DeserializeOwned;
use sidekick_collector::grpc::RpcStatus;
use sidekick_collector::payload::{Batch, Signal};
use sidekick_collector::pipe::{SendError, Stop};
use tokio::net::TcpListener;
use tracing::debug;

use super::{Entries, Entry, HttpConfig};

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
    status: StatusCode,
    /// gRPC code for the body: 3 invalid argument, 8 resource exhausted, 14 unavailable.
    code: i32,
    message: String,
}

impl Failure {
    fn new(status: StatusCode, code: i32, message: impl Into<String>) -> Self {
        Failure {
            status,
            code,
            message: message.into(),
        }
    }
}

pub(super) async fn serve(listener: TcpListener, config: HttpConfig, entries: Entries, stop: Stop) {
    let state = Arc::new((config, entries));
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let state = Arc::clone(&state);
        async move { Ok::<_, Infallible>(route(&state.0, &state.1, req).await) }
    });
    sidekick_collector::http::serve(listener, service, stop).await;
}

async fn route(
    config: &HttpConfig,
    entries: &Entries,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let encoding = match content_type(&req) {
        Ok(e) => e,
        // The client's encoding is unknown, so answer in the one a person can read.
        Err(f) => return reply(Encoding::Json, Err(f)),
    };
    let result = if path == config.traces_url_path {
        handle(entries.traces.as_ref(), config, req, encoding).await
    } else if path == config.metrics_url_path {
        handle(entries.metrics.as_ref(), config, req, encoding).await
    } else if path == config.logs_url_path {
        handle(entries.logs.as_ref(), config, req, encoding).await
    } else {
        Err(Failure::new(
            StatusCode::NOT_FOUND,
            5,
            format!("unknown path {path}"),
        ))
    };
    reply(encoding, result)
}

fn content_type(req: &Request<Incoming>) -> Result<Encoding, Failure> {
    let value = req
        .headers()
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
    config: &HttpConfig,
    req: Request<Incoming>,
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
    if req.method() != Method::POST {
        return Err(Failure::new(StatusCode::METHOD_NOT_ALLOWED, 3, "use POST"));
    }
    let limit = config.max_request_body_size;
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
    let batch = match encoding {
        Encoding::Protobuf => Batch::<S>::from_encoded(body).map_err(|e| e.to_string()),
        Encoding::Json => serde_json::from_slice::<S::Request>(&body)
            .map(Batch::from_request)
            .map_err(|e| format!("invalid OTLP/JSON: {e}")),
    }
    .map_err(|message| {
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
    })
}

enum DecompressError {
    TooLarge,
    Unsupported,
    Corrupt(std::io::Error),
}

/// Decompresses into at most `limit` bytes; a body that would grow past it (a
/// compression bomb) is refused without inflating the rest.
fn decompress(encoding: &str, body: Bytes, limit: usize) -> Result<Bytes, DecompressError> {
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

fn reply(encoding: Encoding, result: Result<(), Failure>) -> Response<Full<Bytes>> {
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
    let mut r = Response::new(Full::new(body));
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
