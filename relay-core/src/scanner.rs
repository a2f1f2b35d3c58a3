//! Console scanner: a byte stream from a UART or a shared-memory ring, in
//! chunks of any size, becomes lines.
//!
//! What the real serial console of a Linux host looks like (see
//! `tests/fixtures/netconsole/*.serial.log`):
//!
//! ```text
//! ESC c ESC [?7l ESC [2J ESC [0m SeaBIOS (version 1.16.2-debian-1.16.2-1) CR LF
//! Probing EDD (edd=off to disable)... o ESC c ESC [?7l ESC [2J [    0.000000] Linux version ...
//! [    6.582893] Kernel panic - not syncing: sysrq triggered crash CR LF
//! ```
//!
//! The scanner therefore:
//! - ends a line at LF, CR or CRLF (a CR followed by LF is one line end);
//! - strips ANSI/ECMA-48 escape sequences (CSI, OSC and other strings, two-byte
//!   escapes) and treats `ESC c` (reset terminal, sent by firmware and by the
//!   kernel's early console) as a line boundary, so the kernel's first line is
//!   not glued to the firmware's last;
//! - drops NUL runs and other C0 controls except TAB;
//! - keeps the first `LINE_MAX` bytes of an over-long line, cut on a UTF-8
//!   character boundary, flags it [`Line::truncated`] and skips to the next
//!   line end, so it never loses sync;
//! - passes bytes that are not UTF-8 through untouched (line splitting is
//!   byte-oriented, so invalid bytes cannot confuse it);
//! - parses the printk prefix: a syslog `<N>` (console_msg_format=syslog),
//!   the `[ sec.usec]` stamp (printk.time) and the `[T123]`/`[C1]` caller id
//!   (CONFIG_PRINTK_CALLER); [`Line::text`] is the message after them.
//!
//! Lines are handed to a callback as borrowed [`Line`]s; nothing is allocated.
//! [`ContextRing`] keeps the most recent lines for the pre-panic context.

/// One console line, as the scanner yields it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Line<'a> {
    /// The message: escapes, CR and the line end stripped, and the printk
    /// prefix (`<N>`, `[ sec.usec]`, caller id) removed when present.
    pub text: &'a [u8],
    /// printk log level (0 = KERN_EMERG .. 7 = KERN_DEBUG), when the console
    /// shows a syslog `<N>` prefix.
    pub level: Option<u8>,
    /// Syslog facility from the same `<N>` prefix (0 = kernel).
    pub facility: Option<u8>,
    /// The printk timestamp `[ sec.usec]` in microseconds, when present.
    pub ts_usec: Option<u64>,
    /// The physical line was longer than the scanner's limit; `text` holds its
    /// beginning only.
    pub truncated: bool,
}

impl<'a> Line<'a> {
    /// A line with only text (no prefix fields), e.g. for tests or for input
    /// that carries its metadata elsewhere (extended netconsole).
    pub const fn new(text: &'a [u8]) -> Self {
        Line { text, level: None, facility: None, ts_usec: None, truncated: false }
    }

    /// Parse a whole console line (without its line end): split off the
    /// printk prefix, if any. Pure; used by the scanner and by the host bridge
    /// on basic-netconsole lines.
    pub fn parse(raw: &'a [u8]) -> Self {
        let p = parse_prefix(raw);
        Line {
            text: raw.get(p.body_start..).unwrap_or(&[]),
            level: p.syslog.map(|n| n & 7),
            facility: p.syslog.map(|n| n >> 3),
            ts_usec: p.ts_usec,
            truncated: false,
        }
    }

    /// The text as `&str` if it is valid UTF-8.
    pub fn as_str(&self) -> Option<&'a str> {
        core::str::from_utf8(self.text).ok()
    }

    /// The longest prefix of the text that is valid UTF-8 (what a report can
    /// carry when the line holds line noise).
    pub fn utf8_prefix(&self) -> &'a str {
        match core::str::from_utf8(self.text) {
            Ok(s) => s,
            Err(e) => self
                .text
                .get(..e.valid_up_to())
                .and_then(|t| core::str::from_utf8(t).ok())
                .unwrap_or(""),
        }
    }
}

