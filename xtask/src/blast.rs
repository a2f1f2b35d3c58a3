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

    /// Send one pick of the mix; returns datagrams sent.
    fn send(&mut self, mix: Mix, line_len: usize, buf: &mut Vec<u8>) -> u64 {
        let total = mix.ext + mix.basic + mix.frag + mix.garbage;
        let pick = (self.next_rand() % u64::from(total)) as u32;
        buf.clear();
        self.seq += 1;
        let ts = self.seq * 1000;
        if pick < mix.ext {
            buf.extend_from_slice(format!("6,{},{ts},-;", self.seq).as_bytes());
            self.text(line_len, buf);
            buf.push(b'\n');
            u64::from(self.sock.send(buf).is_ok())
        } else if pick < mix.ext + mix.basic {
            buf.extend_from_slice(format!("[{:>5}.{:06}] ", ts / 1_000_000, ts % 1_000_000).as_bytes());
            self.text(line_len, buf);
            buf.push(b'\n');
            u64::from(self.sock.send(buf).is_ok())
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
                n += u64::from(self.sock.send(buf).is_ok());
            }
            n
        } else {
            for _ in 0..line_len / 8 + 1 {
                buf.extend_from_slice(&self.next_rand().to_le_bytes());
            }
            buf[0] = 0; // NUL: never console text
            u64::from(self.sock.send(buf).is_ok())
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
        senders[i % threads].push(Sender { sock, seq: 0, rng: 0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1) });
    }
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
                    for _ in 0..32 {
                        let n = group.len();
                        let s = &mut group[k % n];
                        k = k.wrapping_add(1);
                        mine += s.send(mix, line_len, &mut buf);
                    }
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
    Ok(())
}
