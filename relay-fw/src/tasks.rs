//! The relay's tasks, as plain async functions generic over the board's
//! types. A board wraps each in a one-line `#[embassy_executor::task]`.
//!
//! - [`console`]: console bytes into the relay;
//! - [`host_signals`]: power / CATERR / watchdog signals into the relay;
//! - [`relay`]: relay-core's poll loop; frames go straight to the NIC;
//! - [`arp`]: resolves and refreshes each collector's MAC for the templates.
//!
//! The network task is embassy-net's own `Runner::run`.
use core::cell::RefCell;

use embassy_futures::select::select;
use embassy_net::Stack;
use embassy_net_driver::Driver;
use embassy_sync::blocking_mutex::raw::NoopRawMutex;
use embassy_sync::blocking_mutex::Mutex;
use embassy_sync::signal::Signal;
use embassy_time::{Duration, Instant, Timer};

use crate::board::{ConsoleInput, HostSignals, PersistentStore};
use crate::config::{FwConfig, Ipv4Setup, BLOB_MAX, MAX_COLLECTORS};
use crate::engine::{self, Engine};
use crate::shared_nic::{SharedNic, FRAME_MAX};
use crate::{arp, measure};

/// relay-core's clock from embassy's.
pub fn now() -> relay_core::Instant {
    relay_core::Instant(Instant::now().as_micros())
}

/// The configuration to boot with: a valid blob from persistent storage,
/// else the board's built-in one.
pub fn load_config(builtin: &[u8], store: &mut impl PersistentStore) -> FwConfig {
    let mut buf = [0u8; BLOB_MAX];
    if let Some(n) = store.load_config(&mut buf) {
        match FwConfig::from_blob(buf.get(..n).unwrap_or_default()) {
            Ok(c) => {
                defmt::info!("config: from persistent storage ({} bytes)", n);
                return c;
            }
            Err(e) => defmt::warn!(
                "config: stored blob refused ({}); using the built-in one",
                e
            ),
        }
    }
    match FwConfig::from_blob(builtin) {
        Ok(c) => c,
        // build.rs validated it: only a build-system bug gets here
        Err(e) => defmt::panic!("config: built-in blob invalid: {}", e),
    }
}

/// Advance the persistent boot counter (0 when storage is unavailable).
pub fn boot_counter(store: &mut impl PersistentStore) -> u32 {
    match store.next_boot_counter() {
        Some(n) => {
            defmt::info!("boot counter {}", n);
            n
        }
        None => {
            defmt::warn!("boot counter: storage unavailable, using 0");
            0
        }
    }
}

struct State {
    cfg: FwConfig,
    boot: u32,
    mac: [u8; 6],
    engine: Option<Engine>,
    console_bytes: u64,
    dropped_before_ready: u64,
    /// Stamp of the console byte that completed the latest trigger line,
    /// until the first frame and the first report after it are sent.
    trigger_stamp: Option<u32>,
    first_frame_pending: bool,
    frames_since_trigger: u32,
}

/// The relay state machine shared by the tasks, plus the signal that makes
/// the relay task poll it.
pub struct RelayCell {
    state: Mutex<NoopRawMutex, RefCell<State>>,
    kick: Signal<NoopRawMutex, ()>,
}

