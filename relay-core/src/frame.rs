//! Netpoll-style frame template: Ethernet (optionally 802.1Q) + IPv4/IPv6 + UDP.
//!
//! Linux's netpoll builds every netconsole frame from addresses fixed at
//! configuration time; a relay on a dying host's BMC wants the same: no ARP, no
//! routing, no socket buffers on the transmit path. [`FrameTemplate`] holds the
//! headers, built once by [`FrameTemplate::new`]. Per packet,
//! [`FrameTemplate::write`] copies them into the caller's buffer and patches only
//! what changes: the IP and UDP lengths, the IPv4 ID (a wrapping counter), the
//! IPv4 header checksum (from a precomputed sum of the fixed words) and the UDP
//! checksum, which is accumulated while the payload is copied, in one pass over
//! the bytes. A UDP checksum of 0 is sent as 0xFFFF (RFC 768), as netpoll does.
//!
//! The header fields match netpoll's (Linux 6.1 `netpoll_send_udp`): IPv4 TOS 0,
//! no fragmentation flags, TTL 64; IPv6 traffic class and flow label 0, hop
//! limit 32. The frames are not padded to the 60-byte Ethernet minimum: like
//! netpoll, that is left to the MAC.
//!
//! ```
//! use relay_core::frame::{Endpoints, FrameTemplate, IpEndpoints, MacAddr, MAX_FRAME_LEN};
//! let ep = Endpoints {
//!     src_mac: MacAddr([0x52, 0x54, 0, 0x99, 0, 2]),
//!     dst_mac: MacAddr([0x02, 0, 0, 0x99, 0, 1]),
//!     vlan: None,
//!     ip: IpEndpoints::V4 { src: [10, 99, 0, 2], dst: [10, 99, 0, 1] },
//!     src_port: 6666,
//!     dst_port: 6666,
//! };
//! let mut tpl = FrameTemplate::new(&ep, 1500)?;
//! let mut buf = [0u8; MAX_FRAME_LEN];
//! let len = tpl.write(b"hello\n", &mut buf)?;
//! assert_eq!(len, 14 + 20 + 8 + 6);
//! # Ok::<(), relay_core::frame::FrameError>(())
//! ```

use core::fmt;

/// Length of an Ethernet II header (destination, source, EtherType).
pub const ETH_HEADER_LEN: usize = 14;
/// Length of an 802.1Q tag (TPID + TCI).
pub const VLAN_TAG_LEN: usize = 4;
/// Length of an IPv4 header without options (the template never adds options).
pub const IPV4_HEADER_LEN: usize = 20;
/// Length of the fixed IPv6 header (the template never adds extension headers).
pub const IPV6_HEADER_LEN: usize = 40;
/// Length of a UDP header.
pub const UDP_HEADER_LEN: usize = 8;
/// The largest MTU a template accepts (Ethernet's standard payload size).
pub const MAX_MTU: u16 = 1500;
/// The smallest IPv4 MTU a template accepts: headers plus one payload byte.
pub const MIN_MTU_V4: u16 = (IPV4_HEADER_LEN + UDP_HEADER_LEN + 1) as u16;
/// The smallest IPv6 MTU a template accepts: headers plus one payload byte.
pub const MIN_MTU_V6: u16 = (IPV6_HEADER_LEN + UDP_HEADER_LEN + 1) as u16;
/// The largest frame [`FrameTemplate::write`] can produce: a 1500-byte IP packet
/// behind an Ethernet header and an 802.1Q tag (no FCS; the MAC appends it).
pub const MAX_FRAME_LEN: usize = ETH_HEADER_LEN + VLAN_TAG_LEN + MAX_MTU as usize;
/// The longest header a template can hold: Ethernet + 802.1Q + IPv6 + UDP.
pub const MAX_HEADER_LEN: usize = ETH_HEADER_LEN + VLAN_TAG_LEN + IPV6_HEADER_LEN + UDP_HEADER_LEN;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const IP_PROTO_UDP: u8 = 17;
/// netpoll's IPv4 TTL.
const IPV4_TTL: u8 = 64;
/// netpoll's IPv6 hop limit.
const IPV6_HOP_LIMIT: u8 = 32;
/// The largest valid VLAN ID; 0xFFF is reserved.
const MAX_VID: u16 = 0xffe;
/// The largest 802.1p priority code point.
const MAX_PCP: u8 = 7;

