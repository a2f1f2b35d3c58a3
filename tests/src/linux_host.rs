//! A real Linux host for the end-to-end tests and the demo: Debian's own
//! `linux-image-amd64` kernel with a busybox initramfs, in
//! `qemu-system-x86_64` under TCG (no KVM).
//!
//! - The kernel and busybox come from Debian's packages, fetched with
//!   `apt-get download` into a cache (`target/linux-host/`) and only
//!   extracted, never installed on this machine. [`prepare`] is idempotent:
//!   once the kernel and the initramfs exist it touches neither apt nor the
//!   network.
//! - The initramfs's `/init` reads its orders from the kernel command line
//!   ([`HostConfig`]): configure `eth0`, load `netconsole.ko` (extended
//!   format) aimed at a collector, print a heartbeat for a few seconds, then
//!   panic (`echo c > /proc/sysrq-trigger`), reboot, or keep running.
//! - `ttyS0` is a Unix socket that a pump thread reads: every byte is kept
//!   with the instant it left the host's UART, and copied to an optional
//!   sink, such as the relay firmware's console UART, exactly as a BMC sees
//!   its host's serial console.
//! - The NIC is a tap in a network namespace (never slirp); the QEMU monitor
//!   is a Unix socket, so a test can freeze the VM (`stop`).
use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub mod cpio;

/// Set to 1 (as `cargo xtask test` does) to make a missing prerequisite a
/// failure instead of a skip.
pub use crate::prereq::REQUIRE_ENV;
/// Overrides the kernel release (default: what `linux-image-amd64` depends on).
pub const KERNEL_RELEASE_ENV: &str = "LASTGASP_KERNEL_RELEASE";
/// The line every panic of this host prints, verbatim from the kernel.
pub const SYSRQ_PANIC_LINE: &str = "Kernel panic - not syncing: sysrq triggered crash";
/// The prefix of every line the host's `/init` prints (through `/dev/kmsg`,
/// so the lines reach the serial console and netconsole alike).
pub const INIT_TAG: &str = "lastgasp-host:";
/// The MAC of the host's e1000 NIC unless configured otherwise.
pub const HOST_MAC: &str = "52:54:00:99:00:02";

/// Kernel modules the initramfs carries, by path below `lib/modules/<release>/kernel`.
const MODULES: &[&str] = &[
    "fs/configfs/configfs.ko",
    "drivers/net/ethernet/intel/e1000/e1000.ko",
    "drivers/net/netconsole.ko",
];

/// Why the host could not be prepared or run.
#[derive(Debug)]
pub struct HostError(pub String);

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for HostError {}

fn err(msg: impl Into<String>) -> HostError {
    HostError(msg.into())
}

fn io_err(what: impl fmt::Display) -> impl FnOnce(io::Error) -> HostError {
    move |e| HostError(format!("{what}: {e}"))
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The default artifact cache: `target/linux-host/` of the workspace.
pub fn default_cache_dir() -> PathBuf {
    repo_root().join("target").join("linux-host")
}

/// What is missing to boot the host, if anything (besides the artifacts,
/// which [`prepare`] fetches).
pub fn missing_prerequisite() -> Option<String> {
    crate::prereq::missing(&[
        ("/usr/bin/qemu-system-x86_64", "qemu-system-x86"),
        ("/usr/bin/dpkg-deb", "dpkg"),
        ("/usr/bin/apt-get", "apt"),
        ("/usr/bin/tar", "tar"),
    ])
}

/// True when a test needing the host can run; otherwise prints why it is
/// skipped, or panics when [`REQUIRE_ENV`] is 1 (CI must not skip silently).
pub fn available(test: &str) -> bool {
    crate::prereq::available(test, "boot the Linux host", missing_prerequisite())
}

/// A bootable host: kernel image and initramfs.
#[derive(Clone, Debug)]
pub struct Artifacts {
    /// Kernel release, e.g. `6.1.0-56-amd64`.
    pub release: String,
    /// Debian package version of the kernel, e.g. `6.1.192-2`.
    pub package_version: String,
    /// `vmlinuz`.
    pub kernel: PathBuf,
    /// The busybox initramfs (uncompressed newc cpio).
    pub initrd: PathBuf,
}

/// [`prepare_in`] the default cache, once per process.
pub fn prepare() -> Result<&'static Artifacts, HostError> {
    static ONCE: OnceLock<Result<Artifacts, String>> = OnceLock::new();
    ONCE.get_or_init(|| {
        prepare_in(&default_cache_dir(), &mut |m| eprintln!("linux-host: {m}")).map_err(|e| e.0)
    })
    .as_ref()
    .map_err(|e| err(e.clone()))
}

