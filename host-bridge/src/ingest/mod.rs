//! Ingest: UDP sockets (IPv4/IPv6, SO_REUSEPORT), batched receives, and sharding of datagrams
//! to the decode workers. The receive loop never waits on anyone: hand-off is `try_send` into
//! a bounded queue, and a full queue is a counted drop.
use std::net::SocketAddr;
use std::sync::Arc;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::decode::worker::shard;
use crate::serve::metrics::{DropReason, Metrics};

mod mmsg;

/// One datagram inside a [`Batch`].
#[derive(Clone, Copy, Debug)]
pub struct Item {
    /// Sender.
    pub src: SocketAddr,
    /// Local port it arrived on.
    pub local_port: u16,
    /// Offset in [`Batch::buf`].
    pub start: usize,
    /// Length.
    pub len: usize,
}

/// Datagrams for one worker from one receive batch: one buffer, many items (two allocations
/// per batch instead of one per datagram).
#[derive(Debug, Default)]
pub struct Batch {
    /// Payload bytes, back to back.
    pub buf: Vec<u8>,
    /// The datagrams.
    pub items: Vec<Item>,
}

impl Batch {
    /// Append a datagram.
    pub fn push(&mut self, src: SocketAddr, local_port: u16, data: &[u8]) {
        let start = self.buf.len();
        self.buf.extend_from_slice(data);
        self.items.push(Item {
            src,
            local_port,
            start,
            len: data.len(),
        });
    }
}

/// Bind one UDP socket with SO_REUSEPORT (several may share the address) and a large buffer.
pub fn bind(addr: SocketAddr, recv_buffer: usize, reuse_port: bool) -> std::io::Result<std::net::UdpSocket> {
    let domain = if addr.is_ipv4() { Domain::IPV4 } else { Domain::IPV6 };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // `[::]` and `0.0.0.0` are listed separately, so the v6 socket must not claim v4.
        s.set_only_v6(true)?;
    }
    if reuse_port {
        s.set_reuse_port(true)?;
    }
    if let Err(e) = s.set_recv_buffer_size(recv_buffer) {
        tracing::warn!("SO_RCVBUF {recv_buffer} on {addr}: {e}");
    }
    // Linux doubles the request and caps it at net.core.rmem_max: say so when capped, since a
    // small buffer turns a burst (a panic flush from many hosts) into kernel drops.
    if let Ok(got) = s.recv_buffer_size() {
        if got < recv_buffer {
            tracing::warn!(requested = recv_buffer, got, "receive buffer capped by net.core.rmem_max on {addr}; raise it for bursts");
        }
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// Where the receive loop hands datagrams.
#[derive(Clone)]
pub struct Dispatch {
    /// One queue per worker.
    pub queues: Vec<mpsc::Sender<Batch>>,
    /// Datagrams allowed in each worker's queue.
    pub queue_limit: i64,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Largest datagram accepted.
    pub max_datagram: usize,
}

/// Receive forever on `sock` (already bound, non-blocking).
pub async fn receive_loop(sock: std::net::UdpSocket, batch: usize, dispatch: Dispatch) -> std::io::Result<()> {
    let local_port = sock.local_addr()?.port();
    let sock = UdpSocket::from_std(sock)?;
    let workers = dispatch.queues.len();
    // One byte more than accepted, so an oversized datagram is seen as such (MSG_TRUNC).
    let mut rx = mmsg::RecvBatch::new(batch, dispatch.max_datagram + 1);
    let mut out: Vec<Batch> = (0..workers).map(|_| Batch::default()).collect();
    let m = &dispatch.metrics;
    loop {
        sock.readable().await?;
        loop {
            let n = match sock.try_io(Interest::READABLE, || rx.recv(&sock)) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // ICMP errors and the like: count nothing, log rarely, never stop.
                    if m.warn_limiter.allow() {
                        tracing::warn!("recvmmsg: {e}");
                    }
                    break;
                }
            };
            // Shared counters are bumped once per batch, not per datagram (cache-line traffic).
            let mut bytes = 0u64;
            m.datagrams.inc_by(n as u64);
            for i in 0..n {
                let Some((src, data, truncated)) = rx.get(i) else { continue };
                bytes += data.len() as u64;
                if truncated || data.len() > dispatch.max_datagram {
                    m.dropped(DropReason::Oversized, 1);
                    continue;
                }
                if let Some(b) = out.get_mut(shard(&src, workers)) {
                    b.push(src, local_port, data);
                }
            }
            m.bytes.inc_by(bytes);
            for (w, b) in out.iter_mut().enumerate() {
                if b.items.is_empty() {
                    continue;
                }
                let count = i64::try_from(b.items.len()).unwrap_or(i64::MAX);
                let (Some(q), Some(depth)) = (dispatch.queues.get(w), m.queue_depth.get(w)) else { continue };
                if depth.get() + count > dispatch.queue_limit {
                    m.dropped(DropReason::QueueFull, count as u64);
                    b.items.clear();
                    b.buf.clear();
                    continue;
                }
                depth.inc_by(count);
                if q.try_send(std::mem::take(b)).is_err() {
                    depth.dec_by(count);
                    m.dropped(DropReason::QueueFull, count as u64);
                }
            }
            if n < rx.capacity() {
                break; // drained: wait for readiness again
            }
        }
    }
}
