//! Detector: a table of matchers over console lines (no regex engine on the MCU).
//!
//! The shared vocabulary ([`Kind`], [`Certainty`], [`HostSignal`]) is defined
//! here; the matcher table and the stateful detector follow.
use serde::{Deserialize, Serialize};

use crate::scanner::{parse_prefix, Line};
use crate::time::{Duration, Instant};

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


/// A matcher's verdict on one line: what it is, and whether it ends the host.
///
/// `fatal` is decided by the line, not only by the kind: a hard lockup that
/// the kernel merely reports is not fatal, `Kernel panic - not syncing: Hard
/// LOCKUP` is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Match {
    /// What the line reports.
    pub kind: Kind,
    /// The host is gone (a panic is under way).
    pub fatal: bool,
}

/// Everything the matcher table recognises on a line: problems, and the
/// markers the [`Detector`] needs to confirm or re-arm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Marker {
    /// A problem line (see [`classify`]).
    Match(Match),
    /// `---[ end Kernel panic - not syncing: ... ]---`: panic() is done
    /// printing; the kind comes from the repeated panic message.
    PanicEnd(Kind),
    /// `Rebooting in N seconds..`: panic() with `panic=N`.
    Rebooting,
    /// `---[ end trace ... ]---`: an Oops/WARNING report is complete.
    TraceEnd,
    /// `Linux version ...`: a kernel is booting.
    Boot,
}

/// Stateless lookup: what problem, if any, does this console line report?
///
/// `text` is a whole line (with or without its printk `<N>` / `[ sec.usec]`
/// prefix, which is skipped) or just the message. Matches are anchored at the
/// start of the message, where printk puts them, never in the middle of a
/// line: `# echo "Kernel panic - not syncing"` or
/// `kernel: Kernel panic - not syncing` from a log viewer does not match.
/// A syslog prefix with a facility other than kernel (0) never matches:
/// userspace writes to `/dev/kmsg` cannot carry facility 0.
///
/// Used by the relay's [`Detector`] and by the host bridge on netconsole text.
pub fn classify(text: &[u8]) -> Option<Match> {
    match inspect(text)? {
        Marker::Match(m) => Some(m),
        _ => None,
    }
}

/// Like [`classify`], but also reports the end-of-panic, reboot, end-of-trace
/// and boot markers.
pub fn inspect(text: &[u8]) -> Option<Marker> {
    let p = parse_prefix(text);
    if p.syslog.is_some_and(|n| n >> 3 != 0) {
        return None;
    }
    inspect_message(text.get(p.body_start..)?)
}

const PANIC: &[u8] = b"Kernel panic - not syncing";

const fn m(kind: Kind, fatal: bool) -> Option<Marker> {
    Some(Marker::Match(Match { kind, fatal }))
}