fn run(cmd: &mut Command) -> Result<String, HostError> {
    let out = cmd
        .output()
        .map_err(io_err(format!("{:?}", cmd.get_program())))?;
    if !out.status.success() {
        return Err(err(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The release `linux-image-amd64` depends on, from apt's cache.
fn resolve_release() -> Result<String, HostError> {
    if let Ok(r) = std::env::var(KERNEL_RELEASE_ENV) {
        return Ok(r);
    }
    let deps = run(Command::new("apt-cache").args(["depends", "linux-image-amd64"]))?;
    deps.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: linux-image-"))
        .find(|r| r.starts_with(|c: char| c.is_ascii_digit()))
        .map(str::to_string)
        .ok_or_else(|| err("apt-cache: linux-image-amd64 depends on no linux-image-<release> (apt-get update?)"))
}

fn find_deb(dir: &Path, prefix: &str) -> Option<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix) && n.ends_with(".deb"))
        })
        .collect();
    v.sort();
    v.pop()
}

/// Fetch (once) and extract the kernel, its netconsole/e1000 modules and
/// busybox into `cache`, and build the initramfs. Idempotent: with a
/// complete cache (kernel, initramfs built from the current `/init`) it runs
/// no command at all. `progress` hears about the slow steps.
pub fn prepare_in(cache: &Path, progress: &mut dyn FnMut(&str)) -> Result<Artifacts, HostError> {
    std::fs::create_dir_all(cache).map_err(io_err(cache.display()))?;
    let pinned = cache.join("kernel-release");
    let release = match std::env::var(KERNEL_RELEASE_ENV) {
        Ok(r) => r,
        Err(_) => match std::fs::read_to_string(&pinned) {
            Ok(r) if !r.trim().is_empty() => r.trim().to_string(),
            _ => resolve_release()?,
        },
    };
    let root = cache.join(&release);
    let kernel = root.join(format!("boot/vmlinuz-{release}"));
    let busybox = root.join("bin/busybox");
    let initrd = cache.join(format!("initramfs-{release}.cpio"));
    let stamp = cache.join(format!("initramfs-{release}.stamp"));
    let want_stamp = format!("{:016x}", fnv1a(INIT_SCRIPT.as_bytes()));
    let version_file = root.join("package-version");

    let have_files = kernel.exists()
        && busybox.exists()
        && MODULES
            .iter()
            .all(|m| module_path(&root, &release, m).exists());
    if !have_files {
        let debs = cache.join("debs");
        std::fs::create_dir_all(&debs).map_err(io_err(debs.display()))?;
        let kpkg = format!("linux-image-{release}");
        let mut need = Vec::new();
        if find_deb(&debs, &format!("{kpkg}_")).is_none() {
            need.push(kpkg.clone());
        }
        if find_deb(&debs, "busybox-static_").is_none() {
            need.push("busybox-static".to_string());
        }
        if !need.is_empty() {
            progress(&format!(
                "downloading {} from Debian (apt-get download)",
                need.join(" ")
            ));
            run(Command::new("apt-get")
                .current_dir(&debs)
                .args(["download", "-q"])
                .args(&need))?;
        }
        let kdeb = find_deb(&debs, &format!("{kpkg}_"))
            .ok_or_else(|| err(format!("{kpkg}: no .deb after download")))?;
        let bdeb = find_deb(&debs, "busybox-static_")
            .ok_or_else(|| err("busybox-static: no .deb after download"))?;
        progress(&format!(
            "extracting the kernel {release} and its netconsole, e1000 and configfs modules"
        ));
        let tmp = cache.join(format!("{release}.partial"));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(io_err(tmp.display()))?;
        let mut members = vec![format!("./boot/vmlinuz-{release}")];
        members.extend(
            MODULES
                .iter()
                .map(|m| format!("./lib/modules/{release}/kernel/{m}")),
        );
        extract(&kdeb, &tmp, &members)?;
        extract(&bdeb, &tmp, &["./bin/busybox".to_string()])?;
        let version = run(Command::new("dpkg-deb").arg("-f").arg(&kdeb).arg("Version"))?;
        std::fs::write(tmp.join("package-version"), version.trim())
            .map_err(io_err("package-version"))?;
        let _ = std::fs::remove_dir_all(&root);
        std::fs::rename(&tmp, &root).map_err(io_err(root.display()))?;
        std::fs::write(&pinned, &release).map_err(io_err(pinned.display()))?;
    }
    let package_version = std::fs::read_to_string(&version_file)
        .unwrap_or_default()
        .trim()
        .to_string();

    let fresh = initrd.exists()
        && std::fs::read_to_string(&stamp).ok().as_deref() == Some(want_stamp.as_str());
    if !fresh {
        progress("building the busybox initramfs");
        let bytes = build_initramfs(&root, &release)?;
        let tmp = initrd.with_extension("cpio.tmp");
        std::fs::write(&tmp, bytes).map_err(io_err(tmp.display()))?;
        std::fs::rename(&tmp, &initrd).map_err(io_err(initrd.display()))?;
        std::fs::write(&stamp, &want_stamp).map_err(io_err(stamp.display()))?;
    }
    Ok(Artifacts {
        release,
        package_version,
        kernel,
        initrd,
    })
}

