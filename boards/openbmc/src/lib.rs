//! # lastgasp-openbmc
//!
//! The lastgasp relay as a Linux program for BMCs that run OpenBMC
//! (AST2500/AST2600): it reads the host's console from obmc-console's
//! abstract Unix socket (or a tty), runs relay-core's sans-IO relay unchanged,
//! and puts the prebuilt last-gasp frames on the wire through an AF_PACKET
//! socket, with the collector's MAC learned beforehand from the kernel's
//! neighbour table (netpoll's model). A plain UDP socket is the fallback.
//!
//! Threads: a console reader, a neighbour refresher and (feature `dbus`) a
//! D-Bus watcher feed one bounded queue; the relay loop ([`relay_loop`]) owns
//! the state machine and the transmit socket.
pub mod app;
pub mod config;
pub mod console;
pub mod engine;
pub mod net;
pub mod netlink;
pub mod relay_loop;
pub mod resolve;
pub mod signals;
pub mod state;
