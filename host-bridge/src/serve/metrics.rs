//! Prometheus metrics. Hot-path counters are resolved once at startup, so counting a
//! datagram is one atomic add (no label hashing per packet).
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, OnceLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

use crate::act::Actuator;

/// Label `reason`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Why.
    pub reason: String,
}

/// Label `format`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FormatLabel {
    /// Datagram format.
    pub format: String,
}

/// Label `queue`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabel {
    /// Queue name.
    pub queue: String,
}

/// Labels `step`, `result`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabel {
    /// Step name.
    pub step: String,
    /// `done`, `failed`, `retry`.
    pub result: String,
}

/// Why a datagram (or a message derived from it) was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// A worker's queue was full.
    QueueFull,
    /// Larger than `ingest.max_datagram`.
    Oversized,
    /// Empty datagram.
    Empty,
    /// The incident manager's queue was full (a context line or detection lost).
    IncidentQueueFull,
}

impl DropReason {
    const ALL: [DropReason; 4] = [DropReason::QueueFull, DropReason::Oversized, DropReason::Empty, DropReason::IncidentQueueFull];
    fn name(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::Oversized => "oversized",
            DropReason::Empty => "empty",
            DropReason::IncidentQueueFull => "incident_queue_full",
        }
    }
}

/// Why a datagram was refused by a decoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Report from a relay id not in the keyring.
    UnknownRelay,
    /// Report tag did not verify.
    BadTag,
    /// Report (boot counter, sequence) not fresh.
    Replay,
    /// Report malformed (postcard, version, length).
    BadReport,
    /// Extended netconsole header malformed.
    BadExtended,
    /// ncfrag fragment inconsistent (offset/total) or reassembly full.
    BadFragment,
    /// Not text at all (binary garbage).
    Garbage,
}

impl Refusal {
    const ALL: [Refusal; 7] = [
        Refusal::UnknownRelay,
        Refusal::BadTag,
        Refusal::Replay,
        Refusal::BadReport,
        Refusal::BadExtended,
        Refusal::BadFragment,
        Refusal::Garbage,
    ];
    /// Metric label.
    pub fn name(self) -> &'static str {
        match self {
            Refusal::UnknownRelay => "unknown_relay",
            Refusal::BadTag => "bad_tag",
            Refusal::Replay => "replay",
            Refusal::BadReport => "bad_report",
            Refusal::BadExtended => "bad_extended",
            Refusal::BadFragment => "bad_fragment",
            Refusal::Garbage => "garbage",
        }
    }
}

/// Datagram formats, for `datagrams_decoded_total{format}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Signed relay report.
    Report,
    /// Extended netconsole.
    Extended,
    /// Basic netconsole.
    Basic,
}

/// All metrics of the bridge.
pub struct Metrics {
    registry: Registry,
    /// Datagrams received from the sockets.
    pub datagrams: Counter,
    /// Payload bytes received.
    pub bytes: Counter,
    /// Datagrams fully handled by a worker (decoded or refused).
    pub processed: Counter,
    drops: [Counter; 4],
    refusals: [Counter; 7],
    refusal_family: Family<ReasonLabel, Counter>,
    formats: [Counter; 3],
    /// Console lines decoded.
    pub lines: Counter,
    /// Missing extended-netconsole sequence numbers.
    pub seq_holes: Counter,
    /// Sequence resets (the host rebooted or netconsole reloaded).
    pub seq_resets: Counter,
    /// Extended records received twice (network duplicates), dropped.
    pub seq_duplicates: Counter,
    /// Incomplete ncfrag messages dropped after the timeout.
    pub reassembly_timeouts: Counter,
    /// Sources evicted from per-source state (least recently seen).
    pub sources_evicted: Counter,
    /// Sources tracked now.
    pub sources: Gauge,
    incidents: Family<ReasonLabel, Counter>,
    /// Detections folded into an existing incident.
    pub incident_repeats: Counter,
    steps: Family<StepLabel, Counter>,
    /// Datagrams queued per worker, in order.
    pub queue_depth: Vec<Gauge>,
    /// Messages queued for the incident manager.
    pub incident_queue_depth: Gauge,
    /// Steps not yet done.
    pub pending_steps: Gauge,
    /// Rate limiter for warnings about drops.
    pub warn_limiter: crate::serve::RateLimit,
    actuator: Arc<ActuatorCollector>,
}

/// The actuator's own counters (Kubernetes API calls, conflicts, leadership),
/// read from it at each scrape once it is attached.
#[derive(Default)]
struct ActuatorCollector(OnceLock<Arc<dyn Actuator>>);

impl std::fmt::Debug for ActuatorCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ActuatorCollector")
    }
}

impl Collector for ActuatorCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(actuator) = self.0.get() else { return Ok(()) };
        for stat in actuator.stats() {
            if stat.gauge {
                let g = ConstGauge::new(i64::try_from(stat.value).unwrap_or(i64::MAX));
                g.encode(encoder.encode_descriptor(stat.name, stat.help, None, g.metric_type())?)?;
            } else {
                let c = ConstCounter::new(stat.value);
                c.encode(encoder.encode_descriptor(stat.name, stat.help, None, c.metric_type())?)?;
            }
        }
        Ok(())
    }
}

