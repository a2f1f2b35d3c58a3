//! Bounded ncfrag reassembly for extended netconsole.
//!
//! `SLOTS` records can be in flight at once, each at most `MAX` body bytes.
//! Everything is preallocated; nothing allocates. A record that does not
//! complete within the timeout is dropped ([`Reassembler::poll`]); when all
//! slots are busy the oldest record is evicted for the new one. Duplicates
//! and overlapping fragments are refused and counted, never merged; so is a
//! late copy of a fragment whose record already completed (as long as its
//! slot has not been reused).
//!
//! One reassembler serves one sender: keep one per source address.

use super::ext::{ExtRepr, Frag};
use super::MAX_RELEASE_LEN;
use crate::time::{Duration, Instant};

/// Most fragments one record may arrive in. The kernel sends ~940-byte
/// fragments, so this covers bodies far beyond printk's 8 KiB buffer while
/// refusing a sender that dribbles bytes.
pub const MAX_FRAGMENTS: usize = 16;

/// Why a fragment was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReassemblyError {
    /// `offset`/`total` do not describe a non-empty piece of the body.
    FragOutOfRange {
        /// The fragment's offset.
        offset: u32,
        /// Its payload length.
        len: usize,
        /// The claimed body length.
        total: u32,
    },
    /// The record is larger than this reassembler's `MAX`.
    TooLarge {
        /// The claimed body length.
        total: u32,
        /// The largest body this reassembler holds.
        max: usize,
    },
    /// This exact fragment was already received.
    Duplicate {
        /// The fragment's offset.
        offset: u32,
    },
    /// The fragment overlaps one already received with different bounds or
    /// different bytes.
    Overlap {
        /// The fragment's offset.
        offset: u32,
        /// Its payload length.
        len: usize,
    },
    /// The fragment's total differs from the record's earlier fragments.
    TotalMismatch {
        /// Total of the first fragment.
        expected: u32,
        /// Total of this one.
        got: u32,
    },
    /// The record arrived in more than [`MAX_FRAGMENTS`] pieces.
    TooManyFragments,
    /// The release prefix exceeds [`MAX_RELEASE_LEN`].
    ReleaseTooLong,
}

impl core::fmt::Display for ReassemblyError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            ReassemblyError::FragOutOfRange { offset, len, total } => write!(
                f,
                "ncfrag offset {offset} + {len} bytes outside total {total}"
            ),
            ReassemblyError::TooLarge { total, max } => {
                write!(f, "record of {total} bytes exceeds reassembly limit {max}")
            }
            ReassemblyError::Duplicate { offset } => {
                write!(f, "duplicate fragment at offset {offset}")
            }
            ReassemblyError::Overlap { offset, len } => {
                write!(f, "fragment at {offset} (+{len}) overlaps received data")
            }
            ReassemblyError::TotalMismatch { expected, got } => {
                write!(f, "fragment total {got} differs from {expected}")
            }
            ReassemblyError::TooManyFragments => {
                write!(f, "more than {MAX_FRAGMENTS} fragments")
            }
            ReassemblyError::ReleaseTooLong => write!(f, "release prefix too long"),
        }
    }
}

impl core::error::Error for ReassemblyError {}

/// What the reassembler has done so far (monotonic counters).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReassemblyStats {
    /// Records completed from fragments.
    pub completed: u64,
    /// Fragments refused as exact duplicates.
    pub duplicates: u64,
    /// Fragments refused as overlapping.
    pub overlaps: u64,
    /// Fragments refused for any other reason (range, size, total, count).
    pub refused: u64,
    /// Incomplete records dropped to make room for a new one.
    pub evicted: u64,
    /// Incomplete records dropped at their timeout.
    pub expired: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Key {
    release: [u8; MAX_RELEASE_LEN],
    release_len: Option<u8>,
    prefix: u32,
    seq: u64,
    ts_usec: u64,
    flags: u8,
}

impl Key {
    fn of(repr: &ExtRepr<'_>) -> Option<Key> {
        let mut release = [0u8; MAX_RELEASE_LEN];
        let release_len = match repr.release {
            Some(r) => {
                release.get_mut(..r.len())?.copy_from_slice(r);
                Some(u8::try_from(r.len()).ok()?)
            }
            None => None,
        };
        Some(Key {
            release,
            release_len,
            prefix: repr.prefix,
            seq: repr.seq,
            ts_usec: repr.ts_usec,
            flags: repr.flags,
        })
    }

