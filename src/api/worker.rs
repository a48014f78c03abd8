//! The HTTP surface of a `ragbox worker`: `/health/live`, `/health/ready` (Redis
//! answers and the embedding model runs) and `/metrics`. It serves no tenant.

use std::sync::Arc;

use poem::web::{Data, Json};
use poem::{EndpointExt, IntoResponse, Response, Route, get, handler};
use serde_json::json;

use crate::jobs::{JobMetrics, RedisQueue};
use crate::ml::Embedder;
use crate::telemetry::Metrics;

/// What the worker's probes look at.
#[derive(Clone)]
pub struct WorkerProbes {
    /// The shared queue.
    pub queue: RedisQueue,
    /// The worker's model.
    pub embedder: Embedder,
    /// Its metrics registry.
    pub metrics: Metrics,
    /// Its job series.
    pub jobs: JobMetrics,
}

/// The worker's routes.
pub fn routes(probes: WorkerProbes) -> impl poem::Endpoint<Output = Response> {
    Route::new()
        .at("/health/live", get(live))
        .at("/health/ready", get(ready))
        .at("/health", get(ready))
        .at("/metrics", get(metrics))
        .data(Arc::new(probes))
        .map_to_response()
}

#[handler]
fn live() -> Json<serde_json::Value> {
    Json(json!({"status": "alive"}))
}

#[handler]
async fn ready(probes: Data<&Arc<WorkerProbes>>) -> Response {
    let redis = probes.queue.ping().await.is_ok();
    let embedding = probes.embedder.is_running();
    let ok = redis && embedding;
    let body = Json(json!({
        "status": if ok { "healthy" } else { "degraded" },
        "checks": {"redis": redis, "embedding": embedding},
    }));
    let status = if ok {
        poem::http::StatusCode::OK
    } else {
        poem::http::StatusCode::SERVICE_UNAVAILABLE
    };
    body.with_status(status).into_response()
}

#[handler]
async fn metrics(probes: Data<&Arc<WorkerProbes>>) -> Response {
    if let Ok(depth) = probes.queue.pending().await {
        probes.jobs.set_depth(depth);
    }
    probes.embedder.refresh_meters();
    probes
        .metrics
        .render()
        .with_content_type("text/plain; version=0.0.4")
        .into_response()
}
