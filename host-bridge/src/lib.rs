//! # host-bridge
//!
//! The lastgasp daemon. Modules follow the data's path:
//! [`ingest`] (UDP) → [`decode`] (relay reports, extended/basic netconsole) → [`detect`]
//! (built-in rules, node-problem-detector rule files) → [`incident`] (dedup, context, redb
//! [`journal`]) → [`act`] (the [`act::Actuator`] seam; resolution and Kubernetes live behind it).
//! [`serve`] holds config, metrics, health endpoints and the daemon's main loop.
#![deny(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod act;
pub mod incident;
pub mod kube;
