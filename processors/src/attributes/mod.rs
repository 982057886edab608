//! The `attributes` processor: edits the attributes of every span, metric data point or
//! log record with the OpenTelemetry Collector's actions.
//!
//! ```yaml
//! processors:
//!   attributes:
//!     actions:
//!       - key: http.request.header.authorization
//!         action: delete
//!       - key: user.email
//!         action: hash
//!       - key: deployment.environment.name
//!         value: prod
//!         action: insert
//! ```

pub mod actions;

use serde::Deserialize;
use sidekick_collector::component::{
    BuildContext, BuildError, Edit, FieldError, MapProcessor, Processor, ProcessorConfig,
};
use sidekick_collector::config::Signal as SignalKind;
use sidekick_collector::payload::{Batch, Signal};
use tracing::warn;

use actions::{compile_all, Action, ActionConfig};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub actions: Vec<ActionConfig>,
}

impl ProcessorConfig for Config {
    const SIGNALS: &'static [SignalKind] = &SignalKind::ALL;

    fn validate(&self) -> Vec<FieldError> {
        let (_, mut errors) = compile_all(&self.actions, "actions");
        if self.actions.is_empty() {
            errors.push(FieldError::new("actions", "add at least one action"));
        }
        errors
    }

    fn build<S: Signal>(&self, _ctx: &BuildContext) -> Result<Box<dyn Processor<S>>, BuildError> {
        let (actions, errors) = compile_all(&self.actions, "actions");
        if let Some(e) = errors.first() {
            return Err(BuildError::new(format!("{}: {}", e.field, e.message)));
        }
        Ok(Box::new(MapProcessor(ItemAttributes { actions })))
    }
}

/// Applies actions to item attributes (this decodes the batch).
pub struct ItemAttributes {
    actions: Vec<Action>,
}

impl<S: Signal> Edit<S> for ItemAttributes {
    fn edit(&self, batch: &mut Batch<S>) {
        match batch.request_mut() {
            Ok(request) => S::item_attributes_mut(request, &mut |attrs| {
                self.actions.iter().for_each(|a| a.apply(attrs));
            }),
            // Bytes that passed the receiver's framing check but do not decode: passed on
            // unchanged rather than dropped.
            Err(e) => {
                warn!(error = %e, "attributes processor could not decode a batch; passed on unchanged")
            }
        }
    }
}
