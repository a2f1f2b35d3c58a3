//! Test fixtures: a pair of network namespaces joined by a veth (relay side,
//! collector side), the relay binary run inside one of them, a frame capture
//! in the other, and the replay of the relay's input journal into relay-core.
#![allow(dead_code)]
use relay_core::detect::HostSignal;
use relay_core::frame::{Endpoints, FrameTemplate, IpEndpoints, MacAddr};
use relay_core::relay::{Relay, RelayConfig};
use relay_core::Instant;
use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The real kernel capture the relay is fed.
pub fn serial_log() -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/netconsole/ext-panic.serial.log");
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

pub const KEY: [u8; 32] = [0x5a; 32];
pub const RELAY_MAC: [u8; 6] = [0x02, 0x6c, 0x67, 0x00, 0x00, 0x01];
pub const COLLECTOR_MAC: [u8; 6] = [0x02, 0x6c, 0x67, 0x00, 0x00, 0x02];
pub const SRC_PORT: u16 = 6665;
pub const DST_PORT: u16 = 6666;

/// Root and `ip` are needed for namespaces; say clearly when skipping.
pub fn can_use_netns(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let ip = Command::new("ip").arg("-V").stdout(Stdio::null()).status().map(|s| s.success()).unwrap_or(false);
    if !root || !ip {
        eprintln!("SKIPPED {test}: needs root and iproute2 to create network namespaces");
    }
    root && ip
}

static NEXT: AtomicU32 = AtomicU32::new(0);

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Two namespaces and a veth between them: relay `10.231.N.1` (RELAY_MAC),
/// collector `10.231.N.2` (COLLECTOR_MAC). Removed on drop.
pub struct Netns {
    pub relay_ns: String,
    pub collector_ns: String,
    pub relay_if: String,
    pub collector_if: String,
    pub relay_ip: [u8; 4],
    pub collector_ip: [u8; 4],
}

impl Netns {
    pub fn new() -> Netns {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}x{n}", std::process::id() % 100_000);
        let subnet = (std::process::id() % 200) as u8 + n as u8;
        let ns = Netns {
            relay_ns: format!("lgob-r{tag}"),
            collector_ns: format!("lgob-c{tag}"),
            relay_if: format!("lgr{tag}"),
            collector_if: format!("lgc{tag}"),
            relay_ip: [10, 231, subnet, 1],
            collector_ip: [10, 231, subnet, 2],
        };
        let mac = |m: [u8; 6]| m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
        sh(&["ip", "netns", "add", &ns.relay_ns]);
        sh(&["ip", "netns", "add", &ns.collector_ns]);
        sh(&["ip", "link", "add", &ns.relay_if, "address", &mac(RELAY_MAC), "netns", &ns.relay_ns, "type", "veth", "peer", "name", &ns.collector_if, "address", &mac(COLLECTOR_MAC), "netns", &ns.collector_ns]);
        for (netns, ifname, ip) in [(&ns.relay_ns, &ns.relay_if, ns.relay_ip), (&ns.collector_ns, &ns.collector_if, ns.collector_ip)] {
            let addr = format!("{}.{}.{}.{}/24", ip[0], ip[1], ip[2], ip[3]);
            sh(&["ip", "-n", netns, "addr", "add", &addr, "dev", ifname]);
            sh(&["ip", "-n", netns, "link", "set", ifname, "up"]);
            sh(&["ip", "-n", netns, "link", "set", "lo", "up"]);
        }
        ns
    }

    /// Run `f` on a thread that has entered namespace `name`; sockets it
    /// creates stay in that namespace.
    pub fn in_ns<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> std::thread::JoinHandle<T> {
        let path = format!("/run/netns/{name}");
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // SAFETY: valid fd of a network namespace; affects only this thread.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for ns in [&self.relay_ns, &self.collector_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Raw frame capture on an interface (every frame the collector side receives).
pub fn capture_socket(ifname: &str) -> OwnedFd {
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket call.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, i32::from(proto)) };
    assert!(fd >= 0, "AF_PACKET: {}", std::io::Error::last_os_error());
    // SAFETY: fresh fd.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let cname = std::ffi::CString::new(ifname).unwrap_or_default();
    // SAFETY: valid C string.
    let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    assert!(index > 0, "no interface {ifname}");
    // SAFETY: sockaddr_ll is plain data.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto;
    sll.sll_ifindex = index as i32;
    // SAFETY: valid fd and sockaddr_ll.
    let rc = unsafe { libc::bind(fd.as_raw_fd(), (&sll as *const libc::sockaddr_ll).cast(), std::mem::size_of::<libc::sockaddr_ll>() as u32) };
    assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
    fd
}

