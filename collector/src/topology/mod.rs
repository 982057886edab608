//! From a config document to running tasks, in three phases:
//!
//! 1. [`Plan::new`] checks the document against the registry and reports every problem
//!    at once: unknown kinds, bad component settings, undefined references, pipelines
//!    without receivers or exporters, unsupported signals, two listeners on one address.
//! 2. [`Plan::build`] builds every used component (binding sockets) and wires the
//!    bounded queues: receiver → pipelines (fan-out) → processors in order → exporters
//!    (fan-out). A receiver or exporter used by several pipelines is one instance;
//!    processors are per pipeline.
//! 3. [`Service::run`] runs until the shutdown signal, then drains in order: receivers
//!    stop, processors flush as their inputs close, exporters drain their queues until
//!    the deadline, and whatever is left is counted as dropped.
//!
//! Layout: [`plan`] (the checks), `build` (components and queues), [`run`] (the
//! service until shutdown, then the drain).

mod build;
pub mod plan;
pub mod run;

pub use plan::Plan;
pub use run::{Outcome, Reloaded, Running, Service};

#[cfg(test)]
mod tests;
