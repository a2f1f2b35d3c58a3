//! Every frame the template builds must parse and checksum-verify with an
//! independent parser (etherparse), for any payload size, VLAN tag and addresses.
// Tests fail by panicking; the crate's no-panic lints are for the library.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]
use etherparse::{NetSlice, SlicedPacket, TransportSlice, VlanSlice};
use proptest::prelude::*;
use relay_core::frame::{Endpoints, FrameTemplate, IpEndpoints, MacAddr, VlanTag, MAX_FRAME_LEN};

fn endpoints() -> impl Strategy<Value = Endpoints> {
    let ip = prop_oneof![
        (any::<[u8; 4]>(), any::<[u8; 4]>()).prop_map(|(src, dst)| IpEndpoints::V4 { src, dst }),
        (any::<[u8; 16]>(), any::<[u8; 16]>()).prop_map(|(src, dst)| IpEndpoints::V6 { src, dst }),
    ];
    let vlan =
        proptest::option::of((0u8..=7, 0u16..=4094).prop_map(|(pcp, vid)| VlanTag { pcp, vid }));
    (
        any::<[u8; 6]>(),
        any::<[u8; 6]>(),
        vlan,
        ip,
        any::<u16>(),
        any::<u16>(),
    )
        .prop_map(|(s, d, vlan, ip, src_port, dst_port)| Endpoints {
            src_mac: MacAddr(s),
            dst_mac: MacAddr(d),
            vlan,
            ip,
            src_port,
            dst_port,
        })
}

/// Parse `frame` with etherparse and check every field and both checksums.
fn verify(frame: &[u8], ep: &Endpoints, payload: &[u8], ip_id: u16) -> Result<(), TestCaseError> {
    let p = SlicedPacket::from_ethernet(frame)
        .map_err(|e| TestCaseError::fail(format!("parse: {e}")))?;
    let Some(etherparse::LinkSlice::Ethernet2(eth)) = &p.link else {
        return Err(TestCaseError::fail("no Ethernet II header"));
    };
    prop_assert_eq!(eth.destination(), ep.dst_mac.0);
    prop_assert_eq!(eth.source(), ep.src_mac.0);
    match (&p.vlan, ep.vlan) {
        (None, None) => {}
        (Some(VlanSlice::SingleVlan(v)), Some(tag)) => {
            prop_assert_eq!(v.priority_code_point().value(), tag.pcp);
            prop_assert_eq!(v.vlan_identifier().value(), tag.vid);
            prop_assert!(!v.drop_eligible_indicator());
        }
        (got, want) => {
            return Err(TestCaseError::fail(format!(
                "VLAN {got:?} but configured {want:?}"
            )))
        }
    }
    let Some(TransportSlice::Udp(udp)) = &p.transport else {
        return Err(TestCaseError::fail("no UDP"));
    };
    prop_assert_eq!(udp.source_port(), ep.src_port);
    prop_assert_eq!(udp.destination_port(), ep.dst_port);
    prop_assert_eq!(usize::from(udp.length()), payload.len() + 8);
    prop_assert_eq!(udp.payload(), payload);
    prop_assert_ne!(udp.checksum(), 0, "UDP checksum must always be sent");
    let want_udp = match (&p.net, ep.ip) {
        (Some(NetSlice::Ipv4(ip)), IpEndpoints::V4 { src, dst }) => {
            let h = ip.header();
            prop_assert_eq!(h.source(), src);
            prop_assert_eq!(h.destination(), dst);
            prop_assert_eq!(h.identification(), ip_id);
            prop_assert_eq!(
                usize::from(h.total_len()),
                frame.len() - frame_l3_offset(ep)
            );
            prop_assert_eq!(
                h.header_checksum(),
                h.to_header().calc_header_checksum(),
                "IPv4 checksum"
            );
            udp.to_header().calc_checksum_ipv4_raw(src, dst, payload)
        }
        (Some(NetSlice::Ipv6(ip)), IpEndpoints::V6 { src, dst }) => {
            let h = ip.header();
            prop_assert_eq!(h.source(), src);
            prop_assert_eq!(h.destination(), dst);
            prop_assert_eq!(usize::from(h.payload_length()), payload.len() + 8);
            udp.to_header().calc_checksum_ipv6_raw(src, dst, payload)
        }
        (net, _) => return Err(TestCaseError::fail(format!("wrong network layer {net:?}"))),
    }
    .map_err(|e| TestCaseError::fail(format!("checksum calc: {e}")))?;
    prop_assert_eq!(udp.checksum(), want_udp, "UDP checksum");
    // And from first principles: the one's-complement sum over pseudo-header,
    // header and payload of a correct datagram is 0xFFFF.
    prop_assert_eq!(ones_sum_verifies(ep, udp.slice()), true);
    Ok(())
}

