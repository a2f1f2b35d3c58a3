//! Start-up and the two commands: `run` and `check-config`.
use crate::config::{Config, Transport};
use crate::engine::{relay_config, Recording, UNRESOLVED_MAC};
use crate::net::{FrameSink, Interface, PacketSink, UdpSink};
use crate::relay_loop::{self, Clock, Engine, Input, QUEUE_DEPTH};
use crate::resolve::{fmt_mac, kernel_source_ip, spawn_refresher, Resolver};
use crate::{console, state};
use anyhow::{bail, Context, Result};
use relay_core::relay::Relay;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;

/// Options of `run`.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Configuration file.
    pub config: PathBuf,
    /// Journal every call into relay-core here (tests replay it).
    pub record: Option<PathBuf>,
}

/// What start-up learned; printed by `check-config`.
#[derive(Debug)]
pub struct Plan {
    /// The validated configuration.
    pub config: Config,
    /// The interface frames leave by.
    pub iface: Interface,
    /// The relay's source IP.
    pub source_ip: IpAddr,
    /// Each collector's next-hop MAC, if known.
    pub macs: Vec<Option<[u8; 6]>>,
}

/// Load the config and ask the kernel what the frame templates need.
pub fn plan(config_path: &std::path::Path) -> Result<Plan> {
    let config = Config::load(config_path)?;
    let iface = Interface::by_name(&config.interface).with_context(|| format!("network.interface {:?}", config.interface))?;
    if iface.mac == [0; 6] {
        bail!("interface {} has no Ethernet address; frames need one", iface.name);
    }
    let first = config.collectors.first().map(|c| c.address.ip()).context("no collector")?;
    let source_ip = match config.source_ip {
        Some(ip) => ip,
        None => kernel_source_ip(first).with_context(|| format!("no source address towards {first}; set network.source_ip"))?,
    };
    let resolver = Resolver { iface: iface.clone(), source_ip };
    let macs = config
        .collectors
        .iter()
        .map(|c| match resolver.resolve(c) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(collector = %c.address, error = %e, "cannot resolve the collector's MAC yet");
                None
            }
        })
        .collect();
    Ok(Plan { config, iface, source_ip, macs })
}

/// `check-config`: validate and show what `run` would use.
pub fn check_config(config_path: &std::path::Path) -> Result<String> {
    let p = plan(config_path)?;
    state::load_key(&p.config.key_file)?;
    let mut out = String::new();
    use std::fmt::Write as _;
    let c = &p.config;
    let _ = writeln!(out, "config {}: OK", config_path.display());
    let _ = writeln!(out, "relay {} for node {}", c.relay_id, c.node_name);
    let _ = writeln!(out, "console: {:?}", c.console);
    let _ = writeln!(out, "transport: {:?} on {} (index {}, mac {}, mtu {}), source {}:{}", c.transport, p.iface.name, p.iface.index, fmt_mac(&p.iface.mac), c.mtu.unwrap_or(p.iface.mtu), p.source_ip, c.source_port);
    for (col, mac) in c.collectors.iter().zip(&p.macs) {
        let mac = mac.map(|m| fmt_mac(&m)).unwrap_or_else(|| "unresolved (broadcast until learned)".into());
        let _ = writeln!(out, "collector {} via {mac}", col.address);
    }
    Ok(out)
}

/// Block SIGTERM/SIGINT in every thread and turn them into [`Input::Shutdown`]
/// on a thread of their own (call before spawning other threads).
fn spawn_signal_thread(tx: SyncSender<Input>) -> Result<()> {
    // SAFETY: sigset_t is plain data initialised by sigemptyset; the mask
    // change affects this thread and is inherited by threads spawned later.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            bail!("pthread_sigmask failed");
        }
        set
    };
    std::thread::Builder::new().name("signals".into()).spawn(move || loop {
        let mut sig = 0;
        // SAFETY: set is a valid sigset; sig a valid out pointer.
        if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
            tracing::info!(signal = sig, "stopping");
            let _ = tx.send(Input::Shutdown);
            return;
        }
    })?;
    Ok(())
}

