//! The OpenBMC relay binary end to end, on this machine: the real kernel
//! panic capture goes in through obmc-console's socket protocol or a pty,
//! frames come out of its AF_PACKET (or UDP) socket into a listener in
//! another network namespace, they decode, the report verifies, and they are
//! byte-identical to what relay-core builds from the same calls.
mod common;

use common::*;
use relay_core::detect::{Certainty, Kind};
use relay_core::netconsole::ExtRepr;
use relay_core::report;
use std::io::Write;
use std::net::UdpSocket;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::time::{Duration, Instant};

/// Collect frames until `done` holds and nothing new arrived for `quiet`.
fn collect(fd: &std::os::fd::OwnedFd, quiet: Duration, overall: Duration, done: impl Fn(&[Vec<u8>]) -> bool) -> Vec<Vec<u8>> {
    let start = Instant::now();
    let mut frames = Vec::new();
    while start.elapsed() < overall {
        match recv_frame(fd, quiet) {
            Some(f) if is_relay_frame(&f) => frames.push(f),
            Some(_) => {}
            None if done(&frames) => break,
            None => {}
        }
    }
    frames
}

fn udp_payload(frame: &[u8]) -> &[u8] {
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    let udp = &frame[14 + ihl..];
    let len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    &udp[8..len]
}

/// What the frames say, checked against the capture.
struct Decoded {
    reports: Vec<(u32, Kind, Certainty, u8)>,
    lines: usize,
    /// Extended-netconsole sequence numbers, one per line (fragments once).
    seqs: std::collections::BTreeSet<u64>,
}

fn decode_and_verify(frames: &[Vec<u8>], log: &[u8]) -> Decoded {
    let log_text = String::from_utf8_lossy(log);
    let mut reports = Vec::new();
    let mut lines = 0;
    let mut seqs = std::collections::BTreeSet::new();
    for f in frames {
        // An independent parser checks the headers and both checksums' presence.
        let p = etherparse::SlicedPacket::from_ethernet(f).unwrap_or_else(|e| panic!("undecodable frame: {e:?}"));
        let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else { panic!("not IPv4") };
        assert_eq!(ip.header().source(), [10, 231, ip.header().source()[2], 1]);
        let Some(etherparse::TransportSlice::Udp(udp)) = p.transport else { panic!("not UDP") };
        assert_eq!((udp.source_port(), udp.destination_port()), (SRC_PORT, DST_PORT));
        assert_ne!(udp.checksum(), 0, "the UDP checksum is always computed");
        let payload = udp_payload(f);
        if report::is_report(payload) {
            let r = report::verify(payload, &KEY).unwrap_or_else(|e| panic!("report refused: {e:?}"));
            assert_eq!((r.relay_id, r.node_name, r.boot_counter), ("bmc-test", "node-under-test", 1));
            assert!(r.trigger_line.contains("Kernel panic - not syncing"), "{}", r.trigger_line);
            reports.push((r.sequence, r.kind, r.certainty, r.repeat_index));
        } else {
            let rec = ExtRepr::parse(payload).unwrap_or_else(|e| panic!("bad netconsole datagram {:?}: {e:?}", String::from_utf8_lossy(payload)));
            let raw: Vec<u8> = rec.unescaped_text().collect::<Result<_, _>>().unwrap_or_else(|e| panic!("bad escape: {e:?}"));
            let text = String::from_utf8_lossy(&raw).into_owned();
            let probe: String = text.chars().take(40).collect();
            assert!(log_text.contains(&probe), "line not in the capture: {text:?}");
            lines += 1;
            seqs.insert(rec.seq);
        }
    }
    Decoded { reports, lines, seqs }
}

fn full_report_set(frames: &[Vec<u8>]) -> bool {
    frames.iter().filter(|f| report::is_report(udp_payload(f))).count() >= 8
}

