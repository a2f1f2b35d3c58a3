//! The host's console on a USART RX pin, received by DMA into a ring buffer
//! so no byte depends on interrupt latency.
use embassy_stm32::usart::{Error, RingBufferedUartRx};
use relay_fw::board::ConsoleInput;

/// USART RX as relay-fw's console input.
pub struct UartConsole {
    /// The DMA-backed receiver.
    pub rx: RingBufferedUartRx<'static>,
    /// Receive errors seen (overruns lose bytes; the others garble one).
    pub errors: u32,
}

impl ConsoleInput for UartConsole {
    async fn read(&mut self, buf: &mut [u8]) -> usize {
        loop {
            match self.rx.read(buf).await {
                Ok(n) if n > 0 => return n,
                Ok(_) => {}
                // Reception restarts on the next read; count and go on.
                Err(e @ (Error::Overrun | Error::Framing | Error::Noise | Error::Parity | Error::BufferTooLong)) => {
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
