//! The extended encoder against a line-by-line transliteration of Linux 6.1's
//! C code (printk's `info_print_ext_header` + `msg_print_ext_body`, with
//! `scnprintf`'s truncation rules, and netconsole's `send_ext_msg_udp`),
//! over hand-picked edge cases and random records; and the decoder and
//! reassembler as its inverse.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::panic
)] // a test may panic on what it checks

use proptest::prelude::*;
use relay_core::netconsole::escape::{escape_into, escaped_len, unescape_into, unescape_str};
use relay_core::netconsole::{
    basic, EncodeError, ExtRecord, ExtRepr, Reassembler, CONSOLE_EXT_LOG_MAX, MAX_PRINT_CHUNK,
};
use relay_core::{Duration, Instant};

// ---- the kernel, transliterated (allocation and all; this is the oracle) ----

/// `scnprintf(buf + p, e - p, "%s", s)`: writes at most `e - p - 1` bytes.
fn scnprintf(buf: &mut [u8], p: usize, e: usize, s: &[u8]) -> usize {
    let size = e - p;
    if size == 0 {
        return 0;
    }
    let n = s.len().min(size - 1);
    buf[p..p + n].copy_from_slice(&s[..n]);
    buf[p + n] = 0;
    n
}

fn append_char(buf: &mut [u8], p: &mut usize, e: usize, c: u8) {
    if *p < e {
        buf[*p] = c;
        *p += 1;
    }
}

fn msg_add_ext_text(buf: &mut [u8], start: usize, size: usize, text: &[u8], endc: u8) -> usize {
    let mut p = start;
    let e = start + size;
    for &c in text {
        #[allow(clippy::manual_range_contains)] // as written in printk.c
        if c < b' ' || c >= 127 || c == b'\\' {
            let esc = format!("\\x{c:02x}");
            p += scnprintf(buf, p, e, esc.as_bytes());
        } else {
            append_char(buf, &mut p, e, c);
        }
    }
    append_char(buf, &mut p, e, endc);
    p - start
}

fn kernel_msg(r: &ExtRecord<'_>) -> Vec<u8> {
    const MAX: usize = 8192;
    let mut buf = vec![0u8; MAX];
    let header = format!(
        "{},{},{},{};",
        r.prefix,
        r.seq,
        r.ts_usec,
        if r.cont { 'c' } else { '-' }
    );
    let mut len = scnprintf(&mut buf, 0, MAX, header.as_bytes());
    len += msg_add_ext_text(&mut buf, len, MAX - len, r.text, b'\n');
    for (k, v) in r.dict {
        if v.is_empty() {
            continue;
        }
        len += msg_add_ext_text(&mut buf, len, MAX - len, b"", b' ');
        len += msg_add_ext_text(&mut buf, len, MAX - len, k, b'=');
        len += msg_add_ext_text(&mut buf, len, MAX - len, v, b'\n');
    }
    buf.truncate(len);
    buf
}

fn kernel_send_ext(release: Option<&[u8]>, msg: &[u8]) -> Vec<Vec<u8>> {
    const CHUNK: usize = 1000;
    let mut out = Vec::new();
    let mut buf = [0u8; CHUNK];
    let release_len = release.map_or(0, |r| r.len() + 1);
    if msg.len() + release_len <= CHUNK {
        match release {
            Some(rel) => {
                let mut s = rel.to_vec();
                s.push(b',');
                s.extend_from_slice(msg);
                scnprintf(&mut buf, 0, CHUNK, &s);
                out.push(buf[..msg.len() + release_len].to_vec());
            }
            None => out.push(msg.to_vec()),
        }
        return out;
    }
    let semi = msg.iter().position(|&c| c == b';').unwrap();
    let (header, body) = (&msg[..semi], &msg[semi + 1..]);
    if let Some(rel) = release {
        let mut s = rel.to_vec();
        s.push(b',');
        scnprintf(&mut buf, 0, CHUNK, &s);
    }
    buf[release_len..release_len + header.len()].copy_from_slice(header);
    let header_len = header.len() + release_len;
    let mut offset = 0;
    while offset < body.len() {
        let field = format!(",ncfrag={}/{};", offset, body.len());
        let this_header = header_len + scnprintf(&mut buf, header_len, CHUNK, field.as_bytes());
        let this_chunk = (body.len() - offset).min(CHUNK - this_header);
        assert!(this_chunk > 0, "kernel would WARN");
        buf[this_header..this_header + this_chunk]
            .copy_from_slice(&body[offset..offset + this_chunk]);
        out.push(buf[..this_header + this_chunk].to_vec());
        offset += this_chunk;
    }
    out
}