/// The printk prefix of a raw line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Prefix {
    /// Raw `<N>` value: `(facility << 3) | level`.
    pub syslog: Option<u8>,
    pub ts_usec: Option<u64>,
    /// Where the message starts.
    pub body_start: usize,
}

/// Parse `<N>`, `[ sec.usec]`, `[  T123]` and one separating space.
/// Anything that does not parse exactly is left in the body.
pub(crate) fn parse_prefix(raw: &[u8]) -> Prefix {
    let mut p = Prefix::default();
    let mut rest = raw;
    if let Some((n, tail)) = parse_syslog(rest) {
        p.syslog = Some(n);
        rest = tail;
    }
    let mut stamped = false;
    if let Some((ts, tail)) = parse_stamp(rest) {
        p.ts_usec = Some(ts);
        rest = tail;
        stamped = true;
    }
    if let Some(tail) = parse_caller(rest) {
        rest = tail;
        stamped = true;
    }
    if stamped {
        if let Some((b' ', tail)) = rest.split_first() {
            rest = tail;
        }
    }
    p.body_start = raw.len().saturating_sub(rest.len());
    p
}

/// `<N>` with 1..=3 digits and N <= 191 (facility 23, level 7).
fn parse_syslog(s: &[u8]) -> Option<(u8, &[u8])> {
    let rest = s.strip_prefix(b"<")?;
    let mut v: u16 = 0;
    let mut digits = 0u8;
    let mut it = rest.iter();
    loop {
        match it.next() {
            Some(&d @ b'0'..=b'9') if digits < 3 => {
                v = v.wrapping_mul(10).wrapping_add(u16::from(d.wrapping_sub(b'0')));
                digits = digits.wrapping_add(1);
            }
            Some(b'>') if digits > 0 && v <= 191 => {
                return Some((u8::try_from(v).ok()?, it.as_slice()));
            }
            _ => return None,
        }
    }
}

/// `[` spaces digits `.` six digits `]`, as printk's `[%5lu.%06lu]`.
fn parse_stamp(s: &[u8]) -> Option<(u64, &[u8])> {
    // Fast path: the seconds fill exactly the 5-character field (uptime
    // under 27 hours), so the whole stamp is 14 bytes at fixed offsets.
    if let Some((&[b'[', f0, f1, f2, f3, f4, d0, d1, d2, d3, d4, d5, d6, d7], after)) =
        s.split_first_chunk::<14>()
    {
        if let Some(usec) = parse_frac([d0, d1, d2, d3, d4, d5, d6, d7]) {
            let mut sec = 0u64;
            let mut digits = false;
            for c in [f0, f1, f2, f3, f4] {
                if c.is_ascii_digit() {
                    sec = sec.wrapping_mul(10).wrapping_add(u64::from(c.wrapping_sub(b'0')));
                    digits = true;
                } else if c != b' ' || digits {
                    return None;
                }
            }
            return digits.then(|| (sec.wrapping_mul(1_000_000).wrapping_add(usec), after));
        }
    }
    let rest = s.strip_prefix(b"[")?;
    let pad = rest.iter().take_while(|&&b| b == b' ').count();
    let mut rest = rest.get(pad..)?;
    let mut sec = 0u64;
    let mut n = 0u32;
    while let [d @ b'0'..=b'9', tail @ ..] = rest {
        sec = sec.wrapping_mul(10).wrapping_add(u64::from(d.wrapping_sub(b'0')));
        n = n.wrapping_add(1);
        rest = tail;
    }
    // Up to 12 digits of seconds: the microseconds then fit in u64.
    if n == 0 || n > 12 {
        return None;
    }
    let (frac, after) = rest.split_first_chunk::<8>()?;
    Some((sec.wrapping_mul(1_000_000).wrapping_add(parse_frac(*frac)?), after))
}

