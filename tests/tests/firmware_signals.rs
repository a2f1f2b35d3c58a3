//! Host signals into the relay firmware in QEMU (UART2 carries one byte per
//! signal, as GPIO edges would on a real BMC): a signal alone, with no
//! console text, must produce a signed report of its kind. Also the boot
//! counter, kept in the board's persistent storage, across two boots.
use std::time::Duration;

use lastgasp_tests::netns::NetNs;
use lastgasp_tests::qemu::{
    available, decode_datagrams, has_report, receive, wait_until_up, Board, BootOptions,
    COLLECTOR_IP, COLLECTOR_PORT, DEFAULT_KEY,
};
use relay_core::detect::Kind;

const TAP: &str = "lgtap0";

fn net(tag: &str) -> (NetNs, std::net::UdpSocket) {
    let ns = NetNs::new(tag).expect("netns");
    ns.add_tap(TAP, "02:00:00:42:00:01", "10.42.0.1/24")
        .expect("tap");
    let sock = ns
        .udp_socket(&format!("{COLLECTOR_IP}:{COLLECTOR_PORT}"))
        .expect("collector socket");
    (ns, sock)
}

fn boot_ready(ns: &NetNs, opts: BootOptions) -> Board {
    let board = Board::boot(ns, opts);
    wait_until_up(ns, Duration::from_secs(30));
    assert!(
        board.wait_log("arp: collector 0", Duration::from_secs(10)),
        "collector not resolved:\n{}",
        board.defmt_log()
    );
    board
}

/// Send `code` on the signal UART and return the verified reports received.
fn signal_and_collect(
    board: &mut Board,
    sock: &std::net::UdpSocket,
    code: u8,
    kind: Kind,
) -> Vec<lastgasp_tests::qemu::OwnedReport> {
    board.signal(code);
    let got = receive(
        sock,
        Duration::from_secs(20),
        Duration::from_millis(500),
        |d| has_report(d, &DEFAULT_KEY, |r| r.kind == kind),
    );
    let d = decode_datagrams(&got, &DEFAULT_KEY);
    assert!(d.refused.is_empty(), "refused: {:#?}", d.refused);
    assert!(
        d.lines.is_empty(),
        "no console text was fed, so no netconsole line may be sent"
    );
    d.reports
}

#[test]
fn power_loss_signal_alone_gives_a_power_loss_report() {
    if !available("firmware_signals::power_loss_signal_alone_gives_a_power_loss_report") {
        return;
    }
    let (ns, sock) = net("power");
    let mut board = boot_ready(&ns, BootOptions::new(TAP));
    let reports = signal_and_collect(&mut board, &sock, b'P', Kind::PowerLost);
    let r = reports
        .iter()
        .find(|r| r.kind == Kind::PowerLost)
        .expect("a power-loss report");
    assert!(r.trigger_line.contains("power lost"), "{r:?}");
    assert_eq!(r.boot_counter, 1, "first boot in a fresh storage directory");
    assert!(
        reports.iter().all(|r| r.kind == Kind::PowerLost),
        "nothing but the power loss was reported: {reports:#?}"
    );
}

#[test]
fn watchdog_signal_after_reboot_carries_the_next_boot_counter() {
    if !available("firmware_signals::watchdog_signal_after_reboot_carries_the_next_boot_counter") {
        return;
    }
    let (ns, sock) = net("wdog");
    let storage = tempfile::tempdir().expect("tempdir");
    let opts = BootOptions {
        workdir: Some(storage.path().to_path_buf()),
        ..BootOptions::new(TAP)
    };
    let mut first = boot_ready(&ns, opts.clone());
    first.stop();
    drop(first);
    let mut second = boot_ready(&ns, opts);
    let reports = signal_and_collect(&mut second, &sock, b'W', Kind::WatchdogExpired);
    let r = reports
        .iter()
        .find(|r| r.kind == Kind::WatchdogExpired)
        .expect("a watchdog report");
    assert!(r.trigger_line.contains("watchdog"), "{r:?}");
    assert_eq!(
        r.boot_counter, 2,
        "the boot counter survived the reboot: {r:?}"
    );
}