fn kernel(r: &ExtRecord<'_>) -> Vec<Vec<u8>> {
    kernel_send_ext(r.release, &kernel_msg(r))
}

// ---- helpers ----

fn encode(r: &ExtRecord<'_>) -> Vec<Vec<u8>> {
    let mut it = r.datagrams();
    let mut out = Vec::new();
    let mut buf = [0u8; MAX_PRINT_CHUNK];
    while let Some(d) = it.next_into(&mut buf) {
        let n = d.expect("encodes");
        out.push(buf[..n].to_vec());
    }
    out
}

/// Decode and reassemble `datagrams`; the single whole record's (release,
/// raw text, raw dict).
type Decoded = (Option<Vec<u8>>, Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>);

fn decode(datagrams: &[Vec<u8>]) -> Decoded {
    let mut reasm: Reassembler<2, 8192> = Reassembler::new(Duration::from_secs(1));
    let mut whole = None;
    for (i, d) in datagrams.iter().enumerate() {
        let repr = ExtRepr::parse(d)
            .unwrap_or_else(|e| panic!("datagram {i}: {e}: {:?}", String::from_utf8_lossy(d)));
        match reasm.push(&repr, Instant(0)).expect("reassembles") {
            Some(r) => {
                assert_eq!(i + 1, datagrams.len(), "complete before the last fragment");
                let unesc = |s: &[u8]| {
                    let mut v = vec![0; s.len()];
                    let n = unescape_into(s, &mut v).expect("unescapes");
                    v.truncate(n);
                    v
                };
                let dict = r
                    .dict()
                    .map(|kv| kv.map(|(k, v)| (unesc(k), unesc(v))))
                    .collect::<Result<Vec<_>, _>>()
                    .expect("dict");
                whole = Some((r.release.map(<[u8]>::to_vec), unesc(r.text()), dict));
            }
            None => assert!(repr.frag.is_some()),
        }
    }
    whole.expect("a whole record")
}

fn record<'a>(text: &'a [u8], dict: &'a [(&'a [u8], &'a [u8])]) -> ExtRecord<'a> {
    ExtRecord {
        release: None,
        prefix: 6,
        seq: 42,
        ts_usec: 1_234_567,
        cont: false,
        text,
        dict,
    }
}

// ---- hand-picked cases ----

#[test]
fn short_record_is_one_datagram() {
    let dict: &[(&[u8], &[u8])] = &[(b"SUBSYSTEM", b"pci"), (b"DEVICE", b"+pci:0000:00:02.0")];
    let r = record(b"e1000 0000:00:02.0 eth0: link up", dict);
    assert_eq!(
        encode(&r),
        vec![b"6,42,1234567,-;e1000 0000:00:02.0 eth0: link up\n SUBSYSTEM=pci\n DEVICE=+pci:0000:00:02.0\n".to_vec()]
    );
}

#[test]
fn escaping_matches_printk() {
    let dict: &[(&[u8], &[u8])] = &[(b"K\x01", b"v=\\"), (b"EMPTY", b"")];
    let mut r = record("tab\tnl\nbs\\del\x7f snow\u{2603} ;,".as_bytes(), dict);
    r.cont = true;
    r.prefix = 14;
    let got = encode(&r);
    assert_eq!(
        got,
        vec![
            br"14,42,1234567,c;tab\x09nl\x0abs\x5cdel\x7f snow\xe2\x98\x83 ;,
 K\x01=v=\x5c
"
            .to_vec()
        ]
    );
    assert_eq!(got, kernel(&r));
    let (_, text, dict) = decode(&got);
    assert_eq!(text, r.text);
    // The entry with an empty value is not sent, as in printk.
    assert_eq!(dict, vec![(b"K\x01".to_vec(), b"v=\\".to_vec())]);
}

#[test]
fn release_prefix_precedes_every_datagram() {
    let release: &[u8] = b"6.1.0-56-amd64";
    let mut r = record(b"hello", &[]);
    r.release = Some(release);
    assert_eq!(
        encode(&r),
        vec![b"6.1.0-56-amd64,6,42,1234567,-;hello\n".to_vec()]
    );

    let long = vec![b'x'; 2500];
    r.text = &long;
    let got = encode(&r);
    assert_eq!(got, kernel(&r));
    assert_eq!(got.len(), 3);
    for d in &got {
        assert!(d.starts_with(b"6.1.0-56-amd64,6,42,1234567,-,ncfrag="));
        assert!(d.len() <= MAX_PRINT_CHUNK);
    }
    let (rel, text, _) = decode(&got);
    assert_eq!(rel.as_deref(), Some(release));
    assert_eq!(text, long);
}

