//! Extended netconsole: header parsing, body unescaping and ncfrag reassembly.
//!
//! The header grammar is Linux's (`<prefix>,<seq>,<ts_usec>,<flags>[,ncfrag=<off>/<total>];`,
//! optionally after a `<release>,` prefix).
use std::collections::VecDeque;
use std::time::Instant;

/// A parsed extended netconsole datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtDatagram<'a> {
    /// `(facility << 3) | level`.
    pub prefix: u32,
    /// printk sequence number.
    pub seq: u64,
    /// Kernel timestamp, microseconds since boot.
    pub ts_usec: u64,
    /// `c` (continuation) or `-`.
    pub cont: bool,
    /// `(offset, total)` when the record was split.
    pub frag: Option<(u32, u32)>,
    /// Body bytes after `;` (escaped text, `\n`, dictionary lines).
    pub payload: &'a [u8],
}

/// Parse one datagram; `None` when it is not extended netconsole.
pub fn parse(d: &[u8]) -> Option<ExtDatagram<'_>> {
    let semi = d.iter().take(160).position(|&b| b == b';')?;
    let header = std::str::from_utf8(d.get(..semi)?).ok()?;
    let payload = d.get(semi + 1..)?;
    let mut fields: Vec<&str> = header.split(',').collect();
    // `release` prefix: a first field that is not a number.
    if fields.first().is_some_and(|f| !f.bytes().all(|b| b.is_ascii_digit())) {
        fields.remove(0);
    }
    let frag = match fields.len() {
        4 => None,
        5 => {
            let (off, total) = fields.get(4)?.strip_prefix("ncfrag=")?.split_once('/')?;
            let (off, total): (u32, u32) = (off.parse().ok()?, total.parse().ok()?);
            if total == 0 || off >= total {
                return None;
            }
            Some((off, total))
        }
        _ => return None,
    };
    let num = |i: usize| -> Option<u64> {
        let f = fields.get(i)?;
        if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        f.parse().ok()
    };
    let prefix = u32::try_from(num(0)?).ok()?;
    let cont = match *fields.get(3)? {
        "-" => false,
        "c" => true,
        _ => return None,
    };
    Some(ExtDatagram {
        prefix,
        seq: num(1)?,
        ts_usec: num(2)?,
        cont,
        frag,
        payload,
    })
}

/// The message text of a body (before the dictionary), unescaped, split into lines.
pub fn body_lines(body: &[u8], max_line: usize, out: &mut Vec<String>) {
    let text = body.split(|&b| b == b'\n').next().unwrap_or_default();
    let mut raw = Vec::with_capacity(text.len());
    let mut i = 0;
    while let Some(&b) = text.get(i) {
        if b == b'\\' && text.get(i + 1) == Some(&b'x') {
            let hex = text.get(i + 2..i + 4).and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(v) = hex {
                raw.push(v);
                i += 4;
                continue;
            }
        }
        raw.push(b);
        i += 1;
    }
    for piece in raw.split(|&b| b == b'\n') {
        out.push(clean_line(piece, max_line));
    }
}

/// Lossy UTF-8, control characters (ANSI escapes, CR, NUL) removed, length capped.
pub fn clean_line(bytes: &[u8], max_line: usize) -> String {
    let mut s = String::from_utf8_lossy(bytes.get(..max_line.min(bytes.len())).unwrap_or(bytes)).into_owned();
    if s.bytes().any(|b| b < 0x20 && b != b'\t') {
        s = strip_controls(&s);
    }
    s
}

fn strip_controls(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ params final-byte
            if chars.peek() == Some(&'[') {
                chars.next();
                for n in chars.by_ref() {
                    if ('@'..='~').contains(&n) {
                        break;
                    }
                }
            }
        } else if (c as u32) >= 0x20 || c == '\t' {
            out.push(c);
        }
    }
    out
}

/// Bounded ncfrag reassembly for one source: a few messages in flight, each with a deadline.
#[derive(Debug, Default)]
pub struct Fragments {
    slots: VecDeque<Slot>,
}

