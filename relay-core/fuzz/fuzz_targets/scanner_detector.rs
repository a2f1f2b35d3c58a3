//! Scanner + context ring + detector on arbitrary console bytes, split into
//! arbitrary chunks. Checks, beyond "no panic":
//! - the chunking is invisible (same lines and events as one push);
//! - lines hold no line end, no NUL, at most LINE_MAX bytes;
//! - the ring stays within its storage and holds the newest lines in order;
//! - at most one fatal trigger until the detector re-arms.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay_core::detect::{classify, Detector, Event};
use relay_core::scanner::{ConsoleScanner, ContextRing};
use relay_core::Instant;

const LINE_MAX: usize = 96;

#[derive(Debug, PartialEq)]
struct Run {
    lines: Vec<Vec<u8>>,
    events: Vec<Event>,
}

fn run(data: &[u8], cuts: &[u8]) -> Run {
    let mut scanner = ConsoleScanner::<LINE_MAX>::new();
    let mut ring = ContextRing::<512>::new();
    let mut det = Detector::default();
    let mut out = Run { lines: Vec::new(), events: Vec::new() };
    let mut fatal_armed = true;
    let mut rest = data;
    let mut i = 0usize;
    while !rest.is_empty() {
        let n = if cuts.is_empty() { rest.len() } else { usize::from(cuts[i % cuts.len()]).max(1) };
        i += 1;
        let (chunk, tail) = rest.split_at(n.min(rest.len()));
        rest = tail;
        scanner.push(chunk, |line| {
            assert!(line.text.len() <= LINE_MAX);
            assert!(!line.text.iter().any(|&b| b == b'\n' || b == b'\r' || b == 0));
            let _ = classify(line.text);
            let now = Instant::from_millis(out.lines.len() as u64);
            if let Some(ev) = det.on_line(&line, now) {
                match ev {
                    Event::Triggered { fatal: true, .. } => {
                        assert!(fatal_armed, "second fatal trigger without re-arm");
                        fatal_armed = false;
                    }
                    Event::Rearmed { .. } => fatal_armed = true,
                    _ => {}
                }
                out.events.push(ev);
            }
            ring.push(&line);
            out.lines.push(line.text.to_vec());
        });
    }
    // The console went quiet: a suspected panic is confirmed by silence.
    if let Some(t) = det.poll_timeout() {
        out.events.extend(det.poll(t));
        assert_eq!(det.poll_timeout(), None);
    }
    let held: Vec<&[u8]> = ring.iter().map(|l| l.text).collect();
    assert_eq!(held.len(), ring.len());
    let used: usize = ring.iter().map(|l| l.text.len() + 12).sum();
    assert!(used <= 512);
    let newest = &out.lines[out.lines.len() - held.len()..];
    for (h, l) in held.iter().zip(newest) {
        assert!(l.starts_with(h));
    }
    out
}

fuzz_target!(|input: &[u8]| {
    // First byte: how many chunk sizes follow; the rest is console data.
    let Some((&k, rest)) = input.split_first() else { return };
    let k = usize::from(k % 16).min(rest.len());
    let (cuts, data) = rest.split_at(k);
    let whole = run(data, &[]);
    let chunked = run(data, cuts);
    assert_eq!(whole, chunked);
});
