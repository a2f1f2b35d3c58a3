//! Basic netconsole: the console text as a serial console prints it
//! (`[    6.429588] text\n`, one prefix per line), cut into
//! [`MAX_PRINT_CHUNK`]-byte datagrams with no framing (`write_msg` in
//! `drivers/net/netconsole.c`).
//!
//! A line longer than a chunk continues in the next datagram, and a UTF-8
//! sequence may be cut at a chunk boundary; [`lines`] marks the pieces so a
//! receiver can join them (the engine's console scanner does exactly that).

use super::{DecodeError, MAX_PRINT_CHUNK};

/// The datagrams the kernel sends for one console message: consecutive
/// pieces of at most [`MAX_PRINT_CHUNK`] bytes (none for an empty message).
pub fn chunks(message: &[u8]) -> core::slice::Chunks<'_, u8> {
    message.chunks(MAX_PRINT_CHUNK)
}

/// A typed view over one basic datagram: any bytes, 1 to
/// [`MAX_PRINT_CHUNK`] of them.
#[derive(Clone, Debug)]
pub struct BasicPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> BasicPacket<T> {
    /// Check the length of `buffer`.
    pub fn new_checked(buffer: T) -> Result<Self, DecodeError> {
        let len = buffer.as_ref().len();
        if len == 0 {
            return Err(DecodeError::Empty);
        }
        if len > MAX_PRINT_CHUNK {
            return Err(DecodeError::Oversized {
                len,
                max: MAX_PRINT_CHUNK,
            });
        }
        Ok(BasicPacket { buffer })
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The datagram's bytes.
    pub fn payload(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// The console lines (or line pieces) in this datagram.
    pub fn lines(&self) -> Lines<'_> {
        Lines {
            rest: self.buffer.as_ref(),
        }
    }
}

/// Check a basic datagram and iterate over its lines.
pub fn lines(datagram: &[u8]) -> Result<Lines<'_>, DecodeError> {
    BasicPacket::new_checked(datagram)?;
    Ok(Lines { rest: datagram })
}

/// Decode a basic datagram: the same as [`lines`].
pub fn decode(datagram: &[u8]) -> Result<Lines<'_>, DecodeError> {
    lines(datagram)
}

/// One console line, or the piece of one that a datagram carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BasicLine<'a> {
    /// The printk timestamp from a leading `[ sec.usec] `, in microseconds.
    pub ts_usec: Option<u64>,
    /// The text after the timestamp (all of the line without one), without
    /// the `\n` and without a trailing `\r`.
    pub text: &'a [u8],
    /// The line ended in this datagram (`\n` seen). `false` for the last
    /// piece of a datagram whose line continues in the next one.
    pub complete: bool,
}

impl<'a> BasicLine<'a> {
    /// The text as UTF-8 (it may be cut mid-character at a chunk boundary,
    /// or simply not be UTF-8).
    pub fn text_str(&self) -> Result<&'a str, DecodeError> {
        core::str::from_utf8(self.text).map_err(|e| DecodeError::NonUtf8 {
            valid_up_to: e.valid_up_to(),
        })
    }
}

/// Iterator over the lines of a basic datagram.
#[derive(Clone, Debug)]
pub struct Lines<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Lines<'a> {
    type Item = BasicLine<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let (line, complete) = match self.rest.iter().position(|&c| c == b'\n') {
            Some(nl) => {
                let (line, rest) = self.rest.split_at_checked(nl).unwrap_or((self.rest, &[]));
                self.rest = rest.get(1..).unwrap_or(&[]);
                (line, true)
            }
            None => (core::mem::take(&mut self.rest), false),
        };
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let (ts_usec, text) = match split_timestamp(line) {
            Some((ts, text)) => (Some(ts), text),
            None => (None, line),
        };
        Some(BasicLine {
            ts_usec,
            text,
            complete,
        })
    }
}

/// Split `[ sec.usec] text` (printk's `print_time`: `[%5lu.%06lu] `).
pub fn split_timestamp(line: &[u8]) -> Option<(u64, &[u8])> {
    let inner = line.strip_prefix(b"[")?;
    let close = inner.iter().position(|&c| c == b']')?;
    let stamp = inner.get(..close)?;
    let text = inner.get(close.checked_add(1)?..)?;
    let text = text.strip_prefix(b" ").unwrap_or(text);
    let stamp = stamp.trim_ascii_start();
    let dot = stamp.iter().position(|&c| c == b'.')?;
    let secs = stamp.get(..dot)?;
    let usecs = stamp.get(dot.checked_add(1)?..)?;
    if secs.is_empty() || usecs.len() != 6 {
        return None;
    }
    let digits = |s: &[u8]| {
        s.iter().try_fold(0u64, |acc, &c| {
            if c.is_ascii_digit() {
                acc.checked_mul(10)?
                    .checked_add(u64::from(c.wrapping_sub(b'0')))
            } else {
                None
            }
        })
    };
    let ts = digits(secs)?
        .checked_mul(1_000_000)?
        .checked_add(digits(usecs)?)?;
    Some((ts, text))
}
