//! Any bytes into the extended decoder: never a panic, and every accepted
//! datagram is canonical (emitting the parsed value gives the bytes back).
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay_core::netconsole::escape::unescape_str;
use relay_core::netconsole::{ExtPacket, ExtRepr, MAX_PRINT_CHUNK};

fuzz_target!(|data: &[u8]| {
    let Ok(packet) = ExtPacket::new_checked(data) else {
        return;
    };
    let repr = ExtRepr::from_packet(&packet);
    assert!(data.len() <= MAX_PRINT_CHUNK);
    if let Some(f) = repr.frag {
        assert!(f.offset < f.total);
        assert!(!repr.payload.is_empty());
        assert!(f.offset as usize + repr.payload.len() <= f.total as usize);
    }
    if packet.extra_fields().next().is_none() {
        let mut out = [0u8; MAX_PRINT_CHUNK];
        let n = repr.emit(&mut out).expect("an accepted datagram re-emits");
        assert_eq!(n, repr.buffer_len());
        // Equal, except the final NUL of Linux 6.1's release quirk.
        assert_eq!(&out[..n], &data[..n]);
        assert!(n == data.len() || (n + 1 == data.len() && data[n] == 0));
    }
    for b in repr.unescaped_text() {
        if b.is_err() {
            break;
        }
    }
    for kv in repr.dict() {
        if kv.is_err() {
            break;
        }
    }
    let mut text = [0u8; MAX_PRINT_CHUNK];
    let _ = unescape_str(repr.text(), &mut text);
});
