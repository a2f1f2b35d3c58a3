//! Host signals on GPIO lines (EXTI): host power good (high = on), CATERR#
//! and the host watchdog's expiry output (both active low).
use embassy_futures::select::{select3, Either3};
use embassy_stm32::exti::ExtiInput;
use embassy_stm32::mode::Async;
use relay_core::detect::HostSignal;
use relay_fw::board::HostSignals;

/// The three lines.
pub struct GpioSignals {
    /// Host power good.
    pub power: ExtiInput<'static, Async>,
    /// CATERR#, active low.
    pub caterr: ExtiInput<'static, Async>,
    /// Watchdog expired, active low.
    pub watchdog: ExtiInput<'static, Async>,
}

impl HostSignals for GpioSignals {
    async fn next(&mut self) -> HostSignal {
        let edge = select3(
            self.power.wait_for_any_edge(),
            self.caterr.wait_for_falling_edge(),
            self.watchdog.wait_for_falling_edge(),
        )
        .await;
        match edge {
            Either3::First(()) if self.power.is_high() => HostSignal::PowerRestored,
            Either3::First(()) => HostSignal::PowerLost,
            Either3::Second(()) => HostSignal::Caterr,
            Either3::Third(()) => HostSignal::WatchdogExpired,
        }
    }
}