    fn release(&self) -> Option<&[u8]> {
        self.release.get(..usize::from(self.release_len?))
    }
}

#[derive(Clone, Debug)]
struct Slot<const MAX: usize> {
    busy: bool,
    /// Free, but remembers the record it completed, so that a late copy of
    /// one of its fragments is a duplicate rather than a new record.
    done: bool,
    key: Key,
    total: u32,
    received: usize,
    started: Instant,
    /// `(offset, len)` of each fragment received.
    ranges: [(usize, usize); MAX_FRAGMENTS],
    n_ranges: usize,
    buf: [u8; MAX],
}

impl<const MAX: usize> Slot<MAX> {
    const EMPTY: Self = Slot {
        busy: false,
        done: false,
        key: Key {
            release: [0; MAX_RELEASE_LEN],
            release_len: None,
            prefix: 0,
            seq: 0,
            ts_usec: 0,
            flags: 0,
        },
        total: 0,
        received: 0,
        started: Instant(0),
        ranges: [(0, 0); MAX_FRAGMENTS],
        n_ranges: 0,
        buf: [0; MAX],
    };

    fn ranges(&self) -> &[(usize, usize)] {
        self.ranges.get(..self.n_ranges).unwrap_or(&[])
    }
}

/// Bounded, allocation-free ncfrag reassembler: `SLOTS` records in flight,
/// each up to `MAX` body bytes.
#[derive(Clone, Debug)]
pub struct Reassembler<const SLOTS: usize, const MAX: usize> {
    slots: [Slot<MAX>; SLOTS],
    timeout: Duration,
    stats: ReassemblyStats,
}

impl<const SLOTS: usize, const MAX: usize> Reassembler<SLOTS, MAX> {
    /// An empty reassembler that drops incomplete records after `timeout`.
    pub const fn new(timeout: Duration) -> Self {
        Reassembler {
            slots: [Slot::<MAX>::EMPTY; SLOTS],
            timeout,
            stats: ReassemblyStats {
                completed: 0,
                duplicates: 0,
                overlaps: 0,
                refused: 0,
                evicted: 0,
                expired: 0,
            },
        }
    }

    /// Counters since creation.
    pub fn stats(&self) -> ReassemblyStats {
        self.stats
    }

    /// Records currently waiting for fragments.
    pub fn in_flight(&self) -> usize {
        self.slots.iter().filter(|s| s.busy).count()
    }

