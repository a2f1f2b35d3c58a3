//! Every Kubernetes API call goes through [`Caller`]: a shared QPS/burst token
//! bucket, a timeout per attempt (any call can hang), and retries with
//! exponential backoff and jitter for what is worth retrying.
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

use super::KubeStats;

/// Why a call finally failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The API answered with an error status (after any retries).
    #[error("{what}: {source}")]
    Api {
        /// What was being done.
        what: String,
        /// kube-rs error.
        #[source]
        source: ::kube::Error,
    },
    /// Every attempt timed out or failed transiently until the retry budget ran out.
    #[error("{what}: gave up after {attempts} attempts in {elapsed:?}: {last}")]
    Exhausted {
        /// What was being done.
        what: String,
        /// Attempts made.
        attempts: u32,
        /// Time spent.
        elapsed: Duration,
        /// The last failure.
        last: String,
    },
}

impl CallError {
    /// The HTTP status code of an API error, if that is what it is.
    pub fn code(&self) -> Option<u16> {
        match self {
            CallError::Api { source: ::kube::Error::Api(s), .. } => Some(s.code),
            _ => None,
        }
    }
    /// 404.
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(404)
    }
    /// 409 AlreadyExists.
    pub fn is_already_exists(&self) -> bool {
        matches!(self, CallError::Api { source: ::kube::Error::Api(s), .. } if s.is_already_exists())
    }
    /// A lost optimistic-concurrency race: 409 Conflict, or 422 from a failed
    /// JSON-patch `test` (what the real apiserver answers for that).
    pub fn is_conflict(&self) -> bool {
        match self {
            CallError::Api { source: ::kube::Error::Api(s), .. } => {
                let m = &s.message;
                (s.code == 409 && !s.is_already_exists())
                    || (s.code == 422 && (m.contains("test") || m.contains("resourceVersion")))
            }
            _ => false,
        }
    }
    /// Worth retrying later (server unavailable, timeouts, rate limited).
    pub fn is_transient(&self) -> bool {
        matches!(self, CallError::Exhausted { .. })
    }
}

/// Retry and pacing settings of [`Caller`].
#[derive(Clone, Debug)]
pub struct CallSettings {
    /// Sustained requests per second.
    pub qps: f64,
    /// Requests allowed at once above the sustained rate.
    pub burst: u32,
    /// Timeout of one attempt.
    pub timeout: Duration,
    /// First backoff delay.
    pub backoff_initial: Duration,
    /// Largest backoff delay.
    pub backoff_max: Duration,
    /// Give up retrying a call after this long (the journal replays the step later).
    pub retry_budget: Duration,
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Rate-limited, timed-out, retrying wrapper around API calls.
pub struct Caller {
    settings: CallSettings,
    bucket: Mutex<Bucket>,
    stats: Arc<KubeStats>,
    seed: AtomicU64,
}

/// Transient failures: connection errors, timeouts, 429 and 5xx.
fn retriable(e: &::kube::Error) -> bool {
    match e {
        ::kube::Error::Api(s) => s.code == 429 || s.code >= 500,
        ::kube::Error::HyperError(_) | ::kube::Error::Service(_) | ::kube::Error::ReadEvents(_) => true,
        _ => false,
    }
}

impl Caller {
    /// A caller with a full bucket.
    pub fn new(settings: CallSettings, stats: Arc<KubeStats>) -> Self {
        let burst = f64::from(settings.burst.max(1));
        Self {
            settings,
            bucket: Mutex::new(Bucket { tokens: burst, last: Instant::now() }),
            stats,
            seed: AtomicU64::new(0x9e37_79b9_7f4a_7c15),
        }
    }

    /// Waits for a token of the shared bucket.
    async fn acquire(&self) {
        loop {
            let wait = {
                let mut b = self.bucket.lock().await;
                let now = Instant::now();
                let refill = now.duration_since(b.last).as_secs_f64() * self.settings.qps;
                b.tokens = (b.tokens + refill).min(f64::from(self.settings.burst.max(1)));
                b.last = now;
                if b.tokens >= 1.0 {
                    b.tokens -= 1.0;
                    return;
                }
                Duration::from_secs_f64((1.0 - b.tokens) / self.settings.qps.max(0.001))
            };
            self.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(wait).await;
        }
    }

    /// Jittered delay in [d/2, d], so that many callers do not retry in lockstep.
    fn jitter(&self, d: Duration) -> Duration {
        let mut x = self.seed.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        let frac = (x % 1000) as f64 / 2000.0 + 0.5;
        d.mul_f64(frac)
    }

    /// Runs `attempt` until it succeeds, fails permanently, or the retry budget is spent.
    pub async fn call<T, F, Fut>(&self, what: impl Into<String>, mut attempt: F) -> Result<T, CallError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ::kube::Error>>,
    {
        let what = what.into();
        let start = Instant::now();
        let mut delay = self.settings.backoff_initial;
        let mut attempts = 0u32;
        loop {
            self.acquire().await;
            attempts += 1;
            self.stats.api_calls.fetch_add(1, Ordering::Relaxed);
            let last = match tokio::time::timeout(self.settings.timeout, attempt()).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) if !retriable(&e) => {
                    self.stats.api_errors.fetch_add(1, Ordering::Relaxed);
                    return Err(CallError::Api { what, source: e });
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no answer within {:?}", self.settings.timeout),
            };
            let elapsed = start.elapsed();
            if elapsed + delay > self.settings.retry_budget {
                self.stats.api_errors.fetch_add(1, Ordering::Relaxed);
                return Err(CallError::Exhausted { what, attempts, elapsed, last });
            }
            self.stats.api_retries.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(call = %what, attempt = attempts, error = %last, "kubernetes call failed; retrying");
            tokio::time::sleep(self.jitter(delay)).await;
            delay = (delay * 2).min(self.settings.backoff_max);
        }
    }
}
