//! Probes and metrics: `/health`, `/health/live`, `/health/ready`, `/metrics`.

use std::collections::BTreeMap;

use poem_openapi::payload::{Json, PlainText};
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};

use crate::api::state::AppState;
use crate::ml::generator::LoadState;

#[derive(Tags)]
enum Tag {
    /// Probes and metrics (no credentials).
    Operations,
}

/// The state of every component.
#[derive(Debug, Object)]
pub struct HealthOut {
    /// `healthy` when every check passes, else `degraded`.
    pub status: String,
    /// Each component and whether it works.
    pub checks: BTreeMap<String, bool>,
    /// The bundled generation model: `loading` (the server is ready; chat requests on
    /// it wait for the weights), `loaded`, or `failed` (they get 503).
    pub generator: String,
}

/// Liveness.
#[derive(Debug, Object)]
pub struct LiveOut {
    /// Always `alive`.
    pub status: String,
}

#[derive(ApiResponse)]
enum HealthResponse {
    /// Every check passed.
    #[oai(status = 200)]
    Healthy(Json<HealthOut>),
    /// At least one check failed (or, for readiness, startup is not complete).
    #[oai(status = 503)]
    Degraded(Json<HealthOut>),
}

/// Probe routes.
pub struct HealthApi {
    state: AppState,
}

impl HealthApi {
    /// Wraps the state.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }

    async fn report(&self, require_ready: bool) -> HealthResponse {
        let checks = self
            .state
            .health
            .get(
                &self.state.core,
                &self.state.knowledge,
                (&self.state.generator, &self.state.upstreams),
            )
            .await;
        let mut map: BTreeMap<String, bool> =
            checks.iter().map(|c| (c.name.to_owned(), c.ok)).collect();
        let mut ok = checks.iter().all(|c| c.ok);
        if require_ready {
            let ready = self.state.is_ready();
            map.insert("startup".to_owned(), ready);
            ok &= ready;
        }
        let generator = match self.state.generator.load_state() {
            LoadState::Loading => "loading",
            LoadState::Ready { .. } => "loaded",
            LoadState::Failed(_) => "failed",
        };
        let out = HealthOut {
            status: if ok { "healthy" } else { "degraded" }.to_owned(),
            checks: map,
            generator: generator.to_owned(),
        };
        if ok {
            HealthResponse::Healthy(Json(out))
        } else {
            HealthResponse::Degraded(Json(out))
        }
    }
}

#[OpenApi(tag = "Tag::Operations")]
impl HealthApi {
    /// Health of every component: 200 when all pass, 503 when any fails.
    #[oai(path = "/health", method = "get", operation_id = "health")]
    async fn health(&self) -> HealthResponse {
        self.report(false).await
    }

    /// Liveness: 200 while the process serves.
    #[oai(path = "/health/live", method = "get", operation_id = "health_live")]
    async fn live(&self) -> Json<LiveOut> {
        Json(LiveOut {
            status: "alive".to_owned(),
        })
    }

    /// Readiness: 503 until startup is complete and every check passes.
    #[oai(path = "/health/ready", method = "get", operation_id = "health_ready")]
    async fn ready(&self) -> HealthResponse {
        self.report(true).await
    }

    /// Prometheus metrics in the text exposition format.
    #[oai(path = "/metrics", method = "get", operation_id = "metrics")]
    async fn metrics(&self) -> PlainText<String> {
        if let Ok(depth) = self.state.knowledge.queue.pending().await {
            self.state.jobs.set_depth(depth);
        }
        self.state.knowledge.embedder.refresh_meters();
        self.state.generator.refresh_meters();
        PlainText(self.state.metrics.render())
    }
}
