//! Adapter from [`FwConfig`] to relay-core's relay state machine.
//! (Interim: relay-core's `Relay` has not landed yet; this counts input so
//! the drivers and the network can be brought up.)
use relay_core::detect::HostSignal;

use crate::config::FwConfig;

/// The relay state machine as the tasks see it.
pub struct Engine {
    console_bytes: u64,
}

impl Engine {
    /// A relay for `cfg`, sending from `src_ip`.
    pub fn new(_cfg: &FwConfig, _boot: u32, _src_ip: [u8; 4]) -> Option<Self> {
        Some(Self { console_bytes: 0 })
    }
    /// Console bytes.
    pub fn handle_console(&mut self, bytes: &[u8], _now: relay_core::Instant) {
        self.console_bytes += bytes.len() as u64;
    }
    /// A host signal.
    pub fn handle_signal(&mut self, _sig: HostSignal, _now: relay_core::Instant) {}
    /// The next frame to send.
    pub fn poll_transmit(&mut self, _now: relay_core::Instant, _buf: &mut [u8]) -> Option<usize> {
        None
    }
    /// When to poll next.
    pub fn poll_timeout(&self) -> Option<relay_core::Instant> {
        None
    }
    /// New MAC for collector `i`.
    pub fn set_collector_mac(&mut self, _i: usize, _mac: [u8; 6]) {}
}
