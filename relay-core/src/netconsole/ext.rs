//! Extended netconsole: `[<release>,]<prefix>,<seq>,<ts_usec>,<flags>[,ncfrag=<off>/<total>];<body>`.
//!
//! - [`ExtPacket`]: a checked, typed view over one datagram's bytes.
//! - [`ExtRepr`]: the parsed fields, borrowing the datagram (zero copy).
//! - [`ExtRecord`]: a raw printk record and its encoder
//!   ([`ExtRecord::datagrams`]), which reproduces Linux 6.1's
//!   `info_print_ext_header` + `msg_print_ext_body` (printk) and
//!   `send_ext_msg_udp` (netconsole) byte for byte, fragmentation included.

use super::escape::{escape_byte, escaped_len, needs_escape, prefix_len_while, Unescape};
use super::{
    dec_len, parse_dec, DecodeError, EncodeError, HeaderField, Writer, CONSOLE_EXT_LOG_MAX,
    MAX_PRINT_CHUNK, MAX_RELEASE_LEN,
};

/// The `ncfrag=<offset>/<total>` header field of one fragment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Frag {
    /// Byte offset of this fragment's payload within the record's body.
    pub offset: u32,
    /// Length of the whole body (text, `\n` and dictionary lines).
    pub total: u32,
}

/// Where the fields of a checked datagram are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Layout {
    /// Length of the release prefix (without its comma), if present.
    release_len: Option<usize>,
    prefix: u32,
    seq: u64,
    ts_usec: u64,
    flags: u8,
    frag: Option<Frag>,
    /// End of the standard fields (`<prefix>,<seq>,<ts_usec>,<flags>`).
    std_end: usize,
    /// Index of the `;`.
    semi: usize,
    /// End of the payload (the datagram length, except for the NUL quirk).
    payload_end: usize,
}

/// A typed view over the bytes of one extended netconsole datagram.
///
/// [`ExtPacket::new_checked`] validates the whole datagram once, so the
/// accessors cannot fail.
#[derive(Clone, Debug)]
pub struct ExtPacket<T: AsRef<[u8]>> {
    buffer: T,
    layout: Layout,
}

fn is_flag(field: &[u8]) -> bool {
    matches!(field, [b'-'] | [b'c'])
}

fn is_number(field: &[u8]) -> bool {
    !field.is_empty() && field.iter().all(u8::is_ascii_digit)
}

fn parse_ncfrag(value: &[u8]) -> Option<Frag> {
    let slash = value.iter().position(|&c| c == b'/')?;
    let offset = parse_dec(value.get(..slash)?)?;
    let total = parse_dec(value.get(slash.checked_add(1)?..)?)?;
    Some(Frag {
        offset: u32::try_from(offset).ok()?,
        total: u32::try_from(total).ok()?,
    })
}

/// Splits `bytes` at commas, yielding `(start, field)`.
fn fields(bytes: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let mut start = 0usize;
    bytes.split(|&c| c == b',').map(move |f| {
        let at = start;
        start = start.saturating_add(f.len()).saturating_add(1);
        (at, f)
    })
}

