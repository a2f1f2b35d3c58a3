//! The relay firmware's network side, in QEMU on a tap in a private netns:
//! real ARP and real ICMP echo through embassy-net and the LAN9118 driver.
use std::time::Duration;

use lastgasp_tests::netns::NetNs;
use lastgasp_tests::qemu::{available, wait_until_up, Board, BootOptions, RELAY_IP, RELAY_MAC};

const TAP: &str = "lgtap0";
const TAP_MAC: &str = "02:00:00:42:00:01";

#[test]
fn relay_answers_arp_and_ping() {
    if !available("firmware_net::relay_answers_arp_and_ping") {
        return;
    }
    let ns = NetNs::new("net").expect("netns");
    ns.add_tap(TAP, TAP_MAC, "10.42.0.1/24").expect("tap");
    let board = Board::boot(&ns, BootOptions::new(TAP));

    // Booted once one echo comes back; from then on none may be lost.
    wait_until_up(&ns, Duration::from_secs(30));
    let out = ns.ping(RELAY_IP, 5).expect("ping");
    assert!(out.contains("5 received"), "{out}");
    assert_eq!(
        ns.neighbour(TAP, RELAY_IP).as_deref(),
        Some(RELAY_MAC),
        "ARP resolved the relay's MAC"
    );
    let log = board.defmt_log();
    assert!(
        log.contains("lan9118: id 01180001"),
        "driver probed the chip:\n{log}"
    );
}
