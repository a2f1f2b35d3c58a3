//! Instruction-count benchmark of the relay's last-gasp latency.
//!
//! Run by `cargo xtask bench` under callgrind as `relay_callgrind <case> <iterations>`
//! (see frame_callgrind.rs for the method: a 0-iteration run is subtracted).
//!
//! Setup feeds the real serial log (tests/fixtures/netconsole/ext-panic.serial.log)
//! into a relay with mirror on, up to the last byte of the `Kernel panic - not
//! syncing` line (its CR: the scanner ends a line there), and drains every frame. Each iteration
//! then clones that primed relay (the only way to repeat a first panic) and:
//! - `relay-clone`: nothing else: the clone's cost, to subtract from the others;
//! - `relay-panic-to-frame`: `handle_console(b"\r")` + one `poll_transmit`:
//!   the panic line goes out as extended netconsole (the first frame);
//! - `relay-panic-to-report`: the same, then the next `poll_transmit`: the
//!   signed report (postcard + HMAC-SHA256) in its frame.
// A host-only benchmark: failing loudly is its job; the no-panic lints are for the library.
#![allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use relay_core::frame::{Endpoints, FrameTemplate, IpEndpoints, MacAddr, MAX_FRAME_LEN};
use relay_core::relay::{Relay, RelayConfig};
use relay_core::report;
use relay_core::{Duration, Instant};
use std::hint::black_box;
use std::process::ExitCode;

const PANIC_LINE: &[u8] = b"Kernel panic - not syncing: sysrq triggered crash\r\n";

fn primed() -> (Relay, Instant) {
    let ep = Endpoints {
        src_mac: MacAddr([0x52, 0x54, 0x00, 0x99, 0x00, 0x02]),
        dst_mac: MacAddr([0x02, 0x00, 0x00, 0x99, 0x00, 0x01]),
        vlan: None,
        ip: IpEndpoints::V4 {
            src: [10, 99, 0, 2],
            dst: [10, 99, 0, 1],
        },
        src_port: 6665,
        dst_port: 6666,
    };
    let tpl = FrameTemplate::new(&ep, 1500).unwrap();
    let mut cfg = RelayConfig::new("relay-0", "worker-0", [7; 32], 1, tpl).unwrap();
    cfg.mirror = true;
    cfg.mirror_lines_per_sec = 100_000;
    cfg.mirror_burst = 1000;
    let mut relay = Relay::new(cfg).unwrap();
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/netconsole/ext-panic.serial.log"
    );
    let log = std::fs::read(path).unwrap();
    let at = log
        .windows(PANIC_LINE.len())
        .position(|w| w == PANIC_LINE)
        .unwrap();
    // The scanner ends a line at its CR (CRLF's LF is then skipped), so the
    // CR is the byte that completes the panic line.
    let last = at + PANIC_LINE.len() - 2;
    let mut now = Instant::from_millis(1);
    let mut buf = [0u8; MAX_FRAME_LEN];
    for chunk in log[..last].chunks(64) {
        now = now.saturating_add(Duration(87 * chunk.len() as u64));
        relay.handle_console(chunk, now);
        while relay.poll_transmit(now, &mut buf).is_some() {}
    }
    assert_eq!(relay.stats().triggers, 0, "primed before the trigger");
    (relay, now.saturating_add(Duration(87)))
}

/// One iteration: clone the primed relay, then (if `feed`) give it the panic
/// line's last byte and take `frames` frames. The same code runs for every
/// case (the flags are opaque), so the clone costs the same everywhere and
/// `relay-clone` subtracts exactly.
#[inline(never)]
fn panic_to_frames(
    primed: &Relay,
    now: Instant,
    feed: bool,
    frames: usize,
    buf: &mut [u8],
) -> usize {
    let mut r = primed.clone();
    if feed {
        r.handle_console(black_box(b"\r"), now);
    }
    let mut len = 0;
    for _ in 0..frames {
        len = r.poll_transmit(now, buf).unwrap_or(0);
    }
    black_box(&r);
    len
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(case), Some(n)) = (args.get(1), args.get(2).and_then(|n| n.parse::<u64>().ok()))
    else {
        eprintln!("usage: relay_callgrind <relay-clone|relay-panic-to-frame|relay-panic-to-report> <iterations>");
        return ExitCode::FAILURE;
    };
    let (relay, now) = primed();
    let mut buf = [0u8; MAX_FRAME_LEN];
    // Check once, outside the measurement, that the frames are what the case claims.
    let n1 = panic_to_frames(&relay, now, true, 1, &mut buf);
    assert!(buf[42..n1]
        .windows(PANIC_LINE.len() - 2)
        .any(|w| w == &PANIC_LINE[..PANIC_LINE.len() - 2]));
    let n2 = panic_to_frames(&relay, now, true, 2, &mut buf);
    assert!(
        report::verify(&buf[42..n2], &[7; 32]).is_ok(),
        "second frame is the report"
    );
    let (feed, frames) = match case.as_str() {
        "relay-clone" => (false, 0),
        "relay-panic-to-frame" => (true, 1),
        "relay-panic-to-report" => (true, 2),
        other => {
            eprintln!("unknown case {other}");
            return ExitCode::FAILURE;
        }
    };
    for _ in 0..n {
        black_box(panic_to_frames(
            black_box(&relay),
            now,
            black_box(feed),
            black_box(frames),
            &mut buf,
        ));
    }
    ExitCode::SUCCESS
}
