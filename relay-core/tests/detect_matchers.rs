//! Every matcher in the table, the false-positive guards, the
//! suspected → confirmed progression and board signals.
#![allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used
)]

use relay_core::detect::{
    classify, inspect, Certainty, Confirmation, Detector, DetectorConfig, Event, HostSignal, Kind,
    Marker, Match, Phase, Rearm, StampPolicy,
};
use relay_core::scanner::Line;
use relay_core::Instant;

fn fatal(kind: Kind) -> Option<Match> {
    Some(Match { kind, fatal: true })
}
fn warn(kind: Kind) -> Option<Match> {
    Some(Match { kind, fatal: false })
}

/// Lines as Linux prints them (6.1 formats, a few older/arm64 ones).
#[test]
fn every_matcher() {
    let cases: &[(&str, Option<Match>)] = &[
        ("[    6.582893] Kernel panic - not syncing: sysrq triggered crash", fatal(Kind::KernelPanic)),
        ("Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)", fatal(Kind::KernelPanic)),
        ("[   10.0] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000009", None), // bad stamp: stays in the body
        ("[   10.000000] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000009", fatal(Kind::KernelPanic)),
        ("[   88.123456] Kernel panic - not syncing: Fatal exception", fatal(Kind::FatalException)),
        ("[   88.123456] Kernel panic - not syncing: Fatal exception in interrupt", fatal(Kind::FatalException)),
        ("[   50.000000] Kernel panic - not syncing: Fatal machine check", fatal(Kind::MachineCheck)),
        ("[   50.000000] Kernel panic - not syncing: Fatal local machine check", fatal(Kind::MachineCheck)),
        ("[   50.000000] Kernel panic - not syncing: Machine check from unknown source", fatal(Kind::MachineCheck)),
        ("[   50.000000] Kernel panic - not syncing: Timeout: Not all CPUs entered broadcast exception handler", fatal(Kind::MachineCheck)),
        ("[   60.000000] Kernel panic - not syncing: Hard LOCKUP", fatal(Kind::HardLockup)),
        ("[   60.000000] Kernel panic - not syncing: softlockup: hung tasks", fatal(Kind::KernelPanic)),
        ("[   60.000000] Kernel panic - not syncing: hung_task: blocked tasks", fatal(Kind::KernelPanic)),
        ("<0>[   60.000000] Kernel panic - not syncing: x", fatal(Kind::KernelPanic)),
        ("[    6.000000] Oops: 0002 [#1] PREEMPT SMP NOPTI", warn(Kind::Oops)),
        ("[    6.000000] Oops: general protection fault, probably for non-canonical address 0xdead: 0000 [#1] SMP", warn(Kind::Oops)),
        ("[    6.000000] general protection fault, probably for non-canonical address 0xdead000000000100: 0000 [#1] PREEMPT SMP NOPTI", warn(Kind::Oops)),
        ("[    6.000000] invalid opcode: 0000 [#1] PREEMPT SMP NOPTI", warn(Kind::Oops)),
        ("[    6.000000] stack segment: 0000 [#1] SMP", warn(Kind::Oops)),
        ("[    6.000000] double fault: 0000 [#1] SMP", warn(Kind::Oops)),
        ("[    6.000000] Internal error: Oops: 0000000096000045 [#1] PREEMPT SMP", warn(Kind::Oops)),
        ("[    6.000000] BUG: kernel NULL pointer dereference, address: 0000000000000000", warn(Kind::Bug)),
        ("[    6.000000] BUG: unable to handle page fault for address: ffffffffc0a01000", warn(Kind::Bug)),
        ("[    6.000000] BUG: scheduling while atomic: swapper/0/0/0x00000002", warn(Kind::Bug)),
        ("[    6.000000] kernel BUG at mm/slub.c:379!", warn(Kind::Bug)),
        ("[   30.000000] watchdog: BUG: soft lockup - CPU#1 stuck for 26s! [insmod:123]", warn(Kind::SoftLockup)),
        ("[   30.000000] NMI watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [a.out:1]", warn(Kind::SoftLockup)),
        ("[   30.000000] BUG: soft lockup - CPU#0 stuck for 22s! [a.out:1]", warn(Kind::SoftLockup)),
        ("[   30.000000] NMI watchdog: Watchdog detected hard LOCKUP on cpu 1", warn(Kind::HardLockup)),
        ("[   30.000000] watchdog: CPU1: Watchdog detected hard LOCKUP on cpu 1", warn(Kind::HardLockup)),
        ("[  242.000000] INFO: task kworker/0:1:12 blocked for more than 120 seconds.", warn(Kind::HungTask)),
        ("[  242.000000] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:", warn(Kind::RcuStall)),
        ("[  242.000000] rcu: INFO: rcu_sched self-detected stall on CPU", warn(Kind::RcuStall)),
        ("[  242.000000] INFO: rcu_sched detected stalls on CPUs/tasks: { 1} (detected by 0, t=5252 jiffies)", warn(Kind::RcuStall)),
        ("[    6.000000] WARNING: CPU: 1 PID: 321 at drivers/gpu/drm/drm_gem.c:10 drm_gem_x+0x1/0x2", warn(Kind::Warning)),
        ("[    6.000000] WARNING: possible circular locking dependency detected", warn(Kind::Warning)),
        ("[   50.000000] mce: [Hardware Error]: CPU 1: Machine Check Exception: 5 Bank 0: b200000000000000", warn(Kind::MachineCheck)),
        ("[   50.000000] [Hardware Error]: RIP !INEXACT! 10:<ffffffff8100> {intel_idle+0x1/0x2}", warn(Kind::MachineCheck)),
        // Near misses: printk text that is not a problem report.
        ("[    0.000000] Kernel command line: console=ttyS0 panic=0", None),
        ("[    6.586653] Kernel Offset: 0x33c00000 from 0xffffffff81000000", None),
        ("[    1.184774] PCI: Using host bridge windows from ACPI; if necessary, report a bug", None),
        ("[    6.293647] ncfixture: warning level line", None),
        ("[    6.000000] INFO: task list follows", None),
        ("[    6.000000] rcu: INFO: something else", None),
        ("[    6.000000] watchdog: initialized", None),
        ("[    6.000000] mce: CPU0: Thermal monitoring enabled (TM1)", None),
        ("[    6.000000] Oopsie", None),
        ("[    6.000000] BUG:no space", None),
        ("[    6.000000] WARNING:", None),
        ("", None),
        ("[    6.000000] ", None),
    ];
    for (line, want) in cases {
        assert_eq!(classify(line.as_bytes()), *want, "{line:?}");
    }
}

