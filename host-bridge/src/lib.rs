//! # host-bridge
//!
//! The lastgasp daemon. Modules follow the data's path:
//! [`ingest`] (UDP) → [`decode`] (relay reports, extended/basic netconsole) → [`detect`]
//! (built-in rules, node-problem-detector rule files) → [`incident`] (dedup, context, redb
//! [`journal`]) → [`act`] (the [`act::Actuator`] seam; resolution and Kubernetes live behind it).
//! [`serve`] holds config, metrics, health endpoints and the daemon's main loop; [`replay`]
//! and [`keygen`] back the CLI's tools.
#![deny(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod act;
pub mod decode;
pub mod detect;
pub mod incident;
pub mod ingest;
pub mod journal;
pub mod replay;
pub mod keygen;
pub mod serve;
pub mod kube;