fn module_path(root: &Path, release: &str, m: &str) -> PathBuf {
    root.join(format!("lib/modules/{release}/kernel/{m}"))
}

/// `dpkg-deb --fsys-tarfile deb | tar -x members`: only the few files we
/// need, not the 400 MB module tree.
fn extract(deb: &Path, into: &Path, members: &[String]) -> Result<(), HostError> {
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io_err("dpkg-deb"))?;
    let stdout = dpkg
        .stdout
        .take()
        .ok_or_else(|| err("dpkg-deb: no stdout"))?;
    let tar = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(into)
        .args(members)
        .stdin(stdout)
        .output();
    let status = dpkg.wait().map_err(io_err("dpkg-deb"))?;
    let tar = tar.map_err(io_err("tar"))?;
    if !status.success() || !tar.status.success() {
        return Err(err(format!(
            "extracting {} failed: {}",
            deb.display(),
            String::from_utf8_lossy(&tar.stderr).trim()
        )));
    }
    Ok(())
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The host's `/init`. Orders come from the kernel command line, so one
/// initramfs serves every scenario. Markers go through `/dev/kmsg` so the
/// serial console and netconsole see the same lines.
pub const INIT_SCRIPT: &str = r#"#!/bin/busybox sh
# /init of lastgasp's test host (built by tests/src/linux_host.rs).
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
lgmode=idle; lgip=; lgnc=; lgrun=3
for kv in $(cat /proc/cmdline); do
  case "$kv" in
    lgmode=*) lgmode="${kv#lgmode=}";;
    lgip=*) lgip="${kv#lgip=}";;
    lgnc=*) lgnc="${kv#lgnc=}";;
    lgrun=*) lgrun="${kv#lgrun=}";;
  esac
