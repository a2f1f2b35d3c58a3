//! The relay state machine driven by the real kernel's serial console
//! (tests/fixtures/netconsole/*.serial.log): every frame it transmits is parsed
//! by an independent parser (etherparse) and its payload decoded with the
//! netconsole decoder or verified as a signed report.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::panic
)] // test code: a panic is a test failure
use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use relay_core::detect::{Certainty, HostSignal, Kind};
use relay_core::frame::{Endpoints, FrameTemplate, IpEndpoints, MacAddr, VlanTag, MAX_FRAME_LEN};
use relay_core::netconsole::ExtRepr;
use relay_core::relay::{ConfigError, Relay, RelayConfig, RelayStats};
use relay_core::report::{self, Freshness, Refusal};
use relay_core::{Duration, Instant};

const KEY: [u8; 32] = *b"relay fixture key 0123456789abcd";
const OTHER_KEY: [u8; 32] = *b"some other relay key 0123456789a";
const PANIC_LINE: &str = "Kernel panic - not syncing: sysrq triggered crash";
/// 115200 baud, 8N1: 86.8 us per byte.
const US_PER_BYTE: u64 = 87;

fn serial_log(run: &str) -> Vec<u8> {
    let path = format!(
        "{}/../tests/fixtures/netconsole/{run}.serial.log",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn collector(n: u8) -> FrameTemplate {
    let ip = if n % 2 == 0 {
        IpEndpoints::V4 {
            src: [10, 99, 0, 2],
            dst: [10, 99, 0, 10 + n],
        }
    } else {
        let mut dst = [0u8; 16];
        dst[0] = 0xfd;
        dst[15] = 10 + n;
        let mut src = dst;
        src[15] = 2;
        IpEndpoints::V6 { src, dst }
    };
    let ep = Endpoints {
        src_mac: MacAddr([0x02, 0, 0, 0, 0, 0x02]),
        dst_mac: MacAddr([0x02, 0, 0, 0, 0, 0x10 + n]),
        vlan: (n == 2).then_some(VlanTag { pcp: 7, vid: 42 }),
        ip,
        src_port: 6665,
        dst_port: 6666 + u16::from(n),
    };
    FrameTemplate::new(&ep, 1500).unwrap()
}

fn config(collectors: u8) -> RelayConfig {
    let mut cfg = RelayConfig::new("relay-7", "worker-3", KEY, 41, collector(0)).unwrap();
    for n in 1..collectors {
        cfg.collectors.push(collector(n)).ok().unwrap();
    }
    cfg
}

/// One transmitted frame, parsed.
#[derive(Debug, Clone)]
struct Sent {
    at: Instant,
    /// Index of the collector (from the UDP destination port).
    collector: u8,
    dst_mac: [u8; 6],
    ip_id: Option<u16>,
    payload: Vec<u8>,
}

/// What a datagram turned out to be.
#[derive(Debug, Clone, PartialEq)]
enum Datagram {
    Line {
        seq: u64,
        text: Vec<u8>,
        frag: Option<(u32, u32)>,
    },
    Report(OwnedReport),
}

#[derive(Debug, Clone, PartialEq)]
struct OwnedReport {
    sequence: u32,
    boot_counter: u32,
    kind: Kind,
    certainty: Certainty,
    trigger_line: String,
    host_ts_usec: Option<u64>,
    context_lines: u16,
    repeat_index: u8,
}

/// Parse a frame with etherparse, checking both checksums.
fn parse_frame(frame: &[u8], at: Instant) -> Sent {
    let p = SlicedPacket::from_ethernet(frame).expect("etherparse parses the frame");
    let Some(etherparse::LinkSlice::Ethernet2(eth)) = &p.link else {
        panic!("no Ethernet II header")
    };
    let Some(TransportSlice::Udp(udp)) = &p.transport else {
        panic!("no UDP")
    };
    let payload = udp.payload().to_vec();
    assert_eq!(usize::from(udp.length()), payload.len() + 8);
    let (want, ip_id) = match &p.net {
        Some(NetSlice::Ipv4(ip)) => {
            let h = ip.header();
            assert_eq!(h.header_checksum(), h.to_header().calc_header_checksum());
            (
                udp.to_header()
                    .calc_checksum_ipv4_raw(h.source(), h.destination(), &payload)
                    .unwrap(),
                Some(h.identification()),
            )
        }
        Some(NetSlice::Ipv6(ip)) => {
            let h = ip.header();
            (
                udp.to_header()
                    .calc_checksum_ipv6_raw(h.source(), h.destination(), &payload)
                    .unwrap(),
                None,
            )
        }
        other => panic!("network layer {other:?}"),
    };
    assert_eq!(udp.checksum(), want, "UDP checksum");
    Sent {
        at,
        collector: u8::try_from(udp.destination_port() - 6666).unwrap(),
        dst_mac: eth.destination(),
        ip_id,
        payload,
    }
}

/// Decode a payload: a report must verify with the relay's key and only with
/// it; anything else must decode as extended netconsole.
fn decode(payload: &[u8]) -> Datagram {
    if report::is_report(payload) {
        assert_eq!(report::verify(payload, &OTHER_KEY), Err(Refusal::BadTag));
        let r = report::verify(payload, &KEY).expect("report verifies with the right key");
        assert_eq!(r.relay_id, "relay-7");
        assert_eq!(r.node_name, "worker-3");
        return Datagram::Report(OwnedReport {
            sequence: r.sequence,
            boot_counter: r.boot_counter,
            kind: r.kind,
            certainty: r.certainty,
            trigger_line: r.trigger_line.to_string(),
            host_ts_usec: r.host_ts_usec,
            context_lines: r.context_lines,
            repeat_index: r.repeat_index,
        });
    }
    let rec = ExtRepr::parse(payload)
        .unwrap_or_else(|e| panic!("{e:?}: {:?}", String::from_utf8_lossy(payload)));
    if rec.frag.is_none() {
        let text: Vec<u8> = rec
            .unescaped_text()
            .collect::<Result<_, _>>()
            .expect("valid escapes");
        assert_eq!(rec.text().len() + 1, rec.payload.len(), "no dictionary");
        return Datagram::Line {
            seq: rec.seq,
            text,
            frag: None,
        };
    }
    // A fragment of a long line: keep the raw escaped piece; lines() joins them.
    let frag = rec.frag.map(|f| (f.offset, f.total));
    Datagram::Line {
        seq: rec.seq,
        text: rec.payload.to_vec(),
        frag,
    }
}

struct Harness {
    relay: Relay,
    now: Instant,
    sent: Vec<Sent>,
}

impl Harness {
    fn new(cfg: RelayConfig) -> Self {
        Harness {
            relay: Relay::new(cfg).unwrap(),
            now: Instant::from_millis(1000),
            sent: Vec::new(),
        }
    }

    fn drain(&mut self) {
        let mut buf = [0u8; MAX_FRAME_LEN];
        for _ in 0..100_000 {
            match self.relay.poll_transmit(self.now, &mut buf) {
                Some(n) => {
                    let s = parse_frame(&buf[..n], self.now);
                    self.sent.push(s);
                }
                None => {
                    // Nothing left now: the relay must not claim otherwise.
                    if let Some(t) = self.relay.poll_timeout() {
                        assert!(
                            t > self.now,
                            "poll_timeout {t:?} but nothing to send at {:?}",
                            self.now
                        );
                    }
                    return;
                }
            }
        }
        panic!("poll_transmit never ran dry");
    }

    /// Feed the bytes at serial speed in UART-FIFO-sized chunks, draining
    /// after every chunk as a firmware's main loop would.
    fn feed(&mut self, bytes: &[u8], chunk: usize) {
        for c in bytes.chunks(chunk) {
            self.now = self
                .now
                .saturating_add(Duration(US_PER_BYTE * c.len() as u64));
            self.relay.handle_console(c, self.now);
            self.drain();
        }
    }

    /// Sleep from timeout to timeout until `until`.
    fn run_until(&mut self, until: Instant) {
        while let Some(t) = self.relay.poll_timeout() {
            if t > until {
                break;
            }
            self.now = self.now.max(t);
            self.drain();
        }
        self.now = until;
        self.drain();
    }

    fn datagrams(&self, collector: u8) -> Vec<(Instant, Datagram)> {
        self.sent
            .iter()
            .filter(|s| s.collector == collector)
            .map(|s| (s.at, decode(&s.payload)))
            .collect()
    }

    fn stats(&self) -> RelayStats {
        *self.relay.stats()
    }
}

fn reports(d: &[(Instant, Datagram)]) -> Vec<(Instant, OwnedReport)> {
    d.iter()
        .filter_map(|(t, d)| match d {
            Datagram::Report(r) => Some((*t, r.clone())),
            _ => None,
        })
        .collect()
}

/// The lines sent, fragments joined (each fragment once, in order).
fn lines(d: &[(Instant, Datagram)]) -> Vec<(u64, String)> {
    let mut out: Vec<(u64, String)> = Vec::new();
    let mut body: Vec<u8> = Vec::new();
    for (_, d) in d {
        let Datagram::Line { seq, text, frag } = d else {
            continue;
        };
        match frag {
            None => out.push((*seq, String::from_utf8_lossy(text).into_owned())),
            Some((off, total)) => {
                if *off == 0 {
                    body.clear();
                }
                assert_eq!(
                    body.len(),
                    *off as usize,
                    "fragments of line {seq} in order"
                );
                body.extend_from_slice(text);
                if body.len() == *total as usize {
                    let end = body.iter().position(|&b| b == b'\n').unwrap();
                    out.push((
                        *seq,
                        String::from_utf8_lossy(&unescape(&body[..end])).into_owned(),
                    ));
                }
            }
        }
    }
    out
}

/// Undo the kernel's `\xNN` escaping.
fn unescape(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\' && s.get(i + 1) == Some(&b'x') {
            let hex = std::str::from_utf8(&s[i + 2..i + 4]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 4;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

/// The log's lines as the console scanner yields them (the relay numbers
/// them from 0 in this order).
fn scanned(log: &[u8]) -> Vec<String> {
    let mut sc = relay_core::scanner::ConsoleScanner::<1024>::new();
    let mut out = Vec::new();
    sc.push(log, |l| {
        out.push(String::from_utf8_lossy(l.text).into_owned())
    });
    out
}

fn log_line_count(log: &[u8]) -> usize {
    scanned(log).len()
}

fn panic_line_index(log: &[u8]) -> u64 {
    let all = scanned(log);
    assert_eq!(all.iter().filter(|l| *l == PANIC_LINE).count(), 1);
    all.iter().position(|l| l == PANIC_LINE).unwrap() as u64
}

#[test]
fn last_gasp_with_mirror_off_sends_context_trigger_report_and_after_lines() {
    let mut cfg = config(1);
    cfg.mirror = false;
    let mut h = Harness::new(cfg);
    let log = serial_log("ext-panic");
    h.feed(&log, 64);
    h.run_until(h.now.saturating_add(Duration::from_secs(5)));

    let d = h.datagrams(0);
    let first_report = d
        .iter()
        .position(|(_, d)| matches!(d, Datagram::Report(_)))
        .expect("a report was sent");
    // Before the first report: the context flush, ending with the trigger line.
    let context = lines(&d[..first_report]);
    assert!(context.len() > 20, "only {} context lines", context.len());
    assert_eq!(context.last().unwrap().1, PANIC_LINE);
    assert!(
        context.windows(2).all(|w| w[1].0 == w[0].0 + 1),
        "context is contiguous"
    );
    // The context is the newest lines, so it ends at the panic line's number.
    let panic_seq = context.last().unwrap().0;
    assert_eq!(panic_seq, panic_line_index(&log));
    // And the context is exactly the scanner's lines before it.
    let all = scanned(&log);
    for (seq, text) in &context {
        assert_eq!(&all[*seq as usize], text);
    }

    // After the report: exactly the configured 20 lines after the trigger.
    let after = lines(&d[first_report..]);
    assert_eq!(after.len(), 20);
    assert_eq!(after.first().unwrap().0, panic_seq + 1);
    assert_eq!(after.last().unwrap().0, panic_seq + 20);

    // Reports: 8 suspected copies, then 8 confirmed copies under the next
    // sequence (the end marker confirmed it).
    let reps = reports(&d);
    let first = &reps[0].1;
    assert_eq!(first.trigger_line, PANIC_LINE);
    assert_eq!(first.kind, Kind::KernelPanic);
    assert_eq!(first.certainty, Certainty::Suspected);
    assert_eq!(first.boot_counter, 41);
    assert_eq!(first.host_ts_usec, Some(6_582_893));
    assert_eq!(usize::from(first.context_lines), context.len() - 1);
    let suspected: Vec<_> = reps
        .iter()
        .filter(|(_, r)| r.certainty == Certainty::Suspected)
        .collect();
    let confirmed: Vec<_> = reps
        .iter()
        .filter(|(_, r)| r.certainty == Certainty::Confirmed)
        .collect();
    // The end marker is 45 lines after the panic: it arrives (at serial speed)
    // while the suspected copies are still being repeated.
    assert!((1..8).contains(&suspected.len()), "{reps:#?}");
    assert_eq!(confirmed.len(), 8);
    assert_eq!(reps.len(), suspected.len() + confirmed.len());
    assert!(
        reps.iter()
            .position(|(_, r)| r.certainty == Certainty::Confirmed)
            .unwrap()
            == suspected.len()
    );
    for (i, (_, r)) in confirmed.iter().enumerate() {
        assert_eq!(r.sequence, 1);
        assert_eq!(usize::from(r.repeat_index), i);
        assert_eq!(r.trigger_line, PANIC_LINE);
    }
    for (i, (_, r)) in suspected.iter().enumerate() {
        assert_eq!(r.sequence, 0);
        assert_eq!(usize::from(r.repeat_index), i);
    }
    assert_eq!(h.stats().reports, 2);
    assert_eq!(h.stats().reports_superseded, u32::from(suspected.len() < 8));
    assert_eq!(h.stats().lines as usize, log_line_count(&log));
    assert_eq!(h.stats().lines_lost, 0);
    assert_eq!(h.stats().tx_errors, 0);

    // The bridge's freshness check accepts each report once.
    let mut fresh = Freshness::<1>::new();
    let mut accepted = 0;
    for s in h.sent.iter().filter(|s| report::is_report(&s.payload)) {
        let r = report::verify(&s.payload, &KEY).unwrap();
        match fresh.check(&r) {
            Ok(()) => accepted += 1,
            Err(e) => assert!(e.is_duplicate(), "{e:?}"),
        }
    }
    assert_eq!(accepted, 2);
}

#[test]
fn report_copies_follow_the_backoff_schedule() {
    let mut cfg = config(1);
    cfg.mirror = false;
    cfg.report_copies = 5;
    cfg.backoff_initial = Duration::from_millis(10);
    cfg.backoff_max = Duration::from_millis(30);
    let mut h = Harness::new(cfg);
    h.relay.handle_signal(HostSignal::PowerLost, h.now);
    h.drain();
    h.run_until(h.now.saturating_add(Duration::from_secs(3)));
    let reps = reports(&h.datagrams(0));
    assert_eq!(reps.len(), 5);
    let gaps: Vec<u64> = reps
        .windows(2)
        .map(|w| w[1].0.saturating_since(w[0].0).as_millis())
        .collect();
    assert_eq!(gaps, [10, 20, 30, 30]);
    for (i, (_, r)) in reps.iter().enumerate() {
        assert_eq!(r.kind, Kind::PowerLost);
        assert_eq!(r.certainty, Certainty::Confirmed);
        assert_eq!(r.trigger_line, "board: host power lost");
        assert_eq!(usize::from(r.repeat_index), i);
    }
}

#[test]
fn default_backoff_is_eight_copies_over_about_two_seconds() {
    let mut cfg = config(1);
    cfg.mirror = false;
    let mut h = Harness::new(cfg);
    let t0 = h.now;
    h.relay.handle_signal(HostSignal::Caterr, t0);
    h.drain();
    h.run_until(t0.saturating_add(Duration::from_secs(10)));
    let reps = reports(&h.datagrams(0));
    assert_eq!(reps.len(), 8);
    let span = reps
        .last()
        .unwrap()
        .0
        .saturating_since(reps[0].0)
        .as_millis();
    assert!((1500..=2500).contains(&span), "8 copies over {span} ms");
    assert_eq!(reps[0].0, t0, "the first copy goes out at once");
}

#[test]
fn every_collector_receives_the_same_datagrams() {
    let mut cfg = config(4);
    cfg.mirror = true;
    cfg.mirror_lines_per_sec = 100_000;
    cfg.mirror_burst = 1000;
    let mut h = Harness::new(cfg);
    let log = serial_log("ext-panic");
    h.feed(&log, 16);
    h.run_until(h.now.saturating_add(Duration::from_secs(5)));
    let by: Vec<Vec<Vec<u8>>> = (0..4)
        .map(|c| {
            h.sent
                .iter()
                .filter(|s| s.collector == c)
                .map(|s| s.payload.clone())
                .collect()
        })
        .collect();
    assert!(by[0].len() > 400);
    for c in 1..4 {
        assert_eq!(by[c], by[0], "collector {c}");
    }
    // Mirror at a generous rate: every line of the log arrives, in order,
    // before the end of the run, and nothing is lost.
    let l = lines(&h.datagrams(3));
    assert_eq!(l.len(), log_line_count(&log));
    assert!(l.windows(2).all(|w| w[1].0 == w[0].0 + 1));
    assert!(l.iter().any(|(_, t)| t == PANIC_LINE));
    assert_eq!(h.stats().lines_lost, 0);
    assert_eq!(h.stats().frames as usize, h.sent.len());
}

#[test]
fn mirror_rate_limit_counts_what_it_loses_but_the_last_gasp_gets_through() {
    // The default ring (8 KiB) and a slow mirror: the backlog overflows.
    let mut slow = config(1);
    slow.mirror = true;
    slow.mirror_lines_per_sec = 5;
    slow.mirror_burst = 2;
    let mut h = Harness::new(slow);
    let log = serial_log("ext-panic");
    h.feed(&log, 64);
    // Long enough for the mirror to drain what the ring still holds.
    h.run_until(h.now.saturating_add(Duration::from_secs(60)));
    let st = h.stats();
    assert!(st.lines_lost > 100, "{st:?}");
    let d = h.datagrams(0);
    let l = lines(&d);
    // Lines go out in order, without duplicates, holes counted.
    assert!(l.windows(2).all(|w| w[1].0 > w[0].0));
    assert_eq!(st.lines_sent as usize, l.len());
    assert_eq!(
        l.len() + st.lines_lost as usize,
        log_line_count(&log),
        "{st:?}"
    );
    let first_report = d
        .iter()
        .position(|(_, d)| matches!(d, Datagram::Report(_)))
        .unwrap();
    assert_eq!(lines(&d[..first_report]).last().unwrap().1, PANIC_LINE);
    let reps = reports(&d);
    assert_eq!(
        reps.iter()
            .filter(|(_, r)| r.certainty == Certainty::Confirmed)
            .count(),
        8
    );
    assert!(reps[0].1.certainty == Certainty::Suspected);
}

#[test]
fn a_small_relay_on_a_small_ring_still_flushes_its_context() {
    let mut cfg = config(1);
    cfg.mirror = false;
    let mut relay = relay_core::relay::RelayWith::<1024, 256>::with_sizes(cfg).unwrap();
    let log = serial_log("ext-panic");
    let mut now = Instant::from_millis(1);
    let mut buf = [0u8; MAX_FRAME_LEN];
    let mut got = Vec::new();
    for c in log.chunks(32) {
        now = now.saturating_add(Duration(US_PER_BYTE * c.len() as u64));
        relay.handle_console(c, now);
        while let Some(n) = relay.poll_transmit(now, &mut buf) {
            got.push(decode(&parse_frame(&buf[..n], now).payload));
        }
    }
    let before_report: Vec<_> = got
        .iter()
        .take_while(|d| !matches!(d, Datagram::Report(_)))
        .collect();
    assert!(
        before_report.len() > 3 && before_report.len() < 40,
        "{}",
        before_report.len()
    );
    let Datagram::Line { text, .. } = before_report.last().unwrap() else {
        panic!("not a line")
    };
    assert_eq!(text, PANIC_LINE.as_bytes());
    assert!(
        std::mem::size_of_val(&relay) < 8192,
        "{}",
        std::mem::size_of_val(&relay)
    );
}

#[test]
fn counters_wrap_without_trouble() {
    let mut cfg = config(1);
    cfg.mirror = true;
    cfg.mirror_lines_per_sec = 100_000;
    cfg.mirror_burst = 1000;
    cfg.first_line_seq = u64::MAX - 100;
    cfg.first_report_seq = u32::MAX;
    cfg.collectors[0].set_next_ip_id(0xFFF0);
    let mut h = Harness::new(cfg);
    let log = serial_log("ext-panic");
    h.feed(&log, 64);
    h.run_until(h.now.saturating_add(Duration::from_secs(5)));
    let d = h.datagrams(0);
    // Line numbers run through u64::MAX to 0 without a hole.
    let l = lines(&d);
    assert_eq!(l.len(), log_line_count(&log));
    assert_eq!(l[0].0, u64::MAX - 100);
    assert!(l.windows(2).all(|w| w[1].0 == w[0].0.wrapping_add(1)));
    assert!(l.iter().any(|(s, _)| *s == 0));
    // Report sequences wrap from u32::MAX to 0, and the bridge still takes both.
    let reps = reports(&d);
    assert_eq!(reps.first().unwrap().1.sequence, u32::MAX);
    assert_eq!(reps.last().unwrap().1.sequence, 0);
    let mut fresh = Freshness::<1>::new();
    let accepted = h
        .sent
        .iter()
        .filter(|s| report::is_report(&s.payload))
        .filter(|s| {
            fresh
                .check(&report::verify(&s.payload, &KEY).unwrap())
                .is_ok()
        })
        .count();
    assert_eq!(accepted, 2);
    // The IPv4 ID wraps too.
    let ids: Vec<u16> = h.sent.iter().filter_map(|s| s.ip_id).collect();
    assert_eq!(ids[0], 0xFFF0);
    assert!(ids.windows(2).all(|w| w[1] == w[0].wrapping_add(1)));
    assert!(ids.contains(&0));
}

#[test]
fn collector_mac_refresh_applies_to_later_frames() {
    let mut h = Harness::new(config(2));
    h.feed(b"[    1.000000] hello\r\n", 64);
    let new_mac = [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee];
    assert!(h.relay.set_collector_mac(1, MacAddr(new_mac)));
    assert!(!h.relay.set_collector_mac(4, MacAddr(new_mac)));
    h.feed(b"[    1.000001] world\r\n", 64);
    let to1: Vec<_> = h.sent.iter().filter(|s| s.collector == 1).collect();
    assert_eq!(to1.len(), 2);
    assert_eq!(to1[0].dst_mac, [0x02, 0, 0, 0, 0, 0x11]);
    assert_eq!(to1[1].dst_mac, new_mac);
    let to0: Vec<_> = h.sent.iter().filter(|s| s.collector == 0).collect();
    assert_eq!(to0[1].dst_mac, [0x02, 0, 0, 0, 0, 0x10]);
}

#[test]
fn user_text_that_mentions_a_panic_sends_no_report() {
    let mut h = Harness::new(config(1));
    h.feed(b"[    1.000000] booting\r\n", 64);
    h.feed(b"# echo Kernel panic - not syncing: just kidding\r\nKernel panic - not syncing: just kidding\r\n", 64);
    h.run_until(h.now.saturating_add(Duration::from_secs(3)));
    assert_eq!(reports(&h.datagrams(0)).len(), 0);
    assert_eq!(h.stats().triggers, 0);
}

#[test]
fn silence_confirms_a_suspected_panic() {
    let mut cfg = config(1);
    cfg.mirror = false;
    let mut h = Harness::new(cfg);
    h.feed(
        b"[    5.000000] Kernel panic - not syncing: Attempted to kill init!\r\n",
        64,
    );
    let t = h.now;
    h.run_until(t.saturating_add(Duration::from_secs(10)));
    let reps = reports(&h.datagrams(0));
    let confirmed: Vec<_> = reps
        .iter()
        .filter(|(_, r)| r.certainty == Certainty::Confirmed)
        .collect();
    assert_eq!(confirmed.len(), 8);
    let after = confirmed[0].0.saturating_since(t);
    assert_eq!(
        after,
        h.relay.config().detector.silence,
        "confirmed exactly when the console fell silent"
    );
    assert_eq!(
        confirmed[0].1.trigger_line,
        "Kernel panic - not syncing: Attempted to kill init!"
    );
}

#[test]
fn invalid_configs_are_refused_by_name() {
    let mut c = config(1);
    c.report_copies = 0;
    assert_eq!(Relay::new(c).err(), Some(ConfigError::NoReportCopies));
    let mut c = config(1);
    c.mirror_lines_per_sec = 0;
    assert_eq!(Relay::new(c).err(), Some(ConfigError::MirrorRate));
    let mut c = config(1);
    c.collectors.clear();
    assert_eq!(Relay::new(c).err(), Some(ConfigError::NoCollector));
    let mut c = config(1);
    c.backoff_max = Duration::from_millis(1);
    assert_eq!(Relay::new(c).err(), Some(ConfigError::Backoff));
    let long = "x".repeat(65);
    assert_eq!(
        RelayConfig::new(&long, "n", KEY, 0, collector(0)).err(),
        Some(ConfigError::RelayId)
    );
    assert_eq!(
        RelayConfig::new("r", "", KEY, 0, collector(0)).map(|c| Relay::new(c).err()),
        Ok(Some(ConfigError::NodeName))
    );
}

#[test]
fn a_small_buffer_is_counted_not_fatal() {
    let mut h = Harness::new(config(1));
    h.relay.handle_console(b"[    1.000000] hello\r\n", h.now);
    let mut small = [0u8; 20];
    assert_eq!(h.relay.poll_transmit(h.now, &mut small), None);
    assert_eq!(h.stats().tx_errors, 1);
    h.feed(b"[    1.000001] world\r\n", 64);
    let l = lines(&h.datagrams(0));
    assert_eq!(l, vec![(1, "world".to_string())]);
}

#[test]
fn relay_size_is_bounded() {
    use relay_core::scanner::{ConsoleScanner, ContextRing};
    use std::mem::size_of;
    let size = size_of::<Relay>();
    let buffers = size_of::<ContextRing<8192>>() + size_of::<ConsoleScanner<1024>>();
    println!(
        "size_of::<Relay>() = {size} B (ring + scanner {buffers} B; RelayConfig {} B, Signer {} B, \
         FrameTemplate {} B; RelayWith<1024, 256> {} B)",
        size_of::<RelayConfig>(),
        size_of::<report::Signer>(),
        size_of::<FrameTemplate>(),
        size_of::<relay_core::relay::RelayWith<1024, 256>>()
    );
    // Everything beyond the two sized buffers: config (4 templates, names),
    // one datagram buffer, the report's trigger line, counters.
    assert!(size - buffers <= 3 * 1024, "{size} - {buffers}");
}

#[test]
fn every_captured_console_log_gives_one_panic_report() {
    for run in ["ext-panic", "basic-panic", "dual-panic"] {
        let mut cfg = config(2);
        cfg.mirror = false;
        let mut h = Harness::new(cfg);
        let log = serial_log(run);
        h.feed(&log, 61);
        h.run_until(h.now.saturating_add(Duration::from_secs(5)));
        let reps = reports(&h.datagrams(1));
        assert!(!reps.is_empty(), "{run}");
        let seqs: std::collections::BTreeSet<u32> = reps.iter().map(|(_, r)| r.sequence).collect();
        assert_eq!(
            seqs.len(),
            2,
            "{run}: one suspected and one confirmed report"
        );
        for (_, r) in &reps {
            assert_eq!(r.kind, Kind::KernelPanic, "{run}");
            assert_eq!(r.trigger_line, PANIC_LINE, "{run}");
        }
        assert_eq!(h.stats().triggers, 1, "{run}");
        assert_eq!(h.stats().lines_lost, 0, "{run}");
    }
}

#[test]
fn debug_output_never_shows_the_key() {
    let cfg = config(1);
    let shown = format!("{cfg:?}");
    assert!(shown.contains("relay-7") && shown.contains("<redacted>"));
    let hex: String = KEY.iter().map(|b| format!("{b}, ")).collect();
    assert!(!shown.contains(&hex[..20]), "{shown}");
    let relay = Relay::new(cfg).unwrap();
    let shown = format!("{relay:?}");
    assert!(!shown.contains(&hex[..20]));
    assert_eq!(format!("{:?}", report::Signer::new(&KEY)), "Signer { .. }");
}
