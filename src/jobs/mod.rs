//! Background document jobs on apalis: the embedded queue in SQLite ([`sqlite`]) or,
//! to scale out, the shared queue in Redis ([`redis`]). The queue knows payloads, not
//! use-cases: the application wires in the [`Handler`] that runs a job.

pub mod metrics;
pub mod process_document;
mod redis;
mod sqlite;

use std::collections::HashSet;
use std::fmt::Display;
use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::BoxDynError;
use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
pub use metrics::JobMetrics;
pub use process_document::ProcessDocument;
pub use redis::RedisQueue;
pub use sqlite::SqliteQueue;

const QUEUE: &str = "process_document";

/// The future of one job's run.
type JobFuture = BoxFuture<'static, Result<(), BoxDynError>>;

/// What runs a document job. The application wires the ingestion use-case in here.
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

/// A handler with the metrics its runs are counted in, and a name for its workers.
#[derive(Clone)]
pub struct Runner {
    /// Prefix of the worker names (`ingest` on a serving node, `worker` remotely).
    pub name: &'static str,
    /// Runs each job.
    pub handler: Handler,
    /// Jobs in flight, durations and failures.
    pub metrics: JobMetrics,
}

/// Why a queue operation failed.
#[derive(Debug, thiserror::Error)]
#[error("job queue: {0}")]
pub struct QueueError(String);

/// The queue of document jobs: embedded, or shared through Redis.
#[derive(Clone)]
pub enum JobQueue {
    /// `jobs.sqlite` in the data dir.
    Sqlite(SqliteQueue),
    /// Redis at `redis.url`.
    Redis(RedisQueue),
}

impl JobQueue {
    /// Opens the queue the configuration names: Redis when `redis.url` is set, else
    /// `<data_dir>/jobs.sqlite`.
    pub async fn open(config: &Config) -> Result<Self, QueueError> {
        match config.redis.url() {
            Some(url) => Ok(Self::Redis(
                RedisQueue::open(url, &config.redis.prefix, &config.jobs).await?,
            )),
            None => Ok(Self::Sqlite(
                SqliteQueue::open(&config.storage.data_dir.join("jobs.sqlite"), &config.jobs)
                    .await?,
            )),
        }
    }

    /// The Redis queue, when jobs are shared through Redis.
    pub fn redis(&self) -> Option<&RedisQueue> {
        match self {
            Self::Redis(q) => Some(q),
            Self::Sqlite(_) => None,
        }
    }

    /// Pushes a job, to run after `delay`. On the embedded queue jobs are taken by
    /// `round` first (a tenant's n-th waiting document is in round n, so tenants take
    /// turns); Redis takes them in order of arrival.
    pub async fn enqueue(
        &self,
        job: ProcessDocument,
        delay: Option<Duration>,
        round: u64,
    ) -> Result<(), QueueError> {
        match self {
            Self::Sqlite(q) => q.enqueue(job, delay, round).await,
            Self::Redis(q) => q.enqueue(job, delay).await,
        }
    }

    /// Jobs not finished yet (the queue depth).
    pub async fn pending(&self) -> Result<i64, QueueError> {
        match self {
            Self::Sqlite(q) => q.pending().await,
            Self::Redis(q) => q.pending().await,
        }
    }

    /// The documents that have a job waiting to be taken; `None` when the queue cannot
    /// tell (Redis: every queued document is pushed again, which is harmless).
    pub async fn waiting_documents(&self) -> Result<Option<HashSet<String>>, QueueError> {
        match self {
            Self::Sqlite(q) => q.waiting_documents().await.map(Some),
            Self::Redis(_) => Ok(None),
        }
    }

    /// Whether a job of another tenant than `tenant` is waiting and may run now; on
    /// Redis, `None`: the caller asks the database instead.
    pub async fn others_waiting(&self, tenant: &str) -> Result<Option<bool>, QueueError> {
        match self {
            Self::Sqlite(q) => q.others_waiting(tenant).await.map(Some),
            Self::Redis(_) => Ok(None),
        }
    }

    /// Runs jobs with `runner` until `stop` is cancelled.
    pub async fn run(self, runner: Runner, stop: CancellationToken) {
        match self {
            Self::Sqlite(q) => q.run(runner, stop).await,
            Self::Redis(q) => q.run(runner, stop).await,
        }
        tracing::info!("job worker stopped");
    }
}

/// Runs a worker made by `start` until it ends or `stop` is cancelled; a worker that
/// fails (its storage gone) is made again two seconds later.
async fn supervise<F, Fut, E>(stop: &CancellationToken, mut start: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    loop {
        let result = start().await;
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
}
