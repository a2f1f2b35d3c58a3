//! Host signals from OpenBMC's D-Bus (optional, cargo feature `dbus`).
//!
//! OpenBMC already knows what the MCU boards learn from GPIOs:
//! - `xyz.openbmc_project.State.Chassis.CurrentPowerState` on
//!   `/xyz/openbmc_project/state/chassis<N>`: `…PowerState.Off` is
//!   [`HostSignal::PowerLost`], `…PowerState.On` is [`HostSignal::PowerRestored`];
//! - the `Timeout` signal of `xyz.openbmc_project.State.Watchdog` on
//!   `/xyz/openbmc_project/watchdog/host<N>` (phosphor-watchdog, fed by the
//!   host's IPMI watchdog commands) is [`HostSignal::WatchdogExpired`].
//!
//! The mapping is plain functions (tested without a bus); the watcher that
//! subscribes to the system bus is compiled only with the `dbus` feature, so
//! the default build carries no D-Bus stack.
use relay_core::detect::HostSignal;

/// Interface of chassis power state.
pub const CHASSIS_INTERFACE: &str = "xyz.openbmc_project.State.Chassis";
/// Interface of the host watchdog.
pub const WATCHDOG_INTERFACE: &str = "xyz.openbmc_project.State.Watchdog";

/// Object path of chassis `n`.
pub fn chassis_path(n: u32) -> String {
    format!("/xyz/openbmc_project/state/chassis{n}")
}

/// Object path of host `n`'s watchdog.
pub fn watchdog_path(n: u32) -> String {
    format!("/xyz/openbmc_project/watchdog/host{n}")
}

/// The signal a new `CurrentPowerState` value means, if any.
pub fn power_state_signal(value: &str) -> Option<HostSignal> {
    match value.rsplit('.').next()? {
        "Off" => Some(HostSignal::PowerLost),
        "On" => Some(HostSignal::PowerRestored),
        _ => None,
    }
}

#[cfg(feature = "dbus")]
pub use watcher::spawn_dbus_watcher;

#[cfg(feature = "dbus")]
mod watcher {
    use super::*;
    use crate::relay_loop::Input;
    use std::sync::mpsc::{SyncSender, TrySendError};
    use zbus::blocking::{Connection, MessageIterator};
    use zbus::MatchRule;

    /// Subscribe to power state and watchdog timeouts of host `instance` on
    /// `conn` (the system bus on a BMC) and push signals into the relay loop.
    pub fn spawn_dbus_watcher(conn: Connection, instance: u32, tx: SyncSender<Input>) -> anyhow::Result<std::thread::JoinHandle<()>> {
        let chassis = chassis_path(instance);
        let watchdog = watchdog_path(instance);
        let power_rule = MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .interface("org.freedesktop.DBus.Properties")?
            .member("PropertiesChanged")?
            .path(chassis.clone())?
            .build();
        let wd_rule = MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .interface(WATCHDOG_INTERFACE)?
            .member("Timeout")?
            .path(watchdog.clone())?
            .build();
        let power = MessageIterator::for_match_rule(power_rule, &conn, Some(64))?;
        let wd = MessageIterator::for_match_rule(wd_rule, &conn, Some(64))?;
        tracing::info!(%chassis, %watchdog, "watching OpenBMC D-Bus for host signals");
        let tx2 = tx.clone();
        std::thread::Builder::new().name("dbus-watchdog".into()).spawn(move || {
            for msg in wd {
                if msg.is_err() {
                    continue;
                }
                if !push(&tx2, HostSignal::WatchdogExpired) {
                    return;
                }
            }
        })?;
        Ok(std::thread::Builder::new().name("dbus-power".into()).spawn(move || {
            type Changed = (String, std::collections::HashMap<String, zbus::zvariant::OwnedValue>, Vec<String>);
            for msg in power {
                let Ok(msg) = msg else { continue };
                let Ok((iface, changed, _)) = msg.body().deserialize::<Changed>() else {
                    tracing::warn!("malformed PropertiesChanged ignored");
                    continue;
                };
                if iface != CHASSIS_INTERFACE {
                    continue;
                }
                let Some(value) = changed.get("CurrentPowerState") else { continue };
                let Ok(state) = <&str>::try_from(&**value) else { continue };
                if let Some(sig) = power_state_signal(state) {
                    if !push(&tx, sig) {
                        return;
                    }
                }
            }
        })?)
    }

    /// Hand a signal over without blocking; false once the loop is gone.
    fn push(tx: &SyncSender<Input>, sig: HostSignal) -> bool {
        match tx.try_send(Input::Signal(sig)) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                tracing::warn!(signal = ?sig, "relay loop queue full: host signal dropped");
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_states_map_to_signals() {
        assert_eq!(power_state_signal("xyz.openbmc_project.State.Chassis.PowerState.Off"), Some(HostSignal::PowerLost));
        assert_eq!(power_state_signal("xyz.openbmc_project.State.Chassis.PowerState.On"), Some(HostSignal::PowerRestored));
        assert_eq!(power_state_signal("xyz.openbmc_project.State.Chassis.PowerState.TransitioningToOff"), None);
        assert_eq!(power_state_signal(""), None);
    }

    #[test]
    fn paths_follow_openbmc_naming() {
        assert_eq!(chassis_path(0), "/xyz/openbmc_project/state/chassis0");
        assert_eq!(watchdog_path(1), "/xyz/openbmc_project/watchdog/host1");
    }
}
