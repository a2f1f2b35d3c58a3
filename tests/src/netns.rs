//! Private network namespaces for tests: a namespace holds a tap device (the
//! emulated board's NIC) and the test's own sockets, and nothing else, so the
//! guest can reach nothing but the test. Created with `ip netns add`, deleted
//! on drop. Needs root.
use std::fs::File;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// Why a namespace operation failed.
#[derive(Debug)]
pub struct NsError(pub String);

impl std::fmt::Display for NsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for NsError {}

fn run(cmd: &mut Command) -> Result<Output, NsError> {
    let out = cmd.output().map_err(|e| NsError(format!("{cmd:?}: {e}")))?;
    if !out.status.success() {
        return Err(NsError(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out)
}

/// Whether this process may create namespaces and taps (is root).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A network namespace owned by the test.
pub struct NetNs {
    name: String,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl NetNs {
    /// Create `lg-<tag>-<pid>-<n>` with its loopback up.
    pub fn new(tag: &str) -> Result<Self, NsError> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("lg-{tag}-{}-{n}", std::process::id());
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = NetNs { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip <args>` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> Result<Output, NsError> {
        run(Command::new("ip")
            .args(["netns", "exec", &self.name, "ip"])
            .args(args))
    }

    /// A command that will run inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Create tap `dev` with MAC `mac` and address `cidr`, up, IPv6 off (so
    /// the guest sees only the test's own traffic).
    pub fn add_tap(&self, dev: &str, mac: &str, cidr: &str) -> Result<(), NsError> {
        self.ip(&["tuntap", "add", dev, "mode", "tap"])?;
        self.ip(&["link", "set", dev, "address", mac])?;
        let _ = run(self
            .command("sysctl")
            .args(["-qw", &format!("net.ipv6.conf.{dev}.disable_ipv6=1")]));
        self.ip(&["addr", "add", cidr, "dev", dev])?;
        self.ip(&["link", "set", dev, "up"])?;
        Ok(())
    }

    /// Change a device's MAC address.
    pub fn set_mac(&self, dev: &str, mac: &str) -> Result<(), NsError> {
        self.ip(&["link", "set", dev, "address", mac]).map(|_| ())
    }

    /// Run `f` on a thread that has entered the namespace; sockets it opens
    /// stay in the namespace wherever they are used afterwards.
    pub fn within<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> std::io::Result<R> + Send + 'static,
    ) -> Result<R, NsError> {
        let path = format!("/run/netns/{}", self.name);
        let ns = File::open(&path).map_err(|e| NsError(format!("{path}: {e}")))?;
        std::thread::spawn(move || {
            // SAFETY: setns on a namespace fd affects only this thread.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(NsError(format!(
                    "setns: {}",
                    std::io::Error::last_os_error()
                )));
            }
            f().map_err(|e| NsError(format!("in namespace: {e}")))
        })
        .join()
        .map_err(|_| NsError("namespace thread panicked".into()))?
    }

    /// A UDP socket bound to `addr` inside the namespace.
    pub fn udp_socket(&self, addr: &str) -> Result<UdpSocket, NsError> {
        let addr = addr.to_string();
        self.within(move || UdpSocket::bind(addr))
    }

    /// `ping -c count` from the namespace; Ok(output) when at least one echo
    /// came back (ping's own exit status), so callers count the replies.
    pub fn ping(&self, ip: &str, count: u32) -> Result<String, NsError> {
        let out = run(self
            .command("ping")
            .args(["-n", "-c", &count.to_string(), "-W", "2", ip]))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The MAC the namespace's neighbour table holds for `ip` on `dev`.
    pub fn neighbour(&self, dev: &str, ip: &str) -> Option<String> {
        let out = self.ip(&["neigh", "show", "dev", dev, "to", ip]).ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut words = text.split_whitespace();
        words.by_ref().find(|w| *w == "lladdr")?;
        words.next().map(str::to_string)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}
