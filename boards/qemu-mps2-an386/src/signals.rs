//! Host signals of the emulated board: one byte per event on UART2, which a
//! test (or the demo) drives through a QEMU chardev. On a real BMC these are
//! GPIO lines (power good, CATERR, watchdog).
//!
//! | byte | signal |
//! |------|--------|
//! | `P`  | power lost |
//! | `p`  | power restored |
//! | `C`  | CATERR |
//! | `W`  | host watchdog expired |
use relay_core::detect::HostSignal;
use relay_fw::board::HostSignals;

use crate::uart::UartRx;

/// UART2 as a [`HostSignals`] source.
pub struct SignalPort {
    rx: UartRx<16>,
    unknown: u32,
}

impl SignalPort {
    /// Wrap the UART2 receiver.
    pub fn new(rx: UartRx<16>) -> Self {
        Self { rx, unknown: 0 }
    }
}

/// The signal a code byte stands for.
pub fn decode(b: u8) -> Option<HostSignal> {
    match b {
        b'P' => Some(HostSignal::PowerLost),
        b'p' => Some(HostSignal::PowerRestored),
        b'C' => Some(HostSignal::Caterr),
        b'W' => Some(HostSignal::WatchdogExpired),
        _ => None,
    }
}

impl HostSignals for SignalPort {
    async fn next(&mut self) -> HostSignal {
        loop {
            let mut b = [0u8; 1];
            if self.rx.read(&mut b).await == 1 {
                match decode(b[0]) {
                    Some(s) => return s,
                    None => {
                        self.unknown = self.unknown.wrapping_add(1);
                        defmt::warn!(
                            "signals: unknown code {=u8:#x} ({} so far), ignored",
                            b[0],
                            self.unknown
                        );
                    }
                }
            }
        }
    }
}
