//! Processors: stages that sit in a pipeline between its receivers and exporters.
//!
//! Layout:
//! - [`batch`]: groups data into batches by size and time (`send_batch_size`,
//!   `send_batch_max_size`, `timeout`).

pub mod batch;
