//! Persistent storage in the STM32H743's own flash (bank 2, top two
//! sectors, kept out of the image by memory.x).
//!
//! - Config sector (0x081C_0000): an optional relay-fw config blob, flashed
//!   with probe-rs (README). Erased flash (no magic) means "none".
//! - Counter sector (0x081E_0000): a log of 32-byte records (the H7's flash
//!   word), each `value, !value`. Boot n writes record n; the newest valid
//!   record is the counter. The sector is erased once every 4096 boots, so
//!   its 10 000-cycle endurance lasts 40 million boots.
use embassy_stm32::flash::{Blocking, Flash};
use relay_fw::board::PersistentStore;

const CONFIG_OFFSET: u32 = 0x1C_0000;
const COUNTER_OFFSET: u32 = 0x1E_0000;
const SECTOR: u32 = 128 * 1024;
const RECORD: u32 = 32;
const RECORDS: u32 = SECTOR / RECORD;

/// The board's flash.
pub struct FlashStore {
    /// Blocking flash driver (used only at boot, before the network runs).
    pub flash: Flash<'static, Blocking>,
}

impl FlashStore {
    /// Record `i`: Some(value) if valid, None if erased or torn.
    fn record(&mut self, i: u32) -> Option<u32> {
        let mut b = [0u8; 8];
        self.flash.blocking_read(COUNTER_OFFSET + i * RECORD, &mut b).ok()?;
        let v = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let inv = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        (v == !inv).then_some(v)
    }
}

impl PersistentStore for FlashStore {
    fn next_boot_counter(&mut self) -> Option<u32> {
        // The newest record is the last valid one before the first erased slot.
        let mut last = None;
        let mut free = RECORDS;
        for i in 0..RECORDS {
            match self.record(i) {
                Some(v) => last = Some(v),
                None => {
                    free = i;
                    break;
                }
            }
        }
        let next = last.unwrap_or(0).wrapping_add(1);
        if free == RECORDS {
            self.flash.blocking_erase(COUNTER_OFFSET, COUNTER_OFFSET + SECTOR).ok()?;
            free = 0;
        }
        let mut rec = [0xffu8; RECORD as usize];
        rec[..4].copy_from_slice(&next.to_le_bytes());
        rec[4..8].copy_from_slice(&(!next).to_le_bytes());
        self.flash.blocking_write(COUNTER_OFFSET + free * RECORD, &rec).ok()?;
        Some(next)
    }

    fn load_config(&mut self, buf: &mut [u8]) -> Option<usize> {
        self.flash.blocking_read(CONFIG_OFFSET, buf).ok()?;
        // relay-fw checks the blob fully; erased flash is simply "none".
        (buf.get(..4) == Some(&relay_fw::config::MAGIC[..])).then_some(buf.len())
    }
}
