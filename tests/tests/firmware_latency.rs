//! Measurement, not a pass/fail threshold: guest instructions from the last
//! byte of the kernel's panic line arriving in UART0 to the first frame, and
//! to the first signed report, handed to the LAN9118. QEMU runs with
//! `-icount shift=0` (one virtual nanosecond per instruction); the firmware
//! stamps both ends with the LAN9118's virtual-clock counter (40 instructions
//! per count) and logs them. The numbers go into boards/qemu-mps2-an386/README.md.
use std::path::Path;
use std::time::Duration;

use lastgasp_tests::netns::NetNs;
use lastgasp_tests::qemu::{
    available, has_report, receive, wait_until_up, Board, BootOptions, COLLECTOR_IP,
    COLLECTOR_PORT, DEFAULT_KEY,
};
use relay_core::detect::Kind;

#[test]
fn trigger_to_wire_instruction_count() {
    if !available("firmware_latency::trigger_to_wire_instruction_count") {
        return;
    }
    let ns = NetNs::new("lat").expect("netns");
    ns.add_tap("lgtap0", "02:00:00:42:00:01", "10.42.0.1/24")
        .expect("tap");
    let sock = ns
        .udp_socket(&format!("{COLLECTOR_IP}:{COLLECTOR_PORT}"))
        .expect("socket");
    let mut board = Board::boot(
        &ns,
        BootOptions {
            icount: true,
            ..BootOptions::new("lgtap0")
        },
    );
    wait_until_up(&ns, Duration::from_secs(60));
    assert!(
        board.wait_log("arp: collector 0", Duration::from_secs(20)),
        "{}",
        board.defmt_log()
    );

    let log = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/netconsole/ext-panic.serial.log"),
    )
    .expect("fixture");
    let needle = b"Kernel panic - not syncing: sysrq triggered crash\r\n";
    let at = log
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("panic line in fixture");
    let line_start = log[..at]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    let cut = at + needle.len();
    // The console up to the panic line, a pause, then the panic line alone
    // and silence, so its last byte is the last of the chunk the relay
    // triggers on. (Under -icount the guest's clock runs far slower than the
    // host's, so the mirror's rate limit leaves a backlog that the trigger
    // flushes before the report; the log says how many frames that was.)
    board.write_console(&log[..line_start], Some(115_200));
    std::thread::sleep(Duration::from_secs(1));
    board.write_console(&log[line_start..cut], None);
    let got = receive(
        &sock,
        Duration::from_secs(60),
        Duration::from_millis(300),
        |d| has_report(d, &DEFAULT_KEY, |r| r.kind == Kind::KernelPanic),
    );
    board.write_console(&log[cut..], None);
    assert!(
        has_report(&got, &DEFAULT_KEY, |r| r.kind == Kind::KernelPanic),
        "no panic report"
    );
    assert!(
        board.wait_log(
            "latency: trigger line to first report",
            Duration::from_secs(10)
        ),
        "{}",
        board.defmt_log()
    );
    let defmt = board.defmt_log();
    for l in defmt.lines().filter(|l| l.contains("latency:")) {
        // ns of virtual time == guest instructions under -icount shift=0
        println!("{} (instructions, -icount shift=0)", l.replace(" ns", ""));
    }
}