#[test]
fn markers() {
    let cases: &[(&str, Option<Marker>)] = &[
        ("[    6.586653] ---[ end Kernel panic - not syncing: sysrq triggered crash ]---", Some(Marker::PanicEnd(Kind::KernelPanic))),
        ("[    6.586653] ---[ end Kernel panic - not syncing: Fatal exception ]---", Some(Marker::PanicEnd(Kind::FatalException))),
        ("[    6.586653] ---[ end trace 0000000000000000 ]---", Some(Marker::TraceEnd)),
        ("[    6.586653] ---[ end of something ]---", None),
        ("[    6.586653] Rebooting in 10 seconds..", Some(Marker::Rebooting)),
        ("[    0.000000] Linux version 6.1.0-56-amd64 (debian-kernel@lists.debian.org)", Some(Marker::Boot)),
    ];
    for (line, want) in cases {
        assert_eq!(inspect(line.as_bytes()), *want, "{line:?}");
        assert_eq!(classify(line.as_bytes()), None, "markers are not problems: {line:?}");
    }
}

/// "Kernel panic" in user text: anchored at the start of the printk message,
/// never mid-line.
#[test]
fn user_text_mentioning_a_panic_does_not_match() {
    for line in [
        // A shell echoing the command typed on the serial console.
        "/ # echo \"Kernel panic - not syncing: test\"",
        "root@host:~# echo Kernel panic - not syncing",
        // Log viewers.
        "Nov 24 06:59:01 host kernel: Kernel panic - not syncing: Fatal exception",
        "Nov 24 06:59:01 host kernel: [ 6.582893] Kernel panic - not syncing: x",
        "kern.log:1234:[    6.582893] Kernel panic - not syncing: sysrq triggered crash",
        "  Kernel panic - not syncing: indented",
        // A userspace /dev/kmsg write on a console_msg_format=syslog console:
        // facility user (1), which the kernel forces on every /dev/kmsg write.
        "<8>[    6.000000] Kernel panic - not syncing: from userspace",
        "<14>[    6.000000] ---[ end Kernel panic - not syncing: x ]---",
    ] {
        assert_eq!(inspect(line.as_bytes()), None, "{line:?}");
    }
}

