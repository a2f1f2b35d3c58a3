//! defmt global logger on UART1 (QEMU's second `-serial`), plus the panic and
//! fault handlers, which log and then end QEMU through semihosting with a
//! failure status so a test notices.
use core::sync::atomic::{AtomicBool, Ordering};

use cortex_m_rt::{exception, ExceptionFrame};
use cortex_m_semihosting::debug;

use crate::uart::Regs;

/// UART1 of mps2-an386.
pub const LOG_UART: Regs = Regs(0x4000_5000);

#[defmt::global_logger]
struct Logger;

static TAKEN: AtomicBool = AtomicBool::new(false);
static mut RESTORE: critical_section::RestoreState = critical_section::RestoreState::invalid();
static mut ENCODER: defmt::Encoder = defmt::Encoder::new();

fn out(bytes: &[u8]) {
    LOG_UART.write_blocking(bytes);
}

// SAFETY: acquire/release bracket every use of ENCODER and RESTORE inside a
// critical section, and TAKEN rejects re-entry.
unsafe impl defmt::Logger for Logger {
    fn acquire() {
        // SAFETY: released in `release`, in order.
        let restore = unsafe { critical_section::acquire() };
        if TAKEN.swap(true, Ordering::Relaxed) {
            // A log call from inside a log call (e.g. a fault while logging).
            // SAFETY: undoing the acquire just made.
            unsafe { critical_section::release(restore) };
            return;
        }
        // SAFETY: inside the critical section, TAKEN held.
        unsafe {
            RESTORE = restore;
            (*core::ptr::addr_of_mut!(ENCODER)).start_frame(out);
        }
    }

    unsafe fn flush() {}

    unsafe fn release() {
        // SAFETY: paired with `acquire`.
        unsafe {
            (*core::ptr::addr_of_mut!(ENCODER)).end_frame(out);
            TAKEN.store(false, Ordering::Relaxed);
            critical_section::release(RESTORE);
        }
    }

    unsafe fn write(bytes: &[u8]) {
        // SAFETY: only between acquire and release.
        unsafe { (*core::ptr::addr_of_mut!(ENCODER)).write(bytes, out) }
    }
}

defmt::timestamp!("{=u64:us}", embassy_time::Instant::now().as_micros());

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    // Location only: formatting the message would pull core::fmt into flash.
    match info.location() {
        Some(l) => defmt::error!("panic at {=str}:{=u32}", l.file(), l.line()),
        None => defmt::error!("panic"),
    }
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::wfi();
    }
}

#[exception]
unsafe fn HardFault(ef: &ExceptionFrame) -> ! {
    defmt::error!("hard fault at pc {=u32:08x}", ef.pc());
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::wfi();
    }
}
