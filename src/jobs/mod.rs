//! Background jobs on apalis with its SQLite storage (durable: a job pushed is on
//! disk; jobs of a crashed worker are picked up again once its heartbeats stop).

pub mod process_document;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::*;
use apalis_sqlite::{
    Config as QueueConfig, SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteStorage,
};
use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::config::JobsConfig;
use crate::store::queue as table;

pub use process_document::ProcessDocument;

/// The future of one job's run.
type JobFuture = BoxFuture<'static, Result<(), BoxDynError>>;

/// What runs a document job. The application wires the ingestion use-case in here, so
/// that the queue knows payloads and not use-cases.
#[derive(Clone)]
pub struct Handler(Arc<dyn Fn(ProcessDocument) -> JobFuture + Send + Sync>);

impl Handler {
    /// Wraps an async function.
    pub fn new<F, Fut, E>(f: F) -> Self
    where
        F: Fn(ProcessDocument) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: std::error::Error + Send + Sync + 'static,
    {
        Self(Arc::new(move |job| {
            let run = f(job);
            Box::pin(async move { run.await.map_err(|e| Box::new(e) as BoxDynError) })
        }))
    }

    /// Runs one job.
    pub fn run(&self, job: ProcessDocument) -> JobFuture {
        (self.0)(job)
    }
}

const QUEUE: &str = "process_document";
/// Rounds told apart by priority; later rounds share the last one.
const ROUNDS: usize = 1_000_000;

/// Why a queue operation failed.
#[derive(Debug, thiserror::Error)]
#[error("job queue: {0}")]
pub struct QueueError(String);

/// The durable queue of document jobs.
#[derive(Clone)]
pub struct JobQueue {
    path: std::path::PathBuf,
    pool: SqlitePool,
    config: QueueConfig,
    jobs: JobsConfig,
}

impl JobQueue {
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

    /// Runs the workers until `stop` is cancelled; a worker that fails is restarted.
    pub async fn run(self, handler: Handler, stop: CancellationToken) {
        loop {
            let backend = self
                .storage()
                .poll_with_interval(Duration::from_millis(self.jobs.poll_interval_ms));
            // A fresh name each start: apalis refuses a name seen within one heartbeat,
            // and the jobs of a crashed predecessor are recovered by heartbeat timeout.
            let name = format!("ingest-{}", ulid::Ulid::generate());
            let token = stop.clone();
            let worker = WorkerBuilder::new(name)
                .backend(backend)
                .concurrency(self.jobs.concurrency)
                .data(handler.clone())
                .build(process_document::handle);
            let result = worker
                .run_until(async move {
                    token.cancelled().await;
                    Ok::<(), std::io::Error>(())
                })
                .await;
            if stop.is_cancelled() {
                break;
            }
            match result {
                Ok(()) => break,
                Err(e) => {
                    tracing::error!(error = %e, "job worker stopped; restarting in 2 s");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                        _ = stop.cancelled() => break,
                    }
                }
            }
        }
        tracing::info!("job worker stopped");
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
