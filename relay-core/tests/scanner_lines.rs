//! Console scanner unit behaviour: line ends, escapes, NULs, over-long and
//! non-UTF-8 lines, printk prefixes, chunking invariance, and the context ring.
#![allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used
)]

use proptest::prelude::*;
use relay_core::scanner::{ConsoleScanner, ContextRing, Line};

/// An owned copy of a [`Line`].
#[derive(Clone, Debug, PartialEq, Eq)]
struct Owned {
    text: Vec<u8>,
    level: Option<u8>,
    facility: Option<u8>,
    ts_usec: Option<u64>,
    truncated: bool,
}

impl From<Line<'_>> for Owned {
    fn from(l: Line<'_>) -> Self {
        Owned {
            text: l.text.to_vec(),
            level: l.level,
            facility: l.facility,
            ts_usec: l.ts_usec,
            truncated: l.truncated,
        }
    }
}

fn scan<const N: usize>(chunks: &[&[u8]]) -> Vec<Owned> {
    let mut s = ConsoleScanner::<N>::new();
    let mut out = Vec::new();
    for c in chunks {
        s.push(c, |l| out.push(Owned::from(l)));
    }
    out
}

fn texts<const N: usize>(input: &[u8]) -> Vec<String> {
    scan::<N>(&[input]).into_iter().map(|l| String::from_utf8_lossy(&l.text).into_owned()).collect()
}

#[test]
fn line_ends_lf_cr_crlf() {
    assert_eq!(texts::<64>(b"a\nb\r\nc\rd\n\ne\r\r\n"), ["a", "b", "c", "d", "", "e", ""]);
    // CR LF split across pushes is still one line end.
    let lines = scan::<64>(&[b"one\r", b"\ntwo\r", b"", b"\n"]);
    assert_eq!(lines.len(), 2);
    // No line end, no line.
    assert!(texts::<64>(b"partial").is_empty());
}

#[test]
fn flush_emits_partial_line() {
    let mut s = ConsoleScanner::<64>::new();
    let mut out = Vec::new();
    s.push(b"done\r\nlast words", |l| out.push(Owned::from(l)));
    assert_eq!(s.pending(), b"last words");
    s.flush(|l| out.push(Owned::from(l)));
    assert_eq!(out.len(), 2);
    assert_eq!(out[1].text, b"last words");
    s.flush(|l| out.push(Owned::from(l)));
    assert_eq!(out.len(), 2, "nothing pending, nothing flushed");
}

#[test]
fn real_console_start_is_cleaned() {
    // The first bytes of tests/fixtures/netconsole/*.serial.log.
    let input = b"\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS (version 1.16.2-debian-1.16.2-1)\r\n\
Booting from ROM...\r\n\
Probing EDD (edd=off to disable)... o\x1bc\x1b[?7l\x1b[2J[    0.000000] Linux version 6.1.0-56-amd64\r\n";
    let lines = scan::<256>(&[input]);
    let t: Vec<_> = lines.iter().map(|l| String::from_utf8_lossy(&l.text).into_owned()).collect();
    // ESC c (terminal reset) splits the firmware's partial line from the kernel's first.
    assert_eq!(
        t,
        [
            "SeaBIOS (version 1.16.2-debian-1.16.2-1)",
            "Booting from ROM...",
            "Probing EDD (edd=off to disable)... o",
            "Linux version 6.1.0-56-amd64"
        ]
    );
    assert_eq!(lines[3].ts_usec, Some(0));
}

#[test]
fn ansi_sequences_are_stripped() {
    let input = b"\x1b[1;31mred\x1b[0m plain \x1b]0;title\x07osc \x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\ \x1b(Bcharset \x1b7saved\x1b8 \x1bPdcs\x1b\\done\n";
    assert_eq!(texts::<128>(input), ["red plain osc link charset saved done"]);
}

#[test]
fn unterminated_escape_does_not_eat_the_line_end() {
    // An OSC cut off by line noise: the line end still ends the line.
    assert_eq!(texts::<128>(b"a\x1b]0;never ends\r\nnext\n"), ["a", "next"]);
    assert_eq!(texts::<128>(b"b\x1b[12;\nnext\n"), ["b", "next"]);
    // An escape longer than the bound is abandoned, the text comes back.
    let mut long = b"x\x1b]".to_vec();
    long.extend(std::iter::repeat_n(b'y', 400));
    long.extend(b"\nz\n");
    let t = texts::<1024>(&long);
    assert_eq!(t.len(), 2);
    assert!(t[0].starts_with('x') && t[0].ends_with('y'), "{t:?}");
    assert_eq!(t[1], "z");
}

