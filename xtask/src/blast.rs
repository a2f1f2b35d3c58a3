//! `cargo xtask blast`: a UDP load generator for host-bridge (and, with the same settings,
//! for netconsd), with a settable message mix and rate.
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Options of `blast`.
#[derive(clap::Args, Clone)]
pub struct Args {
    /// Destination (the bridge's, or netconsd's, listen address).
    #[arg(long, default_value = "127.0.0.1:6666")]
    to: SocketAddr,
    /// Total datagrams per second over all threads; 0 = as fast as possible.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// How long to send, seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Distinct senders (each its own socket, and its own printk sequence).
    #[arg(long, default_value_t = 64)]
    sources: usize,
    /// Give each sender its own loopback address 127.2.x.y (needs a 127/8 destination).
    #[arg(long)]
    spread_ips: bool,
    /// Message mix as weights: `ext=80,basic=20,frag=0,garbage=0`.
    ///   ext: extended netconsole records; basic: basic netconsole lines;
    ///   frag: a 2-fragment extended record (ncfrag) per pick; garbage: random bytes.
    #[arg(long, default_value = "ext=80,basic=20,frag=0,garbage=0")]
    mix: String,
    /// Approximate text length of a line, bytes.
    #[arg(long, default_value_t = 100)]
    line_len: usize,
    /// Sending threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// The bridge's HTTP address: after sending, wait for it to drain and report its
    /// counters (received, processed, drops) next to the kernel's UDP receive-buffer drops.
    #[arg(long)]
    metrics: Option<SocketAddr>,
}

/// `RcvbufErrors` of /proc/net/snmp (Udp) plus Udp6's: datagrams the kernel dropped because a
/// socket's receive buffer was full.
fn kernel_udp_drops() -> u64 {
    let read = |path: &str, prefix: &str| -> u64 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if path.ends_with("snmp6") {
            return text.lines().find(|l| l.starts_with("Udp6RcvbufErrors")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()).unwrap_or(0);
        }
        let mut lines = text.lines().filter(|l| l.starts_with(prefix));
        let (Some(head), Some(vals)) = (lines.next(), lines.next()) else { return 0 };
        head.split_whitespace().zip(vals.split_whitespace()).find(|(h, _)| *h == "RcvbufErrors").and_then(|(_, v)| v.parse().ok()).unwrap_or(0)
    };
    read("/proc/net/snmp", "Udp:") + read("/proc/net/snmp6", "Udp6")
}

fn bridge_metrics(addr: SocketAddr) -> Result<std::collections::HashMap<String, f64>> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let mut out = std::collections::HashMap::new();
    for line in text.lines().filter(|l| l.starts_with("lastgasp_bridge_")) {
        let mut it = line.split_whitespace();
        if let (Some(k), Some(v)) = (it.next(), it.next().and_then(|v| v.parse::<f64>().ok())) {
            let base = k.split('{').next().unwrap_or(k).to_string();
            *out.entry(base).or_insert(0.0) += v;
            out.insert(k.to_string(), v);
        }
    }
    Ok(out)
}

#[derive(Clone, Copy)]
struct Mix {
    ext: u32,
    basic: u32,
    frag: u32,
    garbage: u32,
}

fn parse_mix(s: &str) -> Result<Mix> {
    let mut m = Mix { ext: 0, basic: 0, frag: 0, garbage: 0 };
    for kv in s.split(',').filter(|s| !s.is_empty()) {
        let (k, v) = kv.split_once('=').context("mix entries are NAME=WEIGHT")?;
        let v: u32 = v.trim().parse().with_context(|| format!("weight of {k}"))?;
        match k.trim() {
            "ext" => m.ext = v,
            "basic" => m.basic = v,
            "frag" => m.frag = v,
            "garbage" => m.garbage = v,
            other => bail!("unknown message type {other} (ext, basic, frag, garbage)"),
        }
    }
    if m.ext + m.basic + m.frag + m.garbage == 0 {
        bail!("the mix has no weight");
    }
    Ok(m)
}

