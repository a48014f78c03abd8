//! The keyword index: one FTS5 table per tenant (`kw_<tenant id>`), so that BM25's
//! statistics (document count, average length, term frequencies) are the tenant's own.
//! One tenant's uploads never move another's scores, and no score reveals another
//! tenant's words.

use rusqlite::{Connection, params};

use super::StoreError;
use crate::domain::TenantId;

/// The tenant's table name: `kw_` and the id's hex digits (nothing else can get in).
fn table(tenant: &TenantId) -> String {
    let id: String = tenant
        .as_str()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    format!("kw_{id}")
}

/// Creates the tenant's table if it does not exist yet.
pub fn ensure(conn: &Connection, tenant: &TenantId) -> Result<(), StoreError> {
    conn.execute_batch(&format!(
        "CREATE VIRTUAL TABLE IF NOT EXISTS {} USING fts5(
             text, content='', contentless_delete=1, tokenize='unicode61 remove_diacritics 2'
         );",
        table(tenant)
    ))?;
    Ok(())
}

fn exists(conn: &Connection, tenant: &TenantId) -> Result<bool, StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1")?;
    Ok(stmt.exists([table(tenant)])?)
}

/// Indexes chunks (id, text) of the tenant.
pub fn add<'a>(
    conn: &Connection,
    tenant: &TenantId,
    chunks: impl IntoIterator<Item = (u64, &'a str)>,
) -> Result<(), StoreError> {
    ensure(conn, tenant)?;
    let mut stmt = conn.prepare_cached(&format!(
        "INSERT INTO {}(rowid, text) VALUES (?1, ?2)",
        table(tenant)
    ))?;
    for (id, text) in chunks {
        stmt.execute(params![id as i64, text])?;
    }
    Ok(())
}

/// Removes a document's chunks from the index; call before its chunk rows go.
pub fn remove_document(
    conn: &Connection,
    tenant: &TenantId,
    document: &str,
) -> Result<(), StoreError> {
    if !exists(conn, tenant)? {
        return Ok(());
    }
    conn.prepare_cached(&format!(
        "DELETE FROM {} WHERE rowid IN (SELECT id FROM chunks WHERE document_id = ?1)",
        table(tenant)
    ))?
    .execute([document])?;
    Ok(())
}

/// Drops the tenant's index (with the tenant).
pub fn drop_tenant(conn: &Connection, tenant: &TenantId) -> Result<(), StoreError> {
    conn.execute_batch(&format!("DROP TABLE IF EXISTS {};", table(tenant)))?;
    Ok(())
}

/// One page of the tenant's matches for an FTS5 expression, best first: (chunk id, BM25
/// rank, lower is better).
pub fn ranked(
    conn: &Connection,
    tenant: &TenantId,
    expr: &str,
    limit: usize,
    offset: usize,
) -> Result<Vec<(i64, f64)>, StoreError> {
    if !exists(conn, tenant)? {
        return Ok(Vec::new());
    }
    let name = table(tenant);
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT rowid, rank FROM {name} WHERE {name} MATCH ?1 ORDER BY rank LIMIT ?2 OFFSET ?3"
    ))?;
    let rows = stmt.query_map(params![expr, limit as i64, offset as i64], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Builds every tenant's table from the stored chunks (the migration away from the
/// shared table).
pub fn build_all(conn: &Connection) -> Result<(), StoreError> {
    let tenants: Vec<String> = {
        let mut stmt = conn.prepare("SELECT id FROM tenants")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    for id in tenants {
        let tenant = TenantId::from_db(id);
        ensure(conn, &tenant)?;
        conn.execute(
            &format!(
                "INSERT INTO {}(rowid, text) SELECT id, text FROM chunks WHERE tenant_id = ?1",
                table(&tenant)
            ),
            [tenant.as_str()],
        )?;
    }
    Ok(())
}
