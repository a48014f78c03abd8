//! Embedded, versioned schema migrations, tracked in `PRAGMA user_version`.

use rusqlite::Connection;

use super::StoreError;

/// Each entry moves the schema one version up; never edit a shipped entry.
const MIGRATIONS: &[&str] = &[
    // 1: tenants and their API keys.
    r#"
    CREATE TABLE tenants (
        id            TEXT PRIMARY KEY,
        slug          TEXT NOT NULL UNIQUE,
        name          TEXT NOT NULL,
        system_prompt TEXT NOT NULL DEFAULT '',
        settings      TEXT NOT NULL DEFAULT '{}',
        created_at    TEXT NOT NULL,
        updated_at    TEXT NOT NULL
    );
    CREATE TABLE api_keys (
        id           TEXT PRIMARY KEY,
        tenant_id    TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        name         TEXT NOT NULL,
        prefix       TEXT NOT NULL,
        hash         BLOB NOT NULL UNIQUE,
        scopes       TEXT NOT NULL,
        expires_at   TEXT,
        revoked_at   TEXT,
        last_used_at TEXT,
        created_at   TEXT NOT NULL
    );
    CREATE INDEX api_keys_by_tenant ON api_keys(tenant_id);
    "#,
    // 2: documents, their chunks, and full-text search over chunk text.
    r#"
    CREATE TABLE documents (
        id           TEXT PRIMARY KEY,
        tenant_id    TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        title        TEXT NOT NULL,
        media_type   TEXT NOT NULL,
        filename     TEXT,
        metadata     TEXT NOT NULL DEFAULT '{}',
        content_hash TEXT NOT NULL,
        bytes        INTEGER NOT NULL,
        status       TEXT NOT NULL,
        attempts     INTEGER NOT NULL DEFAULT 0,
        last_error   TEXT,
        chunk_count  INTEGER NOT NULL DEFAULT 0,
        created_at   TEXT NOT NULL,
        updated_at   TEXT NOT NULL,
        processed_at TEXT,
        UNIQUE (tenant_id, content_hash)
    );
    CREATE INDEX documents_by_tenant ON documents(tenant_id, created_at);
    -- AUTOINCREMENT: a chunk id is also its vector id and is never reused.
    CREATE TABLE chunks (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        document_id TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
        chunk_index INTEGER NOT NULL,
        text        TEXT NOT NULL,
        start_char  INTEGER NOT NULL,
        end_char    INTEGER NOT NULL,
        tokens      INTEGER NOT NULL,
        UNIQUE (document_id, chunk_index)
    );
    CREATE INDEX chunks_by_tenant ON chunks(tenant_id);
    CREATE VIRTUAL TABLE chunks_fts USING fts5(
        text, content='chunks', content_rowid='id', tokenize='unicode61 remove_diacritics 2'
    );
    CREATE TRIGGER chunks_fts_insert AFTER INSERT ON chunks BEGIN
        INSERT INTO chunks_fts(rowid, text) VALUES (new.id, new.text);
    END;
    CREATE TRIGGER chunks_fts_delete AFTER DELETE ON chunks BEGIN
        INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', old.id, old.text);
    END;
    "#,
    // 3: keyword search scoped to a tenant inside the full-text index. Each row carries its
    // tenant as one token, so a query matches `tenant AND words` within FTS5 and ranks
    // there (ORDER BY rank LIMIT), instead of joining every match out to `chunks`.
    r#"
    DROP TRIGGER chunks_fts_insert;
    DROP TRIGGER chunks_fts_delete;
    DROP TABLE chunks_fts;
    CREATE VIRTUAL TABLE chunk_search USING fts5(
        tenant, text, content='', contentless_delete=1,
        tokenize='unicode61 remove_diacritics 2'
    );
    -- Rank by the text column only.
    INSERT INTO chunk_search(chunk_search, rank) VALUES ('rank', 'bm25(0.0, 1.0)');
    INSERT INTO chunk_search(rowid, tenant, text)
        SELECT id, replace(tenant_id, '-', ''), text FROM chunks;
    CREATE TRIGGER chunk_search_insert AFTER INSERT ON chunks BEGIN
        INSERT INTO chunk_search(rowid, tenant, text)
            VALUES (new.id, replace(new.tenant_id, '-', ''), new.text);
    END;
    CREATE TRIGGER chunk_search_delete AFTER DELETE ON chunks BEGIN
        DELETE FROM chunk_search WHERE rowid = old.id;
    END;
    "#,
    // 4: agents, configured assistants of a tenant; their settings as one JSON object.
    r#"
    CREATE TABLE agents (
        id         TEXT PRIMARY KEY,
        tenant_id  TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        name       TEXT NOT NULL,
        settings   TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        UNIQUE (tenant_id, name)
    );
    "#,
    // 5: keyword search per tenant. The shared table's BM25 statistics mixed every
    // tenant's text. (Each tenant had its own FTS5 table from here until 7.)
    r#"
    DROP TRIGGER chunk_search_insert;
    DROP TRIGGER chunk_search_delete;
    DROP TABLE chunk_search;
    "#,
    // 6: limits the operator set for a tenant (the server's defaults apply otherwise).
    r#"
    CREATE TABLE tenant_limits (
        tenant_id TEXT PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
        limits    TEXT NOT NULL
    );
    "#,
    // 7: keyword search moves to an index in memory built from the chunks (see
    // `keywords`); this log tells each process's index which documents changed. The
    // per-tenant FTS5 tables are dropped right after this step.
    r#"
    CREATE TABLE keyword_log (
        seq         INTEGER PRIMARY KEY AUTOINCREMENT,
        tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        document_id TEXT NOT NULL,
        UNIQUE (tenant_id, document_id)
    );
    CREATE INDEX keyword_log_position ON keyword_log (tenant_id, seq);
    "#,
    // 8: a counter that every change to what a credential resolves to moves (a key
    // revoked, expiring differently, rescoped or deleted; a tenant changed or deleted),
    // by whichever process makes it. A process may keep resolved keys in memory while
    // the counter stands still (see `services::keys`). Recording a key's use does not
    // move it.
    r#"
    CREATE TABLE auth_epoch (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        n  INTEGER NOT NULL
    );
    INSERT INTO auth_epoch (id, n) VALUES (1, 0);
    CREATE TRIGGER auth_key_changed
        AFTER UPDATE OF tenant_id, scopes, expires_at, revoked_at, hash ON api_keys
        BEGIN UPDATE auth_epoch SET n = n + 1 WHERE id = 1; END;
    CREATE TRIGGER auth_key_deleted AFTER DELETE ON api_keys
        BEGIN UPDATE auth_epoch SET n = n + 1 WHERE id = 1; END;
    CREATE TRIGGER auth_tenant_changed AFTER UPDATE ON tenants
        BEGIN UPDATE auth_epoch SET n = n + 1 WHERE id = 1; END;
    CREATE TRIGGER auth_tenant_deleted AFTER DELETE ON tenants
        BEGIN UPDATE auth_epoch SET n = n + 1 WHERE id = 1; END;
    "#,
];

/// The version after which the FTS5 keyword tables are dropped.
const KEYWORDS_IN_MEMORY: i64 = 7;

/// The newest schema version this binary knows.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Applies every pending migration, each in its own transaction.
pub fn apply(conn: &mut Connection) -> Result<(), StoreError> {
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            known: SCHEMA_VERSION,
        });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = index as i64 + 1;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        // Another process may have migrated while we waited for the lock.
        let now: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if now >= version {
            continue;
        }
        tx.execute_batch(sql)?;
        if version == KEYWORDS_IN_MEMORY {
            super::keywords::drop_fts_tables(&tx)?;
        }
        tx.pragma_update(None, "user_version", version)?;
        tx.commit()?;
        tracing::info!(version, "applied database migration");
    }
    Ok(())
}