done
say() { printf '<5>lastgasp-host: %s\n' "$*" > /dev/kmsg; }
# every message reaches every console (serial and netconsole)
echo 8 > /proc/sys/kernel/printk
say "boot_id=$(cat /proc/sys/kernel/random/boot_id) mode=$lgmode"
insmod /lib/modules/e1000.ko
if [ -n "$lgip" ]; then
  ip link set lo up
  ip addr add "$lgip" dev eth0
  ip link set eth0 up
  i=0
  while [ "$(cat /sys/class/net/eth0/carrier 2>/dev/null)" != 1 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
  say "eth0 $lgip carrier=$(cat /sys/class/net/eth0/carrier 2>/dev/null)"
fi
if [ -n "$lgnc" ]; then
  insmod /lib/modules/configfs.ko
  if insmod /lib/modules/netconsole.ko netconsole="$lgnc"; then say "netconsole $lgnc"; else say "netconsole FAILED"; fi
fi
say "up"
i=0
while [ $i -lt "$lgrun" ]; do i=$((i+1)); sleep 1; say "heartbeat $i/$lgrun"; done
case "$lgmode" in
  panic)
    say "panicking now (echo c > /proc/sysrq-trigger)"
    echo 1 > /proc/sys/kernel/sysrq
    echo c > /proc/sysrq-trigger
    ;;
  reboot)
    say "rebooting now"
    reboot -f
    ;;
esac
i=0
while :; do sleep 5; i=$((i+5)); say "alive ${i}s"; done
"#;

fn build_initramfs(root: &Path, release: &str) -> Result<Vec<u8>, HostError> {
    let read = |p: PathBuf| std::fs::read(&p).map_err(io_err(p.display()));
    let mut w = cpio::Writer::new(Vec::with_capacity(3 << 20));
    let e = |r: io::Result<()>| r.map_err(io_err("cpio"));
    for d in ["bin", "dev", "proc", "sys", "tmp", "lib", "lib/modules"] {
        e(w.dir(d, 0o755))?;
    }
    e(w.char_dev("dev/console", 0o600, 5, 1))?;
    e(w.char_dev("dev/null", 0o666, 1, 3))?;
    e(w.file("bin/busybox", 0o755, &read(root.join("bin/busybox"))?))?;
    e(w.symlink("bin/sh", "busybox"))?;
    for m in MODULES {
        let name = Path::new(m)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(m);
        e(w.file(
            &format!("lib/modules/{name}"),
            0o644,
            &read(module_path(root, release, m))?,
        ))?;
    }
    e(w.file("init", 0o755, INIT_SCRIPT.as_bytes()))?;
    w.finish().map_err(io_err("cpio"))
}

/// What the host does once it is up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Heartbeat for `run_secs`, then `echo c > /proc/sysrq-trigger`.
    Panic,
    /// Heartbeat for `run_secs`, then `reboot -f` (a new boot, a new boot id).
    Reboot,
    /// Keep running.
    Idle,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Panic => "panic",
            Mode::Reboot => "reboot",
            Mode::Idle => "idle",
        }
    }
}

/// How to boot the host.
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// What `/init` does after its heartbeat.
    pub mode: Mode,
    /// Seconds of heartbeat before the action.
    pub run_secs: u32,
    /// The network namespace QEMU runs in (`ip netns exec`); None runs it in
    /// the caller's namespace.
    pub netns: Option<String>,
    /// The tap (in that namespace) the e1000 NIC attaches to; None: no NIC.
    pub tap: Option<String>,
    /// The NIC's MAC.
    pub mac: String,
    /// `eth0`'s address, e.g. `10.99.0.2/24`.
    pub ip: Option<String>,
    /// The `netconsole=` module parameter, e.g.
    /// `+6666@10.99.0.2/eth0,6666@10.99.0.1/02:00:00:99:00:01` (leading `+`:
    /// extended format); None: netconsole is not loaded.
    pub netconsole: Option<String>,
    /// The kernel's `panic=` (seconds before rebooting after a panic; 0 hangs).
    pub panic_reboot_secs: u32,
    /// Guest CPUs (TCG threads).
    pub smp: u32,
    /// Guest memory in MiB.
    pub mem_mb: u32,
    /// Where the sockets and logs go; a fresh temporary directory when None.
    pub workdir: Option<PathBuf>,
}

