//! Incidents: keyed per node and boot, deduplicated, with context before and after.
mod model;

pub use model::*;
