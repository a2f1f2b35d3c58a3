//! Network faults on a real path: a network namespace for the "host", a veth pair, and
//! `tc netem` delaying (and so reordering) and duplicating its netconsole. Needs root,
//! iproute2 and the sch_netem module; skips, saying why, otherwise.
mod common;

use std::process::Command;

use common::*;

fn sh(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0]).args(&args[1..]).output().map_err(|e| format!("{}: {e}", args[0]))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

struct Netns {
    name: String,
    host_if: String,
}

impl Netns {
    fn create(tag: u32) -> Result<Netns, String> {
        let name = format!("lg-{tag}");
        let host_if = format!("lgh{tag}");
        let ns_if = format!("lgn{tag}");
        let ns = Netns { name: name.clone(), host_if: host_if.clone() };
        sh(&["ip", "netns", "add", &name])?;
        sh(&["ip", "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if])?;
        sh(&["ip", "link", "set", &ns_if, "netns", &name])?;
        sh(&["ip", "addr", "add", "10.231.7.1/24", "dev", &host_if])?;
        sh(&["ip", "link", "set", &host_if, "up"])?;
        sh(&["ip", "-n", &name, "addr", "add", "10.231.7.2/24", "dev", &ns_if])?;
        sh(&["ip", "-n", &name, "link", "set", &ns_if, "up"])?;
        sh(&["ip", "-n", &name, "link", "set", "lo", "up"])?;
        // The host's egress: 3 ms ± 2 ms (so datagrams overtake each other), 10 % duplicated.
        sh(&["ip", "netns", "exec", &name, "tc", "qdisc", "add", "dev", &ns_if, "root", "netem", "delay", "3ms", "2ms", "duplicate", "10%"])?;
        Ok(ns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = sh(&["ip", "link", "del", &self.host_if]);
        let _ = sh(&["ip", "netns", "del", &self.name]);
    }
}

#[test]
fn reordered_and_duplicated_netconsole_is_still_one_incident() {
    if effective_uid() != 0 {
        eprintln!("SKIP: netem test needs root (network namespaces, tc)");
        return;
    }
    let ns = match Netns::create(std::process::id() % 10_000) {
        Ok(ns) => ns,
        Err(e) => {
            eprintln!("SKIP: cannot build the netns/netem path: {e}");
            return;
        }
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut b = Bridge::prepare(tmp.path(), "", "[trust]\nnetconsole_sources = [\"10.231.7.0/24\"]");
    let text = std::fs::read_to_string(&b.config).unwrap().replace(&format!("127.0.0.1:{}", b.ports[0]), &format!("10.231.7.1:{}", b.ports[0]));
    std::fs::write(&b.config, text).unwrap();
    b.spawn(&[]);
    // Replay with the capture's own timing, from inside the namespace, across the netem link.
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name, bin(), "replay"])
        .arg(fixture("netconsole/ext-panic.jsonl"))
        .args(["--to", &format!("10.231.7.1:{}", b.ports[0]), "--speed", "1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let list = b.wait_settled();
    assert_eq!(list.len(), 1, "one incident despite reordering and duplicates");
    let i = &list[0].incident;
    assert_eq!(i.trigger_line, "Kernel panic - not syncing: sysrq triggered crash");
    assert_eq!(i.hint.source.map(|s| s.ip().to_string()), Some("10.231.7.2".into()));
    assert!(i.trusted);
    assert_eq!(b.metric("lastgasp_bridge_seq_resets_total", ""), 0.0, "reordering is not a reboot");
    let received = b.metric("lastgasp_bridge_datagrams_total", "");
    assert!(received > 451.0, "netem duplicated some datagrams ({received})");
    assert!(b.metric("lastgasp_bridge_seq_duplicates_total", "") > 0.0, "and the duplicates were recognised");
    assert_eq!(list[0].steps.len(), 4);
}

fn effective_uid() -> u32 {
    // /proc/self/status: "Uid: real effective saved fs"
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(u32::MAX)
}
