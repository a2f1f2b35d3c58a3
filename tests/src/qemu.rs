//! The real relay firmware in `qemu-system-arm -M mps2-an386`, with its
//! LAN9118 on a tap inside a [`NetNs`](crate::netns::NetNs) (never slirp),
//! its console UART and host-signal UART on Unix sockets the test writes to,
//! and its defmt log (UART1) in a file that is decoded with the image's
//! symbol table and printed when a test fails.
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::netns::NetNs;

/// The emulated board the tests run.
pub const BOARD: &str = "qemu-mps2-an386";
/// Set to 1 (as `cargo xtask test` does) to make a missing prerequisite a
/// failure instead of a skip.
pub use crate::prereq::REQUIRE_ENV;

/// The relay's address in the board's default configuration.
pub const RELAY_IP: &str = "10.42.0.2";
/// The collector (the test's tap) in the board's default configuration.
pub const COLLECTOR_IP: &str = "10.42.0.1";
/// The collector's UDP port in the board's default configuration.
pub const COLLECTOR_PORT: u16 = 6666;
/// The relay's MAC the tests give QEMU.
pub const RELAY_MAC: &str = "02:00:00:42:00:02";
/// The report key of the board's default configuration.
pub const DEFAULT_KEY: [u8; 32] = *b"lastgasp dev-only key -- change!";
/// Seconds between the relay's ARP refreshes in the default configuration.
pub const ARP_REFRESH_SECS: u64 = 5;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// What is missing to run the firmware tests, if anything.
pub fn missing_prerequisite() -> Option<String> {
    crate::prereq::missing(&[
        ("/usr/bin/qemu-system-arm", "qemu-system-arm"),
        ("/usr/bin/cargo", "cargo-web"),
        ("/usr/bin/rustc", "rustc-web"),
        ("/usr/lib/rustlib/src/rust/library/core", "rust-web-src"),
        ("/usr/bin/ping", "iputils-ping"),
    ])
}

/// True when the test can run. Otherwise prints why it is skipped, or panics
/// when [`REQUIRE_ENV`] is set (CI must not skip silently).
pub fn available(test: &str) -> bool {
    crate::prereq::available(test, "run the firmware in QEMU", missing_prerequisite())
}

/// The release image of [`BOARD`], built once per test process with
/// Debian's toolchain from inside the board directory (cargo only reads
/// rust-toolchain.toml and .cargo/config.toml from the current directory).
pub fn firmware() -> &'static Path {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let dir = repo_root().join("boards").join(BOARD);
        let mut cmd = Command::new("/usr/bin/cargo");
        cmd.current_dir(&dir)
            .args(["build", "--release", "--locked"]);
        for v in [
            "RUSTUP_TOOLCHAIN",
            "RUSTC_WRAPPER",
            "RUSTC_WORKSPACE_WRAPPER",
            "CARGO_TARGET_DIR",
            "RUSTFLAGS",
            "CARGO_BUILD_TARGET",
            "CARGO_ENCODED_RUSTFLAGS",
        ] {
            cmd.env_remove(v);
        }
        cmd.env("RUSTC", "/usr/bin/rustc");
        let out = cmd.output().expect("starting /usr/bin/cargo");
        assert!(
            out.status.success(),
            "firmware build failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir.join("target/thumbv7em-none-eabihf/release").join(BOARD)
    })
}

/// Decode a defmt log with the image's table (one line per frame).
pub fn decode_defmt(elf: &Path, log: &[u8]) -> String {
    let Ok(bytes) = std::fs::read(elf) else {
        return format!("(cannot read {})", elf.display());
    };
    let table = match defmt_decoder::Table::parse(&bytes) {
        Ok(Some(t)) => t,
        Ok(None) => return "(image has no .defmt section)".into(),
        Err(e) => return format!("(defmt table: {e})"),
    };
    let mut dec = table.new_stream_decoder();
    dec.received(log);
    let mut out = String::new();
    loop {
        match dec.decode() {
            Ok(frame) => {
                out.push_str(&frame.display(false).to_string());
                out.push('\n');
            }
            Err(defmt_decoder::DecodeError::UnexpectedEof) => break,
            Err(defmt_decoder::DecodeError::Malformed) => {
                out.push_str("(malformed defmt frame)\n");
                if !table.encoding().can_recover() {
                    break;
                }
            }
        }
    }
    out
}

/// How to boot the board.
#[derive(Clone, Debug)]
pub struct BootOptions {
    /// The tap (already in the namespace) the NIC attaches to.
    pub tap: String,
    /// The NIC's MAC.
    pub mac: String,
    /// QEMU's working directory, where the board's persistent storage lives
    /// (semihosting files); a fresh temporary one when None.
    pub workdir: Option<PathBuf>,
    /// Record every frame on the NIC in `nic.pcap` in the working directory.
    pub pcap: bool,
    /// Run with `-icount shift=0`: the virtual clock advances one nanosecond
    /// per guest instruction, so the board's latency stamps count
    /// instructions (deterministically, whatever the host's load).
    pub icount: bool,
}

