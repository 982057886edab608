//! The runtime: payload types, component traits, the pipeline graph, the exporter helper,
//! shutdown, self-telemetry and health.
//!
//! Layout:
//! - [`base`]: the nouns every layer shares and that depend on nothing else: boxed
//!   futures, [`Stop`](base::Stop), [`Deadline`](base::Deadline), [`Health`](base::Health),
//!   the [`Account`](base::Account) of held data, the persistent queue's [`Ticket`](base::Ticket).
//! - [`payload`] and [`util`]: re-exported from `sidekick-core`, the crate below this one
//!   and the Prometheus crate: encoded batches, hashing maps, clocks.
//! - [`component`]: the config-is-factory traits and the [`Registry`](component::Registry).
//! - [`pipe`]: bounded queues ([`Input`](pipe::Input), [`Output`](pipe::Output)) and [`Stop`](pipe::Stop).
//! - [`exporter`]: queue, consumers, timeout and retry shared by every exporter.
//! - [`topology`]: config document → checked plan → built service → run and drain.
//! - [`telemetry`]: the self-metrics registry, under the OpenTelemetry Collector's names
//!   (its counter and gauge handles and log-burst limiting are `sidekick-core`'s).
//! - [`admin`]: `/metrics`, `/healthz`, `/readyz`.
//! - [`extensions`]: the extension kinds (`health_check`, `bearertokenauth`, `basicauth`,
//!   `file_storage`).
//! - [`storage`]: the `file_storage` extension (state kept across restarts).
//! - [`journal`]: the persistent queue at the entry of a pipeline whose exporters name
//!   `sending_queue.storage`.
//! - [`auth`]: the `bearertokenauth` and `basicauth` extensions, looked up by listeners
//!   and exporters at build time.
//! - [`listener`]: a listener's options with its connection self-metrics.
//! - [`logging`]: `tracing` output, text or JSON.
//!
//! Prometheus's formats (the admin page's writer, names, units) live in
//! `sidekick-prometheus`.
//!
//! Listeners, clients, TLS and codecs live in `sidekick-transport`, re-exported here as
//! [`transport`].

pub mod admin;
pub mod auth;
pub mod base;
pub mod batching;
pub mod component;
pub mod exporter;
pub mod extensions;
pub mod journal;
pub mod listener;
pub mod logging;
pub mod pipe;
pub mod storage;
pub mod telemetry;
pub mod topology;

pub use sidekick_config as config;
pub use sidekick_core::{payload, process, util};
pub use sidekick_transport as transport;
