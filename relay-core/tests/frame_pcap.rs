//! The template must rebuild, byte for byte, every UDP frame a stock Linux 6.1
//! kernel's netpoll sent while panicking (tests/fixtures/netconsole/*.pcap).
// Tests fail by panicking; the crate's no-panic lints are for the library.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]
use relay_core::frame::{Endpoints, FrameTemplate, IpEndpoints, MacAddr, MAX_FRAME_LEN};
use std::path::PathBuf;

const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x99, 0x00, 0x02];
const RECEIVER_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x99, 0x00, 0x01];
const GUEST_IP: [u8; 4] = [10, 99, 0, 2];
const RECEIVER_IP: [u8; 4] = [10, 99, 0, 1];

fn fixture(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/netconsole")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// Frames of a classic little-endian microsecond pcap (what QEMU's filter-dump writes).
fn pcap_frames(data: &[u8]) -> Vec<&[u8]> {
    assert!(data.len() >= 24, "pcap shorter than its global header");
    assert_eq!(
        data[..4],
        0xa1b2c3d4u32.to_le_bytes(),
        "not a little-endian usec pcap"
    );
    assert_eq!(
        u32::from_le_bytes(data[20..24].try_into().unwrap()),
        1,
        "link type is not Ethernet"
    );
    let mut frames = Vec::new();
    let mut rest = &data[24..];
    while !rest.is_empty() {
        assert!(rest.len() >= 16, "truncated record header");
        let incl = u32::from_le_bytes(rest[8..12].try_into().unwrap()) as usize;
        let orig = u32::from_le_bytes(rest[12..16].try_into().unwrap()) as usize;
        assert_eq!(incl, orig, "capture was truncated by its snaplen");
        frames.push(&rest[16..16 + incl]);
        rest = &rest[16 + incl..];
    }
    frames
}

/// A captured netpoll frame, split into what the test feeds the template.
struct Captured<'a> {
    frame: &'a [u8],
    /// Ethernet header + IP total length: the frame before the MAC's padding.
    len: usize,
    ip_id: u16,
    src_port: u16,
    dst_port: u16,
    payload: &'a [u8],
}

fn udp_frames(frames: &[&'static [u8]]) -> Vec<Captured<'static>> {
    frames
        .iter()
        .filter(|f| f.len() >= 42 && f[12..14] == [0x08, 0x00] && f[23] == 17)
        .map(|&f| {
            let be16 = |at: usize| u16::from_be_bytes([f[at], f[at + 1]]);
            let len = 14 + usize::from(be16(16));
            assert!(len <= f.len(), "IP total length beyond the captured frame");
            Captured {
                frame: f,
                len,
                ip_id: be16(18),
                src_port: be16(34),
                dst_port: be16(36),
                payload: &f[42..len],
            }
        })
        .collect()
}

fn template(src_port: u16, dst_port: u16) -> FrameTemplate {
    let ep = Endpoints {
        src_mac: MacAddr(GUEST_MAC),
        dst_mac: MacAddr(RECEIVER_MAC),
        vlan: None,
        ip: IpEndpoints::V4 {
            src: GUEST_IP,
            dst: RECEIVER_IP,
        },
        src_port,
        dst_port,
    };
    FrameTemplate::new(&ep, 1500).expect("netpoll's endpoints are valid")
}

/// Rebuild every UDP frame of `run`; returns (frames, times the ID had to be re-seeded).
fn rebuild(run: &str, expected_udp: usize, ports: &[u16]) -> usize {
    let data: &'static [u8] = Box::leak(fixture(&format!("{run}.pcap")).into_boxed_slice());
    let frames = pcap_frames(data);
    let udp = udp_frames(&frames);
    assert_eq!(
        udp.len(),
        expected_udp,
        "{run}: UDP frames in the capture (manifest.json)"
    );

    let mut templates: Vec<(u16, FrameTemplate)> =
        ports.iter().map(|&p| (p, template(p, p))).collect();
    let mut reseeds = 0;
    let mut prev_id: Option<u16> = None;
    let mut buf = [0u8; MAX_FRAME_LEN];
    for (i, c) in udp.iter().enumerate() {
        assert_eq!(c.frame[..6], RECEIVER_MAC, "{run} #{i}: destination MAC");
        assert_eq!(c.frame[6..12], GUEST_MAC, "{run} #{i}: source MAC");
        assert_eq!(c.frame[26..30], GUEST_IP, "{run} #{i}: source IP");
        assert_eq!(c.frame[30..34], RECEIVER_IP, "{run} #{i}: destination IP");
        assert_eq!(
            c.src_port, c.dst_port,
            "{run} #{i}: netconsole uses one port for both ends"
        );
        // netpoll's IP ID counter is shared by all targets: consecutive across the run.
        if let Some(p) = prev_id {
            assert_eq!(
                c.ip_id,
                p.wrapping_add(1),
                "{run} #{i}: kernel IP IDs are consecutive"
            );
        }
        prev_id = Some(c.ip_id);

        let (_, tpl) = templates
            .iter_mut()
            .find(|(p, _)| *p == c.dst_port)
            .unwrap_or_else(|| panic!("{run} #{i}: unexpected port {}", c.dst_port));
        if tpl.next_ip_id() != c.ip_id {
            tpl.set_next_ip_id(c.ip_id);
            reseeds += 1;
        }
        let n = tpl
            .write(c.payload, &mut buf)
            .unwrap_or_else(|e| panic!("{run} #{i}: {e}"));
        assert_eq!(n, c.len, "{run} #{i}: frame length");
        assert_eq!(
            &buf[..n],
            &c.frame[..c.len],
            "{run} #{i}: frame bytes differ"
        );
        // Frames below Ethernet's 60-byte minimum were zero-padded by the NIC, not netpoll.
        assert!(
            c.frame[c.len..].iter().all(|&b| b == 0),
            "{run} #{i}: padding is not zeros"
        );
        assert!(
            c.frame.len() == c.len || c.frame.len() == 60,
            "{run} #{i}: unexpected trailer"
        );
    }
    reseeds
}

#[test]
fn ext_panic_frames_are_byte_identical() {
    // One template, seeded once: the template's own counter reproduces the sequence.
    assert_eq!(rebuild("ext-panic", 451, &[6666]), 1);
}

#[test]
fn basic_panic_frames_are_byte_identical() {
    assert_eq!(rebuild("basic-panic", 449, &[6666]), 1);
}

#[test]
fn dual_panic_frames_are_byte_identical() {
    // Two targets share the kernel's counter, so each template is re-seeded from
    // the capture whenever the other target sent in between.
    let reseeds = rebuild("dual-panic", 898, &[6666, 6667]);
    assert!(reseeds >= 2, "both targets were used");
}

#[test]
fn captured_frames_can_be_rebuilt_from_parts() {
    // Split each payload at every odd and even boundary class: same bytes.
    let data: &'static [u8] = Box::leak(fixture("ext-panic.pcap").into_boxed_slice());
    let frames = pcap_frames(data);
    let mut tpl = template(6666, 6666);
    let mut buf = [0u8; MAX_FRAME_LEN];
    for c in udp_frames(&frames) {
        for cut in [1usize, 2, 3, 7, 33] {
            let cut = cut.min(c.payload.len());
            let (a, rest) = c.payload.split_at(cut);
            let (b, d) = rest.split_at(rest.len() / 2);
            tpl.set_next_ip_id(c.ip_id);
            let n = tpl.write_parts(&[a, &[], b, d], &mut buf).expect("fits");
            assert_eq!(&buf[..n], &c.frame[..c.len]);
        }
    }
}
