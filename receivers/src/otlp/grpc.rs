//! OTLP over gRPC: the three `Export` methods, served with a codec that keeps the
//! request bytes as they came.

use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use sidekick_collector::payload::{Batch, Signal};
use sidekick_collector::pipe::SendError;
use sidekick_transport::grpc::RawCodec;
use tonic::codec::CompressionEncoding;
use tonic::{Code, Status};
use tracing::debug;

use super::Entry;

/// Serves one unary `Export` call into `entry`.
pub(super) async fn export<S: Signal>(entry: Entry<S>, req: Request, max: usize) -> Response {
    let mut grpc = tonic::server::Grpc::new(RawCodec)
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd)
        .max_decoding_message_size(max);
    let mut response = grpc.unary(Export { entry }, req).await;
    // The framing layer answers OUT_OF_RANGE for a message over the limit; the OTLP spec
    // asks for RESOURCE_EXHAUSTED (which clients do not retry without a retry hint).
    let status = response.headers().get("grpc-status");
    if status.is_some_and(|s| s.as_bytes() == b"11") {
        response
            .headers_mut()
            .insert("grpc-status", http::HeaderValue::from_static("8"));
    }
    response.map(axum::body::Body::new)
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

struct Export<S: Signal> {
    entry: Entry<S>,
}

impl<S: Signal> tonic::server::UnaryService<Bytes> for Export<S> {
    type Response = Vec<Bytes>;
    type Future = sidekick_collector::component::BoxFuture<
        'static,
        Result<tonic::Response<Vec<Bytes>>, Status>,
    >;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let entry = self.entry.clone();
        Box::pin(async move {
            let batch = Batch::<S>::from_encoded(request.into_inner()).map_err(|e| {
                debug!(error = %e, "refused malformed OTLP/gRPC request");
                Status::invalid_argument(e.to_string())
            })?;
            match entry.accept(batch).await {
                // An empty Export*ServiceResponse encodes to zero bytes.
                Ok(()) => Ok(tonic::Response::new(Vec::new())),
                Err(SendError::Full) => Err(Status::new(
                    Code::Unavailable,
                    "pipeline is full; retry later",
                )),
                Err(SendError::Closed) => {
                    Err(Status::new(Code::Unavailable, "shutting down; retry later"))
                }
                // No retry hint: clients do not retry RESOURCE_EXHAUSTED without one.
                Err(e @ SendError::TooLarge { .. }) => {
                    Err(Status::new(Code::ResourceExhausted, e.to_string()))
                }
            }
        })
    }
}
