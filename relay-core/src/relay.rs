//! The relay state machine, sans-IO in the manner of quinn-proto.
//!
//! The caller owns every clock, socket and interrupt. It feeds console bytes
//! ([`Relay::handle_console`]) and board signals ([`Relay::handle_signal`]),
//! then drains frames with [`Relay::poll_transmit`] until it returns `None`,
//! and sleeps until [`Relay::poll_timeout`] (or the next input).
//!
//! ```text
//! console bytes ─▶ ConsoleScanner ─▶ ContextRing (every line, numbered)
//!                                 └▶ Detector ─▶ Triggered / Confirmed
//!
//! poll_transmit: 1. the context flush: every ring line not yet sent, up to and
//!                   including the trigger line, at full speed
//!                2. the signed report, when a copy is due (backoff)
//!                3. the lines after the trigger (`after_lines`), at full speed
//!                4. mirror: the remaining lines as extended netconsole,
//!                   rate-limited by a token bucket (if mirror is on)
//!                each datagram goes to every collector in turn
//! ```
//!
//! # One store, two cursors
//!
//! Lines are never copied into a transmit queue. Every console line goes into
//! the [`ContextRing`] with a 64-bit line number (its extended-netconsole
//! sequence number); a cursor says which line is sent next. The ring bounds the
//! backlog: when the mirror falls so far behind that a line is evicted before it
//! was sent, the loss is counted ([`RelayStats::lines_lost`]) and the cursor
//! jumps to the oldest line still held. A trigger moves the cursor back to the
//! oldest line not yet sent, which is the context flush.
//!
//! # Wrapping
//!
//! Line numbers (u64), report sequences (u32), the IPv4 ID (u16, in the frame
//! template) and every statistic wrap. Line numbers are compared by their
//! wrapping difference, report freshness by serial-number arithmetic on the
//! bridge (see [`report::RelayFreshness`]), so a wrap never locks anything up.
use crate::detect::{Certainty, Detector, DetectorConfig, Event, HostSignal, Kind};
use crate::frame::{FrameTemplate, MacAddr};
use crate::netconsole::{ExtRecord, MAX_PRINT_CHUNK};
use crate::report::{self, Report, MAX_NODE_NAME, MAX_RELAY_ID, MAX_REPORT_LEN, MAX_TRIGGER_LINE};
use crate::scanner::{ConsoleScanner, ContextRing, Line};
use crate::{Duration, Instant};

/// Most collectors a relay sends to.
pub const MAX_COLLECTORS: usize = 4;

/// Default context ring size in bytes.
pub const DEFAULT_CONTEXT_BYTES: usize = 8192;

/// Default longest console line the scanner keeps whole.
pub const DEFAULT_LINE_MAX: usize = 1024;

/// Largest datagram the relay builds: an unfragmented extended netconsole
/// datagram is at most [`MAX_PRINT_CHUNK`] bytes, a report at most
/// [`MAX_REPORT_LEN`].
pub const MAX_DATAGRAM: usize = if MAX_PRINT_CHUNK > MAX_REPORT_LEN {
    MAX_PRINT_CHUNK
} else {
    MAX_REPORT_LEN
};

/// printk level for console lines that carry no `<N>` prefix: the kernel's
/// default message level (CONFIG_MESSAGE_LOGLEVEL_DEFAULT = 4, KERN_WARNING).
const DEFAULT_LEVEL: u8 = 4;

/// One line in micro-tokens: the token bucket counts millionths of a line so
/// that refill is `elapsed_us * lines_per_sec` without a division.
const LINE_COST: u64 = 1_000_000;

/// Half the u64 line-number space: "a is before b" when `b - a` (wrapping) is
/// in `1..HALF`.
const HALF: u64 = 1 << 63;