impl HostConfig {
    /// A host that panics after `run_secs`, with no NIC.
    pub fn new(mode: Mode) -> Self {
        Self {
            mode,
            run_secs: 2,
            netns: None,
            tap: None,
            mac: HOST_MAC.into(),
            ip: None,
            netconsole: None,
            panic_reboot_secs: 0,
            smp: 1,
            mem_mb: 256,
            workdir: None,
        }
    }

    /// The `netconsole=` parameter for extended netconsole from `ip` on
    /// `eth0` to `collector_ip:port` at `collector_mac`.
    pub fn extended_netconsole(
        local_ip: &str,
        collector_ip: &str,
        port: u16,
        collector_mac: &str,
    ) -> String {
        format!("+{port}@{local_ip}/eth0,{port}@{collector_ip}/{collector_mac}")
    }

    fn cmdline(&self) -> String {
        let mut c = format!(
            "console=ttyS0,115200 panic={} printk.devkmsg=on lgmode={} lgrun={}",
            self.panic_reboot_secs,
            self.mode.as_str(),
            self.run_secs
        );
        if let Some(ip) = &self.ip {
            c.push_str(&format!(" lgip={ip}"));
        }
        if let Some(nc) = &self.netconsole {
            c.push_str(&format!(" lgnc={nc}"));
        }
        c
    }
}

/// A place the host's serial output is copied to as it arrives (the relay's
/// console UART, a file, ...). Write errors are counted, never fatal: a
/// stopped relay must not stop the host.
pub type SerialSink = Box<dyn Write + Send>;

#[derive(Default)]
struct SerialState {
    bytes: Vec<u8>,
    /// (end offset of a chunk in `bytes`, when it was read off the UART).
    chunks: Vec<(usize, Instant)>,
    closed: bool,
    sink_errors: u64,
    sink_dropped: u64,
}

/// Everything the host wrote to `ttyS0`, with arrival times.
#[derive(Default)]
pub struct SerialLog {
    state: Mutex<SerialState>,
    grew: Condvar,
}

impl SerialLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, SerialState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The output so far, lossily decoded.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.lock().bytes).into_owned()
    }

    /// How many bytes have arrived.
    pub fn len(&self) -> usize {
        self.lock().bytes.len()
    }

    /// Whether nothing has arrived yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many writes to the sink failed.
    pub fn sink_errors(&self) -> u64 {
        self.lock().sink_errors
    }

    /// Bytes the sink lost because it could not keep up (its queue was full).
    pub fn sink_dropped(&self) -> u64 {
        self.lock().sink_dropped
    }

    /// When the first occurrence of `needle` at or after byte `from` left
    /// the UART (the arrival of the chunk holding its last byte), with the
    /// offset just past it.
    pub fn find_from(&self, from: usize, needle: &str) -> Option<(usize, Instant)> {
        let s = self.lock();
        find_in(&s, from, needle.as_bytes())
    }

    /// Wait until `needle` appears at or after byte `from`; None after
    /// `timeout` or when the host's serial port closed (QEMU exited) first.
    pub fn wait_from(
        &self,
        from: usize,
        needle: &str,
        timeout: Duration,
    ) -> Option<(usize, Instant)> {
        let deadline = Instant::now() + timeout;
        let mut s = self.lock();
        loop {
            if let Some(hit) = find_in(&s, from, needle.as_bytes()) {
                return Some(hit);
            }
            let now = Instant::now();
            if s.closed || now >= deadline {
                return None;
            }
            s = self
                .grew
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// [`SerialLog::wait_from`] the beginning.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> Option<Instant> {
        self.wait_from(0, needle, timeout).map(|h| h.1)
    }

    fn push(&self, chunk: &[u8], at: Instant) {
        let mut s = self.lock();
        s.bytes.extend_from_slice(chunk);
        let end = s.bytes.len();
        s.chunks.push((end, at));
        drop(s);
        self.grew.notify_all();
    }

    fn close(&self) {
        self.lock().closed = true;
        self.grew.notify_all();
    }
}