fn frame_l3_offset(ep: &Endpoints) -> usize {
    14 + if ep.vlan.is_some() { 4 } else { 0 }
}

fn ones_sum_verifies(ep: &Endpoints, udp: &[u8]) -> bool {
    let mut bytes = Vec::new();
    match ep.ip {
        IpEndpoints::V4 { src, dst } => {
            bytes.extend_from_slice(&src);
            bytes.extend_from_slice(&dst);
            bytes.extend_from_slice(&[0, 17]);
            bytes.extend_from_slice(&(udp.len() as u16).to_be_bytes());
        }
        IpEndpoints::V6 { src, dst } => {
            bytes.extend_from_slice(&src);
            bytes.extend_from_slice(&dst);
            bytes.extend_from_slice(&(udp.len() as u32).to_be_bytes());
            bytes.extend_from_slice(&[0, 0, 0, 17]);
        }
    }
    bytes.extend_from_slice(udp);
    if bytes.len() % 2 == 1 {
        bytes.push(0);
    }
    let mut s: u32 = bytes
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s == 0xffff
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn frames_parse_and_verify(
        ep in endpoints(),
        payload in proptest::collection::vec(any::<u8>(), 0..=1452),
        ip_id in any::<u16>(),
    ) {
        let mut tpl = FrameTemplate::new(&ep, 1500).expect("valid endpoints");
        let payload = &payload[..payload.len().min(tpl.max_payload())];
        tpl.set_next_ip_id(ip_id);
        let mut buf = [0u8; MAX_FRAME_LEN];
        let n = tpl.write(payload, &mut buf).expect("fits");
        prop_assert_eq!(n, tpl.header_len() + payload.len());
        verify(&buf[..n], &ep, payload, ip_id)?;
        // The ID counts up and wraps.
        let n = tpl.write(payload, &mut buf).expect("fits");
        verify(&buf[..n], &ep, payload, ip_id.wrapping_add(1))?;
    }

    #[test]
    fn parts_equal_whole(
        ep in endpoints(),
        payload in proptest::collection::vec(any::<u8>(), 0..=1200),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let mut tpl = FrameTemplate::new(&ep, 1280).expect("valid endpoints");
        let mut whole = [0u8; MAX_FRAME_LEN];
        let n = tpl.write(&payload, &mut whole).expect("fits");
        let mut at: Vec<usize> = cuts.iter().map(|i| i.index(payload.len() + 1)).collect();
        at.sort_unstable();
        let mut parts = Vec::new();
        let mut prev = 0;
        for c in at.into_iter().chain([payload.len()]) {
            parts.push(&payload[prev..c]);
            prev = c;
        }
        tpl.set_next_ip_id(0);
        let mut split = [0u8; MAX_FRAME_LEN];
        let m = tpl.write_parts(&parts, &mut split).expect("fits");
        prop_assert_eq!(&split[..m], &whole[..n]);
    }

    #[test]
    fn short_mtus_fill_exactly(ep in endpoints(), mtu in 49u16..=1500) {
        let mut tpl = FrameTemplate::new(&ep, mtu).expect("MTU in range");
        let ip_hdr = if matches!(ep.ip, IpEndpoints::V4 { .. }) { 20 } else { 40 };
        prop_assert_eq!(tpl.max_payload(), usize::from(mtu) - ip_hdr - 8);
        let payload = vec![0xa5; tpl.max_payload()];
        let mut buf = [0u8; MAX_FRAME_LEN];
        let n = tpl.write(&payload, &mut buf).expect("max payload fits");
        prop_assert_eq!(n - frame_l3_offset(&ep), usize::from(mtu));
        verify(&buf[..n], &ep, &payload, 0)?;
    }
}