/// Relay settings. Build with [`RelayConfig::new`], adjust the public fields,
/// then pass to [`Relay::new`], which validates them. `Debug` never prints
/// the key.
#[derive(Clone)]
pub struct RelayConfig {
    /// This relay's id (names its key in the bridge's keyring).
    pub relay_id: heapless::String<MAX_RELAY_ID>,
    /// The Kubernetes node whose console this relay watches.
    pub node_name: heapless::String<MAX_NODE_NAME>,
    /// The relay's 32-byte HMAC key.
    pub key: report::Key,
    /// The relay's persistent boot counter, bumped by the firmware at every
    /// start; with the report sequence it makes every report fresh.
    pub boot_counter: u32,
    /// One frame template per collector (1 to [`MAX_COLLECTORS`]).
    pub collectors: heapless::Vec<FrameTemplate, MAX_COLLECTORS>,
    /// Mirror every console line as extended netconsole (rate-limited). Off:
    /// only the last-gasp context, trigger and after-lines are sent.
    pub mirror: bool,
    /// Mirror rate limit: sustained lines per second.
    pub mirror_lines_per_sec: u32,
    /// Mirror rate limit: burst size in lines.
    pub mirror_burst: u32,
    /// Copies of each report (the first plus repeats); 8 by default.
    pub report_copies: u8,
    /// Gap between the first and second copy; each later gap doubles.
    pub backoff_initial: Duration,
    /// Longest gap between two copies.
    pub backoff_max: Duration,
    /// Lines forwarded at full speed after a trigger (the rest of the panic).
    pub after_lines: u16,
    /// The detector's settings (its `silence` confirms a suspected panic).
    pub detector: DetectorConfig,
    /// Number of the first console line (its extended-netconsole sequence).
    pub first_line_seq: u64,
    /// Sequence of the first report in this relay boot.
    pub first_report_seq: u32,
}

/// Why a [`RelayConfig`] was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// The relay id is empty or longer than [`MAX_RELAY_ID`] bytes.
    RelayId,
    /// The node name is empty or longer than [`MAX_NODE_NAME`] bytes.
    NodeName,
    /// No collector configured.
    NoCollector,
    /// `report_copies` is 0.
    NoReportCopies,
    /// Mirror is on with a rate or burst of 0 lines.
    MirrorRate,
    /// `backoff_max` is shorter than `backoff_initial`.
    Backoff,
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            ConfigError::RelayId => "relay id must be 1..=64 bytes",
            ConfigError::NodeName => "node name must be 1..=253 bytes",
            ConfigError::NoCollector => "at least one collector is required",
            ConfigError::NoReportCopies => "report_copies must be at least 1",
            ConfigError::MirrorRate => "mirror rate and burst must be at least 1 line",
            ConfigError::Backoff => "backoff_max must not be shorter than backoff_initial",
        })
    }
}

impl core::fmt::Debug for RelayConfig {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RelayConfig")
            .field("relay_id", &self.relay_id)
            .field("node_name", &self.node_name)
            .field("key", &"<redacted>")
            .field("boot_counter", &self.boot_counter)
            .field("collectors", &self.collectors)
            .field("mirror", &self.mirror)
            .field("mirror_lines_per_sec", &self.mirror_lines_per_sec)
            .field("mirror_burst", &self.mirror_burst)
            .field("report_copies", &self.report_copies)
            .field("backoff_initial", &self.backoff_initial)
            .field("backoff_max", &self.backoff_max)
            .field("after_lines", &self.after_lines)
            .field("detector", &self.detector)
            .field("first_line_seq", &self.first_line_seq)
            .field("first_report_seq", &self.first_report_seq)
            .finish()
    }
}