/// An Ethernet MAC address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// An 802.1Q tag: priority code point (0..=7) and VLAN ID (0..=4094).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct VlanTag {
    /// 802.1p priority code point, 0..=7.
    pub pcp: u8,
    /// VLAN ID, 0..=4094 (0 tags priority only).
    pub vid: u16,
}

/// The IP source and destination of the template, which also picks the IP version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IpEndpoints {
    /// IPv4 addresses, in network byte order.
    V4 {
        /// The relay's address.
        src: [u8; 4],
        /// The collector's address.
        dst: [u8; 4],
    },
    /// IPv6 addresses, in network byte order.
    V6 {
        /// The relay's address.
        src: [u8; 16],
        /// The collector's address.
        dst: [u8; 16],
    },
}

/// Everything a template needs to know about both ends, fixed at configuration time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Endpoints {
    /// The relay's MAC (Ethernet source).
    pub src_mac: MacAddr,
    /// The collector's (or the gateway's) MAC, already resolved.
    pub dst_mac: MacAddr,
    /// An 802.1Q tag to insert, if the relay's port is a trunk.
    pub vlan: Option<VlanTag>,
    /// IP version and addresses.
    pub ip: IpEndpoints,
    /// UDP source port.
    pub src_port: u16,
    /// UDP destination port.
    pub dst_port: u16,
}

/// Why a template could not be built or a frame could not be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FrameError {
    /// The payload does not fit in one IP packet of the template's MTU.
    PayloadTooLarge {
        /// Payload bytes offered (saturated at `usize::MAX` for absurd part lists).
        len: usize,
        /// The most the template accepts ([`FrameTemplate::max_payload`]).
        max: usize,
    },
    /// The caller's buffer cannot hold the frame.
    BufferTooSmall {
        /// Bytes the frame needs.
        needed: usize,
        /// Bytes the buffer has.
        available: usize,
    },
    /// The MTU cannot carry the headers plus one payload byte, or exceeds [`MAX_MTU`].
    InvalidMtu {
        /// The MTU asked for.
        mtu: u16,
        /// The smallest MTU usable with this IP version.
        min: u16,
        /// The largest MTU accepted.
        max: u16,
    },
    /// The VLAN tag has a PCP above 7 or a VID above 4094.
    InvalidVlan {
        /// The priority code point asked for.
        pcp: u8,
        /// The VLAN ID asked for.
        vid: u16,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            FrameError::PayloadTooLarge { len, max } => {
                write!(
                    f,
                    "payload of {len} bytes exceeds the {max} bytes one frame can carry"
                )
            }
            FrameError::BufferTooSmall { needed, available } => {
                write!(
                    f,
                    "frame needs {needed} bytes but the buffer has {available}"
                )
            }
            FrameError::InvalidMtu { mtu, min, max } => {
                write!(f, "MTU {mtu} is outside {min}..={max}")
            }
            FrameError::InvalidVlan { pcp, vid } => {
                write!(
                    f,
                    "VLAN tag pcp={pcp} vid={vid} is invalid (pcp 0..=7, vid 0..=4094)"
                )
            }
        }
    }
}

impl core::error::Error for FrameError {}

/// Prebuilt Ethernet/IP/UDP headers, stamped onto each payload by [`write`](Self::write).
#[derive(Clone, Debug)]
pub struct FrameTemplate {
    ep: Endpoints,
    /// The header bytes with lengths, ID and checksums zero.
    hdr: [u8; MAX_HEADER_LEN],
    /// Which of the four header shapes `hdr` holds; fixes every offset.
    layout: Layout,
    /// Largest payload: MTU minus IP and UDP headers.
    max_payload: usize,
    /// IPv4 header sum over every word that does not change per packet.
    ip_sum: u32,
    /// UDP pseudo-header + header sum over every word that does not change per packet.
    udp_sum: u32,
    next_id: u16,
}

/// The header shapes a template can have. Knowing the shape at compile time in
/// [`FrameTemplate::stamp`] turns every header access into a fixed-offset move.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    V4,
    V4Vlan,
    V6,
    V6Vlan,
}