fn find_in(s: &SerialState, from: usize, needle: &[u8]) -> Option<(usize, Instant)> {
    let hay = s.bytes.get(from..)?;
    let pos = hay.windows(needle.len().max(1)).position(|w| w == needle)?;
    let end = from + pos + needle.len();
    // The first chunk whose end covers the needle's last byte.
    let idx = s.chunks.partition_point(|(e, _)| *e < end);
    s.chunks.get(idx).map(|(_, t)| (end, *t))
}

/// A running host.
pub struct LinuxHost {
    child: Child,
    cfg: HostConfig,
    dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    serial: Arc<SerialLog>,
    serial_in: UnixStream,
    monitor: UnixStream,
    started: Instant,
    pump: Option<std::thread::JoinHandle<()>>,
}

fn connect(path: &Path, child: &mut Child, timeout: Duration) -> Result<UnixStream, HostError> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(s) = UnixStream::connect(path) {
            return Ok(s);
        }
        if let Ok(Some(st)) = child.try_wait() {
            return Err(err(format!(
                "qemu-system-x86_64 exited ({st}) before {} appeared",
                path.display()
            )));
        }
        if Instant::now() >= deadline {
            return Err(err(format!(
                "qemu-system-x86_64 did not create {}",
                path.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl LinuxHost {
    /// Boot `art` as `cfg` says; the serial output is also copied to `sink`.
    pub fn boot(
        art: &Artifacts,
        cfg: HostConfig,
        sink: Option<SerialSink>,
    ) -> Result<Self, HostError> {
        let (tmp, dir) = match &cfg.workdir {
            Some(d) => {
                std::fs::create_dir_all(d).map_err(io_err(d.display()))?;
                (None, d.clone())
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix("lg-host-")
                    .tempdir()
                    .map_err(io_err("tempdir"))?;
                let d = t.path().to_path_buf();
                (Some(t), d)
            }
        };
        let ser = dir.join("ttyS0.sock");
        let mon = dir.join("monitor.sock");
        let _ = std::fs::remove_file(&ser);
        let _ = std::fs::remove_file(&mon);
        let mut cmd = match &cfg.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "qemu-system-x86_64"]);
                c
            }
            None => Command::new("qemu-system-x86_64"),
        };
        cmd.current_dir(&dir)
            .args([
                "-nodefaults",
                "-no-user-config",
                "-accel",
                "tcg",
                "-cpu",
                "max",
                "-nographic",
            ])
            .args(["-smp", &cfg.smp.to_string(), "-m", &cfg.mem_mb.to_string()])
            // wait=on: QEMU goes on (and creates the monitor socket) only
            // once the pump is connected, so no byte of the boot is lost.
            .arg("-chardev")
            .arg(format!(
                "socket,id=ser,path={},server=on,wait=on",
                ser.display()
            ))
            .args(["-serial", "chardev:ser"])
            .arg("-chardev")
            .arg(format!(
                "socket,id=mon,path={},server=on,wait=off",
                mon.display()
            ))
            .args(["-mon", "chardev=mon,mode=readline"])
            .arg("-kernel")
            .arg(&art.kernel)
            .arg("-initrd")
            .arg(&art.initrd)
            .arg("-append")
            .arg(cfg.cmdline());
        if cfg.mode != Mode::Reboot && cfg.panic_reboot_secs == 0 {
            cmd.arg("-no-reboot");
        }
        match &cfg.tap {
            Some(tap) => {
                cmd.arg("-netdev")
                    .arg(format!("tap,id=n0,ifname={tap},script=no,downscript=no"))
                    .arg("-device")
                    .arg(format!("e1000,netdev=n0,mac={},romfile=", cfg.mac));
            }
            None => {
                cmd.args(["-nic", "none"]);
            }
        }
        let log = std::fs::File::create(dir.join("qemu.log")).map_err(io_err("qemu.log"))?;
        let log2 = log.try_clone().map_err(io_err("qemu.log"))?;
        cmd.stdin(Stdio::null()).stdout(log).stderr(log2);
        let mut child = cmd.spawn().map_err(io_err("starting qemu-system-x86_64"))?;
        let started = Instant::now();
        let serial_stream = match connect(&ser, &mut child, Duration::from_secs(30)) {
            Ok(s) => s,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(err(format!("{e}; qemu said: {}", read_log(&dir))));
            }
        };
        let monitor = match connect(&mon, &mut child, Duration::from_secs(30)) {
            Ok(m) => m,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(err(format!("{e}; qemu said: {}", read_log(&dir))));
            }
        };
        let serial_in = serial_stream.try_clone().map_err(io_err("ttyS0 socket"))?;
        let serial = Arc::new(SerialLog::default());
        let pump = {
            let serial = Arc::clone(&serial);
            let file = std::fs::File::create(dir.join("serial.log")).ok();
            std::thread::Builder::new()
                .name("ttyS0-pump".into())
                .spawn(move || pump(serial_stream, serial, sink, file))
                .map_err(io_err("pump thread"))?
        };
        let mut monitor = monitor;
        // The greeting: a banner line, then the first prompt.
        let _ = read_until_prompt(&mut monitor, false, Duration::from_secs(10));
        Ok(Self {
            child,
            cfg,
            dir,
            _tmp: tmp,
            serial,
            serial_in,
            monitor,
            started,
            pump: Some(pump),
        })
    }

    /// The configuration it was booted with.
    pub fn config(&self) -> &HostConfig {
        &self.cfg
    }

    /// The serial console log.
    pub fn serial(&self) -> &Arc<SerialLog> {
        &self.serial
    }

    /// When QEMU was started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// QEMU's working directory (sockets, serial.log, qemu.log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Type on the host's serial console.
    pub fn write_serial(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.serial_in.write_all(bytes)
    }

    /// The boot id `/init` printed for the boot that started at byte `from`
    /// of the serial log.
    pub fn boot_id_from(&self, from: usize, timeout: Duration) -> Option<String> {
        let (end, _) = self.serial.wait_from(from, "boot_id=", timeout)?;
        // The id may still be on its way: the marker can end one read of the
        // UART and the id start the next. Wait for the end of its line.
        self.serial.wait_from(end, "\n", Duration::from_secs(10))?;
        let text = self.serial.text();
        let id: String = text
            .get(end..)?
            .chars()
            .take_while(|c| c.is_ascii_hexdigit() || *c == '-')
            .collect();
        (id.len() == 36).then_some(id)
    }

    /// Send a QEMU monitor command (`stop`, `cont`, `system_reset`, ...)
    /// and return its reply.
    pub fn monitor(&mut self, command: &str) -> Result<String, HostError> {
        self.monitor
            .write_all(format!("{command}\n").as_bytes())
            .map_err(io_err("monitor"))?;
        // The reply is the echoed command and its newline, any output, then
        // the next prompt.
        read_until_prompt(&mut self.monitor, true, Duration::from_secs(10))
    }

    /// Freeze the VM as a hard hang would: no instruction runs, no byte
    /// leaves the UART or the NIC.
    pub fn freeze(&mut self) -> Result<(), HostError> {
        self.monitor("stop").map(|_| ())
    }

    /// Whether QEMU has exited.
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// Power the host off: SIGTERM, then SIGKILL, then wait (only our own child).
    pub fn power_off(&mut self) {
        if !self.exited() {
            let pid = self.child.id() as libc::pid_t;
            // SAFETY: pid is our own child, not yet reaped.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(3);
            while !self.exited() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if !self.exited() {
                let _ = self.child.kill();
            }
        }
        let _ = self.child.wait();
        if let Some(p) = self.pump.take() {
            let _ = p.join();
        }
    }

    /// QEMU's own output (errors).
    pub fn qemu_log(&self) -> String {
        read_log(&self.dir)
    }
}

