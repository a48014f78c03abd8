//! Builds the application state and runs the HTTP server: the same path for
//! `ragbox serve` and for the integration tests.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use futures_util::future::BoxFuture;
use rand::RngCore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::state::{AppState, StateInner};
use crate::auth::Authenticator;
use crate::auth::jwt::JwtVerifier;
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, Secret};
use crate::jobs::{JobMetrics, JobQueue, Runner};
use crate::ml::{Embedder, Generator};
use crate::services::{Core, Knowledge};
use crate::store::Db;
use crate::store::vectors::{LocalVectorStore, QdrantVectorStore, VectorStore};
use crate::telemetry::Metrics;

/// Points where tests may step into startup.
#[derive(Default)]
pub struct Hooks {
    /// Replaces the system clock.
    pub clock: Option<Arc<dyn Clock>>,
    /// Awaited after the server listens and before it reports ready.
    pub before_ready: Option<BoxFuture<'static, ()>>,
    /// An already loaded embedding model (tests share one).
    pub embedder: Option<Embedder>,
    /// An already loaded generation model (tests share one).
    pub generator: Option<Generator>,
}

/// Threads for blocking work (SQLite, search, tokenizing): 4 per core, at least 8.
/// Each thread that ever ran such work keeps its own stack and allocator pages until it
/// has been idle for 10 s, and each SQLite call in flight holds a connection (with its
/// page cache), so the bound also caps the connections open at once.
/// Under 256 concurrent searches the embedder answers queries a batch at a time, so
/// their vector searches and SQLite reads arrive in waves: with 32 threads the waves
/// kept all 32 alive and the server 1.5x its idle size; with 8 it stays near 1.3x, at
/// the same throughput (the work is short and CPU-bound, and 2 cores run no more of it
/// at once). Tokio's default of 512 once let a burst start hundreds of threads. Blocking
/// work past the bound waits its turn in the runtime's queue.
pub fn blocking_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    (cores * 4).max(8)
}

/// Loads the generation model on a blocking thread; the error names the fix.
pub async fn load_generator(config: &Config) -> anyhow::Result<Generator> {
    let generator = start_generator(config).await?;
    let waiting = generator.clone();
    tokio::task::spawn_blocking(move || waiting.wait_loaded()).await??;
    Ok(generator)
}

/// Starts the generator on a blocking thread: returns once its metadata and tokenizer
/// are read, while its thread loads the weights.
pub async fn start_generator(config: &Config) -> anyhow::Result<Generator> {
    let (path, settings) = (
        config.models.generation_file.clone(),
        config.generation.clone(),
    );
    let generator =
        tokio::task::spawn_blocking(move || Generator::start(&path, &settings)).await??;
    Ok(generator)
}

/// Loads the embedding model on a blocking thread; the error names the fix.
pub async fn load_embedder(config: &Config) -> anyhow::Result<Embedder> {
    let (models, embedding) = (config.models.clone(), config.embedding.clone());
    let embedder =
        tokio::task::spawn_blocking(move || Embedder::load(&models, &embedding)).await??;
    Ok(embedder)
}

/// Opens the knowledge components: vectors, job queue, and the model unless given.
pub async fn open_knowledge(core: Core, embedder: Option<Embedder>) -> anyhow::Result<Knowledge> {
    let Some(vectors) = open_vectors(&core.config).await? else {
        anyhow::bail!(
            "the vector store in {} is held by another ragbox process (a running `ragbox serve`?)",
            core.config.storage.data_dir.display()
        );
    };
    assemble_knowledge(core, embedder, vectors).await
}

/// Opens the configured vector store: Qdrant when `qdrant.url` is set (checked with a
/// round trip: an unreachable Qdrant is an error), else the data dir's local store,
/// `None` when another process holds that (one process at a time may: the running
/// server, usually).
pub async fn open_vectors(config: &Config) -> anyhow::Result<Option<Arc<dyn VectorStore>>> {
    if config.qdrant.url().is_some() {
        return Ok(Some(Arc::new(open_qdrant_vectors(config).await?)));
    }
    Ok(open_local_vectors(config)
        .await?
        .map(|v| Arc::new(v) as Arc<dyn VectorStore>))
}

