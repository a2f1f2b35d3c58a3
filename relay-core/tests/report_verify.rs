//! The signed report: encode, verify, and every way the bridge must refuse it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::panic
)] // test code: a panic is a test failure
use proptest::prelude::*;
use relay_core::detect::{Certainty, Kind};
use relay_core::report::{
    encode_signed, is_report, verify, Field, Freshness, Refusal, RelayFreshness, Report,
    ReportError, MAGIC, MAX_NODE_NAME, MAX_RELAY_ID, MAX_REPORT_LEN, MAX_TRIGGER_LINE,
    MIN_REPORT_LEN, VERSION,
};

const KEY: [u8; 32] = *b"lastgasp test key 0123456789abcd";
const OTHER_KEY: [u8; 32] = *b"lastgasp wrong key 0123456789abc";

fn sample() -> Report<'static> {
    Report {
        version: VERSION,
        relay_id: "relay-rack7-u12",
        node_name: "worker-3.example.internal",
        boot_counter: 41,
        sequence: 2,
        kind: Kind::KernelPanic,
        certainty: Certainty::Suspected,
        trigger_line: "Kernel panic - not syncing: sysrq triggered crash",
        host_ts_usec: Some(6_582_893),
        context_lines: 57,
        repeat_index: 3,
    }
}

fn signed(r: &Report<'_>, key: &[u8; 32]) -> Vec<u8> {
    let mut buf = [0u8; MAX_REPORT_LEN];
    let n = encode_signed(r, key, &mut buf).expect("encode");
    buf[..n].to_vec()
}

#[test]
fn round_trip_with_the_right_key() {
    let r = sample();
    let d = signed(&r, &KEY);
    assert!(d.starts_with(&MAGIC));
    assert!(is_report(&d));
    assert_eq!(
        d[MAGIC.len()],
        VERSION,
        "version is the byte after the magic"
    );
    assert_eq!(verify(&d, &KEY), Ok(r));
}

#[test]
fn signer_matches_the_one_shot_functions() {
    let r = sample();
    let d = signed(&r, &KEY);
    let signer = relay_core::report::Signer::new(&KEY);
    let mut buf = [0u8; MAX_REPORT_LEN];
    let n = signer.encode_signed(&r, &mut buf).unwrap();
    assert_eq!(&buf[..n], &d[..], "same bytes as encode_signed");
    assert_eq!(signer.verify(&d), Ok(r));
    assert_eq!(
        relay_core::report::Signer::new(&OTHER_KEY).verify(&d),
        Err(Refusal::BadTag)
    );
}

#[test]
fn wrong_key_is_a_bad_tag() {
    let d = signed(&sample(), &KEY);
    assert_eq!(verify(&d, &OTHER_KEY), Err(Refusal::BadTag));
}

#[test]
fn wrong_version_is_refused_by_name() {
    let mut r = sample();
    r.version = 2;
    let d = signed(&r, &KEY);
    assert_eq!(verify(&d, &KEY), Err(Refusal::WrongVersion { got: 2 }));
}

#[test]
fn every_truncation_is_refused() {
    let d = signed(&sample(), &KEY);
    for n in 0..d.len() {
        let got = verify(&d[..n], &KEY);
        match got {
            Err(Refusal::Truncated { len }) => {
                assert_eq!(len, n);
                assert!(n < MIN_REPORT_LEN);
            }
            Err(Refusal::BadMagic) => assert_eq!(n, 0),
            Err(Refusal::BadTag) => assert!(n >= MIN_REPORT_LEN),
            other => panic!("truncated to {n} bytes: {other:?}"),
        }
    }
}

#[test]
fn trailing_bytes_are_refused() {
    let mut d = signed(&sample(), &KEY);
    d.push(0);
    assert!(verify(&d, &KEY).is_err());
}

