//! Structured last-gasp report: a signed, postcard-encoded datagram.
//!
//! # Wire layout
//!
//! ```text
//! +--------+-----------------------------------+------------------+
//! | MAGIC  | postcard(Report)                  | tag              |
//! | 4 B    | version u8 first, then the fields | 16 B             |
//! +--------+-----------------------------------+------------------+
//! tag = HMAC-SHA256(key, MAGIC || body)[..16], key = the relay's 32-byte key
//! ```
//!
//! postcard writes a `u8` as one raw byte, so the version is always the byte
//! right after the magic: the verifier reads it *before* it trusts any other
//! part of the layout, and a future layout is refused as
//! [`Refusal::WrongVersion`] rather than as a bad tag.
//!
//! The bridge runs [`verify`] (magic, length, version, tag, decode) and then
//! [`Freshness`] (per-relay `(boot_counter, sequence)` order). Every refusal
//! has a typed reason in [`Refusal`].
use crate::detect::{Certainty, Kind};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// First bytes of every report datagram.
///
/// No netconsole datagram can start with it, so the bridge can demultiplex
/// reports and netconsole on one port by the first byte alone:
/// - extended netconsole starts with an ASCII digit (`<prefix>,`), or with the
///   release string (`6.1.0-13-amd64,`), which is printable ASCII;
/// - basic netconsole is console text: printk records are NUL-terminated C
///   strings, so a NUL byte never starts (or appears in) one.
///
/// The NUL comes first for that reason; `0xFF` never occurs in UTF-8, and
/// `LG` names the protocol in a hex dump.
pub const MAGIC: [u8; 4] = [0x00, 0xFF, b'L', b'G'];

/// The report layout this code writes and accepts.
pub const VERSION: u8 = 1;

/// Length of the truncated HMAC-SHA256 tag at the end of a report.
pub const TAG_LEN: usize = 16;

/// Length of a relay's key.
pub const KEY_LEN: usize = 32;

/// Longest relay id, in bytes.
pub const MAX_RELAY_ID: usize = 64;
/// Longest node name, in bytes (a Kubernetes node name is a DNS subdomain).
pub const MAX_NODE_NAME: usize = 253;
/// Longest trigger line, in bytes. The relay cuts longer lines at a UTF-8
/// boundary (see [`truncate_utf8`]).
pub const MAX_TRIGGER_LINE: usize = 512;

/// Shortest datagram that could be a report: magic, version byte, tag.
pub const MIN_REPORT_LEN: usize = MAGIC.len() + 1 + TAG_LEN;

/// Upper bound of an encoded report with every field at its limit; fits in
/// one UDP datagram over IPv4 or IPv6 with a 1500-byte MTU.
pub const MAX_REPORT_LEN: usize = MAGIC.len()
    + 1 // version
    + 2 + MAX_RELAY_ID // varint length + bytes
    + 2 + MAX_NODE_NAME
    + 5 // boot_counter varint
    + 5 // sequence varint
    + 2 // kind
    + 1 // certainty
    + 2 + MAX_TRIGGER_LINE
    + 1 + 10 // Option<u64>
    + 3 // context_lines varint
    + 1 // repeat_index
    + TAG_LEN;

/// A relay's 32-byte HMAC key.
pub type Key = [u8; KEY_LEN];

/// One structured last-gasp report (the parsed value; the datagram is its
/// signed encoding).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report<'a> {
    /// Layout version; [`VERSION`] for reports written by this code.
    pub version: u8,
    /// The relay that saw it (names the key in the bridge's keyring).
    pub relay_id: &'a str,
    /// The Kubernetes node the relay watches.
    pub node_name: &'a str,
    /// The relay's persistent boot counter (bumped at every relay start).
    pub boot_counter: u32,
    /// Report number within this relay boot. Repeats of one report share it;
    /// a new report (e.g. the confirmation) takes the next one.
    pub sequence: u32,
    /// What happened.
    pub kind: Kind,
    /// Suspected (fatal line seen) or confirmed (end marker or silence).
    pub certainty: Certainty,
    /// The console line that triggered, ANSI/CR stripped.
    pub trigger_line: &'a str,
    /// The host's printk timestamp of the trigger line, if it had one.
    pub host_ts_usec: Option<u64>,
    /// How many context lines the relay flushed before this report.
    pub context_lines: u16,
    /// 0 for the first copy of this report, 1.. for the repeats.
    pub repeat_index: u8,
}

/// Why a report could not be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportError {
    /// `out` cannot hold the encoded report.
    BufferTooSmall {
        /// Bytes available in `out`.
        available: usize,
    },
    /// A field is longer than its limit.
    FieldTooLong {
        /// Which field.
        field: Field,
        /// Its length in bytes.
        len: usize,
        /// Its limit in bytes.
        max: usize,
    },
}

