//! API key rows; only the SHA-256 of a key is stored.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::tenants::{self, Tenant};
use super::{StoreError, parse_timestamp, timestamp};
use crate::domain::{Scopes, TenantId};

/// An API key as stored (never the secret).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKey {
    /// Id.
    pub id: String,
    /// Owner.
    pub tenant_id: TenantId,
    /// Label given by the operator.
    pub name: String,
    /// First characters of the key, to recognise it.
    pub prefix: String,
    /// What it may do.
    pub scopes: Scopes,
    /// When it stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
    /// When it was last used (updated at most once a minute).
    pub last_used_at: Option<DateTime<Utc>>,
    /// Created.
    pub created_at: DateTime<Utc>,
}

const COLUMNS: &str =
    "id, tenant_id, name, prefix, scopes, expires_at, revoked_at, last_used_at, created_at";

fn opt_time(v: Option<String>) -> Result<Option<DateTime<Utc>>, StoreError> {
    v.as_deref().map(parse_timestamp).transpose()
}

fn from_row(row: &Row<'_>) -> Result<ApiKey, StoreError> {
    let scopes: String = row.get(4)?;
    let created: String = row.get(8)?;
    Ok(ApiKey {
        id: row.get(0)?,
        tenant_id: TenantId::from_db(row.get(1)?),
        name: row.get(2)?,
        prefix: row.get(3)?,
        scopes: Scopes::parse(&scopes).map_err(|e| StoreError::Corrupt(e.0))?,
        expires_at: opt_time(row.get(5)?)?,
        revoked_at: opt_time(row.get(6)?)?,
        last_used_at: opt_time(row.get(7)?)?,
        created_at: parse_timestamp(&created)?,
    })
}

/// Inserts a key with the hash of its secret.
pub fn insert(conn: &Connection, key: &ApiKey, hash: &[u8]) -> Result<(), StoreError> {
    conn.execute(
        &format!("INSERT INTO api_keys ({COLUMNS}, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"),
        params![
            key.id,
            key.tenant_id.as_str(),
            key.name,
            key.prefix,
            key.scopes.to_text(),
            key.expires_at.map(timestamp),
            key.revoked_at.map(timestamp),
            key.last_used_at.map(timestamp),
            timestamp(key.created_at),
            hash,
        ],
    )?;
    Ok(())
}

/// Lists a tenant's keys, newest first.
pub fn list(conn: &Connection, tenant: &TenantId) -> Result<Vec<ApiKey>, StoreError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM api_keys WHERE tenant_id = ?1 ORDER BY created_at DESC, id DESC"
    ))?;
    let rows = stmt.query_map([tenant.as_str()], |row| Ok(from_row(row)))?;
    rows.map(|r| r?).collect()
}

/// One key of a tenant.
pub fn get(conn: &Connection, tenant: &TenantId, id: &str) -> Result<Option<ApiKey>, StoreError> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM api_keys WHERE tenant_id = ?1 AND id = ?2"),
        [tenant.as_str(), id],
        |row| Ok(from_row(row)),
    )
    .optional()?
    .transpose()
}

/// Marks a key revoked (keeps the first revocation time).
pub fn revoke(
    conn: &Connection,
    tenant: &TenantId,
    id: &str,
    at: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let n = conn.execute(
        "UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?3) WHERE tenant_id = ?1 AND id = ?2",
        params![tenant.as_str(), id, timestamp(at)],
    )?;
    Ok(n == 1)
}

/// Finds a key and its tenant by the hash of the secret.
pub fn find_by_hash(
    conn: &Connection,
    hash: &[u8],
) -> Result<Option<(ApiKey, Tenant)>, StoreError> {
    let sql = format!(
        "SELECT {}, {} FROM api_keys k JOIN tenants t ON t.id = k.tenant_id WHERE k.hash = ?1",
        COLUMNS
            .split(", ")
            .map(|c| format!("k.{c}"))
            .collect::<Vec<_>>()
            .join(", "),
        tenants::columns("t"),
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    stmt.query_row([hash], |row| {
        Ok(from_row(row).and_then(|k| Ok((k, tenants::from_row(row, 9)?))))
    })
    .optional()?
    .transpose()
}

/// Records a use of the key.
pub fn touch(conn: &Connection, id: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE api_keys SET last_used_at = ?2 WHERE id = ?1",
        params![id, timestamp(at)],
    )?;
    Ok(())
}

/// The credential counter (migration 8): it moves with every change to a key or tenant
/// that a resolved key depends on, made by any process.
pub fn epoch(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn
        .prepare_cached("SELECT n FROM auth_epoch WHERE id = 1")?
        .query_row([], |r| r.get(0))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Slug;
    use crate::store::Db;

    #[test]
    fn the_credential_counter_moves_with_every_change_a_resolved_key_depends_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        // Two handles, as the server and the CLI on one data dir.
        let (server, cli) = (Db::open(&path).unwrap(), Db::open(&path).unwrap());
        let now = Utc::now();
        let mut tenant = Tenant {
            id: TenantId::generate(),
            slug: Slug::parse("acme").unwrap(),
            name: "Acme".into(),
            system_prompt: String::new(),
            settings: Default::default(),
            created_at: now,
            updated_at: now,
        };
        let key = ApiKey {
            id: "k1".into(),
            tenant_id: tenant.id.clone(),
            name: "k".into(),
            prefix: "rbx_abc".into(),
            scopes: Scopes::parse("read").unwrap(),
            expires_at: None,
            revoked_at: None,
            last_used_at: None,
            created_at: now,
        };
        let epoch = |db: &Db| db.call_blocking(|c| epoch(c)).unwrap();
        let start = epoch(&server);
        cli.call_blocking(|c| {
            tenants::insert(c, &tenant)?;
            insert(c, &key, &[7; 32])
        })
        .unwrap();
        // A new key or tenant changes nothing already resolved; nor does recording a use.
        assert_eq!(epoch(&server), start);
        cli.call_blocking(|c| touch(c, "k1", now)).unwrap();
        assert_eq!(epoch(&server), start);

        cli.call_blocking(|c| revoke(c, &tenant.id, "k1", now).map(|_| ()))
            .unwrap();
        assert_eq!(epoch(&server), start + 1);
        tenant.name = "Acme Ltd".into();
        cli.call_blocking(|c| tenants::update(c, &tenant).map(|_| ()))
            .unwrap();
        assert_eq!(epoch(&server), start + 2);
        cli.call_blocking(|c| tenants::delete(c, &tenant.id).map(|_| ()))
            .unwrap();
        assert!(epoch(&server) > start + 2);
    }
}