#[test]
fn obmc_console_socket_to_af_packet_frames() -> TestResult {
    if !can_use_netns("obmc_console_socket_to_af_packet_frames") {
        return Ok(());
    }
    let ns = Netns::new();
    let name = format!("obmc-console.lgtest{}", std::process::id());
    let files = relay_files("sock", &ns, &format!("socket = \"{name}\""), "packet");
    let log = serial_log();

    // obmc-console-server's side: a stream socket in the abstract namespace
    // of the BMC's (relay's) network namespace, streaming raw UART bytes.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let log2 = log.clone();
    let server = Netns::in_ns(&ns.relay_ns, move || -> std::io::Result<()> {
        let listener = UnixListener::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes())?)?;
        let _ = ready_tx.send(());
        let (mut client, _) = listener.accept()?;
        // Paced like the host's 115200-baud UART (~11.5 KB/s), in chunks
        // whose edges fall anywhere in a line.
        for chunk in log2.chunks(256) {
            client.write_all(chunk)?;
            std::thread::sleep(Duration::from_millis(22));
        }
        // obmc-console keeps the connection; hold it until the test ends.
        std::thread::sleep(Duration::from_secs(15));
        Ok(())
    });
    ready_rx.recv_timeout(Duration::from_secs(5))?;
    let cap = Netns::in_ns(&ns.collector_ns, {
        let ifname = ns.collector_if.clone();
        move || capture_socket(&ifname)
    })
    .join()
    .map_err(|_| "capture thread")?;
    let relay = start_relay(&ns.relay_ns, &files);

    let frames = collect(&cap, Duration::from_secs(4), Duration::from_secs(40), full_report_set);
    relay.stop();
    drop(server);

    assert!(!frames.is_empty(), "no frame reached the collector namespace");
    // Learned by ARP before the panic: every frame carries the collector's MAC.
    for f in &frames {
        assert_eq!(&f[..6], &COLLECTOR_MAC, "frame not addressed to the collector's MAC");
    }
    let d = decode_and_verify(&frames, &log);
    // At UART speed the mirror keeps up: every console line arrives, no holes.
    let expected: Vec<u64> = (0..d.seqs.len() as u64).collect();
    assert_eq!(d.seqs.iter().copied().collect::<Vec<_>>(), expected, "holes in the line sequence");
    assert!(d.seqs.len() >= 440, "only {} of the capture's ~445 lines arrived", d.seqs.len());
    assert!(d.reports.iter().any(|r| r.1 == Kind::KernelPanic), "no KernelPanic report: {:?}", d.reports);
    assert!(d.reports.iter().any(|r| r.2 == Certainty::Confirmed), "the end marker should confirm: {:?}", d.reports);

    let reference = reference_frames(&ns, &files.journal, 1);
    assert_eq!(frames.len(), reference.len(), "captured {} frames, relay-core built {}", frames.len(), reference.len());
    for (i, (got, want)) in frames.iter().zip(&reference).enumerate() {
        assert_eq!(got, want, "frame {i} differs from relay-core's");
    }
    eprintln!("{} frames ({} lines, {} report copies) byte-identical to relay-core", frames.len(), d.lines, d.reports.len());
    let _ = std::fs::remove_dir_all(&files.dir);
    Ok(())
}

