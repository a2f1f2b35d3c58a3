//! The D-Bus watcher against a real dbus-daemon (a private bus started by the
//! test), with signals emitted by `busctl` exactly as phosphor-state-manager
//! and phosphor-watchdog send them. Needs `--features dbus`.
#![cfg(feature = "dbus")]
use lastgasp_openbmc::relay_loop::Input;
use lastgasp_openbmc::signals::spawn_dbus_watcher;
use relay_core::detect::HostSignal;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc::sync_channel;
use std::time::Duration;

type TestResult = Result<(), Box<dyn std::error::Error>>;

struct Bus(std::process::Child, String);

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn private_bus() -> Option<Bus> {
    let mut child = Command::new("dbus-daemon")
        .args(["--session", "--nofork", "--nopidfile", "--print-address=1"])
        .stdout(Stdio::piped())
        .spawn()
        .ok()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take()?).read_line(&mut line).ok()?;
    Some(Bus(child, line.trim().to_string()))
}

fn busctl(addr: &str, args: &[&str]) -> TestResult {
    let st = Command::new("busctl").arg(format!("--address={addr}")).args(args).status()?;
    if !st.success() {
        return Err(format!("busctl {args:?}: {st}").into());
    }
    Ok(())
}

#[test]
fn openbmc_power_and_watchdog_signals_become_host_signals() -> TestResult {
    let Some(bus) = private_bus() else {
        eprintln!("SKIPPED: dbus-daemon not available");
        return Ok(());
    };
    let conn = zbus::blocking::connection::Builder::address(bus.1.as_str())?.build()?;
    let (tx, rx) = sync_channel(16);
    spawn_dbus_watcher(conn, 0, tx)?;
    let chassis = "xyz.openbmc_project.State.Chassis";
    let off = "xyz.openbmc_project.State.Chassis.PowerState.Off";
    let on = "xyz.openbmc_project.State.Chassis.PowerState.On";
    let changed = |path: &str, iface: &str, value: &str| -> TestResult {
        busctl(&bus.1, &["emit", path, "org.freedesktop.DBus.Properties", "PropertiesChanged", "sa{sv}as", iface, "1", "CurrentPowerState", "s", value, "0"])
    };
    // Noise first: another chassis, another interface, another watchdog.
    changed("/xyz/openbmc_project/state/chassis1", chassis, off)?;
    changed("/xyz/openbmc_project/state/chassis0", "xyz.openbmc_project.State.Host", off)?;
    busctl(&bus.1, &["emit", "/xyz/openbmc_project/watchdog/host1", "xyz.openbmc_project.State.Watchdog", "Timeout", "s", "xyz.openbmc_project.State.Watchdog.Action.HardReset"])?;
    // Then the real ones for host 0.
    changed("/xyz/openbmc_project/state/chassis0", chassis, off)?;
    let got = rx.recv_timeout(Duration::from_secs(5))?;
    assert!(matches!(got, Input::Signal(HostSignal::PowerLost)), "{got:?}");
    busctl(&bus.1, &["emit", "/xyz/openbmc_project/watchdog/host0", "xyz.openbmc_project.State.Watchdog", "Timeout", "s", "xyz.openbmc_project.State.Watchdog.Action.HardReset"])?;
    let got = rx.recv_timeout(Duration::from_secs(5))?;
    assert!(matches!(got, Input::Signal(HostSignal::WatchdogExpired)), "{got:?}");
    changed("/xyz/openbmc_project/state/chassis0", chassis, on)?;
    let got = rx.recv_timeout(Duration::from_secs(5))?;
    assert!(matches!(got, Input::Signal(HostSignal::PowerRestored)), "{got:?}");
    // Nothing else: the noise was ignored.
    assert!(rx.recv_timeout(Duration::from_millis(300)).is_err(), "noise produced a signal");
    Ok(())
}

mod common;

/// The whole binary: `[signals] dbus = true`, phosphor-watchdog's Timeout on
/// the bus, and a verified WatchdogExpired report arrives in the collector's
/// namespace, byte-identical to relay-core's.
#[test]
fn watchdog_timeout_on_dbus_sends_a_signed_report() -> TestResult {
    use common::*;
    if !can_use_netns("watchdog_timeout_on_dbus_sends_a_signed_report") {
        return Ok(());
    }
    let ns = Netns::new();
    let (_master, _slave, pts) = openpty()?;
    let files = relay_files("dbus", &ns, &format!("tty = \"{pts}\""), "packet");
    let mut cfg = std::fs::read_to_string(&files.config)?;
    cfg.push_str("\n[signals]\ndbus = true\n");
    std::fs::write(&files.config, cfg)?;
    // A path socket, so the relay reaches it from its own network namespace.
    let addr = format!("unix:path={}", files.dir.join("bus").display());
    let mut child = Command::new("dbus-daemon")
        .args(["--session", "--nofork", "--nopidfile", "--print-address=1", &format!("--address={addr}")])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().ok_or("no stdout")?).read_line(&mut line)?;
    let bus = Bus(child, line.trim().to_string());

    let cap = Netns::in_ns(&ns.collector_ns, {
        let ifname = ns.collector_if.clone();
        move || capture_socket(&ifname)
    })
    .join()
    .map_err(|_| "capture thread")?;
    let relay = start_relay_env(&ns.relay_ns, &files, &[("LASTGASP_DBUS_ADDRESS", &bus.1)]);
    relay.wait_for("watching OpenBMC D-Bus", Duration::from_secs(10));
    busctl(&bus.1, &["emit", "/xyz/openbmc_project/watchdog/host0", "xyz.openbmc_project.State.Watchdog", "Timeout", "s", "xyz.openbmc_project.State.Watchdog.Action.HardReset"])?;

    let mut frames = Vec::new();
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        match recv_frame(&cap, Duration::from_secs(3)) {
            Some(f) if is_relay_frame(&f) => frames.push(f),
            Some(_) => {}
            None if !frames.is_empty() => break,
            None => {}
        }
    }
    relay.stop();
    let mut reports = 0;
    for f in &frames {
        let ihl = usize::from(f[14] & 0x0f) * 4;
        let payload = &f[14 + ihl + 8..];
        if relay_core::report::is_report(payload) {
            let r = relay_core::report::verify(payload, &KEY).map_err(|e| format!("{e:?}"))?;
            assert_eq!(r.kind, relay_core::detect::Kind::WatchdogExpired);
            assert_eq!(r.trigger_line, "board: host watchdog expired");
            reports += 1;
        }
    }
    assert!(reports > 0, "no WatchdogExpired report arrived");
    assert_eq!(frames, reference_frames(&ns, &files.journal, 1), "frames differ from relay-core's");
    eprintln!("{reports} WatchdogExpired report copies from a D-Bus Timeout");
    let _ = std::fs::remove_dir_all(&files.dir);
    Ok(())
}
