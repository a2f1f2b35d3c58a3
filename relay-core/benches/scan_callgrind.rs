//! Callgrind benchmark: instructions per console byte for scanner + context
//! ring + detector on the real serial console capture
//! (`tests/fixtures/netconsole/ext-panic.serial.log`, 31 083 bytes, 445 lines).
//!
//! Protocol of `cargo xtask bench` (see xtask/src/bench.rs):
//! `scan_callgrind <case> <iterations>` runs the case's measured operation
//! `iterations` times; the runner reports `(I(N) - I(0)) / N`. One iteration
//! feeds the whole log to a fresh engine. Cases:
//! - `scan-bytes`: [`ConsoleScanner::push_byte`] per byte (a UART interrupt);
//! - `scan-64`: [`ConsoleScanner::push`] with 64-byte chunks (FIFO/DMA burst);
//! - `scan-4096`: `push` with 4 KiB chunks (a shared-memory ring drained at once).
//!
//! Without arguments it runs every case once and prints the state sizes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

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

impl Engine {
    fn new() -> Self {
        Engine {
            scanner: ConsoleScanner::new(),
            ring: ContextRing::new(),
            detector: Detector::default(),
            lines: 0,
            events: 0,
        }
    }
}

/// One [`ConsoleScanner::push_byte`] per byte.
#[inline(never)]
fn scan_bytes(e: &mut Engine, log: &[u8]) {
    let Engine { scanner, ring, detector, lines, events } = e;
    for &b in log {
        if let Some(line) = scanner.push_byte(b) {
            *lines += 1;
            if detector.on_line(&line, Instant(*lines)).is_some() {
                *events += 1;
            }
            ring.push(&line);
        }
    }
}

/// [`ConsoleScanner::push`] in `chunk`-byte pieces.
#[inline(never)]
fn scan_chunked(e: &mut Engine, log: &[u8], chunk: usize) {
    let Engine { scanner, ring, detector, lines, events } = e;
    for c in log.chunks(chunk) {
        scanner.push(c, |line| {
            *lines += 1;
            if detector.on_line(&line, Instant(*lines)).is_some() {
                *events += 1;
            }
            ring.push(&line);
        });
    }
}

fn run(case: &str, log: &[u8]) -> Engine {
    let mut e = Engine::new();
    match case {
        "scan-bytes" => scan_bytes(black_box(&mut e), black_box(log)),
        "scan-64" => scan_chunked(black_box(&mut e), black_box(log), 64),
        "scan-4096" => scan_chunked(black_box(&mut e), black_box(log), 4096),
        other => panic!("unknown case {other:?}; known: scan-bytes, scan-64, scan-4096"),
    }
    // Panic suspected, then confirmed at "---[ end Kernel panic".
    assert_eq!(e.events, 2, "{case}");
    e
}

fn main() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/netconsole/ext-panic.serial.log");
    let log = std::fs::read(path).expect("serial log fixture");
    // cargo bench passes `--bench`; only non-flag arguments count.
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    match args.as_slice() {
        [case, n] => {
            let n: u64 = n.parse().expect("iterations");
            for _ in 0..n {
                black_box(run(case, &log));
            }
        }
        _ => {
            for case in ["scan-bytes", "scan-64", "scan-4096"] {
                let e = run(case, &log);
                println!("{case}: {} bytes, {} lines, {} events", log.len(), e.lines, e.events);
            }
            println!(
                "state: ConsoleScanner<1024> {} B, ContextRing<8192> {} B, Detector {} B",
                std::mem::size_of::<ConsoleScanner<1024>>(),
                std::mem::size_of::<ContextRing<8192>>(),
                std::mem::size_of::<Detector>()
            );
        }
    }
}
