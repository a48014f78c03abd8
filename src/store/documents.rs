//! Document rows and their lifecycle: upload, claim by a job, retry, ready or failed,
//! delete.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{StoreError, parse_timestamp, timestamp};
use crate::domain::TenantId;

/// Where a document is in its processing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Waiting for a worker.
    Queued,
    /// A worker is on it.
    Processing,
    /// Chunks and vectors are in place; search finds it.
    Ready,
    /// Gave up after the retries; `last_error` says why.
    Failed,
}

impl Status {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Processing => "processing",
            Self::Ready => "ready",
            Self::Failed => "failed",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => Self::Queued,
            "processing" => Self::Processing,
            "ready" => Self::Ready,
            "failed" => Self::Failed,
            _ => return None,
        })
    }
}

/// A document as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// Id (UUID).
    pub id: String,
    /// Owner.
    pub tenant_id: TenantId,
    /// Title.
    pub title: String,
    /// Media type of the original.
    pub media_type: String,
    /// Uploaded file name.
    pub filename: Option<String>,
    /// Client metadata (a JSON object).
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// SHA-256 of the original bytes, hex.
    pub content_hash: String,
    /// Size of the original.
    pub bytes: u64,
    /// Status.
    pub status: Status,
    /// Processing attempts so far.
    pub attempts: u32,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// Chunks stored.
    pub chunk_count: u32,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
    /// Last processed successfully.
    pub processed_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, tenant_id, title, media_type, filename, metadata, content_hash, bytes, status, \
                       attempts, last_error, chunk_count, created_at, updated_at, processed_at";

fn from_row(row: &Row<'_>) -> Result<Document, StoreError> {
    let metadata: String = row.get(5)?;
    let status: String = row.get(8)?;
    let created: String = row.get(12)?;
    let updated: String = row.get(13)?;
    let processed: Option<String> = row.get(14)?;
    Ok(Document {
        id: row.get(0)?,
        tenant_id: TenantId::from_db(row.get(1)?),
        title: row.get(2)?,
        media_type: row.get(3)?,
        filename: row.get(4)?,
        metadata: serde_json::from_str(&metadata)
            .map_err(|e| StoreError::Corrupt(format!("metadata: {e}")))?,
        content_hash: row.get(6)?,
        bytes: row.get::<_, i64>(7)?.unsigned_abs(),
        status: Status::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("status `{status}`")))?,
        attempts: u32::try_from(row.get::<_, i64>(9)?).unwrap_or(0),
        last_error: row.get(10)?,
        chunk_count: u32::try_from(row.get::<_, i64>(11)?).unwrap_or(0),
        created_at: parse_timestamp(&created)?,
        updated_at: parse_timestamp(&updated)?,
        processed_at: processed.as_deref().map(parse_timestamp).transpose()?,
    })
}

/// Inserts a document; returns the existing one instead when the tenant already has
/// the same content.
pub fn insert_or_existing(
    conn: &mut Connection,
    d: &Document,
) -> Result<(Document, bool), StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let existing = tx
        .query_row(
            &format!("SELECT {COLUMNS} FROM documents WHERE tenant_id = ?1 AND content_hash = ?2"),
            params![d.tenant_id.as_str(), d.content_hash],
            |row| Ok(from_row(row)),
        )
        .optional()?
        .transpose()?;
    if let Some(existing) = existing {
        return Ok((existing, false));
    }
    tx.execute(
        &format!("INSERT INTO documents ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"),
        params![
            d.id,
            d.tenant_id.as_str(),
            d.title,
            d.media_type,
            d.filename,
            serde_json::Value::Object(d.metadata.clone()).to_string(),
            d.content_hash,
            d.bytes as i64,
            d.status.as_str(),
            d.attempts,
            d.last_error,
            d.chunk_count,
            timestamp(d.created_at),
            timestamp(d.updated_at),
            d.processed_at.map(timestamp),
        ],
    )?;
    tx.commit()?;
    Ok((d.clone(), true))
}

/// One document of a tenant.
pub fn get(conn: &Connection, tenant: &TenantId, id: &str) -> Result<Option<Document>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM documents WHERE tenant_id = ?1 AND id = ?2"
    ))?
    .query_row(params![tenant.as_str(), id], |row| Ok(from_row(row)))
    .optional()?
    .transpose()
}