/// Kernel-like lines that match no rule (the common case the bridge must sustain).
const WORDS: &[&str] = &["eth0:", "NIC", "Link", "is", "Up", "1000", "Mbps", "audit:", "type=1400", "EXT4-fs", "(sda1):", "mounted", "systemd[1]:", "Started", "session", "tcp:", "request_sock_TCP:", "Possible", "SYN", "flooding"];

struct Sender {
    sock: UdpSocket,
    seq: u64,
    rng: u64,
    batch: Vec<Vec<u8>>,
}

/// Datagrams per sendmmsg(2): the generator must outrun the bridge on the same 2 cores.
const BATCH: usize = 32;

fn sendmmsg(sock: &UdpSocket, msgs: &[Vec<u8>]) -> usize {
    use std::os::fd::AsRawFd;
    let mut iovs: Vec<libc::iovec> = msgs.iter().map(|m| libc::iovec { iov_base: m.as_ptr() as *mut libc::c_void, iov_len: m.len() }).collect();
    let mut hdrs: Vec<libc::mmsghdr> = iovs
        .iter_mut()
        .map(|iov| {
            // SAFETY: plain C struct; all-zero is a valid empty header (connected socket).
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
            h
        })
        .collect();
    // SAFETY: hdrs/iovs point into msgs, alive for the call.
    let r = unsafe { libc::sendmmsg(sock.as_raw_fd(), hdrs.as_mut_ptr(), hdrs.len() as libc::c_uint, 0) };
    usize::try_from(r).unwrap_or(0)
}

impl Sender {
    fn next_rand(&mut self) -> u64 {
        // xorshift64*: cheap and good enough for a load mix.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn text(&mut self, len: usize, out: &mut Vec<u8>) {
        let start = out.len();
        while out.len() - start < len {
            let w = WORDS[(self.next_rand() % WORDS.len() as u64) as usize];
            out.extend_from_slice(w.as_bytes());
            out.push(b' ');
        }
    }

    /// Queue one pick of the mix; flushes a full batch; returns datagrams sent.
    fn send(&mut self, mix: Mix, line_len: usize, buf: &mut Vec<u8>) -> u64 {
        self.build(mix, line_len, buf);
        if self.batch.len() >= BATCH {
            return self.flush();
        }
        0
    }

    fn flush(&mut self) -> u64 {
        let n = sendmmsg(&self.sock, &self.batch);
        self.batch.clear();
        n as u64
    }

    fn push(&mut self, d: &[u8]) -> u64 {
        self.batch.push(d.to_vec());
        1
    }

    fn build(&mut self, mix: Mix, line_len: usize, buf: &mut Vec<u8>) -> u64 {
        let total = mix.ext + mix.basic + mix.frag + mix.garbage;
        let pick = (self.next_rand() % u64::from(total)) as u32;
        buf.clear();
        self.seq += 1;
        let ts = self.seq * 1000;
        if pick < mix.ext {
            buf.extend_from_slice(format!("6,{},{ts},-;", self.seq).as_bytes());
            self.text(line_len, buf);
            buf.push(b'\n');
            self.push(&buf.clone())
        } else if pick < mix.ext + mix.basic {
            buf.extend_from_slice(format!("[{:>5}.{:06}] ", ts / 1_000_000, ts % 1_000_000).as_bytes());
            self.text(line_len, buf);
            buf.push(b'\n');
            self.push(&buf.clone())
        } else if pick < mix.ext + mix.basic + mix.frag {
            let mut body = Vec::new();
            self.text(1400, &mut body);
            body.push(b'\n');
            let total = body.len();
            let half = total / 2;
            let mut n = 0;
            for (off, piece) in [(0, &body[..half]), (half, &body[half..])] {
                buf.clear();
                buf.extend_from_slice(format!("6,{},{ts},-,ncfrag={off}/{total};", self.seq).as_bytes());
                buf.extend_from_slice(piece);
                n += self.push(&buf.clone());
            }
            n
        } else {
            for _ in 0..line_len / 8 + 1 {
                buf.extend_from_slice(&self.next_rand().to_le_bytes());
            }
            buf[0] = 0; // NUL: never console text
            self.push(&buf.clone())
        }
    }
}

