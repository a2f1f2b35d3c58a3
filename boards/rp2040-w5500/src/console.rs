//! The host's console on UART1 RX, interrupt-driven into a RAM ring.
use embassy_rp::uart::{BufferedUartRx, Error};
use relay_fw::board::ConsoleInput;

/// The buffered UART receiver as relay-fw's console input.
pub struct UartConsole {
    /// The receiver (its ring is filled from the UART interrupt).
    pub rx: BufferedUartRx,
    /// Receive errors seen (an overrun loses bytes).
    pub errors: u32,
}

impl ConsoleInput for UartConsole {
    async fn read(&mut self, buf: &mut [u8]) -> usize {
        loop {
            match embedded_io_async::Read::read(&mut self.rx, buf).await {
                Ok(n) if n > 0 => return n,
                Ok(_) => {}
                Err(e @ (Error::Overrun | Error::Break | Error::Parity | Error::Framing)) => {
                    self.errors = self.errors.wrapping_add(1);
                    defmt::warn!("console: {}", defmt::Debug2Format(&e));
                }
                Err(_) => self.errors = self.errors.wrapping_add(1),
            }
        }
    }

    fn lost(&self) -> u32 {
        self.errors
    }
}