impl RelayConfig {
    /// Settings with the defaults: mirror on at 200 lines/s (burst 64),
    /// 8 report copies over about 2 s (16 ms doubling, at most 1 s apart),
    /// 20 lines after the trigger, the detector's defaults.
    pub fn new(
        relay_id: &str,
        node_name: &str,
        key: report::Key,
        boot_counter: u32,
        collector: FrameTemplate,
    ) -> Result<Self, ConfigError> {
        let mut id = heapless::String::new();
        id.push_str(relay_id).map_err(|_| ConfigError::RelayId)?;
        let mut node = heapless::String::new();
        node.push_str(node_name)
            .map_err(|_| ConfigError::NodeName)?;
        let mut collectors = heapless::Vec::new();
        collectors
            .push(collector)
            .map_err(|_| ConfigError::NoCollector)?;
        Ok(RelayConfig {
            relay_id: id,
            node_name: node,
            key,
            boot_counter,
            collectors,
            mirror: true,
            mirror_lines_per_sec: 200,
            mirror_burst: 64,
            report_copies: 8,
            backoff_initial: Duration::from_millis(16),
            backoff_max: Duration::from_secs(1),
            after_lines: 20,
            detector: DetectorConfig::default(),
            first_line_seq: 0,
            first_report_seq: 0,
        })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.relay_id.is_empty() {
            return Err(ConfigError::RelayId);
        }
        if self.node_name.is_empty() {
            return Err(ConfigError::NodeName);
        }
        if self.collectors.is_empty() {
            return Err(ConfigError::NoCollector);
        }
        if self.report_copies == 0 {
            return Err(ConfigError::NoReportCopies);
        }
        if self.mirror && (self.mirror_lines_per_sec == 0 || self.mirror_burst == 0) {
            return Err(ConfigError::MirrorRate);
        }
        if self.backoff_max < self.backoff_initial {
            return Err(ConfigError::Backoff);
        }
        Ok(())
    }
}

/// What the relay did and lost. Every counter wraps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Console lines scanned.
    pub lines: u32,
    /// Lines sent (each counted once, however many collectors).
    pub lines_sent: u32,
    /// Lines evicted from the context ring before they could be sent (mirror
    /// backlog or a flush larger than the link could drain).
    pub lines_lost: u32,
    /// Frames handed out by [`Relay::poll_transmit`].
    pub frames: u32,
    /// Datagrams that could not be encoded or framed (payload too large for a
    /// collector's MTU, caller's buffer too small); skipped, never retried.
    pub tx_errors: u32,
    /// Detector triggers (fatal and non-fatal, console and board signals).
    pub triggers: u32,
    /// Distinct reports (a confirmation is a new report).
    pub reports: u32,
    /// Report copies sent (each counted once, however many collectors).
    pub report_copies: u32,
    /// Reports replaced by a newer one before all their copies were sent.
    pub reports_superseded: u32,
    /// Times the detector re-armed (the host came back).
    pub rearms: u32,
}

/// The report being repeated.
#[derive(Clone, Debug)]
struct ActiveReport {
    sequence: u32,
    kind: Kind,
    certainty: Certainty,
    trigger_line: heapless::String<MAX_TRIGGER_LINE>,
    host_ts_usec: Option<u64>,
    context_lines: u16,
    /// Copies sent so far; the next copy's repeat index.
    sent: u8,
    /// When the next copy is due.
    due: Instant,
    /// Gap after the next copy.
    gap: Duration,
}

/// What the cached datagram in `out` is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pending {
    /// Nothing cached.
    None,
    /// Fragment `frag` of the line at the cursor; `last` when it is known to
    /// be the line's last datagram.
    Line {
        /// Fragment index.
        frag: u16,
        /// No fragment follows.
        last: bool,
    },
    /// A report copy.
    Report,
}

/// The relay with the default sizes: an 8 KiB context ring and 1 KiB lines.
pub type Relay = RelayWith<DEFAULT_CONTEXT_BYTES, DEFAULT_LINE_MAX>;

/// The relay state machine, with the context ring (`CONTEXT` bytes) and the
/// longest whole console line (`LINE_MAX` bytes) sized at compile time.
/// Everything is inline: no allocation, one `size_of` of static RAM.
#[derive(Clone, Debug)]
pub struct RelayWith<const CONTEXT: usize, const LINE_MAX: usize> {
    scanner: ConsoleScanner<LINE_MAX>,
    core: Core<CONTEXT>,
}

