//! Bad input, floods, full queues, signed reports and config faults: every refusal counted,
//! nothing crashes, memory stays bounded.
mod common;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::Command;

use common::*;
use host_bridge::act::Step;
use host_bridge::incident::{Origin, Severity};
use relay_core::detect::{Certainty, Kind};
use relay_core::report::{encode_signed, Report, MAX_REPORT_LEN};

const KEY: [u8; 32] = [7; 32];
const KEY_HEX: &str = "0707070707070707070707070707070707070707070707070707070707070707";

fn keyring() -> String {
    format!("[[keyring]]\nrelay_id = \"bmc-7\"\nnode = \"worker-7\"\nkey = \"{KEY_HEX}\"\naddresses = [\"127.0.0.7\"]\n")
}

fn report(seq: u32, certainty: Certainty, key: &[u8; 32]) -> Vec<u8> {
    let r = Report {
        version: relay_core::report::VERSION,
        relay_id: "bmc-7",
        node_name: "worker-7",
        boot_counter: 3,
        sequence: seq,
        kind: Kind::KernelPanic,
        certainty,
        trigger_line: "Kernel panic - not syncing: Fatal exception",
        host_ts_usec: Some(6_582_893),
        context_lines: 2,
        repeat_index: 0,
    };
    let mut buf = [0u8; MAX_REPORT_LEN];
    let n = encode_signed(&r, key, &mut buf).unwrap();
    buf[..n].to_vec()
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()).unwrap()
}

#[test]
fn bad_datagrams_are_counted_not_fatal() {
    let mut b = Bridge::start("max_datagram = 1500\n", &keyring());
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = ("127.0.0.1", b.ports[0]);
    let garbage: Vec<u8> = (0..200u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).chain([0]).collect();
    let sends: Vec<Vec<u8>> = vec![
        garbage.clone(),                                     // binary garbage
        vec![0x00, 0xFF, b'L'],                               // truncated report magic
        report(1, Certainty::Suspected, &KEY)[..20].to_vec(), // truncated report
        report(1, Certainty::Suspected, &[9; 32]),            // wrong key
        vec![b'x'; 3000],                                     // oversized
        Vec::new(),                                           // empty
        b"6,1,2,-,ncfrag=5000/100;bogus".to_vec(),            // impossible fragment: not ext, basic text
    ];
    for d in &sends {
        s.send_to(d, to).unwrap();
    }
    b.wait_processed(sends.len() as u64);
    assert!(b.alive());
    assert_eq!(b.metric("lastgasp_bridge_decode_errors_total", "reason=\"garbage\""), 1.0);
    assert_eq!(b.metric("lastgasp_bridge_decode_errors_total", "reason=\"bad_tag\""), 1.0);
    assert_eq!(b.metric("lastgasp_bridge_decode_errors_total", "reason=\"truncated\""), 2.0);
    assert_eq!(b.metric("lastgasp_bridge_drops_total", "reason=\"oversized\""), 1.0);
    assert_eq!(b.metric("lastgasp_bridge_drops_total", "reason=\"empty\""), 1.0);
    assert!(b.incidents().is_empty());
    // An extended source that suddenly sends non-extended text is refused as damaged.
    s.send_to(b"6,1,2,-;hello\n", to).unwrap();
    s.send_to(b"plain text from an extended source\n", to).unwrap();
    b.wait_processed(sends.len() as u64 + 2);
    assert_eq!(b.metric("lastgasp_bridge_decode_errors_total", "reason=\"bad_extended\""), 1.0);
    // Sequence hole: 1 → 5 is three missing records.
    s.send_to(b"6,5,3,-;later\n", to).unwrap();
    b.wait_processed(sends.len() as u64 + 3);
    assert_eq!(b.metric("lastgasp_bridge_seq_holes_total", ""), 3.0);
}