    /// Take one decoded datagram. Returns the whole record when `repr`
    /// completes one (its `frag` is `None` and `payload` the whole body),
    /// `repr` itself when it was not a fragment, and `None` while fragments
    /// are missing.
    pub fn push<'s>(
        &'s mut self,
        repr: &ExtRepr<'s>,
        now: Instant,
    ) -> Result<Option<ExtRepr<'s>>, ReassemblyError> {
        self.poll(now);
        let Some(frag) = repr.frag else {
            return Ok(Some(*repr));
        };
        match self.insert(repr, frag, now) {
            Ok(Some(i)) => {
                self.stats.completed = self.stats.completed.saturating_add(1);
                let slot = self.slots.get(i).ok_or(ReassemblyError::TooManyFragments)?;
                let total = usize::try_from(slot.total).unwrap_or(usize::MAX);
                Ok(Some(ExtRepr {
                    release: slot.key.release(),
                    prefix: slot.key.prefix,
                    seq: slot.key.seq,
                    ts_usec: slot.key.ts_usec,
                    flags: slot.key.flags,
                    frag: None,
                    payload: slot.buf.get(..total).unwrap_or(&[]),
                }))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                let counter = match e {
                    ReassemblyError::Duplicate { .. } => &mut self.stats.duplicates,
                    ReassemblyError::Overlap { .. } => &mut self.stats.overlaps,
                    _ => &mut self.stats.refused,
                };
                *counter = counter.saturating_add(1);
                Err(e)
            }
        }
    }

    /// Store one fragment; returns the slot index when its record is complete.
    fn insert(
        &mut self,
        repr: &ExtRepr<'_>,
        frag: Frag,
        now: Instant,
    ) -> Result<Option<usize>, ReassemblyError> {
        let len = repr.payload.len();
        let offset = usize::try_from(frag.offset).unwrap_or(usize::MAX);
        let total = usize::try_from(frag.total).unwrap_or(usize::MAX);
        let end = offset.checked_add(len).filter(|&e| e <= total && len > 0);
        let Some(end) = end else {
            return Err(ReassemblyError::FragOutOfRange {
                offset: frag.offset,
                len,
                total: frag.total,
            });
        };
        if total > MAX {
            return Err(ReassemblyError::TooLarge {
                total: frag.total,
                max: MAX,
            });
        }
        let key = Key::of(repr).ok_or(ReassemblyError::ReleaseTooLong)?;
        let index = match self.slots.iter().position(|s| s.busy && s.key == key) {
            Some(i) => i,
            None if self.slots.iter().any(|s| s.done && s.key == key) => {
                return Err(ReassemblyError::Duplicate {
                    offset: frag.offset,
                });
            }
            None => self.claim(key, frag.total, now)?,
        };
        let slot = self
            .slots
            .get_mut(index)
            .ok_or(ReassemblyError::TooManyFragments)?;
        if slot.total != frag.total {
            return Err(ReassemblyError::TotalMismatch {
                expected: slot.total,
                got: frag.total,
            });
        }
        for &(o, l) in slot.ranges() {
            let o_end = o.saturating_add(l);
            if offset < o_end && o < end {
                let same =
                    o == offset && l == len && slot.buf.get(offset..end) == Some(repr.payload);
                return Err(if same {
                    ReassemblyError::Duplicate {
                        offset: frag.offset,
                    }
                } else {
                    ReassemblyError::Overlap {
                        offset: frag.offset,
                        len,
                    }
                });
            }
        }
        let range = slot
            .ranges
            .get_mut(slot.n_ranges)
            .ok_or(ReassemblyError::TooManyFragments)?;
        *range = (offset, len);
        slot.buf
            .get_mut(offset..)
            .and_then(|b| b.get_mut(..repr.payload.len()))
            .ok_or(ReassemblyError::TooLarge {
                total: frag.total,
                max: MAX,
            })?
            .copy_from_slice(repr.payload);
        slot.n_ranges = slot.n_ranges.saturating_add(1);
        // Ranges are disjoint, so the sum reaches `total` exactly when full.
        slot.received = slot.received.saturating_add(len);
        if slot.received == total {
            slot.busy = false;
            slot.done = true;
            return Ok(Some(index));
        }
        Ok(None)
    }

    /// A free slot for a new record, evicting the oldest when none is free.
    fn claim(&mut self, key: Key, total: u32, now: Instant) -> Result<usize, ReassemblyError> {
        // Unused slots first, then ones that only remember a completed record.
        let free = self
            .slots
            .iter()
            .position(|s| !s.busy && !s.done)
            .or_else(|| self.slots.iter().position(|s| !s.busy));
        let index = match free {
            Some(i) => i,
            None => {
                let oldest = self
                    .slots
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, s)| s.started)
                    .map(|(i, _)| i)
                    .ok_or(ReassemblyError::TooLarge { total, max: MAX })?; // SLOTS == 0
                self.stats.evicted = self.stats.evicted.saturating_add(1);
                oldest
            }
        };
        let slot = self
            .slots
            .get_mut(index)
            .ok_or(ReassemblyError::TooLarge { total, max: MAX })?;
        slot.busy = true;
        slot.done = false;
        slot.key = key;
        slot.total = total;
        slot.received = 0;
        slot.started = now;
        slot.n_ranges = 0;
        Ok(index)
    }

    /// Drop records whose timeout has passed; returns how many.
    pub fn poll(&mut self, now: Instant) -> usize {
        let timeout = self.timeout;
        let mut dropped = 0usize;
        for slot in self.slots.iter_mut().filter(|s| s.busy) {
            if now >= slot.started.saturating_add(timeout) {
                slot.busy = false;
                slot.done = false;
                dropped = dropped.saturating_add(1);
            }
        }
        self.stats.expired = self
            .stats
            .expired
            .saturating_add(u64::try_from(dropped).unwrap_or(u64::MAX));
        dropped
    }

    /// When the next incomplete record will time out, if any is in flight.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.slots
            .iter()
            .filter(|s| s.busy)
            .map(|s| s.started.saturating_add(self.timeout))
            .min()
    }
}
