//! ARM CMSDK APB UART: async, interrupt-driven receive into a bounded pipe;
//! blocking transmit (used for the defmt log).
//!
//! The UART holds one received byte. When the pipe is full the interrupt
//! handler stops reading and masks the RX interrupt, so the sender is held
//! off (QEMU's chardev waits; real hardware would overrun, which is counted)
//! instead of bytes being dropped silently; the reader unmasks it after it
//! has made room.
use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_sync::pipe::Pipe;

const DATA: usize = 0x00;
const STATE: usize = 0x04;
const CTRL: usize = 0x08;
const INTSTATUS: usize = 0x0c;
const BAUDDIV: usize = 0x10;

const STATE_TXFULL: u32 = 1 << 0;
const STATE_RXFULL: u32 = 1 << 1;
const STATE_RXOVERRUN: u32 = 1 << 3;
const CTRL_TX_EN: u32 = 1 << 0;
const CTRL_RX_EN: u32 = 1 << 1;
const CTRL_RX_INTEN: u32 = 1 << 3;
const INT_RX: u32 = 1 << 1;

/// Register block of one UART.
#[derive(Clone, Copy)]
pub struct Regs(pub usize);

impl Regs {
    fn rd(self, off: usize) -> u32 {
        // SAFETY: self.0 is the base of a CMSDK UART's MMIO window (see the
        // constructors' callers) and `off` one of its registers.
        unsafe { read_volatile((self.0 + off) as *const u32) }
    }
    fn wr(self, off: usize, v: u32) {
        // SAFETY: as in `rd`.
        unsafe { write_volatile((self.0 + off) as *mut u32, v) }
    }

    /// Enable the transmitter (and the receiver when `rx`), at the fastest
    /// divider the model accepts.
    pub fn enable(self, rx: bool) {
        self.wr(BAUDDIV, 16);
        let ctrl = if rx {
            CTRL_TX_EN | CTRL_RX_EN | CTRL_RX_INTEN
        } else {
            CTRL_TX_EN
        };
        self.wr(CTRL, ctrl);
    }

    /// Send bytes, busy-waiting while the one-byte holding register is full.
    pub fn write_blocking(self, bytes: &[u8]) {
        for &b in bytes {
            while self.rd(STATE) & STATE_TXFULL != 0 {}
            self.wr(DATA, u32::from(b));
        }
    }
}

/// Receive state shared by a UART's interrupt handler and its reader.
pub struct RxState<const N: usize> {
    regs: Regs,
    pipe: Pipe<CriticalSectionRawMutex, N>,
    paused: AtomicBool,
    overruns: AtomicU32,
    /// Board counter when the last byte was taken (latency measurement).
    last_stamp: AtomicU32,
    stamp: fn() -> u32,
}

impl<const N: usize> RxState<N> {
    /// State for the UART at `base`; `stamp` reads the board's counter.
    pub const fn new(base: usize, stamp: fn() -> u32) -> Self {
        Self {
            regs: Regs(base),
            pipe: Pipe::new(),
            paused: AtomicBool::new(false),
            overruns: AtomicU32::new(0),
            last_stamp: AtomicU32::new(0),
            stamp,
        }
    }

    /// RX interrupt handler body.
    pub fn on_interrupt(&self) {
        let r = self.regs;
        r.wr(INTSTATUS, INT_RX);
        if r.rd(STATE) & STATE_RXOVERRUN != 0 {
            r.wr(STATE, STATE_RXOVERRUN);
            self.overruns.fetch_add(1, Ordering::Relaxed);
        }
        while r.rd(STATE) & STATE_RXFULL != 0 {
            if self.pipe.free_capacity() == 0 {
                // Hold the sender off until the reader has made room.
                r.wr(CTRL, r.rd(CTRL) & !CTRL_RX_INTEN);
                self.paused.store(true, Ordering::Release);
                return;
            }
            let b = r.rd(DATA) as u8;
            self.last_stamp.store((self.stamp)(), Ordering::Relaxed);
            let _ = self.pipe.try_write(&[b]);
        }
    }

    /// Start receiving and hand out the reader.
    pub fn split(&'static self) -> UartRx<N> {
        self.regs.enable(true);
        UartRx { state: self }
    }
}

/// The receiving half of a UART.
pub struct UartRx<const N: usize> {
    state: &'static RxState<N>,
}

impl<const N: usize> UartRx<N> {
    /// Wait for at least one byte; returns how many were copied into `buf`.
    pub async fn read(&mut self, buf: &mut [u8]) -> usize {
        let n = self.state.pipe.read(buf).await;
        if self.state.paused.swap(false, Ordering::AcqRel) {
            let r = self.state.regs;
            critical_section::with(|_| r.wr(CTRL, r.rd(CTRL) | CTRL_RX_INTEN));
            // A byte may already wait in the holding register: run the handler.
            self.state.on_interrupt_pending();
        }
        n
    }

    /// Receive overruns seen by the hardware since boot (bytes lost).
    pub fn overruns(&self) -> u32 {
        self.state.overruns.load(Ordering::Relaxed)
    }
}

impl<const N: usize> RxState<N> {
    fn on_interrupt_pending(&self) {
        critical_section::with(|_| self.on_interrupt());
    }
}

impl<const N: usize> relay_fw::board::ConsoleInput for UartRx<N> {
    async fn read(&mut self, buf: &mut [u8]) -> usize {
        UartRx::read(self, buf).await
    }
    fn lost(&self) -> u32 {
        self.overruns()
    }
    fn last_byte_stamp(&self) -> Option<u32> {
        Some(self.state.last_stamp.load(Ordering::Relaxed))
    }
}