impl Layout {
    const fn header_len(self) -> usize {
        match self {
            Layout::V4 => ETH_HEADER_LEN + IPV4_HEADER_LEN + UDP_HEADER_LEN,
            Layout::V4Vlan => ETH_HEADER_LEN + VLAN_TAG_LEN + IPV4_HEADER_LEN + UDP_HEADER_LEN,
            Layout::V6 => ETH_HEADER_LEN + IPV6_HEADER_LEN + UDP_HEADER_LEN,
            Layout::V6Vlan => MAX_HEADER_LEN,
        }
    }
}

impl FrameTemplate {
    /// Build the headers for `ep`; payloads may fill IP packets up to `mtu` bytes.
    ///
    /// Fails with [`FrameError::InvalidMtu`] if `mtu` exceeds [`MAX_MTU`] or cannot
    /// carry the IP and UDP headers plus one byte, and with
    /// [`FrameError::InvalidVlan`] for an out-of-range tag.
    pub fn new(ep: &Endpoints, mtu: u16) -> Result<Self, FrameError> {
        let v6 = matches!(ep.ip, IpEndpoints::V6 { .. });
        let ip_len = if v6 { IPV6_HEADER_LEN } else { IPV4_HEADER_LEN };
        let min_mtu = if v6 { MIN_MTU_V6 } else { MIN_MTU_V4 };
        if mtu < min_mtu || mtu > MAX_MTU {
            return Err(FrameError::InvalidMtu {
                mtu,
                min: min_mtu,
                max: MAX_MTU,
            });
        }
        if let Some(tag) = ep.vlan {
            if tag.pcp > MAX_PCP || tag.vid > MAX_VID {
                return Err(FrameError::InvalidVlan {
                    pcp: tag.pcp,
                    vid: tag.vid,
                });
            }
        }

        let mut w = HeaderWriter {
            buf: [0; MAX_HEADER_LEN],
            len: 0,
        };
        w.put(&ep.dst_mac.0);
        w.put(&ep.src_mac.0);
        if let Some(tag) = ep.vlan {
            w.put(&ETHERTYPE_VLAN.to_be_bytes());
            let tci = (u16::from(tag.pcp) << 13) | tag.vid;
            w.put(&tci.to_be_bytes());
        }
        let ip_sum;
        let mut udp_sum = u32::from(IP_PROTO_UDP);
        match ep.ip {
            IpEndpoints::V4 { src, dst } => {
                w.put(&ETHERTYPE_IPV4.to_be_bytes());
                // version 4, IHL 5, TOS 0 | total length | ID | flags+fragment 0
                w.put(&[0x45, 0, 0, 0, 0, 0, 0, 0]);
                w.put(&[IPV4_TTL, IP_PROTO_UDP, 0, 0]);
                w.put(&src);
                w.put(&dst);
                let addr_sum = sum_be(&src).wrapping_add(sum_be(&dst));
                ip_sum = 0x4500u32
                    .wrapping_add(u32::from(u16::from_be_bytes([IPV4_TTL, IP_PROTO_UDP])))
                    .wrapping_add(addr_sum);
                udp_sum = udp_sum.wrapping_add(addr_sum);
            }
            IpEndpoints::V6 { src, dst } => {
                w.put(&ETHERTYPE_IPV6.to_be_bytes());
                // version 6, traffic class 0, flow label 0 | payload length | next header | hop limit
                w.put(&[0x60, 0, 0, 0, 0, 0, IP_PROTO_UDP, IPV6_HOP_LIMIT]);
                w.put(&src);
                w.put(&dst);
                ip_sum = 0;
                udp_sum = udp_sum
                    .wrapping_add(sum_be(&src))
                    .wrapping_add(sum_be(&dst));
            }
        }
        w.put(&ep.src_port.to_be_bytes());
        w.put(&ep.dst_port.to_be_bytes());
        w.put(&[0, 0, 0, 0]);
        udp_sum = udp_sum
            .wrapping_add(u32::from(ep.src_port))
            .wrapping_add(u32::from(ep.dst_port));

        Ok(FrameTemplate {
            ep: *ep,
            hdr: w.buf,
            layout: match (v6, ep.vlan.is_some()) {
                (false, false) => Layout::V4,
                (false, true) => Layout::V4Vlan,
                (true, false) => Layout::V6,
                (true, true) => Layout::V6Vlan,
            },
            max_payload: usize::from(mtu)
                .saturating_sub(ip_len)
                .saturating_sub(UDP_HEADER_LEN),
            ip_sum,
            udp_sum,
            next_id: 0,
        })
    }

