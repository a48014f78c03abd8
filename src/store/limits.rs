//! Per-tenant limits set by the operator (one JSON object per tenant).

use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;
use crate::domain::TenantId;
use crate::services::limits::TenantLimits;

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
