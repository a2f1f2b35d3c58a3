//! From the validated [`Config`] and what the kernel told us (interface,
//! source IP, collector MACs) to relay-core's [`RelayConfig`], and the
//! [`Engine`] glue. relay-core itself is used unchanged.
use crate::config::Config;
use crate::net::Interface;
use crate::relay_loop::Engine;
use anyhow::{anyhow, bail, Result};
use relay_core::detect::HostSignal;
use relay_core::frame::{Endpoints, FrameTemplate, IpEndpoints, MacAddr, VlanTag};
use relay_core::relay::{Relay, RelayConfig};
use relay_core::{Duration, Instant};
use std::io::Write;
use std::net::IpAddr;

/// The MAC used for a collector nobody could resolve yet. Linux accepts a
/// unicast-IP datagram in a broadcast frame (unless
/// `drop_unicast_in_l2_multicast` is set), so a last gasp still arrives;
/// the refresher replaces it as soon as the neighbour table knows better.
pub const UNRESOLVED_MAC: [u8; 6] = [0xff; 6];

/// The frame template for one collector.
pub fn template(cfg: &Config, iface: &Interface, source_ip: IpAddr, collector: usize, mac: [u8; 6]) -> Result<FrameTemplate> {
    let c = cfg.collectors.get(collector).ok_or_else(|| anyhow!("no collector {collector}"))?;
    let ip = match (source_ip, c.address.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => IpEndpoints::V4 { src: s.octets(), dst: d.octets() },
        (IpAddr::V6(s), IpAddr::V6(d)) => IpEndpoints::V6 { src: s.octets(), dst: d.octets() },
        (s, d) => bail!("source {s} and collector {d} are of different IP families"),
    };
    let ep = Endpoints {
        src_mac: MacAddr(iface.mac),
        dst_mac: MacAddr(mac),
        vlan: cfg.vlan.map(|v| VlanTag { pcp: v.pcp, vid: v.id }),
        ip,
        src_port: cfg.source_port,
        dst_port: c.address.port(),
    };
    let mtu = cfg.mtu.unwrap_or(iface.mtu);
    FrameTemplate::new(&ep, mtu).map_err(|e| anyhow!("collector {}: cannot build its frame template: {e:?}", c.address))
}

/// relay-core's configuration for this BMC.
pub fn relay_config(
    cfg: &Config,
    iface: &Interface,
    source_ip: IpAddr,
    key: [u8; 32],
    boot_counter: u32,
    macs: &[Option<[u8; 6]>],
) -> Result<RelayConfig> {
    let mac = |i: usize| macs.get(i).copied().flatten().unwrap_or(UNRESOLVED_MAC);
    let first = template(cfg, iface, source_ip, 0, mac(0))?;
    let mut rc = RelayConfig::new(&cfg.relay_id, &cfg.node_name, key, boot_counter, first)
        .map_err(|e| anyhow!("relay settings refused: {e}"))?;
    for i in 1..cfg.collectors.len() {
        rc.collectors
            .push(template(cfg, iface, source_ip, i, mac(i))?)
            .map_err(|_| anyhow!("more collectors than relay-core holds"))?;
    }
    let t = &cfg.tuning;
    if let Some(m) = t.mirror {
        rc.mirror = m;
    }
    if let Some(v) = t.mirror_lines_per_sec {
        rc.mirror_lines_per_sec = v;
    }
    if let Some(v) = t.mirror_burst {
        rc.mirror_burst = v;
    }
    if let Some(v) = t.report_copies {
        rc.report_copies = v;
    }
    if let Some(v) = t.after_lines {
        rc.after_lines = v;
    }
    if let Some(v) = t.silence {
        rc.detector.silence = Duration(u64::try_from(v.as_micros()).unwrap_or(u64::MAX));
    }
    Ok(rc)
}

impl Engine for Relay {
    fn handle_console(&mut self, bytes: &[u8], now: Instant) {
        Relay::handle_console(self, bytes, now);
    }
    fn handle_signal(&mut self, sig: HostSignal, now: Instant) {
        Relay::handle_signal(self, sig, now);
    }
    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        Relay::poll_transmit(self, now, buf)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Relay::poll_timeout(self)
    }
    fn set_collector_mac(&mut self, index: usize, mac: [u8; 6]) {
        if !Relay::set_collector_mac(self, index, MacAddr(mac)) {
            tracing::warn!(index, "MAC update for a collector the relay does not have");
        }
    }
    fn log_stats(&self) {
        tracing::info!(stats = ?self.stats(), "relay-core counters");
    }
}

/// Wraps an engine and journals every call into it, one line each, so a test
/// can replay exactly the same calls into its own relay-core instance and
/// compare frames byte for byte:
/// `C <now> <hex bytes>` console, `S <now> <signal>` signal,
/// `M <index> <mac hex>` MAC update, `P <now> <len or ->` poll_transmit.
#[derive(Debug)]
pub struct Recording<E, W: Write> {
    inner: E,
    out: W,
}

impl<E, W: Write> Recording<E, W> {
    /// Journal `inner`'s calls into `out`.
    pub fn new(inner: E, out: W) -> Self {
        Recording { inner, out }
    }
    fn line(&mut self, args: std::fmt::Arguments<'_>) {
        // A broken journal must not stop the relay; it is a test aid.
        if let Err(e) = self.out.write_fmt(args).and_then(|()| self.out.flush()) {
            tracing::warn!(error = %e, "input journal write failed");
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl<E: Engine, W: Write> Engine for Recording<E, W> {
    fn handle_console(&mut self, bytes: &[u8], now: Instant) {
        self.line(format_args!("C {} {}\n", now.0, hex(bytes)));
        self.inner.handle_console(bytes, now);
    }
    fn handle_signal(&mut self, sig: HostSignal, now: Instant) {
        self.line(format_args!("S {} {sig:?}\n", now.0));
        self.inner.handle_signal(sig, now);
    }
    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        let r = self.inner.poll_transmit(now, buf);
        match r {
            Some(n) => self.line(format_args!("P {} {n}\n", now.0)),
            None => self.line(format_args!("P {} -\n", now.0)),
        }
        r
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.inner.poll_timeout()
    }
    fn set_collector_mac(&mut self, index: usize, mac: [u8; 6]) {
        self.line(format_args!("M {index} {}\n", hex(&mac)));
        self.inner.set_collector_mac(index, mac);
    }
    fn log_stats(&self) {
        self.inner.log_stats();
    }
}
