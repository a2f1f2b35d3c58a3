//! Serve: configuration, metrics, HTTP endpoints, systemd notification, and the daemon's
//! wiring of ingest → decode → incident → act.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::mpsc;

use crate::act::runner::{Runner, RunnerConfig};
use crate::act::{Actuator, RecordOnly};
use crate::decode::{DecodeCtx, Worker};
use crate::detect::{NpdRules, Rules};
use crate::incident::manager::{Manager, ManagerConfig};
use crate::ingest::{self, Dispatch};
use crate::journal::Journal;

pub mod config;
pub mod http;
pub mod metrics;

use config::{ActuatorKind, Config, Validated};
use metrics::Metrics;

static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// Milliseconds since the process's first call: the one clock heartbeats are compared on.
pub fn uptime_ms() -> u64 {
    let epoch = EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// At most one event per interval (for warnings that could otherwise flood the log).
pub struct RateLimit {
    every_ms: u64,
    start: Instant,
    last: AtomicU64,
}

impl RateLimit {
    /// One per `every`.
    pub fn new(every: Duration) -> Self {
        Self {
            every_ms: u64::try_from(every.as_millis()).unwrap_or(u64::MAX),
            start: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    /// True if the caller may log now.
    pub fn allow(&self) -> bool {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX).saturating_add(self.every_ms);
        let last = self.last.load(Ordering::Relaxed);
        now.saturating_sub(last) >= self.every_ms && self.last.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }
}

/// Shared state the HTTP handlers read.
pub struct AppState {
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Journal (for `/incidents`).
    pub journal: Arc<Journal>,
    /// Sockets bound, journal open, runner started.
    pub ready: AtomicBool,
    /// Worker heartbeats ([`uptime_ms`] of each worker's last loop).
    pub heartbeats: Vec<Arc<AtomicU64>>,
    /// Daemon start.
    pub started: Instant,
}

impl AppState {
    /// Every worker looped within `limit`.
    pub fn healthy(&self, limit: Duration) -> bool {
        let now = uptime_ms();
        let limit = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
        self.heartbeats.iter().all(|h| now.saturating_sub(h.load(Ordering::Relaxed)) <= limit)
    }
}

/// Build the actuator the config asks for. Async so that the Kubernetes actuator
/// (`crate::kube`, wired in by its own change) can build its client here.
pub async fn actuator(cfg: &Config, v: &Validated) -> anyhow::Result<Arc<dyn Actuator>> {
    match cfg.act.actuator {
        ActuatorKind::RecordOnly => {
            if let Some(dir) = v.record_log.parent() {
                std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            }
            let r = RecordOnly::open(&v.record_log).with_context(|| format!("opening record log {}", v.record_log.display()))?;
            Ok(Arc::new(r))
        }
        ActuatorKind::Kubernetes => {
            let k = crate::kube::KubeActuator::connect(cfg.kube.clone()).await.map_err(|e| anyhow::anyhow!("[kube]: {e}"))?;
            Ok(Arc::new(k))
        }
    }
}

/// Run the daemon until SIGTERM/SIGINT.
pub async fn run(cfg: Config, v: Validated) -> anyhow::Result<()> {
    let started = Instant::now();
    uptime_ms();
    let workers = cfg.ingest.workers;
    let metrics = Metrics::new(workers);
    let npd = NpdRules::load(&v.npd_rule_files)?;
    tracing::info!(npd_rules = npd.len(), builtin = cfg.detect.builtin, "rules loaded");
    let rules = Rules::new(cfg.detect.builtin, npd);

    let journal = Arc::new(Journal::open(&v.journal)?);
    let entries = journal.list()?;
    let pending: usize = entries.iter().map(|e| e.steps.iter().filter(|s| s.state == crate::journal::StepState::Pending).count()).sum();
    metrics.pending_steps.set(i64::try_from(pending).unwrap_or(0));
    tracing::info!(path = %v.journal.display(), incidents = entries.len(), pending_steps = pending, "journal open");

    let actuator = actuator(&cfg, &v).await?;
    metrics.attach_actuator(Arc::clone(&actuator));
    let (runner, runner_handle) = Runner::new(
        Arc::clone(&journal),
        actuator,
        Arc::clone(&metrics),
        RunnerConfig {
            concurrency: cfg.act.concurrency,
            step_timeout: cfg.act.step_timeout,
            max_backoff: cfg.act.max_backoff,
        },
    );

    let (to_manager, manager_rx) = mpsc::channel(16384);
    let mut manager = Manager::new(
        manager_rx,
        Arc::clone(&journal),
        runner_handle,
        Arc::clone(&metrics),
        ManagerConfig {
            dedup_window: cfg.incident.dedup_window,
            context_after: cfg.incident.context_after,
            policy: cfg.act.policy,
            netconsole_may_delete: cfg.act.netconsole_may_delete,
            confirm_after_silence: cfg.incident.confirm_after_silence,
        },
    );
    manager.seed(&entries);
    // Replay protection survives restarts: the newest accepted report per relay is journaled.
    let mut freshness: std::collections::HashMap<String, relay_core::report::RelayFreshness> = std::collections::HashMap::new();
    for e in &entries {
        if let crate::incident::Origin::Report { relay_id, boot_counter, sequence } = &e.incident.origin {
            let newest = freshness.get(relay_id).and_then(|f| f.last()).is_none_or(|last| (*boot_counter, *sequence) > last);
            if newest {
                freshness.insert(relay_id.clone(), relay_core::report::RelayFreshness::new(Some((*boot_counter, *sequence))));
            }
        }
    }
    drop(entries);

    let ctx = Arc::new(DecodeCtx {
        rules,
        keyring: v.keyring.clone(),
        trusted: v.trusted.clone(),
        metrics: Arc::clone(&metrics),
        context_before: cfg.incident.context_before,
        context_after: cfg.incident.context_after,
        confirm_after_silence: cfg.incident.confirm_after_silence,
        reassembly_timeout: cfg.decode.reassembly_timeout,
        max_line: cfg.decode.max_line,
        max_sources: cfg.ingest.max_sources.div_ceil(workers),
        freshness: std::sync::Mutex::new(freshness),
    });
    let per_batch = cfg.ingest.batch.max(1);
    let mut queues = Vec::new();
    let mut heartbeats = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..workers {
        let (tx, rx) = mpsc::channel(cfg.ingest.queue.div_ceil(1).max(16));
        let w = Worker::new(i, rx, to_manager.clone(), Arc::clone(&ctx));
        heartbeats.push(Arc::clone(&w.heartbeat));
        queues.push(tx);
        tasks.spawn(w.run());
    }
    drop(to_manager);

    // Bind everything before announcing readiness: a bad address fails the start.
    let reuse = cfg.ingest.sockets_per_address > 1;
    let mut sockets = Vec::new();
    for addr in &v.listen {
        let mut bound = *addr;
        for _ in 0..cfg.ingest.sockets_per_address {
            let s = ingest::bind(bound, cfg.ingest.recv_buffer, reuse).with_context(|| format!("binding UDP {addr}"))?;
            // With port 0, the extra SO_REUSEPORT sockets must join the port the first one got.
            bound = s.local_addr()?;
            sockets.push(s);
        }
        tracing::info!(%bound, sockets = cfg.ingest.sockets_per_address, "listening (UDP)");
    }
    let dispatch = Dispatch {
        queues,
        queue_limit: i64::try_from(cfg.ingest.queue).unwrap_or(i64::MAX),
        metrics: Arc::clone(&metrics),
        max_datagram: cfg.ingest.max_datagram,
    };
    for s in sockets {
        let d = dispatch.clone();
        tasks.spawn(async move {
            if let Err(e) = ingest::receive_loop(s, per_batch, d).await {
                tracing::error!("receive loop ended: {e}");
            }
        });
    }
    drop(dispatch);

    let state = Arc::new(AppState {
        metrics: Arc::clone(&metrics),
        journal: Arc::clone(&journal),
        ready: AtomicBool::new(false),
        heartbeats,
        started,
    });
    if let Some(addr) = v.http {
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding HTTP {addr}"))?;
        tracing::info!(addr = %listener.local_addr()?, "serving /metrics /healthz /readyz /incidents");
        let app = http::router(Arc::clone(&state));
        tasks.spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!("http server: {e}");
            }
        });
    }
    tasks.spawn(manager.run());
    tasks.spawn(runner.run());
    state.ready.store(true, Ordering::Release);
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    tracing::info!(elapsed = ?started.elapsed(), "ready");

    let mut watchdog_usec = 0u64;
    let watchdog = sd_notify::watchdog_enabled(false, &mut watchdog_usec);
    let ping_every = Duration::from_micros(watchdog_usec / 2).max(Duration::from_millis(100));
    let mut ping = tokio::time::interval(ping_every);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = ping.tick(), if watchdog => {
                // Ping only while the workers are alive: a wedged pipeline gets restarted.
                if state.healthy(Duration::from_micros(watchdog_usec)) {
                    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
                } else {
                    tracing::error!("a worker is stuck; withholding the watchdog ping");
                }
            }
            Some(r) = tasks.join_next() => {
                if let Err(e) = r {
                    anyhow::bail!("a pipeline task failed: {e}");
                }
            }
        }
    }
    tracing::info!("stopping");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    tasks.abort_all();
    Ok(())
}