/// Everything but the scanner, so that the scanner's line callback can borrow
/// it mutably.
#[derive(Clone, Debug)]
struct Core<const CONTEXT: usize> {
    cfg: RelayConfig,
    /// `cfg.key`, pre-hashed for HMAC.
    signer: report::Signer,
    detector: Detector,
    ring: ContextRing<CONTEXT>,
    /// Number of the next line pushed into the ring.
    next_seq: u64,
    /// Next line to send (or skip).
    cursor: u64,
    /// Next fragment of the line at the cursor (0 for a fresh line).
    next_frag: u16,
    /// One past the newest line actually sent.
    sent_end: u64,
    /// Lines before this one must go out before the report's first copy.
    flush_end: u64,
    /// Lines before this one are sent without the rate limit.
    unlimited_end: u64,
    report: Option<ActiveReport>,
    next_report_seq: u32,
    /// Token bucket, in millionths of a line.
    tokens: u64,
    refilled_at: Instant,
    /// The cached datagram, sent to every collector in turn.
    out: [u8; MAX_DATAGRAM],
    out_len: usize,
    pending: Pending,
    next_collector: usize,
    /// Latest `now` seen, for [`RelayWith::poll_timeout`].
    now: Instant,
    stats: RelayStats,
}

/// `a` comes before `b` in wrapping line-number order.
const fn before(a: u64, b: u64) -> bool {
    let d = b.wrapping_sub(a);
    d != 0 && d < HALF
}

impl Relay {
    /// A relay with the default sizes ([`DEFAULT_CONTEXT_BYTES`],
    /// [`DEFAULT_LINE_MAX`]); see [`RelayWith::with_sizes`].
    pub fn new(cfg: RelayConfig) -> Result<Self, ConfigError> {
        Self::with_sizes(cfg)
    }
}

impl<const CONTEXT: usize, const LINE_MAX: usize> RelayWith<CONTEXT, LINE_MAX> {
    /// A relay with the sizes of its type; fails on an invalid configuration.
    pub fn with_sizes(cfg: RelayConfig) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let seq = cfg.first_line_seq;
        let tokens = u64::from(cfg.mirror_burst).saturating_mul(LINE_COST);
        Ok(RelayWith {
            scanner: ConsoleScanner::new(),
            core: Core {
                detector: Detector::new(cfg.detector),
                ring: ContextRing::new(),
                next_seq: seq,
                cursor: seq,
                next_frag: 0,
                sent_end: seq,
                flush_end: seq,
                unlimited_end: seq,
                report: None,
                next_report_seq: cfg.first_report_seq,
                tokens,
                refilled_at: Instant(0),
                out: [0; MAX_DATAGRAM],
                out_len: 0,
                pending: Pending::None,
                next_collector: 0,
                now: Instant(0),
                stats: RelayStats::default(),
                signer: report::Signer::new(&cfg.key),
                cfg,
            },
        })
    }

    /// Feed console bytes as they arrive, in chunks of any size.
    pub fn handle_console(&mut self, bytes: &[u8], now: Instant) {
        let core = &mut self.core;
        core.now = now;
        self.scanner.push(bytes, |line| core.on_line(&line, now));
    }

    /// Feed a board signal (power lost, CATERR, watchdog, power restored).
    pub fn handle_signal(&mut self, sig: HostSignal, now: Instant) {
        self.core.now = now;
        if let Some(ev) = self.core.detector.on_signal(sig, now) {
            let text = match sig {
                HostSignal::PowerLost => "board: host power lost",
                HostSignal::PowerRestored => "board: host power restored",
                HostSignal::Caterr => "board: CATERR/IERR asserted",
                HostSignal::WatchdogExpired => "board: host watchdog expired",
            };
            let end = self.core.next_seq;
            self.core.on_event(ev, text.as_bytes(), end, now);
        }
    }

    /// Run the timers due at `now` (the detector's silence confirmation).
    /// [`poll_transmit`](Self::poll_transmit) calls it too.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.core.handle_timeout(now);
    }

    /// Write the next frame (Ethernet header to UDP payload) into `buf` and
    /// return its length, or `None` when nothing is due at `now`. Call it until
    /// it returns `None` after every input and at [`poll_timeout`](Self::poll_timeout).
    /// `buf` should hold [`crate::frame::MAX_FRAME_LEN`] bytes; a frame that does
    /// not fit is skipped and counted in [`RelayStats::tx_errors`].
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        self.core.poll_transmit(now, buf)
    }

    /// When to call [`poll_transmit`](Self::poll_transmit) next if no input
    /// arrives: the next report copy, the silence timer, a mirror token, or the
    /// latest `now` if a frame is ready already.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.core.poll_timeout()
    }

    /// Point collector `index` at a new MAC (after an ARP/NDP refresh).
    /// Returns `false` if there is no such collector.
    pub fn set_collector_mac(&mut self, index: usize, mac: MacAddr) -> bool {
        match self.core.cfg.collectors.get_mut(index) {
            Some(t) => {
                t.set_dst_mac(mac);
                true
            }
            None => false,
        }
    }

    /// Switch mirroring on or off at run time. Fails with
    /// [`ConfigError::MirrorRate`] if the configured rate is 0.
    pub fn set_mirror(&mut self, on: bool) -> Result<(), ConfigError> {
        let c = &mut self.core.cfg;
        if on && (c.mirror_lines_per_sec == 0 || c.mirror_burst == 0) {
            return Err(ConfigError::MirrorRate);
        }
        c.mirror = on;
        Ok(())
    }

    /// The configuration in force.
    pub fn config(&self) -> &RelayConfig {
        &self.core.cfg
    }

    /// Counters of what was sent and lost.
    pub fn stats(&self) -> &RelayStats {
        &self.core.stats
    }

    /// The detector (its phase and guard counters).
    pub fn detector(&self) -> &Detector {
        &self.core.detector
    }

    /// The scanner (its line and truncation counters).
    pub fn scanner(&self) -> &ConsoleScanner<LINE_MAX> {
        &self.scanner
    }

    /// The pre-trigger context currently held.
    pub fn context(&self) -> &ContextRing<CONTEXT> {
        &self.core.ring
    }
}

