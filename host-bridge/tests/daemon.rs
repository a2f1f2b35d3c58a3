//! The daemon, end to end, on real sockets: real kernel captures in, journal and record-only
//! actions out.
mod common;

use std::net::UdpSocket;

use common::*;
use host_bridge::act::{RecordOnly, Step};
use host_bridge::incident::{Origin, Severity};
use host_bridge::journal::{Entry, StepState};
use relay_core::detect::{Certainty, Kind};

const PANIC_LINE: &str = "Kernel panic - not syncing: sysrq triggered crash";

fn trusted() -> &'static str {
    "[trust]\nnetconsole_sources = [\"127.0.0.0/8\"]"
}

/// The checks every panic run must pass.
fn assert_one_panic(list: &[Entry], run: &str) {
    assert_eq!(list.len(), 1, "{run}: exactly one incident, got {:#?}", list.iter().map(|e| &e.incident.trigger_line).collect::<Vec<_>>());
    let i = &list[0].incident;
    assert_eq!(i.kind, Some(Kind::KernelPanic), "{run}");
    assert_eq!(i.reason, "KernelPanic");
    assert_eq!(i.severity, Severity::Fatal);
    assert_eq!(i.trigger_line, PANIC_LINE, "{run}: the kernel's own line");
    assert_eq!(i.certainty, Certainty::Confirmed, "{run}: end marker confirms");
    // Context before: what the kernel printed just before, newest last.
    assert_eq!(i.context_before.last().map(String::as_str), Some("sysrq: Trigger a crash"), "{run}");
    assert!(i.context_before.iter().any(|l| l == &format!("ncfixture: about to trigger scenario {run}")), "{run}: {:#?}", i.context_before);
    assert_eq!(i.context_before.len(), 30, "{run}: context_before is the configured 30 lines");
    // Context after: the next 20 lines, counted down to zero, then no more.
    assert_eq!(i.context_after.len(), 20, "{run}: {:#?}", i.context_after);
    assert_eq!(i.after_remaining, 0);
    assert!(i.context_after[0].starts_with("CPU: "), "{run}: {:?}", i.context_after[0]);
    assert_eq!(i.context_after[2], "Call Trace:", "{run}");
    assert!(!i.context_after.iter().any(|l| l.contains("---[ end Kernel panic")), "{run}: the 21st+ lines are not kept");
    // Trusted netconsole, confirmed: the whole default plan, each step done once.
    let steps: Vec<&Step> = list[0].steps.iter().map(|s| &s.step).collect();
    assert_eq!(steps, [&Step::NodeEvent, &Step::NodeCondition { condition_type: "KernelPanic".into() }, &Step::PodReasons, &Step::Taint]);
    assert!(list[0].steps.iter().all(|s| matches!(s.state, StepState::Done { .. }) && s.attempts == 1));
}

fn replay_run(file: &str, run: &str) {
    let b = Bridge::start("", trusted());
    let sent = b.replay(&fixture(&format!("netconsole/{file}")));
    b.wait_processed(sent);
    let list = b.wait_settled();
    assert_one_panic(&list, run);
    assert_eq!(b.metric("lastgasp_bridge_drops_total", ""), 0.0);
    assert_eq!(b.metric("lastgasp_bridge_decode_errors_total", ""), 0.0);
    assert_eq!(b.metric("lastgasp_bridge_incidents_total", "reason=\"KernelPanic\""), 1.0);
    // The record-only actuator's log holds each step exactly once.
    let log = RecordOnly::read_log(&b.dir.join("actions.jsonl")).unwrap();
    assert_eq!(log.len(), 4);
    assert!(log.iter().all(|r| r.trigger_line == PANIC_LINE));
}

#[test]
fn ext_panic_jsonl_is_one_incident_with_context() {
    replay_run("ext-panic.jsonl", "ext-panic");
}

#[test]
fn ext_panic_pcap_is_one_incident_with_context() {
    replay_run("ext-panic.pcap", "ext-panic");
}

#[test]
fn basic_panic_is_one_incident_with_context() {
    replay_run("basic-panic.jsonl", "basic-panic");
}

#[test]
fn dual_panic_on_two_ports_is_one_incident() {
    let b = Bridge::start("", trusted());
    let sent = b.replay(&fixture("netconsole/dual-panic.jsonl"));
    assert_eq!(sent, 898);
    b.wait_processed(sent);
    let list = b.wait_settled();
    // Both formats decoded in full: 449 datagrams each.
    assert_eq!(b.metric("lastgasp_bridge_datagrams_decoded_total", "format=\"extended\""), 449.0);
    assert_eq!(b.metric("lastgasp_bridge_datagrams_decoded_total", "format=\"basic\""), 449.0);
    assert_one_panic(&list, "dual-panic");
    assert!(list[0].incident.repeats >= 1, "the second format's panic line was folded in");
    assert_eq!(b.metric("lastgasp_bridge_incident_repeats_total", ""), 1.0);
}