fn line(raw: &str) -> Line<'_> {
    Line::parse(raw.as_bytes())
}

fn ms(n: u64) -> Instant {
    Instant::from_millis(n)
}

#[test]
fn echo_output_is_refused_on_a_stamped_console() {
    let mut d = Detector::default();
    assert_eq!(d.on_line(&line("[    1.000000] booting"), ms(0)), None);
    // `echo "Kernel panic - not syncing: x"` prints exactly this: no stamp.
    assert_eq!(d.on_line(&line("Kernel panic - not syncing: x"), ms(1)), None);
    assert_eq!(d.refused(), 1);
    assert_eq!(d.phase(), Phase::Armed);
    // The real thing has a stamp.
    let ev = d.on_line(&line("[    2.000000] Kernel panic - not syncing: x"), ms(2));
    assert!(matches!(ev, Some(Event::Triggered { kind: Kind::KernelPanic, certainty: Certainty::Suspected, fatal: true, host_ts_usec: Some(2_000_000) })), "{ev:?}");
}

#[test]
fn console_without_printk_time_matches_unstamped_lines() {
    let mut d = Detector::default();
    assert_eq!(d.on_line(&line("Run /init as init process"), ms(0)), None);
    let ev = d.on_line(&line("Kernel panic - not syncing: Attempted to kill init!"), ms(1));
    assert!(matches!(ev, Some(Event::Triggered { fatal: true, host_ts_usec: None, .. })), "{ev:?}");
    // With StampPolicy::Require it is refused.
    let mut d = Detector::new(DetectorConfig { stamps: StampPolicy::Require, ..DetectorConfig::default() });
    assert_eq!(d.on_line(&line("Kernel panic - not syncing: Attempted to kill init!"), ms(1)), None);
    assert_eq!(d.refused(), 1);
    // With StampPolicy::Ignore even after stamps it matches.
    let mut d = Detector::new(DetectorConfig { stamps: StampPolicy::Ignore, ..DetectorConfig::default() });
    d.on_line(&line("[    1.000000] booting"), ms(0));
    assert!(d.on_line(&line("Kernel panic - not syncing: x"), ms(1)).is_some());
}

#[test]
fn kmsg_facility_guard() {
    let mut d = Detector::default();
    assert_eq!(d.on_line(&line("<12>[    2.000000] Kernel panic - not syncing: x"), ms(2)), None);
    assert_eq!(d.refused(), 1);
    assert!(d.on_line(&line("<0>[    2.000000] Kernel panic - not syncing: x"), ms(3)).is_some());
}

#[test]
fn glued_kernel_record_is_found_when_its_stamp_is_live() {
    // As in dual-panic.serial.log: a kernel record printed after a partial
    // userspace line.
    let mut d = Detector::default();
    d.on_line(&line("[  100.000000] sysrq: Trigger a crash"), ms(10_000));
    let ev = d.on_line(&line("login: [  100.500000] Kernel panic - not syncing: Hard LOCKUP"), ms(10_500));
    assert!(matches!(ev, Some(Event::Triggered { kind: Kind::HardLockup, fatal: true, host_ts_usec: Some(100_500_000), .. })), "{ev:?}");
}

