//! Persistent storage in a board's own NOR flash, through the
//! `embedded-storage` traits every embassy HAL implements: two erase units
//! kept out of the image by the board's `memory.x`.
//!
//! - Config unit: an optional relay-fw configuration blob, flashed with
//!   probe-rs. Erased flash (no magic) means "none".
//! - Counter unit: a log of records `value, !value` (8 bytes, or the flash's
//!   write unit when larger: 32 on an STM32H7), padded with 0xFF. Boot n
//!   writes record n; the newest valid record is the counter. The unit is
//!   erased only when full, so its endurance is multiplied by the records it
//!   holds.
//!
//! A record torn by a power cut reads as neither erased nor valid: it is
//! skipped (never written over, which NOR cannot do), so the counter still
//! moves forward. Reusing a boot counter would make the bridge refuse the
//! relay's next reports as replays.
use embedded_storage::nor_flash::NorFlash;

/// Where the two units are, as offsets from the start of the flash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlashLayout {
    /// Start of the config unit.
    pub config: u32,
    /// Start of the counter unit.
    pub counter: u32,
    /// Size of the counter unit (a multiple of the flash's erase size).
    pub counter_len: u32,
}

/// The largest record (an STM32H7's flash word is 32 bytes).
const MAX_RECORD: usize = 64;

/// A board's flash as the relay's persistent store.
pub struct FlashStore<F> {
    /// The flash driver, for whatever else the board reads (a unique id).
    pub flash: F,
    layout: FlashLayout,
}

/// What one counter record holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Record {
    Erased,
    Valid(u32),
    /// Torn or otherwise garbled.
    Bad,
}

impl<F: NorFlash> FlashStore<F> {
    /// Bytes per record.
    const RECORD: usize = if F::WRITE_SIZE > 8 { F::WRITE_SIZE } else { 8 };

    /// The store over `flash` with `layout`.
    pub fn new(flash: F, layout: FlashLayout) -> Self {
        Self { flash, layout }
    }

    fn records(&self) -> u32 {
        self.layout.counter_len / Self::RECORD as u32
    }

    fn record(&mut self, i: u32) -> Result<Record, F::Error> {
        let mut b = [0u8; MAX_RECORD];
        let rec = b.get_mut(..Self::RECORD).unwrap_or(&mut []);
        self.flash.read(self.layout.counter + i * Self::RECORD as u32, rec)?;
        if rec.iter().all(|&x| x == 0xFF) {
            return Ok(Record::Erased);
        }
        let word = |r: &[u8], at: usize| r.get(at..at + 4).and_then(|w| w.try_into().ok()).map(u32::from_le_bytes);
        Ok(match (word(rec, 0), word(rec, 4)) {
            (Some(v), Some(inv)) if v == !inv && rec.iter().skip(8).all(|&x| x == 0xFF) => Record::Valid(v),
            _ => Record::Bad,
        })
    }

    /// Increments the boot counter, persists it, and returns the new value;
    /// None when the flash cannot be read or written.
    pub fn next_boot_counter(&mut self) -> Option<u32> {
        if Self::RECORD > MAX_RECORD || self.records() == 0 {
            return None;
        }
        // Records are written in order: the newest valid one is the last
        // valid one before the first erased slot.
        let mut last = None;
        let mut free = None;
        for i in 0..self.records() {
            match self.record(i).ok()? {
                Record::Valid(v) => last = Some(v),
                Record::Bad => {}
                Record::Erased => {
                    free = Some(i);
                    break;
                }
            }
        }
        let next = last.unwrap_or(0).wrapping_add(1);
        let slot = match free {
            Some(i) => i,
            None => {
                let from = self.layout.counter;
                self.flash.erase(from, from + self.layout.counter_len).ok()?;
                0
            }
        };
        let mut rec = [0xFFu8; MAX_RECORD];
        rec[..4].copy_from_slice(&next.to_le_bytes());
        rec[4..8].copy_from_slice(&(!next).to_le_bytes());
        let rec = rec.get(..Self::RECORD)?;
        self.flash.write(self.layout.counter + slot * Self::RECORD as u32, rec).ok()?;
        Some(next)
    }

    /// Copies the config unit into `buf` when it starts with relay-fw's
    /// config magic (relay-fw then checks the blob fully); None when erased.
    pub fn load_config(&mut self, buf: &mut [u8]) -> Option<usize> {
        self.flash.read(self.layout.config, buf).ok()?;
        (buf.get(..4) == Some(&crate::config::MAGIC[..])).then_some(buf.len())
    }
}

#[cfg(feature = "firmware")]
impl<F: NorFlash> crate::board::PersistentStore for FlashStore<F> {
    fn next_boot_counter(&mut self) -> Option<u32> {
        FlashStore::next_boot_counter(self)
    }

    fn load_config(&mut self, buf: &mut [u8]) -> Option<usize> {
        FlashStore::load_config(self, buf)
    }
}
