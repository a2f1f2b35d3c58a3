//! Host signals on three GPIO lines, for any HAL whose inputs implement
//! embedded-hal's `InputPin` and embedded-hal-async's `Wait` (every embassy
//! HAL's do): host power good (high = on), CATERR# and the host watchdog's
//! expiry output (both active low).
use embassy_futures::select::{select3, Either3};
use embedded_hal::digital::InputPin;
use embedded_hal_async::digital::Wait;
use relay_core::detect::HostSignal;

use crate::board::HostSignals;

/// The three lines.
pub struct GpioSignals<P, C, W> {
    /// Host power good.
    pub power: P,
    /// CATERR#, active low.
    pub caterr: C,
    /// Watchdog expired, active low.
    pub watchdog: W,
}

impl<P: InputPin + Wait, C: Wait, W: Wait> HostSignals for GpioSignals<P, C, W> {
    async fn next(&mut self) -> HostSignal {
        loop {
            let edge = select3(
                self.power.wait_for_any_edge(),
                self.caterr.wait_for_falling_edge(),
                self.watchdog.wait_for_falling_edge(),
            )
            .await;
            // The embassy HALs cannot fail here; a HAL that can is waited on again.
            return match edge {
                Either3::First(Ok(())) => match self.power.is_high() {
                    Ok(true) => HostSignal::PowerRestored,
                    Ok(false) => HostSignal::PowerLost,
                    Err(_) => continue,
                },
                Either3::Second(Ok(())) => HostSignal::Caterr,
                Either3::Third(Ok(())) => HostSignal::WatchdogExpired,
                _ => continue,
            };
        }
    }
}
