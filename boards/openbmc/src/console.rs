//! Host console input: obmc-console-server's abstract Unix socket, or a tty
//! (or pty) read directly.
//!
//! obmc-console-server copies every byte of the host UART to each client of
//! `@obmc-console.<id>` (a stream socket in the abstract namespace); this relay
//! is one more such client, like `obmc-console-client`, that never writes. A
//! reader thread per source reconnects with backoff whenever the server
//! restarts or the tty goes away, and hands chunks to the relay loop through a
//! bounded queue. A full queue drops the chunk and counts it: the reader never
//! blocks on the relay.
use crate::config::ConsoleSource;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

/// Bytes read per chunk (obmc-console's own ring buffer hands out up to 4 KiB).
pub const CHUNK: usize = 4096;

/// What the reader thread tells the relay loop.
#[derive(Debug)]
pub enum ConsoleEvent {
    /// Console bytes, in order.
    Bytes(Vec<u8>),
    /// The source is open (after start or a reconnect).
    Connected,
    /// The source went away; the reader retries with backoff.
    Lost(String),
}

/// Counters shared by the reader and whoever reports stats.
#[derive(Debug, Default)]
pub struct ConsoleStats {
    /// Bytes read from the source.
    pub bytes: AtomicU64,
    /// Bytes dropped because the relay loop's queue was full.
    pub dropped_bytes: AtomicU64,
    /// Times the source was (re)opened.
    pub connects: AtomicU64,
}

/// The `termios` speed constant for a line speed in baud.
pub fn baud_constant(baud: u32) -> Option<libc::speed_t> {
    Some(match baud {
        1200 => libc::B1200,
        2400 => libc::B2400,
        4800 => libc::B4800,
        9600 => libc::B9600,
        19200 => libc::B19200,
        38400 => libc::B38400,
        57600 => libc::B57600,
        115200 => libc::B115200,
        230400 => libc::B230400,
        460800 => libc::B460800,
        921600 => libc::B921600,
        1500000 => libc::B1500000,
        _ => return None,
    })
}

/// Open a console source once.
pub fn open(source: &ConsoleSource) -> io::Result<Box<dyn Read + Send>> {
    match source {
        ConsoleSource::ObmcConsole { name } => {
            let addr = SocketAddr::from_abstract_name(name.as_bytes())?;
            let stream = UnixStream::connect_addr(&addr)?;
            // We only listen; telling the server so keeps our socket from ever
            // holding bytes destined for the host.
            stream.shutdown(std::net::Shutdown::Write)?;
            Ok(Box::new(stream))
        }
        ConsoleSource::Tty { path, baud } => {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
                .open(path)?;
            set_raw(&file, *baud)?;
            Ok(Box::new(file))
        }
    }
}

/// Raw mode: no echo, no CR/LF translation, no signals, byte-at-a-time reads,
/// so the scanner sees exactly what the host sent.
fn set_raw(file: &File, baud: Option<u32>) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: termios is plain old data; tcgetattr fills it for a valid fd.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: fd is open for the duration of the call; t is a valid pointer.
    if unsafe { libc::tcgetattr(fd, &mut t) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: t was initialised by tcgetattr.
    unsafe { libc::cfmakeraw(&mut t) };
    t.c_cflag |= libc::CREAD | libc::CLOCAL;
    t.c_cc[libc::VMIN] = 1;
    t.c_cc[libc::VTIME] = 0;
    if let Some(b) = baud {
        let speed = baud_constant(b).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "unsupported baud"))?;
        // SAFETY: t is a valid termios.
        if unsafe { libc::cfsetispeed(&mut t, speed) } != 0 || unsafe { libc::cfsetospeed(&mut t, speed) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: fd is valid; t is a valid termios.
    if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &t) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Start the reader thread for `source`. It runs until `tx`'s receiver is gone.
pub fn spawn_reader(
    source: ConsoleSource,
    tx: SyncSender<crate::relay_loop::Input>,
    stats: Arc<ConsoleStats>,
) -> io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("console".into())
        .spawn(move || reader(source, tx, stats))
}

/// Pass on a state change without blocking (a full queue already carries
/// newer news); false once the relay loop is gone.
fn notify(tx: &SyncSender<crate::relay_loop::Input>, ev: ConsoleEvent) -> bool {
    !matches!(tx.try_send(crate::relay_loop::Input::Console(ev)), Err(TrySendError::Disconnected(_)))
}

fn reader(source: ConsoleSource, tx: SyncSender<crate::relay_loop::Input>, stats: Arc<ConsoleStats>) {
    use crate::relay_loop::Input;
    let mut backoff = Duration::from_millis(100);
    let mut last_error = String::new();
    loop {
        let mut input = match open(&source) {
            Ok(i) => i,
            Err(e) => {
                let msg = e.to_string();
                if msg != last_error {
                    tracing::warn!(source = ?source, error = %e, "console unavailable, retrying");
                    if !notify(&tx, ConsoleEvent::Lost(msg.clone())) {
                        return;
                    }
                    last_error = msg;
                }
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        stats.connects.fetch_add(1, Ordering::Relaxed);
        tracing::info!(source = ?source, "console connected");
        last_error.clear();
        backoff = Duration::from_millis(100);
        if !notify(&tx, ConsoleEvent::Connected) {
            return;
        }
        let mut buf = vec![0u8; CHUNK];
        let why = loop {
            match input.read(&mut buf) {
                Ok(0) => break "end of stream".to_string(),
                Ok(n) => {
                    let chunk = buf.get(..n).unwrap_or_default().to_vec();
                    stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
                    match tx.try_send(Input::Console(ConsoleEvent::Bytes(chunk))) {
                        Ok(()) => {}
                        Err(TrySendError::Full(_)) => {
                            let total = stats.dropped_bytes.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
                            tracing::warn!(dropped = n, total, "relay loop queue full: console bytes dropped");
                        }
                        Err(TrySendError::Disconnected(_)) => return,
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => break e.to_string(),
            }
        };
        tracing::warn!(source = ?source, reason = %why, "console lost, reconnecting");
        if !notify(&tx, ConsoleEvent::Lost(why)) {
            return;
        }
        std::thread::sleep(backoff);
    }
}
