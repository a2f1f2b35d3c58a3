//! Persistent storage in the last two 4 KiB sectors of the board's 2 MiB
//! QSPI flash (kept out of the image by memory.x).
//!
//! - Config sector (0x101F_E000): an optional relay-fw config blob, flashed
//!   with probe-rs (README). Erased flash (no magic) means "none".
//! - Counter sector (0x101F_F000): a log of 8-byte records `value, !value`.
//!   Boot n writes record n; the newest valid record is the counter. The
//!   sector is erased once every 512 boots (100 000-cycle endurance: 51 million boots).
//!
//! Flash writes stall execute-in-place; they happen only at boot, before the
//! network and console tasks run.
use embassy_rp::flash::{Blocking, Flash};
use embassy_rp::peripherals::FLASH;
use relay_fw::board::PersistentStore;

/// Flash size of the W5500-EVB-Pico.
pub const FLASH_SIZE: usize = 2 * 1024 * 1024;
const CONFIG_OFFSET: u32 = FLASH_SIZE as u32 - 2 * SECTOR;
const COUNTER_OFFSET: u32 = FLASH_SIZE as u32 - SECTOR;
const SECTOR: u32 = 4096;
const RECORD: u32 = 8;
const RECORDS: u32 = SECTOR / RECORD;

/// The board's flash.
pub struct FlashStore {
    /// Blocking flash driver.
    pub flash: Flash<'static, FLASH, Blocking, FLASH_SIZE>,
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
        let mut rec = [0u8; RECORD as usize];
        rec[..4].copy_from_slice(&next.to_le_bytes());
        rec[4..].copy_from_slice(&(!next).to_le_bytes());
        self.flash.blocking_write(COUNTER_OFFSET + free * RECORD, &rec).ok()?;
        Some(next)
    }

    fn load_config(&mut self, buf: &mut [u8]) -> Option<usize> {
        self.flash.blocking_read(CONFIG_OFFSET, buf).ok()?;
        (buf.get(..4) == Some(&relay_fw::config::MAGIC[..])).then_some(buf.len())
    }
}
