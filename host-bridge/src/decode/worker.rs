//! A decode/detect worker. Each owns the state of the sources sharded to it (by a hash of the
//! source address), bounded by an LRU: the least recently seen source is evicted.
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lru::LruCache;
use relay_core::detect::Certainty;
use relay_core::netconsole::{ExtRepr, Reassembler};
use relay_core::report::{self, RelayFreshness};
use tokio::sync::mpsc;

use super::ext;
use crate::detect::builtin::{self, Builtin};
use crate::detect::{Detection, Rules};
use crate::incident::manager::{Detected, NodeRef, SourceId, ToManager};
use crate::incident::{Origin, Severity};
use crate::ingest::Batch;
use crate::serve::config::{canonical_ip, Cidr, Relay};
use crate::serve::metrics::{DropReason, Format, Metrics, Refusal};

/// Settings and shared read-only state of all workers.
pub struct DecodeCtx {
    /// Detection rules.
    pub rules: Rules,
    /// Keyring (relay id → key, node, addresses).
    pub keyring: Vec<Relay>,
    /// Trusted plain-netconsole networks.
    pub trusted: Vec<Cidr>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Lines kept for context before a trigger.
    pub context_before: usize,
    /// Lines sent after a trigger.
    pub context_after: u16,
    /// Silence that confirms a suspected fatal incident.
    pub confirm_after_silence: Duration,
    /// ncfrag timeout.
    pub reassembly_timeout: Duration,
    /// Longest line kept.
    pub max_line: usize,
    /// Per-worker source capacity.
    pub max_sources: usize,
    /// Newest (boot counter, sequence) accepted per relay id (seeded from the journal).
    pub freshness: std::sync::Mutex<std::collections::HashMap<String, RelayFreshness>>,
}

impl DecodeCtx {
    /// Who a source address belongs to, and whether its plain netconsole is trusted.
    pub fn node_of(&self, ip: IpAddr) -> NodeRef {
        let ip = canonical_ip(ip);
        let trusted = self.trusted.iter().any(|c| c.contains(ip));
        match self.keyring.iter().find(|r| r.addresses.contains(&ip)) {
            Some(r) => NodeRef {
                key: format!("node/{}", r.node),
                relay_id: Some(r.relay_id.clone()),
                keyring_node: Some(r.node.clone()),
                trusted,
            },
            None => NodeRef {
                key: format!("addr/{ip}"),
                relay_id: None,
                keyring_node: None,
                trusted,
            },
        }
    }
}

/// Out-of-order tolerance before a lower sequence number counts as a reset.
const REORDER_WINDOW: u64 = 64;

/// ncfrag reassembly per source: two records in flight, each up to the kernel's limit.
type Reasm = Reassembler<2, { relay_core::netconsole::CONSOLE_EXT_LOG_MAX }>;
/// Reassemblers alive at once per worker (they are 16 KiB each and exist only while a
/// record is incomplete): bounds memory under a fragment flood from many sources.
const MAX_REASSEMBLERS: usize = 1024;

/// relay-core's clock from a std `Instant` (micros since the worker's epoch).
fn rc_now(epoch: Instant, now: Instant) -> relay_core::Instant {
    relay_core::Instant(u64::try_from(now.saturating_duration_since(epoch).as_micros()).unwrap_or(u64::MAX))
}

struct SourceState {
    node: Arc<NodeRef>,
    ext_seen: bool,
    last_seq: Option<u64>,
    // Bit i: record `last_seq - i` was seen (duplicate suppression, as IPsec's replay window).
    seen: u64,
    frags: Option<Box<Reasm>>,
    partial: String,
    ring: VecDeque<String>,
    after_remaining: u16,
    fatal_seen: bool,
    confirmed: bool,
    last_activity: Instant,
}

/// One worker.
pub struct Worker {
    index: usize,
    rx: mpsc::Receiver<Batch>,
    to_manager: mpsc::Sender<ToManager>,
    ctx: Arc<DecodeCtx>,
    sources: LruCache<SourceId, SourceState>,
    lines: Vec<(String, bool)>,
    reassemblers: usize,
    lines_seen: u64,
    epoch: Instant,
    /// Heartbeat for the systemd watchdog: [`crate::serve::uptime_ms`] of the last loop.
    pub heartbeat: Arc<std::sync::atomic::AtomicU64>,
}

