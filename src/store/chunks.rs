//! Chunks: the pieces of a document that are embedded and searched, with their
//! keyword entries; stored and replaced a whole document at a time.

use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;
use super::documents::owned;
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
    super::keywords::remove_document(&tx, tenant, document)?;
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
    super::keywords::add(
        &tx,
        tenant,
        ids.iter()
            .copied()
            .zip(chunks.iter().map(|c| c.text.as_str())),
    )?;
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
    let list = ids
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",");
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

/// Keyword search: chunk ids of the tenant's ready documents by BM25 rank, best first.
pub fn keyword_search(
    conn: &Connection,
    tenant: &TenantId,
    query: &str,
    limit: usize,
    documents: Option<&[String]>,
) -> Result<Vec<(u64, f64)>, StoreError> {
    let Some(words) = fts_query(query) else {
        return Ok(Vec::new());
    };
    let allowed: Option<std::collections::HashSet<&str>> =
        documents.map(|d| d.iter().map(String::as_str).collect());
    // FTS5 ranks the tenant's matches in the tenant's own table and hands back the best
    // `fetch`; those of documents not ready or outside the filter are dropped here, and
    // the window widens until enough are left or the matches run out.
    let mut keep = conn.prepare_cached(
        "SELECT c.document_id FROM chunks c JOIN documents d ON d.id = c.document_id
         WHERE c.id = ?1 AND c.tenant_id = ?2 AND d.status = 'ready'",
    )?;
    let mut out = Vec::with_capacity(limit);
    let mut offset = 0usize;
    let mut fetch = (limit * 2).max(32);
    loop {
        let page = super::keywords::ranked(conn, tenant, &words, fetch, offset)?;
        for &(id, rank) in &page {
            let document: Option<String> = keep
                .query_row(params![id, tenant.as_str()], |r| r.get(0))
                .optional()?;
            let Some(document) = document else {
                continue;
            };
            if allowed
                .as_ref()
                .is_none_or(|a| a.contains(document.as_str()))
            {
                out.push((id.unsigned_abs(), -rank));
                if out.len() == limit {
                    return Ok(out);
                }
            }
        }
        if page.len() < fetch {
            return Ok(out);
        }
        offset += fetch;
        fetch *= 4;
    }
}

/// Words too common to say anything about relevance (English).
const STOPWORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "by", "can", "do", "does", "for", "from", "how",
    "i", "in", "is", "it", "its", "me", "my", "of", "on", "or", "our", "so", "that", "the",
    "their", "them", "there", "these", "this", "to", "was", "we", "what", "when", "where", "which",
    "who", "why", "will", "with", "you", "your",
];

/// Turns free text into an FTS5 query: each word quoted, any of them may match;
/// stopwords are left out unless the query has nothing else.
fn fts_query(query: &str) -> Option<String> {
    let words: Vec<String> = query
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    let content: Vec<&String> = words
        .iter()
        .filter(|w| !STOPWORDS.contains(&w.as_str()))
        .collect();
    let chosen: Vec<&String> = if content.is_empty() {
        words.iter().collect()
    } else {
        content
    };
    let terms: Vec<String> = chosen
        .into_iter()
        .take(64)
        .map(|w| format!("\"{w}\""))
        .collect();
    (!terms.is_empty()).then(|| terms.join(" OR "))
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
