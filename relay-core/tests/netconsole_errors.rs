//! Bad input gets a typed error, never a panic: every `DecodeError` the
//! extended and basic decoders and the escaping can return.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::panic
)] // a test may panic on what it checks

use relay_core::netconsole::basic::{self, BasicPacket};
use relay_core::netconsole::escape::{unescape_into, unescape_str};
use relay_core::netconsole::{
    DecodeError, EncodeError, ExtPacket, ExtRepr, Frag, HeaderField, MAX_PRINT_CHUNK,
};

fn parse(d: &[u8]) -> Result<ExtRepr<'_>, DecodeError> {
    ExtRepr::parse(d)
}

fn header(field: HeaderField) -> Result<ExtRepr<'static>, DecodeError> {
    Err(DecodeError::MalformedHeader(field))
}

#[test]
fn empty_and_oversized() {
    assert_eq!(parse(b""), Err(DecodeError::Empty));
    let mut big = b"6,1,0,-;".to_vec();
    big.resize(MAX_PRINT_CHUNK, b'a');
    big.push(b'\n');
    assert_eq!(
        parse(&big),
        Err(DecodeError::Oversized {
            len: 1001,
            max: 1000
        })
    );
    assert_eq!(
        BasicPacket::new_checked(&b""[..]).err(),
        Some(DecodeError::Empty)
    );
    assert_eq!(
        basic::lines(&[b'x'; 1001]).err(),
        Some(DecodeError::Oversized {
            len: 1001,
            max: 1000
        })
    );
}

#[test]
fn truncated() {
    // Cut inside the header.
    assert_eq!(parse(b"6,1,0,-"), Err(DecodeError::Truncated { len: 7 }));
    assert_eq!(parse(b"6,12"), Err(DecodeError::Truncated { len: 4 }));
    // A whole record always ends in '\n'.
    assert_eq!(
        parse(b"6,1,0,-;text"),
        Err(DecodeError::Truncated { len: 12 })
    );
    assert_eq!(parse(b"6,1,0,-;"), Err(DecodeError::Truncated { len: 8 }));
}

#[test]
fn malformed_headers() {
    assert_eq!(parse(b"x,1,0,-;a\n"), header(HeaderField::Layout));
    assert_eq!(parse(b"6,1,0,z;a\n"), header(HeaderField::Layout));
    assert_eq!(parse(b"6,1,-;a\n"), header(HeaderField::Layout));
    assert_eq!(parse(b";a\n"), header(HeaderField::Layout));
    assert_eq!(parse(b"6,1,0,--;a\n"), header(HeaderField::Layout));
    assert_eq!(parse(b"06,1,0,-;a\n"), header(HeaderField::Prefix));
    assert_eq!(parse(b"4294967296,1,0,-;a\n"), header(HeaderField::Prefix));
    assert_eq!(
        parse(b"6,18446744073709551616,0,-;a\n"),
        header(HeaderField::Seq)
    );
    assert_eq!(parse(b"6,1,007,-;a\n"), header(HeaderField::Timestamp));
    assert_eq!(parse(b"6,1,0,-,ncfrag=1;a"), header(HeaderField::Ncfrag));
    assert_eq!(parse(b"6,1,0,-,ncfrag=a/b;a"), header(HeaderField::Ncfrag));
    assert_eq!(parse(b"6,1,0,-,ncfrag=/5;a"), header(HeaderField::Ncfrag));
    assert_eq!(
        parse(b"6,1,0,-,ncfrag=0/4294967296;a"),
        header(HeaderField::Ncfrag)
    );
    assert_eq!(
        parse(b"6,1,0,-,ncfrag=0/5,ncfrag=0/5;a"),
        header(HeaderField::Ncfrag)
    );
    assert_eq!(parse(b"6,1,0,-,junk;a\n"), header(HeaderField::Extra));
    assert_eq!(parse(b"6,1,0,-,=v;a\n"), header(HeaderField::Extra));
    let long_release = [b"r".repeat(65).as_slice(), b",6,1,0,-;a\n"].concat();
    assert_eq!(parse(&long_release), header(HeaderField::Release));
}

#[test]
fn unknown_header_fields_are_kept_aside() {
    // CONFIG_PRINTK_CALLER kernels add `caller=`; ncfrag follows it.
    let d = b"6,1,0,-,caller=T123,ncfrag=0/3;ab";
    let p = ExtPacket::new_checked(&d[..]).expect("decodes");
    assert_eq!(
        p.extra_fields().collect::<Vec<_>>(),
        vec![&b"caller=T123"[..]]
    );
    assert_eq!(
        p.frag(),
        Some(Frag {
            offset: 0,
            total: 3
        })
    );
    assert_eq!(p.payload(), b"ab");
}

#[test]
fn invalid_bytes() {
    // Raw UTF-8 in an extended body: the kernel would have escaped it.
    assert_eq!(
        parse("6,1,0,-;\u{fc}\n".as_bytes()),
        Err(DecodeError::InvalidByte {
            offset: 8,
            byte: 0xc3
        })
    );
    assert_eq!(
        parse(b"6,1,0,-;a\tb\n"),
        Err(DecodeError::InvalidByte {
            offset: 9,
            byte: b'\t'
        })
    );
    assert_eq!(
        parse(b"6, 1,0,-;a\n"),
        Err(DecodeError::InvalidByte {
            offset: 2,
            byte: b' '
        })
    );
    assert_eq!(
        parse(b"\xff\xfe"),
        Err(DecodeError::InvalidByte {
            offset: 0,
            byte: 0xff
        })
    );
    // A NUL last byte is only the 6.1 release quirk at exactly 1000 bytes.
    assert_eq!(
        parse(b"6,1,0,-;a\x00"),
        Err(DecodeError::InvalidByte { offset: 9, byte: 0 })
    );
}

