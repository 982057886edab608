//! OTLP over gRPC: the three `Export` methods, served with a codec that keeps the
//! request bytes as they came.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use sidekick_collector::grpc::RawCodec;
use sidekick_collector::payload::{Batch, LogsSignal, MetricsSignal, Signal, TracesSignal};
use sidekick_collector::pipe::{SendError, Stop};
use tokio::net::TcpListener;
use tonic::codec::CompressionEncoding;
use tonic::{Code, Status};
use tracing::debug;

use super::{Entries, Entry, GrpcConfig};

pub(super) async fn serve(listener: TcpListener, config: GrpcConfig, entries: Entries, stop: Stop) {
    let entries = Arc::new(entries);
    let max = config.max_recv_msg_size_mib << 20;
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let entries = Arc::clone(&entries);
        async move { Ok::<_, Infallible>(route(&entries, req, max).await) }
    });
    sidekick_collector::http::serve(listener, service, stop).await;
}

async fn route(
    entries: &Entries,
    req: Request<Incoming>,
    max: usize,
) -> Response<tonic::body::Body> {
    let path = req.uri().path();
    if path == TracesSignal::GRPC_PATH {
        if let Some(e) = &entries.traces {
            return export(e.clone(), req, max).await;
        }
    } else if path == MetricsSignal::GRPC_PATH {
        if let Some(e) = &entries.metrics {
            return export(e.clone(), req, max).await;
        }
    } else if path == LogsSignal::GRPC_PATH {
        if let Some(e) = &entries.logs {
            return export(e.clone(), req, max).await;
        }
    }
    Status::unimplemented(format!(
        "{path} is not served here: no pipeline takes this signal from this receiver"
    ))
    .into_http()
}

async fn export<S: Signal>(
    entry: Entry<S>,
    req: Request<Incoming>,
    max: usize,
) -> Response<tonic::body::Body> {
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
    response
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
            }
        })
    }
}