impl Metrics {
    /// Build and register every metric; `workers` queue gauges.
    pub fn new(workers: usize) -> Arc<Self> {
        let mut registry = Registry::with_prefix("lastgasp_bridge");
        let datagrams = Counter::default();
        registry.register("datagrams", "UDP datagrams received", datagrams.clone());
        let bytes = Counter::default();
        registry.register("bytes", "UDP payload bytes received", bytes.clone());
        let processed = Counter::default();
        registry.register("datagrams_processed", "Datagrams handled by a worker", processed.clone());
        let drops_f = Family::<ReasonLabel, Counter>::default();
        registry.register("drops", "Datagrams or messages dropped, by reason", drops_f.clone());
        let drops = DropReason::ALL.map(|d| drops_f.get_or_create(&ReasonLabel { reason: d.name().into() }).clone());
        let ref_f = Family::<ReasonLabel, Counter>::default();
        registry.register("decode_errors", "Datagrams refused by a decoder, by reason", ref_f.clone());
        let refusals = Refusal::ALL.map(|r| ref_f.get_or_create(&ReasonLabel { reason: r.name().into() }).clone());
        let fmt_f = Family::<FormatLabel, Counter>::default();
        registry.register("datagrams_decoded", "Datagrams decoded, by format", fmt_f.clone());
        let formats = ["report", "extended", "basic"].map(|f| fmt_f.get_or_create(&FormatLabel { format: f.into() }).clone());
        let lines = Counter::default();
        registry.register("lines", "Console lines decoded", lines.clone());
        let seq_holes = Counter::default();
        registry.register("seq_holes", "Missing extended netconsole sequence numbers", seq_holes.clone());
        let seq_resets = Counter::default();
        registry.register("seq_resets", "Extended netconsole sequence resets", seq_resets.clone());
        let seq_duplicates = Counter::default();
        registry.register("seq_duplicates", "Extended netconsole records received twice, ignored", seq_duplicates.clone());
        let reassembly_timeouts = Counter::default();
        registry.register("reassembly_timeouts", "Incomplete ncfrag messages dropped", reassembly_timeouts.clone());
        let sources_evicted = Counter::default();
        registry.register("sources_evicted", "Per-source states evicted", sources_evicted.clone());
        let sources = Gauge::default();
        registry.register("sources", "Sources tracked", sources.clone());
        let incidents = Family::<ReasonLabel, Counter>::default();
        registry.register("incidents", "Incidents opened, by reason", incidents.clone());
        let incident_repeats = Counter::default();
        registry.register("incident_repeats", "Detections deduplicated into an open incident", incident_repeats.clone());
        let steps = Family::<StepLabel, Counter>::default();
        registry.register("action_steps", "Action steps executed, by step and result", steps.clone());
        let qf = Family::<QueueLabel, Gauge<i64, AtomicI64>>::default();
        registry.register("queue_depth", "Items waiting in each queue", qf.clone());
        // A cloned Gauge shares its atomic with the registered one.
        let queue_depth = (0..workers)
            .map(|i| qf.get_or_create(&QueueLabel { queue: format!("worker{i}") }).clone())
            .collect();
        let incident_queue_depth = qf.get_or_create(&QueueLabel { queue: "incident".into() }).clone();
        let pending_steps = Gauge::default();
        registry.register("pending_steps", "Journaled action steps not yet done", pending_steps.clone());
        let actuator = Arc::new(ActuatorCollector::default());
        registry.register_collector(Box::new(Arc::clone(&actuator)));
        Arc::new(Self {
            registry,
            datagrams,
            bytes,
            processed,
            drops,
            refusals,
            refusal_family: ref_f,
            formats,
            lines,
            seq_holes,
            seq_resets,
            seq_duplicates,
            reassembly_timeouts,
            sources_evicted,
            sources,
            incidents,
            incident_repeats,
            steps,
            queue_depth,
            incident_queue_depth,
            pending_steps,
            warn_limiter: crate::serve::RateLimit::new(std::time::Duration::from_secs(5)),
            actuator,
        })
    }

    /// Export `actuator`'s own counters from now on (once; later calls are ignored).
    pub fn attach_actuator(&self, actuator: Arc<dyn Actuator>) {
        let _ = self.actuator.0.set(actuator);
    }

    /// Count `n` drops.
    pub fn dropped(&self, why: DropReason, n: u64) {
        if let Some(c) = self.drops.iter().zip(DropReason::ALL).find(|(_, d)| *d == why).map(|(c, _)| c) {
            c.inc_by(n);
        }
        if self.warn_limiter.allow() {
            tracing::warn!(reason = why.name(), count = n, "dropping (counted in lastgasp_bridge_drops_total)");
        }
    }

    /// Count a decoder refusal.
    pub fn refuse(&self, why: Refusal) {
        if let Some(c) = self.refusals.iter().zip(Refusal::ALL).find(|(_, r)| *r == why).map(|(c, _)| c) {
            c.inc();
        }
    }

    /// Count a refusal by name (relay-core's report refusals: `bad_tag`, `replay`, ...).
    pub fn refuse_named(&self, name: &str) {
        self.refusal_family.get_or_create(&ReasonLabel { reason: name.into() }).inc();
    }

    /// Count a decoded datagram.
    pub fn decoded(&self, f: Format) {
        let i = match f {
            Format::Report => 0,
            Format::Extended => 1,
            Format::Basic => 2,
        };
        if let Some(c) = self.formats.get(i) {
            c.inc();
        }
    }

    /// Count an opened incident.
    pub fn incident(&self, reason: &str) {
        self.incidents.get_or_create(&ReasonLabel { reason: reason.into() }).inc();
    }

    /// Count an executed step.
    pub fn step(&self, step: &str, result: &str) {
        self.steps
            .get_or_create(&StepLabel {
                step: step.into(),
                result: result.into(),
            })
            .inc();
    }

    /// Render the text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