/// Receive one frame, waiting up to `wait`.
pub fn recv_frame(fd: &OwnedFd, wait: Duration) -> Option<Vec<u8>> {
    let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd.
    if unsafe { libc::poll(&mut pfd, 1, wait.as_millis() as i32) } <= 0 {
        return None;
    }
    let mut buf = vec![0u8; 2048];
    // SAFETY: valid fd and buffer.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    (n > 0).then(|| {
        buf.truncate(n as usize);
        buf
    })
}

/// Is `frame` one of the relay's UDP frames (ours, IPv4 UDP to DST_PORT)?
pub fn is_relay_frame(frame: &[u8]) -> bool {
    frame.get(6..12) == Some(&RELAY_MAC[..])
        && frame.get(12..14) == Some(&[0x08, 0x00][..])
        && frame.get(14 + 9) == Some(&17)
        && frame.get(14 + 22..14 + 24) == Some(&DST_PORT.to_be_bytes()[..])
}

/// Files the relay needs, in a fresh directory.
pub struct RelayFiles {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub journal: PathBuf,
}

pub fn relay_files(tag: &str, ns: &Netns, console: &str, transport: &str) -> RelayFiles {
    let dir = std::env::temp_dir().join(format!("lastgasp-openbmc-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let key_file = dir.join("relay.key");
    let hex: String = KEY.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(&key_file, hex).unwrap_or_else(|e| panic!("{e}"));
    std::fs::set_permissions(&key_file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap_or_else(|e| panic!("{e}"));
    let c = ns.collector_ip;
    let config = dir.join("relay.toml");
    let text = format!(
        r#"[relay]
id = "bmc-test"
node_name = "node-under-test"
key_file = "{key}"
state_dir = "{state}"

[console]
{console}

[network]
interface = "{iface}"
transport = "{transport}"
source_port = {SRC_PORT}

[[collector]]
address = "{}.{}.{}.{}:{DST_PORT}"
"#,
        c[0],
        c[1],
        c[2],
        c[3],
        key = key_file.display(),
        state = dir.join("state").display(),
        iface = ns.relay_if,
    );
    std::fs::write(&config, text).unwrap_or_else(|e| panic!("{e}"));
    RelayFiles { journal: dir.join("journal.txt"), dir, config }
}

/// The relay binary running inside `netns`; its stderr is echoed and its
/// lines handed to [`RelayProcess::wait_for`].
pub struct RelayProcess {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
}

pub fn start_relay(netns: &str, files: &RelayFiles) -> RelayProcess {
    start_relay_env(netns, files, &[])
}

pub fn start_relay_env(netns: &str, files: &RelayFiles, env: &[(&str, &str)]) -> RelayProcess {
    // LASTGASP_OPENBMC_BIN (+ LASTGASP_OPENBMC_RUNNER, e.g. "qemu-arm -L
    // /usr/arm-linux-gnueabihf") runs the same tests against the armv7 build.
    let bin = std::env::var("LASTGASP_OPENBMC_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_lastgasp-bmc-relay").to_string());
    let runner = std::env::var("LASTGASP_OPENBMC_RUNNER").unwrap_or_default();
    let mut child = Command::new("ip")
        .envs(env.iter().copied())
        .args(["netns", "exec", netns])
        .args(runner.split_whitespace())
        .arg(bin)
        .arg("--config")
        .arg(&files.config)
        .args(["--log-level", "debug", "run", "--record"])
        .arg(&files.journal)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn relay: {e}"));
    let (tx, lines) = mpsc::channel();
    let stderr = child.stderr.take().unwrap_or_else(|| panic!("no stderr"));
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("relay| {line}");
            let _ = tx.send(line);
        }
    });
    RelayProcess { child, lines }
}

