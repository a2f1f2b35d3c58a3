//! The relay's configuration: the board's TOML defaults (checked on the host,
//! as the board's build script does) and, in QEMU, a blob in the board's
//! persistent storage that overrides them at boot — or is refused with a
//! log line when it does not decode.
use std::path::{Path, PathBuf};
use std::time::Duration;

use lastgasp_tests::netns::NetNs;
use lastgasp_tests::qemu::{
    available, decode_datagrams, has_report, receive, wait_until_up, Board, BootOptions,
    COLLECTOR_IP, DEFAULT_KEY,
};
use relay_core::detect::Kind;
use relay_fw::config::{FwConfig, BLOB_MAX};

fn board_toml() -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../boards/qemu-mps2-an386/config.toml");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn blob(cfg: &FwConfig) -> Vec<u8> {
    let mut b = [0u8; BLOB_MAX];
    let n = cfg.to_blob(&mut b).expect("encode");
    b[..n].to_vec()
}

#[test]
fn board_defaults_parse_and_round_trip_as_a_blob() {
    let cfg = FwConfig::from_toml(&board_toml()).expect("board config.toml");
    assert_eq!(cfg.relay_id.as_str(), "qemu-relay-1");
    assert_eq!(&cfg.key, &DEFAULT_KEY);
    assert_eq!(FwConfig::from_blob(&blob(&cfg)), Ok(cfg));
}

#[test]
fn toml_errors_name_the_line() {
    let text = board_toml().replace("address = \"10.42.0.2/24\"", "address = \"10.42.0.300/24\"");
    let line = text
        .lines()
        .position(|l| l.starts_with("address"))
        .expect("address line")
        + 1;
    let err = FwConfig::from_toml(&text).expect_err("bad address refused");
    assert!(err.contains(&format!("line {line}")), "{err}");
    let err = FwConfig::from_toml(&board_toml().replace("port = 6666", "port = 0"))
        .expect_err("port 0 refused");
    assert!(err.contains("collector 0"), "{err}");
    assert!(FwConfig::from_blob(b"LGC1\xff\xff").is_err());
    assert!(FwConfig::from_blob(b"nope").is_err());
}

fn boot_with_stored(
    tag: &str,
    stored: &[u8],
    port: u16,
) -> (NetNs, std::net::UdpSocket, Board, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("lastgasp-config.bin"), stored).expect("write blob");
    let ns = NetNs::new(tag).expect("netns");
    ns.add_tap("lgtap0", "02:00:00:42:00:01", "10.42.0.1/24")
        .expect("tap");
    let sock = ns
        .udp_socket(&format!("{COLLECTOR_IP}:{port}"))
        .expect("socket");
    let workdir: PathBuf = dir.path().to_path_buf();
    let board = Board::boot(
        &ns,
        BootOptions {
            workdir: Some(workdir),
            ..BootOptions::new("lgtap0")
        },
    );
    wait_until_up(&ns, Duration::from_secs(30));
    assert!(
        board.wait_log("arp: collector 0", Duration::from_secs(10)),
        "{}",
        board.defmt_log()
    );
    (ns, sock, board, dir)
}

fn power_loss_report(
    board: &mut Board,
    sock: &std::net::UdpSocket,
) -> lastgasp_tests::qemu::OwnedReport {
    board.signal(b'P');
    let got = receive(
        sock,
        Duration::from_secs(20),
        Duration::from_millis(200),
        |d| has_report(d, &DEFAULT_KEY, |r| r.kind == Kind::PowerLost),
    );
    let d = decode_datagrams(&got, &DEFAULT_KEY);
    d.reports
        .into_iter()
        .next()
        .expect("a power-loss report on this port")
}

#[test]
fn stored_config_overrides_the_builtin_one() {
    if !available("firmware_config::stored_config_overrides_the_builtin_one") {
        return;
    }
    let text = board_toml()
        .replace("\"qemu-relay-1\"", "\"stored-relay\"")
        .replace("port = 6666", "port = 6667");
    let cfg = FwConfig::from_toml(&text).expect("edited config");
    assert_eq!(
        (cfg.relay_id.as_str(), cfg.collectors[0].port),
        ("stored-relay", 6667)
    );
    let (_ns, sock, mut board, _dir) = boot_with_stored("cfg", &blob(&cfg), 6667);
    assert!(
        board
            .defmt_log()
            .contains("config: from persistent storage"),
        "{}",
        board.defmt_log()
    );
    let r = power_loss_report(&mut board, &sock);
    assert_eq!(r.relay_id, "stored-relay");
}