impl<const CONTEXT: usize> Core<CONTEXT> {
    fn on_line(&mut self, line: &Line<'_>, now: Instant) {
        let seq = self.next_seq;
        self.ring.push(line);
        self.next_seq = seq.wrapping_add(1);
        self.stats.lines = self.stats.lines.wrapping_add(1);
        if let Some(ev) = self.detector.on_line(line, now) {
            self.on_event(ev, line.text, seq.wrapping_add(1), now);
        }
    }

    /// Number of the oldest line the ring still holds.
    fn oldest_seq(&self) -> u64 {
        self.next_seq.wrapping_sub(self.ring.len() as u64)
    }

    /// If the cursor points at a line the ring no longer holds, count the
    /// lines lost and move to the oldest one held.
    fn clamp_cursor(&mut self) {
        let oldest = self.oldest_seq();
        if before(self.cursor, oldest) {
            let lost = oldest.wrapping_sub(self.cursor);
            let lost = u32::try_from(lost).unwrap_or(u32::MAX);
            self.stats.lines_lost = self.stats.lines_lost.wrapping_add(lost);
            self.cursor = oldest;
            // A half-sent line is gone too.
            self.next_frag = 0;
            if matches!(self.pending, Pending::Line { .. }) {
                self.pending = Pending::None;
            }
        }
    }