#[test]
fn glued_record_with_a_stale_stamp_is_refused() {
    let mut d = Detector::default();
    d.on_line(&line("[ 5000.000000] sd 0:0:0:0: [sda] Synchronizing SCSI cache"), ms(0));
    // `grep panic /var/log/kern.log` or a kdump dmesg on the console: a stamp
    // from another boot (behind, or far ahead of the live clock).
    for stale in [
        "Nov 24 06:59:01 host kernel: [    6.582893] Kernel panic - not syncing: x",
        "Nov 24 06:59:01 host kernel: [ 9000.000000] Kernel panic - not syncing: x",
        "kern.log:[ 4990.000000] Kernel panic - not syncing: x",
    ] {
        assert_eq!(d.on_line(&line(stale), ms(1000)), None, "{stale}");
    }
    assert_eq!(d.refused(), 3);
    assert_eq!(d.phase(), Phase::Armed);
    // Within the live window (5000 s + 1 s elapsed + slack) it would be found.
    assert!(d.on_line(&line("$ [ 5001.000000] Kernel panic - not syncing: x"), ms(1000)).is_some());
}

#[test]
fn suspected_then_confirmed_by_end_marker() {
    let mut d = Detector::default();
    let ev = d.on_line(&line("[   88.000000] Kernel panic - not syncing: Fatal exception"), ms(0));
    assert!(matches!(ev, Some(Event::Triggered { kind: Kind::FatalException, certainty: Certainty::Suspected, .. })));
    assert_eq!(d.phase(), Phase::Suspected(Kind::FatalException));
    assert_eq!(d.poll_timeout(), Some(ms(2000)));
    // More panic output: silence deadline moves, nothing is reported.
    assert_eq!(d.on_line(&line("[   88.000001] CPU: 0 PID: 1 Comm: init"), ms(500)), None);
    assert_eq!(d.on_line(&line("[   88.000001] Kernel panic - not syncing: again"), ms(600)), None);
    assert_eq!(d.poll_timeout(), Some(ms(2600)));
    assert_eq!(d.poll(ms(2599)), None);
    let ev = d.on_line(&line("[   88.000002] ---[ end Kernel panic - not syncing: Fatal exception ]---"), ms(700));
    assert_eq!(ev, Some(Event::Confirmed { kind: Kind::FatalException, by: Confirmation::EndMarker, host_ts_usec: Some(88_000_002) }));
    assert_eq!(d.phase(), Phase::Confirmed(Kind::FatalException));
    assert_eq!(d.poll_timeout(), None);
    assert_eq!(d.poll(ms(1_000_000)), None);
    // Latched: nothing more is reported.
    assert_eq!(d.on_line(&line("[   88.000003] Kernel panic - not syncing: x"), ms(800)), None);
    assert_eq!(d.on_line(&line("[   88.000003] WARNING: CPU: 1 PID: 0 at x"), ms(800)), None);
}

#[test]
fn rebooting_confirms() {
    let mut d = Detector::default();
    d.on_line(&line("[    9.000000] Kernel panic - not syncing: x"), ms(0));
    assert_eq!(
        d.on_line(&line("[    9.100000] Rebooting in 10 seconds.."), ms(100)),
        Some(Event::Confirmed { kind: Kind::KernelPanic, by: Confirmation::Rebooting, host_ts_usec: Some(9_100_000) })
    );
    // Without a suspected panic, "Rebooting in" is nothing.
    let mut d = Detector::default();
    assert_eq!(d.on_line(&line("[    9.100000] Rebooting in 10 seconds.."), ms(100)), None);
}

#[test]
fn silence_confirms_even_if_poll_was_late() {
    let mut d = Detector::default();
    d.on_line(&line("[    9.000000] Kernel panic - not syncing: x"), ms(0));
    // The caller never polled; the next line arrives after the deadline.
    assert_eq!(
        d.on_line(&line("[    9.000000] late"), ms(5000)),
        Some(Event::Confirmed { kind: Kind::KernelPanic, by: Confirmation::Silence, host_ts_usec: None })
    );
}

#[test]
fn end_marker_alone_triggers_confirmed() {
    let mut d = Detector::default();
    let ev = d.on_line(&line("[    6.586653] ---[ end Kernel panic - not syncing: sysrq triggered crash ]---"), ms(0));
    assert_eq!(ev, Some(Event::Triggered { kind: Kind::KernelPanic, certainty: Certainty::Confirmed, fatal: true, host_ts_usec: Some(6_586_653) }));
    assert_eq!(d.phase(), Phase::Confirmed(Kind::KernelPanic));
}

