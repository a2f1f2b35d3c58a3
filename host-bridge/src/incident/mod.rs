//! Incidents: keyed per node and boot, deduplicated, with context before and after.
pub mod manager;
mod model;

pub use model::*;
