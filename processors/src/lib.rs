//! Processors: stages that sit in a pipeline between its receivers and exporters.
//!
//! Layout:
//! - [`batch`]: groups data into batches by size and time (`send_batch_size`,
//!   `send_batch_max_size`, `timeout`).
//! - [`attributes`]: edits span / data point / log record attributes (Collector actions).
//! - [`resource`]: edits resource attributes, keeping encoded batches encoded.
//! - [`memory_limiter`]: stops taking data above a memory limit (receivers refuse).
//! - [`k8s_attributes`]: adds the Pod's identity from the downward API.
//! - [`resourcedetection`]: resource attributes detected at start (`env`, `system`,
//!   `k8snode`).

pub mod attributes;
pub mod batch;
pub mod filter;
pub mod k8s_attributes;
pub mod memory_limiter;
pub mod ottl;
pub mod probabilistic_sampler;
pub mod resource;
pub mod resourcedetection;
pub mod transform;