/// The matcher table, on a message with its printk prefix removed. Dispatch
/// on the first byte, then compare fixed prefixes; a handful of lines per
/// boot get past the first byte.
pub fn inspect_message(msg: &[u8]) -> Option<Marker> {
    match *msg.first()? {
        b'K' => {
            let reason = msg.strip_prefix(PANIC)?;
            m(panic_kind(reason), true)
        }
        b'-' => {
            let rest = msg.strip_prefix(b"---[ end ")?;
            if let Some(reason) = rest.strip_prefix(PANIC) {
                Some(Marker::PanicEnd(panic_kind(reason)))
            } else if rest.starts_with(b"trace") {
                Some(Marker::TraceEnd)
            } else {
                None
            }
        }
        b'R' => msg.starts_with(b"Rebooting in ").then_some(Marker::Rebooting),
        b'L' => msg.starts_with(b"Linux version ").then_some(Marker::Boot),
        // x86 page fault Oops ("Oops: 0002 [#1] ..."; newer kernels
        // "Oops: general protection fault, ...").
        b'O' => match msg.strip_prefix(b"Oops")?.first() {
            Some(b':' | b' ') => m(Kind::Oops, false),
            _ => None,
        },
        // Other x86 die() reports: "<what>: 0000 [#1] ...".
        b'g' => msg.starts_with(b"general protection fault").then(|| m(Kind::Oops, false))?,
        b'i' => msg.starts_with(b"invalid opcode: ").then(|| m(Kind::Oops, false))?,
        b's' => msg.starts_with(b"stack segment: ").then(|| m(Kind::Oops, false))?,
        b'd' => {
            (msg.starts_with(b"double fault: ") || msg.starts_with(b"divide error: "))
                .then(|| m(Kind::Oops, false))?
        }
        // arm/arm64 die(): "Internal error: Oops: 96000045 [#1] ...".
        b'I' => {
            if msg.starts_with(b"Internal error: ") {
                m(Kind::Oops, false)
            } else if let Some(rest) = msg.strip_prefix(b"INFO: task ") {
                contains(rest, b" blocked for more than ").then(|| m(Kind::HungTask, false))?
            } else if let Some(rest) = msg.strip_prefix(b"INFO: rcu") {
                contains(rest, b"stall").then(|| m(Kind::RcuStall, false))?
            } else {
                None
            }
        }
        b'r' => {
            let rest = msg.strip_prefix(b"rcu: INFO: ")?;
            contains(rest, b"stall").then(|| m(Kind::RcuStall, false))?
        }
        b'B' => bug(msg),
        b'k' => msg.starts_with(b"kernel BUG at ").then(|| m(Kind::Bug, false))?,
        b'W' => msg.starts_with(b"WARNING: ").then(|| m(Kind::Warning, false))?,
        // pr_fmt("watchdog: ") / pr_fmt("NMI watchdog: ") in kernel/watchdog*.c.
        b'w' => watchdog(msg.strip_prefix(b"watchdog: ")?),
        b'N' => watchdog(msg.strip_prefix(b"NMI watchdog: ")?),
        // "mce: [Hardware Error]: CPU 1: Machine Check Exception: ..." comes
        // before the MCE panic; corrected errors also land here.
        b'm' => msg
            .strip_prefix(b"mce: ")?
            .starts_with(b"[Hardware Error]: ")
            .then(|| m(Kind::MachineCheck, false))?,
        b'[' => msg.starts_with(b"[Hardware Error]: ").then(|| m(Kind::MachineCheck, false))?,
        _ => None,
    }
}

fn bug(msg: &[u8]) -> Option<Marker> {
    let rest = msg.strip_prefix(b"BUG: ")?;
    if rest.starts_with(b"soft lockup") {
        m(Kind::SoftLockup, false)
    } else {
        m(Kind::Bug, false)
    }
}

fn watchdog(rest: &[u8]) -> Option<Marker> {
    if rest.starts_with(b"BUG: soft lockup") {
        m(Kind::SoftLockup, false)
    } else if contains(rest, b"hard LOCKUP") {
        m(Kind::HardLockup, false)
    } else {
        None
    }
}

/// The kind of a panic from its message (what follows
/// `Kernel panic - not syncing`).
fn panic_kind(reason: &[u8]) -> Kind {
    let reason = reason.strip_prefix(b": ").unwrap_or(reason);
    if reason.starts_with(b"Fatal exception") {
        // oops_end(): "Fatal exception" / "Fatal exception in interrupt".
        Kind::FatalException
    } else if contains(reason, b"achine check")
        || contains(reason, b"MCE")
        || reason.starts_with(b"Timeout: Not all CPUs entered broadcast exception handler")
    {
        // mce_panic(): "Fatal machine check", "Fatal local machine check",
        // "Machine check from unknown source", "LMCE: ...", ...
        Kind::MachineCheck
    } else if contains(reason, b"hard LOCKUP") || contains(reason, b"Hard LOCKUP") {
        // watchdog_hld.c with hardlockup_panic: nmi_panic(regs, "Hard LOCKUP").
        Kind::HardLockup
    } else {
        Kind::KernelPanic
    }
}

