//! Calls into every public entry point of relay-core with opaque inputs, so
//! nothing can be proven at compile time and every panic check the optimiser
//! cannot remove on its own stays in the binary.
use core::hint::black_box;
use relay_core::detect::{self, Certainty, Detector, DetectorConfig, HostSignal, Kind};
use relay_core::frame::{Endpoints, FrameTemplate, IpEndpoints, MacAddr, VlanTag, MAX_FRAME_LEN};
use relay_core::netconsole::{basic, escape, ExtPacket, ExtRecord, ExtRepr, Reassembler};
use relay_core::relay::{Relay, RelayConfig};
use relay_core::report::{self, Freshness, Report, MAX_REPORT_LEN};
use relay_core::scanner::{ConsoleScanner, ContextRing, Line};
use relay_core::{Duration, Instant};

/// Everything, in the order data flows.
pub fn all() {
    let storage = [0u8; 2048];
    let input: &[u8] = black_box(&storage[..]);
    let now = black_box(Instant(1));
    scanner_and_detector(input, now);
    frame_template(input);
    netconsole_codec(input, now);
    report_api(input);
    relay(input, now);
    frame_api();
    scanner_detect_api();
}

fn scanner_and_detector(input: &[u8], now: Instant) {
    let mut scanner = ConsoleScanner::<1024>::new();
    let mut ring = ContextRing::<8192>::new();
    let mut det = Detector::new(black_box(DetectorConfig::default()));
    scanner.push(input, |line| {
        ring.push(&line);
        black_box(det.on_line(&line, now));
        black_box(detect::classify(line.text));
        black_box(line.utf8_prefix());
    });
    scanner.flush(|line| {
        black_box(det.on_line(&line, now));
    });
    black_box(det.on_signal(black_box(HostSignal::Caterr), now));
    black_box(det.poll(black_box(Instant(u64::MAX))));
    black_box(det.poll_timeout());
    black_box(Line::parse(input));
    for l in ring.iter() {
        black_box(l);
    }
    black_box(scanner.pending());
}

fn endpoints() -> Endpoints {
    Endpoints {
        src_mac: MacAddr(black_box([2, 0, 0, 0, 0, 1])),
        dst_mac: MacAddr(black_box([2, 0, 0, 0, 0, 2])),
        vlan: black_box(Some(VlanTag { pcp: 1, vid: 2 })),
        ip: black_box(IpEndpoints::V4 {
            src: [10, 0, 0, 1],
            dst: [10, 0, 0, 2],
        }),
        src_port: black_box(6665),
        dst_port: black_box(6666),
    }
}

fn frame_template(input: &[u8]) {
    let mut buf = [0u8; MAX_FRAME_LEN];
    if let Ok(mut t) = FrameTemplate::new(&endpoints(), black_box(1500)) {
        t.set_dst_mac(MacAddr(black_box([2, 0, 0, 0, 0, 3])));
        t.set_next_ip_id(black_box(0xffff));
        let out: &mut [u8] = black_box(&mut buf[..]);
        black_box(t.write(input, out).is_ok());
        black_box(t.write_parts(&[input, input], out).is_ok());
        black_box((t.header_len(), t.max_payload()));
    }
}

fn netconsole_codec(input: &[u8], now: Instant) {
    let mut out = [0u8; 1500];
    if let Ok(r) = ExtRepr::parse(input) {
        black_box(r.emit(black_box(&mut out[..])).is_ok());
        for b in r.unescaped_text() {
            black_box(b.is_ok());
        }
        for d in r.dict() {
            black_box(d.is_ok());
        }
        let mut re = Reassembler::<4, 8192>::new(black_box(Duration(5)));
        black_box(re.push(&r, now).is_ok());
        black_box(re.poll(now));
    }
    if let Ok(p) = ExtPacket::new_checked(input) {
        black_box((p.seq(), p.frag(), p.payload()));
    }
    if let Ok(lines) = basic::lines(input) {
        for l in lines {
            black_box(l.text_str().is_ok());
        }
    }
    black_box(basic::split_timestamp(input));
    black_box(escape::unescape_into(input, black_box(&mut out[..])).is_ok());
    black_box(escape::escape_into(input, black_box(&mut out[..])).is_ok());
    let dict = [(b"SUBSYSTEM".as_slice(), b"net".as_slice())];
    let record = ExtRecord {
        release: black_box(Some(&input[..])),
        prefix: black_box(6),
        seq: black_box(7),
        ts_usec: black_box(8),
        cont: black_box(false),
        text: input,
        dict: black_box(&dict[..]),
    };
    let mut d = record.datagrams();
    while let Some(r) = d.next_into(black_box(&mut out[..])) {
        black_box(r.is_ok());
    }
}

