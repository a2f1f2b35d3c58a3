//! The detector on the real kernel serial console captures
//! (`tests/fixtures/netconsole/*.serial.log`, Debian 6.1 in QEMU, CRLF):
//! exactly one fatal trigger, at the `Kernel panic - not syncing` line, with
//! the lines before it in the context ring; confirmed at
//! `---[ end Kernel panic`; nothing at all during boot.
#![allow(clippy::indexing_slicing, clippy::arithmetic_side_effects, clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use relay_core::detect::{Certainty, Confirmation, Detector, Event, Kind, Phase};
use relay_core::scanner::{ConsoleScanner, ContextRing};
use relay_core::Instant;

const RUNS: [&str; 3] = ["ext-panic", "basic-panic", "dual-panic"];

fn serial_log(run: &str) -> Vec<u8> {
    let path = format!(
        "{}/../tests/fixtures/netconsole/{run}.serial.log",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// What happened while feeding a log.
#[derive(Debug, Default)]
struct Outcome {
    /// (line number, event, trigger line text)
    events: Vec<(usize, Event, String)>,
    /// Context ring contents (newest last) at the moment of the fatal trigger.
    context_at_trigger: Vec<String>,
    lines: usize,
}

/// Feed `log` split at the given chunk lengths (cycled), one line per
/// millisecond of relay time.
fn feed(log: &[u8], chunks: &[usize]) -> Outcome {
    let mut scanner = ConsoleScanner::<1024>::new();
    let mut ring = ContextRing::<8192>::new();
    let mut det = Detector::default();
    let mut out = Outcome::default();
    let mut rest = log;
    let mut i = 0;
    while !rest.is_empty() {
        let n = chunks[i % chunks.len()].clamp(1, rest.len());
        i += 1;
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        scanner.push(chunk, |line| {
            out.lines += 1;
            let now = Instant::from_millis(out.lines as u64);
            if let Some(ev) = det.on_line(&line, now) {
                if matches!(ev, Event::Triggered { fatal: true, .. }) {
                    out.context_at_trigger = ring
                        .iter()
                        .map(|l| String::from_utf8_lossy(l.text).into_owned())
                        .collect();
                }
                out.events.push((out.lines, ev, String::from_utf8_lossy(line.text).into_owned()));
            }
            ring.push(&line);
        });
    }
    out
}

fn line_no(log: &[u8], needle: &str) -> usize {
    let text = String::from_utf8_lossy(log);
    // Line numbers as the scanner counts them: the firmware's `ESC c` before
    // the kernel's first line splits line 3 in two.
    1 + 1 + text.lines().position(|l| l.contains(needle)).expect(needle)
}

fn check(run: &str, out: &Outcome, log: &[u8]) {
    let panic_line = line_no(log, "] Kernel panic - not syncing");
    let end_line = line_no(log, "] ---[ end Kernel panic");
    assert_eq!(out.events.len(), 2, "{run}: {:#?}", out.events);
    let (at, ev, text) = &out.events[0];
    assert_eq!(*at, panic_line, "{run}");
    assert_eq!(text, "Kernel panic - not syncing: sysrq triggered crash");
    assert!(matches!(
        ev,
        Event::Triggered { kind: Kind::KernelPanic, certainty: Certainty::Suspected, fatal: true, host_ts_usec: Some(_) }
    ), "{run}: {ev:?}");
    let (at, ev, text) = &out.events[1];
    assert_eq!(*at, end_line, "{run}");
    assert!(text.starts_with("---[ end Kernel panic - not syncing: sysrq triggered crash"));
    assert!(matches!(
        ev,
        Event::Confirmed { kind: Kind::KernelPanic, by: Confirmation::EndMarker, host_ts_usec: Some(_) }
    ), "{run}: {ev:?}");
    // The context: the lines just before the panic, ending with sysrq's.
    let ctx = &out.context_at_trigger;
    assert_eq!(ctx.last().map(String::as_str), Some("sysrq: Trigger a crash"), "{run}");
    assert!(
        // In dual-panic the kernel glued this record onto a partial
        // userspace line: "ncinit: plain st[    5.994048] ncfixture: ...".
        ctx.iter().any(|l| l.contains("ncfixture: about to trigger scenario")),
        "{run}: {ctx:#?}"
    );
    assert!(ctx.len() > 20, "{run}: only {} context lines", ctx.len());
}

#[test]
fn real_logs_whole() {
    for run in RUNS {
        let log = serial_log(run);
        let out = feed(&log, &[log.len()]);
        check(run, &out, &log);
    }
}

#[test]
fn real_logs_byte_by_byte() {
    for run in RUNS {
        let log = serial_log(run);
        let out = feed(&log, &[1]);
        check(run, &out, &log);
    }
}

#[test]
fn boot_part_has_no_trigger() {
    for run in RUNS {
        let log = serial_log(run);
        let cut = log
            .windows(b"Kernel panic".len())
            .position(|w| w == b"Kernel panic")
            .expect("panic line");
        let out = feed(&log[..cut], &[7, 64, 1, 300]);
        assert!(out.events.is_empty(), "{run}: {:#?}", out.events);
        assert!(out.lines > 390, "{run}: {} lines", out.lines);
    }
}

#[test]
fn silence_confirms_when_end_marker_is_missing() {
    let log = serial_log("ext-panic");
    let cut = log.windows(b"---[ end Kernel".len()).position(|w| w == b"---[ end Kernel").unwrap();
    let mut scanner = ConsoleScanner::<1024>::new();
    let mut det = Detector::default();
    let mut events = Vec::new();
    scanner.push(&log[..cut], |line| events.extend(det.on_line(&line, Instant::from_millis(1000))));
    assert_eq!(det.phase(), Phase::Suspected(Kind::KernelPanic));
    let deadline = det.poll_timeout().expect("a suspected panic has a deadline");
    assert_eq!(deadline, Instant::from_millis(3000));
    assert_eq!(det.poll(Instant::from_millis(2999)), None);
    assert_eq!(
        det.poll(deadline),
        Some(Event::Confirmed { kind: Kind::KernelPanic, by: Confirmation::Silence, host_ts_usec: None })
    );
    assert_eq!(det.poll_timeout(), None);
    assert_eq!(events.len(), 1);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn real_logs_random_chunking(run in 0usize..3, chunks in prop::collection::vec(1usize..200, 1..40)) {
        let run = RUNS[run];
        let log = serial_log(run);
        let out = feed(&log, &chunks);
        check(run, &out, &log);
    }
}
