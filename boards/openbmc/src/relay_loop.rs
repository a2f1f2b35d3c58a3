//! The relay loop: one thread owns relay-core's sans-IO state machine and is
//! its only caller. Console bytes, host signals and MAC updates arrive on one
//! bounded queue; frames go to a [`FrameSink`]; the loop sleeps until the
//! next input or the state machine's own deadline, whichever comes first.
use crate::console::ConsoleEvent;
use crate::net::FrameSink;
use relay_core::detect::HostSignal;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

/// Depth of the relay loop's input queue (each console item is up to 4 KiB).
pub const QUEUE_DEPTH: usize = 256;

/// Everything that wakes the relay loop.
#[derive(Debug)]
pub enum Input {
    /// From the console reader.
    Console(ConsoleEvent),
    /// A host signal (D-Bus watcher).
    Signal(HostSignal),
    /// Collector `index`'s next-hop MAC changed.
    CollectorMac(usize, [u8; 6]),
    /// SIGTERM/SIGINT: send what is due, then stop.
    Shutdown,
}

/// The calls the loop makes into relay-core's `Relay`, as a trait so the loop
/// does not care about the relay's const parameters.
pub trait Engine {
    /// Feed console bytes.
    fn handle_console(&mut self, bytes: &[u8], now: relay_core::Instant);
    /// Feed a host signal.
    fn handle_signal(&mut self, sig: HostSignal, now: relay_core::Instant);
    /// The next frame due at `now`, written into `buf`.
    fn poll_transmit(&mut self, now: relay_core::Instant, buf: &mut [u8]) -> Option<usize>;
    /// When the engine next wants to be polled without new input.
    fn poll_timeout(&self) -> Option<relay_core::Instant>;
    /// Patch collector `index`'s destination MAC.
    fn set_collector_mac(&mut self, index: usize, mac: [u8; 6]);
    /// Log the engine's own counters (at shutdown).
    fn log_stats(&self) {}
}

/// The relay's monotonic clock: microseconds since the loop started.
#[derive(Clone, Copy, Debug)]
pub struct Clock(std::time::Instant);

impl Clock {
    /// A clock starting now.
    pub fn start() -> Self {
        Clock(std::time::Instant::now())
    }
    /// relay-core's idea of now.
    pub fn now(&self) -> relay_core::Instant {
        relay_core::Instant(u64::try_from(self.0.elapsed().as_micros()).unwrap_or(u64::MAX))
    }
}

/// Counters of one loop run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoopStats {
    /// Frames handed to the sink.
    pub frames_sent: u64,
    /// Frames the sink refused (counted, logged, not retried).
    pub frames_failed: u64,
    /// Console bytes fed to the engine.
    pub console_bytes: u64,
    /// Host signals fed to the engine.
    pub signals: u64,
}

/// Largest frame relay-core can produce, with margin for a VLAN tag.
pub const FRAME_BUF: usize = 1536;

/// Run until [`Input::Shutdown`] or until every input sender is gone, then
/// send what is due and return.
pub fn run<E: Engine, S: FrameSink>(engine: &mut E, sink: &mut S, rx: &Receiver<Input>, clock: Clock) -> LoopStats {
    let mut stats = LoopStats::default();
    let mut buf = vec![0u8; FRAME_BUF];
    'outer: loop {
        transmit_due(engine, sink, &mut buf, clock, &mut stats);
        let wait = engine
            .poll_timeout()
            .map(|t| Duration::from_micros(t.saturating_since(clock.now()).as_micros()))
            .unwrap_or(Duration::from_secs(3600));
        let first = match rx.recv_timeout(wait) {
            Ok(input) => Some(input),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        // Drain whatever else queued up before polling again: a burst of
        // console chunks is fed in one go.
        for input in first.into_iter().chain(std::iter::from_fn(|| rx.try_recv().ok())) {
            if !feed(engine, input, clock, &mut stats) {
                break 'outer;
            }
        }
    }
    transmit_due(engine, sink, &mut buf, clock, &mut stats);
    engine.log_stats();
    stats
}

/// Feed one input; false on shutdown.
fn feed<E: Engine>(engine: &mut E, input: Input, clock: Clock, stats: &mut LoopStats) -> bool {
    match input {
        Input::Console(ConsoleEvent::Bytes(b)) => {
            stats.console_bytes += b.len() as u64;
            engine.handle_console(&b, clock.now());
        }
        Input::Console(ConsoleEvent::Connected | ConsoleEvent::Lost(_)) => {}
        Input::Signal(sig) => {
            stats.signals += 1;
            tracing::info!(signal = ?sig, "host signal");
            engine.handle_signal(sig, clock.now());
        }
        Input::CollectorMac(i, mac) => {
            tracing::info!(collector = i, mac = %crate::resolve::fmt_mac(&mac), "frame template MAC updated");
            engine.set_collector_mac(i, mac);
        }
        Input::Shutdown => return false,
    }
    true
}

fn transmit_due<E: Engine, S: FrameSink>(engine: &mut E, sink: &mut S, buf: &mut [u8], clock: Clock, stats: &mut LoopStats) {
    while let Some(n) = engine.poll_transmit(clock.now(), buf) {
        let Some(frame) = buf.get(..n) else {
            tracing::error!(len = n, "engine reported a frame longer than its buffer");
            stats.frames_failed += 1;
            continue;
        };
        match sink.send_frame(frame) {
            Ok(()) => stats.frames_sent += 1,
            Err(e) => {
                stats.frames_failed += 1;
                tracing::warn!(error = %e, len = n, failed = stats.frames_failed, "frame not sent");
            }
        }
    }
}