fn report_api(input: &[u8]) {
    let key: [u8; 32] = *black_box(&[7u8; 32]);
    let text = core::str::from_utf8(input).unwrap_or("x");
    let r = Report {
        version: black_box(report::VERSION),
        relay_id: black_box(text),
        node_name: black_box(text),
        boot_counter: black_box(1),
        sequence: black_box(2),
        kind: black_box(Kind::KernelPanic),
        certainty: black_box(Certainty::Suspected),
        trigger_line: black_box(text),
        host_ts_usec: black_box(Some(3)),
        context_lines: black_box(4),
        repeat_index: black_box(5),
    };
    let mut buf = [0u8; MAX_REPORT_LEN];
    let out: &mut [u8] = black_box(&mut buf[..]);
    black_box(report::encode_signed(&r, &key, out).is_ok());
    let signer = report::Signer::new(&key);
    black_box(signer.encode_signed(&r, black_box(&mut buf[..])).is_ok());
    black_box(signer.verify(input).is_ok());
    black_box(report::is_report(input));
    black_box(report::truncate_utf8(text, black_box(2)));
    let mut fresh = Freshness::<4>::new();
    if let Ok(got) = report::verify(input, &key) {
        black_box(fresh.check(&got).is_ok());
        black_box(fresh.get(got.relay_id));
    }
    black_box(&fresh);
}

fn relay(input: &[u8], now: Instant) {
    let Ok(t) = FrameTemplate::new(&endpoints(), black_box(1500)) else {
        return;
    };
    let key: [u8; 32] = *black_box(&[9u8; 32]);
    let text = core::str::from_utf8(input).unwrap_or("x");
    let Ok(mut cfg) = RelayConfig::new(text, text, key, black_box(3), t.clone()) else {
        return;
    };
    black_box(cfg.collectors.push(t).is_ok());
    cfg.mirror = black_box(true);
    let Ok(mut relay) = Relay::new(cfg) else {
        return;
    };
    let mut buf = [0u8; MAX_FRAME_LEN];
    relay.handle_console(input, now);
    relay.handle_signal(black_box(HostSignal::PowerLost), now);
    black_box(relay.set_collector_mac(black_box(1), MacAddr(black_box([2; 6]))));
    black_box(relay.set_mirror(black_box(false)).is_ok());
    relay.handle_timeout(black_box(Instant(5)));
    while let Some(n) = relay.poll_transmit(black_box(Instant(7)), black_box(&mut buf[..])) {
        black_box(n);
    }
    black_box(relay.poll_timeout());
    black_box(relay.stats());
}
/// IPv6 with a VLAN tag, and payload given in parts.
fn frame_api() {
    use relay_core::frame::{
        Endpoints, FrameTemplate, IpEndpoints, MacAddr, VlanTag, MAX_FRAME_LEN,
    };
    let ep = Endpoints {
        src_mac: MacAddr(black_box([2, 0, 0, 0, 0, 1])),
        dst_mac: MacAddr(black_box([2, 0, 0, 0, 0, 2])),
        vlan: black_box(Some(VlanTag { pcp: 1, vid: 2 })),
        ip: black_box(IpEndpoints::V6 {
            src: [1; 16],
            dst: [2; 16],
        }),
        src_port: black_box(6666),
        dst_port: black_box(6666),
    };
    if let Ok(mut tpl) = FrameTemplate::new(&ep, black_box(1500)) {
        let mut buf = [0u8; MAX_FRAME_LEN];
        let out: &mut [u8] = black_box(&mut buf[..]);
        let payload: &[u8] = black_box(&[0x41; 1000]);
        black_box(tpl.write(payload, out).is_ok());
        let parts: &[&[u8]] = black_box(&[b"ab", b"c", b"defgh"]);
        black_box(tpl.write_parts(parts, out).is_ok());
        tpl.set_dst_mac(MacAddr(black_box([2, 0, 0, 0, 0, 3])));
        tpl.set_next_ip_id(black_box(7));
        black_box((
            tpl.header_len(),
            tpl.max_payload(),
            tpl.next_ip_id(),
            tpl.endpoints(),
        ));
        black_box(&tpl);
    }
}

fn scanner_detect_api() {
    use relay_core::detect::{self, Detector, DetectorConfig, HostSignal};
    use relay_core::scanner::{ConsoleScanner, ContextRing, Line};
    use relay_core::{Duration, Instant};
    let mut sc = ConsoleScanner::<128>::new();
    let mut ring = ContextRing::<1024>::new();
    let cfg = DetectorConfig {
        silence: black_box(Duration::from_secs(2)),
        ..DetectorConfig::default()
    };
    let mut det = Detector::new(cfg);
    let input: &[u8] = black_box(b"[    1.000000] Kernel panic - not syncing: x\r\n");
    let now = Instant(black_box(5));
    sc.push(input, |line| {
        black_box(det.on_line(&line, now));
        ring.push(&line);
    });
    if let Some(line) = sc.push_byte(black_box(b'\n')) {
        black_box(det.on_line(&line, now));
        ring.push(&line);
    }
    sc.flush(|line| ring.push(&line));
    black_box((sc.pending(), sc.lines(), sc.truncations()));
    for l in &ring {
        black_box((l.as_str(), l.utf8_prefix()));
    }
    black_box((ring.len(), ring.pushed()));
    ring.clear();
    black_box(det.on_signal(black_box(HostSignal::PowerLost), now));
    black_box(det.poll(now));
    black_box((
        det.poll_timeout(),
        det.phase(),
        det.refused(),
        det.held_off(),
    ));
    let text: &[u8] = black_box(b"<0>[ 1.000000] Oops: 0002 [#1]");
    black_box((
        detect::classify(text),
        detect::inspect(text),
        Line::parse(text),
    ));
    black_box(&det);
}
