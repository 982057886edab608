//! The config document: YAML in the OpenTelemetry Collector's shape, loaded into a tree
//! that remembers where every value came from, so each error can point at its line.
//!
//! This crate knows the document's outline (`receivers`, `processors`, `exporters`,
//! `extensions`, `service`) but not the component kinds: the runtime parses each
//! component's subtree with the component's own config type through [`from_node`], which
//! reports unknown fields with the nearest valid key.
//!
//! Layout:
//! - [`node`]: YAML → [`Node`] tree with line/column marks and `${env:VAR}` expansion.
//! - [`de`]: a serde deserializer over a [`Node`] (typed component configs).
//! - [`document`]: the outline: component maps, pipelines, `service.telemetry`.
//! - [`id`]: component ids `kind[/name]`, pipeline ids `signal[/name]`, [`Signal`].
//! - [`types`]: value types shared by component configs: [`Duration`], [`Secret`].
//! - [`error`]: [`ConfigError`] (path + mark + message) and [`Errors`].

pub mod de;
pub mod document;
pub mod error;
pub mod id;
pub mod node;
pub mod types;

pub use de::from_node;
pub use document::{Document, PipelineSpec, Telemetry};
pub use error::{BuildError, ConfigError, Errors, FieldError};
pub use id::{ComponentId, PipelineId, Signal};
pub use node::{EnvLookup, Mark, Node, Value};
pub use types::{AuthRef, Duration, Secret, ServerTls};
