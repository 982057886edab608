//! The nouns every Sidekick crate shares, below the runtime and the Prometheus crate:
//!
//! - [`payload`]: [`Batch`](payload::Batch) of traces, metrics or logs, kept encoded
//!   until a stage needs to look inside; [`payload::wire`] walks the protobuf framing.
//! - [`util`]: clock, error formatting, hashing maps.
//! - [`metrics`]: [`Counter`](metrics::Counter) and [`Gauge`](metrics::Gauge) handles.
//! - [`process`]: this process's resident memory and CPU time.
//! - [`log`]: [`LogBurst`](log::LogBurst), one log line per burst of the same event.

pub mod log;
pub mod metrics;
pub mod payload;
pub mod process;
pub mod util;