/// `.dddddd]` as one 8-byte word: check the shape and convert the six
/// digits without a loop.
#[inline]
fn parse_frac(w: [u8; 8]) -> Option<u64> {
    let x = u64::from_le_bytes(w);
    // Byte 0 is '.', byte 7 is ']'; bytes 1..=6 are digits.
    const SHAPE: u64 = 0x00ff_ffff_ffff_ff00;
    if x & !SHAPE != 0x5d00_0000_0000_002e {
        return None;
    }
    let d = (x & SHAPE) ^ 0x0030_3030_3030_3000;
    // Every digit byte is now 0..=9 iff adding 0x76 sets no top bit.
    if (d.wrapping_add(0x0076_7676_7676_7600) | d) & 0x0080_8080_8080_8000 != 0 {
        return None;
    }
    let b = d.to_le_bytes();
    let v = [b[1], b[2], b[3], b[4], b[5], b[6]]
        .iter()
        .fold(0u64, |acc, &c| acc.wrapping_mul(10).wrapping_add(u64::from(c)));
    Some(v)
}

/// CONFIG_PRINTK_CALLER's `[    T123]` / `[     C1]`.
fn parse_caller(s: &[u8]) -> Option<&[u8]> {
    let mut rest = s.strip_prefix(b"[")?;
    while let Some((b' ', tail)) = rest.split_first() {
        rest = tail;
    }
    let (&tc, tail) = rest.split_first()?;
    if tc != b'T' && tc != b'C' {
        return None;
    }
    rest = tail;
    let mut digits = 0u8;
    while let Some((d, tail)) = rest.split_first() {
        if !d.is_ascii_digit() {
            break;
        }
        digits = digits.saturating_add(1);
        rest = tail;
    }
    if digits == 0 {
        return None;
    }
    rest.strip_prefix(b"]")
}

/// What the scanner is in the middle of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Plain text.
    Text,
    /// Plain text right after a CR line end: a LF now is part of that end.
    AfterCr,
    /// After ESC.
    Start,
    /// ESC followed by intermediates (`ESC ( B`).
    Intermediate,
    /// Inside `ESC [` ... final byte.
    Csi,
    /// Inside OSC/DCS/SOS/PM/APC, until BEL or ST (`ESC \`).
    Str,
    /// ESC seen inside a string: `\` ends it.
    StrEscape,
}

/// Set in [`ConsoleScanner`]'s `pos` outside plain text.
const PAUSED: usize = 1 << (usize::BITS - 1);

/// Inputs shorter than this are scanned byte by byte.
const SMALL: usize = 16;

/// Escape sequences longer than this are abandoned (line noise must not be
/// able to swallow the panic line).
const ESC_MAX: u16 = 256;

/// Turns console bytes into [`Line`]s. `LINE_MAX` bounds the stored line;
/// the Linux printk record limit is 1024 bytes, hence the default.
///
/// Chunk-agnostic: any split of the same bytes yields the same lines.
#[derive(Clone, Debug)]
pub struct ConsoleScanner<const LINE_MAX: usize = 1024> {
    buf: [u8; LINE_MAX],
    /// Bytes held (`LINE_MAX` whenever `truncated` is set), plus [`PAUSED`]
    /// while `mode` is not [`Mode::Text`]: then `buf.get_mut(pos)` misses and
    /// the one-compare fast path in `byte` falls through to the slow path.
    pos: usize,
    truncated: bool,
    mode: Mode,
    esc_len: u16,
    lines: u64,
    truncations: u64,
}

