//! Keyword search: each tenant's chunks in an inverted index in memory ([`index`]),
//! ranked by BM25 over the tenant's own statistics, so that one tenant's uploads never
//! move another's scores and no score reveals another tenant's words.
//!
//! The chunks table is the truth; a tenant's index is built from it at the tenant's
//! first keyword search and kept in step through `keyword_log`. Every transaction that
//! changes a document's chunks (stored, replaced, deleted) moves that document to the
//! end of the log, in the same transaction. A search first reads the tenant's last log
//! position (one indexed lookup) and, if its index is behind, re-reads only the
//! documents logged since — so changes made by any process on the data dir are seen.

pub mod index;
mod words;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use rusqlite::{Connection, params};

pub use index::Index;
pub use words::{MAX_QUERY_WORDS, query_words};

use super::StoreError;
use crate::domain::TenantId;

/// Records, inside the caller's transaction, that a document's chunks changed.
pub fn touch(conn: &Connection, tenant: &TenantId, document: &str) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO keyword_log (tenant_id, document_id) VALUES (?1, ?2)",
    )?
    .execute(params![tenant.as_str(), document])?;
    Ok(())
}

/// The tenant's last log position (0 before any change).
fn head(conn: &Connection, tenant: &TenantId) -> Result<i64, StoreError> {
    Ok(conn
        .prepare_cached("SELECT coalesce(max(seq), 0) FROM keyword_log WHERE tenant_id = ?1")?
        .query_row([tenant.as_str()], |r| r.get(0))?)
}

/// A tenant's index and the log position it reflects (`None` until it is built).
#[derive(Default)]
struct Tracked {
    index: Index,
    position: Option<i64>,
}

/// Every tenant's keyword index in this process, each built at its first search.
#[derive(Default)]
pub struct Keywords {
    tenants: Mutex<HashMap<String, Arc<RwLock<Tracked>>>>,
}

impl Keywords {
    /// The tenant's best `limit` chunks for `words` (from [`query_words`]) by BM25, best
    /// first: (chunk id, score), only of `documents` when given. Chunks of documents
    /// that are not ready are included; the caller filters them.
    pub fn search(
        &self,
        conn: &Connection,
        tenant: &TenantId,
        words: &[String],
        limit: usize,
        documents: Option<&[String]>,
    ) -> Result<Vec<(u64, f32)>, StoreError> {
        let entry = self.entry(tenant);
        let head = head(conn, tenant)?;
        {
            let tracked = entry.read().unwrap_or_else(|e| e.into_inner());
            if tracked.position == Some(head) {
                return Ok(tracked.index.search(words, limit, documents));
            }
        }
        let mut tracked = entry.write().unwrap_or_else(|e| e.into_inner());
        if tracked.position != Some(head) {
            catch_up(conn, tenant, &mut tracked, head)?;
        }
        Ok(tracked.index.search(words, limit, documents))
    }

    /// Bytes the tenant's index holds (0 before its first search).
    pub fn memory_bytes(&self, tenant: &TenantId) -> usize {
        let entry = self.entry(tenant);
        let tracked = entry.read().unwrap_or_else(|e| e.into_inner());
        tracked.index.memory_bytes()
    }

    /// Lets go of a deleted tenant's index.
    pub fn forget(&self, tenant: &TenantId) {
        self.tenants
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(tenant.as_str());
    }

    fn entry(&self, tenant: &TenantId) -> Arc<RwLock<Tracked>> {
        self.tenants
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(tenant.as_str().to_owned())
            .or_default()
            .clone()
    }
}

