//! `/api/v1/admin/tenants/{tenant}/limits`: the operator's per-tenant limits.

use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi, Tags};

use crate::api::error::ApiError;
use crate::api::security::AdminAuth;
use crate::api::state::AppState;
use crate::domain::TenantRef;
use crate::services::limits::{self, Effective, TenantLimits};
use crate::services::tenants;

#[derive(Tags)]
enum Tag {
    /// Operator: tenants and keys (operator token).
    Admin,
}

/// A tenant's own limits; an absent (or null) field takes the server's default.
#[derive(Debug, Clone, Object)]
pub struct LimitsIn {
    /// Requests per minute (a token bucket holding a minute's worth); 0 for none.
    #[oai(validator(maximum(value = "1000000")))]
    pub requests_per_minute: Option<u32>,
    /// Chats generating at once.
    #[oai(validator(minimum(value = "1"), maximum(value = "1024")))]
    pub concurrent_generations: Option<u32>,
    /// Documents processed at once.
    #[oai(validator(minimum(value = "1"), maximum(value = "1024")))]
    pub concurrent_ingestion_jobs: Option<u32>,
}

/// Limits in force.
#[derive(Debug, Clone, Object)]
pub struct EffectiveOut {
    /// Requests per minute; 0 means unlimited.
    pub requests_per_minute: u32,
    /// Chats generating at once.
    pub concurrent_generations: u32,
    /// Documents processed at once.
    pub concurrent_ingestion_jobs: u32,
}

/// A tenant's limits: its own, and those in force.
#[derive(Debug, Clone, Object)]
pub struct LimitsOut {
    /// Set for this tenant (absent fields follow the server's defaults).
    pub own: LimitsIn,
    /// In force.
    pub effective: EffectiveOut,
}

fn out((own, effective): (TenantLimits, Effective)) -> Json<LimitsOut> {
    Json(LimitsOut {
        own: LimitsIn {
            requests_per_minute: own.requests_per_minute,
            concurrent_generations: own.concurrent_generations,
            concurrent_ingestion_jobs: own.concurrent_ingestion_jobs,
        },
        effective: EffectiveOut {
            requests_per_minute: effective.requests_per_minute,
            concurrent_generations: effective.concurrent_generations,
            concurrent_ingestion_jobs: effective.concurrent_ingestion_jobs,
        },
    })
}

/// Per-tenant limit routes.
pub struct LimitsApi {
    state: AppState,
}

impl LimitsApi {
    /// Wraps the state.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }

    async fn tenant(&self, raw: &str) -> Result<crate::domain::TenantId, ApiError> {
        let r =
            TenantRef::parse(raw).map_err(|_| ApiError::not_found(format!("no tenant `{raw}`")))?;
        Ok(tenants::get(&self.state.core, &r).await?.id)
    }
}

#[OpenApi(prefix_path = "/api/v1/admin", tag = "Tag::Admin")]
impl LimitsApi {
    /// A tenant's limits: those set for it and those in force.
    #[oai(
        path = "/tenants/:tenant/limits",
        method = "get",
        operation_id = "get_tenant_limits"
    )]
    async fn get_limits(
        &self,
        _auth: AdminAuth,
        tenant: Path<String>,
    ) -> Result<Json<LimitsOut>, ApiError> {
        let id = self.tenant(&tenant).await?;
        Ok(out(limits::get(&self.state.core, &id).await?))
    }

    /// Sets a tenant's own limits (replacing those set before); effective at its next
    /// request.
    #[oai(
        path = "/tenants/:tenant/limits",
        method = "put",
        operation_id = "set_tenant_limits"
    )]
    async fn set_limits(
        &self,
        _auth: AdminAuth,
        tenant: Path<String>,
        body: Json<LimitsIn>,
    ) -> Result<Json<LimitsOut>, ApiError> {
        let id = self.tenant(&tenant).await?;
        let own = TenantLimits {
            requests_per_minute: body.0.requests_per_minute,
            concurrent_generations: body.0.concurrent_generations,
            concurrent_ingestion_jobs: body.0.concurrent_ingestion_jobs,
        };
        Ok(out(limits::set(&self.state.core, &id, own).await?))
    }
}