impl<const LINE_MAX: usize> Default for ConsoleScanner<LINE_MAX> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const LINE_MAX: usize> ConsoleScanner<LINE_MAX> {
    /// An empty scanner.
    pub const fn new() -> Self {
        ConsoleScanner {
            buf: [0; LINE_MAX],
            pos: 0,
            truncated: false,
            mode: Mode::Text,
            esc_len: 0,
            lines: 0,
            truncations: 0,
        }
    }

    /// Feed bytes; `on_line` is called for every completed line, in order.
    pub fn push(&mut self, mut input: &[u8], mut on_line: impl FnMut(Line<'_>)) {
        // A UART interrupt hands over a byte or a few: no bulk setup for those.
        if input.len() < SMALL {
            for &b in input {
                if let Some(line) = self.byte(b) {
                    on_line(line);
                }
            }
            return;
        }
        while let Some((&first, tail)) = input.split_first() {
            if matches!(self.mode, Mode::Text | Mode::AfterCr) {
                // Plain text up to the next C0 control, copied in one go.
                let n = first_control(input);
                let (run, rest) = input.split_at_checked(n).unwrap_or((input, &[]));
                if !run.is_empty() {
                    self.set_mode(Mode::Text);
                    self.append(run);
                }
                let Some((&b, tail)) = rest.split_first() else { return };
                input = tail;
                if let Some(line) = self.control(b) {
                    on_line(line);
                }
            } else {
                input = tail;
                if let Some(line) = self.escape_byte(first) {
                    on_line(line);
                }
            }
        }
    }

    /// Feed one byte (a UART receive interrupt). One byte completes at most
    /// one line, which is returned; it borrows the scanner, so it must be
    /// consumed before the next byte. Same lines as [`ConsoleScanner::push`].
    #[inline]
    pub fn push_byte(&mut self, b: u8) -> Option<Line<'_>> {
        self.byte(b)
    }

