//! relay-fw's flash store (the boot counter and config of the boards with
//! their own NOR flash: nucleo-h743zi, rp2040-w5500), on a model of NOR
//! flash with the rules that matter: a write can only clear bits, must be
//! aligned to the write unit, and only an erase sets bytes back to 0xFF.
//! Flash with ECC over a wide word (an STM32H7's 32 bytes) refuses to
//! program a word twice between erases. A "reboot" is a new store over the
//! same flash.
use embedded_storage::nor_flash::{ErrorType, NorFlash, NorFlashErrorKind, ReadNorFlash};
use relay_fw::flash_store::{FlashLayout, FlashStore};

const ERASE: usize = 4096;

/// NOR flash in RAM; `W` is the write unit (1 on an RP2040, 32 on an STM32H7).
struct Nor<const W: usize> {
    mem: Vec<u8>,
    erases: usize,
    /// Cut the next write after this many bytes (a power cut).
    tear_after: Option<usize>,
}

impl<const W: usize> Nor<W> {
    fn new(len: usize) -> Self {
        Self { mem: vec![0xFF; len], erases: 0, tear_after: None }
    }
}

impl<const W: usize> ErrorType for Nor<W> {
    type Error = NorFlashErrorKind;
}

impl<const W: usize> ReadNorFlash for Nor<W> {
    const READ_SIZE: usize = 1;
    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        let at = offset as usize;
        let src = self.mem.get(at..at + bytes.len()).ok_or(NorFlashErrorKind::OutOfBounds)?;
        bytes.copy_from_slice(src);
        Ok(())
    }
    fn capacity(&self) -> usize {
        self.mem.len()
    }
}

impl<const W: usize> NorFlash for Nor<W> {
    const WRITE_SIZE: usize = W;
    const ERASE_SIZE: usize = ERASE;
    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        let at = offset as usize;
        if at % W != 0 || bytes.len() % W != 0 {
            return Err(NorFlashErrorKind::NotAligned);
        }
        let n = self.tear_after.take().unwrap_or(bytes.len()).min(bytes.len());
        let dst = self.mem.get_mut(at..at + bytes.len()).ok_or(NorFlashErrorKind::OutOfBounds)?;
        if W > 1 && dst.chunks(W).any(|word| word.iter().any(|&b| b != 0xFF)) {
            // ECC words are programmed once per erase.
            return Err(NorFlashErrorKind::Other);
        }
        for (d, s) in dst.iter_mut().zip(bytes).take(n) {
            *d &= *s;
        }
        Ok(())
    }
    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        let (from, to) = (from as usize, to as usize);
        if from % ERASE != 0 || to % ERASE != 0 {
            return Err(NorFlashErrorKind::NotAligned);
        }
        self.mem.get_mut(from..to).ok_or(NorFlashErrorKind::OutOfBounds)?.fill(0xFF);
        self.erases += 1;
        Ok(())
    }
}

const LAYOUT: FlashLayout = FlashLayout { config: 0, counter: ERASE as u32, counter_len: ERASE as u32 };

/// Boots `n` times, each with a new store over the same flash.
fn boots<const W: usize>(flash: Nor<W>, n: usize) -> (Vec<Option<u32>>, Nor<W>) {
    let mut store = FlashStore::new(flash, LAYOUT);
    let mut seen = Vec::new();
    for _ in 0..n {
        seen.push(store.next_boot_counter());
        store = FlashStore::new(store.flash, LAYOUT);
    }
    (seen, store.flash)
}

#[test]
fn counts_every_boot_across_sector_erases_with_byte_writes() {
    // 8-byte records: 512 per 4 KiB sector, so 1500 boots erase it twice.
    let (seen, flash) = boots(Nor::<1>::new(2 * ERASE), 1500);
    let want: Vec<Option<u32>> = (1..=1500).map(Some).collect();
    assert_eq!(seen, want);
    assert_eq!(flash.erases, 2, "the sector is erased only when full");
}

#[test]
fn counts_every_boot_with_an_stm32h7_flash_word() {
    // 32-byte records (the H7 writes whole flash words): 128 per sector.
    let (seen, flash) = boots(Nor::<32>::new(2 * ERASE), 300);
    let want: Vec<Option<u32>> = (1..=300).map(Some).collect();
    assert_eq!(seen, want);
    assert_eq!(flash.erases, 2);
}

#[test]
fn a_record_torn_by_a_power_cut_never_makes_a_boot_counter_repeat() {
    let (seen, mut flash) = boots(Nor::<32>::new(2 * ERASE), 4);
    assert_eq!(seen, [Some(1), Some(2), Some(3), Some(4)]);
    // Boot 5 loses power two bytes into its record: it never ran, and its
    // flash word is neither erased nor valid (nor programmable again).
    flash.tear_after = Some(2);
    let (_, flash) = boots(flash, 1);
    // The torn record is skipped: every later boot gets a new, higher
    // counter, across the next erase too.
    let (seen, flash) = boots(flash, 300);
    let want: Vec<Option<u32>> = (5..305).map(Some).collect();
    assert_eq!(seen, want);
    assert_eq!(flash.erases, 2);
}

#[test]
fn the_counter_wraps_without_failing() {
    let mut flash = Nor::<1>::new(2 * ERASE);
    let at = ERASE;
    flash.mem[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    flash.mem[at + 4..at + 8].copy_from_slice(&0u32.to_le_bytes());
    let (seen, _) = boots(flash, 2);
    assert_eq!(seen, [Some(0), Some(1)]);
}

#[test]
fn a_flash_that_cannot_be_written_gives_no_counter() {
    // Too small for the layout: reads fail, and the store says so.
    let (seen, _) = boots(Nor::<1>::new(ERASE), 1);
    assert_eq!(seen, [None]);
}

#[test]
fn config_is_read_only_when_the_sector_holds_a_blob() {
    let mut store = FlashStore::new(Nor::<1>::new(2 * ERASE), LAYOUT);
    let mut buf = [0u8; 64];
    assert_eq!(store.load_config(&mut buf), None, "erased flash holds no config");
    store.flash.mem[..4].copy_from_slice(&relay_fw::config::MAGIC);
    assert_eq!(store.load_config(&mut buf), Some(64));
    assert_eq!(buf[..4], relay_fw::config::MAGIC);
}
