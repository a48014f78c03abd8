//! Fair sharing between tenants: a token bucket of requests per minute, and caps on
//! concurrent generations and ingestion jobs. Each tenant's limits are the server's
//! defaults (`[limits]`) unless the operator set its own (admin API).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{Core, ServiceError};
use crate::config::LimitsConfig;
use crate::domain::TenantId;
use crate::store::limits as store;

pub use crate::store::limits::TenantLimits;

/// The limits in force for a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Effective {
    /// Requests per minute; 0 means unlimited.
    pub requests_per_minute: u32,
    /// Generations at once.
    pub concurrent_generations: u32,
    /// Ingestion jobs at once.
    pub concurrent_ingestion_jobs: u32,
}

impl Effective {
    fn of(own: &TenantLimits, defaults: &LimitsConfig) -> Self {
        Self {
            requests_per_minute: own
                .requests_per_minute
                .unwrap_or(defaults.requests_per_minute),
            concurrent_generations: own
                .concurrent_generations
                .unwrap_or(defaults.concurrent_generations),
            concurrent_ingestion_jobs: own
                .concurrent_ingestion_jobs
                .unwrap_or(defaults.concurrent_ingestion_jobs),
        }
    }
}

/// What the request-rate check decided.
#[derive(Debug, Clone, Copy)]
pub struct RateDecision {
    /// Whether the request may go on.
    pub allowed: bool,
    /// The tenant's requests per minute (0: unlimited).
    pub limit: u32,
    /// Requests left now.
    pub remaining: u32,
    /// Seconds until the bucket is full again.
    pub reset_secs: u64,
    /// Seconds until the next request is allowed (when refused).
    pub retry_after_secs: u64,
}

struct TenantState {
    limits: Effective,
    tokens: f64,
    refilled_ms: i64,
    generations: Arc<Semaphore>,
    ingestion: Arc<Semaphore>,
    embedding: Arc<Semaphore>,
}

/// Documents of a tenant at the embedding model per place among its running jobs. With
/// two, the model merges one document's batches with the next one's (fuller batches,
/// and no pause while a document is stored). On 399 man pages `bench ingest` reaches
/// 93-96% of the raw embedding rate with the defaults (3 rounds; 86-102% in single
/// runs, as the machine varies), once waiting for the documents costs no CPU.
pub const EMBEDDING_PLACES_PER_JOB: usize = 2;

impl TenantState {
    fn new(limits: Effective, now_ms: i64) -> Self {
        Self {
            limits,
            tokens: f64::from(limits.requests_per_minute),
            refilled_ms: now_ms,
            generations: Arc::new(Semaphore::new(limits.concurrent_generations as usize)),
            ingestion: Arc::new(Semaphore::new(limits.concurrent_ingestion_jobs as usize)),
            embedding: Arc::new(Semaphore::new(
                limits.concurrent_ingestion_jobs as usize * EMBEDDING_PLACES_PER_JOB,
            )),
        }
    }
}

/// The limiter of one process; cheap to clone.
#[derive(Clone, Default)]
pub struct Limiter(Arc<Mutex<HashMap<TenantId, TenantState>>>);

impl Limiter {
    async fn state<T>(
        &self,
        core: &Core,
        tenant: &TenantId,
        f: impl FnOnce(&mut TenantState, i64) -> T,
    ) -> Result<T, ServiceError> {
        let now_ms = core.clock.now().timestamp_millis();
        // A tenant seen for the first time has its own limits read (outside the lock).
        let cached = self.0.lock().ok().map(|map| map.contains_key(tenant));
        let loaded = if cached == Some(false) {
            let t = tenant.clone();
            let own = core.db.call(move |c| store::get(c, &t)).await?;
            Some(Effective::of(&own, &core.config.limits))
        } else {
            None
        };
        let mut map = self
            .0
            .lock()
            .map_err(|_| ServiceError::Internal("limiter lock poisoned".into()))?;
        let state = map.entry(tenant.clone()).or_insert_with(|| {
            let limits = loaded
                .unwrap_or_else(|| Effective::of(&TenantLimits::default(), &core.config.limits));
            TenantState::new(limits, now_ms)
        });
        Ok(f(state, now_ms))
    }