#[test]
fn corrupt_stored_config_is_refused_and_the_builtin_one_used() {
    if !available("firmware_config::corrupt_stored_config_is_refused_and_the_builtin_one_used") {
        return;
    }
    let (_ns, sock, mut board, _dir) =
        boot_with_stored("badcfg", b"LGC1 this is not postcard \xff\xff\xff", 6666);
    assert!(
        board.defmt_log().contains("stored blob refused"),
        "{}",
        board.defmt_log()
    );
    let r = power_loss_report(&mut board, &sock);
    assert_eq!(r.relay_id, "qemu-relay-1");
}

/// A DHCP server (busybox udhcpd) inside the namespace, stopped on drop.
struct Udhcpd(std::process::Child);

impl Drop for Udhcpd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn dhcp_configured_relay_gets_a_lease_and_reports_from_it() {
    if !available("firmware_config::dhcp_configured_relay_gets_a_lease_and_reports_from_it") {
        return;
    }
    if !Path::new("/bin/busybox").exists() {
        // busybox-static is one of `cargo xtask setup`'s packages
        assert!(
            std::env::var("LASTGASP_REQUIRE_QEMU").as_deref() != Ok("1"),
            "busybox missing"
        );
        eprintln!("SKIPPED dhcp test: /bin/busybox missing (package busybox-static)");
        return;
    }
    let text = board_toml().replace("address = \"10.42.0.2/24\"", "address = \"dhcp\"");
    let cfg = FwConfig::from_toml(&text).expect("dhcp config");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("lastgasp-config.bin"), blob(&cfg)).expect("blob");
    let ns = NetNs::new("dhcp").expect("netns");
    ns.add_tap("lgtap0", "02:00:00:42:00:01", "10.42.0.1/24")
        .expect("tap");
    let conf = dir.path().join("udhcpd.conf");
    std::fs::write(
        &conf,
        format!(
            "start 10.42.0.50\nend 10.42.0.59\ninterface lgtap0\nlease_file {}\noption subnet 255.255.255.0\noption router 10.42.0.1\noption lease 600\n",
            dir.path().join("udhcpd.leases").display()
        ),
    )
    .expect("udhcpd.conf");
    let _server = Udhcpd(
        ns.command("/bin/busybox")
            .args(["udhcpd", "-f"])
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("udhcpd"),
    );
    let sock = ns
        .udp_socket(&format!("{COLLECTOR_IP}:6666"))
        .expect("socket");
    let mut board = Board::boot(
        &ns,
        BootOptions {
            workdir: Some(dir.path().to_path_buf()),
            ..BootOptions::new("lgtap0")
        },
    );
    assert!(
        board.wait_log("net: address [10, 42, 0, 5", Duration::from_secs(30)),
        "no lease from udhcpd:\n{}",
        board.defmt_log()
    );
    assert!(
        board.wait_log("arp: collector 0", Duration::from_secs(10)),
        "{}",
        board.defmt_log()
    );
    board.signal(b'P');
    let got = receive(
        &sock,
        Duration::from_secs(20),
        Duration::from_millis(200),
        |d| has_report(d, &DEFAULT_KEY, |r| r.kind == Kind::PowerLost),
    );
    assert!(
        has_report(&got, &DEFAULT_KEY, |r| r.kind == Kind::PowerLost),
        "{}",
        board.defmt_log()
    );
    // the relay answers ping on the address it leased
    let log = board.defmt_log();
    let leased = log
        .lines()
        .find_map(|l| l.split("net: address [").nth(1))
        .and_then(|rest| rest.split(']').next())
        .map(|ip| ip.replace(", ", "."))
        .expect("address in log");
    ns.ping(&leased, 2)
        .unwrap_or_else(|e| panic!("leased {leased} does not answer: {e}"));
}