/// A string field of a [`Report`] with a length limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// [`Report::relay_id`], at most [`MAX_RELAY_ID`] bytes.
    RelayId,
    /// [`Report::node_name`], at most [`MAX_NODE_NAME`] bytes.
    NodeName,
    /// [`Report::trigger_line`], at most [`MAX_TRIGGER_LINE`] bytes.
    TriggerLine,
}

/// Why a datagram was refused as a report. Every refusal is counted by the
/// bridge under its own name ([`Refusal::name`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// It does not start with [`MAGIC`]: not a report at all.
    BadMagic,
    /// Too short to hold magic, version and tag.
    Truncated {
        /// Datagram length.
        len: usize,
    },
    /// A layout version this code does not speak.
    WrongVersion {
        /// The version byte found.
        got: u8,
    },
    /// The tag does not match: wrong key, or the datagram was altered.
    BadTag,
    /// Tag is right but the body does not decode, has trailing bytes, or
    /// breaks a field limit (a relay bug, not an attack).
    Malformed,
    /// A copy of a report already accepted (same relay, boot counter and
    /// sequence; only the repeat index may differ). The relay sends every
    /// report several times on purpose, so this is expected, not an attack.
    Duplicate {
        /// Boot counter of the report.
        boot_counter: u32,
        /// Sequence of the report.
        sequence: u32,
        /// Which copy this was.
        repeat_index: u8,
    },
    /// Older than what this relay already sent: a replay (or a relay whose
    /// persistent boot counter went backwards).
    Replay {
        /// Newest `(boot_counter, sequence)` accepted from this relay.
        last: (u32, u32),
        /// What this datagram carried.
        got: (u32, u32),
    },
    /// The freshness table has no room for another relay.
    TooManyRelays,
}

impl Refusal {
    /// A stable snake_case name, for metrics labels and logs.
    pub const fn name(&self) -> &'static str {
        match self {
            Refusal::BadMagic => "bad_magic",
            Refusal::Truncated { .. } => "truncated",
            Refusal::WrongVersion { .. } => "wrong_version",
            Refusal::BadTag => "bad_tag",
            Refusal::Malformed => "malformed",
            Refusal::Duplicate { .. } => "duplicate",
            Refusal::Replay { .. } => "replay",
            Refusal::TooManyRelays => "too_many_relays",
        }
    }

    /// `true` for the expected refusal of a repeated copy, which is counted
    /// but neither logged as suspicious nor acted on.
    pub const fn is_duplicate(&self) -> bool {
        matches!(self, Refusal::Duplicate { .. })
    }
}

impl core::fmt::Display for Refusal {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Refusal::BadMagic => f.write_str("not a report (bad magic)"),
            Refusal::Truncated { len } => write!(f, "truncated report ({len} bytes)"),
            Refusal::WrongVersion { got } => {
                write!(f, "report version {got}, expected {VERSION}")
            }
            Refusal::BadTag => f.write_str("bad tag (wrong key or altered report)"),
            Refusal::Malformed => f.write_str("malformed report body"),
            Refusal::Duplicate {
                boot_counter,
                sequence,
                repeat_index,
            } => write!(
                f,
                "repeat {repeat_index} of report {boot_counter}/{sequence} already accepted"
            ),
            Refusal::Replay { last, got } => write!(
                f,
                "replayed report {}/{} (last accepted {}/{})",
                got.0, got.1, last.0, last.1
            ),
            Refusal::TooManyRelays => f.write_str("freshness table full"),
        }
    }
}

impl core::fmt::Display for ReportError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ReportError::BufferTooSmall { available } => {
                write!(f, "report does not fit in {available} bytes")
            }
            ReportError::FieldTooLong { field, len, max } => {
                write!(f, "{field:?} is {len} bytes, limit {max}")
            }
        }
    }
}

/// `true` if the datagram starts with [`MAGIC`] (the bridge's demultiplexer:
/// reports go to [`verify`], everything else to the netconsole decoders).
pub fn is_report(datagram: &[u8]) -> bool {
    datagram.starts_with(&MAGIC)
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character
/// boundary.
pub fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end = end.saturating_sub(1);
    }
    s.get(..end).unwrap_or("")
}

fn check_limits(r: &Report<'_>) -> Result<(), ReportError> {
    for (field, len, max) in [
        (Field::RelayId, r.relay_id.len(), MAX_RELAY_ID),
        (Field::NodeName, r.node_name.len(), MAX_NODE_NAME),
        (Field::TriggerLine, r.trigger_line.len(), MAX_TRIGGER_LINE),
    ] {
        if len > max {
            return Err(ReportError::FieldTooLong { field, len, max });
        }
    }
    Ok(())
}

