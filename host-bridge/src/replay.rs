//! Replay captured datagrams over real UDP: the fixtures' `.jsonl` (one JSON object per
//! datagram) or a classic `.pcap` (Ethernet, optional 802.1Q, IPv4/IPv6, UDP).
use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::Engine;
use serde::Deserialize;

/// One captured datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    /// Receive time, seconds (epoch or capture-relative).
    pub t_usec: u64,
    /// Source port in the capture (streams are kept apart by it).
    pub sport: u16,
    /// Destination port in the capture.
    pub dport: u16,
    /// Payload.
    pub payload: Vec<u8>,
}

#[derive(Deserialize)]
struct JsonLine {
    t: f64,
    sport: u16,
    dport: u16,
    b64: String,
}

/// Read a capture; the format is chosen by the file's extension (`.jsonl` or `.pcap`).
pub fn load(path: &Path) -> anyhow::Result<Vec<Captured>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    match path.extension().and_then(|e| e.to_str()) {
        Some("jsonl") => load_jsonl(&bytes).with_context(|| path.display().to_string()),
        Some("pcap") => load_pcap(&bytes).with_context(|| path.display().to_string()),
        _ => bail!("{}: expected a .jsonl or .pcap capture", path.display()),
    }
}

fn load_jsonl(bytes: &[u8]) -> anyhow::Result<Vec<Captured>> {
    let text = std::str::from_utf8(bytes).context("not UTF-8")?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let j: JsonLine = serde_json::from_str(line).with_context(|| format!("line {}", i + 1))?;
        let payload = base64::engine::general_purpose::STANDARD.decode(&j.b64).with_context(|| format!("line {}: b64", i + 1))?;
        out.push(Captured {
            t_usec: (j.t * 1e6) as u64,
            sport: j.sport,
            dport: j.dport,
            payload,
        });
    }
    Ok(out)
}

fn load_pcap(b: &[u8]) -> anyhow::Result<Vec<Captured>> {
    let magic = b.get(..4).context("too short for a pcap header")?;
    let (le, nanos) = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] => (true, false),
        [0xa1, 0xb2, 0xc3, 0xd4] => (false, false),
        [0x4d, 0x3c, 0xb2, 0xa1] => (true, true),
        [0xa1, 0xb2, 0x3c, 0x4d] => (false, true),
        _ => bail!("not a classic pcap file (pcapng is not supported)"),
    };
    let u32_at = |off: usize| -> Option<u32> {
        let s: [u8; 4] = b.get(off..off + 4)?.try_into().ok()?;
        Some(if le { u32::from_le_bytes(s) } else { u32::from_be_bytes(s) })
    };
    let linktype = u32_at(20).context("truncated pcap header")?;
    if linktype != 1 {
        bail!("link type {linktype} is not Ethernet");
    }
    let mut off = 24;
    let mut out = Vec::new();
    while off + 16 <= b.len() {
        let (sec, frac, caplen) = (
            u64::from(u32_at(off).unwrap_or(0)),
            u64::from(u32_at(off + 4).unwrap_or(0)),
            u32_at(off + 8).unwrap_or(0) as usize,
        );
        let frame = b.get(off + 16..off + 16 + caplen).context("truncated packet record")?;
        off += 16 + caplen;
        let t_usec = sec * 1_000_000 + if nanos { frac / 1000 } else { frac };
        if let Some((sport, dport, payload)) = udp_of_frame(frame) {
            out.push(Captured {
                t_usec,
                sport,
                dport,
                payload: payload.to_vec(),
            });
        }
    }
    Ok(out)
}

/// UDP (sport, dport, payload) of an Ethernet frame, if it is one.
fn udp_of_frame(f: &[u8]) -> Option<(u16, u16, &[u8])> {
    let be16 = |s: &[u8], o: usize| -> Option<u16> { Some(u16::from_be_bytes(s.get(o..o + 2)?.try_into().ok()?)) };
    let mut ethertype = be16(f, 12)?;
    let mut l3 = 14;
    if ethertype == 0x8100 {
        ethertype = be16(f, 16)?;
        l3 = 18;
    }
    let ip = f.get(l3..)?;
    let udp = match ethertype {
        0x0800 => {
            let ihl = usize::from(ip.first()? & 0x0f) * 4;
            let total = usize::from(be16(ip, 2)?);
            let frag = be16(ip, 6)? & 0x3fff;
            if *ip.get(9)? != 17 || frag != 0 {
                return None;
            }
            ip.get(ihl..total.min(ip.len()))?
        }
        0x86dd => {
            if *ip.get(6)? != 17 {
                return None;
            }
            let plen = usize::from(be16(ip, 4)?);
            ip.get(40..40 + plen)?
        }
        _ => return None,
    };
    let len = usize::from(be16(udp, 4)?);
    Some((be16(udp, 0)?, be16(udp, 2)?, udp.get(8..len.min(udp.len()))?))
}

/// How to send.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Where datagrams go.
    pub to: SocketAddr,
    /// Destination-port rewrites: captured dport → port on `to`'s host (e.g. 6667 → 7667).
    pub port_map: HashMap<u16, u16>,
    /// Keep the capture's inter-arrival timing, scaled by `speed` (None = as fast as possible).
    pub speed: Option<f64>,
    /// Only datagrams to these captured destination ports (empty = all).
    pub only_dports: Vec<u16>,
}

/// Send the capture; one local socket per captured source port, so the bridge sees the same
/// separate streams. Returns the number of datagrams sent.
pub fn send(caps: &[Captured], opts: &ReplayOptions) -> anyhow::Result<usize> {
    let bind_addr: SocketAddr = if opts.to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse()?;
    let mut socks: HashMap<u16, UdpSocket> = HashMap::new();
    let start = Instant::now();
    let t0 = caps.first().map_or(0, |c| c.t_usec);
    let mut sent = 0;
    for c in caps {
        if !opts.only_dports.is_empty() && !opts.only_dports.contains(&c.dport) {
            continue;
        }
        if let Some(speed) = opts.speed.filter(|s| *s > 0.0) {
            let due = Duration::from_secs_f64(c.t_usec.saturating_sub(t0) as f64 / 1e6 / speed);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        let sock = match socks.get(&c.sport) {
            Some(s) => s,
            None => {
                let s = UdpSocket::bind(bind_addr)?;
                socks.entry(c.sport).or_insert(s)
            }
        };
        let port = opts.port_map.get(&c.dport).copied().unwrap_or_else(|| if opts.port_map.is_empty() { opts.to.port() } else { c.dport });
        let mut to = opts.to;
        to.set_port(port);
        sock.send_to(&c.payload, to).with_context(|| format!("sending to {to}"))?;
        sent += 1;
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/netconsole").join(name)
    }

    #[test]
    fn pcap_and_jsonl_agree() {
        for run in ["ext-panic", "basic-panic", "dual-panic"] {
            let j = load(&fixture(&format!("{run}.jsonl"))).unwrap();
            let p: Vec<_> = load(&fixture(&format!("{run}.pcap"))).unwrap().into_iter().filter(|c| c.dport == 6666 || c.dport == 6667).collect();
            assert_eq!(j.len(), p.len(), "{run}");
            assert!(j.iter().zip(&p).all(|(a, b)| a.payload == b.payload && a.dport == b.dport), "{run}");
        }
    }
}