    /// `flush_end`: lines before it (the trigger line included) are sent
    /// before the report.
    fn on_event(&mut self, ev: Event, trigger_text: &[u8], flush_end: u64, now: Instant) {
        match ev {
            Event::Triggered {
                kind,
                certainty,
                host_ts_usec,
                ..
            } => {
                self.stats.triggers = self.stats.triggers.wrapping_add(1);
                self.clamp_cursor();
                // Rewind to the oldest line not yet sent: with mirror off
                // that is the whole ring; with mirror on, the backlog.
                let from = if before(self.sent_end, self.oldest_seq()) {
                    self.oldest_seq()
                } else {
                    self.sent_end
                };
                if before(from, self.cursor) {
                    self.cursor = from;
                    self.next_frag = 0;
                    if matches!(self.pending, Pending::Line { .. }) {
                        self.pending = Pending::None;
                    }
                }
                self.flush_end = flush_end;
                self.unlimited_end = flush_end.wrapping_add(u64::from(self.cfg.after_lines));
                let context = self.ring.len().saturating_sub(1);
                let mut line = heapless::String::new();
                push_lossy(&mut line, trigger_text);
                self.start_report(ActiveReport {
                    sequence: 0,
                    kind,
                    certainty,
                    trigger_line: line,
                    host_ts_usec,
                    context_lines: u16::try_from(context).unwrap_or(u16::MAX),
                    sent: 0,
                    due: now,
                    gap: self.cfg.backoff_initial,
                });
            }
            Event::Confirmed { kind, .. } => {
                // The confirmation is a new report with the trigger's line.
                let next = match &self.report {
                    Some(r) => {
                        let mut c = r.clone();
                        c.kind = kind;
                        c
                    }
                    None => ActiveReport {
                        sequence: 0,
                        kind,
                        certainty: Certainty::Confirmed,
                        trigger_line: heapless::String::new(),
                        host_ts_usec: None,
                        context_lines: 0,
                        sent: 0,
                        due: now,
                        gap: self.cfg.backoff_initial,
                    },
                };
                self.start_report(ActiveReport {
                    certainty: Certainty::Confirmed,
                    sent: 0,
                    due: now,
                    gap: self.cfg.backoff_initial,
                    ..next
                });
            }
            Event::Rearmed { .. } => {
                self.stats.rearms = self.stats.rearms.wrapping_add(1);
            }
        }
    }

    fn start_report(&mut self, mut r: ActiveReport) {
        if let Some(old) = &self.report {
            if old.sent < self.cfg.report_copies {
                self.stats.reports_superseded = self.stats.reports_superseded.wrapping_add(1);
            }
        }
        if self.pending == Pending::Report {
            // The old report's copy is abandoned mid-way; the new one starts.
            self.pending = Pending::None;
        }
        r.sequence = self.next_report_seq;
        self.next_report_seq = self.next_report_seq.wrapping_add(1);
        self.stats.reports = self.stats.reports.wrapping_add(1);
        self.report = Some(r);
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        if let Some(ev) = self.detector.poll(now) {
            self.on_event(ev, &[], self.next_seq, now);
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_since(self.refilled_at).as_micros();
        let add = elapsed.saturating_mul(u64::from(self.cfg.mirror_lines_per_sec));
        let cap = u64::from(self.cfg.mirror_burst).saturating_mul(LINE_COST);
        self.tokens = self.tokens.saturating_add(add).min(cap);
        self.refilled_at = now;
    }

    fn report_due(&self, now: Instant) -> bool {
        self.report
            .as_ref()
            .is_some_and(|r| r.sent < self.cfg.report_copies && r.due <= now)
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        self.handle_timeout(now);
        self.refill(now);
        // Each turn either returns a frame or consumes one cached datagram
        // or collector slot; errors are counted and skipped, never retried.
        // The bound only guards against a logic error turning into a hang.
        for _ in 0..64 {
            if self.pending == Pending::None && !self.prepare(now) {
                return None;
            }
            match self.cfg.collectors.get_mut(self.next_collector) {
                Some(t) => {
                    let payload = self.out.get(..self.out_len).unwrap_or(&[]);
                    let res = t.write(payload, buf);
                    self.next_collector = self.next_collector.saturating_add(1);
                    match res {
                        Ok(n) => {
                            self.stats.frames = self.stats.frames.wrapping_add(1);
                            return Some(n);
                        }
                        Err(_) => self.stats.tx_errors = self.stats.tx_errors.wrapping_add(1),
                    }
                }
                None => self.finish_datagram(),
            }
        }
        None
    }

    /// Every collector has the cached datagram: move on.
    fn finish_datagram(&mut self) {
        self.next_collector = 0;
        match self.pending {
            Pending::Line { frag, last } => {
                self.pending = Pending::None;
                if last {
                    self.line_done();
                } else {
                    // The next fragment of the same line, if any (prepare finds out).
                    self.next_frag = frag.saturating_add(1);
                }
            }
            Pending::Report => {
                self.pending = Pending::None;
                let copies = self.cfg.report_copies;
                let max = self.cfg.backoff_max;
                let now = self.now;
                if let Some(r) = &mut self.report {
                    r.sent = r.sent.saturating_add(1).min(copies);
                    r.due = now.saturating_add(r.gap);
                    r.gap = Duration(r.gap.as_micros().saturating_mul(2)).min(max);
                }
                self.stats.report_copies = self.stats.report_copies.wrapping_add(1);
            }
            Pending::None => {}
        }
    }
}

impl<const CONTEXT: usize> Core<CONTEXT> {
    /// The line at the cursor has been sent (or skipped after an error).
    fn line_done(&mut self) {
        self.cursor = self.cursor.wrapping_add(1);
        self.sent_end = self.cursor;
        self.next_frag = 0;
    }