#[test]
fn nonfatal_holdoff_and_trace_end() {
    let mut d = Detector::default();
    let oops = [
        "[    6.000000] BUG: kernel NULL pointer dereference, address: 0000000000000000",
        "[    6.000001] #PF: supervisor write access in kernel mode",
        "[    6.000002] Oops: 0002 [#1] PREEMPT SMP NOPTI",
    ];
    let evs: Vec<_> = oops.iter().filter_map(|l| d.on_line(&line(l), ms(0))).collect();
    assert_eq!(evs, [Event::Triggered { kind: Kind::Bug, certainty: Certainty::Confirmed, fatal: false, host_ts_usec: Some(6_000_000) }]);
    assert_eq!(d.held_off(), 1);
    // The report ends; the next one is reported.
    d.on_line(&line("[    6.000100] ---[ end trace 0000000000000000 ]---"), ms(1));
    assert!(d.on_line(&line("[    7.000000] WARNING: CPU: 0 PID: 1 at x"), ms(2)).is_some());
    // Held off again until the hold-off time has passed.
    assert_eq!(d.on_line(&line("[    7.000001] WARNING: CPU: 0 PID: 1 at y"), ms(3)), None);
    assert!(d.on_line(&line("[    7.000002] WARNING: CPU: 0 PID: 1 at z"), ms(5002)).is_some());
    // A fatal line is never held off.
    assert!(matches!(
        d.on_line(&line("[    7.100000] Kernel panic - not syncing: Fatal exception"), ms(5003)),
        Some(Event::Triggered { kind: Kind::FatalException, fatal: true, .. })
    ));
}

#[test]
fn board_signals() {
    let mut d = Detector::default();
    assert_eq!(
        d.on_signal(HostSignal::WatchdogExpired, ms(0)),
        Some(Event::Triggered { kind: Kind::WatchdogExpired, certainty: Certainty::Confirmed, fatal: false, host_ts_usec: None })
    );
    assert_eq!(d.phase(), Phase::Armed);
    assert_eq!(d.on_signal(HostSignal::PowerRestored, ms(0)), None);
    assert_eq!(
        d.on_signal(HostSignal::PowerLost, ms(1)),
        Some(Event::Triggered { kind: Kind::PowerLost, certainty: Certainty::Confirmed, fatal: true, host_ts_usec: None })
    );
    assert_eq!(d.on_signal(HostSignal::Caterr, ms(2)), None, "already confirmed");
    assert_eq!(d.on_signal(HostSignal::PowerRestored, ms(3)), Some(Event::Rearmed { cause: Rearm::PowerRestored }));
    assert_eq!(
        d.on_signal(HostSignal::Caterr, ms(4)),
        Some(Event::Triggered { kind: Kind::Caterr, certainty: Certainty::Confirmed, fatal: true, host_ts_usec: None })
    );
    // A signal confirms a suspected panic.
    let mut d = Detector::default();
    d.on_line(&line("[    9.000000] Kernel panic - not syncing: x"), ms(0));
    assert_eq!(
        d.on_signal(HostSignal::WatchdogExpired, ms(10)),
        Some(Event::Confirmed { kind: Kind::KernelPanic, by: Confirmation::Signal(HostSignal::WatchdogExpired), host_ts_usec: None })
    );
}

#[test]
fn host_boot_rearms() {
    let mut d = Detector::default();
    d.on_line(&line("[    9.000000] Kernel panic - not syncing: x"), ms(0));
    d.poll(ms(10_000));
    assert_eq!(d.phase(), Phase::Confirmed(Kind::KernelPanic));
    // A "Linux version" that is not at boot time (dmesg output) does not re-arm.
    assert_eq!(d.on_line(&line("[   50.000000] Linux version 6.1.0"), ms(10_001)), None);
    assert_eq!(
        d.on_line(&line("[    0.000000] Linux version 6.1.0-56-amd64"), ms(20_000)),
        Some(Event::Rearmed { cause: Rearm::HostBoot })
    );
    assert!(d.on_line(&line("[   12.000000] Kernel panic - not syncing: again"), ms(30_000)).is_some());
}

#[test]
fn kind_vocabulary() {
    assert!(Kind::KernelPanic.is_fatal());
    assert!(!Kind::Oops.is_fatal());
    assert_eq!(Kind::KernelPanic.reason(), "KernelPanic");
}
