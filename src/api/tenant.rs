//! The calling tenant's own record.

use poem_openapi::payload::Json;
use poem_openapi::{OpenApi, Tags};

use super::dto::{TenantOut, TenantPatchIn};
use crate::api::error::ApiError;
use crate::api::security::TenantAuth;
use crate::api::state::AppState;
use crate::domain::{Scope, TenantRef};
use crate::services::tenants;

#[derive(Tags)]
enum Tag {
    /// The calling tenant.
    Tenant,
}

/// `/api/v1/tenant`.
pub struct TenantApi {
    state: AppState,
}

impl TenantApi {
    /// Wraps the state.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

#[OpenApi(tag = "Tag::Tenant")]
impl TenantApi {
    /// The tenant that the credential belongs to.
    #[oai(
        path = "/api/v1/tenant",
        method = "get",
        operation_id = "get_current_tenant"
    )]
    async fn get(&self, auth: TenantAuth) -> Result<Json<TenantOut>, ApiError> {
        auth.0.require(Scope::Read)?;
        Ok(Json(auth.0.tenant.into()))
    }

    /// Changes the calling tenant's name, system prompt or settings (needs `write`).
    #[oai(
        path = "/api/v1/tenant",
        method = "patch",
        operation_id = "update_current_tenant"
    )]
    async fn update(
        &self,
        auth: TenantAuth,
        body: Json<TenantPatchIn>,
    ) -> Result<Json<TenantOut>, ApiError> {
        auth.0.require(Scope::Write)?;
        let r = TenantRef::Id(auth.0.tenant.id.clone());
        let tenant = tenants::update(&self.state.core, &r, body.0.into()).await?;
        Ok(Json(tenant.into()))
    }
}
