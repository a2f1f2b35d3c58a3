//! Built-in line classification and the markers the bridge tracks per source.
use relay_core::detect::Kind;

/// Strip a printk `[  123.456789] ` stamp (basic netconsole with printk.time=1).
pub fn strip_stamp(line: &str) -> &str {
    let t = line.trim_start();
    if let Some(rest) = t.strip_prefix('[') {
        if let Some((stamp, after)) = rest.split_once(']') {
            if stamp.trim().bytes().all(|b| b.is_ascii_digit() || b == b'.') {
                return after.trim_start();
            }
        }
    }
    t
}

/// Classify a console line with the built-in table.
pub fn classify(line: &str) -> Option<Kind> {
    let t = strip_stamp(line);
    // Matches only at the start of the message: user text that merely contains the words
    // ("echo Kernel panic") in the middle of a line does not count.
    const TABLE: &[(&str, Kind)] = &[
        ("Kernel panic - not syncing", Kind::KernelPanic),
        ("Watchdog detected hard LOCKUP", Kind::HardLockup),
        ("Fatal exception", Kind::FatalException),
        ("mce: [Hardware Error]: Machine check", Kind::MachineCheck),
        ("Machine check: ", Kind::MachineCheck),
        ("watchdog: BUG: soft lockup", Kind::SoftLockup),
        ("INFO: task ", Kind::HungTask),
        ("Oops: ", Kind::Oops),
        ("BUG: ", Kind::Bug),
        ("WARNING: CPU: ", Kind::Warning),
        ("rcu: INFO: rcu_", Kind::RcuStall),
        ("INFO: rcu_", Kind::RcuStall),
    ];
    for (prefix, kind) in TABLE {
        if t.starts_with(prefix) {
            if *kind == Kind::HungTask && !t.contains(" blocked for more than ") {
                continue;
            }
            if *kind == Kind::RcuStall && !t.contains("detected stall") {
                continue;
            }
            return Some(*kind);
        }
    }
    None
}

/// The kernel's end-of-panic marker, or a reboot announcement: the incident is confirmed.
pub fn is_end_marker(line: &str) -> bool {
    let t = strip_stamp(line);
    t.starts_with("---[ end Kernel panic") || t.starts_with("Rebooting in ")
}

/// The first line of a boot (`Linux version ...`): if the source had an incident, this is a
/// new boot.
pub fn is_boot_banner(line: &str) -> bool {
    strip_stamp(line).starts_with("Linux version ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        assert_eq!(classify("Kernel panic - not syncing: sysrq triggered crash"), Some(Kind::KernelPanic));
        assert_eq!(classify("[    6.582893] Kernel panic - not syncing: Fatal exception"), Some(Kind::KernelPanic));
        assert_eq!(classify("---[ end Kernel panic - not syncing: sysrq triggered crash ]---"), None);
        assert_eq!(classify("PCI: Using host bridge windows from ACPI; if necessary, use \"pci=nocrs\" and report a bug"), None);
        assert_eq!(classify("sh: echo Kernel panic - not syncing"), None);
        assert!(is_end_marker("---[ end Kernel panic - not syncing: sysrq triggered crash ]---"));
        assert!(is_boot_banner("Linux version 6.1.0-56-amd64 (debian-kernel@lists.debian.org)"));
    }
}