    /// The addresses the template was built from (with any [`set_dst_mac`](Self::set_dst_mac) applied).
    pub fn endpoints(&self) -> &Endpoints {
        &self.ep
    }

    /// Replace the destination MAC, e.g. after an ARP/NDP refresh of the collector.
    pub fn set_dst_mac(&mut self, mac: MacAddr) {
        self.ep.dst_mac = mac;
        if let Some(d) = self.hdr.get_mut(..6) {
            d.copy_from_slice(&mac.0);
        }
    }

    /// Set the IPv4 ID of the next frame; each frame then takes the next value,
    /// wrapping after 0xFFFF. IPv6 frames have no ID and ignore it.
    pub fn set_next_ip_id(&mut self, id: u16) {
        self.next_id = id;
    }

    /// The IPv4 ID the next frame will carry.
    pub fn next_ip_id(&self) -> u16 {
        self.next_id
    }

    /// Bytes in front of the payload: Ethernet, optional tag, IP and UDP headers.
    pub fn header_len(&self) -> usize {
        self.layout.header_len()
    }

    /// The largest payload one frame carries: MTU minus the IP and UDP headers.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// Write the headers and `payload` into `buf` and return the frame's length.
    ///
    /// The payload copy and the UDP checksum are one pass over the bytes. On
    /// error nothing is written and the IPv4 ID is not consumed.
    #[inline]
    pub fn write(&mut self, payload: &[u8], buf: &mut [u8]) -> Result<usize, FrameError> {
        self.write_parts(core::slice::from_ref(&payload), buf)
    }

    /// Like [`write`](Self::write), with the payload given as consecutive pieces
    /// (e.g. a report header and its body), so the caller needs no scratch buffer.
    pub fn write_parts(&mut self, parts: &[&[u8]], buf: &mut [u8]) -> Result<usize, FrameError> {
        let len = parts.iter().fold(0usize, |n, p| n.saturating_add(p.len()));
        if len > self.max_payload {
            return Err(FrameError::PayloadTooLarge {
                len,
                max: self.max_payload,
            });
        }
        let hdr_len = self.layout.header_len();
        let needed = hdr_len.saturating_add(len);
        let available = buf.len();
        let (head, body) = match buf
            .get_mut(..needed)
            .and_then(|f| f.split_at_mut_checked(hdr_len))
        {
            Some(split) => split,
            None => return Err(FrameError::BufferTooSmall { needed, available }),
        };

        // The fused copy: payload bytes land in `body` while their sum accumulates.
        let mut sum: u64 = 0;
        let mut rest = body;
        let mut odd = false;
        for part in parts {
            let Some((dst, tail)) = rest.split_at_mut_checked(part.len()) else {
                // Unreachable: `body` is exactly the parts' total length.
                return Err(FrameError::BufferTooSmall { needed, available });
            };
            let part_sum = copy_and_sum(part, dst);
            // A part starting at an odd offset has its 16-bit words shifted by a
            // byte; RFC 1071's byte-swap property realigns its sum.
            sum = sum.wrapping_add(if odd {
                u64::from(fold(part_sum).swap_bytes())
            } else {
                part_sum
            });
            odd ^= part.len() & 1 == 1;
            rest = tail;
        }
        // The payload was summed in native-endian words; bring it to network order.
        let payload_sum = u32::from(u16::from_be(fold(sum)));
        // len <= max_payload < MAX_MTU, so the UDP length fits in u16.
        let udp_len = len.wrapping_add(UDP_HEADER_LEN) as u16;
        match self.layout {
            Layout::V4 => {
                self.stamp::<{ Layout::V4.header_len() }, false>(head, udp_len, payload_sum)
            }
            Layout::V4Vlan => {
                self.stamp::<{ Layout::V4Vlan.header_len() }, false>(head, udp_len, payload_sum)
            }
            Layout::V6 => {
                self.stamp::<{ Layout::V6.header_len() }, true>(head, udp_len, payload_sum)
            }
            Layout::V6Vlan => {
                self.stamp::<{ Layout::V6Vlan.header_len() }, true>(head, udp_len, payload_sum)
            }
        }
        Ok(needed)
    }