fn check(d: &[u8]) -> Result<Layout, DecodeError> {
    if d.is_empty() {
        return Err(DecodeError::Empty);
    }
    if d.len() > MAX_PRINT_CHUNK {
        return Err(DecodeError::Oversized {
            len: d.len(),
            max: MAX_PRINT_CHUNK,
        });
    }
    let mut semi = None;
    for (i, &c) in d.iter().enumerate() {
        if c == b';' {
            semi = Some(i);
            break;
        }
        if !(b'!'..=b'~').contains(&c) {
            return Err(DecodeError::InvalidByte { offset: i, byte: c });
        }
    }
    let semi = semi.ok_or(DecodeError::Truncated { len: d.len() })?;
    let header = d.get(..semi).unwrap_or(&[]);

    // Find `<prefix>,<seq>,<ts_usec>,<flags>`: the first flag field preceded
    // by three numbers. Anything before it is the release (which may itself
    // contain commas); anything after it is extra fields such as ncfrag.
    let mut last3: [(usize, &[u8]); 3] = [(0, &[]); 3];
    let mut seen = 0usize;
    let mut std_fields = None;
    for (at, f) in fields(header) {
        if seen >= 3 && is_flag(f) && last3.iter().all(|(_, g)| is_number(g)) {
            std_fields = Some((last3, at, f));
            break;
        }
        last3.rotate_left(1);
        if let Some(slot) = last3.last_mut() {
            *slot = (at, f);
        }
        seen = seen.saturating_add(1);
    }
    let ([(prefix_at, prefix), (_, seq), (_, ts)], flags_at, flags) =
        std_fields.ok_or(DecodeError::MalformedHeader(HeaderField::Layout))?;
    let release_len = prefix_at.checked_sub(1);
    if release_len.is_some_and(|n| n > MAX_RELEASE_LEN) {
        return Err(DecodeError::MalformedHeader(HeaderField::Release));
    }
    let prefix = parse_dec(prefix)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or(DecodeError::MalformedHeader(HeaderField::Prefix))?;
    let seq = parse_dec(seq).ok_or(DecodeError::MalformedHeader(HeaderField::Seq))?;
    let ts_usec = parse_dec(ts).ok_or(DecodeError::MalformedHeader(HeaderField::Timestamp))?;
    let flags_byte = flags.first().copied().unwrap_or(b'-');
    let std_end = flags_at.saturating_add(1);

    let mut frag = None;
    let extra = header.get(std_end..).unwrap_or(&[]);
    for (_, f) in fields(extra).skip(1) {
        let eq = f
            .iter()
            .position(|&c| c == b'=')
            .filter(|&eq| eq > 0)
            .ok_or(DecodeError::MalformedHeader(HeaderField::Extra))?;
        let (key, value) = f.split_at_checked(eq).unwrap_or((f, &[]));
        if key == b"ncfrag" {
            let parsed = value.get(1..).and_then(parse_ncfrag);
            match (frag, parsed) {
                (None, Some(p)) => frag = Some(p),
                _ => return Err(DecodeError::MalformedHeader(HeaderField::Ncfrag)),
            }
        }
    }

    let body_start = semi.saturating_add(1);
    let mut payload_end = d.len();
    // Linux 6.1 quirk: with `release` on, an unfragmented message of exactly
    // MAX_PRINT_CHUNK bytes goes through scnprintf into a 1000-byte buffer,
    // so its last byte (the final '\n') is sent as NUL.
    if frag.is_none() && release_len.is_some() && d.len() == MAX_PRINT_CHUNK && d.last() == Some(&0)
    {
        payload_end = d.len().saturating_sub(1);
    }
    let payload = d.get(body_start..payload_end).unwrap_or(&[]);
    // Printable ASCII, '\' starting an escape, and '\n' between lines.
    let valid = prefix_len_while(payload, |c| c == b'\n' || (b' '..=b'~').contains(&c));
    if valid < payload.len() {
        let i = valid;
        let offset = body_start.saturating_add(i);
        return Err(DecodeError::InvalidByte {
            offset,
            byte: d.get(offset).copied().unwrap_or(0),
        });
    }
    match frag {
        Some(f) => {
            let fits = usize::try_from(f.offset)
                .ok()
                .and_then(|o| o.checked_add(payload.len()))
                .zip(usize::try_from(f.total).ok())
                .is_some_and(|(end, total)| end <= total);
            if payload.is_empty() || f.offset >= f.total || !fits {
                return Err(DecodeError::FragOutOfRange {
                    offset: f.offset,
                    len: payload.len(),
                    total: f.total,
                });
            }
        }
        None => {
            let complete = payload.last() == Some(&b'\n') || payload_end < d.len();
            if !complete {
                return Err(DecodeError::Truncated { len: d.len() });
            }
        }
    }
    Ok(Layout {
        release_len,
        prefix,
        seq,
        ts_usec,
        flags: flags_byte,
        frag,
        std_end,
        semi,
        payload_end,
    })
}

