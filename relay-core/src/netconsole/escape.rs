//! printk's `\xNN` escaping of extended records (`msg_add_ext_text` in
//! `kernel/printk/printk.c`).
//!
//! Every byte below `' '`, from 127 up, and `\` itself is written as `\x`
//! and two lowercase hex digits, so an extended body is printable ASCII with
//! `\n` only as a line separator. UTF-8 text arrives escaped byte by byte.

use super::DecodeError;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Whether printk writes `c` as `\xNN` in extended records.
#[inline]
pub const fn needs_escape(c: u8) -> bool {
    c < b' ' || c >= 127 || c == b'\\'
}

/// The bytes printk writes for `c`, and how many of them are used (1 or 4).
#[inline]
pub fn escape_byte(c: u8) -> ([u8; 4], usize) {
    if needs_escape(c) {
        let hi = HEX.get(usize::from(c >> 4)).copied().unwrap_or(b'0');
        let lo = HEX.get(usize::from(c & 0xf)).copied().unwrap_or(b'0');
        ([b'\\', b'x', hi, lo], 4)
    } else {
        ([c, 0, 0, 0], 1)
    }
}

/// Length of `raw` once escaped (saturating; real texts are far shorter).
pub fn escaped_len(raw: &[u8]) -> usize {
    // Skip plain runs 16 bytes at a time; each escape adds 3 bytes.
    let mut escapes = 0usize;
    let mut rest = raw;
    loop {
        let plain = prefix_len_while(rest, |c| !needs_escape(c));
        match rest.get(plain.saturating_add(1)..) {
            Some(after) => {
                escapes = escapes.saturating_add(1);
                rest = after;
            }
            None => break,
        }
    }
    raw.len().saturating_add(escapes.saturating_mul(3))
}

/// Length of the longest prefix of `s` whose bytes all satisfy `keep`,
/// checked 16 bytes at a time so the common all-plain case vectorizes.
#[inline]
pub(crate) fn prefix_len_while(s: &[u8], keep: impl Fn(u8) -> bool + Copy) -> usize {
    let mut n = 0usize;
    let mut chunks = s.chunks_exact(16);
    for chunk in &mut chunks {
        if !chunk.iter().fold(true, |all, &c| all & keep(c)) {
            break;
        }
        n = n.saturating_add(16);
    }
    let rest = s.get(n..).unwrap_or(&[]);
    n.saturating_add(rest.iter().position(|&c| !keep(c)).unwrap_or(rest.len()))
}

/// Escape `raw` into `out`; returns the length written.
pub fn escape_into(raw: &[u8], out: &mut [u8]) -> Result<usize, DecodeError> {
    let needed = escaped_len(raw);
    let available = out.len();
    let mut w = super::Writer::new(out);
    for &c in raw {
        let (bytes, n) = escape_byte(c);
        if !w.put(bytes.get(..n).unwrap_or(&[])) {
            return Err(DecodeError::BufferTooSmall { needed, available });
        }
    }
    Ok(w.len())
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c.wrapping_sub(b'0')),
        b'a'..=b'f' => Some(c.wrapping_sub(b'a').wrapping_add(10)),
        _ => None,
    }
}

/// Iterator over the raw bytes of an escaped text; yields an error (and then
/// stops) at a malformed escape or a byte printk never leaves unescaped.
#[derive(Clone, Debug)]
pub struct Unescape<'a> {
    escaped: &'a [u8],
    pos: usize,
    failed: bool,
}

impl<'a> Unescape<'a> {
    /// Unescape `escaped` lazily.
    pub fn new(escaped: &'a [u8]) -> Self {
        Unescape {
            escaped,
            pos: 0,
            failed: false,
        }
    }
}

impl Iterator for Unescape<'_> {
    type Item = Result<u8, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let at = self.pos;
        let rest = self.escaped.get(at..)?;
        let (result, used) = match *rest {
            [] => return None,
            [b'\\', b'x', hi, lo, ..] => match (hex_value(hi), hex_value(lo)) {
                (Some(h), Some(l)) => (Ok((h << 4) | l), 4),
                _ => (Err(DecodeError::BadEscape { offset: at }), 0),
            },
            [b'\\', ..] => (Err(DecodeError::BadEscape { offset: at }), 0),
            [c, ..] if needs_escape(c) => (
                Err(DecodeError::InvalidByte {
                    offset: at,
                    byte: c,
                }),
                0,
            ),
            [c, ..] => (Ok(c), 1),
        };
        self.failed = result.is_err();
        self.pos = at.saturating_add(used);
        Some(result)
    }
}

/// Unescape `escaped` into `out`; returns the raw length.
pub fn unescape_into(escaped: &[u8], out: &mut [u8]) -> Result<usize, DecodeError> {
    let mut n = 0usize;
    for b in Unescape::new(escaped) {
        let b = b?;
        match out.get_mut(n) {
            Some(dst) => *dst = b,
            None => {
                return Err(DecodeError::BufferTooSmall {
                    needed: unescaped_len(escaped),
                    available: out.len(),
                })
            }
        }
        n = n.wrapping_add(1);
    }
    Ok(n)
}

/// Length of `escaped` once unescaped (counting a malformed tail as-is).
pub fn unescaped_len(escaped: &[u8]) -> usize {
    Unescape::new(escaped).count()
}

/// Unescape `escaped` into `out` and check that the result is UTF-8.
pub fn unescape_str<'o>(escaped: &[u8], out: &'o mut [u8]) -> Result<&'o str, DecodeError> {
    let n = unescape_into(escaped, out)?;
    let raw = out.get(..n).unwrap_or(&[]);
    core::str::from_utf8(raw).map_err(|e| DecodeError::NonUtf8 {
        valid_up_to: e.valid_up_to(),
    })
}