    /// A line is waiting at the cursor.
    fn line_waiting(&self) -> bool {
        before(self.cursor, self.next_seq)
    }

    /// Cache the next datagram in `out`; `false` if nothing is due at `now`.
    fn prepare(&mut self, now: Instant) -> bool {
        self.clamp_cursor();
        // Each turn returns or moves the cursor past one line; there are at
        // most `ring.len()` lines after the clamp.
        let turns = self.ring.len().saturating_add(2);
        for _ in 0..turns {
            let waiting = self.line_waiting();
            // 1. The context flush, up to and including the trigger line.
            if waiting && before(self.cursor, self.flush_end) {
                if self.encode_line() {
                    return true;
                }
                continue;
            }
            // 2. A report copy.
            if self.report_due(now) {
                if self.encode_report() {
                    return true;
                }
                continue;
            }
            if !waiting {
                return false;
            }
            // 3. The lines after the trigger, then 4. the mirror.
            let send = if before(self.cursor, self.unlimited_end) || self.next_frag > 0 {
                true
            } else if self.cfg.mirror {
                if self.tokens < LINE_COST {
                    return false;
                }
                self.tokens = self.tokens.saturating_sub(LINE_COST);
                true
            } else {
                // Mirror off: these lines stay in the ring as context only.
                self.cursor = self.next_seq;
                self.next_frag = 0;
                return false;
            };
            if send && self.encode_line() {
                return true;
            }
        }
        false
    }

    /// Encode fragment `next_frag` of the line at the cursor into `out`.
    /// `false` when the line had no such fragment (it is done) or could not
    /// be encoded (counted, skipped).
    fn encode_line(&mut self) -> bool {
        let back = self.next_seq.wrapping_sub(self.cursor);
        let index = (self.ring.len() as u64).checked_sub(back);
        let line = index
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| self.ring.iter().nth(i));
        let Some(line) = line else {
            // Not in the ring (cannot happen after clamp_cursor): skip it.
            self.stats.lines_lost = self.stats.lines_lost.wrapping_add(1);
            self.line_done();
            return false;
        };
        let level = u32::from(line.level.unwrap_or(DEFAULT_LEVEL) & 7);
        let facility = u32::from(line.facility.unwrap_or(0));
        let record = ExtRecord {
            release: None,
            prefix: facility.wrapping_shl(3) | level,
            seq: self.cursor,
            ts_usec: line.ts_usec.unwrap_or(0),
            cont: false,
            text: line.text,
            dict: &[],
        };
        let mut dgrams = record.datagrams();
        let last_if_whole = !dgrams.is_fragmented();
        let mut got = None;
        for _ in 0..=self.next_frag {
            got = dgrams.next_into(&mut self.out);
            if !matches!(got, Some(Ok(_))) {
                break;
            }
        }
        match got {
            Some(Ok(n)) => {
                if self.next_frag == 0 {
                    self.stats.lines_sent = self.stats.lines_sent.wrapping_add(1);
                }
                self.out_len = n;
                self.pending = Pending::Line {
                    frag: self.next_frag,
                    last: last_if_whole,
                };
                self.next_collector = 0;
                true
            }
            None => {
                self.line_done();
                false
            }
            Some(Err(_)) => {
                self.stats.tx_errors = self.stats.tx_errors.wrapping_add(1);
                self.line_done();
                false
            }
        }
    }

