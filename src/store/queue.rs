//! Read-only views of the job queue's own table (apalis' `Jobs` in `jobs.sqlite`):
//! what is waiting, for the health check and the fair scheduling of tenants. The
//! queue writes that table itself; nothing here does.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::StoreError;

fn open(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    conn.busy_timeout(Duration::from_secs(2))?;
    Ok(conn)
}

/// Jobs of `job_type` not finished yet (pending, queued or running).
pub fn unfinished(path: &Path, job_type: &str) -> Result<i64, StoreError> {
    Ok(open(path)?.query_row(
        "SELECT count(*) FROM Jobs WHERE job_type = ?1 AND status IN ('Pending', 'Queued', 'Running')",
        [job_type],
        |r| r.get::<_, i64>(0),
    )?)
}

/// The JSON payloads of the jobs of `job_type` waiting to be taken.
pub fn waiting_payloads(path: &Path, job_type: &str) -> Result<Vec<String>, StoreError> {
    let conn = open(path)?;
    let mut stmt = conn
        .prepare("SELECT CAST(job AS TEXT) FROM Jobs WHERE job_type = ?1 AND status = 'Pending'")?;
    let rows = stmt.query_map([job_type], |r| r.get::<_, String>(0))?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Whether a job of `job_type` whose payload names another tenant than `tenant` is
/// waiting and due now.
pub fn due_for_others(path: &Path, job_type: &str, tenant: &str) -> Result<bool, StoreError> {
    Ok(open(path)?
        .prepare(
            "SELECT 1 FROM Jobs WHERE job_type = ?1 AND status = 'Pending'
               AND run_at <= strftime('%s', 'now')
               AND json_extract(CAST(job AS TEXT), '$.tenant_id') != ?2 LIMIT 1",
        )?
        .exists(rusqlite::params![job_type, tenant])?)
}
