//! Reading OTLP responses: partial success (rejected items and why) and, for gRPC, the
//! server's retry delay from `google.rpc.RetryInfo`.

use std::time::Duration;

use prost::Message;
use sidekick_collector::exporter::Delivered;
use sidekick_transport::grpc::RpcStatus;

/// `Export*ServiceResponse`: all three signals put `partial_success` in field 1 and its
/// rejected count and message in fields 1 and 2.
#[derive(Clone, PartialEq, Message)]
struct ExportResponse {
    #[prost(message, optional, tag = "1")]
    partial_success: Option<PartialSuccess>,
}

#[derive(Clone, PartialEq, Message)]
struct PartialSuccess {
    #[prost(int64, tag = "1")]
    rejected: i64,
    #[prost(string, tag = "2")]
    error_message: String,
}

/// What a successful response says about rejected items. An unreadable body counts as
/// full success: the backend said 200/OK.
pub fn delivered(body: &[u8]) -> Delivered {
    match ExportResponse::decode(body) {
        Ok(ExportResponse {
            partial_success: Some(p),
        }) if p.rejected > 0 => Delivered {
            rejected: p.rejected as usize,
            reason: p.error_message,
        },
        _ => Delivered::default(),
    }
}

#[derive(Clone, PartialEq, Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<ProtoDuration>,
}

#[derive(Clone, PartialEq, Message)]
struct ProtoDuration {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

/// A `Retry-After` header's delay (the seconds form; an HTTP date is not honoured and
/// the exporter's own backoff applies).
pub fn retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// The message of a `google.rpc.Status` error body, or the body's start as text.
pub fn status_message(body: &[u8]) -> String {
    match <RpcStatus as Message>::decode(body) {
        Ok(s) if !s.message.is_empty() => s.message,
        _ => String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
    }
}

/// The `RetryInfo.retry_delay` in a gRPC status's details, if the server sent one.
pub fn retry_delay(status_details: &[u8]) -> Option<Duration> {
    let status = RpcStatus::decode(status_details).ok()?;
    let info = status
        .details
        .iter()
        .find(|a| a.type_url.ends_with("google.rpc.RetryInfo"))?;
    let d = RetryInfo::decode(&info.value[..]).ok()?.retry_delay?;
    Some(Duration::new(
        d.seconds.max(0) as u64,
        d.nanos.max(0) as u32,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sidekick_transport::grpc::Any;

    #[test]
    fn reads_partial_success_and_retry_info() {
        let body = ExportResponse {
            partial_success: Some(PartialSuccess {
                rejected: 3,
                error_message: "too old".into(),
            }),
        }
        .encode_to_vec();
        assert_eq!(
            delivered(&body),
            Delivered {
                rejected: 3,
                reason: "too old".into()
            }
        );
        assert_eq!(delivered(&[]), Delivered::default());
        let details = RpcStatus {
            code: 8,
            message: "slow down".into(),
            details: vec![Any {
                type_url: "type.googleapis.com/google.rpc.RetryInfo".into(),
                value: RetryInfo {
                    retry_delay: Some(ProtoDuration {
                        seconds: 2,
                        nanos: 500_000_000,
                    }),
                }
                .encode_to_vec(),
            }],
        }
        .encode_to_vec();
        assert_eq!(retry_delay(&details), Some(Duration::from_millis(2500)));
        assert_eq!(retry_delay(b"garbage"), None);
    }
}
