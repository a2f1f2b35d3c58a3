//! What a board provides to the relay. The NIC is any
//! [`embassy_net_driver::Driver`] and the clock is the board's
//! `embassy-time-driver`; the rest are these traits.
#![allow(async_fn_in_trait)] // one single-threaded executor: no Send bound needed

use relay_core::detect::HostSignal;

/// The host's serial console, as the relay hears it.
pub trait ConsoleInput {
    /// Wait for console bytes; returns how many were copied into `buf` (≥ 1).
    async fn read(&mut self, buf: &mut [u8]) -> usize;
    /// Bytes lost by the hardware (receive overruns) since boot.
    fn lost(&self) -> u32;
    /// [`measure`](crate::measure) stamp of the last byte received, when the
    /// board takes one (latency measurement only).
    fn last_byte_stamp(&self) -> Option<u32> {
        None
    }
}

/// Out-of-band signals about the host: power, CATERR, watchdog (GPIO lines
/// on a real BMC).
pub trait HostSignals {
    /// Wait for the next signal.
    async fn next(&mut self) -> HostSignal;
}

/// Storage that survives a reboot of the relay.
pub trait PersistentStore {
    /// Increment the boot counter, persist it, and return the new value;
    /// None when the storage cannot be written (reports then carry 0 and the
    /// bridge's replay check relies on the sequence alone).
    fn next_boot_counter(&mut self) -> Option<u32>;
    /// Copy a stored configuration blob into `buf`; None when there is none.
    fn load_config(&mut self, buf: &mut [u8]) -> Option<usize>;
}
