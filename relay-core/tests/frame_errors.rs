//! Bad parameters get typed errors, and a failed write changes nothing.
// Tests fail by panicking; the crate's no-panic lints are for the library.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]
use relay_core::frame::{
    Endpoints, FrameError, FrameTemplate, IpEndpoints, MacAddr, VlanTag, MAX_FRAME_LEN, MAX_MTU,
    MIN_MTU_V4, MIN_MTU_V6,
};

fn ep(ip: IpEndpoints, vlan: Option<VlanTag>) -> Endpoints {
    Endpoints {
        src_mac: MacAddr([0x52, 0x54, 0, 0x99, 0, 2]),
        dst_mac: MacAddr([2, 0, 0, 0x99, 0, 1]),
        vlan,
        ip,
        src_port: 6666,
        dst_port: 6666,
    }
}
const V4: IpEndpoints = IpEndpoints::V4 {
    src: [10, 99, 0, 2],
    dst: [10, 99, 0, 1],
};
const V6: IpEndpoints = IpEndpoints::V6 {
    src: [0xfd; 16],
    dst: [0xfe; 16],
};

#[test]
fn payload_too_large_for_mtu() {
    let mut tpl = FrameTemplate::new(&ep(V4, None), 1500).expect("valid");
    assert_eq!(tpl.max_payload(), 1472);
    let mut buf = [0u8; MAX_FRAME_LEN];
    assert!(tpl.write(&[0; 1472], &mut buf).is_ok());
    assert_eq!(
        tpl.write(&[0; 1473], &mut buf),
        Err(FrameError::PayloadTooLarge {
            len: 1473,
            max: 1472
        })
    );
    assert_eq!(
        tpl.write_parts(&[&[0; 1000], &[0; 473]], &mut buf),
        Err(FrameError::PayloadTooLarge {
            len: 1473,
            max: 1472
        })
    );

    let mut tpl =
        FrameTemplate::new(&ep(V6, Some(VlanTag { pcp: 0, vid: 1 })), 1280).expect("valid");
    assert_eq!(tpl.max_payload(), 1280 - 40 - 8);
    assert_eq!(
        tpl.write(&[0; 1233], &mut buf),
        Err(FrameError::PayloadTooLarge {
            len: 1233,
            max: 1232
        })
    );
}

#[test]
fn buffer_too_small() {
    let mut tpl =
        FrameTemplate::new(&ep(V4, Some(VlanTag { pcp: 6, vid: 42 })), 1500).expect("valid");
    assert_eq!(tpl.header_len(), 14 + 4 + 20 + 8);
    let mut buf = [0xeeu8; 100];
    assert_eq!(
        tpl.write(&[1; 55], &mut buf),
        Err(FrameError::BufferTooSmall {
            needed: 101,
            available: 100
        })
    );
    assert!(
        buf.iter().all(|&b| b == 0xee),
        "a failed write leaves the buffer alone"
    );
    assert_eq!(
        tpl.write(&[], &mut []),
        Err(FrameError::BufferTooSmall {
            needed: 46,
            available: 0
        })
    );
    // The failed writes did not consume IP IDs.
    assert_eq!(tpl.next_ip_id(), 0);
    assert_eq!(tpl.write(&[1; 54], &mut buf), Ok(100));
    assert_eq!(tpl.next_ip_id(), 1);
}

#[test]
fn mtu_out_of_range() {
    for (ip, min) in [(V4, MIN_MTU_V4), (V6, MIN_MTU_V6)] {
        for bad in [0, min - 1, MAX_MTU + 1, u16::MAX] {
            assert_eq!(
                FrameTemplate::new(&ep(ip, None), bad).err(),
                Some(FrameError::InvalidMtu {
                    mtu: bad,
                    min,
                    max: MAX_MTU
                })
            );
        }
        let tpl = FrameTemplate::new(&ep(ip, None), min).expect("smallest MTU is usable");
        assert_eq!(tpl.max_payload(), 1);
    }
}

#[test]
fn vlan_out_of_range() {
    for (pcp, vid) in [(8, 1), (0, 4095), (255, u16::MAX)] {
        assert_eq!(
            FrameTemplate::new(&ep(V4, Some(VlanTag { pcp, vid })), 1500).err(),
            Some(FrameError::InvalidVlan { pcp, vid })
        );
    }
}

#[test]
fn errors_explain_themselves() {
    let e = FrameError::PayloadTooLarge {
        len: 2000,
        max: 1472,
    };
    assert_eq!(
        e.to_string(),
        "payload of 2000 bytes exceeds the 1472 bytes one frame can carry"
    );
    let e: Box<dyn std::error::Error> = Box::new(FrameError::BufferTooSmall {
        needed: 60,
        available: 10,
    });
    assert_eq!(e.to_string(), "frame needs 60 bytes but the buffer has 10");
}

#[test]
fn ip_id_wraps_and_dst_mac_refreshes() {
    let mut tpl = FrameTemplate::new(&ep(V4, None), 1500).expect("valid");
    tpl.set_next_ip_id(0xffff);
    let mut buf = [0u8; MAX_FRAME_LEN];
    tpl.write(b"a", &mut buf).expect("fits");
    assert_eq!(buf[18..20], [0xff, 0xff]);
    tpl.write(b"a", &mut buf).expect("fits");
    assert_eq!(buf[18..20], [0, 0]);
    let mac = MacAddr([2, 1, 2, 3, 4, 5]);
    tpl.set_dst_mac(mac);
    assert_eq!(tpl.endpoints().dst_mac, mac);
    tpl.write(b"a", &mut buf).expect("fits");
    assert_eq!(buf[..6], mac.0);
    assert_eq!(mac.to_string(), "02:01:02:03:04:05");
}
