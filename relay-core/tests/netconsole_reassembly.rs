//! The bounded ncfrag reassembler: order, duplicates, overlaps, range,
//! size and fragment-count limits, eviction and timeouts, each counted.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::panic
)] // a test may panic on what it checks

use relay_core::netconsole::reassembly::MAX_FRAGMENTS;
use relay_core::netconsole::{
    ExtRecord, ExtRepr, Frag, Reassembler, ReassemblyError, ReassemblyStats, MAX_PRINT_CHUNK,
};
use relay_core::{Duration, Instant};

const T0: Instant = Instant(1_000_000);

fn frag(seq: u64, offset: u32, total: u32, payload: &[u8]) -> ExtRepr<'_> {
    ExtRepr {
        release: None,
        prefix: 6,
        seq,
        ts_usec: 77,
        flags: b'-',
        frag: Some(Frag { offset, total }),
        payload,
    }
}

/// The datagrams Linux sends for a record with `text_len` bytes of text.
fn kernel_fragments(seq: u64, text_len: usize) -> Vec<Vec<u8>> {
    let text: Vec<u8> = (0..text_len).map(|i| b'a' + (i % 26) as u8).collect();
    let rec = ExtRecord {
        release: Some(b"6.1.0-56-amd64"),
        prefix: 4,
        seq,
        ts_usec: 123,
        cont: false,
        text: &text,
        dict: &[(b"SUBSYSTEM", b"pci")],
    };
    let mut it = rec.datagrams();
    let mut out = Vec::new();
    let mut buf = [0u8; MAX_PRINT_CHUNK];
    while let Some(r) = it.next_into(&mut buf) {
        out.push(buf[..r.unwrap()].to_vec());
    }
    out
}

fn body_of(datagrams: &[Vec<u8>]) -> Vec<u8> {
    datagrams
        .iter()
        .flat_map(|d| ExtRepr::parse(d).unwrap().payload.to_vec())
        .collect()
}

#[test]
fn in_order_and_reversed_and_shuffled() {
    let dgrams = kernel_fragments(9, 2600);
    assert_eq!(dgrams.len(), 3);
    let body = body_of(&dgrams);
    for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0]] {
        let mut r: Reassembler<2, 4096> = Reassembler::new(Duration::from_secs(2));
        let mut whole = None;
        for (k, &i) in order.iter().enumerate() {
            let repr = ExtRepr::parse(&dgrams[i]).unwrap();
            let out = r.push(&repr, T0).unwrap();
            if k < 2 {
                assert!(out.is_none(), "complete too early ({order:?})");
            } else {
                let rec = out.expect("complete");
                assert_eq!(rec.frag, None);
                assert_eq!(rec.release, Some(&b"6.1.0-56-amd64"[..]));
                assert_eq!((rec.prefix, rec.seq, rec.ts_usec), (4, 9, 123));
                whole = Some(rec.payload.to_vec());
            }
        }
        assert_eq!(whole.as_deref(), Some(body.as_slice()));
        assert_eq!(r.in_flight(), 0);
        assert_eq!(r.stats().completed, 1);
    }
}

#[test]
fn unfragmented_records_pass_through() {
    let d = b"6,5,0,-;short\n";
    let repr = ExtRepr::parse(d).unwrap();
    let mut r: Reassembler<1, 64> = Reassembler::new(Duration::from_secs(1));
    assert_eq!(r.push(&repr, T0), Ok(Some(repr)));
    assert_eq!(r.stats(), ReassemblyStats::default());
}

#[test]
fn duplicate_and_overlap_are_refused_and_counted() {
    let mut r: Reassembler<2, 64> = Reassembler::new(Duration::from_secs(1));
    assert_eq!(r.push(&frag(1, 0, 10, b"abcd"), T0), Ok(None));
    assert_eq!(
        r.push(&frag(1, 0, 10, b"abcd"), T0),
        Err(ReassemblyError::Duplicate { offset: 0 })
    );
    // Same bounds, different bytes: not a harmless duplicate.
    assert_eq!(
        r.push(&frag(1, 0, 10, b"abXd"), T0),
        Err(ReassemblyError::Overlap { offset: 0, len: 4 })
    );
    assert_eq!(
        r.push(&frag(1, 3, 10, b"de"), T0),
        Err(ReassemblyError::Overlap { offset: 3, len: 2 })
    );
    assert_eq!(
        r.push(&frag(1, 2, 10, b"cdefghij"), T0),
        Err(ReassemblyError::Overlap { offset: 2, len: 8 })
    );
    // The refusals did not disturb the record.
    let done = r.push(&frag(1, 4, 10, b"efghij"), T0).unwrap().unwrap();
    assert_eq!(done.payload, b"abcdefghij");
    let s = r.stats();
    assert_eq!((s.duplicates, s.overlaps, s.completed), (1, 3, 1));
}

