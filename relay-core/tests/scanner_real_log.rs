//! The scanner on the real kernel serial console captures, against an
//! independent, obviously-correct splitter written with `std`.
#![allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used
)]

use relay_core::scanner::{ConsoleScanner, ContextRing, Line};

const RUNS: [&str; 3] = ["ext-panic", "basic-panic", "dual-panic"];

fn serial_log(run: &str) -> Vec<u8> {
    let path = format!("{}/../tests/fixtures/netconsole/{run}.serial.log", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Reference: split at CRLF; `ESC c` also splits; drop the CSI sequences the
/// captures contain (`ESC [ ... letter`).
fn reference(log: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for phys in log.split(|&b| b == b'\n') {
        let phys = phys.strip_suffix(b"\r").unwrap_or(phys);
        let mut cur = Vec::new();
        let mut i = 0;
        while i < phys.len() {
            if phys[i] == 0x1b {
                if phys.get(i + 1) == Some(&b'c') {
                    if !cur.is_empty() {
                        out.push(std::mem::take(&mut cur));
                    }
                    i += 2;
                    continue;
                }
                assert_eq!(phys.get(i + 1), Some(&b'['), "captures only hold CSI and RIS");
                i += 2;
                while !phys[i].is_ascii_alphabetic() {
                    i += 1;
                }
                i += 1;
                continue;
            }
            cur.push(phys[i]);
            i += 1;
        }
        out.push(cur);
    }
    // The log ends with CRLF: the split leaves an empty tail that is no line.
    assert_eq!(out.pop(), Some(Vec::new()));
    out
}

fn scan_all<const N: usize>(log: &[u8], chunk: usize) -> Vec<(Vec<u8>, Option<u64>, bool)> {
    let mut s = ConsoleScanner::<N>::new();
    let mut out = Vec::new();
    for c in log.chunks(chunk) {
        s.push(c, |l| out.push((l.text.to_vec(), l.ts_usec, l.truncated)));
    }
    out
}

#[test]
fn lines_match_reference() {
    for run in RUNS {
        let log = serial_log(run);
        let want = reference(&log);
        for chunk in [1, 3, 64, 4096, log.len()] {
            let got = scan_all::<1024>(&log, chunk);
            assert_eq!(got.len(), want.len(), "{run} chunk {chunk}");
            for (g, w) in got.iter().zip(&want) {
                let parsed = Line::parse(w);
                assert_eq!(g.0, parsed.text, "{run} chunk {chunk}");
                assert_eq!(g.1, parsed.ts_usec);
                assert!(!g.2, "no line of the capture exceeds 1024 bytes");
            }
        }
        // Nearly every kernel line is stamped; the stamps never go backwards
        // by much (they reset only at the kernel's boot).
        let got = scan_all::<1024>(&log, 1);
        let stamped = got.iter().filter(|l| l.1.is_some()).count();
        assert!(stamped > 400, "{run}: {stamped}");
    }
}

#[test]
fn small_line_limit_truncates_only_the_long_lines() {
    for run in RUNS {
        let log = serial_log(run);
        let want = reference(&log);
        let got = scan_all::<256>(&log, 17);
        assert_eq!(got.len(), want.len(), "{run}: sync kept");
        let mut truncated = 0;
        for (g, w) in got.iter().zip(&want) {
            if w.len() > 256 {
                truncated += 1;
                assert!(g.2, "{run}");
                let parsed = Line::parse(&w[..256]);
                assert_eq!(g.0, parsed.text);
            } else {
                assert!(!g.2);
                assert_eq!(g.0, Line::parse(w).text);
            }
        }
        // The fixture's "long userspace line" and "long kernel line".
        assert_eq!(truncated, 2, "{run}");
    }
}

/// (lines held, bytes used including per-line headers, newest line)
fn ring_after<const B: usize>(log: &[u8]) -> (usize, usize, Vec<u8>) {
    let mut s = ConsoleScanner::<1024>::new();
    let mut ring = ContextRing::<B>::new();
    s.push(log, |l| ring.push(&l));
    let used = ring.iter().map(|l| l.text.len() + 12).sum();
    (ring.len(), used, ring.iter().last().unwrap().text.to_vec())
}

#[test]
fn ring_sizes() {
    let log = serial_log("ext-panic");
    let end = b"---[ end Kernel panic - not syncing: sysrq triggered crash ]---".to_vec();
    let (small, used, newest) = ring_after::<1024>(&log);
    assert!(used <= 1024 && used > 1024 - 200, "{used}");
    assert_eq!(newest, end);
    let (big, used, newest) = ring_after::<8192>(&log);
    assert!(used <= 8192 && used > 8192 - 1100, "{used}");
    assert_eq!(newest, end);
    assert!(small >= 10 && big >= 8 * small - 10, "{small} {big}");
}
