//! OpenTelemetry Collector exporter options that Collector configs carry and that mean
//! nothing, or nothing yet, for Sidekick: accepted with a warning that says why, or
//! refused with what to write instead, so a Collector config loads without rework.

use serde::de::IgnoredAny;
use std::sync::Arc;

use sidekick_collector::auth::{AuthSide, Authenticator};
use sidekick_collector::component::{BuildContext, BuildError, FieldError};
use sidekick_collector::config::AuthRef;

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

/// `batcher`: the Collector's first, since renamed, exporter-side batching.
pub fn batcher(batcher: &Option<IgnoredAny>) -> Vec<FieldError> {
    match batcher {
        Some(_) => vec![FieldError::no_effect(
            "batcher",
            "the Collector renamed it: write sending_queue.batch (flush_timeout, min_size, max_size, sizer)",
        )],
        None => Vec::new(),
    }
}

/// The authenticator a network exporter's `auth` names, if set.
pub fn authenticator(
    ctx: &BuildContext,
    auth: &Option<AuthRef>,
) -> Result<Option<Arc<Authenticator>>, BuildError> {
    ctx.authenticator(auth.as_ref(), "auth", AuthSide::Exporter)
}
