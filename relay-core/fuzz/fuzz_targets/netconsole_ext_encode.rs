//! Random printk records through the encoder, then the decoder and the
//! reassembler: never a panic, datagrams within MAX_PRINT_CHUNK, and the
//! record comes back when printk's 8 KiB buffer did not cut it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay_core::netconsole::escape::unescape_into;
use relay_core::netconsole::{ExtRecord, ExtRepr, Reassembler, MAX_PRINT_CHUNK};
use relay_core::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let (head, rest) = data.split_at(4);
    let split = usize::from(head[1]).min(rest.len());
    let (text, value) = rest.split_at(split);
    let release: Option<&[u8]> = (head[0] & 1 == 1).then_some(b"6.1.0-56-amd64");
    let dict: &[(&[u8], &[u8])] = &[(b"SUBSYSTEM", b"pci"), (b"DEVICE", value)];
    let rec = ExtRecord {
        release,
        prefix: u32::from(head[2]),
        seq: u64::from(head[3]),
        ts_usec: 99,
        cont: head[0] & 2 == 2,
        text,
        dict,
    };
    let mut it = rec.datagrams();
    let body_len = it.body_len();
    let mut r: Reassembler<1, 8192> = Reassembler::new(Duration::from_secs(1));
    let mut buf = [0u8; MAX_PRINT_CHUNK];
    let mut whole: Option<Vec<u8>> = None;
    let mut quirk = false;
    while let Some(n) = it.next_into(&mut buf) {
        let n = n.expect("encodes");
        // Linux 6.1 sends a whole 1000-byte message with release ending in NUL.
        quirk |= release.is_some() && !it.is_fragmented() && n == MAX_PRINT_CHUNK;
        assert!(n <= MAX_PRINT_CHUNK);
        let repr = ExtRepr::parse(&buf[..n]).expect("own datagrams decode");
        if let Some(done) = r.push(&repr, Instant(0)).expect("own fragments reassemble") {
            whole = Some(done.text().to_vec());
        }
    }
    let whole = whole.expect("the record completes");
    let cut = body_len + 20 >= 8192 || quirk;
    if !cut {
        let mut raw = vec![0u8; whole.len()];
        let n = unescape_into(&whole, &mut raw).expect("own escaping");
        assert_eq!(&raw[..n], text);
    }
});