impl Worker {
    /// A worker reading batches from `rx`.
    pub fn new(index: usize, rx: mpsc::Receiver<Batch>, to_manager: mpsc::Sender<ToManager>, ctx: Arc<DecodeCtx>) -> Self {
        let cap = NonZeroUsize::new(ctx.max_sources.max(1)).unwrap_or(NonZeroUsize::MIN);
        Self {
            index,
            rx,
            to_manager,
            sources: LruCache::new(cap),
            ctx,
            lines: Vec::new(),
            reassemblers: 0,
            lines_seen: 0,
            epoch: Instant::now(),
            heartbeat: Arc::default(),
        }
    }

    /// Run until the ingest side closes.
    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                batch = self.rx.recv() => {
                    let Some(batch) = batch else { return };
                    let n = batch.items.len();
                    if let Some(g) = self.ctx.metrics.queue_depth.get(self.index) {
                        g.dec_by(i64::try_from(n).unwrap_or(i64::MAX));
                    }
                    let now = Instant::now();
                    for item in &batch.items {
                        let data = batch.buf.get(item.start..item.start + item.len).unwrap_or_default();
                        self.datagram((item.src, item.local_port), data, now);
                    }
                    self.ctx.metrics.lines.inc_by(std::mem::take(&mut self.lines_seen));
                    self.ctx.metrics.processed.inc_by(n as u64);
                }
                _ = tick.tick() => self.tick(Instant::now()),
            }
            self.heartbeat.store(crate::serve::uptime_ms(), std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn send(&self, msg: ToManager) {
        match self.to_manager.try_send(msg) {
            Ok(()) => {
                self.ctx.metrics.incident_queue_depth.inc();
            }
            Err(_) => self.ctx.metrics.dropped(DropReason::IncidentQueueFull, 1),
        };
    }

    /// Timeouts: ncfrag deadlines, and console silence that confirms a suspected panic.
    fn tick(&mut self, now: Instant) {
        let mut confirms = Vec::new();
        let mut expired = 0;
        let rc = rc_now(self.epoch, now);
        for (id, st) in self.sources.iter_mut() {
            if let Some(r) = st.frags.as_mut() {
                expired += r.poll(rc);
                if r.in_flight() == 0 {
                    st.frags = None;
                    self.reassemblers = self.reassemblers.saturating_sub(1);
                }
            }
            if st.fatal_seen && !st.confirmed && now.duration_since(st.last_activity) >= self.ctx.confirm_after_silence {
                st.confirmed = true;
                confirms.push(*id);
            }
        }
        self.ctx.metrics.reassembly_timeouts.inc_by(expired as u64);
        for source in confirms {
            self.send(ToManager::Confirm { source });
        }
    }

    fn state(&mut self, id: SourceId, now: Instant) -> &mut SourceState {
        let full = self.sources.len() >= self.sources.cap().get();
        let ctx = Arc::clone(&self.ctx);
        let mut inserted = false;
        let st = self.sources.get_or_insert_mut(id, || {
            inserted = true;
            SourceState {
                node: Arc::new(ctx.node_of(id.0.ip())),
                ext_seen: false,
                last_seq: None,
                seen: 0,
                frags: None,
                partial: String::new(),
                ring: VecDeque::with_capacity(ctx.context_before),
                after_remaining: 0,
                fatal_seen: false,
                confirmed: false,
                last_activity: now,
            }
        });
        if inserted {
            if full {
                ctx.metrics.sources_evicted.inc();
            } else {
                ctx.metrics.sources.inc();
            }
        }
        st
    }

    /// Handle one datagram from `id`.
    pub fn datagram(&mut self, id: SourceId, data: &[u8], now: Instant) {
        let metrics = Arc::clone(&self.ctx.metrics);
        if data.is_empty() {
            metrics.dropped(DropReason::Empty, 1);
            return;
        }
        // A prefix of the magic is a report cut short, not console text.
        if report::is_report(data) || report::MAGIC.starts_with(data) {
            self.report(id, data, now);
            return;
        }
        if let Ok(repr) = ExtRepr::parse(data) {
            self.extended(id, &repr, now);
            return;
        }
        if looks_binary(data) {
            metrics.refuse(Refusal::Garbage);
            return;
        }
        let max_line = self.ctx.max_line;
        let mut lines = std::mem::take(&mut self.lines);
        let st = self.state(id, now);
        if st.ext_seen {
            // An extended target never sends basic text: this is damage or forgery.
            metrics.refuse(Refusal::BadExtended);
            self.lines = lines;
            return;
        }
        st.last_activity = now;
        metrics.decoded(Format::Basic);
        let text = String::from_utf8_lossy(data);
        let mut rest: &str = &text;
        while let Some(nl) = rest.find('\n') {
            let (head, tail) = rest.split_at(nl);
            st.partial.push_str(head);
            let line = ext::clean_line(st.partial.as_bytes(), max_line);
            // Basic targets carry printk's `[ sec.usec] ` stamp: keep the kernel's words only.
            let line = match builtin::strip_stamp(&line) {
                s if s.len() == line.len() => line,
                s => s.to_owned(),
            };
            lines.push((line, true));
            st.partial.clear();
            rest = tail.get(1..).unwrap_or_default();
        }
        st.partial.push_str(rest);
        if st.partial.len() > max_line {
            // A line that never ends: emit what fits, flagged, and resync at the next newline.
            lines.push((format!("{} [truncated]", ext::clean_line(st.partial.as_bytes(), max_line)), true));
            st.partial.clear();
        }
        for (line, kernel) in lines.drain(..) {
            self.line(id, line, kernel, Origin::NetconsoleBasic);
        }
        self.lines = lines;
    }

    fn extended(&mut self, id: SourceId, d: &ExtRepr<'_>, now: Instant) {
        let metrics = Arc::clone(&self.ctx.metrics);
        let max_line = self.ctx.max_line;
        let rc = rc_now(self.epoch, now);
        let timeout = relay_core::Duration(u64::try_from(self.ctx.reassembly_timeout.as_micros()).unwrap_or(u64::MAX));
        let room = self.reassemblers < MAX_REASSEMBLERS;
        let st = self.state(id, now);
        st.ext_seen = true;
        st.last_activity = now;
        let mut new_boot = false;
        // Fragments of one record share its seq; the reassembler refuses their duplicates.
        let whole = d.frag.is_none();
        match st.last_seq {
            None => {
                st.last_seq = Some(d.seq);
                st.seen = 1;
            }
            Some(last) if d.seq > last => {
                let jump = d.seq - last;
                metrics.seq_holes.inc_by(jump - 1);
                st.seen = if jump >= 64 { 1 } else { (st.seen << jump) | 1 };
                st.last_seq = Some(d.seq);
            }
            Some(last) if d.seq + REORDER_WINDOW < last || (d.seq == 0 && last > REORDER_WINDOW) => {
                metrics.seq_resets.inc();
                st.last_seq = Some(d.seq);
                st.seen = 1;
                new_boot = true;
            }
            Some(last) => {
                // Late (reordered) or repeated: a record seen before is a network duplicate.
                let bit = 1u64.checked_shl(u32::try_from(last - d.seq).unwrap_or(u32::MAX)).unwrap_or(0);
                if whole && st.seen & bit != 0 {
                    metrics.decoded(Format::Extended);
                    metrics.seq_duplicates.inc();
                    return;
                }
                st.seen |= bit;
            }
        }
        let kernel = d.facility() == 0;
        let mut created = false;
        let body: std::borrow::Cow<'_, [u8]> = if d.frag.is_none() {
            metrics.decoded(Format::Extended);
            d.payload.into()
        } else {
            if st.frags.is_none() {
                if !room {
                    metrics.refuse(Refusal::BadFragment);
                    return;
                }
                st.frags = Some(Box::new(Reasm::new(timeout)));
                created = true;
            }
            let Some(r) = st.frags.as_mut() else { return };
            let evicted_before = r.stats().evicted;
            // Each datagram is either decoded or refused, never both.
            let out = match r.push(d, rc) {
                Ok(Some(whole)) => {
                    metrics.decoded(Format::Extended);
                    Some(whole.payload.to_vec())
                }
                Ok(None) => {
                    metrics.decoded(Format::Extended);
                    None
                }
                Err(e) => {
                    tracing::debug!(source = %id.0, "ncfrag refused: {e}");
                    metrics.refuse(Refusal::BadFragment);
                    None
                }
            };
            metrics.reassembly_timeouts.inc_by(r.stats().evicted - evicted_before);
            // Kept while the source sends fragments (allocating 16 KiB per record costs more
            // than the record); the tick frees idle ones.
            if created {
                self.reassemblers += 1;
            }
            match out {
                Some(b) => b.into(),
                None => return,
            }
        };
        let Some(st) = self.sources.get_mut(&id) else { return };
        if new_boot {
            let node = st.node.key.clone();
            st.fatal_seen = false;
            st.confirmed = false;
            st.after_remaining = 0;
            self.send(ToManager::NewBoot { node, source: id });
        }
        let mut lines = std::mem::take(&mut self.lines);
        let mut texts = Vec::new();
        ext::body_lines(&body, max_line, &mut texts);
        lines.extend(texts.into_iter().map(|t| (t, kernel)));
        for (line, kernel) in lines.drain(..) {
            self.line(id, line, kernel, Origin::NetconsoleExtended);
        }
        self.lines = lines;
    }

    /// A signed relay report: key by the relay id it claims, verify, check freshness.
    fn report(&mut self, id: SourceId, data: &[u8], now: Instant) {
        let metrics = Arc::clone(&self.ctx.metrics);
        let ctx = Arc::clone(&self.ctx);
        let Some(claimed) = peek_relay_id(data) else {
            // Not even the relay id decodes: let the verifier name the fault (truncated,
            // wrong version, or a tag that cannot match an altered body).
            let why = report::verify(data, &[0; report::KEY_LEN]).err().map_or("malformed", |e| e.name());
            metrics.refuse_named(why);
            return;
        };
        let Some(relay) = ctx.keyring.iter().find(|r| r.relay_id == claimed) else {
            metrics.refuse(Refusal::UnknownRelay);
            if metrics.warn_limiter.allow() {
                tracing::warn!(source = %id.0, relay = claimed, "report from a relay id not in the keyring");
            }
            return;
        };
        let rep = match report::verify(data, &relay.key) {
            Ok(r) => r,
            Err(e) => {
                metrics.refuse_named(e.name());
                if metrics.warn_limiter.allow() {
                    tracing::warn!(source = %id.0, relay = claimed, "report refused: {e}");
                }
                return;
            }
        };
        let fresh = match ctx.freshness.lock() {
            Ok(mut f) => f.entry(relay.relay_id.clone()).or_default().check(&rep),
            Err(_) => Ok(()),
        };
        if let Err(e) = fresh {
            metrics.refuse_named(e.name());
            if !e.is_duplicate() && metrics.warn_limiter.allow() {
                tracing::warn!(source = %id.0, relay = claimed, "report refused: {e}");
            }
            return;
        }
        metrics.decoded(Format::Report);
        if rep.node_name != relay.node {
            tracing::warn!(relay = claimed, report_node = rep.node_name, keyring_node = %relay.node, "report names another node; the keyring wins");
        }
        let node = Arc::new(NodeRef {
            key: format!("node/{}", relay.node),
            relay_id: Some(relay.relay_id.clone()),
            keyring_node: Some(relay.node.clone()),
            trusted: true,
        });
        let kind = rep.kind;
        let detected = Detected {
            source: id,
            node,
            detection: Detection {
                kind: Some(kind),
                reason: kind.reason().to_owned(),
                severity: if kind.is_fatal() { Severity::Fatal } else { Severity::Event },
            },
            trigger_line: rep.trigger_line.to_owned(),
            context_before: Vec::new(),
            certainty: rep.certainty,
            origin: Origin::Report {
                relay_id: relay.relay_id.clone(),
                boot_counter: rep.boot_counter,
                sequence: rep.sequence,
            },
            trusted: true,
        };
        let st = self.state(id, now);
        st.last_activity = now;
        // The relay flushed its context ring as netconsole just before the report.
        let context_before = st.ring.iter().filter(|l| **l != detected.trigger_line).cloned().collect();
        if st.after_remaining == 0 {
            st.after_remaining = ctx.context_after;
        }
        self.send(ToManager::Detected(Box::new(Detected { context_before, ..detected })));
    }

    /// One console line from source `id`.
    fn line(&mut self, id: SourceId, line: String, kernel: bool, origin: Origin) {
        self.lines_seen += 1;
        let ctx = Arc::clone(&self.ctx);
        let Some(st) = self.sources.get_mut(&id) else { return };
        let mut out: Vec<ToManager> = Vec::new();
        if st.after_remaining > 0 {
            st.after_remaining -= 1;
            out.push(ToManager::After { source: id, line: line.clone() });
        }
        let marker = if kernel { builtin::check(&line) } else { None };
        if marker == Some(Builtin::Boot) {
            st.fatal_seen = false;
            st.confirmed = false;
            out.push(ToManager::BootBanner { node: st.node.key.clone(), source: id });
        } else if marker == Some(Builtin::End) {
            if st.fatal_seen && !st.confirmed {
                st.confirmed = true;
                out.push(ToManager::Confirm { source: id });
            }
        } else {
            let ring = &st.ring;
            let hist = ctx.rules.history_needed();
            let detections = ctx.rules.check(&line, kernel, || {
                ring.iter().skip(ring.len().saturating_sub(hist.saturating_sub(1))).map(String::as_str).collect()
            });
            for det in detections {
                let fatal = det.severity == Severity::Fatal;
                if fatal && st.fatal_seen {
                    continue; // later fatal lines of the same panic are context, not news
                }
                if fatal {
                    st.fatal_seen = true;
                    st.confirmed = false;
                }
                if st.after_remaining == 0 {
                    st.after_remaining = ctx.context_after;
                }
                out.push(ToManager::Detected(Box::new(Detected {
                    source: id,
                    node: Arc::clone(&st.node),
                    detection: det,
                    trigger_line: line.clone(),
                    context_before: st.ring.iter().cloned().collect(),
                    certainty: Certainty::Suspected,
                    origin: origin.clone(),
                    trusted: st.node.trusted,
                })));
            }
        }
        if ctx.context_before > 0 {
            if st.ring.len() >= ctx.context_before {
                st.ring.pop_front();
            }
            st.ring.push_back(line);
        }
        for m in out {
            self.send(m);
        }
    }
}

/// The relay id a report claims, read before verification only to pick the key.
fn peek_relay_id(d: &[u8]) -> Option<&str> {
    let body = d.get(report::MAGIC.len()..d.len().checked_sub(report::TAG_LEN)?)?;
    let (r, _) = postcard::take_from_bytes::<report::Report<'_>>(body).ok()?;
    Some(r.relay_id)
}

/// Binary garbage: a NUL, or mostly control bytes. Console text is neither.
fn looks_binary(d: &[u8]) -> bool {
    if d.contains(&0) {
        return true;
    }
    let ctl = d.iter().filter(|&&b| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r' | 0x1b)).count();
    ctl * 4 > d.len()
}

/// Shard a source to a worker by its IP (all streams of one host land on one worker).
pub fn shard(src: &SocketAddr, workers: usize) -> usize {
    let h = match canonical_ip(src.ip()) {
        IpAddr::V4(v4) => u64::from(u32::from(v4)),
        IpAddr::V6(v6) => {
            let x = u128::from(v6);
            (x as u64) ^ ((x >> 64) as u64)
        }
    };
    // Fibonacci hashing: spreads consecutive addresses evenly.
    let mixed = h.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((mixed >> 32) as usize) % workers.max(1)
}