/// Naive substring search; only run on the few lines that passed dispatch.
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// When a line without a printk stamp may trigger.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum StampPolicy {
    /// Once the console has shown a printk `[ sec.usec]` stamp, require one:
    /// with printk.time on, every kernel record is stamped, so an unstamped
    /// `Kernel panic - not syncing` line is userspace output (a shell's
    /// `echo`). Consoles without printk.time are matched without stamps.
    #[default]
    Auto,
    /// Only stamped lines may trigger.
    Require,
    /// Stamps are not considered.
    Ignore,
}

/// Printk stamps on different CPUs may be slightly out of order.
pub const GLUE_BEHIND: Duration = Duration::from_secs(1);
/// A console backlog (boot, panic flush) prints records late, so the
/// latest stamp can lag the host's clock by this much.
pub const GLUE_AHEAD: Duration = Duration::from_secs(30);

/// Detector settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DetectorConfig {
    /// A suspected panic is confirmed after the console has been silent this
    /// long (panic() printing nothing more means the CPU is parked).
    pub silence: Duration,
    /// When unstamped lines may trigger.
    pub stamps: StampPolicy,
    /// After a non-fatal report (Oops, WARNING, ...), further non-fatal lines
    /// within this time are counted, not reported, unless the report's
    /// `---[ end trace` has been seen: one Oops prints several matching lines.
    pub nonfatal_holdoff: Duration,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            silence: Duration::from_secs(2),
            stamps: StampPolicy::Auto,
            nonfatal_holdoff: Duration::from_secs(5),
        }
    }
}

/// What confirmed a suspected panic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Confirmation {
    /// `---[ end Kernel panic - not syncing`.
    EndMarker,
    /// `Rebooting in N seconds..`.
    Rebooting,
    /// The console stayed silent for [`DetectorConfig::silence`].
    Silence,
    /// A board signal (power lost, CATERR, watchdog) arrived.
    Signal(HostSignal),
}

/// Why the detector re-armed after a fatal trigger.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rearm {
    /// Host power came back.
    PowerRestored,
    /// The console showed a kernel booting (`Linux version`).
    HostBoot,
}

/// Output of the [`Detector`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    /// A problem was detected. For a console line, the line passed to
    /// [`Detector::on_line`] is the trigger line.
    ///
    /// A fatal panic line starts as [`Certainty::Suspected`]; a
    /// `---[ end Kernel panic` seen without its panic line and board signals
    /// are [`Certainty::Confirmed`] at once. Non-fatal kinds have nothing
    /// left to confirm and are reported as `Confirmed`.
    Triggered {
        /// What happened.
        kind: Kind,
        /// How sure the detector is.
        certainty: Certainty,
        /// The host is gone (see [`Match::fatal`]).
        fatal: bool,
        /// The trigger line's printk timestamp, if it had one.
        host_ts_usec: Option<u64>,
    },
    /// The suspected fatal trigger is now confirmed.
    Confirmed {
        /// The kind of the trigger.
        kind: Kind,
        /// What confirmed it.
        by: Confirmation,
        /// The confirming line's printk timestamp, if any.
        host_ts_usec: Option<u64>,
    },
    /// After a fatal trigger the host came back; the detector is armed again.
    Rearmed {
        /// What showed the host is back.
        cause: Rearm,
    },
}

/// Where the detector stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Watching; no fatal trigger yet.
    Armed,
    /// A fatal line was seen, awaiting confirmation.
    Suspected(Kind),
    /// The host is gone; further fatal lines are not reported again.
    Confirmed(Kind),
}

/// The stateful detector: the matcher table plus the false-positive guards,
/// the suspected → confirmed progression and board signals. Sans-IO: the
/// caller passes `now` and calls [`Detector::poll`] at
/// [`Detector::poll_timeout`].
#[derive(Clone, Debug)]
pub struct Detector {
    cfg: DetectorConfig,
    phase: Phase,
    /// Time of the last console line while a panic is suspected.
    last_line: Instant,
    /// The console carries printk stamps (see [`StampPolicy::Auto`]).
    stamped_console: bool,
    /// The latest line-start kernel stamp and when it arrived.
    last_stamp: Option<(u64, Instant)>,
    /// Non-fatal reports are held off until then.
    nonfatal_until: Option<Instant>,
    refused: u32,
    held_off: u32,
}

