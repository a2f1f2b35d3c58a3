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
