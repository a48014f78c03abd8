//! Chunks: the pieces of a document that are embedded and searched; stored and
//! replaced a whole document at a time, each change logged for keyword search.

use rusqlite::{Connection, params};

use super::StoreError;
use super::documents::owned;
use super::keywords::Keywords;
use crate::domain::TenantId;

/// A chunk about to be stored (also what a remote worker hands back for it).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NewChunk {
    /// Position in the document.
    pub index: usize,
    /// Text.
    pub text: String,
    /// First character.
    pub start: usize,
    /// One past the last character.
    pub end: usize,
    /// Tokens.
    pub tokens: usize,
}

/// Replaces a document's chunks in one transaction; returns the new chunk ids in
/// order, or `None` when the document was deleted meanwhile.
pub fn replace_chunks(
    conn: &mut Connection,
    tenant: &TenantId,
    document: &str,
    chunks: &[NewChunk],
) -> Result<Option<Vec<u64>>, StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    if !owned(&tx, tenant, document)? {
        return Ok(None);
    }
    tx.execute("DELETE FROM chunks WHERE document_id = ?1", [document])?;
    let mut ids = Vec::with_capacity(chunks.len());
    {
        let mut stmt = tx.prepare(
            "INSERT INTO chunks (tenant_id, document_id, chunk_index, text, start_char, end_char, tokens)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        for c in chunks {
            stmt.execute(params![
                tenant.as_str(),
                document,
                c.index as i64,
                c.text,
                c.start as i64,
                c.end as i64,
                c.tokens as i64
            ])?;
            ids.push(tx.last_insert_rowid().unsigned_abs());
        }
    }
    super::keywords::touch(&tx, tenant, document)?;
    tx.commit()?;
    Ok(Some(ids))
}

/// A chunk found by search, with its document's title.
#[derive(Debug, Clone)]
pub struct ChunkHit {
    /// Chunk id.
    pub id: u64,
    /// Document.
    pub document_id: String,
    /// Document title.
    pub title: String,
    /// Position in the document.
    pub chunk_index: u32,
    /// Text.
    pub text: String,
    /// First character.
    pub start: u64,
    /// One past the last character.
    pub end: u64,
}

/// A chunk from a row of `c.id, c.document_id, d.title, c.chunk_index, c.text,
/// c.start_char, c.end_char`.
fn hit(r: &rusqlite::Row<'_>) -> rusqlite::Result<ChunkHit> {
    Ok(ChunkHit {
        id: r.get::<_, i64>(0)?.unsigned_abs(),
        document_id: r.get(1)?,
        title: r.get(2)?,
        chunk_index: u32::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
        text: r.get(4)?,
        start: r.get::<_, i64>(5)?.unsigned_abs(),
        end: r.get::<_, i64>(6)?.unsigned_abs(),
    })
}

/// Loads chunks by id, only of the tenant's ready documents.
pub fn chunks_by_ids(
    conn: &Connection,
    tenant: &TenantId,
    ids: &[u64],
) -> Result<Vec<ChunkHit>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let list = id_list(ids);
    let mut stmt = conn.prepare(&format!(
        "SELECT c.id, c.document_id, d.title, c.chunk_index, c.text, c.start_char, c.end_char
         FROM chunks c JOIN documents d ON d.id = c.document_id
         WHERE c.tenant_id = ?1 AND d.status = 'ready' AND c.id IN ({list})"
    ))?;
    let rows = stmt.query_map([tenant.as_str()], hit)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// One chunk of one of the tenant's documents, by its position in the document.
pub fn chunk_at(
    conn: &Connection,
    tenant: &TenantId,
    document: &str,
    index: u32,
) -> Result<Option<ChunkHit>, StoreError> {
    use rusqlite::OptionalExtension;
    Ok(conn
        .query_row(
            "SELECT c.id, c.document_id, d.title, c.chunk_index, c.text, c.start_char, c.end_char
             FROM chunks c JOIN documents d ON d.id = c.document_id
             WHERE c.tenant_id = ?1 AND c.document_id = ?2 AND c.chunk_index = ?3",
            rusqlite::params![tenant.as_str(), document, i64::from(index)],
            hit,
        )
        .optional()?)
}

/// Keyword search: chunk ids of the tenant's ready documents by BM25, best first.
pub fn keyword_search(
    conn: &Connection,
    keywords: &Keywords,
    tenant: &TenantId,
    query: &str,
    limit: usize,
    documents: Option<&[String]>,
) -> Result<Vec<(u64, f32)>, StoreError> {
    let words = super::keywords::query_words(query);
    if words.is_empty() || limit == 0 {
        return Ok(Vec::new());
    }
    // The index holds every stored chunk; those of documents that are not ready are
    // dropped here, and the window widens until enough are left or the matches run out.
    let mut fetch = (limit * 2).max(32);
    loop {
        let ranked = keywords.search(conn, tenant, &words, fetch, documents)?;
        let ids: Vec<u64> = ranked.iter().map(|(id, _)| *id).collect();
        let ready = ready_chunks(conn, tenant, &ids)?;
        let out: Vec<(u64, f32)> = ranked
            .iter()
            .filter(|(id, _)| ready.contains(id))
            .take(limit)
            .copied()
            .collect();
        if out.len() == limit || ranked.len() < fetch {
            return Ok(out);
        }
        fetch *= 4;
    }
}

/// Which of these chunks belong to the tenant's ready documents.
fn ready_chunks(
    conn: &Connection,
    tenant: &TenantId,
    ids: &[u64],
) -> Result<std::collections::HashSet<u64>, StoreError> {
    if ids.is_empty() {
        return Ok(Default::default());
    }
    let list = id_list(ids);
    let mut stmt = conn.prepare(&format!(
        "SELECT c.id FROM chunks c JOIN documents d ON d.id = c.document_id
         WHERE c.tenant_id = ?1 AND d.status = 'ready' AND c.id IN ({list})"
    ))?;
    let rows = stmt.query_map([tenant.as_str()], |r| {
        Ok(r.get::<_, i64>(0)?.unsigned_abs())
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Chunk ids as an SQL list (`1,2,3`); ids are numbers, so nothing needs quoting.
fn id_list(ids: &[u64]) -> String {
    ids.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Counts a tenant's chunks (all documents).
pub fn count_chunks(conn: &Connection, tenant: &TenantId) -> Result<u64, StoreError> {
    let n: i64 = conn.query_row(
        "SELECT count(*) FROM chunks WHERE tenant_id = ?1",
        [tenant.as_str()],
        |r| r.get(0),
    )?;
    Ok(n.unsigned_abs())
}

/// The texts of a tenant's chunks (all documents), in no particular order.
pub fn texts(conn: &Connection, tenant: &TenantId) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn.prepare("SELECT text FROM chunks WHERE tenant_id = ?1")?;
    let rows = stmt.query_map([tenant.as_str()], |r| r.get::<_, String>(0))?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}