    /// Sign the next copy of the active report into `out`.
    fn encode_report(&mut self) -> bool {
        let Some(r) = &self.report else {
            return false;
        };
        let report = Report {
            version: report::VERSION,
            relay_id: &self.cfg.relay_id,
            node_name: &self.cfg.node_name,
            boot_counter: self.cfg.boot_counter,
            sequence: r.sequence,
            kind: r.kind,
            certainty: r.certainty,
            trigger_line: &r.trigger_line,
            host_ts_usec: r.host_ts_usec,
            context_lines: r.context_lines,
            repeat_index: r.sent,
        };
        match self.signer.encode_signed(&report, &mut self.out) {
            Ok(n) => {
                self.out_len = n;
                self.pending = Pending::Report;
                self.next_collector = 0;
                true
            }
            Err(_) => {
                // Cannot happen (fields are bounded by their types); count
                // and retire the copy so the relay never spins on it.
                self.stats.tx_errors = self.stats.tx_errors.wrapping_add(1);
                self.pending = Pending::Report;
                self.next_collector = usize::MAX;
                self.finish_datagram();
                false
            }
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let now = self.now;
        let waiting = self.line_waiting();
        let line_ready = waiting
            && (before(self.cursor, self.flush_end)
                || before(self.cursor, self.unlimited_end)
                || self.next_frag > 0
                || (self.cfg.mirror && self.tokens >= LINE_COST));
        if self.pending != Pending::None || line_ready || self.report_due(now) {
            return Some(now);
        }
        let mut at = self.detector.poll_timeout();
        let mut earliest = |t: Instant| {
            at = Some(match at {
                Some(a) if a <= t => a,
                _ => t,
            });
        };
        if let Some(r) = &self.report {
            if r.sent < self.cfg.report_copies {
                earliest(r.due);
            }
        }
        if waiting && self.cfg.mirror {
            // Time until the bucket holds one line's worth of tokens.
            let need = LINE_COST.saturating_sub(self.tokens);
            let rate = u64::from(self.cfg.mirror_lines_per_sec).max(1);
            let wait = need.div_ceil(rate);
            earliest(self.refilled_at.saturating_add(Duration(wait)));
        }
        at
    }
}

/// Append `bytes` to `out` as UTF-8, replacing invalid sequences with U+FFFD
/// and stopping (on a character boundary) when `out` is full.
fn push_lossy<const N: usize>(out: &mut heapless::String<N>, mut bytes: &[u8]) {
    loop {
        let (valid, rest) = match core::str::from_utf8(bytes) {
            Ok(s) => (s, None),
            Err(e) => {
                let (v, r) = bytes
                    .split_at_checked(e.valid_up_to())
                    .unwrap_or((&[], bytes));
                // `None`: an incomplete sequence at the end; drop it.
                let skip = e.error_len().unwrap_or(r.len());
                (
                    core::str::from_utf8(v).unwrap_or(""),
                    Some(r.get(skip..).unwrap_or(&[])),
                )
            }
        };
        let room = N.saturating_sub(out.len());
        let part = report::truncate_utf8(valid, room);
        if out.push_str(part).is_err() || part.len() < valid.len() {
            return;
        }
        let Some(rest) = rest else { return };
        if out.push('\u{FFFD}').is_err() || rest.is_empty() {
            return;
        }
        bytes = rest;
    }
}