impl BootOptions {
    /// Defaults for a tap name.
    pub fn new(tap: &str) -> Self {
        Self {
            tap: tap.into(),
            mac: RELAY_MAC.into(),
            workdir: None,
            pcap: true,
            icount: false,
        }
    }
}

/// A running board.
pub struct Board {
    child: Child,
    dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    console: UnixStream,
    signals: UnixStream,
    elf: PathBuf,
}

fn connect(path: &Path, child: &mut Child) -> UnixStream {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(s) = UnixStream::connect(path) {
            return s;
        }
        if let Ok(Some(st)) = child.try_wait() {
            panic!(
                "qemu exited early ({st}) before {} appeared",
                path.display()
            );
        }
        assert!(
            Instant::now() < deadline,
            "qemu did not create {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Board {
    /// Boot the firmware image in `ns`, its NIC on `opts.tap`.
    pub fn boot(ns: &NetNs, opts: BootOptions) -> Board {
        let elf = firmware().to_path_buf();
        let (tmp, dir) = match &opts.workdir {
            Some(d) => (None, d.clone()),
            None => {
                let t = tempfile::tempdir().expect("tempdir");
                let d = t.path().to_path_buf();
                (Some(t), d)
            }
        };
        let con = dir.join("console.sock");
        let sig = dir.join("signals.sock");
        let _ = std::fs::remove_file(&con);
        let _ = std::fs::remove_file(&sig);
        let mut cmd = ns.command("qemu-system-arm");
        cmd.current_dir(&dir)
            .args([
                "-M",
                "mps2-an386",
                "-nographic",
                "-monitor",
                "none",
                "-no-reboot",
            ])
            .args(["-semihosting-config", "enable=on,target=native"])
            .arg("-chardev")
            .arg(format!(
                "socket,id=con,path={},server=on,wait=off",
                con.display()
            ))
            .arg("-chardev")
            .arg(format!(
                "socket,id=sig,path={},server=on,wait=off",
                sig.display()
            ))
            .args([
                "-serial",
                "chardev:con",
                "-serial",
                "file:defmt.bin",
                "-serial",
                "chardev:sig",
            ])
            .arg("-nic")
            .arg(format!(
                "tap,id=n0,ifname={},script=no,downscript=no,mac={}",
                opts.tap, opts.mac
            ));
        if opts.icount {
            cmd.args(["-icount", "shift=0"]);
        }
        if opts.pcap {
            cmd.args(["-object", "filter-dump,id=f0,netdev=n0,file=nic.pcap"]);
        }
        cmd.arg("-kernel").arg(&elf);
        let log = std::fs::File::create(dir.join("qemu.log")).expect("qemu.log");
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("qemu.log"))
            .stderr(log);
        let mut child = cmd.spawn().expect("starting qemu-system-arm");
        let console = connect(&con, &mut child);
        let signals = connect(&sig, &mut child);
        Board {
            child,
            dir,
            _tmp: tmp,
            console,
            signals,
            elf,
        }
    }

    /// QEMU's working directory (storage files, pcap, logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Write console bytes as fast as the UART takes them (`baud` None), or
    /// paced like a serial line at `baud` (10 bits per byte).
    pub fn write_console(&mut self, bytes: &[u8], baud: Option<u32>) {
        match baud {
            None => self.console.write_all(bytes).expect("console socket"),
            Some(baud) => {
                let per_chunk = 64usize;
                let start = Instant::now();
                for (i, chunk) in bytes.chunks(per_chunk).enumerate() {
                    let due = start
                        + Duration::from_secs_f64((i * per_chunk * 10) as f64 / f64::from(baud));
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    self.console.write_all(chunk).expect("console socket");
                }
            }
        }
    }

    /// A second handle on the console UART's socket, for a pump that feeds
    /// it (a real host's serial output, in the end-to-end tests).
    pub fn console_writer(&self) -> std::io::Result<UnixStream> {
        self.console.try_clone()
    }

    /// Send one host-signal code byte (see the board's signals.rs).
    pub fn signal(&mut self, code: u8) {
        self.signals.write_all(&[code]).expect("signal socket");
    }

    /// The defmt log so far, decoded.
    pub fn defmt_log(&self) -> String {
        let raw = std::fs::read(self.dir.join("defmt.bin")).unwrap_or_default();
        decode_defmt(&self.elf, &raw)
    }

    /// QEMU's exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Stop QEMU (SIGTERM, then SIGKILL) and wait for it.
    pub fn stop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: pid is our own child, not yet reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while self.exited().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Board {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "---- defmt log of the relay ({}) ----\n{}",
                self.dir.display(),
                self.defmt_log()
            );
            let q = std::fs::read_to_string(self.dir.join("qemu.log")).unwrap_or_default();
            if !q.trim().is_empty() {
                eprintln!("---- qemu output ----\n{q}");
            }
        }
    }
}

/// Ping the relay from `ns` until it answers (the firmware has booted and
/// its stack is up); panics after `timeout`.
pub fn wait_until_up(ns: &NetNs, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        match ns.ping(RELAY_IP, 1) {
            Ok(_) => return,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("the relay never answered ping within {timeout:?}: {e}"),
        }
    }
}

