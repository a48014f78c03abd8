//! Agent rows: a name unique in the tenant, and the agent's settings as JSON.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::{StoreError, parse_timestamp, timestamp};
use crate::domain::TenantId;

/// What an agent retrieves before answering.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRetrieval {
    /// Search the tenant's knowledge at all.
    pub enabled: bool,
    /// Chunks given to the model.
    pub top_k: u32,
    /// Drop chunks below this hybrid score.
    pub min_score: Option<f32>,
    /// Only chunks of these documents.
    pub document_ids: Option<Vec<String>>,
}

/// An agent's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentSettings {
    /// Instructions; empty means the tenant's system prompt.
    pub system_prompt: String,
    /// Where answers come from (`local`).
    pub provider: String,
    /// The provider's model name; `None` for the provider's default.
    pub model: Option<String>,
    /// Sampling temperature.
    pub temperature: f64,
    /// New tokens at most.
    pub max_tokens: u32,
    /// Retrieval.
    pub retrieval: AgentRetrieval,
}

/// An agent as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Agent {
    /// Id.
    pub id: String,
    /// Owner.
    pub tenant_id: TenantId,
    /// Unique in the tenant.
    pub name: String,
    /// Settings.
    pub settings: AgentSettings,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, tenant_id, name, settings, created_at, updated_at";

fn from_row(row: &rusqlite::Row<'_>) -> Result<Agent, StoreError> {
    let settings: String = row.get(3)?;
    let created: String = row.get(4)?;
    let updated: String = row.get(5)?;
    Ok(Agent {
        id: row.get(0)?,
        tenant_id: TenantId::from_db(row.get(1)?),
        name: row.get(2)?,
        settings: serde_json::from_str(&settings)
            .map_err(|e| StoreError::Corrupt(format!("agent settings: {e}")))?,
        created_at: parse_timestamp(&created)?,
        updated_at: parse_timestamp(&updated)?,
    })
}

fn settings_json(a: &Agent) -> Result<String, StoreError> {
    serde_json::to_string(&a.settings).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Inserts an agent; a name the tenant already uses is a unique violation.
pub fn insert(conn: &Connection, a: &Agent) -> Result<(), StoreError> {
    conn.execute(
        &format!("INSERT INTO agents ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
        params![
            a.id,
            a.tenant_id.as_str(),
            a.name,
            settings_json(a)?,
            timestamp(a.created_at),
            timestamp(a.updated_at)
        ],
    )?;
    Ok(())
}

/// One agent of a tenant.
pub fn get(conn: &Connection, tenant: &TenantId, id: &str) -> Result<Option<Agent>, StoreError> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM agents WHERE tenant_id = ?1 AND id = ?2"),
        params![tenant.as_str(), id],
        |r| Ok(from_row(r)),
    )
    .optional()?
    .transpose()
}

/// The tenant's agent of this name.
pub fn by_name(
    conn: &Connection,
    tenant: &TenantId,
    name: &str,
) -> Result<Option<Agent>, StoreError> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM agents WHERE tenant_id = ?1 AND name = ?2"),
        params![tenant.as_str(), name],
        |r| Ok(from_row(r)),
    )
    .optional()?
    .transpose()
}

/// A tenant's agents by name.
pub fn list(conn: &Connection, tenant: &TenantId) -> Result<Vec<Agent>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM agents WHERE tenant_id = ?1 ORDER BY name"
    ))?;
    let rows = stmt.query_map([tenant.as_str()], |r| Ok(from_row(r)))?;
    rows.map(|r| r?).collect()
}

/// Writes an agent's name and settings; false when it is not the tenant's.
pub fn update(conn: &Connection, a: &Agent) -> Result<bool, StoreError> {
    let n = conn.execute(
        "UPDATE agents SET name = ?3, settings = ?4, updated_at = ?5 WHERE tenant_id = ?1 AND id = ?2",
        params![
            a.tenant_id.as_str(),
            a.id,
            a.name,
            settings_json(a)?,
            timestamp(a.updated_at)
        ],
    )?;
    Ok(n == 1)
}

/// Deletes an agent; false when it is not the tenant's.
pub fn delete(conn: &Connection, tenant: &TenantId, id: &str) -> Result<bool, StoreError> {
    let n = conn.execute(
        "DELETE FROM agents WHERE tenant_id = ?1 AND id = ?2",
        params![tenant.as_str(), id],
    )?;
    Ok(n == 1)
}