impl Default for Detector {
    fn default() -> Self {
        Self::new(DetectorConfig::default())
    }
}

impl Detector {
    /// A detector in [`Phase::Armed`].
    pub const fn new(cfg: DetectorConfig) -> Self {
        Detector {
            cfg,
            phase: Phase::Armed,
            last_line: Instant(0),
            stamped_console: false,
            last_stamp: None,
            nonfatal_until: None,
            refused: 0,
            held_off: 0,
        }
    }

    /// The configuration.
    pub const fn config(&self) -> &DetectorConfig {
        &self.cfg
    }

    /// Where the detector stands.
    pub const fn phase(&self) -> Phase {
        self.phase
    }

    /// Lines that matched a rule but were refused by a guard (unstamped on
    /// a stamped console, or a non-kernel syslog facility). Wraps.
    pub const fn refused(&self) -> u32 {
        self.refused
    }

    /// Non-fatal matches not reported because of the hold-off. Wraps.
    pub const fn held_off(&self) -> u32 {
        self.held_off
    }

    /// Feed one console line (as the scanner yields it).
    pub fn on_line(&mut self, line: &Line<'_>, now: Instant) -> Option<Event> {
        let glued;
        let line = match line.ts_usec {
            Some(ts) => {
                self.stamped_console = true;
                if line.facility.is_none_or(|f| f == 0) {
                    self.last_stamp = Some((ts, now));
                }
                line
            }
            None if self.stamped_console && self.cfg.stamps != StampPolicy::Ignore => {
                match self.glued(line, now) {
                    Some(g) => {
                        glued = g;
                        &glued
                    }
                    None => line,
                }
            }
            None => line,
        };
        if let Phase::Suspected(kind) = self.phase {
            if let Some(ev) = self.poll(now) {
                return Some(ev);
            }
            self.last_line = now;
            let marker = self.guarded(line)?;
            let by = match marker {
                Marker::PanicEnd(_) => Confirmation::EndMarker,
                Marker::Rebooting => Confirmation::Rebooting,
                _ => return None,
            };
            self.phase = Phase::Confirmed(kind);
            return Some(Event::Confirmed { kind, by, host_ts_usec: line.ts_usec });
        }
        let marker = self.guarded(line)?;
        match (self.phase, marker) {
            (Phase::Armed, Marker::Match(mt)) if mt.fatal => {
                self.phase = Phase::Suspected(mt.kind);
                self.last_line = now;
                Some(Event::Triggered {
                    kind: mt.kind,
                    certainty: Certainty::Suspected,
                    fatal: true,
                    host_ts_usec: line.ts_usec,
                })
            }
            (Phase::Armed, Marker::Match(mt)) => {
                if self.nonfatal_until.is_some_and(|t| now < t) {
                    self.held_off = self.held_off.wrapping_add(1);
                    return None;
                }
                self.nonfatal_until = Some(now.saturating_add(self.cfg.nonfatal_holdoff));
                Some(Event::Triggered {
                    kind: mt.kind,
                    certainty: Certainty::Confirmed,
                    fatal: false,
                    host_ts_usec: line.ts_usec,
                })
            }
            // The panic line itself was lost (line noise, overrun): the end
            // marker repeats its message, so it is a trigger on its own.
            (Phase::Armed, Marker::PanicEnd(kind)) => {
                self.phase = Phase::Confirmed(kind);
                Some(Event::Triggered {
                    kind,
                    certainty: Certainty::Confirmed,
                    fatal: true,
                    host_ts_usec: line.ts_usec,
                })
            }
            (Phase::Armed, Marker::TraceEnd) => {
                self.nonfatal_until = None;
                None
            }
            (Phase::Confirmed(_), Marker::Boot) if line.ts_usec.is_none_or(|t| t < 1_000_000) => {
                self.rearm();
                self.stamped_console = line.ts_usec.is_some();
                Some(Event::Rearmed { cause: Rearm::HostBoot })
            }
            _ => None,
        }
    }

