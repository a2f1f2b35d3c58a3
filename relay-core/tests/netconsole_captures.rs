//! The netconsole codec against real captures of a Debian 6.1 kernel
//! panicking in QEMU (tests/fixtures/netconsole/, see its README).
//!
//! - every datagram of every run decodes;
//! - every extended record, reassembled and re-encoded, gives back the
//!   kernel's datagrams byte for byte, ncfrag splits included;
//! - every basic message, re-chunked, gives back the kernel's datagrams;
//! - in the dual run, the extended and basic targets carry the same text.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::panic
)] // a test may panic on what it checks

use base64::Engine as _;
use relay_core::netconsole::escape::unescape_into;
use relay_core::netconsole::{basic, ExtRecord, ExtRepr, Reassembler, MAX_PRINT_CHUNK};
use relay_core::{Duration, Instant};
use std::path::PathBuf;

struct Datagram {
    dport: u16,
    t: f64,
    payload: Vec<u8>,
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/netconsole")
        .join(name)
}

fn load(run: &str) -> Vec<Datagram> {
    let path = fixture(&format!("{run}.jsonl"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{run}.jsonl line {}: {e}", i + 1));
            let b64 = v["b64"].as_str().expect("b64 field");
            let payload = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .expect("valid base64");
            assert_eq!(v["len"].as_u64(), Some(payload.len() as u64), "len field");
            Datagram {
                dport: v["dport"].as_u64().expect("dport") as u16,
                t: v["t"].as_f64().expect("t"),
                payload,
            }
        })
        .collect()
}

/// The extended datagrams of a run, and the basic ones.
fn split(run: &str) -> (Vec<Datagram>, Vec<Datagram>) {
    load(run).into_iter().partition(|d| match run {
        "ext-panic" => true,
        "basic-panic" => false,
        _ => d.dport == 6666,
    })
}

fn unescape(escaped: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; escaped.len()];
    let n = unescape_into(escaped, &mut out).expect("kernel escaping is valid");
    out.truncate(n);
    out
}

/// Re-encode a whole record with the encoder under test.
fn reencode(record: &ExtRepr<'_>) -> Vec<Vec<u8>> {
    let text = unescape(record.text());
    let dict_raw: Vec<(Vec<u8>, Vec<u8>)> = record
        .dict()
        .map(|kv| {
            let (k, v) = kv.expect("kernel dictionary lines are well formed");
            (unescape(k), unescape(v))
        })
        .collect();
    let dict: Vec<(&[u8], &[u8])> = dict_raw
        .iter()
        .map(|(k, v)| (k.as_slice(), v.as_slice()))
        .collect();
    let rec = ExtRecord {
        release: record.release,
        prefix: record.prefix,
        seq: record.seq,
        ts_usec: record.ts_usec,
        cont: record.is_cont(),
        text: &text,
        dict: &dict,
    };
    let mut it = rec.datagrams();
    let mut out = Vec::new();
    let mut buf = [0u8; MAX_PRINT_CHUNK];
    while let Some(r) = it.next_into(&mut buf) {
        let n = r.expect("encodes");
        out.push(buf[..n].to_vec());
    }
    out
}

/// A decoded extended record: its header fields and its raw text.
#[derive(Debug)]
struct Record {
    seq: u64,
    ts_usec: u64,
    text: Vec<u8>,
}

/// Decode, reassemble and re-encode every extended datagram of a run.
fn check_extended(run: &str, datagrams: &[Datagram]) -> Vec<Record> {
    let mut reasm: Reassembler<4, 8192> = Reassembler::new(Duration::from_secs(5));
    let mut pending: Vec<&[u8]> = Vec::new();
    let mut records = Vec::new();
    let mut fragmented = 0;
    for (i, d) in datagrams.iter().enumerate() {
        let repr = ExtRepr::parse(&d.payload)
            .unwrap_or_else(|e| panic!("{run} datagram {i}: {e}: {:?}", d.payload));
        // The typed view's inverse gives the datagram back.
        let mut emitted = vec![0u8; repr.buffer_len()];
        assert_eq!(repr.emit(&mut emitted), Ok(d.payload.len()));
        assert_eq!(
            emitted, d.payload,
            "{run} datagram {i}: emit(parse(d)) != d"
        );

        pending.push(&d.payload);
        let now = Instant((d.t * 1e6) as u64);
        let Some(record) = reasm.push(&repr, now).expect("kernel fragments reassemble") else {
            assert!(repr.frag.is_some());
            continue;
        };
        assert!(record.frag.is_none());
        if pending.len() > 1 {
            fragmented += 1;
        }
        let again = reencode(&record);
        assert_eq!(
            again.len(),
            pending.len(),
            "{run} seq {}: datagram count differs",
            record.seq
        );
        for (k, (mine, kernel)) in again.iter().zip(&pending).enumerate() {
            assert_eq!(
                mine.as_slice(),
                *kernel,
                "{run} seq {} datagram {k}: re-encoding differs\nmine:   {:?}\nkernel: {:?}",
                record.seq,
                String::from_utf8_lossy(mine),
                String::from_utf8_lossy(kernel)
            );
        }
        records.push(Record {
            seq: record.seq,
            ts_usec: record.ts_usec,
            text: unescape(record.text()),
        });
        pending.clear();
    }
    assert!(pending.is_empty(), "{run}: incomplete record at the end");
    assert_eq!(reasm.in_flight(), 0);
    // The fixture writes one long userspace and one long kernel record.
    assert_eq!(fragmented, 2, "{run}: fragmented records");
    assert_eq!(reasm.stats().completed, 2);
    // Sequence numbers are consecutive: nothing was lost in decoding.
    for w in records.windows(2) {
        assert_eq!(w[1].seq, w[0].seq + 1, "{run}: sequence gap");
    }
    records
}