/// A page of a tenant's documents, newest first, optionally of one status.
pub fn list(
    conn: &Connection,
    tenant: &TenantId,
    status: Option<Status>,
    limit: u32,
    offset: u32,
) -> Result<(Vec<Document>, u64), StoreError> {
    let filter = status.map(Status::as_str);
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM documents WHERE tenant_id = ?1 AND (?2 IS NULL OR status = ?2)
         ORDER BY created_at DESC, id DESC LIMIT ?3 OFFSET ?4"
    ))?;
    let rows = stmt.query_map(params![tenant.as_str(), filter, limit, offset], |row| {
        Ok(from_row(row))
    })?;
    let items = rows.map(|r| r?).collect::<Result<Vec<_>, _>>()?;
    let total: i64 = conn.query_row(
        "SELECT count(*) FROM documents WHERE tenant_id = ?1 AND (?2 IS NULL OR status = ?2)",
        params![tenant.as_str(), filter],
        |r| r.get(0),
    )?;
    Ok((items, total.unsigned_abs()))
}

/// Sets a document's status (and attempts/error); false when it no longer exists.
pub fn set_status(
    conn: &Connection,
    tenant: &TenantId,
    id: &str,
    status: Status,
    attempts: Option<u32>,
    error: Option<&str>,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let n = conn.execute(
        "UPDATE documents SET status = ?3, attempts = coalesce(?4, attempts), last_error = ?5, updated_at = ?6
         WHERE tenant_id = ?1 AND id = ?2",
        params![tenant.as_str(), id, status.as_str(), attempts, error, timestamp(now)],
    )?;
    Ok(n == 1)
}

/// What [`claim`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The caller now processes the document; this is attempt number `.0`.
    Claimed(u32),
    /// The document had used all its attempts; it is now failed.
    Exhausted,
    /// Not waiting (gone, processing elsewhere, ready or failed): nothing to do.
    NotQueued,
}

/// Claims a queued document for one processing attempt, atomically: two jobs for the
/// same document never both run. A document that has used `max_attempts` already is
/// failed instead (so a document that kills its worker cannot loop forever).
pub fn claim(
    conn: &mut Connection,
    tenant: &TenantId,
    id: &str,
    max_attempts: u32,
    now: DateTime<Utc>,
) -> Result<Claim, StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let found: Option<(String, u32, Option<String>)> = tx
        .query_row(
            "SELECT status, attempts, last_error FROM documents WHERE tenant_id = ?1 AND id = ?2",
            params![tenant.as_str(), id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let Some((status, attempts, last_error)) = found else {
        return Ok(Claim::NotQueued);
    };
    if status != Status::Queued.as_str() {
        return Ok(Claim::NotQueued);
    }
    let claim = if attempts >= max_attempts {
        let reason = format!(
            "gave up after {attempts} attempts; the last one: {}",
            last_error
                .as_deref()
                .unwrap_or("it stopped without a result")
        );
        tx.execute(
            "UPDATE documents SET status = 'failed', last_error = ?3, updated_at = ?4
             WHERE tenant_id = ?1 AND id = ?2",
            params![tenant.as_str(), id, reason, timestamp(now)],
        )?;
        Claim::Exhausted
    } else {
        tx.execute(
            "UPDATE documents SET status = 'processing', attempts = attempts + 1, updated_at = ?3
             WHERE tenant_id = ?1 AND id = ?2",
            params![tenant.as_str(), id, timestamp(now)],
        )?;
        Claim::Claimed(attempts + 1)
    };
    tx.commit()?;
    Ok(claim)
}

/// Ends processing attempt `attempt` that failed: back to `queued` for a retry, or
/// `failed`. False when that attempt no longer holds the document (deleted meanwhile,
/// or given to another worker after its lease ran out).
pub fn release(
    conn: &Connection,
    tenant: &TenantId,
    id: &str,
    attempt: u32,
    retry: bool,
    error: &str,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let status = if retry {
        Status::Queued
    } else {
        Status::Failed
    };
    let n = conn.execute(
        "UPDATE documents SET status = ?3, last_error = ?4, updated_at = ?5
         WHERE tenant_id = ?1 AND id = ?2 AND status = 'processing' AND attempts = ?6",
        params![
            tenant.as_str(),
            id,
            status.as_str(),
            error,
            timestamp(now),
            attempt
        ],
    )?;
    Ok(n == 1)
}

/// Queues a ready or failed document again with fresh attempts; false when it is
/// queued or processing already (or gone), so two calls never start two runs.
pub fn requeue_settled(
    conn: &Connection,
    tenant: &TenantId,
    id: &str,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let n = conn.execute(
        "UPDATE documents SET status = 'queued', attempts = 0, last_error = NULL, updated_at = ?3
         WHERE tenant_id = ?1 AND id = ?2 AND status IN ('ready', 'failed')",
        params![tenant.as_str(), id, timestamp(now)],
    )?;
    Ok(n == 1)
}

/// At start, no attempt of this process is running: documents left `processing` by a
/// stopped process go back to `queued`. Returns every queued document (tenant, id).
pub fn unfinished_after_restart(
    conn: &Connection,
    now: DateTime<Utc>,
) -> Result<Vec<(String, String)>, StoreError> {
    conn.execute(
        "UPDATE documents SET status = 'queued', updated_at = ?1 WHERE status = 'processing'",
        [timestamp(now)],
    )?;
    let mut stmt = conn.prepare(
        "SELECT tenant_id, id FROM documents WHERE status = 'queued' ORDER BY created_at",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Whether processing attempt `attempt` holds the document now.
pub fn holds(
    conn: &Connection,
    tenant: &TenantId,
    id: &str,
    attempt: u32,
) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT 1 FROM documents WHERE tenant_id = ?1 AND id = ?2
               AND status = 'processing' AND attempts = ?3",
        )?
        .exists(params![tenant.as_str(), id, attempt])?)
}

