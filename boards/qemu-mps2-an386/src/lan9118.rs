//! SMSC LAN9118 Ethernet controller (as QEMU models it on mps2-an386), as an
//! interrupt-driven [`embassy_net_driver::Driver`].
//!
//! The chip has FIFOs, not descriptors: a received frame is a status word in
//! the RX status FIFO plus its bytes (and 4 FCS bytes) in the RX data FIFO; a
//! frame is sent by writing two command words and its bytes into the TX data
//! FIFO. Only the registers QEMU implements are touched: any other access
//! aborts QEMU.
use core::ptr::{read_volatile, write_volatile};
use core::task::Context;

use embassy_net_driver::{Capabilities, HardwareAddress, LinkState};
use embassy_sync::waitqueue::AtomicWaker;

/// Base address of the LAN9118 on mps2-an386.
pub const BASE: usize = 0x4020_0000;
/// Its interrupt line (an external IRQ of the NVIC).
pub const IRQ: u16 = 13;

const RX_DATA_FIFO: usize = 0x00;
const TX_DATA_FIFO: usize = 0x20;
const RX_STATUS_FIFO: usize = 0x40;
const ID_REV: usize = 0x50;
const IRQ_CFG: usize = 0x54;
const INT_STS: usize = 0x58;
const INT_EN: usize = 0x5c;
const BYTE_TEST: usize = 0x64;
const FIFO_INT: usize = 0x68;
const TX_CFG: usize = 0x70;
const HW_CFG: usize = 0x74;
const RX_FIFO_INF: usize = 0x7c;
const TX_FIFO_INF: usize = 0x80;
const FREE_RUN: usize = 0x9c;
const MAC_CSR_CMD: usize = 0xa4;
const MAC_CSR_DATA: usize = 0xa8;

const MAC_CR: u32 = 1;
const MAC_ADDRH: u32 = 2;
const MAC_ADDRL: u32 = 3;
const MAC_CR_TXEN: u32 = 1 << 3;
const MAC_CR_RXEN: u32 = 1 << 2;
/// Reset value of MAC_CR is promiscuous; the relay wants only its own,
/// broadcast and (for IPv4 multicast it never joins) nothing else.
const MAC_CR_PRMS: u32 = 1 << 18;

/// RX status FIFO level interrupt: at least one frame waits.
const INT_RSFL: u32 = 1 << 3;
/// TX data FIFO available interrupt.
const INT_TDFA: u32 = 1 << 9;
/// IRQ_CFG: enable the line, active-high, push-pull.
const IRQ_CFG_ON: u32 = 0x111;
/// TX_CFG: transmitter on, TX status FIFO may overrun (nobody reads it).
const TX_CFG_ON: u32 = 0b110;

/// Largest Ethernet frame handled (without FCS).
pub const MTU: usize = 1514;

static RX_WAKER: AtomicWaker = AtomicWaker::new();
static TX_WAKER: AtomicWaker = AtomicWaker::new();

fn rd(off: usize) -> u32 {
    // SAFETY: BASE..BASE+0x100 is the LAN9118's MMIO window on this board and
    // `off` is one of the register offsets above.
    unsafe { read_volatile((BASE + off) as *const u32) }
}

fn wr(off: usize, v: u32) {
    // SAFETY: as in `rd`.
    unsafe { write_volatile((BASE + off) as *mut u32, v) }
}

fn mac_read(reg: u32) -> u32 {
    wr(MAC_CSR_CMD, 0xc000_0000 | reg);
    while rd(MAC_CSR_CMD) & 0x8000_0000 != 0 {}
    rd(MAC_CSR_DATA)
}

fn mac_write(reg: u32, v: u32) {
    wr(MAC_CSR_DATA, v);
    wr(MAC_CSR_CMD, 0x8000_0000 | reg);
    while rd(MAC_CSR_CMD) & 0x8000_0000 != 0 {}
}

/// Why the chip could not be brought up.
#[derive(Debug, defmt::Format)]
pub enum InitError {
    /// BYTE_TEST did not read 0x87654321: no LAN9118 at [`BASE`].
    NotFound(u32),
}

/// The driver. Owns the chip; one instance per board.
pub struct Lan9118 {
    mac: [u8; 6],
    rx_buf: [u8; MTU + 4],
    tx_buf: [u8; MTU],
}

impl Lan9118 {
    /// Reset the chip and start RX and TX. `mac` overrides the address QEMU
    /// loaded from the emulated EEPROM (`-nic ...,mac=`).
    pub fn new(mac: Option<[u8; 6]>) -> Result<Self, InitError> {
        let bt = rd(BYTE_TEST);
        if bt != 0x8765_4321 {
            return Err(InitError::NotFound(bt));
        }
        wr(HW_CFG, 1); // soft reset; QEMU resets synchronously
        while rd(HW_CFG) & 1 != 0 {}
        let mac = match mac {
            Some(m) => {
                mac_write(MAC_ADDRL, u32::from_le_bytes([m[0], m[1], m[2], m[3]]));
                mac_write(MAC_ADDRH, u32::from(m[4]) | u32::from(m[5]) << 8);
                m
            }
            None => {
                let l = mac_read(MAC_ADDRL).to_le_bytes();
                let h = mac_read(MAC_ADDRH).to_le_bytes();
                [l[0], l[1], l[2], l[3], h[0], h[1]]
            }
        };
        let cr = mac_read(MAC_CR) & !MAC_CR_PRMS;
        mac_write(MAC_CR, cr | MAC_CR_TXEN | MAC_CR_RXEN);
        wr(TX_CFG, TX_CFG_ON);
        wr(FIFO_INT, 0x4800_0000); // RX status level 0: interrupt per frame
        wr(INT_STS, 0xffff_ffff);
        wr(INT_EN, INT_RSFL);
        wr(IRQ_CFG, IRQ_CFG_ON);
        defmt::info!("lan9118: id {=u32:08x}, mac {=[u8]:02x}", rd(ID_REV), mac);
        Ok(Self {
            mac,
            rx_buf: [0; MTU + 4],
            tx_buf: [0; MTU],
        })
    }

