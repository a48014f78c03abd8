//! SQLite: one file under the data dir, WAL, foreign keys on, versioned migrations,
//! and a small pool so that every call runs on a blocking thread, off the runtime.

pub mod agents;
pub mod chunks;
pub mod commits;
pub mod documents;
pub mod keys;
pub mod keywords;
pub mod limits;
mod migrations;
pub mod queue;
pub mod tenants;
pub mod vectors;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

pub use migrations::SCHEMA_VERSION;

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite reported an error.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The database stayed locked past the busy timeout.
    #[error("database is busy")]
    Busy,
    /// The file was written by a newer ragbox.
    #[error(
        "database schema version {found} is newer than this binary knows ({known}); upgrade ragbox"
    )]
    SchemaTooNew {
        /// Version in the file.
        found: i64,
        /// Newest version this binary knows.
        known: i64,
    },
    /// A stored value could not be decoded.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The blocking task died.
    #[error("store task failed: {0}")]
    Join(String),
}

impl StoreError {
    /// Whether this is a UNIQUE constraint violation.
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _))
            if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
    }
}

const MAX_IDLE: usize = 16;
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    keywords: keywords::Keywords,
}

impl Db {
    /// Opens (creating if needed) the database file and applies pending migrations.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut conn = open_connection(path, true)?;
        migrations::apply(&mut conn)?;
        Ok(Self {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                idle: Mutex::new(vec![conn]),
                keywords: keywords::Keywords::default(),
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// This process's keyword indexes of the database's chunks.
    pub fn keywords(&self) -> &keywords::Keywords {
        &self.inner.keywords
    }

    /// Runs `f` with a pooled connection on a blocking thread.
    pub async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let db = self.clone();
        tokio::task::spawn_blocking(move || db.call_blocking(f))
            .await
            .map_err(|e| StoreError::Join(e.to_string()))?
    }

    /// Runs `f` with a pooled connection on the current thread.
    pub fn call_blocking<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let pooled = self.inner.idle.lock().ok().and_then(|mut idle| idle.pop());
        let mut conn = match pooled {
            Some(conn) => conn,
            None => open_connection(&self.inner.path, false)?,
        };
        let result = f(&mut conn).map_err(|e| match e {
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, _))
                if f.code == rusqlite::ErrorCode::DatabaseBusy =>
            {
                StoreError::Busy
            }
            other => other,
        });
        if let Ok(mut idle) = self.inner.idle.lock()
            && idle.len() < MAX_IDLE
        {
            idle.push(conn);
        }
        result
    }

    /// Opens a fresh read-only connection, checks the schema version and reads a
    /// table, so that a damaged, missing, emptied or unreadable file is noticed
    /// (pooled connections may hide it behind their cache).
    pub fn probe(path: &Path) -> Result<i64, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let _: i64 = conn.query_row("SELECT count(*) FROM tenants", [], |r| r.get(0))?;
        if version != SCHEMA_VERSION {
            return Err(StoreError::Corrupt(format!(
                "schema version {version}, expected {SCHEMA_VERSION}"
            )));
        }
        Ok(version)
    }
}

fn open_connection(path: &Path, create: bool) -> Result<Connection, StoreError> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

/// Current time as stored in the database (RFC 3339, UTC, milliseconds).
pub fn timestamp(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Parses a stored timestamp.
pub fn parse_timestamp(s: &str) -> Result<chrono::DateTime<chrono::Utc>, StoreError> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| StoreError::Corrupt(format!("timestamp `{s}`: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        Db::open(&path).unwrap();
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(conn);
        match Db::open(&path) {
            Err(StoreError::SchemaTooNew { found, known }) => {
                assert_eq!(found, SCHEMA_VERSION + 1);
                assert_eq!(known, SCHEMA_VERSION);
            }
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => panic!("opened a newer schema"),
        }
    }

    #[test]
    fn migrations_are_idempotent_and_enable_wal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        Db::open(&path).unwrap();
        let db = Db::open(&path).unwrap();
        let (mode, version): (String, i64) = db
            .call_blocking(|c| {
                let mode = c.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
                let version = c.query_row("PRAGMA user_version", [], |r| r.get(0))?;
                Ok((mode, version))
            })
            .unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(version, SCHEMA_VERSION);
        assert_eq!(Db::probe(&path).unwrap(), SCHEMA_VERSION);
    }
}
