//! The HTTP state: everything a handler may use, built once by `startup` and shared.

use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::auth::Authenticator;
use crate::llm::Upstreams;
use crate::ml::Generator;
use crate::services::health::HealthCache;
use crate::services::{Core, Knowledge};
use crate::telemetry::Metrics;

/// Everything a request handler may use; cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<StateInner>);

/// The fields of [`AppState`].
pub struct StateInner {
    /// Configuration, database and clock.
    pub core: Core,
    /// Embedding model, vectors and job queue.
    pub knowledge: Knowledge,
    /// The names of the server's own models (`/v1/models`).
    pub models: crate::services::models::Catalog,
    /// The local generation model.
    pub generator: Generator,
    /// Upstream generation providers and the default provider.
    pub upstreams: Upstreams,
    /// Checks the operator token and tenant credentials.
    pub auth: Authenticator,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// The job series in `metrics` (queue depth, jobs in flight, durations, failures).
    pub jobs: crate::jobs::JobMetrics,
    /// Set once startup has finished.
    pub ready: AtomicBool,
    /// The health checks the probes answer from.
    pub health: HealthCache,
}

impl AppState {
    /// Wraps the parts; the state starts not ready.
    pub fn new(inner: StateInner) -> Self {
        Self(Arc::new(inner))
    }

    /// Whether startup has completed.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Marks startup complete: `/health/ready` answers 200 from now on.
    pub fn mark_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }
}

impl Deref for AppState {
    type Target = StateInner;

    fn deref(&self) -> &StateInner {
        &self.0
    }
}
