//! # relay-fw
//!
//! The lastgasp relay as embassy firmware, for any board. relay-core does the
//! work (scanner, detector, netconsole, signed report, frame templates); this
//! crate connects it to a board:
//!
//! - [`board`]: the traits a board implements (console input, host signals,
//!   persistent storage). The NIC is any `embassy-net-driver` and the clock
//!   the board's `embassy-time-driver`.
//! - [`shared_nic`]: one NIC for both embassy-net (DHCP/static address, ARP,
//!   ICMP echo) and the relay's prebuilt last-gasp frames, which bypass the
//!   IP stack as netpoll does.
//! - [`arp`]: resolution and refresh of each collector's MAC for the frame
//!   templates.
//! - [`config`]: the postcard configuration blob.
//! - [`flash_store`] and [`gpio_signals`]: the persistent store and the
//!   host signals of a board with its own NOR flash and three GPIO lines.
//! - [`tasks`]: the async bodies of the console, signal, ARP and relay tasks
//!   ([`board_tasks!`] declares them for a board's types, since embassy
//!   tasks cannot be generic).
#![no_std]

pub mod config;
pub mod flash_store;

/// The build script every board shares.
#[cfg(feature = "toml")]
pub mod build;

#[cfg(feature = "firmware")]
pub mod gpio_signals;

#[cfg(feature = "firmware")]
pub mod arp;
#[cfg(feature = "firmware")]
pub mod board;
#[cfg(feature = "firmware")]
pub mod measure;
#[cfg(feature = "firmware")]
pub mod net;
#[cfg(feature = "firmware")]
pub mod shared_nic;

pub use config::FwConfig;
#[cfg(feature = "firmware")]
pub mod engine;
#[cfg(feature = "firmware")]
pub mod tasks;