#[test]
fn release_with_commas_still_decodes() {
    let release: &[u8] = b"6.1.0,custom,7";
    let mut r = record(b"hi", &[]);
    r.release = Some(release);
    let got = encode(&r);
    assert_eq!(got, vec![b"6.1.0,custom,7,6,42,1234567,-;hi\n".to_vec()]);
    let repr = ExtRepr::parse(&got[0]).expect("decodes");
    assert_eq!(repr.release, Some(release));
    assert_eq!((repr.prefix, repr.seq, repr.ts_usec), (6, 42, 1_234_567));
}

/// Body lengths around the fragmentation threshold, with and without release.
#[test]
fn fragmentation_threshold_matches_kernel() {
    let header = b"6,42,1234567,-;".len();
    for release in [None, Some(&b"6.1.0-56-amd64"[..])] {
        let rl = release.map_or(0, |r| r.len() + 1);
        for text_len in (MAX_PRINT_CHUNK - header - rl - 3)..(MAX_PRINT_CHUNK - header - rl + 3) {
            let text = vec![b'a'; text_len];
            let mut r = record(&text, &[]);
            r.release = release;
            let got = encode(&r);
            assert_eq!(got, kernel(&r), "release {release:?}, text {text_len}");
            let whole_len = header + rl + text_len + 1;
            assert_eq!(got.len() == 1, whole_len <= MAX_PRINT_CHUNK);
        }
    }
}

/// Linux 6.1 sends an unfragmented 1000-byte message with `release` on
/// with its last byte NUL (scnprintf into a 1000-byte buffer).
#[test]
fn release_nul_quirk_is_reproduced_and_decoded() {
    let release: &[u8] = b"6.1.0-56-amd64";
    let header = b"6,42,1234567,-;".len();
    let text = vec![b'q'; MAX_PRINT_CHUNK - release.len() - 1 - header - 1];
    let mut r = record(&text, &[]);
    r.release = Some(release);
    let got = encode(&r);
    assert_eq!(got, kernel(&r));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].len(), MAX_PRINT_CHUNK);
    assert_eq!(got[0].last(), Some(&0));
    let repr = ExtRepr::parse(&got[0]).expect("decodes");
    assert_eq!(repr.text(), text.as_slice());
    let mut again = vec![0; repr.buffer_len()];
    repr.emit(&mut again).expect("emits");
    assert_eq!(again[..MAX_PRINT_CHUNK - 1], got[0][..MAX_PRINT_CHUNK - 1]);
}

/// printk's 8 KiB buffer cuts long escaped bodies, mid-escape included.
#[test]
fn console_ext_log_max_truncation_matches_kernel() {
    for n in [2040usize, 2044, 2045, 2046, 2047, 2048, 3000] {
        let text = vec![0x01u8; n];
        let dict: &[(&[u8], &[u8])] = &[(b"SUBSYSTEM", b"pci"), (b"DEVICE", b"+pci:x")];
        let r = record(&text, dict);
        let got = encode(&r);
        let want = kernel(&r);
        assert_eq!(got, want, "text of {n} escaped bytes");
        let body: usize = r.datagrams().body_len();
        assert!(body + b"6,42,1234567,-;".len() <= CONSOLE_EXT_LOG_MAX);
    }
}

#[test]
fn small_buffer_is_refused_without_advancing() {
    let text = vec![b'z'; 1500];
    let r = record(&text, &[]);
    let mut it = r.datagrams();
    let mut small = [0u8; 100];
    match it.next_into(&mut small) {
        Some(Err(EncodeError::BufferTooSmall {
            needed,
            available: 100,
        })) => {
            assert_eq!(needed, MAX_PRINT_CHUNK)
        }
        other => panic!("expected BufferTooSmall, got {other:?}"),
    }
    let mut buf = [0u8; MAX_PRINT_CHUNK];
    let first = it.next_into(&mut buf).expect("one").expect("ok");
    assert!(buf[..first].starts_with(b"6,42,1234567,-,ncfrag=0/1501;"));
}

