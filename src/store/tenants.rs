//! Tenant rows.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{StoreError, parse_timestamp, timestamp};
use crate::domain::{Slug, TenantId, TenantRef};

/// A tenant as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Tenant {
    /// Id.
    pub id: TenantId,
    /// Unique slug.
    pub slug: Slug,
    /// Display name.
    pub name: String,
    /// Prepended to every chat of the tenant.
    pub system_prompt: String,
    /// Free-form settings object.
    pub settings: serde_json::Map<String, serde_json::Value>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, slug, name, system_prompt, settings, created_at, updated_at";

/// Reads a tenant from a row selected with `COLUMNS` starting at `offset`.
pub(crate) fn from_row(row: &Row<'_>, offset: usize) -> Result<Tenant, StoreError> {
    let settings: String = row.get(offset + 4)?;
    let created: String = row.get(offset + 5)?;
    let updated: String = row.get(offset + 6)?;
    Ok(Tenant {
        id: TenantId::from_db(row.get(offset)?),
        slug: Slug::from_db(row.get(offset + 1)?),
        name: row.get(offset + 2)?,
        system_prompt: row.get(offset + 3)?,
        settings: serde_json::from_str(&settings)
            .map_err(|e| StoreError::Corrupt(format!("tenant settings: {e}")))?,
        created_at: parse_timestamp(&created)?,
        updated_at: parse_timestamp(&updated)?,
    })
}

/// The tenant columns, prefixed with a table alias, for joins.
pub(crate) fn columns(alias: &str) -> String {
    COLUMNS
        .split(", ")
        .map(|c| format!("{alias}.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Inserts a tenant.
pub fn insert(conn: &Connection, t: &Tenant) -> Result<(), StoreError> {
    conn.execute(
        &format!("INSERT INTO tenants ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
        params![
            t.id.as_str(),
            t.slug.as_str(),
            t.name,
            t.system_prompt,
            serde_json::Value::Object(t.settings.clone()).to_string(),
            timestamp(t.created_at),
            timestamp(t.updated_at),
        ],
    )?;
    Ok(())
}

/// Writes every field of an existing tenant but its id and creation time.
pub fn update(conn: &Connection, t: &Tenant) -> Result<bool, StoreError> {
    let n = conn.execute(
        "UPDATE tenants SET slug = ?2, name = ?3, system_prompt = ?4, settings = ?5, updated_at = ?6
         WHERE id = ?1",
        params![
            t.id.as_str(),
            t.slug.as_str(),
            t.name,
            t.system_prompt,
            serde_json::Value::Object(t.settings.clone()).to_string(),
            timestamp(t.updated_at),
        ],
    )?;
    Ok(n == 1)
}

/// Finds a tenant by id or slug.
pub fn get(conn: &Connection, r: &TenantRef) -> Result<Option<Tenant>, StoreError> {
    let (sql, key) = match r {
        TenantRef::Id(id) => ("id", id.as_str()),
        TenantRef::Slug(slug) => ("slug", slug.as_str()),
    };
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM tenants WHERE {sql} = ?1"),
        [key],
        |row| Ok(from_row(row, 0)),
    )
    .optional()?
    .transpose()
}

/// Lists tenants by slug.
pub fn list(conn: &Connection, limit: u32, offset: u32) -> Result<Vec<Tenant>, StoreError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM tenants ORDER BY slug LIMIT ?1 OFFSET ?2"
    ))?;
    let rows = stmt.query_map(params![limit, offset], |row| Ok(from_row(row, 0)))?;
    rows.map(|r| r?).collect()
}

/// Counts tenants.
pub fn count(conn: &Connection) -> Result<u64, StoreError> {
    let n: i64 = conn.query_row("SELECT count(*) FROM tenants", [], |r| r.get(0))?;
    Ok(n.unsigned_abs())
}

/// The ids of every tenant.
pub fn ids(conn: &Connection) -> Result<std::collections::HashSet<String>, StoreError> {
    let mut stmt = conn.prepare("SELECT id FROM tenants")?;
    let ids = stmt.query_map([], |r| r.get::<_, String>(0))?;
    Ok(ids.collect::<Result<_, _>>()?)
}

/// Deletes a tenant; its keys (and later everything else) go by cascade.
pub fn delete(conn: &Connection, id: &TenantId) -> Result<bool, StoreError> {
    // Immediate: a deferred transaction that reads first and then writes fails at once
    // with SQLITE_BUSY when another connection wrote in between; the busy timeout only
    // covers waiting for the write lock up front.
    let tx = rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)?;
    let deleted = tx.execute("DELETE FROM tenants WHERE id = ?1", [id.as_str()])? == 1;
    tx.commit()?;
    Ok(deleted)
}