/// Read the monitor until its `(qemu) ` prompt (after a newline when
/// `after_newline`, so a prompt left over from before does not count).
fn read_until_prompt(
    mon: &mut UnixStream,
    after_newline: bool,
    timeout: Duration,
) -> Result<String, HostError> {
    let _ = mon.set_read_timeout(Some(Duration::from_millis(200)));
    let deadline = Instant::now() + timeout;
    let mut reply = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        let seen_newline = reply.contains(&b'\n');
        if reply.ends_with(b"(qemu) ") && (seen_newline || !after_newline) {
            return Ok(String::from_utf8_lossy(&reply).into_owned());
        }
        if Instant::now() >= deadline {
            return Err(err(format!(
                "monitor: no prompt within {timeout:?} (got {:?})",
                String::from_utf8_lossy(&reply)
            )));
        }
        match mon.read(&mut buf) {
            Ok(0) => return Err(err("monitor: QEMU closed the socket")),
            Ok(n) => reply.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(err(format!("monitor: {e}"))),
        }
    }
}

fn read_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("qemu.log")).unwrap_or_default()
}

impl Drop for LinuxHost {
    fn drop(&mut self) {
        self.power_off();
        if std::thread::panicking() {
            let text = self.serial.text();
            let tail: String = text
                .lines()
                .rev()
                .take(60)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            eprintln!(
                "---- last serial lines of the Linux host ({}) ----\n{tail}",
                self.dir.display()
            );
            let q = self.qemu_log();
            if !q.trim().is_empty() {
                eprintln!("---- qemu-system-x86_64 output ----\n{q}");
            }
        }
    }
}