/// Brings a tenant's index up to log position `head`: the whole tenant the first time,
/// afterwards the documents logged since. A change committed while this reads is
/// logged past `head` and read again next time, which changes nothing twice.
fn catch_up(
    conn: &Connection,
    tenant: &TenantId,
    tracked: &mut Tracked,
    head: i64,
) -> Result<(), StoreError> {
    match tracked.position {
        None => {
            let mut index = Index::default();
            let mut stmt = conn.prepare(
                "SELECT c.document_id, d.title, c.id, c.text
                 FROM chunks c JOIN documents d ON d.id = c.document_id
                 WHERE c.tenant_id = ?1 ORDER BY c.document_id, c.chunk_index",
            )?;
            let mut rows = stmt.query([tenant.as_str()])?;
            let (mut document, mut title) = (String::new(), String::new());
            let mut chunks: Vec<(u64, String)> = Vec::new();
            while let Some(r) = rows.next()? {
                let d: String = r.get(0)?;
                if d != document {
                    let texts = chunks.iter().map(|(i, t)| (*i, t.as_str()));
                    index.set_document(&document, &title, texts);
                    chunks.clear();
                    document = d;
                    title = r.get(1)?;
                }
                chunks.push((r.get::<_, i64>(2)?.unsigned_abs(), r.get(3)?));
            }
            let texts = chunks.iter().map(|(i, t)| (*i, t.as_str()));
            index.set_document(&document, &title, texts);
            tracked.index = index;
        }
        Some(position) => {
            let changed: Vec<String> = {
                let mut stmt = conn.prepare_cached(
                    "SELECT document_id FROM keyword_log WHERE tenant_id = ?1 AND seq > ?2
                     ORDER BY seq",
                )?;
                let rows = stmt.query_map(params![tenant.as_str(), position], |r| r.get(0))?;
                rows.collect::<Result<_, _>>()?
            };
            let mut stmt = conn.prepare_cached(
                "SELECT d.title, c.id, c.text
                 FROM chunks c JOIN documents d ON d.id = c.document_id
                 WHERE c.tenant_id = ?1 AND c.document_id = ?2 ORDER BY c.chunk_index",
            )?;
            for document in changed {
                let rows = stmt.query_map(params![tenant.as_str(), document], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?.unsigned_abs(),
                        r.get::<_, String>(2)?,
                    ))
                })?;
                let chunks: Vec<(String, u64, String)> = rows.collect::<Result<_, _>>()?;
                let title = chunks.first().map_or("", |(t, _, _)| t.as_str());
                let texts = chunks.iter().map(|(_, i, t)| (*i, t.as_str()));
                tracked.index.set_document(&document, title, texts);
            }
        }
    }
    tracked.position = Some(head);
    Ok(())
}