impl RelayCell {
    /// The relay for `cfg`. With a static address it starts at once; with
    /// DHCP it starts when the [`arp`] task sees the lease.
    pub fn new(cfg: FwConfig, boot: u32, mac: [u8; 6]) -> Self {
        let engine = match cfg.ipv4 {
            Ipv4Setup::Static { addr, .. } => engine::build(&cfg, boot, mac, addr),
            Ipv4Setup::Dhcp => None,
        };
        Self {
            state: Mutex::new(RefCell::new(State {
                cfg,
                boot,
                mac,
                engine,
                console_bytes: 0,
                dropped_before_ready: 0,
                trigger_stamp: None,
                first_frame_pending: false,
                frames_since_trigger: 0,
            })),
            kick: Signal::new(),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        self.state.lock(|s| f(&mut s.borrow_mut()))
    }
}

/// Console task body: feed every byte from the host's console to the relay.
pub async fn console(mut input: impl ConsoleInput, relay: &RelayCell) -> ! {
    let mut buf = [0u8; 256];
    let mut lost = 0;
    loop {
        let n = input.read(&mut buf).await;
        if input.lost() != lost {
            lost = input.lost();
            defmt::warn!(
                "console: {} bytes lost to receive overruns since boot",
                lost
            );
        }
        let bytes = buf.get(..n).unwrap_or_default();
        let t = now();
        relay.with(|s| {
            s.console_bytes = s.console_bytes.wrapping_add(n as u64);
            match &mut s.engine {
                Some(e) => {
                    let triggers = e.stats().triggers;
                    e.handle_console(bytes, t);
                    if e.stats().triggers != triggers {
                        s.trigger_stamp = input.last_byte_stamp();
                        s.frames_since_trigger = 0;
                        s.first_frame_pending = s.trigger_stamp.is_some();
                    }
                }
                None => s.dropped_before_ready = s.dropped_before_ready.wrapping_add(n as u64),
            }
        });
        relay.kick.signal(());
    }
}

/// Signal task body: feed host signals to the relay.
pub async fn host_signals(mut signals: impl HostSignals, relay: &RelayCell) -> ! {
    loop {
        let sig = signals.next().await;
        defmt::info!("host signal: {=str}", signal_name(sig));
        let t = now();
        relay.with(|s| match &mut s.engine {
            Some(e) => e.handle_signal(sig, t),
            None => defmt::warn!("host signal before the relay has an address: dropped"),
        });
        relay.kick.signal(());
    }
}

fn signal_name(sig: relay_core::detect::HostSignal) -> &'static str {
    use relay_core::detect::HostSignal as S;
    match sig {
        S::PowerLost => "power lost",
        S::PowerRestored => "power restored",
        S::Caterr => "CATERR",
        S::WatchdogExpired => "watchdog expired",
    }
}

/// Relay task body: send every frame relay-core produces straight to the
/// NIC, then sleep until its next deadline or new input.
pub async fn relay<D: Driver>(nic: &SharedNic<D>, relay: &RelayCell) -> ! {
    let mut frame = [0u8; FRAME_MAX];
    let mut losses = (0, 0);
    loop {
        let now_losses = relay.with(|s| {
            s.engine
                .as_ref()
                .map(|e| (e.stats().lines_lost, e.stats().tx_errors))
        });
        if let Some(l) = now_losses.filter(|l| *l != losses) {
            losses = l;
            defmt::warn!(
                "relay: {} console lines lost (mirror behind), {} frames not built, since boot",
                l.0,
                l.1
            );
        }
        loop {
            let t = now();
            let n = relay.with(|s| {
                s.engine
                    .as_mut()
                    .and_then(|e| e.poll_transmit(t, &mut frame))
            });
            match n.and_then(|n| frame.get(..n)) {
                Some(f) => {
                    nic.send(f).await;
                    log_latency(
                        relay,
                        measure::udp_payload(f).is_some_and(relay_core::report::is_report),
                    );
                }
                None => break,
            }
        }
        match relay.with(|s| s.engine.as_ref().and_then(Engine::poll_timeout)) {
            Some(at) => {
                select(
                    relay.kick.wait(),
                    Timer::at(Instant::from_micros(at.as_micros())),
                )
                .await;
            }
            None => relay.kick.wait().await,
        }
    }
}

/// Log trigger-to-wire latency once per trigger (see [`measure`]).
fn log_latency(relay: &RelayCell, is_report: bool) {
    let Some(now) = measure::stamp() else { return };
    relay.with(|s| {
        let Some(t0) = s.trigger_stamp else { return };
        s.frames_since_trigger = s.frames_since_trigger.wrapping_add(1);
        if s.first_frame_pending {
            // the context flush or the trigger line itself, whichever is first
            defmt::info!(
                "latency: trigger line to first frame on the NIC: {} ns",
                measure::elapsed_ns(t0, now)
            );
            s.first_frame_pending = false;
        }
        if is_report {
            defmt::info!(
                "latency: trigger line to first report on the NIC: {} ns, frame {} after the trigger",
                measure::elapsed_ns(t0, now),
                s.frames_since_trigger
            );
            s.trigger_stamp = None;
        }
    });
}