/// Chunks of serial output queued for the sink, at most.
const SINK_QUEUE: usize = 1024;

/// Read the UART until QEMU closes it: keep, time-stamp and hand every
/// chunk to the sink's own thread. A sink that cannot keep up (a relay UART
/// that overruns) loses chunks, counted, and never stalls the host.
fn pump(
    mut from: UnixStream,
    log: Arc<SerialLog>,
    sink: Option<SerialSink>,
    mut file: Option<std::fs::File>,
) {
    let (tx, sink_thread) = match sink {
        Some(mut sink) => {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(SINK_QUEUE);
            let log = Arc::clone(&log);
            let t = std::thread::Builder::new()
                .name("ttyS0-sink".into())
                .spawn(move || {
                    for chunk in rx {
                        if sink.write_all(&chunk).is_err() {
                            log.lock().sink_errors += 1;
                        }
                    }
                });
            match t {
                Ok(t) => (Some(tx), Some(t)),
                Err(_) => (None, None),
            }
        }
        None => (None, None),
    };
    let mut buf = [0u8; 4096];
    loop {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let at = Instant::now();
                let chunk = &buf[..n];
                if let Some(tx) = &tx {
                    if tx.try_send(chunk.to_vec()).is_err() {
                        log.lock().sink_dropped += n as u64;
                    }
                }
                log.push(chunk, at);
                if let Some(f) = file.as_mut() {
                    let _ = f.write_all(chunk);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    drop(tx);
    if let Some(t) = sink_thread {
        let _ = t.join();
    }
    log.close();
}