    /// Copy the `HDR`-byte header into `head` and fill in lengths, ID and checksums.
    #[inline(always)]
    fn stamp<const HDR: usize, const V6: bool>(
        &mut self,
        head: &mut [u8],
        udp_len: u16,
        payload_sum: u32,
    ) {
        let (Some(h), Some(t)) = (head.first_chunk_mut::<HDR>(), self.hdr.first_chunk::<HDR>())
        else {
            return; // Unreachable: `head` is `hdr_len` long and `hdr` holds the layout.
        };
        *h = *t;
        let udp = HDR.wrapping_sub(UDP_HEADER_LEN);
        if V6 {
            let ip = udp.wrapping_sub(IPV6_HEADER_LEN);
            put_be16(h, ip.wrapping_add(4), udp_len);
        } else {
            let ip = udp.wrapping_sub(IPV4_HEADER_LEN);
            let total = udp_len.wrapping_add(IPV4_HEADER_LEN as u16);
            let id = self.next_id;
            self.next_id = id.wrapping_add(1);
            let ip_csum = !fold32(
                self.ip_sum
                    .wrapping_add(u32::from(total))
                    .wrapping_add(u32::from(id)),
            );
            put_be16(h, ip.wrapping_add(2), total);
            put_be16(h, ip.wrapping_add(4), id);
            put_be16(h, ip.wrapping_add(10), ip_csum);
        }
        // The UDP length is counted twice: once in the pseudo-header, once in the header.
        let udp_csum = !fold32(
            self.udp_sum
                .wrapping_add(u32::from(udp_len))
                .wrapping_add(u32::from(udp_len))
                .wrapping_add(payload_sum),
        );
        put_be16(h, udp.wrapping_add(4), udp_len);
        put_be16(
            h,
            udp.wrapping_add(6),
            if udp_csum == 0 { 0xffff } else { udp_csum },
        );
    }
}

/// Builds the header bytes in [`FrameTemplate::new`]; the layout never exceeds
/// [`MAX_HEADER_LEN`], and anything past it would be dropped rather than panic.
struct HeaderWriter {
    buf: [u8; MAX_HEADER_LEN],
    len: usize,
}

impl HeaderWriter {
    fn put(&mut self, bytes: &[u8]) {
        // Sliced to `bytes.len()`, so the copy's length check provably holds
        // on 32-bit targets too (relay-core/panic-check on thumbv7em).
        if let Some(d) = self.buf.get_mut(self.len..).and_then(|d| d.get_mut(..bytes.len())) {
            d.copy_from_slice(bytes);
            self.len = self.len.saturating_add(bytes.len());
        }
    }
}

/// Store `v` big-endian at `at`; offsets come from the template's own layout.
#[inline(always)]
fn put_be16(buf: &mut [u8], at: usize, v: u16) {
    if let Some(d) = buf.get_mut(at..).and_then(|d| d.first_chunk_mut::<2>()) {
        *d = v.to_be_bytes();
    }
}

/// Sum of big-endian 16-bit words of an even-length slice (addresses).
fn sum_be(bytes: &[u8]) -> u32 {
    bytes
        .chunks_exact(2)
        .map(|w| {
            u32::from(u16::from_be_bytes([
                w.first().copied().unwrap_or(0),
                w.get(1).copied().unwrap_or(0),
            ]))
        })
        .fold(0u32, u32::wrapping_add)
}

/// Fold a 32-bit one's-complement sum into 16 bits.
#[inline(always)]
fn fold32(mut s: u32) -> u16 {
    s = (s & 0xffff).wrapping_add(s >> 16);
    s = (s & 0xffff).wrapping_add(s >> 16);
    s as u16
}

/// Fold a 64-bit one's-complement sum into 16 bits.
#[inline(always)]
fn fold(s: u64) -> u16 {
    let s = (s & 0xffff_ffff).wrapping_add(s >> 32);
    let s = (s & 0xffff_ffff).wrapping_add(s >> 32);
    fold32(s as u32)
}

