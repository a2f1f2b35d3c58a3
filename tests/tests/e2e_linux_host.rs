//! The real Linux host on its own: Debian's kernel boots under TCG, panics
//! on `echo c > /proc/sysrq-trigger`, and its serial console and its
//! netconsole (extended format, aimed at a UDP socket in the test's network
//! namespace) both carry the kernel's own panic line. One boot serves both
//! checks (a TCG boot is the slow part).
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lastgasp_tests::linux_host::{self, HostConfig, LinuxHost, Mode, SYSRQ_PANIC_LINE};
use lastgasp_tests::netns::NetNs;
use relay_core::netconsole::{escape, ExtRepr};

const COLLECTOR_IP: &str = "10.99.0.1";
const COLLECTOR_MAC: &str = "02:00:00:99:00:01";
const HOST_IP: &str = "10.99.0.2";

/// Reassemble extended-netconsole datagrams into (seq, text) records.
fn records(datagrams: &[Vec<u8>]) -> (Vec<(u64, String)>, Vec<String>) {
    let mut pieces: std::collections::BTreeMap<u64, Vec<(u32, Vec<u8>)>> = Default::default();
    let mut refused = Vec::new();
    for d in datagrams {
        match ExtRepr::parse(d) {
            Ok(r) => pieces
                .entry(r.seq)
                .or_default()
                .push((r.frag.map_or(0, |f| f.offset), r.payload.to_vec())),
            Err(e) => refused.push(format!("{e:?}: {:?}", String::from_utf8_lossy(d))),
        }
    }
    let mut out = Vec::new();
    for (seq, mut parts) in pieces {
        parts.sort_by_key(|p| p.0);
        let body: Vec<u8> = parts.into_iter().flat_map(|p| p.1).collect();
        let line = body.split(|&b| b == b'\n').next().unwrap_or_default();
        let mut text = vec![0u8; line.len()];
        match escape::unescape_into(line, &mut text) {
            Ok(n) => out.push((seq, String::from_utf8_lossy(&text[..n]).into_owned())),
            Err(e) => refused.push(format!("record {seq}: {e:?}")),
        }
    }
    (out, refused)
}

#[test]
fn real_kernel_panics_on_serial_and_over_extended_netconsole() {
    if !linux_host::available("real_kernel_panics_on_serial_and_over_extended_netconsole") {
        return;
    }
    let art = linux_host::prepare().expect("kernel and initramfs");
    let ns = NetNs::new("host").expect("netns");
    ns.add_tap("lgh0", COLLECTOR_MAC, &format!("{COLLECTOR_IP}/24"))
        .expect("tap");
    let sock = ns
        .udp_socket(&format!("{COLLECTOR_IP}:6666"))
        .expect("collector socket");
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");

    let mut cfg = HostConfig::new(Mode::Panic);
    cfg.netns = Some(ns.name().to_string());
    cfg.tap = Some("lgh0".into());
    cfg.ip = Some(format!("{HOST_IP}/24"));
    cfg.netconsole = Some(HostConfig::extended_netconsole(
        HOST_IP,
        COLLECTOR_IP,
        6666,
        COLLECTOR_MAC,
    ));
    // Drain the socket as datagrams arrive: the boot backlog netconsole
    // replays at load time would overflow a default receive buffer.
    let stop = Arc::new(AtomicBool::new(false));
    let collector = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, src)) = sock.recv_from(&mut buf) {
                    assert_eq!(
                        src.ip().to_string(),
                        HOST_IP,
                        "datagram from an unexpected source"
                    );
                    got.push(buf[..n].to_vec());
                }
            }
            got
        })
    };
    let mut host = LinuxHost::boot(art, cfg, None).expect("boot");

    let panic_at = host
        .serial()
        .wait_for(SYSRQ_PANIC_LINE, Duration::from_secs(300));
    let panic_at = panic_at.unwrap_or_else(|| panic!("no panic line on ttyS0 within 300 s"));
    eprintln!("boot to panic line: {:.2?}", panic_at - host.started());
    // The kernel finishes with its end marker; the last datagrams follow it.
    let end = host
        .serial()
        .wait_for("---[ end Kernel panic", Duration::from_secs(30));
    assert!(end.is_some(), "no end-of-panic marker on ttyS0");

    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let got = collector.join().expect("collector thread");
    host.power_off();

    let serial = host.serial().text();
    assert!(
        serial.contains("lastgasp-host: boot_id="),
        "/init did not run:\n{serial}"
    );
    assert!(
        serial.contains("lastgasp-host: netconsole +6666@"),
        "netconsole was not loaded:\n{serial}"
    );

    let (recs, refused) = records(&got);
    assert!(
        refused.is_empty(),
        "datagrams relay-core refused: {refused:#?}"
    );
    assert!(
        recs.len() > 20,
        "only {} netconsole records arrived",
        recs.len()
    );
    let texts: Vec<&str> = recs.iter().map(|r| r.1.as_str()).collect();
    assert!(
        texts
            .iter()
            .any(|t| t.contains("lastgasp-host: heartbeat 1/")),
        "no heartbeat over netconsole: {texts:#?}"
    );
    let panic_rec = recs.iter().find(|r| r.1.starts_with(SYSRQ_PANIC_LINE));
    let (panic_seq, _) =
        panic_rec.unwrap_or_else(|| panic!("no panic record over netconsole: {texts:#?}"));
    // Sequence numbers run without a hole up to the panic (a lossless tap).
    let seqs: Vec<u64> = recs
        .iter()
        .map(|r| r.0)
        .filter(|s| s <= panic_seq)
        .collect();
    let first = seqs.first().copied().unwrap_or_default();
    assert_eq!(
        seqs.len() as u64,
        panic_seq - first + 1,
        "holes in the record sequence before the panic"
    );
}