#[test]
fn flood_from_10000_sources_is_bounded() {
    let mut b = Bridge::start("max_sources = 2048\n", "");
    let pid = b.pid();
    let rss_before = rss_kib(pid);
    let mut sent = 0u64;
    // 10,000 distinct source addresses on loopback (127.1.x.y), each a fragment that never
    // completes, plus garbage: the worst per-source state we keep.
    for i in 0..10_000u32 {
        let ip = Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250 + 1) as u8);
        let s = UdpSocket::bind(SocketAddr::from((ip, 0))).unwrap();
        let frag = format!("6,{i},1,-,ncfrag=0/4000;{}", "y".repeat(900));
        s.send_to(frag.as_bytes(), ("127.0.0.1", b.ports[0])).unwrap();
        s.send_to(&[0u8, 1, 2, 3, 0, 0, 0, 9], ("127.0.0.1", b.ports[1])).unwrap();
        sent += 2;
    }
    let received = b.wait_drained();
    assert!(b.alive());
    let kernel_dropped = sent as f64 - received;
    assert!(b.metric("lastgasp_bridge_sources", "") <= 2048.0, "per-source state is bounded");
    assert!(b.metric("lastgasp_bridge_sources_evicted_total", "") >= (10_000 - 2048 - kernel_dropped as i64) as f64);
    // Every received datagram is accounted for: decoded, refused, or dropped with a reason.
    let decoded = b.metric("lastgasp_bridge_datagrams_decoded_total", "");
    let refused = b.metric("lastgasp_bridge_decode_errors_total", "");
    let dropped = b.metric("lastgasp_bridge_drops_total", "");
    assert_eq!(decoded + refused + dropped, received, "decoded {decoded} refused {refused} dropped {dropped}");
    assert_eq!(b.metric("lastgasp_bridge_decode_errors_total", "reason=\"garbage\"") + b.metric("lastgasp_bridge_drops_total", "reason=\"queue_full\""), received - decoded - b.metric("lastgasp_bridge_decode_errors_total", "reason=\"bad_fragment\""));
    let growth_mib = rss_kib(pid).saturating_sub(rss_before) / 1024;
    assert!(growth_mib < 128, "RSS grew by {growth_mib} MiB");
    assert!(b.incidents().is_empty());
    let (code, _) = http_get(b.http, "/healthz").unwrap();
    assert_eq!(code, 200);
}

#[test]
fn full_queue_is_a_counted_drop() {
    // A tiny queue and one worker: a burst must overflow it, and every datagram is accounted
    // for as processed or dropped, none lost silently.
    let b = Bridge::start("workers = 1\nqueue = 16\nbatch = 64\n", "");
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let line = b"6,1,2,-;ordinary console line that matches nothing at all\n";
    let n = 50_000u64;
    for _ in 0..n {
        let _ = s.send_to(line, ("127.0.0.1", b.ports[0]));
    }
    let received = wait_for("receive to settle", || {
        let r1 = b.metric("lastgasp_bridge_datagrams_total", "");
        std::thread::sleep(std::time::Duration::from_millis(300));
        let r2 = b.metric("lastgasp_bridge_datagrams_total", "");
        (r1 == r2).then_some(r2)
    });
    b.wait_processed(received as u64);
    let processed = b.metric("lastgasp_bridge_datagrams_processed_total", "");
    let full = b.metric("lastgasp_bridge_drops_total", "reason=\"queue_full\"");
    assert!(full > 0.0, "the burst overflowed the queue (received {received})");
    assert_eq!(processed + full, received, "every received datagram is processed or a counted drop");
    assert!(b.stderr().contains("dropping (counted in lastgasp_bridge_drops_total)"));
}

