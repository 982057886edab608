//! OpenTelemetry Collector exporter options that Collector configs carry and that mean
//! nothing, or nothing yet, for Sidekick: accepted with a warning that says why, or
//! refused with what to write instead, so a Collector config loads without rework.

use serde::de::IgnoredAny;
use sidekick_collector::component::FieldError;

/// `read_buffer_size` / `write_buffer_size`: Go transport tuning.
pub fn buffer_sizes(read: Option<usize>, write: Option<usize>) -> Vec<FieldError> {
    let why = "socket buffers are sized by the runtime";
    let mut out = Vec::new();
    if read.is_some() {
        out.push(FieldError::no_effect("read_buffer_size", why));
    }
    if write.is_some() {
        out.push(FieldError::no_effect("write_buffer_size", why));
    }
    out
}

/// `batcher`: the Collector's exporter-side batching.
pub fn batcher(batcher: &Option<IgnoredAny>) -> Vec<FieldError> {
    match batcher {
        Some(_) => vec![FieldError::no_effect(
            "batcher",
            "batching is done by the batch processor: put `batch` in the pipeline",
        )],
        None => Vec::new(),
    }
}

/// `auth`: an authenticator extension, which Sidekick does not have yet.
pub fn auth(auth: &Option<IgnoredAny>) -> Vec<FieldError> {
    match auth {
        Some(_) => vec![FieldError::new(
            "auth",
            "authenticator extensions are not supported yet: send credentials with `headers` (e.g. authorization: \"Bearer ${env:TOKEN}\")",
        )],
        None => Vec::new(),
    }
}