#[test]
fn out_of_range_too_large_and_mismatched_totals() {
    let mut r: Reassembler<2, 16> = Reassembler::new(Duration::from_secs(1));
    assert_eq!(
        r.push(&frag(1, 12, 10, b"ab"), T0),
        Err(ReassemblyError::FragOutOfRange {
            offset: 12,
            len: 2,
            total: 10
        })
    );
    assert_eq!(
        r.push(&frag(1, 9, 10, b"ab"), T0),
        Err(ReassemblyError::FragOutOfRange {
            offset: 9,
            len: 2,
            total: 10
        })
    );
    assert_eq!(
        r.push(&frag(1, 0, 10, b""), T0),
        Err(ReassemblyError::FragOutOfRange {
            offset: 0,
            len: 0,
            total: 10
        })
    );
    assert_eq!(
        r.push(&frag(2, 0, 17, b"ab"), T0),
        Err(ReassemblyError::TooLarge { total: 17, max: 16 })
    );
    assert_eq!(r.push(&frag(3, 0, 10, b"ab"), T0), Ok(None));
    assert_eq!(
        r.push(&frag(3, 2, 11, b"cd"), T0),
        Err(ReassemblyError::TotalMismatch {
            expected: 10,
            got: 11
        })
    );
    assert_eq!(r.stats().refused, 5);
    assert_eq!(r.in_flight(), 1);
}

#[test]
fn too_many_fragments() {
    let mut r: Reassembler<1, 64> = Reassembler::new(Duration::from_secs(1));
    let bytes = [b'x'; 64];
    for i in 0..MAX_FRAGMENTS {
        assert_eq!(r.push(&frag(1, i as u32, 64, &bytes[..1]), T0), Ok(None));
    }
    assert_eq!(
        r.push(&frag(1, MAX_FRAGMENTS as u32, 64, &bytes[..1]), T0),
        Err(ReassemblyError::TooManyFragments)
    );
}

#[test]
fn oldest_record_is_evicted_when_full() {
    let mut r: Reassembler<2, 64> = Reassembler::new(Duration::from_secs(10));
    r.push(&frag(1, 0, 4, b"a"), T0).unwrap();
    r.push(&frag(2, 0, 4, b"b"), T0.saturating_add(Duration(1)))
        .unwrap();
    // A third record takes the slot of seq 1, the oldest.
    r.push(&frag(3, 0, 4, b"c"), T0.saturating_add(Duration(2)))
        .unwrap();
    assert_eq!(r.stats().evicted, 1);
    assert_eq!(r.in_flight(), 2);
    // seq 2 still completes; seq 1 starts over (and is not complete).
    let done = r.push(&frag(2, 1, 4, b"bbb"), T0).unwrap().unwrap();
    assert_eq!(done.payload, b"bbbb");
    assert_eq!(r.push(&frag(1, 1, 4, b"aaa"), T0), Ok(None));
}

#[test]
fn incomplete_records_time_out() {
    let timeout = Duration::from_millis(500);
    let mut r: Reassembler<2, 64> = Reassembler::new(timeout);
    assert_eq!(r.poll_timeout(), None);
    r.push(&frag(1, 0, 4, b"ab"), T0).unwrap();
    assert_eq!(r.poll_timeout(), Some(T0.saturating_add(timeout)));
    assert_eq!(r.poll(T0.saturating_add(Duration(499_999))), 0);
    assert_eq!(r.poll(T0.saturating_add(timeout)), 1);
    assert_eq!(r.stats().expired, 1);
    assert_eq!(r.in_flight(), 0);
    // The late second half alone does not complete anything.
    let late = T0.saturating_add(timeout);
    assert_eq!(r.push(&frag(1, 2, 4, b"cd"), late), Ok(None));
}

#[test]
fn records_are_told_apart_by_their_header() {
    let mut r: Reassembler<4, 64> = Reassembler::new(Duration::from_secs(1));
    let mut other_ts = frag(1, 0, 4, b"xx");
    other_ts.ts_usec = 78;
    r.push(&frag(1, 0, 4, b"ab"), T0).unwrap();
    r.push(&other_ts, T0).unwrap();
    assert_eq!(r.in_flight(), 2);
    let done = r.push(&frag(1, 2, 4, b"cd"), T0).unwrap().unwrap();
    assert_eq!((done.ts_usec, done.payload), (77, &b"abcd"[..]));
}

#[test]
fn late_copy_after_completion_is_a_duplicate() {
    let mut r: Reassembler<2, 64> = Reassembler::new(Duration::from_secs(1));
    r.push(&frag(1, 0, 4, b"ab"), T0).unwrap();
    assert!(r.push(&frag(1, 2, 4, b"cd"), T0).unwrap().is_some());
    // A resent fragment of the finished record does not start a new one
    // (which would later time out and be counted as a loss).
    assert_eq!(
        r.push(&frag(1, 0, 4, b"ab"), T0),
        Err(ReassemblyError::Duplicate { offset: 0 })
    );
    assert_eq!(r.in_flight(), 0);
    assert_eq!(r.poll(T0.saturating_add(Duration::from_secs(5))), 0);
    let s = r.stats();
    assert_eq!((s.completed, s.duplicates, s.expired), (1, 1, 0));
    // New records still get slots, the remembered one last.
    r.push(&frag(2, 0, 4, b"ab"), T0).unwrap();
    r.push(&frag(3, 0, 4, b"ab"), T0).unwrap();
    assert_eq!(r.in_flight(), 2);
    assert_eq!(r.stats().evicted, 0);
}