#[test]
fn nul_runs_and_controls_are_dropped() {
    let input = b"\0\0\0\0a\0b\x07c\x08\td\r\0\0\n\0\0e\n";
    assert_eq!(texts::<64>(input), ["abc\td", "e"]);
    // A long NUL run (a host powering up) yields nothing.
    assert!(texts::<64>(&[0u8; 5000]).is_empty());
}

#[test]
fn long_lines_are_truncated_and_sync_kept() {
    let mut input = vec![b'a'; 100];
    input.extend(b"\nshort\n");
    let lines = scan::<16>(&[&input]);
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0].text, vec![b'a'; 16]);
    assert!(lines[0].truncated);
    assert_eq!(lines[1].text, b"short");
    assert!(!lines[1].truncated);
    // Exactly LINE_MAX fits without truncation.
    let lines = scan::<5>(&[b"12345\n123456\n"]);
    assert!(!lines[0].truncated);
    assert!(lines[1].truncated);
    assert_eq!(lines[1].text, b"12345");
}

#[test]
fn truncation_keeps_utf8_whole() {
    // "☃" is 3 bytes; a limit of 5 would cut the second one in half.
    let lines = scan::<5>(&["a☃☃\n".as_bytes()]);
    assert_eq!(lines[0].text, "a☃".as_bytes());
    assert!(lines[0].truncated);
    assert!(Line::new(&lines[0].text).as_str().is_some());
}

#[test]
fn non_utf8_lines_pass_through() {
    let lines = scan::<64>(&[b"ok \xff\xfe bad\ngood\n"]);
    assert_eq!(lines[0].text, b"ok \xff\xfe bad");
    assert_eq!(lines[1].text, b"good");
    let l = Line::new(&lines[0].text);
    assert_eq!(l.as_str(), None);
    assert_eq!(l.utf8_prefix(), "ok ");
}

#[test]
fn printk_prefixes() {
    let lines = scan::<256>(&[b"[    6.582893] Kernel panic - not syncing: x\r\n\
<0>[ 1234.000001] emerg\r\n\
<14>[    1.500000] user facility\r\n\
[   12.000100][    T1] caller id\r\n\
[   12.000100][     C0]  two spaces keep one\r\n\
<3>level only\r\n\
[    6.58289] five usec digits is not a stamp\r\n\
[abc] not a stamp\r\n\
<999>not a level\r\n"]);
    let got: Vec<_> = lines
        .iter()
        .map(|l| (String::from_utf8_lossy(&l.text).into_owned(), l.level, l.facility, l.ts_usec))
        .collect();
    let s = |t: &str| t.to_string();
    assert_eq!(
        got,
        [
            (s("Kernel panic - not syncing: x"), None, None, Some(6_582_893)),
            (s("emerg"), Some(0), Some(0), Some(1_234_000_001)),
            (s("user facility"), Some(6), Some(1), Some(1_500_000)),
            (s("caller id"), None, None, Some(12_000_100)),
            (s(" two spaces keep one"), None, None, Some(12_000_100)),
            (s("level only"), Some(3), Some(0), None),
            (s("[    6.58289] five usec digits is not a stamp"), None, None, None),
            (s("[abc] not a stamp"), None, None, None),
            (s("<999>not a level"), None, None, None),
        ]
    );
    // An absurd stamp that overflows u64 microseconds is not a stamp.
    let l = Line::parse(b"[99999999999999999.000000] x");
    assert_eq!(l.ts_usec, None);
}

#[test]
fn push_byte_matches_push() {
    let input = b"\x1bc\x1b[0mboot\r\n[    1.000000] a\tb\r\n\x1b]0;t\x07x\ry\n\0\0z\x1bcw\n";
    let want = scan::<8>(&[input]);
    let mut s = ConsoleScanner::<8>::new();
    let mut got = Vec::new();
    for &b in input.iter() {
        if let Some(l) = s.push_byte(b) {
            got.push(Owned::from(l));
        }
    }
    assert_eq!(got, want);
    assert_eq!(want.len(), 6, "{want:?}");
}