/// Opens the data dir's local vector store, whatever the configured backend; `None`
/// when another process holds it.
pub async fn open_local_vectors(config: &Config) -> anyhow::Result<Option<LocalVectorStore>> {
    let data_dir = config.storage.data_dir.clone();
    let index = config.index.clone();
    let opened = tokio::task::spawn_blocking(move || {
        LocalVectorStore::open(&data_dir, crate::ml::embedder::DIM, index)
    })
    .await?;
    match opened {
        Ok(v) => Ok(Some(v)),
        Err(crate::store::vectors::VectorError::InUse(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Opens the Qdrant collection named by `[qdrant]` (creating it when missing); the
/// error names `qdrant.url`.
pub async fn open_qdrant_vectors(config: &Config) -> anyhow::Result<QdrantVectorStore> {
    let qdrant = config.qdrant.clone();
    let url = qdrant.url().unwrap_or_default().to_owned();
    anyhow::ensure!(!url.is_empty(), "qdrant.url is not set");
    tokio::task::spawn_blocking(move || QdrantVectorStore::open(&qdrant, crate::ml::embedder::DIM))
        .await?
        .with_context(|| format!("opening the vector store in Qdrant at qdrant.url = {url}"))
}

/// The job queue: Redis when `redis.url` is set, else `<data_dir>/jobs.sqlite` (several
/// processes may share either).
pub async fn open_queue(config: &Config) -> anyhow::Result<JobQueue> {
    Ok(JobQueue::open(config).await?)
}

/// Puts the knowledge components together around an opened vector store.
pub async fn assemble_knowledge(
    core: Core,
    embedder: Option<Embedder>,
    vectors: Arc<dyn VectorStore>,
) -> anyhow::Result<Knowledge> {
    let embedder = match embedder {
        Some(e) => e,
        None => load_embedder(&core.config).await?,
    };
    let queue = open_queue(&core.config).await?;
    let knowledge = Knowledge {
        core,
        embedder,
        vectors,
        queue,
        in_flight: Default::default(),
    };
    if let Err(e) = crate::services::recovery::drop_deleted_tenants(&knowledge).await {
        tracing::warn!(error = %e, "could not drop the vectors of deleted tenants");
    }
    Ok(knowledge)
}

/// Opens the stores named by the configuration (creating the data dir and
/// applying migrations); used by `serve`, `check` and the CLI commands.
pub async fn open_core(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Core> {
    let data_dir = config.storage.data_dir.clone();
    create_private_dir(&data_dir)
        .with_context(|| format!("creating storage.data_dir {}", data_dir.display()))?;
    let path = config.storage.database_path();
    let db = tokio::task::spawn_blocking(move || Db::open(&path))
        .await?
        .with_context(|| {
            format!(
                "opening database {}",
                config.storage.database_path().display()
            )
        })?;
    Ok(Core {
        config: Arc::new(config),
        db,
        clock,
        limiter: Default::default(),
    })
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// The operator token: from config, else from `<data_dir>/admin.token`, else a new one
/// written there with mode 0600. The token itself is never logged.
pub fn admin_token(config: &Config) -> anyhow::Result<Secret> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(token) = &config.auth.admin_token {
        return Ok(token.clone());
    }
    let path = config.storage.admin_token_path();
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let token = text.trim();
            anyhow::ensure!(
                token.len() >= 16,
                "{} is too short to be an operator token; delete it to generate a new one",
                path.display()
            );
            return Ok(Secret::new(token));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = format!(
        "rbxadm_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(file, "{token}").with_context(|| format!("writing {}", path.display()))?;
    tracing::warn!(path = %path.display(), "generated an operator token; read it from this file");
    Ok(Secret::new(token))
}

/// A server that is listening.
pub struct Running {
    /// The address it listens on (the real port when the config asked for port 0).
    pub addr: SocketAddr,
    /// Its state.
    pub state: AppState,
    shutdown: CancellationToken,
    server: JoinHandle<std::io::Result<()>>,
    workers: JoinHandle<()>,
    workers_stop: CancellationToken,
}

impl Running {
    /// A token that stops the server gracefully when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits until the server has stopped (after the shutdown token is cancelled).
    pub async fn wait(self) -> anyhow::Result<()> {
        let served = self.server.await.context("server task")?.context("server");
        // Then the job workers stop: documents being extracted or embedded are
        // interrupted (queued again for the next start), and index snapshots are written.
        self.state.knowledge.in_flight.interrupt_all();
        self.workers_stop.cancel();
        let _ = self.workers.await;
        let vectors = self.state.knowledge.vectors.clone();
        match tokio::task::spawn_blocking(move || vectors.persist()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "could not write index snapshots"),
            Err(e) => tracing::warn!(error = %e, "index snapshot task failed"),
        }
        served?;
        Ok(())
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.wait().await
    }
}

/// Opens every store, binds the listener, serves, and marks the server ready once
/// startup is complete. `/health/live` answers from the moment it listens.
pub async fn start(config: Config, hooks: Hooks) -> anyhow::Result<Running> {
    // Loading frees far more than it keeps: returned at once until the models are in.
    let purge = crate::memory::purge_at_once();
    let clock = hooks.clock.unwrap_or_else(|| Arc::new(SystemClock));
    let core = open_core(config, clock).await?;
    let config = core.config.clone();
    let admin_token = admin_token(&config)?;
    let jwt = config
        .auth
        .jwt
        .as_ref()
        .map(JwtVerifier::from_config)
        .transpose()?;
    let metrics = Metrics::new(config.metrics.tenant_series).context("registering metrics")?;
    let jobs = JobMetrics::register(metrics.registry()).context("registering job metrics")?;
    // Both models at once; the generator's weights go on loading in its own thread
    // after this (its requests wait for them), so readiness does not wait for them.
    let given = hooks.generator;
    let (knowledge, generator) =
        tokio::join!(open_knowledge(core.clone(), hooks.embedder), async {
            match given {
                Some(g) => Ok(g),
                None => start_generator(&config).await,
            }
        });
    let (knowledge, generator) = (knowledge?, generator?);
    let loading = generator.clone();
    tokio::task::spawn_blocking(move || {
        let _ = loading.wait_loaded();
        drop(purge);
    });
    knowledge
        .embedder
        .meters()
        .register(metrics.registry())
        .context("registering the embedding model's metrics")?;
    generator
        .meters()
        .register(metrics.registry())
        .context("registering the generation model's metrics")?;
    let upstreams = crate::llm::Upstreams::from_config(&config)?;
    let auth = Authenticator::new(core.clone(), jwt, admin_token);
    let models = crate::services::models::Catalog {
        local: generator.name().to_owned(),
        embedding: config.models.embedding_dir.file_name().map_or_else(
            || "embedding".to_owned(),
            |n| n.to_string_lossy().into_owned(),
        ),
        started: core.clock.now(),
    };
    let state = AppState::new(StateInner {
        core,
        models,
        knowledge,
        generator,
        upstreams,
        auth,
        metrics,
        jobs: jobs.clone(),
        ready: AtomicBool::new(false),
        health: crate::services::health::HealthCache::new(
            Duration::from_millis(config.health.cache_ms),
            Duration::from_secs(config.health.upstream_probe_secs),
        ),
    });

    // Before any request or worker runs: unfinished documents are queued again, and what an
    // interrupted delete left behind is removed.
    if let Err(e) = crate::services::recovery::recover_unfinished(&state.knowledge).await {
        tracing::warn!(error = %e, "could not re-queue unfinished documents");
    }
    if let Err(e) = crate::services::recovery::sweep_leftovers(&state.knowledge).await {
        tracing::warn!(error = %e, "could not sweep leftovers of deleted documents");
    }
    let listener = tokio::net::TcpListener::bind(config.server.bind)
        .await
        .with_context(|| format!("binding server.bind {}", config.server.bind))?;
    let addr = listener
        .local_addr()
        .context("listener has no socket address")?;
    let app = crate::api::build(state.clone());
    let shutdown = CancellationToken::new();
    let grace = Duration::from_secs(config.server.shutdown_timeout_secs);
    let limits = crate::api::serve::ConnectionLimits {
        header_read_timeout: Duration::from_secs(config.server.header_read_timeout_secs),
        idle_timeout: Duration::from_secs(config.server.idle_timeout_secs),
    };
    let server = tokio::spawn(crate::api::serve::serve(
        listener,
        app,
        limits,
        shutdown.clone(),
        grace,
    ));
    tracing::info!(%addr, "listening");

    let workers_stop = CancellationToken::new();
    let runner = Runner {
        name: "ingest",
        handler: crate::services::ingest::job_handler(state.knowledge.clone()),
        metrics: jobs,
    };
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..config.jobs.local_workers {
        let queue = state.knowledge.queue.clone();
        tasks.spawn(queue.run(runner.clone(), workers_stop.clone()));
    }
    tasks.spawn(crate::services::recovery::resync(
        state.knowledge.clone(),
        workers_stop.clone(),
    ));
    let workers = tokio::spawn(async move {
        tasks.join_all().await;
    });

    let ready_state = state.clone();
    let before_ready = hooks.before_ready;
    tokio::spawn(async move {
        if let Some(gate) = before_ready {
            gate.await;
        }
        ready_state.mark_ready();
        tracing::info!("ready");
    });

    Ok(Running {
        addr,
        state,
        shutdown,
        server,
        workers,
        workers_stop,
    })
}