    #[inline(always)]
    fn byte(&mut self, b: u8) -> Option<Line<'_>> {
        if b >= 0x20 {
            // Text mode with room: `pos` is in bounds (see its doc).
            if let Some(slot) = self.buf.get_mut(self.pos) {
                *slot = b;
                self.pos = self.pos.wrapping_add(1);
                return None;
            }
        }
        self.slow_byte(b)
    }

    /// Bytes held in `buf`.
    #[inline(always)]
    fn held(&self) -> usize {
        self.pos & !PAUSED
    }

    /// Set the byte count, keeping the mode flag.
    #[inline(always)]
    fn set_held(&mut self, n: usize) {
        self.pos = n | (self.pos & PAUSED);
    }

    #[inline(always)]
    fn set_mode(&mut self, mode: Mode) {
        self.mode = mode;
        let held = self.held();
        self.pos = if mode == Mode::Text { held } else { held | PAUSED };
    }

    #[inline(always)]
    fn put(&mut self, b: u8) {
        let held = self.held();
        match self.buf.get_mut(held) {
            Some(slot) => {
                *slot = b;
                self.set_held(held.wrapping_add(1));
            }
            None => self.truncated = true,
        }
    }

    #[inline(never)]
    fn slow_byte(&mut self, b: u8) -> Option<Line<'_>> {
        match self.mode {
            Mode::Text | Mode::AfterCr if b >= 0x20 => {
                self.set_mode(Mode::Text);
                self.put(b);
                None
            }
            Mode::Text | Mode::AfterCr => self.control(b),
            _ => self.escape_byte(b),
        }
    }

    /// Emit the partial line held so far, if any (e.g. when the console has
    /// gone quiet and its last line never got its line end).
    pub fn flush(&mut self, mut on_line: impl FnMut(Line<'_>)) {
        self.set_mode(Mode::Text);
        if self.held() > 0 || self.truncated {
            on_line(self.take_line());
        }
    }

    /// The bytes of the line in progress (escapes stripped, prefix included).
    pub fn pending(&self) -> &[u8] {
        self.buf.get(..self.held()).unwrap_or(&[])
    }

    /// Lines emitted so far.
    pub const fn lines(&self) -> u64 {
        self.lines
    }

    /// Lines that were longer than `LINE_MAX` and were truncated.
    pub const fn truncations(&self) -> u64 {
        self.truncations
    }

    fn append(&mut self, run: &[u8]) {
        let held = self.held();
        let take = copy_prefix(self.buf.get_mut(held..).unwrap_or(&mut []), run);
        self.set_held(held.saturating_add(take));
        if run.len() > take {
            self.truncated = true;
        }
    }

    /// A byte below 0x20 in plain text.
    #[inline(always)]
    fn control(&mut self, b: u8) -> Option<Line<'_>> {
        match b {
            b'\n' => {
                if self.mode == Mode::AfterCr {
                    self.set_mode(Mode::Text);
                    None
                } else {
                    Some(self.take_line())
                }
            }
            b'\r' => {
                self.set_mode(Mode::AfterCr);
                Some(self.take_line())
            }
            b'\t' => {
                self.set_mode(Mode::Text);
                self.put(b'\t');
                None
            }
            0x1b => {
                self.set_mode(Mode::Start);
                self.esc_len = 0;
                None
            }
            // NUL runs (line padding, a host powering up) and other C0
            // controls (BEL, BS, ...) carry no text; they also do not break
            // a CR LF pair.
            _ => None,
        }
    }

    #[inline(never)]
    fn escape_byte(&mut self, b: u8) -> Option<Line<'_>> {
        self.esc_len = self.esc_len.saturating_add(1);
        if self.esc_len > ESC_MAX || b == b'\n' || b == b'\r' {
            // Unterminated: give the byte back to plain text so line ends
            // are never lost.
            self.set_mode(Mode::Text);
            if b < 0x20 {
                return self.control(b);
            }
            self.put(b);
            return None;
        }
        let next = match (self.mode, b) {
            (Mode::Start, b'[') => Mode::Csi,
            (Mode::Start, b']' | b'P' | b'X' | b'^' | b'_') => Mode::Str,
            (Mode::Start, 0x20..=0x2f) => Mode::Intermediate,
            (Mode::Start, b'c') => {
                // RIS: the terminal is reset and the screen cleared, so
                // whatever follows starts a new line.
                self.set_mode(Mode::Text);
                if self.held() > 0 || self.truncated {
                    return Some(self.take_line());
                }
                return None;
            }
            (Mode::Start, 0x1b) => Mode::Start,
            (Mode::Intermediate, 0x20..=0x2f) => Mode::Intermediate,
            (Mode::Csi, 0x20..=0x3f) => Mode::Csi,
            (Mode::Csi, 0x1b) => Mode::Start,
            (Mode::Str, 0x07) => Mode::Text,
            (Mode::Str, 0x1b) => Mode::StrEscape,
            (Mode::Str, _) => Mode::Str,
            (Mode::StrEscape, b'\\') => Mode::Text,
            (Mode::StrEscape, _) => Mode::Str,
            // Final bytes, and anything unexpected, end the sequence.
            _ => Mode::Text,
        };
        self.set_mode(next);
        None
    }

    /// End the current line: reset for the next one and hand out this one
    /// (its bytes stay in `buf` until the next byte is stored).
    #[inline(always)]
    fn take_line(&mut self) -> Line<'_> {
        let truncated = self.truncated;
        let mut len = self.held();
        if truncated {
            self.truncations = self.truncations.wrapping_add(1);
            len = utf8_cut(self.buf.get(..len).unwrap_or(&[]));
        }
        self.set_held(0);
        self.truncated = false;
        self.lines = self.lines.wrapping_add(1);
        let mut line = Line::parse(self.buf.get(..len).unwrap_or(&[]));
        line.truncated = truncated;
        line
    }
}