#[test]
fn boot_history_replay_raises_nothing() {
    // Everything netconsole sent before the panic: the boot history it replays when it loads
    // and the fixture's own lines (warnings, errors, "report a bug" text).
    let tmp = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(fixture("netconsole/ext-panic.jsonl")).unwrap();
    let before: Vec<&str> = text.lines().take_while(|l| !l.contains("Kernel panic")).collect();
    assert!(before.len() > 400);
    let cut = tmp.path().join("history.jsonl");
    std::fs::write(&cut, before.join("\n")).unwrap();
    let b = Bridge::start("", trusted());
    let sent = b.replay(&cut);
    b.wait_processed(sent);
    assert_eq!(b.metric("lastgasp_bridge_datagrams_decoded_total", "format=\"extended\"") as usize, before.len(), "every datagram decoded");
    assert!(b.metric("lastgasp_bridge_lines_total", "") as usize >= before.len() - 2, "every record became lines (2 were fragment pairs)");
    assert!(b.incidents().is_empty(), "{:#?}", b.incidents());
}

#[test]
fn untrusted_netconsole_only_records_an_event() {
    let b = Bridge::start("", "");
    let sent = b.replay(&fixture("netconsole/ext-panic.jsonl"));
    b.wait_processed(sent);
    let list = b.wait_settled();
    assert_eq!(list.len(), 1);
    assert!(!list[0].incident.trusted);
    let steps: Vec<&Step> = list[0].steps.iter().map(|s| &s.step).collect();
    assert_eq!(steps, [&Step::NodeEvent]);
}

#[test]
fn npd_rules_fire_with_their_reasons() {
    let b = Bridge::start("", trusted());
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = ("127.0.0.1", b.ports[0]);
    let lines = [
        "[  100.000001] INFO: task kworker/0:1:123 blocked for more than 120 seconds.\n",
        "[  100.000002] INFO: task kworker/0:1:123 blocked for more than 120 seconds.\n",
        "[  100.000003] BUG: unable to handle kernel NULL pointer dereference at 0000000000000008\n",
        "[  100.000004] EXT4-fs (sda1): Remounting filesystem read-only\n",
    ];
    for l in lines {
        s.send_to(l.as_bytes(), to).unwrap();
    }
    b.wait_processed(lines.len() as u64);
    let list = wait_for("3 incidents", || {
        let l = b.incidents();
        (l.len() == 3 && l.iter().all(|e| e.next_pending().is_none())).then_some(l)
    });
    let got: Vec<(&str, &Severity, u32)> = list.iter().map(|e| (e.incident.reason.as_str(), &e.incident.severity, e.incident.repeats)).collect();
    assert_eq!(
        got,
        [
            ("TaskHung", &Severity::Event, 1),
            ("KernelOops", &Severity::Event, 0),
            ("FilesystemIsReadOnly", &Severity::Condition { condition_type: "ReadonlyFilesystem".into() }, 0),
        ]
    );
    assert_eq!(list[1].incident.kind, Some(Kind::Bug), "the built-in kind is kept next to the NPD reason");
    let cond: Vec<&Step> = list[2].steps.iter().map(|s| &s.step).collect();
    assert_eq!(cond, [&Step::NodeEvent, &Step::NodeCondition { condition_type: "ReadonlyFilesystem".into() }]);
}

#[test]
fn incidents_cli_reads_journal_and_http() {
    let mut b = Bridge::start("", trusted());
    let sent = b.replay(&fixture("netconsole/ext-panic.jsonl"));
    b.wait_processed(sent);
    b.wait_settled();
    let out = std::process::Command::new(bin()).args(["incidents", "--url", &format!("http://{}", b.http), "list"]).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(PANIC_LINE));
    // While the daemon runs the journal is locked: a clear error, not a crash.
    let out = std::process::Command::new(bin()).args(["incidents", "list", "-c"]).arg(&b.config).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use by a running host-bridge"), "{}", String::from_utf8_lossy(&out.stderr));
    b.kill();
    let out = std::process::Command::new(bin()).args(["incidents", "show", "1", "-c"]).arg(&b.config).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("| sysrq: Trigger a crash") && text.contains("| Call Trace:"), "{text}");
}