#[test]
fn signed_reports_verified_fresh_and_deduplicated() {
    let mut b = Bridge::start("", &keyring());
    let relay = UdpSocket::bind("127.0.0.7:0").unwrap();
    let to = ("127.0.0.1", b.ports[0]);
    // The relay mirrors context as netconsole, then sends its report (three copies).
    relay.send_to(b"4,10,6582000,-;sysrq: Trigger a crash\n", to).unwrap();
    let suspected = report(1, Certainty::Suspected, &KEY);
    for _ in 0..3 {
        relay.send_to(&suspected, to).unwrap();
    }
    b.wait_processed(4);
    let list = wait_for("report incident", || {
        let l = b.incidents();
        (l.len() == 1 && l[0].next_pending().is_none()).then_some(l)
    });
    let i = &list[0].incident;
    assert_eq!(i.key.node, "node/worker-7");
    assert_eq!(i.key.boot, "relay/3");
    assert!(i.trusted);
    assert_eq!(i.origin, Origin::Report { relay_id: "bmc-7".into(), boot_counter: 3, sequence: 1 });
    assert_eq!(i.trigger_line, "Kernel panic - not syncing: Fatal exception");
    assert_eq!(i.context_before, ["sysrq: Trigger a crash"]);
    assert_eq!(i.severity, Severity::Fatal);
    assert_eq!(b.metric("lastgasp_bridge_decode_errors_total", "reason=\"duplicate\""), 2.0);
    let steps: Vec<&Step> = list[0].steps.iter().map(|s| &s.step).collect();
    assert_eq!(steps.len(), 3, "suspected: no destructive step yet: {steps:?}");
    // Confirmation: the destructive step is appended and done.
    relay.send_to(&report(2, Certainty::Confirmed, &KEY), to).unwrap();
    b.wait_processed(5);
    let list = wait_for("confirmation", || {
        let l = b.incidents();
        (l[0].steps.len() == 4 && l[0].next_pending().is_none()).then_some(l)
    });
    assert_eq!(list.len(), 1, "one incident");
    assert_eq!(list[0].steps[3].step, Step::Taint);
    assert_eq!(list[0].incident.certainty, Certainty::Confirmed);
    // A replay of the first report, and a forged one, change nothing.
    relay.send_to(&suspected, to).unwrap();
    relay.send_to(&report(3, Certainty::Confirmed, &[1; 32]), to).unwrap();
    let stranger = UdpSocket::bind("127.0.0.9:0").unwrap();
    let mut other = report(9, Certainty::Confirmed, &KEY);
    other[10] ^= 0x55; // flips bytes inside the signed body
    stranger.send_to(&other, to).unwrap();
    b.wait_processed(8);
    assert_eq!(b.metric("lastgasp_bridge_decode_errors_total", "reason=\"replay\""), 1.0);
    assert!(b.metric("lastgasp_bridge_decode_errors_total", "reason=\"bad_tag\"") + b.metric("lastgasp_bridge_decode_errors_total", "reason=\"unknown_relay\"") + b.metric("lastgasp_bridge_decode_errors_total", "reason=\"malformed\"") >= 2.0);
    // After a restart the journal still knows the newest report: the replay stays refused.
    b.kill();
    b.spawn(&[]);
    relay.send_to(&report(2, Certainty::Confirmed, &KEY), to).unwrap();
    b.wait_processed(1);
    assert_eq!(b.metric("lastgasp_bridge_decode_errors_total", "reason=\"duplicate\""), 1.0);
    assert_eq!(b.incidents().len(), 1);
}

fn check_config(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.toml");
    std::fs::write(&p, text).unwrap();
    let out = Command::new(bin()).args(["check-config", "-c"]).arg(&p).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn config_faults_name_their_line() {
    let cases = [
        ("[ingest]\nlisten = [\"0.0.0.0:6666\", \"nowhere\"]\n", "bad.toml:2:", "nowhere"),
        ("[ingest]\nworkers = 0\n", "bad.toml:2:1", "ingest.workers"),
        ("[ingest]\nbatch = 64\nlisten_on = 3\n", "bad.toml:3:", "listen_on"),
        ("[act]\npolicy = \"nuke\"\n", "bad.toml:2:", "nuke"),
        ("[incident]\n\ndedup_window = \"ten minutes\"\n", "bad.toml:3:", "duration"),
        ("[trust]\nnetconsole_sources = [\"10.0.0.0/40\"]\n", "bad.toml:2:", "prefix"),
        (&format!("[[keyring]]\nrelay_id = \"a\"\nnode = \"n\"\nkey = \"{}\"\n", "ab".repeat(16)), "bad.toml:4:", "32 bytes"),
        ("[detect]\nnpd_rule_files = [\"/nonexistent/kernel-monitor.json\"]\n", "bad.toml:2:", "does not exist"),
    ];
    for (text, at, what) in cases {
        let (ok, err) = check_config(text);
        assert!(!ok, "accepted: {text}");
        assert!(err.contains(at) && err.contains(what), "for {text:?} got: {err}");
    }
    let (ok, err) = check_config(&std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/host-bridge.example.toml")).unwrap().replace("/etc/lastgasp/kernel-monitor.json", &fixture("npd/kernel-monitor.json").display().to_string()));
    assert!(ok, "the example config is valid: {err}");
}
