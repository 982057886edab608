//! The OpenTelemetry Transformation Language, the subset real configs use, shared by the
//! `filter` and `transform` processors.
//!
//! - [`parse`]: the grammar (statements, conditions, values).
//! - [`compile`]: names resolved against a context; unknown paths and functions, bad
//!   regexes and wrong arguments refused at load with where and what to write.
//! - [`item`]: the contexts' paths, read from and written to encoded OTLP.
//! - [`funcs`]: the converters and editors.
//! - [`run`]: a walk over a batch by context, cutting out dropped items and rewriting
//!   only edited ones; nothing else is decoded.
//!
//! Evaluation cannot panic or run away: regexes are compiled at load with a size limit,
//! `ParseJSON` has a size and depth limit, nesting in statements is bounded.

pub mod compile;
pub mod config;
pub mod eval;
pub mod funcs;
pub mod item;
pub mod parse;
pub mod run;
pub mod value;
pub mod wire;

pub use compile::{CompileError, Cond, Statement};
pub use item::{Context, Item};
pub use run::Verdict;
pub use value::Value;

impl Statement {
    /// Runs the statement on one item: the editor, if the `where` clause holds.
    pub fn run(&self, item: &mut Item<'_>) -> Result<(), eval::EvalError> {
        if let Some(c) = &self.condition {
            if !eval::test(c, item)? {
                return Ok(());
            }
        }
        self.editor.apply(item)
    }
}

impl Cond {
    pub fn matches(&self, item: &Item<'_>) -> Result<bool, eval::EvalError> {
        eval::test(self, item)
    }
}

#[cfg(test)]
mod tests;