    /// Takes one request from the tenant's bucket.
    pub async fn admit(
        &self,
        core: &Core,
        tenant: &TenantId,
    ) -> Result<RateDecision, ServiceError> {
        self.state(core, tenant, |s, now_ms| {
            let rpm = s.limits.requests_per_minute;
            if rpm == 0 {
                return RateDecision {
                    allowed: true,
                    limit: 0,
                    remaining: 0,
                    reset_secs: 0,
                    retry_after_secs: 0,
                };
            }
            let capacity = f64::from(rpm);
            let per_ms = capacity / 60_000.0;
            let elapsed = (now_ms - s.refilled_ms).max(0) as f64;
            s.tokens = (s.tokens + elapsed * per_ms).min(capacity);
            s.refilled_ms = now_ms;
            let allowed = s.tokens >= 1.0;
            if allowed {
                s.tokens -= 1.0;
            }
            let secs = |tokens: f64| (tokens.max(0.0) / per_ms / 1000.0).ceil() as u64;
            RateDecision {
                allowed,
                limit: rpm,
                remaining: s.tokens.floor() as u32,
                reset_secs: secs(capacity - s.tokens),
                retry_after_secs: secs(1.0 - s.tokens).max(1),
            }
        })
        .await
    }

    /// A place among the tenant's running generations, or `RateLimited` when all are
    /// taken. Held until the answer ends.
    pub async fn generation(
        &self,
        core: &Core,
        tenant: &TenantId,
    ) -> Result<OwnedSemaphorePermit, ServiceError> {
        let (semaphore, cap) = self
            .state(core, tenant, |s, _| {
                (s.generations.clone(), s.limits.concurrent_generations)
            })
            .await?;
        semaphore.try_acquire_owned().map_err(|_| {
            ServiceError::RateLimited(format!(
                "this tenant already runs {cap} generations at once; retry when one ends"
            ))
        })
    }

    /// The tenant's places among running ingestion jobs.
    pub async fn ingestion(
        &self,
        core: &Core,
        tenant: &TenantId,
    ) -> Result<Arc<Semaphore>, ServiceError> {
        self.state(core, tenant, |s, _| s.ingestion.clone()).await
    }

    /// The tenant's places at the embedding model for its documents
    /// ([`EMBEDDING_PLACES_PER_JOB`] per place among running jobs: a job gives its job
    /// place back once it holds one of these).
    pub async fn embedding(
        &self,
        core: &Core,
        tenant: &TenantId,
    ) -> Result<Arc<Semaphore>, ServiceError> {
        self.state(core, tenant, |s, _| s.embedding.clone()).await
    }

    /// Forgets a tenant's state, so that new limits take effect at its next request.
    pub fn forget(&self, tenant: &TenantId) {
        if let Ok(mut map) = self.0.lock() {
            map.remove(tenant);
        }
    }
}

/// A tenant's own limits and those in force.
pub async fn get(
    core: &Core,
    tenant: &TenantId,
) -> Result<(TenantLimits, Effective), ServiceError> {
    let t = tenant.clone();
    let own = core.db.call(move |c| store::get(c, &t)).await?;
    Ok((own, Effective::of(&own, &core.config.limits)))
}

/// Sets a tenant's own limits (replacing the previous ones); effective at once.
pub async fn set(
    core: &Core,
    tenant: &TenantId,
    own: TenantLimits,
) -> Result<(TenantLimits, Effective), ServiceError> {
    let too_big = |v: Option<u32>, max: u32| v.is_some_and(|v| v > max);
    if too_big(own.requests_per_minute, 1_000_000)
        || too_big(own.concurrent_generations, 1024)
        || too_big(own.concurrent_ingestion_jobs, 1024)
    {
        return Err(ServiceError::Invalid(
            "requests_per_minute is at most 1000000, the concurrency limits at most 1024".into(),
        ));
    }
    let t = tenant.clone();
    core.db.call(move |c| store::set(c, &t, &own)).await?;
    core.limiter.forget(tenant);
    Ok((own, Effective::of(&own, &core.config.limits)))
}