impl Board {
    /// Wait until the decoded defmt log contains `needle`; returns whether it
    /// did within `timeout`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.defmt_log().contains(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A verified structured report, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedReport {
    /// Relay id.
    pub relay_id: String,
    /// Node name.
    pub node_name: String,
    /// Boot counter of the relay.
    pub boot_counter: u32,
    /// Report sequence within the boot.
    pub sequence: u32,
    /// What happened.
    pub kind: relay_core::detect::Kind,
    /// Suspected or confirmed.
    pub certainty: relay_core::detect::Certainty,
    /// The console line (or board signal text) that triggered it.
    pub trigger_line: String,
    /// Context lines sent before it.
    pub context_lines: u16,
    /// Which copy this is.
    pub repeat_index: u8,
}

/// What a collector made of the datagrams it received.
#[derive(Debug, Default)]
pub struct Decoded {
    /// Extended-netconsole records by sequence number: the unescaped text
    /// (fragments reassembled).
    pub lines: std::collections::BTreeMap<u64, Vec<u8>>,
    /// Verified reports, in arrival order.
    pub reports: Vec<OwnedReport>,
    /// Datagrams that did not decode or verify, with why.
    pub refused: Vec<String>,
    /// Extended-netconsole datagrams received more than once (same record
    /// and fragment offset).
    pub duplicates: usize,
}

/// Decode datagrams as a collector would: structured reports (verified with
/// `key`) and extended netconsole (with relay-core's decoders).
pub fn decode_datagrams(datagrams: &[Vec<u8>], key: &[u8; 32]) -> Decoded {
    use relay_core::netconsole::{escape, ExtRepr};
    use relay_core::report;
    let mut d = Decoded::default();
    let mut pieces: std::collections::BTreeMap<u64, Vec<(u32, Vec<u8>)>> = Default::default();
    for dg in datagrams {
        if report::is_report(dg) {
            match report::verify(dg, key) {
                Ok(r) => d.reports.push(OwnedReport {
                    relay_id: r.relay_id.into(),
                    node_name: r.node_name.into(),
                    boot_counter: r.boot_counter,
                    sequence: r.sequence,
                    kind: r.kind,
                    certainty: r.certainty,
                    trigger_line: r.trigger_line.into(),
                    context_lines: r.context_lines,
                    repeat_index: r.repeat_index,
                }),
                Err(e) => d.refused.push(format!("report refused: {e:?}")),
            }
            continue;
        }
        match ExtRepr::parse(dg) {
            Ok(r) => {
                let off = r.frag.map_or(0, |f| f.offset);
                let p = pieces.entry(r.seq).or_default();
                if p.iter().any(|(o, _)| *o == off) {
                    d.duplicates += 1;
                } else {
                    p.push((off, r.payload.to_vec()));
                }
            }
            Err(e) => d.refused.push(format!(
                "netconsole datagram refused: {e:?}: {:?}",
                String::from_utf8_lossy(dg)
            )),
        }
    }
    for (seq, mut parts) in pieces {
        parts.sort_by_key(|p| p.0);
        parts.dedup_by_key(|p| p.0);
        let payload: Vec<u8> = parts.into_iter().flat_map(|p| p.1).collect();
        let escaped = payload.split(|&b| b == b'\n').next().unwrap_or_default();
        let mut out = vec![0u8; escaped.len()];
        match escape::unescape_into(escaped, &mut out) {
            Ok(n) => {
                out.truncate(n);
                d.lines.insert(seq, out);
            }
            Err(e) => d.refused.push(format!("record {seq}: bad escape: {e:?}")),
        }
    }
    d
}

/// The lines relay-core's scanner makes of `console` (what the relay numbers
/// and forwards), computed on the host.
pub fn expected_lines(console: &[u8]) -> Vec<Vec<u8>> {
    let mut scanner = relay_core::scanner::ConsoleScanner::<1024>::new();
    let mut v = Vec::new();
    scanner.push(console, |l| v.push(l.text.to_vec()));
    v
}

/// Receive datagrams on `sock` until `done` says so (checked after each one)
/// and then `grace` more, or until `timeout`.
pub fn receive(
    sock: &std::net::UdpSocket,
    timeout: Duration,
    grace: Duration,
    mut done: impl FnMut(&[Vec<u8>]) -> bool,
) -> Vec<Vec<u8>> {
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("read timeout");
    let deadline = Instant::now() + timeout;
    let mut end = deadline;
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    while Instant::now() < end {
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            got.push(buf[..n].to_vec());
            if end == deadline && done(&got) {
                end = (Instant::now() + grace).min(deadline);
            }
        }
    }
    got
}

/// Whether `datagrams` hold a verified report matching `pred`.
pub fn has_report(
    datagrams: &[Vec<u8>],
    key: &[u8; 32],
    pred: impl Fn(&relay_core::report::Report<'_>) -> bool,
) -> bool {
    datagrams
        .iter()
        .filter(|d| relay_core::report::is_report(d))
        .filter_map(|d| relay_core::report::verify(d, key).ok())
        .any(|r| pred(&r))
}
