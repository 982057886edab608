//! gRPC without decoding the messages: a codec that moves protobuf bytes as they are
//! (the OTLP receiver and the test sink), and a unary call whose request body is the
//! message's chunks themselves (the OTLP exporter). Incoming messages arrive as one
//! [`Bytes`]; outgoing messages are written from a list of chunks.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic::{Code, Status};

#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

#[derive(Debug, Clone, Copy, Default)]
pub struct RawEncoder;

#[derive(Debug, Clone, Copy, Default)]
pub struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Vec<Bytes>;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Vec<Bytes>;
    type Error = Status;

    fn encode(&mut self, item: Vec<Bytes>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        for chunk in item {
            dst.put_slice(&chunk);
        }
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        let len = src.remaining();
        Ok(Some(src.copy_to_bytes(len)))
    }
}

/// A request body of chunks that are ready: each is handed to the connection as it is.
pub struct Chunks {
    chunks: VecDeque<Bytes>,
    remaining: u64,
}

impl Chunks {
    pub fn new(chunks: impl IntoIterator<Item = Bytes>) -> Self {
        let chunks: VecDeque<Bytes> = chunks.into_iter().filter(|c| !c.is_empty()).collect();
        let remaining = chunks.iter().map(|c| c.len() as u64).sum();
        Chunks { chunks, remaining }
    }
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let chunk = self.chunks.pop_front();
        if let Some(c) = &chunk {
            self.remaining -= c.len() as u64;
        }
        Poll::Ready(chunk.map(|c| Ok(Frame::data(c))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// One message of a unary call: its encoded chunks, or their compressed form with the
/// `grpc-encoding` that names it.
pub struct Message {
    pub chunks: Vec<Bytes>,
    pub encoding: Option<&'static str>,
}

/// Sends one unary call on `channel` to `path` with `headers` (metadata). The request body
/// is the 5-byte message prefix followed by `message`'s chunks, never copied into one
/// buffer. Returns the response message (empty for an empty one, or one the server
/// compressed although asked not to), or the call's status: the server's, or
/// `UNAVAILABLE` when the connection failed, or the code RFC-mapped from an HTTP status
/// when the answer was not gRPC.
pub async fn unary(
    channel: &mut Channel,
    path: &'static str,
    mut headers: http::HeaderMap,
    message: Message,
    max_response: usize,
) -> Result<Bytes, Status> {
    let len: usize = message.chunks.iter().map(Bytes::len).sum();
    let len =
        u32::try_from(len).map_err(|_| Status::resource_exhausted("message larger than 4 GiB"))?;
    let mut prefix = Vec::with_capacity(5);
    prefix.push(u8::from(message.encoding.is_some()));
    prefix.extend_from_slice(&len.to_be_bytes());
    let body = Chunks::new(std::iter::once(Bytes::from(prefix)).chain(message.chunks));
    let fixed = [
        (http::header::CONTENT_TYPE, "application/grpc"),
        (http::header::TE, "trailers"),
        (
            http::HeaderName::from_static("grpc-accept-encoding"),
            "identity",
        ),
    ];
    for (name, value) in fixed {
        headers.insert(name, http::HeaderValue::from_static(value));
    }
    if let Some(encoding) = message.encoding {
        headers.insert("grpc-encoding", http::HeaderValue::from_static(encoding));
    }
    let mut request = http::Request::new(tonic::body::Body::new(body));
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = http::Uri::from_static(path);
    *request.headers_mut() = headers;
    let unavailable = |e: tonic::transport::Error| {
        let source = std::error::Error::source(&e).map(ToString::to_string);
        Status::unavailable(match source {
            Some(s) => format!("{e}: {s}"),
            None => e.to_string(),
        })
    };
    std::future::poll_fn(|cx| tower_service::Service::poll_ready(channel, cx))
        .await
        .map_err(unavailable)?;
    let response = tower_service::Service::call(channel, request)
        .await
        .map_err(unavailable)?;
    let (parts, body) = response.into_parts();
    if parts.status != http::StatusCode::OK {
        return Err(Status::new(
            http_status_code(parts.status),
            format!("HTTP {} instead of a gRPC answer", parts.status),
        ));
    }
    // A trailers-only answer: the status is in the headers.
    if let Some(status) = Status::from_header_map(&parts.headers) {
        if status.code() != Code::Ok {
            return Err(status);
        }
    }
    let collected = http_body_util::Limited::new(body, max_response.saturating_add(5))
        .collect()
        .await
        .map_err(|e| Status::unavailable(format!("cannot read the answer: {e}")))?;
    let status = collected
        .trailers()
        .and_then(Status::from_header_map)
        .or_else(|| Status::from_header_map(&parts.headers));
    match status {
        Some(status) if status.code() == Code::Ok => {}
        Some(status) => return Err(status),
        None => return Err(Status::internal("the answer has no grpc-status")),
    }
    let data = collected.to_bytes();
    match data.get(..5) {
        Some([0, a, b, c, d]) => {
            let len = u32::from_be_bytes([*a, *b, *c, *d]) as usize;
            Ok(data.slice(5..(5 + len).min(data.len())))
        }
        _ => Ok(Bytes::new()),
    }
}

/// The gRPC code for an HTTP status that is not a gRPC answer, as the gRPC spec maps them.
fn http_status_code(status: http::StatusCode) -> Code {
    match status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502..=504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

/// `google.rpc.Status`: the error body of OTLP/HTTP and the details of a gRPC status.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<Any>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Any {
    #[prost(string, tag = "1")]
    pub type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}
