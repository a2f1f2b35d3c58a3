//! embassy-time driver on SysTick: a 1 kHz tick (the core runs at 25 MHz) and
//! embassy's timer queue, checked on every tick.
use core::cell::{Cell, RefCell};
use core::task::Waker;

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m::peripheral::SYST;
use cortex_m_rt::exception;
use critical_section::Mutex;
use embassy_time_driver::Driver;
use embassy_time_queue_utils::Queue;

/// Core clock of mps2-an386, which SysTick counts.
const CORE_HZ: u32 = 25_000_000;
/// Must match embassy-time's `tick-hz-1_000` feature.
const TICK_HZ: u32 = 1_000;

struct SysTickDriver {
    ticks: Mutex<Cell<u64>>,
    alarm: Mutex<Cell<u64>>,
    queue: Mutex<RefCell<Queue>>,
}

embassy_time_driver::time_driver_impl!(static DRIVER: SysTickDriver = SysTickDriver {
    ticks: Mutex::new(Cell::new(0)),
    alarm: Mutex::new(Cell::new(u64::MAX)),
    queue: Mutex::new(RefCell::new(Queue::new())),
});

impl Driver for SysTickDriver {
    fn now(&self) -> u64 {
        critical_section::with(|cs| self.ticks.borrow(cs).get())
    }

    fn schedule_wake(&self, at: u64, waker: &Waker) {
        critical_section::with(|cs| {
            let mut q = self.queue.borrow(cs).borrow_mut();
            if q.schedule_wake(at, waker) {
                let now = self.ticks.borrow(cs).get();
                self.alarm.borrow(cs).set(q.next_expiration(now));
            }
        })
    }
}

/// Start SysTick. Call once, before the executor runs.
pub fn init(mut syst: SYST) {
    syst.set_clock_source(SystClkSource::Core);
    syst.set_reload(CORE_HZ / TICK_HZ - 1);
    syst.clear_current();
    syst.enable_interrupt();
    syst.enable_counter();
}

#[exception]
fn SysTick() {
    let d = &DRIVER;
    critical_section::with(|cs| {
        let t = d.ticks.borrow(cs).get().wrapping_add(1);
        d.ticks.borrow(cs).set(t);
        if t >= d.alarm.borrow(cs).get() {
            let next = d.queue.borrow(cs).borrow_mut().next_expiration(t);
            d.alarm.borrow(cs).set(next);
        }
    });
}
