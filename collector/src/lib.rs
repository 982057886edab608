//! placeholder
pub mod payload;