#[derive(Debug)]
struct Slot {
    seq: u64,
    total: u32,
    buf: Vec<u8>,
    have: Vec<(u32, u32)>,
    deadline: Instant,
}

/// Result of adding a fragment.
#[derive(Debug, PartialEq, Eq)]
pub enum FragResult {
    /// Still waiting for more.
    Pending,
    /// The whole body.
    Complete(Vec<u8>),
    /// Inconsistent with the other fragments of the message (refused).
    Inconsistent,
}

/// Messages reassembled at once per source.
const SLOTS: usize = 4;
/// Largest reassembled body (the kernel's records are at most ~8 KiB).
const MAX_BODY: u32 = 16 * 1024;

impl Fragments {
    /// Add a fragment; `deadline` applies to a newly started message.
    pub fn add(&mut self, seq: u64, off: u32, total: u32, data: &[u8], deadline: Instant) -> (FragResult, bool) {
        let mut evicted = false;
        if total > MAX_BODY {
            return (FragResult::Inconsistent, false);
        }
        let idx = match self.slots.iter().position(|s| s.seq == seq) {
            Some(i) => i,
            None => {
                if self.slots.len() >= SLOTS {
                    self.slots.pop_front();
                    evicted = true;
                }
                self.slots.push_back(Slot {
                    seq,
                    total,
                    buf: vec![0; total as usize],
                    have: Vec::new(),
                    deadline,
                });
                self.slots.len() - 1
            }
        };
        let Some(slot) = self.slots.get_mut(idx) else {
            return (FragResult::Inconsistent, evicted);
        };
        let end = off.checked_add(u32::try_from(data.len()).unwrap_or(u32::MAX));
        let Some(end) = end.filter(|e| slot.total == total && *e <= total) else {
            self.slots.remove(idx);
            return (FragResult::Inconsistent, evicted);
        };
        if let Some(dst) = slot.buf.get_mut(off as usize..end as usize) {
            dst.copy_from_slice(data);
        }
        slot.have.push((off, end));
        slot.have.sort_unstable();
        let mut covered = 0u32;
        for &(a, b) in &slot.have {
            if a > covered {
                return (FragResult::Pending, evicted);
            }
            covered = covered.max(b);
        }
        if covered >= total {
            let done = self.slots.remove(idx).map(|s| s.buf).unwrap_or_default();
            return (FragResult::Complete(done), evicted);
        }
        (FragResult::Pending, evicted)
    }

    /// Drop messages past their deadline; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let before = self.slots.len();
        self.slots.retain(|s| s.deadline > now);
        before - self.slots.len()
    }

    /// True when nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_headers() {
        let d = parse(b"14,395,6330370,-,ncfrag=0/989;ncfixture: long").unwrap();
        assert_eq!((d.prefix, d.seq, d.ts_usec, d.cont, d.frag), (14, 395, 6330370, false, Some((0, 989))));
        let d = parse(b"6.1.0-56-amd64,0,403,6582893,-;Kernel panic\n").unwrap();
        assert_eq!(d.seq, 403);
        assert!(parse(b"Kernel panic - not syncing; x").is_none());
        assert!(parse(b"1,2,3,x;y").is_none());
        assert!(parse(b"1,2,3,-,ncfrag=9/9;y").is_none());
    }

    #[test]
    fn unescapes_and_splits() {
        let mut out = Vec::new();
        body_lines(b"a ->\\x0asecond \\x5c end\n SUBSYSTEM=x\n", 100, &mut out);
        assert_eq!(out, ["a ->", "second \\ end"]);
    }

    #[test]
    fn reassembles_and_refuses() {
        let now = Instant::now();
        let mut f = Fragments::default();
        assert_eq!(f.add(7, 5, 10, b"fghij", now).0, FragResult::Pending);
        assert_eq!(f.add(7, 0, 10, b"abcde", now).0, FragResult::Complete(b"abcdefghij".to_vec()));
        assert_eq!(f.add(8, 8, 10, b"xyz", now).0, FragResult::Inconsistent);
        assert_eq!(f.add(9, 0, 10, b"abc", now).0, FragResult::Pending);
        assert_eq!(f.expire(now + std::time::Duration::from_secs(1)), 1);
    }
}