/// The UDP checksum's one special case: a sum that complements to 0 goes out as 0xFFFF.
#[test]
fn zero_checksum_is_sent_as_ffff() {
    let ep = Endpoints {
        src_mac: MacAddr([2, 0, 0, 0, 0, 1]),
        dst_mac: MacAddr([2, 0, 0, 0, 0, 2]),
        vlan: None,
        ip: IpEndpoints::V4 {
            src: [10, 0, 0, 1],
            dst: [10, 0, 0, 2],
        },
        src_port: 1,
        dst_port: 2,
    };
    let mut tpl = FrameTemplate::new(&ep, 1500).expect("valid");
    let mut buf = [0u8; MAX_FRAME_LEN];
    // With a 2-byte payload w, the sum is (fixed words + w); pick w so it is 0xFFFF.
    let n = tpl.write(&[0, 0], &mut buf).expect("fits");
    let csum = u16::from_be_bytes([buf[n - 4], buf[n - 3]]);
    // The checksum of payload 0 is !S, so S = !csum; payload w = !S makes the sum 0xFFFF.
    let w = csum.to_be_bytes();
    let n = tpl.write(&w, &mut buf).expect("fits");
    assert_eq!(u16::from_be_bytes([buf[n - 4], buf[n - 3]]), 0xffff);
    let p = SlicedPacket::from_ethernet(&buf[..n]).expect("parses");
    let Some(TransportSlice::Udp(udp)) = p.transport else {
        panic!("no UDP")
    };
    assert_eq!(
        udp.to_header()
            .calc_checksum_ipv4_raw([10, 0, 0, 1], [10, 0, 0, 2], &w)
            .expect("ok"),
        0xffff
    );
}

/// Every payload length the MTU allows, for both IP versions, with all-ones
/// bytes (the most carries the checksum can meet) and with a byte ramp.
#[test]
fn every_payload_length_verifies() {
    let v4 = Endpoints {
        src_mac: MacAddr([2, 0, 0, 0, 0, 1]),
        dst_mac: MacAddr([2, 0, 0, 0, 0, 2]),
        vlan: None,
        ip: IpEndpoints::V4 {
            src: [255; 4],
            dst: [255; 4],
        },
        src_port: 0xffff,
        dst_port: 0xffff,
    };
    let v6 = Endpoints {
        vlan: Some(VlanTag { pcp: 7, vid: 4094 }),
        ip: IpEndpoints::V6 {
            src: [0xff; 16],
            dst: [0xfe; 16],
        },
        ..v4
    };
    let ones = [0xffu8; 1500];
    let ramp: Vec<u8> = (0..1500u32)
        .map(|i| (i.wrapping_mul(151) >> 3) as u8)
        .collect();
    let mut buf = [0u8; MAX_FRAME_LEN];
    for ep in [v4, v6] {
        let mut tpl = FrameTemplate::new(&ep, 1500).expect("valid");
        for len in 0..=tpl.max_payload() {
            for payload in [&ones[..len], &ramp[..len]] {
                let id = tpl.next_ip_id();
                let n = tpl.write(payload, &mut buf).expect("fits");
                if let Err(e) = verify(&buf[..n], &ep, payload, id) {
                    panic!("{:?} payload of {len} bytes: {e}", ep.ip);
                }
            }
        }
    }
}
