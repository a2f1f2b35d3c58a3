//! Instruction-count benchmark of the netconsole codec.
//!
//! Run by `cargo xtask bench` under callgrind as `netconsole_callgrind <case>
//! <iterations>`; the runner subtracts a 0-iteration run, so what remains is
//! the cost of the operation itself.
//!
//! Cases:
//! - `nc-encode`: one printk record with 980 bytes of plain text into its one
//!   extended datagram (999 bytes).
//! - `nc-encode-frag`: a 2500-byte record into its three ncfrag fragments.
//! - `nc-encode-escapes`: 980 bytes with a tab every ten bytes (escaped as
//!   `\x09`), into two fragments.
//! - `nc-decode`: `ExtRepr::parse` of that 999-byte datagram.
//! - `nc-reassemble`: parse + reassemble the three fragments of `nc-encode-frag`.
// A host-only benchmark: failing loudly is its job; the no-panic lints are for the library.
#![allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use relay_core::netconsole::{ExtRecord, ExtRepr, Reassembler, MAX_PRINT_CHUNK};
use relay_core::{Duration, Instant};
use std::hint::black_box;
use std::process::ExitCode;

fn record(text: &[u8]) -> ExtRecord<'_> {
    ExtRecord {
        release: None,
        prefix: 6,
        seq: 12_345,
        ts_usec: 6_330_370,
        cont: false,
        text,
        dict: &[],
    }
}

/// Encode `text` `iterations` times; returns the bytes of one encoding.
fn encode(text: &[u8], iterations: u64) -> usize {
    let mut buf = [0u8; MAX_PRINT_CHUNK];
    let mut last = 0;
    for _ in 0..iterations {
        let rec = record(black_box(text));
        let mut it = rec.datagrams();
        let mut total = 0;
        while let Some(n) = it.next_into(black_box(&mut buf[..])) {
            total += n.expect("encodes");
        }
        last = black_box(total);
    }
    last
}

fn datagrams(text: &[u8]) -> Vec<Vec<u8>> {
    let rec = record(text);
    let mut it = rec.datagrams();
    let mut buf = [0u8; MAX_PRINT_CHUNK];
    let mut out = Vec::new();
    while let Some(n) = it.next_into(&mut buf) {
        out.push(buf[..n.expect("encodes")].to_vec());
    }
    out
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (case, iterations) = match args.as_slice() {
        [_, case, n] => match n.parse::<u64>() {
            Ok(n) => (case.as_str(), n),
            Err(e) => {
                eprintln!("netconsole_callgrind: iterations {n:?}: {e}");
                return ExitCode::from(2);
            }
        },
        // `cargo bench` runs bench targets with `--bench`; do a quick sanity run.
        _ => ("all", 1),
    };
    let plain = vec![b'a'; 980];
    let long = vec![b'b'; 2500];
    let escapes: Vec<u8> = (0..980)
        .map(|i| if i % 10 == 0 { b'\t' } else { b'a' })
        .collect();
    let (len, want) = match case {
        // Header `6,12345,6330370,-` is 17 bytes, then `;` or `,ncfrag=<o>/<t>;`.
        "nc-encode" => (encode(&plain, iterations), 17 + 1 + 981),
        "nc-encode-frag" => (encode(&long, iterations), 2501 + 3 * 17 + 15 + 17 + 18),
        "nc-encode-escapes" => (encode(&escapes, iterations), 1275 + 2 * 17 + 15 + 17),
        "nc-decode" => {
            let d = datagrams(&plain).remove(0);
            let mut n = 0;
            for _ in 0..iterations {
                n = ExtRepr::parse(black_box(&d))
                    .expect("decodes")
                    .payload
                    .len();
            }
            (n, 981)
        }
        "nc-reassemble" => {
            let frags = datagrams(&long);
            let mut reasm: Reassembler<4, 8192> = Reassembler::new(Duration::from_secs(1));
            let mut n = 0;
            for i in 0..iterations {
                for d in &frags {
                    let mut r = ExtRepr::parse(black_box(d)).expect("decodes");
                    // A new record each time: a repeat of a completed one is a duplicate.
                    r.seq = i;
                    if let Some(whole) = reasm.push(&r, Instant(0)).expect("reassembles") {
                        n = whole.payload.len();
                    }
                }
            }
            (n, if iterations > 0 { 2501 } else { 0 })
        }
        "all" => (encode(&plain, 1), 999),
        other => {
            eprintln!(
                "netconsole_callgrind: unknown case {other:?} (nc-encode, nc-encode-frag, \
                 nc-encode-escapes, nc-decode, nc-reassemble)"
            );
            return ExitCode::from(2);
        }
    };
    if iterations > 0 && len != want {
        eprintln!("netconsole_callgrind: {case}: {len} bytes, expected {want}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
