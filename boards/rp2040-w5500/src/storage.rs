//! Where the relay's persistent store lives: the last two 4 KiB sectors of
//! the board's 2 MiB QSPI flash, kept out of the image by memory.x.
//! relay-fw's [`FlashStore`](relay_fw::flash_store::FlashStore) does the
//! rest (8-byte records: 512 boots per erase, so the sector's
//! 100 000-cycle endurance lasts 51 million boots).
//!
//! Flash writes stall execute-in-place; they happen only at boot, before the
//! network and console tasks run.
use relay_fw::flash_store::FlashLayout;

/// Flash size of the W5500-EVB-Pico.
pub const FLASH_SIZE: usize = 2 * 1024 * 1024;
const SECTOR: u32 = 4096;

/// Config sector at 0x101F_E000, counter sector at 0x101F_F000.
pub const LAYOUT: FlashLayout =
    FlashLayout { config: FLASH_SIZE as u32 - 2 * SECTOR, counter: FLASH_SIZE as u32 - SECTOR, counter_len: SECTOR };