#[test]
fn ncfrag_out_of_range() {
    assert_eq!(
        parse(b"6,1,0,-,ncfrag=10/5;abc"),
        Err(DecodeError::FragOutOfRange {
            offset: 10,
            len: 3,
            total: 5
        })
    );
    assert_eq!(
        parse(b"6,1,0,-,ncfrag=5/5;a"),
        Err(DecodeError::FragOutOfRange {
            offset: 5,
            len: 1,
            total: 5
        })
    );
    assert_eq!(
        parse(b"6,1,0,-,ncfrag=3/5;abc"),
        Err(DecodeError::FragOutOfRange {
            offset: 3,
            len: 3,
            total: 5
        })
    );
    assert_eq!(
        parse(b"6,1,0,-,ncfrag=0/0;a"),
        Err(DecodeError::FragOutOfRange {
            offset: 0,
            len: 1,
            total: 0
        })
    );
    assert_eq!(
        parse(b"6,1,0,-,ncfrag=0/5;"),
        Err(DecodeError::FragOutOfRange {
            offset: 0,
            len: 0,
            total: 5
        })
    );
    // In range is fine, even mid-escape.
    assert!(parse(b"6,1,0,-,ncfrag=0/6;ab\\x0").is_ok());
}

#[test]
fn bad_escapes_and_non_utf8() {
    let mut out = [0u8; 32];
    assert_eq!(
        unescape_into(b"ab\\x4", &mut out),
        Err(DecodeError::BadEscape { offset: 2 })
    );
    assert_eq!(
        unescape_into(b"\\y00", &mut out),
        Err(DecodeError::BadEscape { offset: 0 })
    );
    // printk writes lowercase hex only.
    assert_eq!(
        unescape_into(b"x\\xAB", &mut out),
        Err(DecodeError::BadEscape { offset: 1 })
    );
    assert_eq!(
        unescape_into(b"a\nb", &mut out),
        Err(DecodeError::InvalidByte {
            offset: 1,
            byte: b'\n'
        })
    );
    assert_eq!(
        unescape_into(b"abc", &mut out[..2]),
        Err(DecodeError::BufferTooSmall {
            needed: 3,
            available: 2
        })
    );
    assert_eq!(
        unescape_str(b"ok\\xff", &mut out),
        Err(DecodeError::NonUtf8 { valid_up_to: 2 })
    );
    // The escaped snowman of the fixture is valid UTF-8 once unescaped.
    assert_eq!(unescape_str(b"\\xe2\\x98\\x83", &mut out), Ok("\u{2603}"));

    // Basic text is raw; a chunk boundary can cut a character.
    let line = basic::lines(b"[    1.000000] caf\xc3")
        .expect("decodes")
        .next()
        .expect("one line");
    assert!(!line.complete);
    assert_eq!(line.ts_usec, Some(1_000_000));
    assert_eq!(
        line.text_str(),
        Err(DecodeError::NonUtf8 { valid_up_to: 3 })
    );
}

#[test]
fn malformed_dictionary_lines() {
    let r = parse(b"6,1,0,-;text\n SUBSYSTEM=pci\nnospace=1\n").expect("decodes");
    let entries: Vec<_> = r.dict().collect();
    assert_eq!(entries[0], Ok((&b"SUBSYSTEM"[..], &b"pci"[..])));
    assert_eq!(entries[1], Err(DecodeError::MalformedDict { offset: 20 }));
    assert_eq!(entries.len(), 2);
    let r = parse(b"6,1,0,-;text\n NOEQUALS\n").expect("decodes");
    assert_eq!(
        r.dict().next(),
        Some(Err(DecodeError::MalformedDict { offset: 5 }))
    );
}

#[test]
fn emit_refuses_bad_flags_and_small_buffers() {
    let mut r = parse(b"6,1,0,-;a\n").expect("decodes");
    let mut out = [0u8; 4];
    assert_eq!(
        r.emit(&mut out),
        Err(EncodeError::BufferTooSmall {
            needed: 10,
            available: 4
        })
    );
    r.flags = b'x';
    assert_eq!(r.emit(&mut [0u8; 64]), Err(EncodeError::InvalidField));
}

#[test]
fn basic_lines_and_timestamps() {
    let d = b"[    6.429588] RIP: 0010:x\r\n[12345.000001] second\nno stamp\n[bad] x\n[    1.5] short\ntail";
    let lines: Vec<_> = basic::lines(d).expect("decodes").collect();
    assert_eq!(lines.len(), 6);
    assert_eq!(lines[0].ts_usec, Some(6_429_588));
    assert_eq!(lines[0].text, b"RIP: 0010:x");
    assert_eq!(lines[1].ts_usec, Some(12_345_000_001));
    assert_eq!((lines[2].ts_usec, lines[2].text), (None, &b"no stamp"[..]));
    assert_eq!((lines[3].ts_usec, lines[3].text), (None, &b"[bad] x"[..]));
    assert_eq!(lines[4].ts_usec, None);
    assert!(lines[..5].iter().all(|l| l.complete));
    assert!(!lines[5].complete);
    assert_eq!(lines[5].text, b"tail");
}