    fn rx_pending() -> bool {
        (rd(RX_FIFO_INF) >> 16) & 0xff != 0
    }

    fn tx_free() -> usize {
        (rd(TX_FIFO_INF) & 0xffff) as usize
    }

    /// Pop one frame into `buf`; returns its length without FCS, or None
    /// when the frame was bad or too large (it is read out and dropped).
    fn pop_frame(buf: &mut [u8]) -> Option<usize> {
        let status = rd(RX_STATUS_FIFO);
        let len = ((status >> 16) & 0x3fff) as usize; // includes the FCS
        let words = len.div_ceil(4);
        let fits = len <= buf.len() && len >= 14 + 4;
        for i in 0..words {
            let w = rd(RX_DATA_FIFO).to_le_bytes();
            if fits {
                for (j, b) in w.iter().enumerate() {
                    if let Some(slot) = buf.get_mut(i * 4 + j) {
                        *slot = *b;
                    }
                }
            }
        }
        // bit 15: error summary
        if !fits || status & (1 << 15) != 0 {
            defmt::warn!("lan9118: dropped rx frame, status {=u32:08x}", status);
            return None;
        }
        Some(len - 4)
    }

    fn push_frame(frame: &[u8]) {
        let len = frame.len() as u32;
        // command A: first + last segment, buffer size; command B: tag = len, frame length
        wr(TX_DATA_FIFO, (1 << 13) | (1 << 12) | len);
        wr(TX_DATA_FIFO, (len << 16) | len);
        let mut chunks = frame.chunks_exact(4);
        for c in &mut chunks {
            wr(TX_DATA_FIFO, u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 4];
            w[..rest.len()].copy_from_slice(rest);
            wr(TX_DATA_FIFO, u32::from_le_bytes(w));
        }
    }
}

/// The chip's free-running 25 MHz counter. QEMU derives it from the virtual
/// clock, so under `-icount shift=0` one count is 40 guest instructions.
pub fn free_run() -> u32 {
    rd(FREE_RUN)
}

/// Nanoseconds per [`free_run`] count.
pub const FREE_RUN_NS: u32 = 40;

/// Interrupt handler body: acknowledge and wake whoever waits.
pub fn on_interrupt() {
    let sts = rd(INT_STS);
    wr(INT_STS, sts);
    if sts & INT_RSFL != 0 {
        RX_WAKER.wake();
    }
    if sts & INT_TDFA != 0 {
        wr(INT_EN, rd(INT_EN) & !INT_TDFA);
        TX_WAKER.wake();
    }
}

/// A received frame, read out of the FIFO when consumed.
pub struct RxToken<'a>(&'a mut [u8; MTU + 4]);
/// Permission to send one frame.
pub struct TxToken<'a>(&'a mut [u8; MTU]);

impl embassy_net_driver::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, f: F) -> R {
        let n = Lan9118::pop_frame(self.0).unwrap_or(0);
        // A dropped frame is handed on empty: the stack discards it.
        f(self.0.get_mut(..n).unwrap_or_default())
    }
}

impl embassy_net_driver::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let len = len.min(MTU);
        let buf = &mut self.0[..len];
        let r = f(buf);
        Lan9118::push_frame(buf);
        r
    }
}

impl embassy_net_driver::Driver for Lan9118 {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, cx: &mut Context<'_>) -> Option<(RxToken<'_>, TxToken<'_>)> {
        RX_WAKER.register(cx.waker());
        if !Self::rx_pending() || Self::tx_free() < MTU + 8 {
            return None;
        }
        let Lan9118 { rx_buf, tx_buf, .. } = self;
        Some((RxToken(rx_buf), TxToken(tx_buf)))
    }

    fn transmit(&mut self, cx: &mut Context<'_>) -> Option<TxToken<'_>> {
        if Self::tx_free() >= MTU + 8 {
            return Some(TxToken(&mut self.tx_buf));
        }
        TX_WAKER.register(cx.waker());
        // interrupt when ~1.5 KiB of FIFO is free again (level in 64-byte units)
        wr(FIFO_INT, (rd(FIFO_INT) & 0x00ff_ffff) | (24 << 24));
        wr(INT_EN, rd(INT_EN) | INT_TDFA);
        None
    }

    fn link_state(&mut self, _cx: &mut Context<'_>) -> LinkState {
        // QEMU's PHY reports link up as long as the netdev exists.
        LinkState::Up
    }

    fn capabilities(&self) -> Capabilities {
        let mut c = Capabilities::default();
        c.max_transmission_unit = MTU;
        c.max_burst_size = Some(1);
        c
    }

    fn hardware_address(&self) -> HardwareAddress {
        HardwareAddress::Ethernet(self.mac)
    }
}