#[test]
fn fields_at_their_limits_fit_in_max_report_len() {
    let relay_id = "r".repeat(MAX_RELAY_ID);
    let node = "n".repeat(MAX_NODE_NAME);
    let line = "é".repeat(MAX_TRIGGER_LINE / 2);
    let r = Report {
        relay_id: &relay_id,
        node_name: &node,
        trigger_line: &line,
        boot_counter: u32::MAX,
        sequence: u32::MAX,
        host_ts_usec: Some(u64::MAX),
        context_lines: u16::MAX,
        repeat_index: u8::MAX,
        kind: Kind::WatchdogExpired,
        ..sample()
    };
    let mut buf = [0u8; MAX_REPORT_LEN];
    let n = encode_signed(&r, &KEY, &mut buf).expect("fits");
    assert!(n <= MAX_REPORT_LEN);
    assert_eq!(verify(&buf[..n], &KEY), Ok(r));
}

#[test]
fn over_limit_fields_and_small_buffers_are_typed_errors() {
    let long = "x".repeat(MAX_TRIGGER_LINE + 1);
    let r = Report {
        trigger_line: &long,
        ..sample()
    };
    let mut buf = [0u8; MAX_REPORT_LEN];
    assert_eq!(
        encode_signed(&r, &KEY, &mut buf),
        Err(ReportError::FieldTooLong {
            field: Field::TriggerLine,
            len: MAX_TRIGGER_LINE + 1,
            max: MAX_TRIGGER_LINE
        })
    );
    let need = signed(&sample(), &KEY).len();
    for size in 0..need {
        let mut small = vec![0u8; size];
        assert_eq!(
            encode_signed(&sample(), &KEY, &mut small),
            Err(ReportError::BufferTooSmall { available: size }),
            "buffer of {size}"
        );
    }
}

#[test]
fn netconsole_datagrams_are_not_reports() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/netconsole");
    let mut seen = 0;
    for run in ["ext-panic", "basic-panic", "dual-panic"] {
        let jsonl = std::fs::read_to_string(format!("{dir}/{run}.jsonl")).expect("fixture");
        for line in jsonl.lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("json");
            let b64 = v["b64"].as_str().expect("b64");
            use base64::Engine;
            let d = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .expect("base64");
            assert!(!is_report(&d), "{run}: {:?}", String::from_utf8_lossy(&d));
            assert_eq!(verify(&d, &KEY), Err(Refusal::BadMagic));
            seen += 1;
        }
    }
    assert!(seen > 100, "only {seen} datagrams in the fixtures");
}

#[test]
fn replay_and_duplicates() {
    let mut f = Freshness::<4>::new();
    let r = sample();
    assert_eq!(f.check(&r), Ok(()));
    // Another copy of the same report: a duplicate, not an attack.
    let copy = Report {
        repeat_index: 4,
        ..r
    };
    let dup = f.check(&copy).unwrap_err();
    assert_eq!(
        dup,
        Refusal::Duplicate {
            boot_counter: 41,
            sequence: 2,
            repeat_index: 4
        }
    );
    assert!(dup.is_duplicate());
    // The confirmation is a new report: next sequence.
    let confirmed = Report {
        sequence: 3,
        certainty: Certainty::Confirmed,
        repeat_index: 0,
        ..r
    };
    assert_eq!(f.check(&confirmed), Ok(()));
    // The suspected report sent again afterwards is a replay.
    let replay = f.check(&r).unwrap_err();
    assert_eq!(
        replay,
        Refusal::Replay {
            last: (41, 3),
            got: (41, 2)
        }
    );
    assert!(!replay.is_duplicate());
    // An older relay boot is a replay even with a larger sequence.
    let old_boot = Report {
        boot_counter: 40,
        sequence: 999,
        ..r
    };
    assert!(matches!(f.check(&old_boot), Err(Refusal::Replay { .. })));
    // A new relay boot restarts the sequence.
    let new_boot = Report {
        boot_counter: 42,
        sequence: 0,
        ..r
    };
    assert_eq!(f.check(&new_boot), Ok(()));
    assert_eq!(f.get(r.relay_id).and_then(|s| s.last()), Some((42, 0)));
    // Other relays have their own state.
    let other = Report {
        relay_id: "relay-b",
        boot_counter: 1,
        ..r
    };
    assert_eq!(f.check(&other), Ok(()));
    assert_eq!(f.len(), 2);
}

