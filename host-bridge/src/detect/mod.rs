//! Detect: built-in rules (relay-core's matcher table, shared with the relay) and
//! node-problem-detector rule files.
use relay_core::detect::Kind;

use crate::incident::Severity;

pub mod builtin;
pub mod npd;

pub use npd::NpdRules;

/// What a rule found on a line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Detection {
    /// Built-in kind, if a built-in rule matched.
    pub kind: Option<Kind>,
    /// Kubernetes reason.
    pub reason: String,
    /// Event / Condition / Fatal.
    pub severity: Severity,
}

/// The rule set a worker applies to each console line.
#[derive(Debug, Clone)]
pub struct Rules {
    builtin: bool,
    npd: NpdRules,
}

impl Rules {
    /// Built-in rules (if `builtin`) plus NPD rules.
    pub fn new(builtin: bool, npd: NpdRules) -> Self {
        Self { builtin, npd }
    }

    /// Lines of history multi-line NPD rules need.
    pub fn history_needed(&self) -> usize {
        self.npd.buffer_size
    }

    /// All detections for one line. A fatal built-in match comes alone; NPD rules give their
    /// own reason (TaskHung, KernelOops, ...); a non-fatal built-in kind is used only when no
    /// NPD rule matched. `kernel` is false for records that userspace wrote (a non-kernel
    /// syslog facility): only NPD rules see those, as NPD reads /dev/kmsg.
    pub fn check<'h>(&self, line: &str, kernel: bool, history: impl Fn() -> Vec<&'h str>) -> Vec<Detection> {
        let m = match builtin::check(line) {
            Some(builtin::Builtin::Problem(m)) if self.builtin && kernel => Some(m),
            _ => None,
        };
        let kind = m.map(|m| m.kind);
        let mut out = Vec::new();
        if let Some(m) = m.filter(|m| m.fatal) {
            out.push(Detection {
                kind: Some(m.kind),
                reason: m.kind.reason().to_owned(),
                severity: Severity::Fatal,
            });
            return out;
        }
        for r in self.npd.check(line, history) {
            out.push(Detection {
                kind,
                reason: r.reason.clone(),
                severity: r.severity.clone(),
            });
        }
        if out.is_empty() {
            if let Some(k) = kind {
                out.push(Detection {
                    kind: Some(k),
                    reason: k.reason().to_owned(),
                    severity: Severity::Event,
                });
            }
        }
        out
    }
}
