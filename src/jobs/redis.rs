//! The shared queue: apalis on Redis, for a serving node and any number of
//! `ragbox worker` processes. Redis only carries the jobs; what a document has reached
//! is on the serving node's database, which pushes a job again whenever Redis may have
//! lost it (see `services::ingest::resync`), so losing Redis loses no document.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use apalis::prelude::*;
use apalis_redis::{Config as QueueConfig, ConnectionManager, RedisStorage};
use tokio_util::sync::CancellationToken;

use super::{ProcessDocument, QUEUE, QueueError, Runner};
use crate::config::JobsConfig;

/// How long connecting to Redis may take before startup gives up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Document jobs in Redis, under the configured key prefix.
#[derive(Clone)]
pub struct RedisQueue {
    conn: ConnectionManager,
    /// Set when a push failed: some queued document may have no job.
    refused: Arc<AtomicBool>,
    config: QueueConfig,
    jobs: JobsConfig,
}

impl RedisQueue {
    /// Connects (one round trip, so that a wrong URL stops startup at once).
    pub async fn open(url: &str, prefix: &str, jobs: &JobsConfig) -> Result<Self, QueueError> {
        let failed = |e: String| QueueError(format!("redis.url: cannot use Redis: {e}"));
        let client = apalis_redis::Client::open(url).map_err(|e| failed(e.to_string()))?;
        let conn = tokio::time::timeout(CONNECT_TIMEOUT, client.get_connection_manager())
            .await
            .map_err(|_| failed(format!("no answer within {CONNECT_TIMEOUT:?}")))?
            .map_err(|e| failed(e.to_string()))?;
        let config = QueueConfig::default()
            .queue(format!("{prefix}:{QUEUE}"))
            .heartbeat_interval(Duration::from_secs(jobs.heartbeat_secs))
            .missed_heartbeats(3)
            .batch_size(jobs.concurrency)
            // Outcomes live on the documents; Redis keeps no record of finished jobs.
            .persist_results(false)
            .emit_events(false);
        let queue = Self {
            conn,
            refused: Arc::default(),
            config,
            jobs: jobs.clone(),
        };
        queue.ping().await.map_err(|e| failed(e.0))?;
        Ok(queue)
    }

    fn storage(&self) -> RedisStorage<ProcessDocument> {
        RedisStorage::new(self.conn.clone()).with_config(self.config.clone())
    }

    /// Pushes a job, to run after `delay`. One attempt per job: retries are the
    /// document's own, made by a new job.
    pub async fn enqueue(
        &self,
        job: ProcessDocument,
        delay: Option<Duration>,
    ) -> Result<(), QueueError> {
        let mut task = TaskBuilder::new(job)
            .task_id(TaskId::from_ulid(ulid::Ulid::generate()))
            .max_attempts(1);
        if let Some(delay) = delay {
            task = task.run_after(delay);
        }
        self.storage().push_task(task.build()).await.map_err(|e| {
            self.note_refused();
            QueueError(e.to_string())
        })
    }

    /// Remembers that a push failed.
    pub fn note_refused(&self) {
        self.refused.store(true, Ordering::SeqCst);
    }

    /// Whether a push failed since the last call.
    pub fn take_refused(&self) -> bool {
        self.refused.swap(false, Ordering::SeqCst)
    }

    /// Jobs waiting to be taken (due now or scheduled for later).
    pub async fn pending(&self) -> Result<i64, QueueError> {
        let mut conn = self.conn.clone();
        let (active, scheduled): (i64, i64) = redis::pipe()
            .cmd("LLEN")
            .arg(self.config.active_jobs_list())
            .cmd("ZCARD")
            .arg(self.config.scheduled_jobs_set())
            .query_async(&mut conn)
            .await
            .map_err(|e| QueueError(e.to_string()))?;
        Ok(active + scheduled)
    }

    /// A round trip; answers the server's run id, which changes when Redis restarts
    /// (and may have lost what it held).
    pub async fn ping(&self) -> Result<String, QueueError> {
        let mut conn = self.conn.clone();
        let info: String = tokio::time::timeout(
            CONNECT_TIMEOUT,
            redis::cmd("INFO").arg("server").query_async(&mut conn),
        )
        .await
        .map_err(|_| QueueError(format!("no answer within {CONNECT_TIMEOUT:?}")))?
        .map_err(|e| QueueError(e.to_string()))?;
        info.lines()
            .find_map(|l| l.strip_prefix("run_id:"))
            .map(|id| id.trim().to_owned())
            .ok_or_else(|| QueueError("INFO server has no run_id".into()))
    }

    /// Runs `concurrency` jobs at once until `stop` is cancelled; a worker that fails
    /// (Redis gone) is restarted until Redis answers again.
    pub async fn run(self, runner: Runner, stop: CancellationToken) {
        super::supervise(&stop, || {
            // Jobs of a worker that stops sending heartbeats go back on the queue.
            let worker = WorkerBuilder::new(format!("{}-{}", runner.name, ulid::Ulid::generate()))
                .backend(self.storage())
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
