//! Linux netconsole, byte for byte as kernel 6.1 puts it on the wire.
//!
//! Two formats share UDP port 6666 by convention:
//!
//! - **Extended** (`netconsole=+...`, [`ext`]): one printk record per datagram,
//!   `[<release>,]<prefix>,<seq>,<ts_usec>,<flags>[,ncfrag=<off>/<total>];<body>`
//!   where the body is the record's text (non-printable bytes written as
//!   `\xNN`, see [`escape`]), a `\n`, and dictionary lines ` KEY=VALUE\n`.
//!   A record too long for one datagram is split into fragments
//!   ([`MAX_PRINT_CHUNK`] bytes each at most) whose `ncfrag` field gives the
//!   fragment's byte offset in the body and the body's total length;
//!   [`reassembly`] puts them back together.
//! - **Basic** ([`basic`]): the console text exactly as a serial console would
//!   print it, cut into [`MAX_PRINT_CHUNK`]-byte pieces with no framing at all.
//!
//! The shape follows smoltcp's `wire` module: [`ExtPacket`] is a checked, typed
//! view over a datagram's bytes, [`ExtRepr`] the parsed, zero-copy value, and
//! [`ExtRecord`] the encoder from a raw printk record to datagrams.
//! Nothing here allocates or panics; every refusal is a typed error.

pub mod basic;
pub mod escape;
pub mod ext;
pub mod reassembly;

pub use ext::{DictEntries, ExtDatagrams, ExtPacket, ExtRecord, ExtRepr, Frag};
pub use reassembly::{Reassembler, ReassemblyError, ReassemblyStats};

/// Largest UDP payload netconsole sends (`MAX_PRINT_CHUNK` in
/// `drivers/net/netconsole.c`).
pub const MAX_PRINT_CHUNK: usize = 1000;

/// Size of printk's buffer for one extended record, header included
/// (`CONSOLE_EXT_LOG_MAX` in `include/linux/printk.h`); longer bodies are cut
/// short by the kernel and by [`ExtRecord`] alike.
pub const CONSOLE_EXT_LOG_MAX: usize = 8192;

/// Longest kernel release string (`__NEW_UTS_LEN` in `include/uapi/linux/utsname.h`).
pub const MAX_RELEASE_LEN: usize = 64;

/// Why a header field was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HeaderField {
    /// No `<prefix>,<seq>,<ts_usec>,<flags>` run was found before the `;`.
    Layout,
    /// `<prefix>` is not a decimal `u32` (or has a leading zero).
    Prefix,
    /// `<seq>` is not a decimal `u64` (or has a leading zero).
    Seq,
    /// `<ts_usec>` is not a decimal `u64` (or has a leading zero).
    Timestamp,
    /// `ncfrag=` is not `<offset>/<total>` in decimal `u32`s, or appears twice.
    Ncfrag,
    /// An extra header field is not `key=value`.
    Extra,
    /// The release prefix is longer than [`MAX_RELEASE_LEN`].
    Release,
}

/// Why a datagram could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DecodeError {
    /// The datagram is empty.
    Empty,
    /// The datagram ends early: no `;` after the header, or an unfragmented
    /// body that does not end in `\n`.
    Truncated {
        /// Bytes received.
        len: usize,
    },
    /// Longer than anything netconsole sends.
    Oversized {
        /// Bytes received.
        len: usize,
        /// The largest accepted length.
        max: usize,
    },
    /// A header field is malformed.
    MalformedHeader(HeaderField),
    /// A byte netconsole never sends in this position (extended datagrams are
    /// printable ASCII plus `\n`).
    InvalidByte {
        /// Offset of the byte in the datagram (or in the escaped text).
        offset: usize,
        /// The byte.
        byte: u8,
    },
    /// A `\` not followed by `x` and two lowercase hex digits.
    BadEscape {
        /// Offset of the backslash in the escaped text.
        offset: usize,
    },
    /// `ncfrag=<offset>/<total>` does not describe a non-empty piece inside
    /// the body: offset at or beyond total, or offset plus length beyond it.
    FragOutOfRange {
        /// The fragment's offset.
        offset: u32,
        /// The fragment's payload length.
        len: usize,
        /// The body's total length.
        total: u32,
    },
    /// A dictionary line is not ` KEY=VALUE`.
    MalformedDict {
        /// Offset of the line in the body.
        offset: usize,
    },
    /// The output buffer for unescaped text is too small.
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// The (unescaped) text is not valid UTF-8.
    NonUtf8 {
        /// Length of the valid prefix.
        valid_up_to: usize,
    },
}