impl<T: AsRef<[u8]>> ExtPacket<T> {
    /// Validate `buffer` as one extended netconsole datagram.
    pub fn new_checked(buffer: T) -> Result<Self, DecodeError> {
        let layout = check(buffer.as_ref())?;
        Ok(ExtPacket { buffer, layout })
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// The kernel release prefix, when the target has `release` enabled.
    pub fn release(&self) -> Option<&[u8]> {
        let n = self.layout.release_len?;
        self.bytes().get(..n)
    }

    /// `(facility << 3) | level`.
    pub fn prefix(&self) -> u32 {
        self.layout.prefix
    }

    /// The record's printk sequence number.
    pub fn seq(&self) -> u64 {
        self.layout.seq
    }

    /// The record's timestamp, microseconds since boot.
    pub fn ts_usec(&self) -> u64 {
        self.layout.ts_usec
    }

    /// `b'c'` for a continuation record (`LOG_CONT`), else `b'-'`.
    pub fn flags(&self) -> u8 {
        self.layout.flags
    }

    /// The ncfrag field, when this datagram is one fragment of a record.
    pub fn frag(&self) -> Option<Frag> {
        self.layout.frag
    }

    /// Header fields after `<flags>` other than ncfrag (e.g. `caller=T1` on
    /// kernels built with `CONFIG_PRINTK_CALLER`), comma-separated, or empty.
    pub fn extra_fields(&self) -> impl Iterator<Item = &[u8]> {
        let extra = self
            .bytes()
            .get(self.layout.std_end..self.layout.semi)
            .unwrap_or(&[]);
        fields(extra)
            .skip(1)
            .map(|(_, f)| f)
            .filter(|f| !f.starts_with(b"ncfrag="))
    }

    /// The bytes after the `;`: escaped text, `\n`, dictionary lines (or a
    /// piece of them, for a fragment).
    pub fn payload(&self) -> &[u8] {
        let start = self.layout.semi.saturating_add(1);
        self.bytes()
            .get(start..self.layout.payload_end)
            .unwrap_or(&[])
    }
}

/// One decoded extended datagram (or a reassembled record), borrowing its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ExtRepr<'a> {
    /// The kernel release prefix (`release` enabled on the target).
    pub release: Option<&'a [u8]>,
    /// `(facility << 3) | level`.
    pub prefix: u32,
    /// printk sequence number.
    pub seq: u64,
    /// Timestamp, microseconds since boot.
    pub ts_usec: u64,
    /// `b'-'`, or `b'c'` for a continuation record.
    pub flags: u8,
    /// Present when this is one fragment of a longer record.
    pub frag: Option<Frag>,
    /// After the `;`: escaped text, `\n`, dictionary lines (or a piece of them).
    pub payload: &'a [u8],
}

impl<'a> ExtRepr<'a> {
    /// Decode one datagram.
    pub fn parse(datagram: &'a [u8]) -> Result<Self, DecodeError> {
        Ok(Self::from_packet(&ExtPacket::new_checked(datagram)?))
    }

    /// The parsed value of a checked packet.
    pub fn from_packet(packet: &ExtPacket<&'a [u8]>) -> Self {
        let bytes: &'a [u8] = packet.buffer;
        let l = packet.layout;
        ExtRepr {
            release: l.release_len.and_then(|n| bytes.get(..n)),
            prefix: l.prefix,
            seq: l.seq,
            ts_usec: l.ts_usec,
            flags: l.flags,
            frag: l.frag,
            payload: bytes
                .get(l.semi.saturating_add(1)..l.payload_end)
                .unwrap_or(&[]),
        }
    }

    /// The syslog level (0 = emergency ... 7 = debug).
    pub fn level(&self) -> u8 {
        // Masked to three bits, so the narrowing is exact.
        (self.prefix & 7) as u8
    }

    /// The syslog facility (0 = kernel, 1 = user, ...).
    pub fn facility(&self) -> u32 {
        self.prefix >> 3
    }

    /// Whether this record continues the previous one (`LOG_CONT`).
    pub fn is_cont(&self) -> bool {
        self.flags == b'c'
    }