/// `run`: the relay, until SIGTERM.
pub fn run(opts: RunOptions) -> Result<()> {
    let (tx, rx) = sync_channel::<Input>(QUEUE_DEPTH);
    spawn_signal_thread(tx.clone())?;
    let p = plan(&opts.config)?;
    let key = state::load_key(&p.config.key_file)?;
    let boot_counter = state::bump_boot_counter(&p.config.state_dir)?;
    let cfg = &p.config;
    for (c, m) in cfg.collectors.iter().zip(&p.macs) {
        if m.is_none() {
            tracing::warn!(collector = %c.address, "collector MAC unknown: sending to broadcast {} until the neighbour table knows it", fmt_mac(&UNRESOLVED_MAC));
        }
    }
    let relay = Relay::new(relay_config(cfg, &p.iface, p.source_ip, key, boot_counter, &p.macs)?)
        .map_err(|e| anyhow::anyhow!("relay settings refused: {e}"))?;
    let mut relay = Box::new(relay);

    let mut sink: Box<dyn FrameSink> = match cfg.transport {
        Transport::Packet => match PacketSink::open(p.iface.index) {
            Ok(s) => Box::new(s),
            Err(e) => {
                tracing::warn!(error = %e, "AF_PACKET socket refused (CAP_NET_RAW?); falling back to a UDP socket");
                Box::new(UdpSink::bind(SocketAddr::new(p.source_ip, cfg.source_port))?)
            }
        },
        Transport::Udp => Box::new(UdpSink::bind(SocketAddr::new(p.source_ip, cfg.source_port))?),
    };

    let console_stats = Arc::new(console::ConsoleStats::default());
    console::spawn_reader(cfg.console.clone(), tx.clone(), console_stats.clone())?;
    let resolver = Resolver { iface: p.iface.clone(), source_ip: p.source_ip };
    spawn_refresher(resolver, cfg.collectors.clone(), p.macs.clone(), cfg.neighbour_refresh, tx.clone())?;
    if cfg.dbus_signals {
        start_dbus(cfg.host_instance, tx.clone())?;
    }
    drop(tx);

    tracing::info!(relay = %cfg.relay_id, node = %cfg.node_name, boot_counter, interface = %p.iface.name,
        source = %p.source_ip, transport = ?cfg.transport, collectors = cfg.collectors.len(), "relay running");
    let clock = Clock::start();
    let stats = match &opts.record {
        Some(path) => {
            let f = std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
            let mut rec = Recording::new(relay, std::io::BufWriter::new(f));
            // The start-up MACs, as MAC updates, so a replay starts from the same templates.
            for (i, m) in p.macs.iter().enumerate() {
                rec.set_collector_mac(i, m.unwrap_or(UNRESOLVED_MAC));
            }
            relay_loop::run(&mut rec, &mut sink, &rx, clock)
        }
        None => relay_loop::run(&mut relay, &mut sink, &rx, clock),
    };
    tracing::info!(?stats, console_bytes_read = console_stats.bytes.load(std::sync::atomic::Ordering::Relaxed),
        console_bytes_dropped = console_stats.dropped_bytes.load(std::sync::atomic::Ordering::Relaxed), "relay stopped");
    Ok(())
}

impl FrameSink for Box<dyn FrameSink> {
    fn send_frame(&mut self, frame: &[u8]) -> std::io::Result<()> {
        (**self).send_frame(frame)
    }
}

impl Engine for Box<Relay> {
    fn handle_console(&mut self, bytes: &[u8], now: relay_core::Instant) {
        Engine::handle_console(&mut **self, bytes, now);
    }
    fn handle_signal(&mut self, sig: relay_core::detect::HostSignal, now: relay_core::Instant) {
        Engine::handle_signal(&mut **self, sig, now);
    }
    fn poll_transmit(&mut self, now: relay_core::Instant, buf: &mut [u8]) -> Option<usize> {
        Engine::poll_transmit(&mut **self, now, buf)
    }
    fn poll_timeout(&self) -> Option<relay_core::Instant> {
        Engine::poll_timeout(&**self)
    }
    fn set_collector_mac(&mut self, index: usize, mac: [u8; 6]) {
        Engine::set_collector_mac(&mut **self, index, mac);
    }
    fn log_stats(&self) {
        Engine::log_stats(&**self);
    }
}

#[cfg(feature = "dbus")]
fn start_dbus(instance: u32, tx: SyncSender<Input>) -> Result<()> {
    let conn = match std::env::var("LASTGASP_DBUS_ADDRESS") {
        // Tests point the watcher at a private bus.
        Ok(addr) => zbus::blocking::connection::Builder::address(addr.as_str())?.build()?,
        Err(_) => zbus::blocking::Connection::system().context("cannot connect to the system D-Bus")?,
    };
    crate::signals::spawn_dbus_watcher(conn, instance, tx)?;
    Ok(())
}

#[cfg(not(feature = "dbus"))]
fn start_dbus(_instance: u32, _tx: SyncSender<Input>) -> Result<()> {
    bail!("signals.dbus = true, but this binary was built without the `dbus` feature (cargo build --features dbus)")
}
