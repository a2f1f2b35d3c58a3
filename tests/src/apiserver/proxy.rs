//! A TCP proxy in front of any API server (in-process or real) that can cut,
//! refuse or black-hole connections: an outage without touching the server.
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Where a cluster's API server is, read from its URL, for a proxy in front of it.
#[derive(Clone, Debug)]
pub struct Upstream {
    /// The URL's host, without brackets (what its certificate names).
    pub host: String,
    /// `https` (else `http`).
    pub https: bool,
    /// The host and port, resolved.
    pub addr: SocketAddr,
    /// The URL's path (some servers sit below one), without a trailing `/`.
    pub path: String,
}

impl Upstream {
    /// Parses and resolves `server` (`https://host[:port][/path]`); the port
    /// defaults to the scheme's.
    pub fn of(server: &str) -> Result<Self, String> {
        use std::net::ToSocketAddrs;
        let url: axum::http::Uri = server.parse().map_err(|e| format!("server {server:?}: {e}"))?;
        let https = url.scheme_str() != Some("http");
        let host = url.host().ok_or_else(|| format!("server {server:?} has no host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = url.port_u16().unwrap_or(if https { 443 } else { 80 });
        let addr = (host.as_str(), port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {host}:{port}: {e}"))?
            .next()
            .ok_or_else(|| format!("{host}:{port} resolves to nothing"))?;
        let path = url.path().trim_end_matches('/').to_owned();
        Ok(Self { host, https, addr, path })
    }

    /// The URL of a proxy at `proxy` that stands in for this server.
    pub fn via(&self, proxy: SocketAddr) -> String {
        format!("{}://{proxy}{}", if self.https { "https" } else { "http" }, self.path)
    }
}

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