    /// The escaped text: the payload up to its first `\n`. For a fragment
    /// this is only the piece it carries.
    pub fn text(&self) -> &'a [u8] {
        let end = self
            .payload
            .iter()
            .position(|&c| c == b'\n')
            .unwrap_or(self.payload.len());
        self.payload.get(..end).unwrap_or(&[])
    }

    /// The text, unescaped.
    pub fn unescaped_text(&self) -> Unescape<'a> {
        Unescape::new(self.text())
    }

    /// The dictionary lines ` KEY=VALUE` after the text, still escaped.
    /// Meaningful for whole records (not single fragments).
    pub fn dict(&self) -> DictEntries<'a> {
        let start = self.text().len().saturating_add(1);
        DictEntries {
            body: self.payload,
            pos: start.min(self.payload.len()),
        }
    }

    /// Length of the datagram [`ExtRepr::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        let mut n = self.release.map_or(0, |r| r.len().saturating_add(1));
        n = n
            .saturating_add(dec_len(u64::from(self.prefix)))
            .saturating_add(dec_len(self.seq))
            .saturating_add(dec_len(self.ts_usec))
            .saturating_add(5); // three commas, the flag, the ';'
        if let Some(f) = self.frag {
            n = n
                .saturating_add(frag_field_len(f.offset, f.total))
                .saturating_sub(1); // frag_field_len counts the ';' again
        }
        n.saturating_add(self.payload.len())
    }

    /// Write this datagram back out (the inverse of [`ExtRepr::parse`]).
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        if !is_flag(&[self.flags]) {
            return Err(EncodeError::InvalidField);
        }
        let needed = self.buffer_len();
        let available = out.len();
        let mut w = Writer::new(out);
        let mut ok = true;
        if let Some(r) = self.release {
            ok &= w.put(r) && w.put_byte(b',');
        }
        ok &= w.put_dec(u64::from(self.prefix))
            && w.put_byte(b',')
            && w.put_dec(self.seq)
            && w.put_byte(b',')
            && w.put_dec(self.ts_usec)
            && w.put_byte(b',')
            && w.put_byte(self.flags);
        if let Some(f) = self.frag {
            ok &= put_frag_field(&mut w, f.offset, f.total);
        } else {
            ok &= w.put_byte(b';');
        }
        ok &= w.put(self.payload);
        if ok {
            Ok(w.len())
        } else {
            Err(EncodeError::BufferTooSmall { needed, available })
        }
    }
}

/// Iterator over the ` KEY=VALUE` lines of a body, yielding the escaped key
/// and value.
#[derive(Clone, Debug)]
pub struct DictEntries<'a> {
    body: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for DictEntries<'a> {
    type Item = Result<(&'a [u8], &'a [u8]), DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        let at = self.pos;
        let rest = self.body.get(at..).filter(|r| !r.is_empty())?;
        let end = rest.iter().position(|&c| c == b'\n');
        let line = rest.get(..end.unwrap_or(rest.len())).unwrap_or(&[]);
        let parsed = line
            .strip_prefix(b" ")
            .and_then(|kv| {
                let eq = kv.iter().position(|&c| c == b'=')?;
                Some((kv.get(..eq)?, kv.get(eq.checked_add(1)?..)?))
            })
            .filter(|(k, _)| !k.is_empty() && end.is_some());
        match parsed {
            Some(kv) => {
                self.pos = at.saturating_add(line.len()).saturating_add(1);
                Some(Ok(kv))
            }
            None => {
                self.pos = self.body.len();
                Some(Err(DecodeError::MalformedDict { offset: at }))
            }
        }
    }
}

/// One printk record, raw, ready to be sent the way Linux 6.1 netconsole
/// sends it to an extended target.
#[derive(Clone, Copy, Debug)]
pub struct ExtRecord<'a> {
    /// The kernel release, when the target has `release` enabled
    /// (at most [`MAX_RELEASE_LEN`] bytes).
    pub release: Option<&'a [u8]>,
    /// `(facility << 3) | level`.
    pub prefix: u32,
    /// printk sequence number.
    pub seq: u64,
    /// Timestamp, microseconds since boot.
    pub ts_usec: u64,
    /// A continuation record (`LOG_CONT`): flags `c` instead of `-`.
    pub cont: bool,
    /// The text, raw (escaped by the encoder), without a trailing `\n`.
    pub text: &'a [u8],
    /// Dictionary entries, raw; printk sends `SUBSYSTEM` then `DEVICE`, and
    /// skips entries whose value is empty.
    pub dict: &'a [(&'a [u8], &'a [u8])],
}

