//! The `resource` processor: edits resource attributes with the OpenTelemetry
//! Collector's actions. Encoded batches stay encoded: only the resources are rewritten.
//!
//! ```yaml
//! processors:
//!   resource:
//!     attributes:
//!       - key: deployment.environment.name
//!         value: prod
//!         action: upsert
//! ```

use serde::Deserialize;
use sidekick_collector::component::{
    BuildContext, BuildError, Edit, FieldError, MapProcessor, Processor, ProcessorConfig,
};
use sidekick_collector::config::Signal as SignalKind;
use sidekick_collector::payload::{Batch, Signal};

use crate::attributes::actions::{compile_all, Action, ActionConfig};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub attributes: Vec<ActionConfig>,
}

impl ProcessorConfig for Config {
    const SIGNALS: &'static [SignalKind] = &SignalKind::ALL;

    fn validate(&self) -> Vec<FieldError> {
        let (_, mut errors) = compile_all(&self.attributes, "attributes");
        if self.attributes.is_empty() {
            errors.push(FieldError::new("attributes", "add at least one action"));
        }
        errors
    }

    fn build<S: Signal>(&self, _ctx: &BuildContext) -> Result<Box<dyn Processor<S>>, BuildError> {
        let (actions, errors) = compile_all(&self.attributes, "attributes");
        if let Some(e) = errors.first() {
            return Err(BuildError::new(format!("{}: {}", e.field, e.message)));
        }
        Ok(Box::new(MapProcessor(ResourceAttributes { actions })))
    }
}

pub struct ResourceAttributes {
    actions: Vec<Action>,
}

impl<S: Signal> Edit<S> for ResourceAttributes {
    fn edit(&self, batch: &mut Batch<S>) {
        batch.resources_mut(|r| self.actions.iter().for_each(|a| a.apply(&mut r.attributes)));
    }
}