/// Every queued document (tenant, id), oldest first.
pub fn queued(conn: &Connection) -> Result<Vec<(String, String)>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT tenant_id, id FROM documents WHERE status = 'queued' ORDER BY created_at",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// The documents whose lease ran out before `cutoff`: those `processing` for a worker
/// that stopped answering go back to `queued` (the next claim counts an attempt), and
/// those `queued` that long get a fresh timestamp. Returns both (tenant, id), for their
/// jobs to be pushed again in case the queue lost them.
pub fn expire_leases(
    conn: &mut Connection,
    cutoff: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Vec<(String, String)>, StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let stale = {
        let mut stmt = tx.prepare(
            "SELECT tenant_id, id FROM documents
             WHERE status IN ('queued', 'processing') AND updated_at < ?1 ORDER BY created_at",
        )?;
        let rows = stmt.query_map([timestamp(cutoff)], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<Result<Vec<(String, String)>, _>>()?
    };
    tx.execute(
        "UPDATE documents SET status = 'queued', updated_at = ?2,
                last_error = CASE status WHEN 'processing'
                  THEN 'its worker stopped answering; given to another' ELSE last_error END
         WHERE status IN ('queued', 'processing') AND updated_at < ?1",
        params![timestamp(cutoff), timestamp(now)],
    )?;
    tx.commit()?;
    Ok(stale)
}

/// Whether another tenant than `tenant` has a document waiting.
pub fn others_queued(conn: &Connection, tenant: &TenantId) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT 1 FROM documents WHERE status = 'queued' AND tenant_id != ?1 LIMIT 1",
        )?
        .exists([tenant.as_str()])?)
}

/// How many documents of a tenant wait for processing (its place in the round-robin).
pub fn queued_count(conn: &Connection, tenant: &TenantId) -> Result<u64, StoreError> {
    let n: i64 = conn.query_row(
        "SELECT count(*) FROM documents WHERE tenant_id = ?1 AND status = 'queued'",
        [tenant.as_str()],
        |r| r.get(0),
    )?;
    Ok(n.unsigned_abs())
}

/// Every document id of a tenant (for the start-up sweep of leftovers).
pub fn ids(
    conn: &Connection,
    tenant: &TenantId,
) -> Result<std::collections::HashSet<String>, StoreError> {
    let mut stmt = conn.prepare("SELECT id FROM documents WHERE tenant_id = ?1")?;
    let rows = stmt.query_map([tenant.as_str()], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Every document of a tenant as (id, title).
pub fn titles(conn: &Connection, tenant: &TenantId) -> Result<Vec<(String, String)>, StoreError> {
    let mut stmt = conn.prepare("SELECT id, title FROM documents WHERE tenant_id = ?1")?;
    let rows = stmt.query_map([tenant.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Whether the tenant has the document.
pub(super) fn owned(conn: &Connection, tenant: &TenantId, id: &str) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM documents WHERE tenant_id = ?1 AND id = ?2")?
        .exists(params![tenant.as_str(), id])?)
}

/// Marks a document ready with its chunk count, if processing attempt `attempts` still
/// holds it.
pub fn mark_ready(
    conn: &Connection,
    tenant: &TenantId,
    id: &str,
    chunk_count: usize,
    attempts: u32,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let n = conn.execute(
        "UPDATE documents SET status = 'ready', chunk_count = ?3, attempts = ?4, last_error = NULL,
                updated_at = ?5, processed_at = ?5
         WHERE tenant_id = ?1 AND id = ?2 AND status = 'processing' AND attempts = ?4",
        params![
            tenant.as_str(),
            id,
            chunk_count as i64,
            attempts,
            timestamp(now)
        ],
    )?;
    Ok(n == 1)
}

/// Deletes a document and its chunks in one transaction (logged for keyword search).
pub fn delete(conn: &mut Connection, tenant: &TenantId, id: &str) -> Result<bool, StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    if !owned(&tx, tenant, id)? {
        return Ok(false);
    }
    super::keywords::touch(&tx, tenant, id)?;
    tx.execute(
        "DELETE FROM documents WHERE tenant_id = ?1 AND id = ?2",
        params![tenant.as_str(), id],
    )?;
    tx.commit()?;
    Ok(true)
}