/// SIGKILL between journaling and acting: on restart the step runs, exactly once.
fn crash_at(failpoint: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let mut b = Bridge::prepare(tmp.path(), "", trusted());
    b.spawn(&[("HOST_BRIDGE_FAILPOINT", failpoint)]);
    let sent = b.replay(&fixture("netconsole/ext-panic.jsonl"));
    b.wait_processed(sent);
    let marker = format!("FAILPOINT {failpoint} incident=1 step=0");
    wait_for("the failpoint", || b.stderr().contains(&marker).then_some(()));
    let log_path = b.dir.join("actions.jsonl");
    let before = RecordOnly::read_log(&log_path).unwrap_or_default();
    b.kill();
    match failpoint {
        "before-act" => assert!(before.is_empty(), "nothing acted before the kill"),
        _ => assert_eq!(before.len(), 1, "step 0 acted, but its completion was never journaled"),
    }
    b.spawn(&[]);
    let list = b.wait_settled();
    assert_eq!(list.len(), 1, "the incident survived the crash, once");
    let log = RecordOnly::read_log(&log_path).unwrap();
    let mut done: Vec<usize> = log.iter().map(|r| r.index).collect();
    done.sort();
    assert_eq!(done, [0, 1, 2, 3], "every step exactly once: {log:#?}");
    let s0 = &list[0].steps[0];
    if failpoint == "before-act" {
        assert_eq!(s0.attempts, 1, "never attempted before the crash; once after");
    } else {
        assert_eq!(s0.attempts, 2, "attempted before the crash and again after");
        assert!(matches!(&s0.state, StepState::Done { detail, .. } if detail == "already done"), "{:?}", s0.state);
    }
    assert!(b.stderr().contains("resuming pending actions from the journal"));
}

#[test]
fn crash_before_act_resumes_once() {
    crash_at("before-act");
}

#[test]
fn crash_after_act_before_journal_is_not_done_twice() {
    crash_at("after-act");
}

#[test]
fn restart_keeps_dedup() {
    // The same panic replayed after a restart (same boot: no banner, no seq reset seen by the
    // new process... but the replay starts with the banner) is a new boot only if the journal
    // says an incident was open: here the banner closes the old one, so this is a second boot.
    let tmp = tempfile::tempdir().unwrap();
    let mut b = Bridge::prepare(tmp.path(), "", trusted());
    b.spawn(&[]);
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let panic = format!("[    6.5] {PANIC_LINE}\n");
    s.send_to(panic.as_bytes(), ("127.0.0.1", b.ports[0])).unwrap();
    b.wait_processed(1);
    wait_for("incident", || (b.incidents().len() == 1).then_some(()));
    b.kill();
    b.spawn(&[]);
    // The host's repeat of the same line after our restart is the same incident.
    s.send_to(panic.as_bytes(), ("127.0.0.1", b.ports[0])).unwrap();
    b.wait_processed(1);
    let list = wait_for("repeat folded", || {
        let l = b.incidents();
        (l.len() == 1 && l[0].incident.repeats == 1).then_some(l)
    });
    assert_eq!(list[0].incident.origin, Origin::NetconsoleBasic);
}

#[test]
fn ipv6_and_reuseport_sockets_receive() {
    if UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("SKIP: no IPv6 loopback");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut b = Bridge::prepare(tmp.path(), "sockets_per_address = 3\n", "[trust]\nnetconsole_sources = [\"::1/128\", \"127.0.0.1\"]");
    let v6_port = free_udp_port();
    let text = std::fs::read_to_string(&b.config)
        .unwrap()
        .replace(&format!("\"127.0.0.1:{}\"]", b.ports[1]), &format!("\"127.0.0.1:{}\", \"[::1]:{v6_port}\"]", b.ports[1]));
    std::fs::write(&b.config, text).unwrap();
    b.spawn(&[]);
    // Many sources over both families; SO_REUSEPORT spreads them over 3 sockets per address.
    for i in 0..30 {
        let (bind, to) = if i % 2 == 0 { ("[::1]:0", format!("[::1]:{v6_port}")) } else { ("127.0.0.1:0", format!("127.0.0.1:{}", b.ports[0])) };
        let s = UdpSocket::bind(bind).unwrap();
        s.send_to(format!("<6>[  1.{i:06}] hello from {i}\n").as_bytes(), to).unwrap();
    }
    b.wait_processed(30);
    let s = UdpSocket::bind("[::1]:0").unwrap();
    s.send_to(format!("[    6.5] {PANIC_LINE}\n").as_bytes(), format!("[::1]:{v6_port}")).unwrap();
    b.wait_processed(31);
    let list = wait_for("v6 incident", || {
        let l = b.incidents();
        (l.len() == 1).then_some(l)
    });
    assert_eq!(list[0].incident.key.node, "addr/::1");
    assert!(list[0].incident.trusted);
    assert_eq!(b.metric("lastgasp_bridge_sources", ""), 31.0);
}
