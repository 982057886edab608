//! OTLP over gRPC: the three `Export` methods, unary calls read straight from the HTTP/2
//! body. The message is gathered into one buffer of exactly its announced length, so a
//! batch holds only the bytes of its requests: not a decode buffer's spare room per
//! request, nor the connection's read buffer that a frame would keep alive.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::Response;
use bytes::{Buf, Bytes, BytesMut};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use sidekick_collector::payload::{Batch, Signal};
use sidekick_collector::pipe::SendError;
use tonic::{Code, Status};
use tracing::debug;

use super::http::{decompress, DecompressError};
use super::Entry;

/// Serves one unary `Export` call into `entry`; `max` bounds the message, decompressed.
pub(super) async fn export<S: Signal>(entry: &Entry<S>, req: Request, max: usize) -> Response {
    match call::<S>(entry, req, max).await {
        Ok(()) => ok(),
        Err(status) => status.into_http::<axum::body::Body>(),
    }
}

async fn call<S: Signal>(entry: &Entry<S>, req: Request, max: usize) -> Result<(), Status> {
    let encoding = req
        .headers()
        .get("grpc-encoding")
        .map(|v| v.to_str().unwrap_or("?").to_ascii_lowercase());
    let (compressed, message) = read_message(req.into_body(), max).await?;
    let message = match (compressed, encoding.as_deref()) {
        (false, _) => message,
        (true, None | Some("identity")) => {
            return Err(Status::internal(
                "a compressed message without grpc-encoding",
            ));
        }
        (true, Some(encoding)) => decompress(encoding, message, max).map_err(|e| match e {
            DecompressError::TooLarge => too_large(max),
            DecompressError::Unsupported => Status::unimplemented(format!(
                "grpc-encoding \"{encoding}\" is not supported: send gzip, zstd or identity"
            )),
            DecompressError::Corrupt(e) => {
                Status::internal(format!("cannot decompress the {encoding} message: {e}"))
            }
        })?,
    };
    let batch = Batch::<S>::from_encoded(message).map_err(|e| {
        debug!(error = %e, "refused malformed OTLP/gRPC request");
        Status::invalid_argument(e.to_string())
    })?;
    entry.accept(batch).await.map_err(|e| match e {
        SendError::Full => Status::unavailable("pipeline is full; retry later"),
        SendError::Closed => Status::unavailable("shutting down; retry later"),
        // No retry hint: clients do not retry RESOURCE_EXHAUSTED without one.
        e @ SendError::TooLarge { .. } => Status::resource_exhausted(e.to_string()),
        // The data itself fails a processor: sending it again fails the same way.
        e @ SendError::Refused(_) => Status::invalid_argument(e.to_string()),
    })
}

/// As OTLP asks for a message over the limit (clients do not retry it).
fn too_large(max: usize) -> Status {
    Status::resource_exhausted(format!(
        "message larger than the receiver's limit of {max} bytes"
    ))
}

/// Reads the one length-prefixed message of a unary call: whether it is compressed, and
/// its bytes.
async fn read_message(mut body: axum::body::Body, max: usize) -> Result<(bool, Bytes), Status> {
    let mut prefix = [0u8; 5];
    let mut have = 0;
    let mut announced = None;
    let mut message = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(mut data) = frame.map_err(body_error)?.into_data() else {
            continue;
        };
        if have < 5 {
            let n = (5 - have).min(data.len());
            prefix[have..have + n].copy_from_slice(&data[..n]);
            data.advance(n);
            have += n;
            if have < 5 {
                continue;
            }
            let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
            if len > max {
                return Err(too_large(max));
            }
            announced = Some(len);
            message = BytesMut::with_capacity(len);
        }
        let Some(len) = announced else { continue };
        if message.len() + data.len() > len {
            return Err(Status::invalid_argument(
                "more bytes than the message's length prefix: one message per call",
            ));
        }
        message.extend_from_slice(&data);
    }
    let Some(len) = announced else {
        return Err(Status::internal("the call has no message"));
    };
    if message.len() != len {
        return Err(Status::internal(format!(
            "the message ends after {} of its {len} bytes",
            message.len()
        )));
    }
    let message = message.freeze();
    Ok((prefix[0] == 1, message))
}

