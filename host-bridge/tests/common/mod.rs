//! Test harness: runs the real `host-bridge` binary on real sockets and reads it over HTTP.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use host_bridge::journal::Entry;

/// The repository's fixtures.
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(rel)
}

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_host-bridge")
}

/// Ports for this test process: never handed out twice, so a bridge restarted by one test
/// cannot find its port taken by another test's bridge (ephemeral ports can repeat).
fn next_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let base = 20_000 + (std::process::id() % 400) * 100;
        let port = u16::try_from(base + n % 100).unwrap();
        let free = UdpSocket::bind(("127.0.0.1", port)).is_ok() && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
        if free {
            return port;
        }
    }
}

/// A free UDP port on loopback, unique within this test process.
pub fn free_udp_port() -> u16 {
    next_port()
}

/// A free TCP port on loopback, unique within this test process.
pub fn free_tcp_port() -> u16 {
    next_port()
}

/// Poll `f` until it returns Some, failing the test after a generous limit (liveness only:
/// nothing here measures speed).
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running bridge.
pub struct Bridge {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub ports: [u16; 2],
    pub http: SocketAddr,
    pub child: Option<Child>,
    pub stderr_path: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Bridge {
    /// Config with two UDP ports and the NPD fixture; `extra` is appended (sections allowed).
    pub fn config_text(ports: [u16; 2], http: SocketAddr, dir: &Path, ingest_extra: &str, extra: &str) -> String {
        format!(
            r#"[ingest]
listen = ["127.0.0.1:{p0}", "127.0.0.1:{p1}"]
{ingest_extra}
[detect]
npd_rule_files = ["{npd}"]
[incident]
confirm_after_silence = "2s"
[journal]
path = "{dir}/journal.redb"
[act]
record_log = "{dir}/actions.jsonl"
[serve]
http = "{http}"
{extra}
"#,
            p0 = ports[0],
            p1 = ports[1],
            npd = fixture("npd/kernel-monitor.json").display(),
            dir = dir.display(),
        )
    }

    /// Start a bridge in a fresh directory.
    pub fn start(ingest_extra: &str, extra: &str) -> Bridge {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_owned();
        let mut b = Bridge::prepare(&dir, ingest_extra, extra);
        b._tmp = Some(tmp);
        b.spawn(&[]);
        b
    }

    /// Write a config in `dir` without starting.
    pub fn prepare(dir: &Path, ingest_extra: &str, extra: &str) -> Bridge {
        let ports = [free_udp_port(), free_udp_port()];
        let http: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
        let config = dir.join("bridge.toml");
        std::fs::write(&config, Bridge::config_text(ports, http, dir, ingest_extra, extra)).unwrap();
        Bridge {
            dir: dir.to_owned(),
            config,
            ports,
            http,
            child: None,
            stderr_path: dir.join("stderr.log"),
            _tmp: None,
        }
    }

    /// Start (or restart) the process with extra environment, and wait for /readyz.
    pub fn spawn(&mut self, env: &[(&str, &str)]) {
        let stderr = std::fs::OpenOptions::new().create(true).append(true).open(&self.stderr_path).unwrap();
        let mut cmd = Command::new(bin());
        cmd.args(["run", "--config"]).arg(&self.config).env("HOST_BRIDGE_LOG", "info,host_bridge=debug").stdout(Stdio::null()).stderr(stderr);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        let pid = child.id();
        self.child = Some(child);
        let http = self.http;
        // The answer must come from our process, not from another test's bridge.
        let (_, body) = wait_for("bridge /readyz", || http_get(http, "/readyz").ok().filter(|(code, _)| *code == 200));
        assert_eq!(String::from_utf8_lossy(&body).trim(), format!("ready pid={pid}"), "another process answers on {http}");
    }

    /// SIGKILL the process (no cleanup, like a crash).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// Still running?
    pub fn alive(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// PID of the process.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// The stderr log so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// A metric's value (sum over label sets matching `labels`, e.g. `reason="bad_tag"`).
    pub fn metric(&self, name: &str, labels: &str) -> f64 {
        let (_, body) = http_get(self.http, "/metrics").unwrap();
        let text = String::from_utf8(body).unwrap();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| {
                let series = l.split_whitespace().next().unwrap_or("");
                let base = series.split('{').next().unwrap_or("");
                base == name && (labels.is_empty() || series.contains(labels))
            })
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .sum()
    }

    /// Incidents, from the running bridge.
    pub fn incidents(&self) -> Vec<Entry> {
        let (code, body) = http_get(self.http, "/incidents").unwrap();
        assert_eq!(code, 200);
        serde_json::from_slice(&body).unwrap()
    }

    /// Wait until the workers have handled `n` datagrams in total.
    pub fn wait_processed(&self, n: u64) {
        wait_for(&format!("{n} datagrams processed"), || {
            let p = self.metric("lastgasp_bridge_datagrams_processed_total", "") as u64;
            let d = self.metric("lastgasp_bridge_drops_total", "") as u64;
            (p + d >= n).then_some(())
        });
    }

    /// Wait until the bridge has handled everything the kernel delivered (a flood may lose
    /// datagrams in the socket buffer, which the kernel counts, not the bridge); returns the
    /// number received.
    pub fn wait_drained(&self) -> f64 {
        wait_for("the bridge to drain", || {
            let received = self.metric("lastgasp_bridge_datagrams_total", "");
            std::thread::sleep(Duration::from_millis(300));
            let again = self.metric("lastgasp_bridge_datagrams_total", "");
            let handled = self.metric("lastgasp_bridge_datagrams_processed_total", "")
                + self.metric("lastgasp_bridge_drops_total", "reason=\"queue_full\"")
                + self.metric("lastgasp_bridge_drops_total", "reason=\"oversized\"");
            (received == again && handled == again).then_some(again)
        })
    }

    /// Wait until there is an incident and every incident has all steps done and its context
    /// after complete.
    pub fn wait_settled(&self) -> Vec<Entry> {
        wait_for("incidents settled", || {
            let list = self.incidents();
            let settled = list.iter().all(|e| e.next_pending().is_none() && e.incident.after_remaining == 0);
            (!list.is_empty() && settled).then_some(list)
        })
    }

    /// Replay a capture with the real CLI to this bridge (ports 6666/6667 → ours).
    pub fn replay(&self, capture: &Path) -> u64 {
        let out = Command::new(bin())
            .arg("replay")
            .arg(capture)
            .args(["--to", &format!("127.0.0.1:{}", self.ports[0])])
            .args(["--port-map", &format!("6666={},6667={}", self.ports[0], self.ports[1])])
            .args(["--only-dport", "6666,6667"])
            .output()
            .unwrap();
        assert!(out.status.success(), "replay failed: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.kill();
    }
}

/// GET over HTTP/1.0; (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n")?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let split = resp.windows(4).position(|w| w == b"\r\n\r\n").ok_or(std::io::ErrorKind::InvalidData)?;
    let head = String::from_utf8_lossy(&resp[..split]).into_owned();
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or(std::io::ErrorKind::InvalidData)?;
    Ok((code, resp[split + 4..].to_vec()))
}