/// Copy as much of `src` as fits into `dst`; returns the count. (Lengths are
/// equal by construction, so no panic path remains in `copy_from_slice`.)
#[inline]
fn copy_prefix(dst: &mut [u8], src: &[u8]) -> usize {
    let n = dst.len().min(src.len());
    if let (Some(d), Some(s)) = (dst.get_mut(..n), src.get(..n)) {
        d.copy_from_slice(s);
    }
    n
}

/// Length of `s` without a trailing incomplete UTF-8 sequence (for lines cut
/// at the limit; a line that was never UTF-8 is left alone).
fn utf8_cut(s: &[u8]) -> usize {
    let n = s.len();
    // Look at most 3 bytes back for the lead byte of the last character.
    for back in 1..=4usize.min(n) {
        let i = n.wrapping_sub(back);
        let Some(&b) = s.get(i) else { break };
        if b & 0xc0 == 0x80 {
            continue; // continuation byte
        }
        let width = match b {
            0xc0..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf7 => 4,
            _ => 1,
        };
        return if back < width { i } else { n };
    }
    n
}

/// Index of the first byte below 0x20 (all bytes the scanner treats
/// specially are C0 controls), or `s.len()`. Eight bytes per step: a byte
/// `x < 0x20` is the only way `(x - 0x20) & !x` gets its top bit set, and the
/// lowest such byte is exact (borrows only propagate upwards).
#[inline]
fn first_control(s: &[u8]) -> usize {
    const LO: u64 = 0x2020_2020_2020_2020;
    const HI: u64 = 0x8080_8080_8080_8080;
    let mut off = 0usize;
    let mut chunks = s.chunks_exact(8);
    for c in &mut chunks {
        let Ok(a) = <[u8; 8]>::try_from(c) else { break };
        let x = u64::from_le_bytes(a);
        let t = x.wrapping_sub(LO) & !x & HI;
        if t != 0 {
            return off.wrapping_add((t.trailing_zeros() / 8) as usize);
        }
        off = off.wrapping_add(8);
    }
    let tail = s.get(off..).unwrap_or(&[]);
    match tail.iter().position(|&b| b < 0x20) {
        Some(i) => off.wrapping_add(i),
        None => s.len(),
    }
}

/// Per-entry header in the ring: text length (u16 LE), level (0xff = none),
/// flags, the timestamp (u64 LE, valid when [`FLAG_TS`] is set).
const HDR: usize = 12;
const FLAG_TRUNCATED: u8 = 1;
const FLAG_TS: u8 = 2;
const FLAG_FACILITY_SHIFT: u8 = 3;
const NO_LEVEL: u8 = 0xff;

/// A bounded ring of the most recent console lines: the pre-panic context.
///
/// `BYTES` is the storage (8 KiB by default); each line costs its text plus
/// a 12-byte header. The oldest lines are dropped to make room.
/// Lines are stored contiguously, so iteration yields plain borrowed
/// [`Line`]s, oldest to newest, without copying.
#[derive(Clone, Debug)]
pub struct ContextRing<const BYTES: usize = 8192> {
    buf: [u8; BYTES],
    /// Offset of the oldest entry.
    start: usize,
    /// Offset just after the newest entry.
    end: usize,
    /// When the data wraps: the end of the older part (entries are
    /// `start..wrap_at` then `0..end`).
    wrap_at: Option<usize>,
    len: usize,
    pushed: u64,
}

impl<const BYTES: usize> Default for ContextRing<BYTES> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const BYTES: usize> ContextRing<BYTES> {
    /// An empty ring.
    pub const fn new() -> Self {
        ContextRing { buf: [0; BYTES], start: 0, end: 0, wrap_at: None, len: 0, pushed: 0 }
    }

    /// Lines currently held.
    pub const fn len(&self) -> usize {
        self.len
    }

    /// No lines held.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Lines ever pushed (wrapping); the newest held line is number
    /// `pushed() - 1`, the oldest `pushed() - len()`.
    pub const fn pushed(&self) -> u64 {
        self.pushed
    }