#[test]
fn counters() {
    let mut s = ConsoleScanner::<4>::new();
    s.push(b"abcdefgh\nab\nabcde\n", |_| {});
    assert_eq!(s.lines(), 3);
    assert_eq!(s.truncations(), 2);
}

#[test]
fn ring_keeps_newest_lines_in_order() {
    let mut ring = ContextRing::<256>::new();
    assert!(ring.is_empty());
    for i in 0..100u64 {
        let text = format!("line {i:03} {}", "x".repeat((i % 17) as usize));
        let mut l = Line::new(text.as_bytes());
        if i % 3 == 0 {
            l.ts_usec = Some(i * 1000);
            l.level = Some((i % 8) as u8);
            l.facility = Some(0);
        }
        ring.push(&l);
        // Always ordered, always the newest suffix of what was pushed.
        let held: Vec<String> = ring.iter().map(|l| String::from_utf8_lossy(l.text).into_owned()).collect();
        assert_eq!(held.len(), ring.len());
        assert_eq!(held.last().unwrap(), &text);
        let first = ring.pushed() - ring.len() as u64;
        for (k, h) in held.iter().enumerate() {
            assert!(h.starts_with(&format!("line {:03}", first + k as u64)), "{held:?}");
        }
        let bytes: usize = ring.iter().map(|l| l.text.len() + 12).sum();
        assert!(bytes <= 256);
    }
    assert_eq!(ring.pushed(), 100);
    // Metadata survives the round trip.
    let newest_stamped = ring.iter().filter(|l| l.ts_usec.is_some()).last().unwrap();
    assert_eq!(newest_stamped.ts_usec, Some(99_000));
    assert_eq!(newest_stamped.level, Some(3));
    assert_eq!(newest_stamped.facility, Some(0));
    ring.clear();
    assert_eq!(ring.iter().count(), 0);
}

#[test]
fn ring_truncates_a_line_bigger_than_itself() {
    let mut ring = ContextRing::<40>::new();
    ring.push(&Line::new(b"before"));
    let big = "☃".repeat(20);
    ring.push(&Line::new(big.as_bytes()));
    let held: Vec<_> = ring.iter().collect();
    assert_eq!(held.len(), 1);
    assert!(held[0].truncated);
    assert!(held[0].as_str().is_some(), "cut on a char boundary");
    assert_eq!(held[0].text.len(), 27); // 28 bytes of room, 9 whole snowmen
}

proptest! {
    /// Any chunking of any input yields the same lines as one push.
    #[test]
    fn chunking_is_invisible(
        input in prop::collection::vec(
            prop_oneof![
                4 => any::<u8>(),
                2 => Just(b'\n'),
                2 => Just(b'\r'),
                2 => Just(0x1bu8),
                1 => Just(b'['),
                1 => Just(0u8),
            ],
            0..600,
        ),
        cuts in prop::collection::vec(0usize..600, 0..20),
    ) {
        let whole = scan::<32>(&[&input]);
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(input.len())).collect();
        cuts.sort_unstable();
        let mut chunks: Vec<&[u8]> = Vec::new();
        let mut prev = 0;
        for c in cuts {
            chunks.push(&input[prev..c]);
            prev = c;
        }
        chunks.push(&input[prev..]);
        prop_assert_eq!(scan::<32>(&chunks), whole.clone());
        for l in &whole {
            prop_assert!(l.text.len() <= 32);
            prop_assert!(!l.text.contains(&b'\n') && !l.text.contains(&b'\r') && !l.text.contains(&0));
        }
    }

    /// The ring never exceeds its storage and always holds the newest lines.
    #[test]
    fn ring_holds_a_suffix(lens in prop::collection::vec(0usize..300, 1..200)) {
        let mut ring = ContextRing::<512>::new();
        let mut all = Vec::new();
        for (i, n) in lens.iter().enumerate() {
            let text: Vec<u8> = (0..*n).map(|k| b'a' + ((i + k) % 26) as u8).collect();
            let mut l = Line::new(&text);
            if i % 2 == 0 { l.ts_usec = Some(i as u64); }
            ring.push(&l);
            all.push(text);
        }
        let held: Vec<Vec<u8>> = ring.iter().map(|l| l.text.to_vec()).collect();
        prop_assert!(!held.is_empty());
        prop_assert_eq!(held.len(), ring.len());
        prop_assert_eq!(&held[..], &all[all.len() - held.len()..]);
    }
}
