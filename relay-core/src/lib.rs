//! # relay-core
//!
//! The protocol and relay logic of lastgasp, shared by the firmware, the OpenBMC
//! relay and the host bridge. `#![no_std]`, no allocator, and no panic paths on
//! the public API (checked at link time by `relay-core/panic-check`).
//!
//! Modules follow the data's path:
//! console bytes → [`scanner`] → [`detect`] → [`relay`] → [`netconsole`] /
//! [`report`] → [`frame`] → the wire.
#![no_std]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod frame;
pub mod netconsole;
pub mod scanner;
pub mod detect;
pub mod report;
pub mod relay;
pub mod time;

pub use time::{Duration, Instant};