/// Longest header the encoder builds: release, comma, and
/// `<u32>,<u64>,<u64>,<flag>`.
const HEADER_CAP: usize = MAX_RELEASE_LEN + 1 + 10 + 1 + 20 + 1 + 20 + 1 + 1;

impl ExtRecord<'_> {
    /// The datagrams of this record, in the order the kernel sends them.
    pub fn datagrams(&self) -> ExtDatagrams<'_> {
        ExtDatagrams::new(self)
    }
}

/// Length of `,ncfrag=<offset>/<total>;`.
fn frag_field_len(offset: u32, total: u32) -> usize {
    dec_len(u64::from(offset))
        .saturating_add(dec_len(u64::from(total)))
        .saturating_add(10)
}

fn put_frag_field(w: &mut Writer<'_>, offset: u32, total: u32) -> bool {
    w.put(b",ncfrag=")
        && w.put_dec(u64::from(offset))
        && w.put_byte(b'/')
        && w.put_dec(u64::from(total))
        && w.put_byte(b';')
}

/// Produces an extended record's body lazily, with printk's escaping and its
/// exact behaviour when the `CONSOLE_EXT_LOG_MAX` buffer runs out.
#[derive(Clone, Debug)]
struct BodyCursor<'a> {
    text: &'a [u8],
    dict: &'a [(&'a [u8], &'a [u8])],
    /// 0: text; then three segments per dict entry (` `, key, value).
    seg: usize,
    /// Position in the segment's raw bytes; `len` means its end character.
    pos: usize,
    pending: [u8; 4],
    pend_at: u8,
    pend_len: u8,
    /// Room left in printk's buffer.
    budget: usize,
}

impl<'a> BodyCursor<'a> {
    fn new(record: &ExtRecord<'a>, header_len: usize) -> Self {
        let mut c = BodyCursor {
            text: record.text,
            dict: record.dict,
            seg: 0,
            pos: 0,
            pending: [0; 4],
            pend_at: 0,
            pend_len: 0,
            budget: CONSOLE_EXT_LOG_MAX.saturating_sub(header_len),
        };
        c.skip_empty_entries();
        c
    }

    /// The raw bytes and end character of the current segment.
    fn segment(&self) -> Option<(&'a [u8], u8)> {
        let Some(s) = self.seg.checked_sub(1) else {
            return Some((self.text, b'\n'));
        };
        let (key, value) = *self.dict.get(s / 3)?;
        Some(match s % 3 {
            0 => (&[][..], b' '),
            1 => (key, b'='),
            _ => (value, b'\n'),
        })
    }

    /// printk's `msg_add_dict_text` skips entries with an empty value.
    fn skip_empty_entries(&mut self) {
        while let Some(s) = self.seg.checked_sub(1) {
            match self.dict.get(s / 3) {
                Some((_, v)) if v.is_empty() && s % 3 == 0 => self.seg = self.seg.saturating_add(3),
                _ => break,
            }
        }
    }

    fn next_byte(&mut self) -> Option<u8> {
        loop {
            if self.pend_at < self.pend_len {
                let b = self.pending.get(usize::from(self.pend_at)).copied();
                self.pend_at = self.pend_at.wrapping_add(1);
                return b;
            }
            if self.budget == 0 {
                // Every later unit writes nothing; the body is complete.
                return None;
            }
            let (raw, endc) = self.segment()?;
            let (unit, unit_len, room) = match raw.get(self.pos) {
                Some(&c) => {
                    let (unit, n) = escape_byte(c);
                    // scnprintf("\\x%02x") keeps one byte of room for its NUL.
                    let room = if n == 4 {
                        self.budget.saturating_sub(1)
                    } else {
                        self.budget
                    };
                    (unit, n, room)
                }
                None if self.pos == raw.len() => ([endc, 0, 0, 0], 1, self.budget),
                None => {
                    self.seg = self.seg.saturating_add(1);
                    self.pos = 0;
                    self.skip_empty_entries();
                    continue;
                }
            };
            self.pos = self.pos.saturating_add(1);
            let k = unit_len.min(room);
            self.budget = self.budget.saturating_sub(k);
            self.pending = unit;
            self.pend_at = 0;
            // k <= 4.
            self.pend_len = k as u8;
        }
    }