/// Run the generator.
pub fn run(a: Args) -> Result<()> {
    let mix = parse_mix(&a.mix)?;
    let threads = a.threads.max(1);
    let sources = a.sources.max(threads);
    let mut senders: Vec<Vec<Sender>> = (0..threads).map(|_| Vec::new()).collect();
    for i in 0..sources {
        let ip: IpAddr = if a.spread_ips {
            Ipv4Addr::new(127, 2, (i / 250) as u8, (i % 250 + 1) as u8).into()
        } else if a.to.is_ipv4() {
            Ipv4Addr::UNSPECIFIED.into()
        } else {
            std::net::Ipv6Addr::UNSPECIFIED.into()
        };
        let sock = UdpSocket::bind(SocketAddr::new(ip, 0)).with_context(|| format!("binding sender {i} on {ip}"))?;
        sock.connect(a.to)?;
        senders[i % threads].push(Sender { sock, seq: 0, rng: 0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1), batch: Vec::with_capacity(BATCH) });
    }
    let before = a.metrics.map(bridge_metrics).transpose()?;
    let kernel_before = kernel_udp_drops();
    let sent = Arc::new(AtomicU64::new(0));
    let duration = Duration::from_secs_f64(a.duration);
    let per_thread_rate = a.rate as f64 / threads as f64;
    let start = Instant::now();
    let handles: Vec<_> = senders
        .into_iter()
        .map(|mut group| {
            let sent = Arc::clone(&sent);
            let line_len = a.line_len;
            std::thread::spawn(move || {
                let mut buf = Vec::with_capacity(2048);
                let mut mine = 0u64;
                let mut k = 0usize;
                let t0 = Instant::now();
                while t0.elapsed() < duration {
                    // Pace in small bursts so the rate holds without a syscall per sleep.
                    if per_thread_rate > 0.0 {
                        let due = mine as f64 / per_thread_rate;
                        let now = t0.elapsed().as_secs_f64();
                        if due > now {
                            std::thread::sleep(Duration::from_secs_f64((due - now).min(0.01)));
                            continue;
                        }
                    }
                    let n = group.len();
                    let s = &mut group[k % n];
                    k = k.wrapping_add(1);
                    for _ in 0..BATCH {
                        mine += s.send(mix, line_len, &mut buf);
                    }
                }
                for s in &mut group {
                    mine += s.flush();
                }
                sent.fetch_add(mine, Ordering::Relaxed);
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let n = sent.load(Ordering::Relaxed);
    println!(
        "{{\"sent\": {n}, \"seconds\": {elapsed:.3}, \"rate\": {:.0}, \"sources\": {sources}, \"threads\": {threads}, \"mix\": \"{}\"}}",
        n as f64 / elapsed,
        a.mix
    );
    if let (Some(addr), Some(before)) = (a.metrics, before) {
        // Wait until the bridge has handled all it received (its counters stop moving).
        let get = |m: &std::collections::HashMap<String, f64>, k: &str| m.get(k).copied().unwrap_or(0.0) - before.get(k).copied().unwrap_or(0.0);
        let mut last = -1.0;
        let after = loop {
            std::thread::sleep(Duration::from_millis(500));
            let m = bridge_metrics(addr)?;
            let done = get(&m, "lastgasp_bridge_datagrams_processed_total") + get(&m, "lastgasp_bridge_drops_total");
            if done == last {
                break m;
            }
            last = done;
        };
        let received = get(&after, "lastgasp_bridge_datagrams_total");
        println!(
            "{{\"bridge_received\": {received}, \"bridge_processed\": {}, \"bridge_drops\": {}, \"bridge_queue_full\": {}, \"socket_drops\": {}, \"lost_before_socket\": {}, \"processed_rate\": {:.0}}}",
            get(&after, "lastgasp_bridge_datagrams_processed_total"),
            get(&after, "lastgasp_bridge_drops_total"),
            get(&after, "lastgasp_bridge_drops_total{reason=\"queue_full\"}"),
            kernel_udp_drops().saturating_sub(kernel_before),
            n as f64 - received,
            get(&after, "lastgasp_bridge_datagrams_processed_total") / elapsed,
        );
    }
    Ok(())
}
