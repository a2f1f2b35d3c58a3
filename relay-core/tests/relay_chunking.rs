//! How console bytes are chunked (UART byte by byte up to DMA bursts) changes
//! nothing that matters: the real serial log, fed in random chunkings, yields
//! the same trigger, after-lines and confirmed report.
//!
//! What may differ is bounded and counted: lines that arrive in the same chunk
//! after the trigger can push the oldest context lines out of the ring before
//! the flush sends them (`RelayStats::lines_lost`), and the number of
//! suspected copies sent before the confirmation depends on when the end
//! marker arrives.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::panic
)] // test code: a panic is a test failure
use proptest::prelude::*;
use relay_core::frame::{Endpoints, FrameTemplate, IpEndpoints, MacAddr, MAX_FRAME_LEN};
use relay_core::netconsole::ExtRepr;
use relay_core::relay::{Relay, RelayConfig};
use relay_core::report;
use relay_core::{Duration, Instant};

const KEY: [u8; 32] = [0x11; 32];

fn log() -> Vec<u8> {
    std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/netconsole/ext-panic.serial.log"
    ))
    .unwrap()
}

fn relay() -> Relay {
    let ep = Endpoints {
        src_mac: MacAddr([2, 0, 0, 0, 0, 1]),
        dst_mac: MacAddr([2, 0, 0, 0, 0, 2]),
        vlan: None,
        ip: IpEndpoints::V4 {
            src: [10, 0, 0, 1],
            dst: [10, 0, 0, 2],
        },
        src_port: 6665,
        dst_port: 6666,
    };
    let mut cfg =
        RelayConfig::new("r", "n", KEY, 1, FrameTemplate::new(&ep, 1500).unwrap()).unwrap();
    cfg.mirror = false;
    Relay::new(cfg).unwrap()
}

/// Lines as (seq, payload), reports as (sequence, certainty, repeat,
/// trigger), lines lost.
type Output = (Vec<(u64, Vec<u8>)>, Vec<(u32, String, u8, String)>, u32);

/// Feed `log` split at `cuts`, all bytes at one instant per chunk, draining
/// after each; then let the report copies run out.
fn run(log: &[u8], cuts: &[usize]) -> Output {
    let mut r = relay();
    let mut buf = [0u8; MAX_FRAME_LEN];
    let mut frames = Vec::new();
    let mut now = Instant::from_millis(1);
    let mut start = 0;
    let mut bounds: Vec<usize> = cuts.iter().copied().filter(|&c| c < log.len()).collect();
    bounds.sort_unstable();
    bounds.push(log.len());
    for end in bounds {
        if end <= start {
            continue;
        }
        // Time is a function of the byte position, not of the chunking.
        now = Instant::from_millis(1).saturating_add(Duration(87 * end as u64));
        r.handle_console(&log[start..end], now);
        start = end;
        while let Some(n) = r.poll_transmit(now, &mut buf) {
            frames.push(buf[42..n].to_vec());
        }
    }
    let until = now.saturating_add(Duration::from_secs(10));
    while let Some(t) = r.poll_timeout().filter(|&t| t <= until) {
        now = now.max(t);
        while let Some(n) = r.poll_transmit(now, &mut buf) {
            frames.push(buf[42..n].to_vec());
        }
    }
    let mut lines = Vec::new();
    let mut reports = Vec::new();
    for f in &frames {
        if let Ok(rep) = report::verify(f, &KEY) {
            reports.push((
                rep.sequence,
                format!("{:?}", rep.certainty),
                rep.repeat_index,
                rep.trigger_line.to_string(),
            ));
        } else {
            let e = ExtRepr::parse(f).unwrap();
            lines.push((e.seq, e.payload.to_vec()));
        }
    }
    (lines, reports, r.stats().lines_lost)
}

fn check(got: &Output, reference: &Output) -> Result<(), TestCaseError> {
    let (lines, reports, lost) = got;
    let (ref_lines, ref_reports, ref_lost) = reference;
    prop_assert_eq!(*ref_lost, 0, "byte-by-byte feeding loses nothing");
    // The same lines, except up to `lost` of the oldest context lines.
    prop_assert_eq!(lines.len() + *lost as usize, ref_lines.len());
    prop_assert_eq!(&lines[..], &ref_lines[*lost as usize..]);
    prop_assert!(*lost <= 30, "lost {} context lines", lost);
    // The confirmed report is identical; suspected copies come first, in order.
    let confirmed: Vec<_> = reports.iter().filter(|r| r.1 == "Confirmed").collect();
    let ref_confirmed: Vec<_> = ref_reports.iter().filter(|r| r.1 == "Confirmed").collect();
    prop_assert_eq!(&confirmed, &ref_confirmed);
    prop_assert_eq!(confirmed.len(), 8);
    let suspected: Vec<_> = reports.iter().take_while(|r| r.1 == "Suspected").collect();
    prop_assert_eq!(suspected.len() + confirmed.len(), reports.len());
    for (i, r) in suspected.iter().enumerate() {
        prop_assert_eq!(usize::from(r.2), i);
        prop_assert_eq!(r.0, 0);
        prop_assert_eq!(&r.3, &confirmed[0].3);
    }
    Ok(())
}

/// Cut points for chunks of 1..=`max` bytes.
fn cuts(lens: &[usize], total: usize) -> Vec<usize> {
    let mut at = 0;
    let mut out = Vec::new();
    for &l in lens.iter().cycle() {
        at += l;
        if at >= total {
            break;
        }
        out.push(at);
    }
    out
}

fn byte_by_byte(log: &[u8]) -> Output {
    let all: Vec<usize> = (1..log.len()).collect();
    run(log, &all)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn chunking_changes_nothing_that_matters(lens in proptest::collection::vec(1usize..=512, 1..64)) {
        let log = log();
        let reference = byte_by_byte(&log);
        prop_assert!(reference.0.len() > 50);
        let got = run(&log, &cuts(&lens, log.len()));
        check(&got, &reference)?;
    }
}

#[test]
fn uart_fifo_sized_chunks_lose_at_most_a_line_or_two() {
    let log = log();
    let reference = byte_by_byte(&log);
    for len in [1, 16, 64] {
        let got = run(&log, &cuts(&[len], log.len()));
        check(&got, &reference).unwrap();
        assert!(got.2 <= 2, "{len}-byte chunks lost {} lines", got.2);
    }
}
