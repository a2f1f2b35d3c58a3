//! Fuzz the bridge's report verifier: arbitrary datagrams never verify and
//! never panic; a genuine report altered anywhere is refused; freshness
//! never accepts the same (boot, sequence) twice.
#![no_main]
use libfuzzer_sys::fuzz_target;
use relay_core::detect::{Certainty, Kind};
use relay_core::report::{
    encode_signed, is_report, truncate_utf8, verify, Freshness, Report, MAGIC, MAX_REPORT_LEN,
    MAX_TRIGGER_LINE, VERSION,
};

const KEY: [u8; 32] = [0x5a; 32];

fuzz_target!(|data: &[u8]| {
    // 1. The raw bytes, as they might arrive on the bridge's port.
    let raw = verify(data, &KEY);
    assert!(raw.is_err() || is_report(data));

    // 2. The raw bytes behind a valid magic and version: only the tag guards.
    let mut framed = [0u8; 2048];
    let n = data.len().min(framed.len() - 5);
    framed[..4].copy_from_slice(&MAGIC);
    framed[4] = VERSION;
    framed[5..5 + n].copy_from_slice(&data[..n]);
    let _ = verify(&framed[..5 + n], &KEY);

    // 3. A genuine report built from the input, then one byte altered.
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let text = core::str::from_utf8(rest).unwrap_or("Kernel panic - not syncing: fuzz");
    let r = Report {
        version: VERSION,
        relay_id: truncate_utf8(text, 64),
        node_name: truncate_utf8(text, 20),
        boot_counter: u32::from(ctl).wrapping_mul(0x0101_0101),
        sequence: u32::from(ctl),
        kind: Kind::KernelPanic,
        certainty: if ctl & 1 == 0 {
            Certainty::Suspected
        } else {
            Certainty::Confirmed
        },
        trigger_line: truncate_utf8(text, MAX_TRIGGER_LINE),
        host_ts_usec: (ctl & 2 != 0).then_some(u64::from(ctl) << 40),
        context_lines: u16::from(ctl),
        repeat_index: ctl,
    };
    let mut buf = [0u8; MAX_REPORT_LEN];
    let len = encode_signed(&r, &KEY, &mut buf).expect("fields within limits fit");
    let good = &buf[..len];
    assert_eq!(verify(good, &KEY), Ok(r));

    let mut fresh = Freshness::<2>::new();
    assert!(fresh.check(&r).is_ok());
    assert!(fresh.check(&r).is_err(), "the same report accepted twice");

    let pos = usize::from(ctl) % len;
    let flip = rest.first().copied().unwrap_or(1) | 1;
    let mut bad = [0u8; MAX_REPORT_LEN];
    bad[..len].copy_from_slice(good);
    bad[pos] ^= flip;
    assert!(
        verify(&bad[..len], &KEY).is_err(),
        "altered byte {pos} accepted"
    );
    assert!(
        verify(&good[..len - 1], &KEY).is_err(),
        "truncated report accepted"
    );
});