#[test]
fn overlong_release_is_refused() {
    let release = [b'r'; 65];
    let mut r = record(b"x", &[]);
    r.release = Some(&release);
    let mut it = r.datagrams();
    let mut buf = [0u8; MAX_PRINT_CHUNK];
    assert_eq!(
        it.next_into(&mut buf),
        Some(Err(EncodeError::ReleaseTooLong { len: 65 }))
    );
    assert_eq!(it.next_into(&mut buf), None);
}

#[test]
fn escape_helpers_round_trip() {
    let raw: Vec<u8> = (0..=255u8).collect();
    let mut esc = vec![0u8; escaped_len(&raw)];
    let n = escape_into(&raw, &mut esc).expect("fits");
    assert_eq!(n, esc.len());
    assert!(esc.iter().all(|&c| (b' '..=b'~').contains(&c)));
    let mut back = vec![0u8; 256];
    assert_eq!(unescape_into(&esc, &mut back), Ok(256));
    assert_eq!(back, raw);
    let mut out = [0u8; 16];
    assert_eq!(
        unescape_str(br"snow\xe2\x98\x83", &mut out),
        Ok("snow\u{2603}")
    );
}

#[test]
fn basic_chunks_like_write_msg() {
    assert_eq!(basic::chunks(b"").count(), 0);
    let msg = vec![b'b'; 2001];
    let sizes: Vec<usize> = basic::chunks(&msg).map(<[u8]>::len).collect();
    assert_eq!(sizes, vec![1000, 1000, 1]);
}

// ---- random records against the oracle ----

fn text_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // Mostly printable, the usual case.
        4 => proptest::collection::vec(prop_oneof![8 => 0x20u8..0x7f, 1 => any::<u8>()], 0..1200),
        // Around and far beyond the fragmentation point.
        2 => proptest::collection::vec(any::<u8>(), 200..2600),
        // Long enough to overflow printk's 8 KiB buffer once escaped.
        1 => proptest::collection::vec(prop_oneof![1 => 0x20u8..0x7f, 3 => 0u8..0x20], 2000..2300),
    ]
}

fn dict_strategy() -> impl Strategy<Value = Vec<(Vec<u8>, Vec<u8>)>> {
    proptest::collection::vec(
        (
            proptest::collection::vec(0x21u8..0x7f, 1..12),
            proptest::collection::vec(any::<u8>(), 0..60),
        ),
        0..3,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn encoder_matches_kernel_and_decodes_back(
        text in text_strategy(),
        dict in dict_strategy(),
        release in proptest::option::of(proptest::collection::vec(
            prop_oneof![b'0'..=b'9', b'a'..=b'z', Just(b'.'), Just(b'-'), Just(b'+')],
            0..=64,
        )),
        prefix in prop_oneof![0u32..192, any::<u32>()],
        seq in any::<u64>(),
        ts_usec in any::<u64>(),
        cont in any::<bool>(),
    ) {
        // Keys are C strings with '=' as separator in the body.
        let dict: Vec<(Vec<u8>, Vec<u8>)> = dict
            .into_iter()
            .map(|(k, v)| (k.into_iter().map(|c| if c == b'=' { b'_' } else { c }).collect(), v))
            .collect();
        let dict_refs: Vec<(&[u8], &[u8])> = dict.iter().map(|(k, v)| (k.as_slice(), v.as_slice())).collect();
        let r = ExtRecord {
            release: release.as_deref(),
            prefix, seq, ts_usec, cont,
            text: &text,
            dict: &dict_refs,
        };
        let got = encode(&r);
        let want = kernel(&r);
        prop_assert_eq!(&got, &want);

        let msg = kernel_msg(&r);
        let quirk = release.is_some() && got.len() == 1 && got[0].len() == MAX_PRINT_CHUNK;
        if msg.len() < 8191 && !quirk {
            // Nothing was cut: decoding gives the record back.
            let (rel, t, d) = decode(&got);
            prop_assert_eq!(rel, release.clone());
            prop_assert_eq!(t, text.clone());
            let sent: Vec<(Vec<u8>, Vec<u8>)> = dict.iter().filter(|(_, v)| !v.is_empty()).cloned().collect();
            prop_assert_eq!(d, sent);
        } else {
            // Still decodes, datagram by datagram.
            for dgram in &got {
                prop_assert!(ExtRepr::parse(dgram).is_ok());
            }
        }
    }
}
