//! The ncfrag reassembler under duplicated, reordered, corrupted, dropped and
//! late fragments: never a panic, bounded state, and a record that completes
//! always has exactly its announced length.
//!
//! Input: byte 0 chooses the record's length, the rest is a script of
//! operations on the kernel's fragments of that record.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay_core::netconsole::{ExtRecord, ExtRepr, Reassembler, MAX_PRINT_CHUNK};
use relay_core::{Duration, Instant};

const SLOTS: usize = 3;

fuzz_target!(|data: &[u8]| {
    let Some((&len_byte, script)) = data.split_first() else {
        return;
    };
    let text: Vec<u8> = (0..usize::from(len_byte) * 16)
        .map(|i| (i % 251) as u8)
        .collect();
    let rec = ExtRecord {
        release: None,
        prefix: 6,
        seq: 7,
        ts_usec: 1,
        cont: false,
        text: &text,
        dict: &[(b"SUBSYSTEM", b"pci")],
    };
    let mut frags: Vec<Vec<u8>> = Vec::new();
    let mut it = rec.datagrams();
    let mut buf = [0u8; MAX_PRINT_CHUNK];
    while let Some(r) = it.next_into(&mut buf) {
        frags.push(buf[..r.expect("encodes")].to_vec());
    }
    let total = it.body_len();

    let mut r: Reassembler<SLOTS, 4096> = Reassembler::new(Duration::from_millis(100));
    let mut now = Instant(0);
    for op in script.chunks(2) {
        let (kind, arg) = (op[0], op.get(1).copied().unwrap_or(0));
        let mut d = frags[usize::from(arg) % frags.len()].clone();
        match kind % 4 {
            0 => {}
            1 => {
                // Corrupt one byte.
                let i = usize::from(kind) % d.len();
                d[i] ^= arg | 1;
            }
            2 => {
                now = now.saturating_add(Duration::from_millis(u64::from(arg)));
                continue;
            }
            _ => {
                // Another record's fragment, to fill slots.
                let s = format!("6,{},0,-,ncfrag=0/{};x", arg, 2 + u32::from(kind));
                d = s.into_bytes();
            }
        }
        let Ok(repr) = ExtRepr::parse(&d) else {
            continue;
        };
        if let Ok(Some(done)) = r.push(&repr, now) {
            assert!(done.frag.is_none());
            if repr.frag.is_some() && done.seq == 7 && done.prefix == 6 && done.ts_usec == 1 {
                assert_eq!(done.payload.len(), total);
            }
        }
        assert!(r.in_flight() <= SLOTS);
    }
    let _ = r.poll(now.saturating_add(Duration::from_secs(1)));
    assert_eq!(r.in_flight(), 0);
});