    /// Drop all lines.
    pub fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
        self.wrap_at = None;
        self.len = 0;
    }

    /// Store a line, evicting the oldest ones as needed. A line too long for
    /// the whole ring is stored truncated (and flagged so).
    pub fn push(&mut self, line: &Line<'_>) {
        let cap = BYTES.saturating_sub(HDR).min(usize::from(u16::MAX));
        if cap == 0 {
            return;
        }
        let mut truncated = line.truncated;
        let text = if line.text.len() > cap {
            truncated = true;
            let t = line.text.get(..cap).unwrap_or(&[]);
            t.get(..utf8_cut(t)).unwrap_or(&[])
        } else {
            line.text
        };
        // text.len() <= cap < BYTES: the sum cannot wrap.
        let Some(at) = self.reserve(HDR.wrapping_add(text.len())) else { return };
        let mut flags = 0u8;
        if truncated {
            flags |= FLAG_TRUNCATED;
        }
        if line.ts_usec.is_some() {
            flags |= FLAG_TS;
        }
        if let Some(f) = line.facility {
            // Facility 0..=23 plus one, so 0 means "none".
            flags |= f.saturating_add(1).min(31) << FLAG_FACILITY_SHIFT;
        }
        let [l0, l1] = u16::try_from(text.len()).unwrap_or(0).to_le_bytes();
        let level = line.level.unwrap_or(NO_LEVEL);
        let Some((head, body)) =
            self.buf.get_mut(at..).and_then(|d| d.split_first_chunk_mut::<HDR>())
        else {
            return;
        };
        if let Some((meta, ts)) = head.split_first_chunk_mut::<4>() {
            *meta = [l0, l1, level, flags];
            if let Ok(ts) = <&mut [u8; 8]>::try_from(ts) {
                *ts = line.ts_usec.unwrap_or(0).to_le_bytes();
            }
        }
        copy_prefix(body, text);
        self.len = self.len.wrapping_add(1);
        self.pushed = self.pushed.wrapping_add(1);
    }

    /// Find `need` contiguous free bytes, evicting old entries; returns the
    /// offset and advances `end`.
    fn reserve(&mut self, need: usize) -> Option<usize> {
        if need > BYTES {
            return None;
        }
        // Invariants: end <= BYTES; start <= end unless wrapped, then
        // end <= start; so the wrapping ops below cannot wrap.
        loop {
            match self.wrap_at {
                None => {
                    if need <= BYTES.wrapping_sub(self.end) {
                        let at = self.end;
                        self.end = at.wrapping_add(need);
                        return Some(at);
                    }
                    if need <= self.start {
                        self.wrap_at = Some(self.end);
                        self.end = need;
                        return Some(0);
                    }
                }
                Some(_) => {
                    if need <= self.start.wrapping_sub(self.end) {
                        let at = self.end;
                        self.end = at.wrapping_add(need);
                        return Some(at);
                    }
                }
            }
            if !self.evict() {
                return None;
            }
        }
    }

    /// Drop the oldest entry; false when there is none.
    fn evict(&mut self) -> bool {
        if self.len <= 1 {
            // Empty, or about to be: start over at offset 0.
            let had = self.len == 1;
            self.clear();
            return had;
        }
        match entry_size(self.buf.get(self.start..).unwrap_or(&[])) {
            Some(size) => {
                self.start = self.start.wrapping_add(size);
                self.len = self.len.wrapping_sub(1);
                if let Some(w) = self.wrap_at {
                    if self.start >= w {
                        self.start = 0;
                        self.wrap_at = None;
                    }
                }
            }
            // Cannot happen (entries are written whole); never loop on it.
            None => self.clear(),
        }
        true
    }

    /// The held lines, oldest first.
    pub fn iter(&self) -> ContextIter<'_> {
        let (first, second) = match self.wrap_at {
            Some(w) => (
                self.buf.get(self.start..w).unwrap_or(&[]),
                self.buf.get(..self.end).unwrap_or(&[]),
            ),
            None => (self.buf.get(self.start..self.end).unwrap_or(&[]), &[][..]),
        };
        ContextIter { first, second, left: self.len }
    }
}

