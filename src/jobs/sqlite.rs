//! The embedded queue: apalis with its SQLite storage (durable: a job pushed is on
//! disk; jobs of a crashed worker are picked up again once its heartbeats stop).

use std::path::Path;
use std::time::Duration;

use apalis::prelude::*;
use apalis_sqlite::{
    Config as QueueConfig, SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteStorage,
};
use tokio_util::sync::CancellationToken;

use super::{ProcessDocument, QUEUE, QueueError, Runner};
use crate::config::JobsConfig;
use crate::store::queue as table;

/// Rounds told apart by priority; later rounds share the last one.
const ROUNDS: usize = 1_000_000;

/// The durable queue of document jobs in `jobs.sqlite`.
#[derive(Clone)]
pub struct SqliteQueue {
    path: std::path::PathBuf,
    pool: SqlitePool,
    config: QueueConfig,
    jobs: JobsConfig,
}

impl SqliteQueue {
    /// Opens (creating) the queue database and applies apalis' migrations.
    pub async fn open(path: &Path, jobs: &JobsConfig) -> Result<Self, QueueError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|e| QueueError(format!("opening {}: {e}", path.display())))?;
        SqliteStorage::<()>::setup(&pool)
            .await
            .map_err(|e| QueueError(format!("migrating {}: {e}", path.display())))?;
        let heartbeat = Duration::from_secs(jobs.heartbeat_secs);
        let config = QueueConfig::default()
            .queue(QUEUE)
            .heartbeat_interval(heartbeat)
            .missed_heartbeats(3)
            .batch_size(jobs.concurrency);
        Ok(Self {
            path: path.to_path_buf(),
            pool,
            config,
            jobs: jobs.clone(),
        })
    }

    fn storage(&self) -> SqliteStorage<ProcessDocument> {
        SqliteStorage::new(&self.pool).with_config(self.config.clone())
    }

    /// Pushes a job, to run after `delay`; returns once it is on disk. Jobs are taken
    /// by `round` first (lower first), then in order of arrival: a tenant's n-th waiting
    /// document is in round n, so tenants take turns. One attempt per job: retries are
    /// the document's own, made by a new job.
    pub async fn enqueue(
        &self,
        job: ProcessDocument,
        delay: Option<Duration>,
        round: u64,
    ) -> Result<(), QueueError> {
        let round = usize::try_from(round).unwrap_or(usize::MAX).min(ROUNDS);
        let mut task = TaskBuilder::new(job)
            .task_id(TaskId::from_ulid(ulid::Ulid::generate()))
            .priority(ROUNDS - round)
            .max_attempts(1);
        if let Some(delay) = delay {
            task = task.run_after(delay);
        }
        self.storage()
            .push_task(task.build())
            .await
            .map_err(|e| QueueError(e.to_string()))
    }

    /// Jobs not finished yet (pending, queued or running), read through a fresh
    /// read-only connection (also the health check).
    pub async fn pending(&self) -> Result<i64, QueueError> {
        let path = self.path.clone();
        read(move || table::unfinished(&path, QUEUE)).await
    }

    /// The documents that have a job waiting to be taken (not yet running).
    pub async fn waiting_documents(&self) -> Result<std::collections::HashSet<String>, QueueError> {
        let path = self.path.clone();
        let jobs = read(move || table::waiting_payloads(&path, QUEUE)).await?;
        Ok(jobs
            .iter()
            .filter_map(|j| serde_json::from_str::<ProcessDocument>(j).ok())
            .map(|j| j.document_id)
            .collect())
    }

    /// Whether a job of another tenant than `tenant` is waiting and may run now.
    pub async fn others_waiting(&self, tenant: &str) -> Result<bool, QueueError> {
        let (path, tenant) = (self.path.clone(), tenant.to_owned());
        read(move || table::due_for_others(&path, QUEUE, &tenant)).await
    }

    /// Runs `concurrency` jobs at once until `stop` is cancelled; a worker that fails
    /// is restarted.
    pub async fn run(self, runner: Runner, stop: CancellationToken) {
        super::supervise(&stop, || {
            let backend = self
                .storage()
                .poll_with_interval(Duration::from_millis(self.jobs.poll_interval_ms));
            // A fresh name each start: apalis refuses a name seen within one heartbeat,
            // and the jobs of a crashed predecessor are recovered by heartbeat timeout.
            let worker = WorkerBuilder::new(format!("ingest-{}", ulid::Ulid::generate()))
                .backend(backend)
                .concurrency(self.jobs.concurrency)
                .data(runner.clone())
                .build(super::process_document::handle);
            let token = stop.clone();
            worker.run_until(async move {
                token.cancelled().await;
                Ok::<(), std::io::Error>(())
            })
        })
        .await;
    }
}

/// Runs a read of the queue's table on a blocking thread.
async fn read<T, F>(f: F) -> Result<T, QueueError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, crate::store::StoreError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| QueueError(e.to_string()))?
        .map_err(|e| QueueError(e.to_string()))
}