/// Copy `src` into `dst` (same length) and return the one's-complement sum of
/// `src` as native-endian 16-bit words, unfolded.
///
/// The block loop reads 8-byte words and keeps two sums per lane: `full`, the
/// words themselves (wrapping), and `high`, their upper 32-bit halves. Since
/// `full = low + high * 2^32 (mod 2^64)` and the sum of the low halves stays far
/// below 2^64 (at most 2^41 for a 1500-byte payload), `low` is recovered exactly
/// afterwards: no carry handling and no branch inside the loop, one add, one
/// shift and one add per word, which the compiler turns into SIMD where the
/// target has it. The tail (under 64 bytes) is straight-line code: at most one
/// fixed-size step each of 32, 16, 8, 4, 2 and 1 byte(s).
#[inline(always)]
fn copy_and_sum(src: &[u8], dst: &mut [u8]) -> u64 {
    const BLOCK: usize = 64;
    const WORDS: usize = BLOCK / 8;
    let mut full = [0u64; WORDS];
    let mut high = [0u64; WORDS];
    let mut s_blocks = src.chunks_exact(BLOCK);
    let mut d_blocks = dst.chunks_exact_mut(BLOCK);
    for (s, d) in (&mut s_blocks).zip(&mut d_blocks) {
        for (((s8, d8), f), h) in s
            .chunks_exact(8)
            .zip(d.chunks_exact_mut(8))
            .zip(&mut full)
            .zip(&mut high)
        {
            // Chunks are exactly 8 bytes, so the fallback never runs.
            let w = u64::from_ne_bytes(s8.try_into().unwrap_or_default());
            *f = f.wrapping_add(w);
            *h = h.wrapping_add(w >> 32);
            d8.copy_from_slice(&w.to_ne_bytes());
        }
    }
    let full = full.iter().fold(0u64, |a, &x| a.wrapping_add(x));
    let high = high.iter().fold(0u64, |a, &x| a.wrapping_add(x));
    let low = full.wrapping_sub(high << 32);
    let mut acc = low.wrapping_add(high);

    let mut s = s_blocks.remainder();
    let mut d = d_blocks.into_remainder();
    // Under 64 bytes left: one fixed-size step each of 32, 16 and 8 bytes, so
    // the tail is straight-line code rather than a loop.
    acc = acc.wrapping_add(copy_sum_step::<32>(&mut s, &mut d));
    acc = acc.wrapping_add(copy_sum_step::<16>(&mut s, &mut d));
    acc = acc.wrapping_add(copy_sum_step::<8>(&mut s, &mut d));
    // At most 7 bytes left: one step each of 4, 2 and 1 byte(s).
    let mut last = [0u8; 4];
    if let Some((s4, s_rest)) = s.split_first_chunk::<4>() {
        let Some((d4, d_rest)) = core::mem::take(&mut d).split_first_chunk_mut::<4>() else {
            return acc;
        };
        *d4 = *s4;
        acc = acc.wrapping_add(u64::from(u32::from_ne_bytes(*s4)));
        s = s_rest;
        d = d_rest;
    }
    if let Some((s2, s_rest)) = s.split_first_chunk::<2>() {
        let Some((d2, d_rest)) = core::mem::take(&mut d).split_first_chunk_mut::<2>() else {
            return acc;
        };
        *d2 = *s2;
        acc = acc.wrapping_add(u64::from(u16::from_ne_bytes(*s2)));
        s = s_rest;
        d = d_rest;
    }
    if let (Some(&b), Some(db)) = (s.first(), d.first_mut()) {
        *db = b;
        // An odd final byte is the high-order byte of a zero-padded word.
        if let Some(l) = last.first_mut() {
            *l = b;
        }
    }
    acc.wrapping_add(u64::from(u32::from_ne_bytes(last)))
}

/// If `s` holds at least `N` bytes (a multiple of 8), copy the first `N` into
/// `d`, advance both, and return their sum as in [`copy_and_sum`].
#[inline(always)]
fn copy_sum_step<const N: usize>(s: &mut &[u8], d: &mut &mut [u8]) -> u64 {
    let Some((sn, s_rest)) = s.split_first_chunk::<N>() else {
        return 0;
    };
    // `s` and `d` have the same length, so this `else` never runs.
    let Some((dn, d_rest)) = core::mem::take(d).split_first_chunk_mut::<N>() else {
        return 0;
    };
    *dn = *sn;
    let (mut full, mut high) = (0u64, 0u64);
    for w8 in sn.chunks_exact(8) {
        let w = u64::from_ne_bytes(w8.try_into().unwrap_or_default());
        full = full.wrapping_add(w);
        high = high.wrapping_add(w >> 32);
    }
    *s = s_rest;
    *d = d_rest;
    // At most four words: the low halves cannot overflow (see copy_and_sum).
    full.wrapping_sub(high << 32).wrapping_add(high)
}