fn mac(key: &Key) -> Hmac<Sha256> {
    // HMAC takes keys of any length, so this never fails; the fallback keeps
    // the function total without a panic path.
    match <Hmac<Sha256> as Mac>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => <Hmac<Sha256> as Mac>::new(&Default::default()),
    }
}

/// Encode `r` and sign it with `key` into `out`; returns the datagram length.
///
/// The `version` field is written as given, so tests can produce other
/// versions; the relay always sets [`VERSION`]. A relay that signs many
/// reports keeps a [`Signer`] instead, which hashes the key once.
pub fn encode_signed(r: &Report<'_>, key: &Key, out: &mut [u8]) -> Result<usize, ReportError> {
    Signer::new(key).encode_signed(r, out)
}

/// A relay's key, pre-hashed: HMAC's inner and outer key blocks are
/// compressed once here, which saves two of the five SHA-256 compressions of
/// every report the relay signs.
#[derive(Clone)]
pub struct Signer {
    keyed: Hmac<Sha256>,
}

impl core::fmt::Debug for Signer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Never print key material.
        f.write_str("Signer { .. }")
    }
}

impl Signer {
    /// Pre-hash `key`.
    pub fn new(key: &Key) -> Self {
        Signer { keyed: mac(key) }
    }

    /// [`encode_signed`] with the pre-hashed key.
    pub fn encode_signed(&self, r: &Report<'_>, out: &mut [u8]) -> Result<usize, ReportError> {
        encode_with(r, self.keyed.clone(), out)
    }

    /// [`verify`] with the pre-hashed key (for a bridge's keyring).
    pub fn verify<'a>(&self, datagram: &'a [u8]) -> Result<Report<'a>, Refusal> {
        verify_with(datagram, || self.keyed.clone())
    }
}

fn encode_with(r: &Report<'_>, mut m: Hmac<Sha256>, out: &mut [u8]) -> Result<usize, ReportError> {
    check_limits(r)?;
    let available = out.len();
    let too_small = ReportError::BufferTooSmall { available };
    let (magic, rest) = out.split_at_mut_checked(MAGIC.len()).ok_or(too_small)?;
    magic.copy_from_slice(&MAGIC);
    let body_room = rest.len().checked_sub(TAG_LEN).ok_or(too_small)?;
    let body_len = {
        let body_buf = rest.get_mut(..body_room).ok_or(too_small)?;
        postcard::to_slice(r, body_buf)
            .map_err(|_| too_small)?
            .len()
    };
    let signed_len = MAGIC.len().checked_add(body_len).ok_or(too_small)?;
    let total = signed_len.checked_add(TAG_LEN).ok_or(too_small)?;
    let (signed, tail) = out.split_at_mut_checked(signed_len).ok_or(too_small)?;
    m.update(signed);
    let full = m.finalize().into_bytes();
    let tag_out = tail.get_mut(..TAG_LEN).ok_or(too_small)?;
    let tag_in = full.get(..TAG_LEN).ok_or(too_small)?;
    tag_out.copy_from_slice(tag_in);
    Ok(total)
}

/// Check a datagram's magic, length, version and tag under `key`, then decode
/// it. Freshness is a separate step ([`Freshness::check`]) because it needs
/// the bridge's per-relay state.
///
/// The tag comparison is constant-time.
pub fn verify<'a>(datagram: &'a [u8], key: &Key) -> Result<Report<'a>, Refusal> {
    verify_with(datagram, || mac(key))
}

fn verify_with<'a>(
    datagram: &'a [u8],
    keyed: impl FnOnce() -> Hmac<Sha256>,
) -> Result<Report<'a>, Refusal> {
    if !is_report(datagram) {
        // A prefix of the magic is a truncated report, anything else is not one.
        return if !datagram.is_empty() && MAGIC.starts_with(datagram) {
            Err(Refusal::Truncated {
                len: datagram.len(),
            })
        } else {
            Err(Refusal::BadMagic)
        };
    }
    let len = datagram.len();
    if len < MIN_REPORT_LEN {
        return Err(Refusal::Truncated { len });
    }
    let signed_len = len.saturating_sub(TAG_LEN);
    let (signed, tag) = datagram
        .split_at_checked(signed_len)
        .ok_or(Refusal::Truncated { len })?;
    let body = signed
        .get(MAGIC.len()..)
        .ok_or(Refusal::Truncated { len })?;
    let version = body.first().copied().ok_or(Refusal::Truncated { len })?;
    if version != VERSION {
        return Err(Refusal::WrongVersion { got: version });
    }
    let mut m = keyed();
    m.update(signed);
    m.verify_truncated_left(tag).map_err(|_| Refusal::BadTag)?;
    let (report, trailing) =
        postcard::take_from_bytes::<Report<'a>>(body).map_err(|_| Refusal::Malformed)?;
    if !trailing.is_empty() || check_limits(&report).is_err() {
        return Err(Refusal::Malformed);
    }
    Ok(report)
}

