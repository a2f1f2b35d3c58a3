//! Where the relay's persistent store lives in the STM32H743's own flash:
//! bank 2's top two 128 KiB sectors, kept out of the image by memory.x.
//! relay-fw's [`FlashStore`](relay_fw::flash_store::FlashStore) does the
//! rest (32-byte records, the H7's flash word: 4096 boots per erase, so the
//! sector's 10 000-cycle endurance lasts 40 million boots).
use relay_fw::flash_store::FlashLayout;

/// Config sector at 0x081C_0000, counter sector at 0x081E_0000.
pub const LAYOUT: FlashLayout = FlashLayout { config: 0x1C_0000, counter: 0x1E_0000, counter_len: 128 * 1024 };
