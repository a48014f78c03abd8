//! Health checks: each touches its component for real, under a timeout, so that a
//! hung dependency reports failure instead of hanging the probe.

use std::time::Duration;

use super::Core;
use crate::store::Db;

/// The result of one check.
#[derive(Debug, Clone)]
pub struct Check {
    /// Component name, e.g. `database`.
    pub name: &'static str,
    /// Whether it works.
    pub ok: bool,
    /// What was seen, for logs and `ragbox check`.
    pub detail: String,
}

async fn timed<F>(name: &'static str, timeout: Duration, f: F) -> Check
where
    F: FnOnce() -> Result<String, String> + Send + 'static,
{
    let task = tokio::task::spawn_blocking(f);
    let (ok, detail) = match tokio::time::timeout(timeout, task).await {
        Ok(Ok(Ok(detail))) => (true, detail),
        Ok(Ok(Err(e))) => (false, e),
        Ok(Err(e)) => (false, format!("check panicked: {e}")),
        Err(_) => (
            false,
            format!("no answer within {} ms", timeout.as_millis()),
        ),
    };
    if !ok {
        tracing::warn!(check = name, %detail, "health check failed");
    }
    Check { name, ok, detail }
}

/// Runs every check of the components this build has.
pub async fn run(core: &Core) -> Vec<Check> {
    let timeout = Duration::from_millis(core.config.health.check_timeout_ms);
    let db_path = core.db.path().to_path_buf();
    let data_dir = core.config.storage.data_dir.clone();
    let database = timed("database", timeout, move || {
        Db::probe(&db_path)
            .map(|v| format!("schema version {v}"))
            .map_err(|e| e.to_string())
    });
    let storage = timed("storage", timeout, move || {
        let probe = data_dir.join(".health-probe");
        std::fs::write(&probe, b"ok")
            .and_then(|_| std::fs::remove_file(&probe))
            .map(|_| format!("{} writable", data_dir.display()))
            .map_err(|e| format!("{} not writable: {e}", data_dir.display()))
    });
    let (database, storage) = tokio::join!(database, storage);
    vec![database, storage]
}