/// Newest report accepted from one relay: its `(boot_counter, sequence)`.
///
/// Both counters compare in serial-number arithmetic (RFC 1982): `a` is newer
/// than `b` when `a - b` (wrapping) is in `1..2^31`. So a relay's persistent
/// boot counter, or a sequence, that wraps from `u32::MAX` to 0 stays fresh
/// instead of locking the relay out for good.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayFreshness {
    last: Option<(u32, u32)>,
}

/// `a` is after `b` in serial-number order.
const fn serial_after(a: u32, b: u32) -> bool {
    let d = a.wrapping_sub(b);
    d != 0 && d < 0x8000_0000
}

impl RelayFreshness {
    /// State for a relay; `last` is what a journal persisted, if anything.
    pub const fn new(last: Option<(u32, u32)>) -> Self {
        RelayFreshness { last }
    }

    /// The newest `(boot_counter, sequence)` accepted, for persisting.
    pub const fn last(&self) -> Option<(u32, u32)> {
        self.last
    }

    /// Accept `r` if it is newer than anything accepted before, and remember
    /// it. A copy of the last accepted report (same counters) is
    /// [`Refusal::Duplicate`]; anything older is [`Refusal::Replay`].
    pub fn check(&mut self, r: &Report<'_>) -> Result<(), Refusal> {
        let got = (r.boot_counter, r.sequence);
        if let Some(last) = self.last {
            if got == last {
                return Err(Refusal::Duplicate {
                    boot_counter: got.0,
                    sequence: got.1,
                    repeat_index: r.repeat_index,
                });
            }
            let newer = if got.0 == last.0 {
                serial_after(got.1, last.1)
            } else {
                serial_after(got.0, last.0)
            };
            if !newer {
                return Err(Refusal::Replay { last, got });
            }
        }
        self.last = Some(got);
        Ok(())
    }
}

/// Freshness state for up to `N` relays, keyed by relay id: the bridge's
/// replay guard after [`verify`]. Bounded; a relay beyond `N` is refused
/// with [`Refusal::TooManyRelays`] (only relays with a valid key get here).
#[derive(Clone, Debug, Default)]
pub struct Freshness<const N: usize> {
    relays: heapless::Vec<(heapless::String<MAX_RELAY_ID>, RelayFreshness), N>,
}

impl<const N: usize> Freshness<N> {
    /// An empty table.
    pub const fn new() -> Self {
        Freshness {
            relays: heapless::Vec::new(),
        }
    }

    /// Number of relays tracked.
    pub fn len(&self) -> usize {
        self.relays.len()
    }

    /// `true` if no relay is tracked yet.
    pub fn is_empty(&self) -> bool {
        self.relays.is_empty()
    }

    /// The state of one relay, if tracked.
    pub fn get(&self, relay_id: &str) -> Option<&RelayFreshness> {
        self.relays
            .iter()
            .find(|(id, _)| id.as_str() == relay_id)
            .map(|(_, s)| s)
    }

    /// Check `r` against its relay's newest accepted report and remember it
    /// if fresh (see [`RelayFreshness::check`]).
    pub fn check(&mut self, r: &Report<'_>) -> Result<(), Refusal> {
        if let Some((_, state)) = self
            .relays
            .iter_mut()
            .find(|(id, _)| id.as_str() == r.relay_id)
        {
            return state.check(r);
        }
        let mut id = heapless::String::new();
        id.push_str(r.relay_id).map_err(|_| Refusal::Malformed)?;
        let mut state = RelayFreshness::default();
        state.check(r)?;
        self.relays
            .push((id, state))
            .map_err(|_| Refusal::TooManyRelays)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_order_wraps() {
        assert!(serial_after(0, u32::MAX));
        assert!(serial_after(5, 4));
        assert!(!serial_after(4, 5));
        assert!(!serial_after(7, 7));
    }

    #[test]
    fn truncate_keeps_char_boundaries() {
        assert_eq!(truncate_utf8("héllo", 2), "h");
        assert_eq!(truncate_utf8("héllo", 3), "hé");
        assert_eq!(truncate_utf8("abc", 10), "abc");
    }
}
