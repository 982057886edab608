//! The `sidekick` binary's wiring, kept in a library so tests build exactly what the
//! binary builds: the registry of component kinds and the built-in config.
//!
//! Layout:
//! - [`registry`]: every component kind, one line each.
//! - [`fuzz`]: entry points for fuzzing every parser of outside input.
//! - `default.yaml`: the config `sidekick` runs without `--config`.

pub mod fuzz;
mod registry;

pub use registry::registry;

use sidekick_collector::component::Registry;
use sidekick_collector::config::{Document, EnvLookup, Errors};
use sidekick_collector::topology::Plan;

/// The config `sidekick` runs when given none.
pub const DEFAULT_CONFIG: &str = include_str!("default.yaml");

/// Parses and checks a config; on failure, every problem as `name:line:col: path: message`.
pub fn plan(
    text: &str,
    name: &str,
    registry: &Registry,
    env: &dyn EnvLookup,
) -> Result<Plan, String> {
    let report = |e: Errors| {
        e.0.iter()
            .map(|err| match err.mark {
                Some(_) => format!("{name}:{err}"),
                None => format!("{name}: {err}"),
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let doc = Document::parse(text, env).map_err(report)?;
    Plan::new(&doc, registry).map_err(report)
}
