//! Per-tenant limits set by the operator (one JSON object per tenant).

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::domain::TenantId;

/// A tenant's own limits; an absent field takes the server's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantLimits {
    /// Requests per minute (token bucket; a minute's worth may come at once). 0: none.
    pub requests_per_minute: Option<u32>,
    /// Generations (chats) running at once.
    pub concurrent_generations: Option<u32>,
    /// Documents of the tenant processed at once.
    pub concurrent_ingestion_jobs: Option<u32>,
}

/// The tenant's own limits; all defaults when none were set.
pub fn get(conn: &Connection, tenant: &TenantId) -> Result<TenantLimits, StoreError> {
    let text: Option<String> = conn
        .query_row(
            "SELECT limits FROM tenant_limits WHERE tenant_id = ?1",
            [tenant.as_str()],
            |r| r.get(0),
        )
        .optional()?;
    match text {
        None => Ok(TenantLimits::default()),
        Some(t) => {
            serde_json::from_str(&t).map_err(|e| StoreError::Corrupt(format!("tenant limits: {e}")))
        }
    }
}

/// Replaces the tenant's own limits.
pub fn set(conn: &Connection, tenant: &TenantId, limits: &TenantLimits) -> Result<(), StoreError> {
    let text = serde_json::to_string(limits)
        .map_err(|e| StoreError::Corrupt(format!("tenant limits: {e}")))?;
    conn.execute(
        "INSERT INTO tenant_limits (tenant_id, limits) VALUES (?1, ?2)
         ON CONFLICT(tenant_id) DO UPDATE SET limits = excluded.limits",
        params![tenant.as_str(), text],
    )?;
    Ok(())
}