/// ARP task body: find each collector's next hop (the collector itself on
/// the relay's subnet, else the gateway), ask for its MAC, and put every new
/// or changed MAC into the relay's frame templates. Asks again every
/// `arp_refresh_secs` (every second while unresolved), and picks up changes
/// announced by the neighbour in between (gratuitous ARP, its own requests).
pub async fn arp<D: Driver>(nic: &SharedNic<D>, stack: Stack<'_>, relay: &RelayCell) -> ! {
    let (own, prefix_len, gateway) = loop {
        stack.wait_config_up().await;
        if let Some(v4) = stack.config_v4() {
            break (
                v4.address.address().octets(),
                v4.address.prefix_len(),
                v4.gateway.map(|g| g.octets()),
            );
        }
    };
    defmt::info!("net: address {}/{}", own, prefix_len);
    let (hops, refresh) = relay.with(|s| {
        if s.engine.is_none() {
            s.engine = engine::build(&s.cfg, s.boot, s.mac, own);
        }
        let mut hops = [None; MAX_COLLECTORS];
        for (h, c) in hops.iter_mut().zip(s.cfg.collectors.iter()) {
            *h = Some(if s.cfg.on_link(c.ip, own, prefix_len) {
                c.ip
            } else {
                gateway.unwrap_or(c.ip)
            });
        }
        (
            hops,
            Duration::from_secs(u64::from(s.cfg.arp_refresh_secs.max(1))),
        )
    });
    for hop in hops.iter().flatten() {
        nic.watch(*hop);
    }
    let mac = nic.mac();
    let mut applied = [None; MAX_COLLECTORS];
    let mut next_request = Instant::now();
    loop {
        if Instant::now() >= next_request {
            for (i, hop) in hops.iter().enumerate() {
                let Some(hop) = *hop else { continue };
                if hops.iter().take(i).any(|h| *h == Some(hop)) {
                    continue; // one request per distinct next hop
                }
                nic.send(&arp::request(mac, own, hop)).await;
            }
            let resolved = hops.iter().flatten().all(|h| nic.neighbour(*h).is_some());
            next_request = Instant::now()
                + if resolved {
                    refresh
                } else {
                    Duration::from_secs(1)
                };
        }
        select(nic.neighbour_changed.wait(), Timer::at(next_request)).await;
        for (i, hop) in hops.iter().enumerate() {
            let Some(hop) = *hop else { continue };
            let Some(m) = nic.neighbour(hop) else {
                continue;
            };
            if applied[i] != Some(m) {
                defmt::info!("arp: collector {} via {} is at {=[u8]:02x}", i, hop, m);
                relay.with(|s| {
                    if let Some(e) = &mut s.engine {
                        e.set_collector_mac(i, relay_core::frame::MacAddr(m));
                    }
                });
                applied[i] = Some(m);
            }
        }
    }
}

/// Declares a board's five embassy tasks around the bodies above: `net`
/// (the embassy-net runner), `console`, `host_signals`, `arp` and `relay`.
/// Embassy tasks cannot be generic, so a board names its types once:
///
/// ```ignore
/// relay_fw::board_tasks!(driver: Lan9118, console: UartRx<1024>, signals: SignalPort);
/// ```
///
/// The board crate depends on `embassy-executor` and `embassy-net`.
#[macro_export]
macro_rules! board_tasks {
    (driver: $driver:ty, console: $console:ty, signals: $signals:ty $(,)?) => {
        #[embassy_executor::task]
        async fn net(mut runner: ::embassy_net::Runner<'static, $crate::shared_nic::NetPort<'static, $driver>>) -> ! {
            runner.run().await
        }

        #[embassy_executor::task]
        async fn console(input: $console, cell: &'static $crate::tasks::RelayCell) -> ! {
            $crate::tasks::console(input, cell).await
        }

        #[embassy_executor::task]
        async fn host_signals(signals: $signals, cell: &'static $crate::tasks::RelayCell) -> ! {
            $crate::tasks::host_signals(signals, cell).await
        }

        #[embassy_executor::task]
        async fn arp(
            nic: &'static $crate::shared_nic::SharedNic<$driver>,
            stack: ::embassy_net::Stack<'static>,
            cell: &'static $crate::tasks::RelayCell,
        ) -> ! {
            $crate::tasks::arp(nic, stack, cell).await
        }

        #[embassy_executor::task]
        async fn relay(nic: &'static $crate::shared_nic::SharedNic<$driver>, cell: &'static $crate::tasks::RelayCell) -> ! {
            $crate::tasks::relay(nic, cell).await
        }
    };
}