    /// Fill `out` (the caller knows enough bytes remain); returns how many
    /// bytes were written.
    fn fill(&mut self, out: &mut [u8]) -> usize {
        let mut n = 0usize;
        while let Some(dst) = out.get_mut(n..).filter(|d| !d.is_empty()) {
            // Fast path: copy a run of bytes printk leaves as they are.
            if self.pend_at >= self.pend_len {
                if let Some((raw, _)) = self.segment() {
                    let rest = raw.get(self.pos..).unwrap_or(&[]);
                    let room = dst.len().min(self.budget);
                    let rest = rest.get(..room).unwrap_or(rest);
                    let run = prefix_len_while(rest, |c| !needs_escape(c));
                    if let (Some(d), Some(src)) = (dst.get_mut(..run), rest.get(..run)) {
                        if run > 0 {
                            d.copy_from_slice(src);
                            self.pos = self.pos.saturating_add(run);
                            self.budget = self.budget.saturating_sub(run);
                            n = n.saturating_add(run);
                            continue;
                        }
                    }
                    // A whole `\xNN` that fits both `out` and printk's buffer.
                    if let (Some(&c), Some(d)) = (rest.first(), dst.get_mut(..4)) {
                        if self.budget > 4 {
                            let (unit, _) = escape_byte(c);
                            d.copy_from_slice(&unit);
                            self.pos = self.pos.saturating_add(1);
                            self.budget = self.budget.saturating_sub(4);
                            n = n.saturating_add(4);
                            continue;
                        }
                    }
                }
            }
            match (self.next_byte(), dst.first_mut()) {
                (Some(b), Some(slot)) => *slot = b,
                _ => break,
            }
            n = n.saturating_add(1);
        }
        n
    }

    /// Length of the whole body, from a fresh cursor.
    fn remaining_len(&self) -> usize {
        // Without truncation the length is a sum; printk's buffer can only
        // cut a body longer than the room left (see `next_byte`).
        let text = escaped_len(self.text).saturating_add(1);
        let whole = self
            .dict
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .fold(text, |n, (k, v)| {
                n.saturating_add(escaped_len(k))
                    .saturating_add(escaped_len(v))
                    .saturating_add(3)
            });
        if whole <= self.budget {
            return whole;
        }
        let mut probe = self.clone();
        let mut n = 0usize;
        while probe.next_byte().is_some() {
            n = n.saturating_add(1);
        }
        n
    }
}

/// The datagrams of one [`ExtRecord`]; call [`ExtDatagrams::next_into`] until
/// it returns `None`.
#[derive(Clone, Debug)]
pub struct ExtDatagrams<'a> {
    /// `[<release>,]<prefix>,<seq>,<ts_usec>,<flags>` (no `;`).
    header: [u8; HEADER_CAP],
    header_len: usize,
    /// Length of `<release>,` (0 without release).
    release_len: usize,
    body: BodyCursor<'a>,
    body_len: usize,
    offset: usize,
    fragmented: bool,
    error: Option<EncodeError>,
    done: bool,
}

impl<'a> ExtDatagrams<'a> {
    fn new(r: &ExtRecord<'a>) -> Self {
        let mut header = [0u8; HEADER_CAP];
        let mut error = None;
        let mut release_len = 0usize;
        let len = {
            let mut w = Writer::new(&mut header);
            if let Some(rel) = r.release {
                if rel.len() > MAX_RELEASE_LEN {
                    error = Some(EncodeError::ReleaseTooLong { len: rel.len() });
                } else if !rel.iter().all(|&c| (b'!'..=b'~').contains(&c) && c != b';') {
                    // A receiver could not find the header after such a release.
                    error = Some(EncodeError::InvalidField);
                } else {
                    w.put(rel);
                    w.put_byte(b',');
                    release_len = w.len();
                }
            }
            // Fits: HEADER_CAP covers the longest release and numbers.
            w.put_dec(u64::from(r.prefix));
            w.put_byte(b',');
            w.put_dec(r.seq);
            w.put_byte(b',');
            w.put_dec(r.ts_usec);
            w.put_byte(b',');
            w.put_byte(if r.cont { b'c' } else { b'-' });
            w.len()
        };
        // printk's header (without release) also counts the ';'.
        let printk_header = len.saturating_sub(release_len).saturating_add(1);
        let body = BodyCursor::new(r, printk_header);
        let body_len = body.remaining_len();
        let msg_len = printk_header.saturating_add(body_len);
        ExtDatagrams {
            header,
            header_len: len,
            release_len,
            body,
            body_len,
            offset: 0,
            fragmented: msg_len.saturating_add(release_len) > MAX_PRINT_CHUNK,
            error,
            done: false,
        }
    }