/// Drops the per-tenant FTS5 tables that held keyword search before the index in
/// memory (the migration away from them).
pub fn drop_fts_tables(conn: &Connection) -> Result<(), StoreError> {
    let names: Vec<String> = {
        let mut stmt = conn.prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'kw\\_%' ESCAPE '\\'
             AND sql LIKE 'CREATE VIRTUAL TABLE%'",
        )?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    for name in names {
        // Only `kw_` and hex digits were ever created; anything else is not ours.
        if name[3..].chars().all(|c| c.is_ascii_alphanumeric()) {
            conn.execute_batch(&format!("DROP TABLE {name};"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Slug;
    use crate::store::chunks::{NewChunk, keyword_search, replace_chunks};
    use crate::store::documents::{self, Document, Status};
    use crate::store::{Db, tenants};

    fn tenant(db: &Db, slug: &str) -> TenantId {
        let now = chrono::Utc::now();
        let t = tenants::Tenant {
            id: TenantId::generate(),
            slug: Slug::parse(slug).unwrap(),
            name: slug.into(),
            system_prompt: String::new(),
            settings: Default::default(),
            created_at: now,
            updated_at: now,
        };
        db.call_blocking(|c| tenants::insert(c, &t)).unwrap();
        t.id
    }

    /// Stores a document with one chunk per text; returns the chunk ids.
    fn put(db: &Db, tenant: &TenantId, id: &str, status: Status, texts: &[&str]) -> Vec<u64> {
        let now = chrono::Utc::now();
        let doc = Document {
            id: id.into(),
            tenant_id: tenant.clone(),
            title: id.into(),
            media_type: "text/plain".into(),
            filename: None,
            metadata: Default::default(),
            content_hash: format!("{id:0>64}"),
            bytes: 0,
            status,
            attempts: 1,
            last_error: None,
            chunk_count: 0,
            created_at: now,
            updated_at: now,
            processed_at: Some(now),
        };
        let chunks: Vec<NewChunk> = texts
            .iter()
            .enumerate()
            .map(|(index, t)| NewChunk {
                index,
                text: (*t).into(),
                start: 0,
                end: t.len(),
                tokens: 1,
            })
            .collect();
        db.call_blocking(|c| {
            documents::insert_or_existing(c, &doc)?;
            replace_chunks(c, tenant, id, &chunks)
        })
        .unwrap()
        .unwrap()
    }

    fn find(db: &Db, tenant: &TenantId, query: &str) -> Vec<u64> {
        let hits = db
            .call_blocking(|c| keyword_search(c, db.keywords(), tenant, query, 10, None))
            .unwrap();
        hits.into_iter().map(|h| h.0).collect()
    }

    #[test]
    fn follows_changes_made_through_another_connection_pool() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        // Two handles, as two processes on one data dir: each has its own indexes.
        let (reader, writer) = (Db::open(&path).unwrap(), Db::open(&path).unwrap());
        let (a, b) = (tenant(&writer, "aa"), tenant(&writer, "bb"));
        let first = put(&writer, &a, "d1", Status::Ready, &["alpha beta", "gamma"]);
        put(&writer, &b, "d9", Status::Ready, &["alpha alpha"]);
        assert_eq!(find(&reader, &a, "alpha"), [first[0]]);

        // Replaced, added, and one not ready (its chunks are stored, not found).
        let second = put(&writer, &a, "d1", Status::Ready, &["delta"]);
        let third = put(&writer, &a, "d2", Status::Ready, &["alpha delta delta"]);
        put(&writer, &a, "d3", Status::Processing, &["alpha"]);
        assert_eq!(find(&reader, &a, "alpha"), [third[0]]);
        assert!(find(&reader, &a, "gamma").is_empty());
        assert_eq!(sorted(find(&reader, &a, "delta")), [second[0], third[0]]);

        writer
            .call_blocking(|c| documents::delete(c, &a, "d2"))
            .unwrap();
        assert_eq!(find(&reader, &a, "delta alpha"), [second[0]]);
        // The other tenant's words and chunks were never part of it.
        assert_eq!(find(&reader, &b, "alpha").len(), 1);
        assert!(find(&reader, &b, "delta").is_empty());

        // The writer's own index, built now, agrees.
        assert_eq!(find(&writer, &a, "delta alpha"), [second[0]]);
        assert!(reader.keywords().memory_bytes(&a) > 0);
    }

    #[test]
    fn a_documents_title_finds_its_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let db = Db::open(&path).unwrap();
        let a = tenant(&db, "aa");
        put(&db, &a, "x1", Status::Ready, &["words of the first"]);
        // Built at the first search, then the next document through the log.
        assert!(find(&db, &a, "refunds").is_empty());
        let ids = put(&db, &a, "Refunds-Policy", Status::Ready, &["one", "two"]);
        assert_eq!(sorted(find(&db, &a, "refunds")), ids);
        // A fresh process builds the same from the tables.
        let fresh = Db::open(&path).unwrap();
        assert_eq!(sorted(find(&fresh, &a, "policy refunds")), ids);
        assert!(find(&fresh, &a, "x2").is_empty());
    }

    fn sorted(mut v: Vec<u64>) -> Vec<u64> {
        v.sort_unstable();
        v
    }

    #[test]
    fn the_migration_drops_the_fts_tables() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("db.sqlite")).unwrap();
        let count = |c: &rusqlite::Connection| -> Result<i64, StoreError> {
            Ok(c.query_row(
                "SELECT count(*) FROM sqlite_master WHERE name LIKE 'kw%'",
                [],
                |r| r.get(0),
            )?)
        };
        db.call_blocking(|c| {
            c.execute_batch(
                "CREATE VIRTUAL TABLE kw_0123abcd USING fts5(text, content='');
                 CREATE TABLE kw_notes (x);",
            )?;
            assert!(count(c)? > 2);
            drop_fts_tables(c)?;
            // The FTS5 table and its shadow tables are gone; a plain table stays.
            assert_eq!(count(c)?, 1);
            Ok(())
        })
        .unwrap();
    }
}
