//! Whether any process has committed to the database since a moment, for the price of
//! one small read instead of a transaction.
//!
//! In WAL mode SQLite keeps a header at the start of the `<database>-shm` file that
//! every commit rewrites, whichever process makes it (the last frame, its checksum and
//! a change counter; the salts when the log starts over). SQLite's own readers trust
//! their page cache for exactly as long as that header stands still. It is written
//! twice in a row, and a reader that finds the two copies different has caught a
//! writer mid-update. [`CommitWatch::stamp`] reads both copies: equal copies are a
//! stamp of the database's committed state, and two equal stamps mean that nothing was
//! committed between the two readings.
//!
//! The watch holds a connection of its own open for its whole life: while a process
//! has the database open, no other process can delete, re-create or truncate the
//! `-shm` file, so the header read here is the one writers update. It is read through a
//! mapping of the file's first bytes, as SQLite's own connections read it: no system
//! call per stamp.
#![allow(unsafe_code)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{Ordering, fence};

use rusqlite::Connection;

use super::StoreError;

/// Bytes in one copy of the WAL-index header.
const HEADER: usize = 48;
/// Where, in a copy, the byte that says it is initialised lies.
const IS_INIT: usize = 12;

/// A stamp of the database's committed state (see the module docs).
pub type Stamp = [u8; HEADER];

/// Watches one database file for commits.
pub struct CommitWatch {
    /// The first `2 · HEADER` bytes of the `-shm` file, mapped shared.
    shm: memmap2::Mmap,
    conn: Mutex<Connection>,
}

impl CommitWatch {
    /// Opens a connection to `path` (already in WAL mode) and its `-shm` file; `None`
    /// when the database keeps no such file (another journal mode).
    pub fn open(path: &Path) -> Result<Option<Self>, StoreError> {
        let conn = super::open_connection(path, false)?;
        // A first read maps the log's index, so the file exists from here on.
        conn.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))?;
        let mut name = path.as_os_str().to_owned();
        name.push("-shm");
        let Ok(file) = File::open(PathBuf::from(name)) else {
            return Ok(None);
        };
        // A mapped page past the file's end cannot be read, so the header must be there.
        if !file
            .metadata()
            .is_ok_and(|m| m.len() >= (2 * HEADER) as u64)
        {
            return Ok(None);
        }
        // SAFETY: the mapping is only ever read through `read_volatile` in `stamp`,
        // never as a Rust reference, because other processes write it; the file keeps
        // at least these bytes while the watch's connection is open (module docs).
        let shm = match unsafe { memmap2::MmapOptions::new().len(2 * HEADER).map(&file) } {
            Ok(shm) => shm,
            Err(e) => {
                tracing::warn!(error = %e, "the log index could not be mapped: no commit watch");
                return Ok(None);
            }
        };
        Ok(Some(Self {
            shm,
            conn: Mutex::new(conn),
        }))
    }

    /// The state of the database now, or `None` when a writer is updating the header
    /// at this very moment (or it is not in use): the caller then assumes a change.
    pub fn stamp(&self) -> Option<Stamp> {
        let at = self.shm.as_ptr().cast::<Stamp>();
        // SAFETY: the mapping holds two stamps' bytes (checked at `open`) and stays
        // mapped, the file that long, for the watch's life. The first copy is read
        // before the second, as SQLite's readers do; its writers write the second first.
        let (first, second) = unsafe {
            let first = at.read_volatile();
            fence(Ordering::Acquire);
            (first, at.add(1).read_volatile())
        };
        if first != second || first[IS_INIT] != 1 {
            return None;
        }
        Some(first)
    }

    /// Runs `f` on the watch's own connection.
    pub fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        f(&conn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Db;

    #[test]
    fn a_commit_by_another_connection_changes_the_stamp_and_reads_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let db = Db::open(&path).unwrap();
        let watch = CommitWatch::open(&path)
            .unwrap()
            .expect("WAL mode keeps a -shm");
        let before = watch.stamp().expect("a settled header");
        // Reads, on any connection, leave it as it was.
        db.call_blocking(|c| {
            Ok(c.query_row("SELECT count(*) FROM tenants", [], |r| r.get::<_, i64>(0))?)
        })
        .unwrap();
        watch
            .read(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?))
            .unwrap();
        assert_eq!(watch.stamp(), Some(before));
        // A commit through a connection of its own, as another process would make one.
        let other = Connection::open(&path).unwrap();
        other
            .execute("UPDATE auth_epoch SET n = n + 1 WHERE id = 1", [])
            .unwrap();
        let after = watch.stamp().expect("a settled header");
        assert_ne!(after, before);
        // And each further commit again.
        other
            .execute("UPDATE auth_epoch SET n = n + 1 WHERE id = 1", [])
            .unwrap();
        assert_ne!(watch.stamp(), Some(after));
    }
}