/// A basic line as the receiver sees it, with pieces joined.
#[derive(Debug, PartialEq)]
struct Line {
    ts_usec: Option<u64>,
    text: Vec<u8>,
}

/// Decode every basic datagram, check the 1000-byte chunking, join lines.
fn check_basic(run: &str, datagrams: &[Datagram]) -> Vec<Line> {
    // A message is a run of full chunks and one short one.
    let mut message: Vec<u8> = Vec::new();
    let mut group: Vec<&[u8]> = Vec::new();
    let mut lines: Vec<Line> = Vec::new();
    let mut partial: Option<Vec<u8>> = None;
    for (i, d) in datagrams.iter().enumerate() {
        for piece in basic::lines(&d.payload).unwrap_or_else(|e| panic!("{run} {i}: {e}")) {
            match partial.take() {
                // The continuation of a line cut at a chunk boundary.
                Some(mut head) => {
                    head.extend_from_slice(piece.text);
                    if piece.complete {
                        let (ts, text) = basic::split_timestamp(&head)
                            .map(|(ts, t)| (Some(ts), t.to_vec()))
                            .unwrap_or((None, head.clone()));
                        lines.push(Line { ts_usec: ts, text });
                    } else {
                        partial = Some(head);
                    }
                }
                None if piece.complete => lines.push(Line {
                    ts_usec: piece.ts_usec,
                    text: piece.text.to_vec(),
                }),
                None => {
                    // Keep the raw piece (timestamp included) to re-split
                    // once the rest arrives.
                    let raw_start = d
                        .payload
                        .iter()
                        .rposition(|&c| c == b'\n')
                        .map_or(0, |p| p + 1);
                    partial = Some(d.payload[raw_start..].to_vec());
                }
            }
        }
        message.extend_from_slice(&d.payload);
        group.push(&d.payload);
        if d.payload.len() < MAX_PRINT_CHUNK {
            let rechunked: Vec<&[u8]> = basic::chunks(&message).collect();
            assert_eq!(rechunked, group, "{run} datagram {i}: chunking differs");
            message.clear();
            group.clear();
        }
    }
    assert!(
        group.is_empty() && partial.is_none(),
        "{run}: cut-off message"
    );
    lines
}

#[test]
fn ext_panic_round_trips_byte_for_byte() {
    let (ext, basic) = split("ext-panic");
    assert!(basic.is_empty());
    assert_eq!(ext.len(), 451);
    let records = check_extended("ext-panic", &ext);
    let last = records.last().expect("records");
    assert!(last
        .text
        .starts_with(b"---[ end Kernel panic - not syncing"));
}

#[test]
fn basic_panic_decodes_and_rechunks() {
    let (ext, basic) = split("basic-panic");
    assert!(ext.is_empty());
    assert_eq!(basic.len(), 449);
    let lines = check_basic("basic-panic", &basic);
    assert!(lines
        .iter()
        .all(|l| l.ts_usec.is_some() || l.text.is_empty()));
    let last = lines.last().expect("lines");
    assert!(last
        .text
        .starts_with(b"---[ end Kernel panic - not syncing"));
}

#[test]
fn dual_panic_both_formats_agree() {
    let (ext, basic) = split("dual-panic");
    assert_eq!(ext.len() + basic.len(), 898);
    let records = check_extended("dual-panic", &ext);
    let lines = check_basic("dual-panic", &basic);
    // Each extended record is one or more basic lines with its timestamp.
    let expected: Vec<Line> = records
        .iter()
        .flat_map(|r| {
            r.text.split(|&c| c == b'\n').map(|t| Line {
                ts_usec: Some(r.ts_usec),
                text: t.to_vec(),
            })
        })
        .collect();
    assert_eq!(lines.len(), expected.len());
    for (g, e) in lines.iter().zip(&expected) {
        assert_eq!(
            g,
            e,
            "basic {:?} vs ext {:?}",
            String::from_utf8_lossy(&g.text),
            String::from_utf8_lossy(&e.text)
        );
    }
}