/// Why a record could not be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EncodeError {
    /// The output buffer cannot hold the next datagram; nothing was written
    /// and the encoder did not advance.
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// The release string is longer than [`MAX_RELEASE_LEN`].
    ReleaseTooLong {
        /// Its length.
        len: usize,
    },
    /// `flags` is neither `b'-'` nor `b'c'` (for [`ExtRepr::emit`]), or the
    /// release contains a `;`, a space or a non-printable byte.
    InvalidField,
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            DecodeError::Empty => write!(f, "empty datagram"),
            DecodeError::Truncated { len } => write!(f, "truncated datagram ({len} bytes)"),
            DecodeError::Oversized { len, max } => {
                write!(f, "datagram of {len} bytes exceeds {max}")
            }
            DecodeError::MalformedHeader(field) => write!(f, "malformed header: {field:?}"),
            DecodeError::InvalidByte { offset, byte } => {
                write!(f, "invalid byte 0x{byte:02x} at offset {offset}")
            }
            DecodeError::BadEscape { offset } => write!(f, "bad \\x escape at offset {offset}"),
            DecodeError::FragOutOfRange { offset, len, total } => write!(
                f,
                "ncfrag offset {offset} + {len} bytes outside total {total}"
            ),
            DecodeError::MalformedDict { offset } => {
                write!(f, "malformed dictionary line at offset {offset}")
            }
            DecodeError::BufferTooSmall { needed, available } => {
                write!(f, "buffer too small: need {needed}, have {available}")
            }
            DecodeError::NonUtf8 { valid_up_to } => {
                write!(f, "text is not UTF-8 after {valid_up_to} bytes")
            }
        }
    }
}

impl core::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            EncodeError::BufferTooSmall { needed, available } => {
                write!(f, "buffer too small: need {needed}, have {available}")
            }
            EncodeError::ReleaseTooLong { len } => {
                write!(f, "release of {len} bytes exceeds {MAX_RELEASE_LEN}")
            }
            EncodeError::InvalidField => write!(f, "invalid field"),
        }
    }
}

impl core::error::Error for DecodeError {}
impl core::error::Error for EncodeError {}

/// Appends bytes to a fixed buffer; the one place encoders touch raw output.
pub(crate) struct Writer<'b> {
    buf: &'b mut [u8],
    len: usize,
}

impl<'b> Writer<'b> {
    pub(crate) fn new(buf: &'b mut [u8]) -> Self {
        Writer { buf, len: 0 }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Append `bytes`; false (and nothing written) if they do not fit.
    pub(crate) fn put(&mut self, bytes: &[u8]) -> bool {
        let Some(end) = self.len.checked_add(bytes.len()) else {
            return false;
        };
        match self.buf.get_mut(self.len..end) {
            Some(dst) => {
                dst.copy_from_slice(bytes);
                self.len = end;
                true
            }
            None => false,
        }
    }

    pub(crate) fn put_byte(&mut self, b: u8) -> bool {
        match self.buf.get_mut(self.len) {
            Some(dst) => {
                *dst = b;
                self.len = self.len.wrapping_add(1);
                true
            }
            None => false,
        }
    }

    /// Append `v` in decimal, as printk's `%llu`/`%u`/`%d` (non-negative) do.
    pub(crate) fn put_dec(&mut self, v: u64) -> bool {
        let mut digits = [0u8; 20];
        let n = dec(v, &mut digits);
        self.put(digits.get(digits.len().saturating_sub(n)..).unwrap_or(&[]))
    }
}

/// Decimal digits of `v`, right-aligned in `out`; returns how many.
pub(crate) fn dec(mut v: u64, out: &mut [u8; 20]) -> usize {
    let mut n = 0usize;
    for slot in out.iter_mut().rev() {
        // `v % 10` is a single digit, so the narrowing is exact.
        *slot = b'0'.wrapping_add((v % 10) as u8);
        v /= 10;
        n = n.wrapping_add(1);
        if v == 0 {
            break;
        }
    }
    n
}

/// Number of decimal digits of `v`.
pub(crate) fn dec_len(v: u64) -> usize {
    let mut digits = [0u8; 20];
    dec(v, &mut digits)
}

/// Parse a canonical decimal (digits only, no sign, no leading zero).
pub(crate) fn parse_dec(s: &[u8]) -> Option<u64> {
    if s.is_empty() || (s.len() > 1 && s.first() == Some(&b'0')) {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &c| {
        if !c.is_ascii_digit() {
            return None;
        }
        acc.checked_mul(10)?
            .checked_add(u64::from(c.wrapping_sub(b'0')))
    })
}