    /// A kernel record glued onto a partial userspace line, as the real
    /// console shows it (`ncinit: plain st[    5.994048] ncfixture: ...`):
    /// printk does not know the tty has a partial line. Accepted only when its
    /// stamp fits the live kernel clock: not before the latest line-start
    /// stamp (less [`GLUE_BEHIND`]) and not further ahead than the relay's
    /// time since then (plus [`GLUE_AHEAD`]). A replayed log
    /// (`kernel: [ 6.58] Kernel panic ...` from `grep` or `journalctl`)
    /// carries a stamp from another time and is refused.
    fn glued<'a>(&mut self, line: &Line<'a>, now: Instant) -> Option<Line<'a>> {
        let (last_ts, last_at) = self.last_stamp?;
        let text = line.text;
        let mut from = 1usize;
        loop {
            let rest = text.get(from..)?;
            let at = from.checked_add(rest.iter().position(|&b| b == b'[')?)?;
            let tail = text.get(at..)?;
            let p = parse_prefix(tail);
            if let Some(ts) = p.ts_usec {
                let body = tail.get(p.body_start..)?;
                inspect_message(body)?;
                let lo = last_ts.saturating_sub(GLUE_BEHIND.as_micros());
                let hi = last_ts
                    .saturating_add(now.saturating_since(last_at).as_micros())
                    .saturating_add(GLUE_AHEAD.as_micros());
                if ts < lo || ts > hi {
                    self.refused = self.refused.wrapping_add(1);
                    return None;
                }
                return Some(Line { text: body, ts_usec: Some(ts), ..*line });
            }
            from = at.checked_add(1)?;
        }
    }

    /// Apply the false-positive guards to a line's marker.
    fn guarded(&mut self, line: &Line<'_>) -> Option<Marker> {
        let marker = inspect_message(line.text)?;
        let unstamped = line.ts_usec.is_none()
            && match self.cfg.stamps {
                StampPolicy::Auto => self.stamped_console,
                StampPolicy::Require => true,
                StampPolicy::Ignore => false,
            };
        if unstamped || line.facility.is_some_and(|f| f != 0) {
            self.refused = self.refused.wrapping_add(1);
            return None;
        }
        Some(marker)
    }

    fn rearm(&mut self) {
        self.phase = Phase::Armed;
        self.nonfatal_until = None;
    }

    /// Feed a board signal.
    pub fn on_signal(&mut self, sig: HostSignal, now: Instant) -> Option<Event> {
        let _ = now;
        let (kind, fatal) = match sig {
            HostSignal::PowerRestored => {
                return match self.phase {
                    Phase::Armed => None,
                    _ => {
                        self.rearm();
                        Some(Event::Rearmed { cause: Rearm::PowerRestored })
                    }
                };
            }
            HostSignal::PowerLost => (Kind::PowerLost, true),
            HostSignal::Caterr => (Kind::Caterr, true),
            HostSignal::WatchdogExpired => (Kind::WatchdogExpired, false),
        };
        match self.phase {
            Phase::Armed => {
                if fatal {
                    self.phase = Phase::Confirmed(kind);
                }
                Some(Event::Triggered {
                    kind,
                    certainty: Certainty::Confirmed,
                    fatal,
                    host_ts_usec: None,
                })
            }
            Phase::Suspected(k) => {
                self.phase = Phase::Confirmed(k);
                Some(Event::Confirmed { kind: k, by: Confirmation::Signal(sig), host_ts_usec: None })
            }
            Phase::Confirmed(_) => None,
        }
    }

    /// Check the silence timer.
    pub fn poll(&mut self, now: Instant) -> Option<Event> {
        let deadline = self.poll_timeout()?;
        if now < deadline {
            return None;
        }
        let Phase::Suspected(kind) = self.phase else { return None };
        self.phase = Phase::Confirmed(kind);
        Some(Event::Confirmed { kind, by: Confirmation::Silence, host_ts_usec: None })
    }

    /// When [`Detector::poll`] should next be called, if at all.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Suspected(_) => Some(self.last_line.saturating_add(self.cfg.silence)),
            _ => None,
        }
    }
}