#[test]
fn freshness_survives_counter_wrap() {
    let mut s = RelayFreshness::new(Some((7, u32::MAX)));
    let wrapped = Report {
        boot_counter: 7,
        sequence: 0,
        ..sample()
    };
    assert_eq!(s.check(&wrapped), Ok(()), "sequence wrap is fresh");
    let mut s = RelayFreshness::new(Some((u32::MAX, 5)));
    let boot_wrapped = Report {
        boot_counter: 0,
        sequence: 0,
        ..sample()
    };
    assert_eq!(s.check(&boot_wrapped), Ok(()), "boot counter wrap is fresh");
    assert!(matches!(
        s.check(&Report {
            boot_counter: u32::MAX,
            sequence: 6,
            ..sample()
        }),
        Err(Refusal::Replay { .. })
    ));
}

#[test]
fn freshness_table_is_bounded() {
    let mut f = Freshness::<2>::new();
    for (i, id) in ["a", "b", "c"].into_iter().enumerate() {
        let r = Report {
            relay_id: id,
            ..sample()
        };
        let got = f.check(&r);
        if i < 2 {
            assert_eq!(got, Ok(()));
        } else {
            assert_eq!(got, Err(Refusal::TooManyRelays));
        }
    }
    assert_eq!(f.len(), 2);
}

fn arb_report() -> impl Strategy<Value = (String, String, String, u32, u32, u8, Option<u64>, u16)> {
    (
        "[a-z0-9-]{0,64}",
        "[a-z0-9.-]{0,80}",
        ".{0,100}",
        any::<u32>(),
        any::<u32>(),
        any::<u8>(),
        any::<Option<u64>>(),
        any::<u16>(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_single_bit_flip_is_refused(bit in 0usize..(8 * 200)) {
        let d = signed(&sample(), &KEY);
        let bit = bit % (8 * d.len());
        let mut bad = d.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        let got = verify(&bad, &KEY);
        prop_assert!(got.is_err(), "flip of bit {} accepted: {:?}", bit, got);
        // The refusal names the part that was hit.
        let expected_magic = bit / 8 < MAGIC.len();
        let expected_version = bit / 8 == MAGIC.len();
        match got {
            Err(Refusal::BadMagic) => prop_assert!(expected_magic),
            Err(Refusal::WrongVersion { .. }) => prop_assert!(expected_version),
            Err(Refusal::BadTag) => prop_assert!(!expected_magic && !expected_version),
            other => prop_assert!(false, "unexpected {:?}", other),
        }
    }

    #[test]
    fn arbitrary_reports_round_trip((relay, node, line, boot, seq, rep, ts, ctx) in arb_report()) {
        let line = relay_core::report::truncate_utf8(&line, MAX_TRIGGER_LINE);
        let r = Report {
            relay_id: &relay,
            node_name: &node,
            trigger_line: line,
            boot_counter: boot,
            sequence: seq,
            repeat_index: rep,
            host_ts_usec: ts,
            context_lines: ctx,
            ..sample()
        };
        let d = signed(&r, &KEY);
        prop_assert!(d.len() <= MAX_REPORT_LEN);
        prop_assert_eq!(verify(&d, &KEY), Ok(r));
        prop_assert_eq!(verify(&d, &OTHER_KEY), Err(Refusal::BadTag));
    }

    #[test]
    fn arbitrary_bytes_never_verify(mut bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        // With the magic and version put in front, only the tag stands between
        // random bytes and acceptance.
        if bytes.len() >= 5 {
            bytes[..4].copy_from_slice(&MAGIC);
            bytes[4] = VERSION;
        }
        prop_assert!(verify(&bytes, &KEY).is_err());
    }
}