/// The status a failed body read answers with: the one it carries (the listener's
/// `DEADLINE_EXCEEDED` for a body that does not arrive in time), or `CANCELLED`.
fn body_error(e: axum::Error) -> Status {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(err) = source {
        if let Some(status) = err.downcast_ref::<Status>() {
            return status.clone();
        }
        source = err.source();
    }
    Status::cancelled(format!("cannot read the request: {e}"))
}

/// The answer to a successful `Export`: an empty message, then `grpc-status: 0`.
fn ok() -> Response {
    let mut response = Response::new(axum::body::Body::new(Answer { sent: 0 }));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    response
}

/// An empty Export*ServiceResponse (zero bytes, behind its 5-byte prefix) and the OK
/// trailers.
struct Answer {
    sent: u8,
}

impl Body for Answer {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.sent += 1;
        Poll::Ready(match self.sent {
            1 => Some(Ok(Frame::data(Bytes::from_static(&[0; 5])))),
            2 => {
                let mut trailers = http::HeaderMap::with_capacity(1);
                trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                Some(Ok(Frame::trailers(trailers)))
            }
            _ => None,
        })
    }

    fn is_end_stream(&self) -> bool {
        self.sent >= 2
    }
}

/// A gRPC `UNIMPLEMENTED` answer.
pub(super) fn unimplemented(message: &str) -> Response {
    Status::unimplemented(message.to_string()).into_http::<axum::body::Body>()
}

/// The `grpc-status` of an answer whose status is in its headers (a refusal).
pub(super) fn status_code(response: &Response) -> Option<Code> {
    let value = response.headers().get("grpc-status")?.to_str().ok()?;
    Some(Code::from_i32(value.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use sidekick_transport::grpc::Chunks;

    use super::*;

    /// `parts` as the frames of a request body.
    async fn read(parts: &[&[u8]], max: usize) -> Result<(bool, Bytes), Status> {
        let body = Chunks::new(parts.iter().map(|p| Bytes::copy_from_slice(p)));
        read_message(axum::body::Body::new(body), max).await
    }

    #[tokio::test]
    async fn a_message_is_gathered_across_frames() {
        let got = read(&[&[0, 0, 0], &[0, 6, b'a'], b"bcd", b"ef"], 100)
            .await
            .unwrap();
        assert_eq!(got, (false, Bytes::from_static(b"abcdef")));
        let got = read(&[&[1, 0, 0, 0, 2, b'x', b'y']], 100).await.unwrap();
        assert_eq!(got, (true, Bytes::from_static(b"xy")));
        let empty = read(&[&[0, 0, 0, 0, 0]], 100).await.unwrap();
        assert_eq!(empty, (false, Bytes::new()));
    }

    #[tokio::test]
    async fn a_message_never_keeps_its_frame_alive() {
        // Even whole in one frame, the message is copied out: a frame is a slice of the
        // connection's read buffer, which other requests (refused ones too) share, and
        // keeping it would hold that buffer beyond what the queues count.
        let mut frame = vec![0, 0, 0, 0x40, 0];
        frame.resize(5 + 0x4000, b'x');
        let frame = Bytes::from(frame);
        let body = Chunks::new([frame.clone(), Bytes::new()]);
        let (_, message) = read_message(axum::body::Body::new(body), 1 << 20)
            .await
            .unwrap();
        assert_eq!(message, frame[5..]);
        assert_ne!(message.as_ptr(), frame[5..].as_ptr());
    }

    #[tokio::test]
    async fn a_message_that_does_not_match_its_prefix_is_refused() {
        let code = |r: Result<(bool, Bytes), Status>| r.unwrap_err().code();
        assert_eq!(
            code(read(&[&[0, 0, 0, 0, 9], b"abc"], 100).await),
            Code::Internal
        );
        assert_eq!(
            code(read(&[&[0, 0, 0, 0, 2], b"abc"], 100).await),
            Code::InvalidArgument
        );
        assert_eq!(
            code(read(&[&[0, 0, 0, 1, 0]], 100).await),
            Code::ResourceExhausted
        );
        assert_eq!(code(read(&[&[0, 0]], 100).await), Code::Internal);
        assert_eq!(code(read(&[], 100).await), Code::Internal);
    }
}
