//! node-problem-detector `kernel-monitor.json` rule files, loaded unchanged.
//!
//! NPD matches a rule when its pattern matches text that ends at the newest log line (it joins
//! the last `bufferSize` lines with `\n`). Patterns are Go RE2 syntax, which the `regex` crate
//! accepts. A rule of `"type": "temporary"` raises an Event; `"permanent"` sets the named
//! node condition.
use std::path::Path;

use regex::{Regex, RegexSet};
use serde::Deserialize;

use crate::incident::Severity;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MonitorFile {
    #[serde(default)]
    source: String,
    #[serde(default)]
    buffer_size: Option<usize>,
    #[serde(default)]
    conditions: Vec<ConditionDef>,
    #[serde(default)]
    rules: Vec<RuleDef>,
}

#[derive(Debug, Deserialize)]
struct ConditionDef {
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Debug, Deserialize)]
struct RuleDef {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    condition: Option<String>,
    reason: String,
    pattern: String,
}

/// One loaded rule.
#[derive(Debug, Clone)]
pub struct NpdRule {
    /// NPD reason, e.g. `TaskHung`.
    pub reason: String,
    /// Event (temporary) or Condition (permanent).
    pub severity: Severity,
    /// The `source` of the file it came from (`kernel-monitor`).
    pub source: String,
    regex: Regex,
    multi_line: bool,
}

/// Rules of one or more files.
#[derive(Debug, Clone)]
pub struct NpdRules {
    rules: Vec<NpdRule>,
    // Fast path: one pass over a line tells which single-line rules can match.
    set: RegexSet,
    /// Lines of history the multi-line rules need (max `bufferSize`).
    pub buffer_size: usize,
}

/// A rule file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {msg}")]
pub struct NpdError {
    path: String,
    msg: String,
}

impl NpdRules {
    /// No rules.
    pub fn empty() -> Self {
        Self {
            rules: Vec::new(),
            set: RegexSet::empty(),
            buffer_size: 1,
        }
    }

    /// Load rule files.
    pub fn load(paths: &[impl AsRef<Path>]) -> Result<Self, NpdError> {
        let mut rules = Vec::new();
        let mut buffer_size = 1;
        for p in paths {
            let p = p.as_ref();
            let err = |msg: String| NpdError {
                path: p.display().to_string(),
                msg,
            };
            let text = std::fs::read_to_string(p).map_err(|e| err(e.to_string()))?;
            let file: MonitorFile = serde_json::from_str(&text).map_err(|e| err(format!("line {}: {e}", e.line())))?;
            buffer_size = buffer_size.max(file.buffer_size.unwrap_or(10));
            for (i, r) in file.rules.into_iter().enumerate() {
                let severity = match r.kind.as_str() {
                    "temporary" => Severity::Event,
                    "permanent" => {
                        let c = r.condition.clone().ok_or_else(|| err(format!("rules[{i}] ({}) is permanent but has no condition", r.reason)))?;
                        if !file.conditions.iter().any(|d| d.kind == c) {
                            return Err(err(format!("rules[{i}] ({}) names condition {c}, which `conditions` does not define", r.reason)));
                        }
                        Severity::Condition { condition_type: c }
                    }
                    other => return Err(err(format!("rules[{i}] ({}): type must be temporary or permanent, not {other}", r.reason))),
                };
                // Anchored at the end: the match must end at the newest line, as in NPD.
                let regex = Regex::new(&format!("(?:{})$", r.pattern)).map_err(|e| err(format!("rules[{i}] ({}): {e}", r.reason)))?;
                rules.push(NpdRule {
                    reason: r.reason,
                    severity,
                    source: file.source.clone(),
                    multi_line: r.pattern.contains("\\n"),
                    regex,
                });
            }
        }
        let set = RegexSet::new(rules.iter().map(|r| r.regex.as_str())).map_err(|e| NpdError {
            path: "rules".into(),
            msg: e.to_string(),
        })?;
        Ok(Self { rules, set, buffer_size })
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// True without rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Every rule (file order) that matches `line`, as NPD evaluates them all; `history` (older
    /// lines, oldest first) is only built for multi-line patterns.
    pub fn check<'h>(&self, line: &str, history: impl Fn() -> Vec<&'h str>) -> Vec<&NpdRule> {
        let mut out = Vec::new();
        if self.rules.is_empty() {
            return out;
        }
        let hits = self.set.matches(line);
        let mut joined: Option<String> = None;
        for (i, rule) in self.rules.iter().enumerate() {
            if hits.matched(i) && !rule.multi_line {
                out.push(rule);
            } else if rule.multi_line {
                let text = joined.get_or_insert_with(|| {
                    let mut h = history();
                    h.push(line);
                    h.join("\n")
                });
                if rule.regex.is_match(text) {
                    out.push(rule);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> NpdRules {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/npd/kernel-monitor.json");
        NpdRules::load(&[p]).unwrap()
    }

    #[test]
    fn npd_fixture_loads_and_fires() {
        let r = fixture();
        assert_eq!(r.len(), 12);
        let cases = [
            ("INFO: task kworker/0:1:123 blocked for more than 120 seconds.", "TaskHung", Severity::Event),
            ("BUG: unable to handle kernel NULL pointer dereference at 0000000000000008", "KernelOops", Severity::Event),
            ("divide error: 0000 [#1] SMP", "KernelOops", Severity::Event),
            ("Killed process 4242 (stress) total-vm:1234kB, anon-rss:100kB, file-rss:0kB, shmem-rss:0kB", "OOMKilling", Severity::Event),
            ("EXT4-fs error (device sda1): ext4_find_entry:1455: inode #2: comm ls: reading directory lblock 0", "Ext4Error", Severity::Event),
            (
                "XFS (sdb1): Corruption of in-memory data detected. Shutting down filesystem",
                "XfsHasShutdown",
                Severity::Condition { condition_type: "XfsShutdown".into() },
            ),
            (
                "EXT4-fs (sda1): Remounting filesystem read-only",
                "FilesystemIsReadOnly",
                Severity::Condition { condition_type: "ReadonlyFilesystem".into() },
            ),
        ];
        for (line, reason, sev) in cases {
            let hits = r.check(line, Vec::new);
            let hit = hits.first().unwrap_or_else(|| panic!("no rule fired for {line}"));
            assert_eq!((hit.reason.as_str(), &hit.severity), (reason, &sev), "{line}");
        }
        // Like NPD, every matching rule fires: a hung docker task is an Event and a Condition.
        let docker: Vec<_> = r.check("task docker:1234 blocked for more than 120 seconds.", Vec::new).iter().map(|h| h.reason.clone()).collect();
        assert_eq!(docker, ["TaskHung", "DockerHung"]);
        assert!(r.check("Kernel panic - not syncing: sysrq triggered crash", Vec::new).is_empty());
        assert!(r.check("PCI: Using host bridge windows from ACPI; report a bug", Vec::new).is_empty());
    }

    #[test]
    fn bad_rule_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.json");
        std::fs::write(&p, r#"{"rules":[{"type":"permanent","condition":"Nope","reason":"R","pattern":"x"}]}"#).unwrap();
        assert!(NpdRules::load(&[&p]).unwrap_err().to_string().contains("Nope"));
        std::fs::write(&p, r#"{"rules":[{"type":"temporary","reason":"R","pattern":"(unclosed"}]}"#).unwrap();
        assert!(NpdRules::load(&[&p]).is_err());
    }
}