impl RelayProcess {
    /// Wait until the relay logs a line containing `what`.
    pub fn wait_for(&self, what: &str, wait: Duration) {
        let deadline = std::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(what) => return,
                Ok(_) => {}
                Err(_) => panic!("the relay never logged {what:?}"),
            }
        }
    }

    /// SIGTERM, then wait; the relay must exit cleanly.
    pub fn stop(mut self) {
        // `ip netns exec` execs the relay, so the child's pid is the relay's.
        // SAFETY: plain kill of our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap_or_else(|e| panic!("wait: {e}"));
        assert!(status.success(), "relay exited with {status}");
    }
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2).map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap_or_else(|e| panic!("{e}"))).collect()
}

/// Build relay-core's own relay for the test's configuration (straight from
/// relay-core's API, not through the binary's config code), replay the
/// binary's journal into it, and return the frames it produces, in order.
pub fn reference_frames(ns: &Netns, journal: &Path, boot_counter: u32) -> Vec<Vec<u8>> {
    let ep = Endpoints {
        src_mac: MacAddr(RELAY_MAC),
        dst_mac: MacAddr([0xff; 6]),
        vlan: None,
        ip: IpEndpoints::V4 { src: ns.relay_ip, dst: ns.collector_ip },
        src_port: SRC_PORT,
        dst_port: DST_PORT,
    };
    let template = FrameTemplate::new(&ep, 1500).unwrap_or_else(|e| panic!("{e:?}"));
    let cfg = RelayConfig::new("bmc-test", "node-under-test", KEY, boot_counter, template).unwrap_or_else(|e| panic!("{e}"));
    let mut relay = Box::new(Relay::new(cfg).unwrap_or_else(|e| panic!("{e}")));
    let text = std::fs::read_to_string(journal).unwrap_or_else(|e| panic!("{}: {e}", journal.display()));
    let mut frames = Vec::new();
    let mut buf = vec![0u8; 2048];
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        match f.as_slice() {
            ["C", now, hex] => relay.handle_console(&unhex(hex), Instant(now.parse().unwrap_or_default())),
            ["C", now] => relay.handle_console(&[], Instant(now.parse().unwrap_or_default())),
            ["S", now, sig] => {
                let sig = match *sig {
                    "PowerLost" => HostSignal::PowerLost,
                    "PowerRestored" => HostSignal::PowerRestored,
                    "Caterr" => HostSignal::Caterr,
                    "WatchdogExpired" => HostSignal::WatchdogExpired,
                    other => panic!("unknown signal {other}"),
                };
                relay.handle_signal(sig, Instant(now.parse().unwrap_or_default()))
            }
            ["M", i, mac] => {
                let mac: [u8; 6] = unhex(mac).try_into().unwrap_or_else(|_| panic!("bad mac {mac}"));
                assert!(relay.set_collector_mac(i.parse().unwrap_or_default(), MacAddr(mac)));
            }
            ["P", now, len] => {
                let got = relay.poll_transmit(Instant(now.parse().unwrap_or_default()), &mut buf);
                match (*len, got) {
                    ("-", None) => {}
                    (l, Some(n)) if l.parse() == Ok(n) => frames.push(buf[..n].to_vec()),
                    (l, g) => panic!("replay diverged at {line:?}: journal {l}, relay-core {g:?}"),
                }
            }
            _ => panic!("bad journal line {line:?}"),
        }
    }
    frames
}

/// A pty pair and the slave's path (the relay opens the path).
pub fn openpty() -> std::io::Result<(std::fs::File, std::fs::File, String)> {
    let (mut master, mut slave) = (0, 0);
    // SAFETY: out pointers are valid; no name/termios/winsize requested.
    if unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), std::ptr::null()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: openpty returned two fresh fds that we now own.
    let (master, slave) = unsafe { (std::os::fd::FromRawFd::from_raw_fd(master), std::os::fd::FromRawFd::from_raw_fd(slave)) };
    let name = std::fs::read_link(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&slave)))?;
    Ok((master, slave, name.display().to_string()))
}
