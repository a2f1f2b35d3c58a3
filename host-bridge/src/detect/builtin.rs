//! Built-in rules: relay-core's matcher table ([`relay_core::detect::inspect`]), the same one
//! the relay runs, plus the markers the bridge tracks per source.
use relay_core::detect::{inspect, Marker, Match};

/// What the built-in table says about a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Builtin {
    /// A problem line.
    Problem(Match),
    /// `---[ end Kernel panic` or `Rebooting in`: the panic is complete (confirmed).
    End,
    /// `Linux version`: a kernel is booting.
    Boot,
}

/// Classify one console line (its printk `<N>`/`[ sec.usec]` prefix, if any, is skipped).
pub fn check(line: &str) -> Option<Builtin> {
    match inspect(line.as_bytes())? {
        Marker::Match(m) => Some(Builtin::Problem(m)),
        Marker::PanicEnd(_) | Marker::Rebooting => Some(Builtin::End),
        Marker::Boot => Some(Builtin::Boot),
        Marker::TraceEnd => None,
    }
}

/// Strip a printk `[  123.456789] ` stamp (basic netconsole with printk.time=1).
pub fn strip_stamp(line: &str) -> &str {
    let t = line.trim_start();
    if let Some(rest) = t.strip_prefix('[') {
        if let Some((stamp, after)) = rest.split_once(']') {
            if !stamp.trim().is_empty() && stamp.trim().bytes().all(|b| b.is_ascii_digit() || b == b'.') {
                return after.strip_prefix(' ').unwrap_or(after);
            }
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use relay_core::detect::Kind;

    use super::*;

    #[test]
    fn shared_table() {
        let panic = check("Kernel panic - not syncing: sysrq triggered crash");
        assert_eq!(panic, Some(Builtin::Problem(Match { kind: Kind::KernelPanic, fatal: true })));
        assert_eq!(check("---[ end Kernel panic - not syncing: sysrq triggered crash ]---"), Some(Builtin::End));
        assert_eq!(check("PCI: Using host bridge windows from ACPI; if necessary, use \"pci=nocrs\" and report a bug"), None);
        assert_eq!(check("sh: echo Kernel panic - not syncing"), None);
        assert_eq!(check("Linux version 6.1.0-56-amd64 (debian-kernel@lists.debian.org)"), Some(Builtin::Boot));
        assert_eq!(strip_stamp("[    6.427342] Kernel panic - not syncing: x"), "Kernel panic - not syncing: x");
        assert_eq!(strip_stamp("[x] y"), "[x] y");
    }
}
