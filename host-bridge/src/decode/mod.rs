//! Decode: demultiplexes each datagram (relay report, extended or basic netconsole), keeps the
//! per-source state (reassembly, sequence tracking, partial lines, context ring), runs the
//! detection rules on every line and tells the incident manager.
pub mod ext;
pub mod worker;

pub use worker::{DecodeCtx, Worker};
