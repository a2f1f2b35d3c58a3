//! Callgrind benchmark: instructions per console byte for scanner + context
//! ring + detector on the real serial console capture.
//!
//! Run under callgrind with collection limited to the measured functions:
//!
//! ```text
//! cargo bench -p relay-core --bench scan_callgrind --no-run
//! valgrind --tool=callgrind --toggle-collect='scan_callgrind::scan_*' <bench binary>
//! ```
//!
//! `cargo xtask bench` does this, once per chunk size (the argument), and
//! divides by the byte count this program prints. Run natively it just prints the byte count and the events.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use std::hint::black_box;

use relay_core::detect::Detector;
use relay_core::scanner::{ConsoleScanner, ContextRing};
use relay_core::Instant;

/// Everything the relay keeps per console: the measured state.
struct Engine {
    scanner: ConsoleScanner<1024>,
    ring: ContextRing<8192>,
    detector: Detector,
    lines: u64,
    events: u32,
}

/// The measured work, UART style: one [`ConsoleScanner::push_byte`] per byte.
#[inline(never)]
fn scan_bytes(e: &mut Engine, log: &[u8]) {
    let Engine { scanner, ring, detector, lines, events } = e;
    for &b in log {
        scanner.push_byte(b, |line| {
            *lines += 1;
            if detector.on_line(&line, Instant(*lines)).is_some() {
                *events += 1;
            }
            ring.push(&line);
        });
    }
}

/// The measured work: feed `log` in `chunk`-byte pieces, every line to the
/// detector and the ring. Not inlined, so callgrind can toggle on it.
#[inline(never)]
fn scan_chunked(e: &mut Engine, log: &[u8], chunk: usize) {
    for c in log.chunks(chunk) {
        let Engine { scanner, ring, detector, lines, events } = e;
        scanner.push(c, |line| {
            *lines += 1;
            if detector.on_line(&line, Instant(*lines)).is_some() {
                *events += 1;
            }
            ring.push(&line);
        });
    }
}

fn main() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/netconsole/ext-panic.serial.log");
    let log = std::fs::read(path).expect("serial log fixture");
    // Chunk sizes to run: the arguments (cargo bench passes `--bench`,
    // skipped), or by default: 0 = push_byte per byte, 1 = push per byte,
    // 64 = a DMA/FIFO burst, 4096 = a shared-memory ring drained at once.
    let mut chunks: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    if chunks.is_empty() {
        chunks = vec![0, 1, 64, 4096];
    }
    for chunk in chunks {
        let mut e = Engine {
            scanner: ConsoleScanner::new(),
            ring: ContextRing::new(),
            detector: Detector::default(),
            lines: 0,
            events: 0,
        };
        if chunk == 0 {
            scan_bytes(black_box(&mut e), black_box(&log));
        } else {
            scan_chunked(black_box(&mut e), black_box(&log), chunk);
        }
        println!("chunk={chunk} bytes={} lines={} events={}", log.len(), e.lines, e.events);
        assert_eq!(e.events, 2, "panic suspected + confirmed");
    }
}
