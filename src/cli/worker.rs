//! `ragbox worker`: runs document jobs from the shared Redis queue for a serving node,
//! with its own `/health/live`, `/health/ready` and `/metrics`. It keeps no state: it
//! can be stopped or killed at any moment without losing a document.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::api::worker::{WorkerProbes, routes};
use crate::config::Config;
use crate::jobs::{JobMetrics, JobQueue, Runner};
use crate::services::remote::RemoteWorker;
use crate::startup;
use crate::telemetry::Metrics;

pub(super) async fn run(config: Config) -> anyhow::Result<ExitCode> {
    crate::telemetry::init(&config.log);
    if config.redis.url().is_none() {
        anyhow::bail!(
            "redis.url is not set: `ragbox worker` takes its jobs from Redis \
             (set [redis] url, or RAGBOX__REDIS__URL)"
        );
    }
    let Some(token) = config.auth.admin_token.clone() else {
        anyhow::bail!(
            "auth.admin_token is not set: a worker authenticates to the serving node \
             (worker.server_url) with the operator token"
        );
    };
    let JobQueue::Redis(queue) = JobQueue::open(&config).await? else {
        anyhow::bail!("redis.url is set but the queue is not Redis");
    };
    let embedder = startup::load_embedder(&config).await?;
    let metrics = Metrics::new(config.metrics.tenant_series).context("registering metrics")?;
    let jobs = JobMetrics::register(metrics.registry()).context("registering job metrics")?;
    embedder
        .meters()
        .register(metrics.registry())
        .context("registering the embedding model's metrics")?;
    let stop = CancellationToken::new();
    let worker = RemoteWorker::new(
        &config,
        token.expose().to_owned(),
        embedder.clone(),
        stop.clone(),
    )?;
    let runner = Runner {
        name: "worker",
        handler: worker.handler(),
        metrics: jobs.clone(),
    };

    let listener = tokio::net::TcpListener::bind(config.worker.bind)
        .await
        .with_context(|| format!("binding worker.bind {}", config.worker.bind))?;
    let addr = listener.local_addr()?;
    let app = routes(WorkerProbes {
        queue: queue.clone(),
        embedder,
        metrics,
        jobs,
    });
    let limits = crate::api::serve::ConnectionLimits {
        header_read_timeout: Duration::from_secs(config.server.header_read_timeout_secs),
        idle_timeout: Duration::from_secs(config.server.idle_timeout_secs),
    };
    let probes_stop = CancellationToken::new();
    let probes = tokio::spawn(crate::api::serve::serve(
        listener,
        app,
        limits,
        probes_stop.clone(),
        Duration::from_secs(2),
    ));
    tracing::info!(%addr, server = %config.worker.server_url, "listening");
    let jobs = tokio::spawn(queue.run(runner, stop.clone()));

    super::wait_for_signal().await;
    tracing::info!("signal received; giving back the documents in progress");
    // Work in progress is reported as interrupted, so that the serving node queues it
    // again at once instead of waiting for its lease to run out.
    stop.cancel();
    let _ = jobs.await;
    probes_stop.cancel();
    let _ = probes.await;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}