#[test]
fn pty_console_through_udp_fallback() -> TestResult {
    if !can_use_netns("pty_console_through_udp_fallback") {
        return Ok(());
    }
    let ns = Netns::new();
    let (mut master, _slave, pts) = openpty()?;
    let files = relay_files("pty", &ns, &format!("tty = \"{pts}\""), "udp");
    let log = serial_log();

    let collector_addr = std::net::SocketAddr::from((ns.collector_ip, DST_PORT));
    let sock = Netns::in_ns(&ns.collector_ns, move || UdpSocket::bind(collector_addr)).join().map_err(|_| "bind thread")??;
    sock.set_read_timeout(Some(Duration::from_secs(4)))?;
    let relay = start_relay(&ns.relay_ns, &files);
    relay.wait_for("console connected", Duration::from_secs(10));
    // A burst much faster than any UART: the mirror's rate limit drops
    // lines (counted by relay-core), the last gasp must still get through.
    for chunk in log.chunks(700) {
        master.write_all(chunk)?;
        std::thread::sleep(Duration::from_millis(3));
    }

    let start = Instant::now();
    let mut datagrams = Vec::new();
    let mut buf = [0u8; 2048];
    while start.elapsed() < Duration::from_secs(40) {
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                assert_eq!(from, std::net::SocketAddr::from((ns.relay_ip, SRC_PORT)));
                datagrams.push(buf[..n].to_vec());
            }
            Err(_) if datagrams.iter().filter(|d| report::is_report(d)).count() >= 8 => break,
            Err(_) => {}
        }
    }
    relay.stop();

    let reports: Vec<_> = datagrams.iter().filter(|d| report::is_report(d)).map(|d| report::verify(d, &KEY)).collect();
    assert!(!reports.is_empty(), "no report arrived over the UDP fallback");
    for r in &reports {
        let r = r.as_ref().map_err(|e| format!("{e:?}"))?;
        assert_eq!(r.kind, Kind::KernelPanic);
    }
    // The fallback sends exactly relay-core's UDP payloads.
    let reference: Vec<Vec<u8>> = reference_frames(&ns, &files.journal, 1).iter().map(|f| udp_payload(f).to_vec()).collect();
    assert_eq!(datagrams, reference, "UDP fallback payloads differ from relay-core's");
    eprintln!("{} datagrams ({} reports) over the pty + UDP path match relay-core", datagrams.len(), reports.len());
    let _ = std::fs::remove_dir_all(&files.dir);
    Ok(())
}

/// The kernel's neighbour table changes its mind about the collector's MAC
/// while the relay runs (an administrator's permanent entry; the collector
/// itself still answers ARP with its old MAC, so only the table can be the
/// source): the refresher picks it up and the last-gasp frames carry it.
/// The capture socket sees frames for any MAC on the veth.
#[test]
fn neighbour_refresh_follows_a_mac_change() -> TestResult {
    if !can_use_netns("neighbour_refresh_follows_a_mac_change") {
        return Ok(());
    }
    let ns = Netns::new();
    let (mut master, _slave, pts) = openpty()?;
    let files = relay_files("refresh", &ns, &format!("tty = \"{pts}\""), "packet");
    let cfg = std::fs::read_to_string(&files.config)?.replace("source_port = 6665", "source_port = 6665\nneighbour_refresh_secs = 1");
    std::fs::write(&files.config, cfg)?;
    let cap = Netns::in_ns(&ns.collector_ns, {
        let ifname = ns.collector_if.clone();
        move || capture_socket(&ifname)
    })
    .join()
    .map_err(|_| "capture thread")?;
    let relay = start_relay(&ns.relay_ns, &files);
    relay.wait_for("console connected", Duration::from_secs(10));

    let new_mac = "02:6c:67:00:00:03";
    let c = ns.collector_ip;
    let ip = format!("{}.{}.{}.{}", c[0], c[1], c[2], c[3]);
    let st = std::process::Command::new("ip")
        .args(["-n", &ns.relay_ns, "neigh", "replace", &ip, "lladdr", new_mac, "dev", &ns.relay_if, "nud", "permanent"])
        .status()?;
    assert!(st.success());
    relay.wait_for("frame template MAC updated", Duration::from_secs(10));
    let log = serial_log();
    let tail = &log[log.len() - 6000..]; // the panic and its context
    master.write_all(tail)?;

    let frames = collect(&cap, Duration::from_secs(4), Duration::from_secs(30), full_report_set);
    relay.stop();
    assert!(full_report_set(&frames), "no full set of reports");
    for f in &frames {
        assert_eq!(&f[..6], &[0x02, 0x6c, 0x67, 0, 0, 3], "a frame still went to the old MAC");
    }
    assert_eq!(frames, reference_frames(&ns, &files.journal, 1), "frames differ from relay-core's");
    let _ = std::fs::remove_dir_all(&files.dir);
    Ok(())
}
