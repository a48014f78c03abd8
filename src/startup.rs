//! Builds the application state and runs the HTTP server: the same path for
//! `ragbox serve` and for the integration tests.

use std::net::SocketAddr;
use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use futures_util::future::BoxFuture;
use rand::RngCore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::auth::jwt::JwtVerifier;
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, Secret};
use crate::domain::TenantId;
use crate::jobs::JobQueue;
use crate::ml::{Embedder, Generator};
use crate::services::{Core, Knowledge};
use crate::store::Db;
use crate::store::vectors::{LocalVectorStore, VectorStore};
use crate::telemetry::Metrics;

/// Everything a request handler may use; built once at startup.
#[derive(Clone)]
pub struct AppState(Arc<StateInner>);

/// The fields of [`AppState`].
pub struct StateInner {
    /// Configuration, database and clock.
    pub core: Core,
    /// Embedding model, vectors and job queue.
    pub knowledge: Knowledge,
    /// The local generation model.
    pub generator: Generator,
    /// Upstream generation providers and the default provider.
    pub upstreams: crate::llm::Upstreams,
    /// JWT verifier, when `[auth.jwt]` is configured.
    pub jwt: Option<JwtVerifier>,
    /// The operator token.
    pub admin_token: Secret,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// Set once startup has finished.
    pub ready: AtomicBool,
    /// The health checks the probes answer from.
    pub health: crate::services::health::HealthCache,
}

impl Deref for AppState {
    type Target = StateInner;

    fn deref(&self) -> &StateInner {
        &self.0
    }
}

impl AppState {
    /// Whether startup has completed.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Drops a deleted tenant's vectors and limiter state.
    pub fn forget_tenant(&self, tenant: &TenantId) {
        self.core.limiter.forget(tenant);
        if let Err(e) = self.knowledge.vectors.drop_tenant(tenant) {
            tracing::warn!(tenant = %tenant, error = %e, "could not drop the tenant's vectors; they go at the next start");
        }
    }
}

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

/// Loads the generation model on a blocking thread; the error names the fix.
pub async fn load_generator(config: &Config) -> anyhow::Result<Generator> {
    let (path, settings) = (
        config.models.generation_file.clone(),
        config.generation.clone(),
    );
    let generator =
        tokio::task::spawn_blocking(move || Generator::load(&path, &settings)).await??;
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

/// Opens the data dir's vector store; `None` when another process holds it (one
/// process at a time may: the running server, usually).
pub async fn open_vectors(config: &Config) -> anyhow::Result<Option<LocalVectorStore>> {
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

/// The job queue in `<data_dir>/jobs.sqlite` (several processes may share it).
pub async fn open_queue(config: &Config) -> anyhow::Result<JobQueue> {
    Ok(JobQueue::open(&config.storage.data_dir.join("jobs.sqlite"), &config.jobs).await?)
}

/// Puts the knowledge components together around an opened vector store.
pub async fn assemble_knowledge(
    core: Core,
    embedder: Option<Embedder>,
    vectors: LocalVectorStore,
) -> anyhow::Result<Knowledge> {
    let embedder = match embedder {
        Some(e) => e,
        None => load_embedder(&core.config).await?,
    };
    let vectors: Arc<dyn VectorStore> = Arc::new(vectors);
    let queue = open_queue(&core.config).await?;
    let knowledge = Knowledge {
        core,
        embedder,
        vectors,
        queue,
        in_flight: Default::default(),
    };
    drop_deleted_tenants(&knowledge).await;
    Ok(knowledge)
}

/// Removes vectors of tenants deleted while the vector store was not open.
async fn drop_deleted_tenants(k: &Knowledge) {
    let Ok(known) = k
        .core
        .db
        .call(|c| {
            let mut stmt = c.prepare("SELECT id FROM tenants")?;
            let ids = stmt.query_map([], |r| r.get::<_, String>(0))?;
            Ok(ids.collect::<Result<std::collections::HashSet<_>, _>>()?)
        })
        .await
    else {
        return;
    };
    let vectors = k.vectors.clone();
    let _ = tokio::task::spawn_blocking(move || {
        for tenant in vectors.tenants() {
            if !known.contains(tenant.as_str()) {
                tracing::info!(tenant = %tenant, "dropping vectors of a deleted tenant");
                let _ = vectors.drop_tenant(&tenant);
            }
        }
    })
    .await;
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
    let metrics = Metrics::new().context("registering metrics")?;
    let knowledge = open_knowledge(core.clone(), hooks.embedder).await?;
    let generator = match hooks.generator {
        Some(g) => g,
        None => load_generator(&config).await?,
    };
    let upstreams = crate::llm::Upstreams::from_config(&config)?;
    let state = AppState(Arc::new(StateInner {
        core,
        knowledge,
        generator,
        upstreams,
        jwt,
        admin_token,
        metrics,
        ready: AtomicBool::new(false),
        health: crate::services::health::HealthCache::new(
            Duration::from_millis(config.health.cache_ms),
            Duration::from_secs(config.health.upstream_probe_secs),
        ),
    }));

    // Before any request or worker runs: unfinished documents are queued again, and what an
    // interrupted delete left behind is removed.
    if let Err(e) = crate::services::ingest::recover_unfinished(&state.knowledge).await {
        tracing::warn!(error = %e, "could not re-queue unfinished documents");
    }
    if let Err(e) = crate::services::ingest::sweep_leftovers(&state.knowledge).await {
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
    let workers = tokio::spawn(
        state
            .knowledge
            .queue
            .clone()
            .run(Arc::new(state.knowledge.clone()), workers_stop.clone()),
    );

    let ready_state = state.clone();
    let before_ready = hooks.before_ready;
    tokio::spawn(async move {
        if let Some(gate) = before_ready {
            gate.await;
        }
        ready_state.ready.store(true, Ordering::Release);
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
