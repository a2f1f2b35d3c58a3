//! Detector: a table of matchers over console lines (no regex engine on the MCU).
//!
//! The shared vocabulary ([`Kind`], [`Certainty`], [`HostSignal`]) is defined
//! here; the matcher table and the stateful detector follow.
use serde::{Deserialize, Serialize};

/// What went wrong on the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Kind {
    /// `Kernel panic - not syncing`.
    KernelPanic,
    /// `Fatal exception` / `Fatal exception in interrupt`.
    FatalException,
    /// A fatal machine check / hardware error.
    MachineCheck,
    /// Hard lockup (NMI watchdog) that panics.
    HardLockup,
    /// `Oops:` (not yet a panic).
    Oops,
    /// `BUG:` lines.
    Bug,
    /// `watchdog: BUG: soft lockup`.
    SoftLockup,
    /// `INFO: task ... blocked for more than`.
    HungTask,
    /// `rcu: INFO: rcu_sched detected stalls` and friends.
    RcuStall,
    /// `WARNING:` with a backtrace.
    Warning,
    /// The board saw host power go away.
    PowerLost,
    /// The board saw CATERR/IERR asserted.
    Caterr,
    /// The host's watchdog expired (the board saw it).
    WatchdogExpired,
}

impl Kind {
    /// Fatal kinds end the host; the bridge may act destructively on them.
    pub const fn is_fatal(self) -> bool {
        matches!(
            self,
            Kind::KernelPanic
                | Kind::FatalException
                | Kind::MachineCheck
                | Kind::HardLockup
                | Kind::PowerLost
                | Kind::Caterr
        )
    }

    /// The Kubernetes Event/Condition reason for this kind (`KernelPanic`, ...).
    pub const fn reason(self) -> &'static str {
        match self {
            Kind::KernelPanic => "KernelPanic",
            Kind::FatalException => "KernelFatalException",
            Kind::MachineCheck => "MachineCheck",
            Kind::HardLockup => "HardLockup",
            Kind::Oops => "KernelOops",
            Kind::Bug => "KernelBug",
            Kind::SoftLockup => "SoftLockup",
            Kind::HungTask => "HungTask",
            Kind::RcuStall => "RcuStall",
            Kind::Warning => "KernelWarning",
            Kind::PowerLost => "HostPowerLost",
            Kind::Caterr => "HostCatErr",
            Kind::WatchdogExpired => "HostWatchdogExpired",
        }
    }
}

/// How sure the relay is that the host is gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Certainty {
    /// A fatal line was seen; the end marker has not been seen yet.
    Suspected,
    /// `---[ end Kernel panic`, `Rebooting in`, or console silence confirmed it.
    Confirmed,
}

/// A signal from the board about the host (GPIO events on a real BMC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HostSignal {
    /// Host power went away.
    PowerLost,
    /// Host power came back.
    PowerRestored,
    /// CATERR/IERR asserted.
    Caterr,
    /// The host watchdog expired.
    WatchdogExpired,
}
