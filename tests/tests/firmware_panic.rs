//! The relay firmware end to end in QEMU: a real kernel panic's serial output
//! (tests/fixtures/netconsole/ext-panic.serial.log) goes into UART0; the
//! collector, a real UDP socket in the test's network namespace, must get
//! the console lines as extended netconsole and the signed report, both
//! decoded and verified with relay-core.
use std::path::Path;
use std::time::Duration;

use lastgasp_tests::netns::NetNs;
use lastgasp_tests::qemu::{
    available, decode_datagrams, expected_lines, has_report, receive, wait_until_up, Board,
    BootOptions, OwnedReport, ARP_REFRESH_SECS, COLLECTOR_IP, COLLECTOR_PORT, DEFAULT_KEY,
};
use relay_core::detect::{Certainty, Kind};

const TAP: &str = "lgtap0";
const TAP_MAC: &str = "02:00:00:42:00:01";
const TRIGGER: &str = "Kernel panic - not syncing: sysrq triggered crash";

fn serial_log() -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/netconsole/ext-panic.serial.log");
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn confirmed(d: &[Vec<u8>]) -> bool {
    has_report(d, &DEFAULT_KEY, |r| r.certainty == Certainty::Confirmed)
}

/// Namespace + tap + collector socket + booted board whose ARP has
/// resolved the collector.
fn setup(tag: &str) -> (NetNs, std::net::UdpSocket, Board) {
    let ns = NetNs::new(tag).expect("netns");
    ns.add_tap(TAP, TAP_MAC, "10.42.0.1/24").expect("tap");
    let sock = ns
        .udp_socket(&format!("{COLLECTOR_IP}:{COLLECTOR_PORT}"))
        .expect("collector socket");
    let board = Board::boot(&ns, BootOptions::new(TAP));
    wait_until_up(&ns, Duration::from_secs(30));
    assert!(
        board.wait_log(
            "arp: collector 0 via [10, 42, 0, 1] is at [02, 00, 00, 42, 00, 01]",
            Duration::from_secs(10)
        ),
        "the relay did not resolve the collector's MAC:\n{}",
        board.defmt_log()
    );
    (ns, sock, board)
}

/// Feed the capture, collect until a confirmed report (+2 s), decode.
fn panic_and_collect(
    sock: &std::net::UdpSocket,
    board: &mut Board,
    baud: Option<u32>,
) -> lastgasp_tests::qemu::Decoded {
    let serial = serial_log();
    let rx = sock.try_clone().expect("socket clone");
    let collector = std::thread::spawn(move || {
        receive(
            &rx,
            Duration::from_secs(60),
            Duration::from_secs(2),
            confirmed,
        )
    });
    board.write_console(&serial, baud);
    let datagrams = collector.join().expect("collector thread");
    decode_datagrams(&datagrams, &DEFAULT_KEY)
}

fn check_reports(reports: &[OwnedReport]) {
    assert!(!reports.is_empty(), "no report received");
    let first = &reports[0];
    assert_eq!(first.kind, Kind::KernelPanic, "{first:?}");
    assert!(
        first.trigger_line.contains(TRIGGER),
        "trigger line: {first:?}"
    );
    assert_eq!(
        (first.relay_id.as_str(), first.node_name.as_str()),
        ("qemu-relay-1", "worker-1")
    );
    assert!(
        first.context_lines > 0,
        "context lines were flushed first: {first:?}"
    );
    let c = reports
        .iter()
        .find(|r| r.certainty == Certainty::Confirmed)
        .expect("a confirmed report");
    assert_eq!(c.kind, Kind::KernelPanic);
    assert!(c.trigger_line.contains(TRIGGER), "{c:?}");
    // (boot counter, sequence) never goes back, so the bridge's replay check holds
    let keys: Vec<(u32, u32)> = reports
        .iter()
        .map(|r| (r.boot_counter, r.sequence))
        .collect();
    assert!(
        keys.windows(2).all(|w| w[0] <= w[1]),
        "report order: {keys:?}"
    );
}

#[test]
fn paced_panic_log_arrives_whole_and_signed() {
    if !available("firmware_panic::paced_panic_log_arrives_whole_and_signed") {
        return;
    }
    let (_ns, sock, mut board) = setup("pace");
    let d = panic_and_collect(&sock, &mut board, Some(115_200));
    assert!(d.refused.is_empty(), "refused: {:#?}", d.refused);
    check_reports(&d.reports);
    // At serial speed nothing is lost: every line the scanner makes of the
    // capture arrives, numbered from 0, with its exact text.
    let want = expected_lines(&serial_log());
    let seqs: Vec<u64> = d.lines.keys().copied().collect();
    assert_eq!(
        seqs,
        (0..want.len() as u64).collect::<Vec<_>>(),
        "line numbers"
    );
    for (seq, text) in &d.lines {
        assert_eq!(
            String::from_utf8_lossy(text),
            String::from_utf8_lossy(&want[*seq as usize]),
            "line {seq}"
        );
    }
    eprintln!(
        "paced: {} lines, {} duplicates, {} report copies",
        d.lines.len(),
        d.duplicates,
        d.reports.len()
    );
}

#[test]
fn burst_panic_log_still_gets_the_report_out() {
    if !available("firmware_panic::burst_panic_log_still_gets_the_report_out") {
        return;
    }
    let (_ns, sock, mut board) = setup("burst");
    let d = panic_and_collect(&sock, &mut board, None);
    assert!(d.refused.is_empty(), "refused: {:#?}", d.refused);
    check_reports(&d.reports);
    // As fast as the UART takes it, the mirror's rate limit may drop lines
    // (counted by the relay); what arrives is still exact, and the trigger
    // line is among it.
    let want = expected_lines(&serial_log());
    for (seq, text) in &d.lines {
        assert_eq!(Some(text), want.get(*seq as usize), "line {seq}");
    }
    assert!(
        d.lines
            .values()
            .any(|t| String::from_utf8_lossy(t).contains(TRIGGER)),
        "the trigger line was sent"
    );
    eprintln!(
        "burst: {} of {} lines, {} duplicates, {} report copies",
        d.lines.len(),
        want.len(),
        d.duplicates,
        d.reports.len()
    );
}

#[test]
fn collector_mac_change_is_picked_up_before_the_panic() {
    if !available("firmware_panic::collector_mac_change_is_picked_up_before_the_panic") {
        return;
    }
    let (ns, sock, mut board) = setup("mac");
    // The collector's NIC changes MAC without telling anyone (no gratuitous
    // ARP). Frames to the old MAC are dropped by the tap's kernel, so only a
    // relay that re-resolved reaches the socket.
    ns.set_mac(TAP, "02:00:00:42:00:99").expect("set mac");
    assert!(
        board.wait_log(
            "is at [02, 00, 00, 42, 00, 99]",
            Duration::from_secs(3 * ARP_REFRESH_SECS)
        ),
        "the relay did not re-resolve the collector:\n{}",
        board.defmt_log()
    );
    let d = panic_and_collect(&sock, &mut board, None);
    check_reports(&d.reports);
}