impl<'a, const BYTES: usize> IntoIterator for &'a ContextRing<BYTES> {
    type Item = Line<'a>;
    type IntoIter = ContextIter<'a>;
    fn into_iter(self) -> ContextIter<'a> {
        self.iter()
    }
}

/// Size of the entry at the start of `s`.
fn entry_size(s: &[u8]) -> Option<usize> {
    let (l0, l1) = (*s.first()?, *s.get(1)?);
    let size = HDR.checked_add(usize::from(u16::from_le_bytes([l0, l1])))?;
    (size <= s.len()).then_some(size)
}

/// Iterator over a [`ContextRing`], oldest line first.
#[derive(Clone, Debug)]
pub struct ContextIter<'a> {
    first: &'a [u8],
    second: &'a [u8],
    left: usize,
}

impl<'a> Iterator for ContextIter<'a> {
    type Item = Line<'a>;

    fn next(&mut self) -> Option<Line<'a>> {
        if self.left == 0 {
            return None;
        }
        if self.first.is_empty() {
            self.first = core::mem::take(&mut self.second);
        }
        let s = self.first;
        let size = entry_size(s)?;
        let (entry, rest) = s.split_at_checked(size)?;
        self.first = rest;
        self.left = self.left.saturating_sub(1);
        let level = *entry.get(2)?;
        let flags = *entry.get(3)?;
        let (head, text) = entry.split_at_checked(HDR)?;
        let ts = match head {
            [_, _, _, _, t @ ..] if flags & FLAG_TS != 0 => {
                let mut ts = [0u8; 8];
                copy_prefix(&mut ts, t);
                Some(u64::from_le_bytes(ts))
            }
            _ => None,
        };
        let fac = flags >> FLAG_FACILITY_SHIFT;
        Some(Line {
            text,
            level: (level != NO_LEVEL).then_some(level),
            facility: fac.checked_sub(1),
            ts_usec: ts,
            truncated: flags & FLAG_TRUNCATED != 0,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_control_matches_naive() {
        for i in 0..40 {
            for c in [0u8, b'\n', 0x1b, 0x1f] {
                let mut s = [b'a'; 40];
                if let Some(x) = s.get_mut(i) {
                    *x = c;
                }
                assert_eq!(first_control(&s), i);
            }
        }
        assert_eq!(first_control(&[0x80, 0xff, b' ', 0x7f, 0xc3, 0xbc, b'a', b'b', b'c']), 9);
    }

    #[test]
    fn parse_frac_matches_naive() {
        let naive = |w: [u8; 8]| -> Option<u64> {
            let s = core::str::from_utf8(&w).ok()?;
            let digits = s.strip_prefix('.')?.strip_suffix(']')?;
            if digits.len() != 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            digits.parse().ok()
        };
        let base = *b".582893]";
        assert_eq!(parse_frac(base), Some(582_893));
        for pos in 0..8 {
            for c in 0..=255u8 {
                let mut w = base;
                if let Some(x) = w.get_mut(pos) {
                    *x = c;
                }
                assert_eq!(parse_frac(w), naive(w), "{w:?}");
            }
        }
    }

    #[test]
    fn utf8_cut_drops_partial_char() {
        assert_eq!(utf8_cut(b"ab\xe2\x98"), 2);
        assert_eq!(utf8_cut(b"ab\xe2\x98\x83"), 5);
        assert_eq!(utf8_cut(b"ab\xc3"), 2);
        assert_eq!(utf8_cut(b"\xff\xff"), 2);
    }
}