    /// Length of the body (text, `\n`, dictionary) the kernel would send,
    /// which is the `<total>` of any ncfrag field.
    pub fn body_len(&self) -> usize {
        self.body_len
    }

    /// Whether the record is sent as ncfrag fragments.
    pub fn is_fragmented(&self) -> bool {
        self.fragmented
    }

    /// Write the next datagram into `out` (at most [`MAX_PRINT_CHUNK`] bytes
    /// are needed) and return its length; `None` once all are written.
    pub fn next_into(&mut self, out: &mut [u8]) -> Option<Result<usize, EncodeError>> {
        if self.done {
            return None;
        }
        if let Some(e) = self.error {
            self.done = true;
            return Some(Err(e));
        }
        if self.fragmented {
            self.next_fragment(out)
        } else {
            Some(self.whole(out))
        }
    }

    fn whole(&mut self, out: &mut [u8]) -> Result<usize, EncodeError> {
        let needed = self
            .header_len
            .saturating_add(1)
            .saturating_add(self.body_len);
        if out.len() < needed {
            return Err(EncodeError::BufferTooSmall {
                needed,
                available: out.len(),
            });
        }
        let mut w = Writer::new(out);
        w.put(self.header.get(..self.header_len).unwrap_or(&[]));
        w.put_byte(b';');
        let start = w.len();
        let written = match out.get_mut(start..needed) {
            Some(dst) => self.body.fill(dst),
            None => 0,
        };
        if self.release_len > 0 && needed == MAX_PRINT_CHUNK {
            // Linux 6.1: scnprintf("%s,%s") into buf[MAX_PRINT_CHUNK] keeps the
            // last byte for its NUL, and all MAX_PRINT_CHUNK bytes are sent.
            if let Some(last) = out.get_mut(needed.saturating_sub(1)) {
                *last = 0;
            }
        }
        self.done = true;
        Ok(start.saturating_add(written))
    }

    fn next_fragment(&mut self, out: &mut [u8]) -> Option<Result<usize, EncodeError>> {
        if self.offset >= self.body_len {
            self.done = true;
            return None;
        }
        // ncfrag numbers are printed with %d from ints; bodies are < 8192.
        let offset = u32::try_from(self.offset).unwrap_or(u32::MAX);
        let total = u32::try_from(self.body_len).unwrap_or(u32::MAX);
        let this_header = self
            .header_len
            .saturating_add(frag_field_len(offset, total));
        let room = MAX_PRINT_CHUNK.saturating_sub(this_header);
        let chunk = self.body_len.saturating_sub(self.offset).min(room);
        if chunk == 0 {
            // The kernel WARNs and gives up on the record here.
            self.done = true;
            return None;
        }
        let needed = this_header.saturating_add(chunk);
        if out.len() < needed {
            return Some(Err(EncodeError::BufferTooSmall {
                needed,
                available: out.len(),
            }));
        }
        let mut w = Writer::new(out);
        w.put(self.header.get(..self.header_len).unwrap_or(&[]));
        put_frag_field(&mut w, offset, total);
        let written = match out.get_mut(this_header..needed) {
            Some(dst) => self.body.fill(dst),
            None => 0,
        };
        self.offset = self.offset.saturating_add(chunk);
        if self.offset >= self.body_len {
            self.done = true;
        }
        Some(Ok(this_header.saturating_add(written)))
    }
}
