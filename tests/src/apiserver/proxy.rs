//! A TCP proxy in front of any API server (in-process or real) that can cut,
//! refuse or black-hole connections: an outage without touching the server.
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy does with connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward bytes both ways.
    Pass,
    /// Close every connection at once (the server is down).
    Refuse,
    /// Accept and never answer (the server hangs).
    Blackhole,
}

/// A running proxy; stops when dropped.
pub struct Proxy {
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a random loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        Self::on(TcpListener::bind("127.0.0.1:0").await?, upstream)
    }

    /// Forwards the connections of `listener` to `upstream` (connecting from
    /// the namespace of the thread that runs the proxy's tasks).
    pub fn on(listener: TcpListener, upstream: SocketAddr) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let (mode, rx) = watch::channel(Mode::Pass);
        let task = tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else { continue };
                tokio::spawn(serve(conn, upstream, rx.clone()));
            }
        });
        Ok(Self { addr, mode, task })
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Switches mode; existing connections are cut on any switch away from `Pass`.
    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut conn: TcpStream, upstream: SocketAddr, mut mode: watch::Receiver<Mode>) {
    let current = *mode.borrow_and_update();
    match current {
        Mode::Refuse => {}
        Mode::Blackhole => {
            // Hold the connection silently until the mode changes.
            let _ = mode.changed().await;
        }
        Mode::Pass => {
            let Ok(mut up) = TcpStream::connect(upstream).await else { return };
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut conn, &mut up) => {}
                _ = async { while mode.changed().await.is_ok() { if *mode.borrow() != Mode::Pass { break; } } } => {}
            }
        }
    }
}
